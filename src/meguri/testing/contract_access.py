"""Contract of the access repository (users, API tokens, roles), run on every metadata backend.

Secrets are checked where they land: the database holds scrypt hashes (recomputed here from
the stored salt and parameters) and sha256 digests of token secrets, never the secrets; forged,
tampered, revoked and expired tokens and disabled users are refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time

import pytest
import sqlalchemy as sa

from meguri.errors import ConflictError, DataError, NotFoundError
from meguri.store.metadata import MetadataStore

__all__ = [
    "test_access_changes_are_audited_without_secrets",
    "test_concurrent_creations_of_one_name_one_wins",
    "test_disabled_users_cannot_sign_in_or_use_tokens",
    "test_passwords_are_scrypt_hashed_and_verified",
    "test_roles_per_project",
    "test_sessions_end_when_signed_out_or_the_password_changes",
    "test_tokens_are_stored_hashed_shown_once_and_refused_when_forged",
    "test_tokens_expire_and_revoke",
    "test_users_are_created_named_and_listed",
]

PASSWORD = "correct horse battery staple"
THREADS = 6


def _dump(store: MetadataStore) -> str:
    """Every value of the access and audit tables, as one text to search for secrets."""
    with store.db.engine.connect() as conn:
        rows = [
            conn.execute(sa.text(f"SELECT * FROM {table}")).all()  # fixed names
            for table in ("users", "api_tokens", "project_roles", "audit_events")
        ]
    return repr(rows)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_users_are_created_named_and_listed(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    assert access.list_users() == []  # no default user
    ann = access.create_user("ann", by="root", email="ann@example.org", is_admin=True)
    assert ann.id.startswith("usr-") and ann.is_admin is True and ann.disabled is False
    assert (ann.email, ann.created_by) == ("ann@example.org", "root")
    bob = access.create_user("bob.smith-2", by="ann")
    assert bob.is_admin is False and bob.email is None
    assert access.list_users() == [ann, bob]
    assert access.get_user("ann") == ann == access.user_by_id(ann.id)
    assert access.find_user("nobody") is None and access.user_by_id("usr-x") is None
    with pytest.raises(NotFoundError, match="meguri users list"):
        access.get_user("nobody")
    with pytest.raises(ConflictError, match="'ann' exists"):
        access.create_user("ann", by="root")
    for bad in ("", "Ann", "9lives", "a b", "../x", "x" * 65, "ann;drop", "system"):
        with pytest.raises(DataError, match="user name"):
            access.create_user(bad, by="root")
    with pytest.raises(DataError, match="email"):
        access.create_user("carl", by="root", email="not-an-address")
    assert [u.name for u in access.list_users()] == ["ann", "bob.smith-2"]


def test_passwords_are_scrypt_hashed_and_verified(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    access.create_user("ann", by="root", password=PASSWORD)
    access.create_user("bob", by="root", password=PASSWORD)
    with metadata_store.db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, password_hash FROM users")).all()
    stored: dict[str, str] = {str(name): str(hashed) for name, hashed in rows}
    assert stored["ann"] != stored["bob"]  # a salt of its own
    scheme, n, r, p, salt, digest = stored["ann"].split("$")
    assert (scheme, n, r, p) == ("scrypt", "32768", "8", "1")
    expected = hashlib.scrypt(
        PASSWORD.encode(), salt=_b64(salt), n=int(n), r=int(r), p=int(p), maxmem=2**27, dklen=32
    )
    assert _b64(digest) == expected
    assert PASSWORD not in _dump(metadata_store)
    assert access.verify_password("ann", PASSWORD) == access.get_user("ann")
    assert access.verify_password("ann", PASSWORD + "!") is None
    assert access.verify_password("nobody", PASSWORD) is None
    assert access.verify_password("ann", PASSWORD * 100) is None  # oversized: refused unhashed
    access.set_password("ann", "another long password", by="ann")
    assert access.verify_password("ann", PASSWORD) is None
    assert access.verify_password("ann", "another long password") is not None
    with pytest.raises(DataError, match="12 to 1024 characters"):
        access.set_password("ann", "short", by="ann")
    with pytest.raises(DataError, match="12 to 1024 characters"):
        access.create_user("carl", by="root", password="short")
    assert access.find_user("carl") is None
    access.create_user("dee", by="root")  # no password: tokens only
    assert access.verify_password("dee", "") is None
    assert access.verify_password("dee", PASSWORD) is None


def test_sessions_end_when_signed_out_or_the_password_changes(
    metadata_store: MetadataStore,
) -> None:
    access = metadata_store.access
    access.create_user("ann", by="root", password=PASSWORD)
    assert access.get_user("ann").sessions_since is None
    before = time.time()
    access.set_password("ann", "another long password", by="ann")
    since = access.get_user("ann").sessions_since
    assert since is not None and before <= since <= time.time()
    access.disable_user("ann", by="root")
    disabled_since = access.get_user("ann").sessions_since
    assert disabled_since is not None and disabled_since >= since
    access.enable_user("ann", by="root")  # enabling brings no old session back
    assert access.get_user("ann").sessions_since == disabled_since

    later = time.time() + 3600
    assert access.session_ended("s-1") is False
    access.end_session("ann", "s-1", later)
    access.end_session("ann", "s-1", later)  # twice: still one record, no error
    assert access.session_ended("s-1") is True
    assert access.session_ended("s-2") is False
    access.end_session("ann", "s-old", time.time() - 1)  # already expired: nothing to keep
    assert access.session_ended("s-old") is False
    with pytest.raises(NotFoundError):
        access.end_session("nobody", "s-3", later)
    actions = [e.action for e in metadata_store.audit.events() if e.subject_id == "ann"]
    assert actions.count("session.signed_out") == 3


_SECRET = re.compile(r"mgr_[A-Za-z0-9_-]{43}")


def test_tokens_are_stored_hashed_shown_once_and_refused_when_forged(
    metadata_store: MetadataStore,
) -> None:
    access = metadata_store.access
    ann = access.create_user("ann", by="root")
    token, secret = access.create_token("ann", name="ci", by="ann")
    assert _SECRET.fullmatch(secret)
    assert (token.user_id, token.name, token.prefix) == (ann.id, "ci", secret[:12])
    assert token.id.startswith("tok-") and token.revoked_at is None and token.expires_at is None
    dump = _dump(metadata_store)
    assert secret not in dump and secret[12:] not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    found = access.authenticate_token(secret)
    assert found is not None
    user, used = found
    assert user == ann and used.id == token.id and used.last_used_at is not None
    assert access.list_tokens("ann")[0].last_used_at == used.last_used_at
    other, other_secret = access.create_token("ann", name="laptop", by="ann")
    assert other_secret != secret and other.prefix != token.prefix
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    forged = "mgr_" + secrets.token_urlsafe(32)
    for bad in (tampered, forged, "mgr_", "", secret[4:], "Bearer " + secret, secret + "x"):
        assert access.authenticate_token(bad) is None
    assert access.authenticate_token(token.prefix) is None
    assert [t.name for t in access.list_tokens("ann")] == ["ci", "laptop"]
    for bad_name in ("", "  ", "x" * 201, "tab\there"):
        with pytest.raises(DataError, match="token name"):
            access.create_token("ann", name=bad_name, by="ann")
    with pytest.raises(NotFoundError):
        access.create_token("nobody", name="ci", by="ann")


def test_tokens_expire_and_revoke(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    access.create_user("ann", by="root")
    soon, soon_secret = access.create_token(
        "ann", name="soon", by="ann", expires_at=time.time() + 60
    )
    assert soon.expires_at is not None and soon.is_active(time.time())
    assert access.authenticate_token(soon_secret) is not None
    with metadata_store.db.engine.begin() as conn:  # the clock moves past its expiry
        conn.execute(sa.text("UPDATE api_tokens SET expires_at = :t"), {"t": time.time() - 1})
    assert access.authenticate_token(soon_secret) is None
    with pytest.raises(DataError, match="not in the future"):
        access.create_token("ann", name="past", by="ann", expires_at=time.time() - 5)
    token, secret = access.create_token("ann", name="ci", by="ann")
    assert access.authenticate_token(secret) is not None
    revoked = access.revoke_token(token.id, by="root")
    assert revoked.revoked_at is not None and not revoked.is_active(time.time())
    assert access.authenticate_token(secret) is None  # a replayed secret stays refused
    assert access.revoke_token(token.id, by="root") == revoked  # again: unchanged
    with pytest.raises(NotFoundError, match="token list"):
        access.revoke_token("tok-missing", by="root")


def test_disabled_users_cannot_sign_in_or_use_tokens(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    access.create_user("ann", by="root", password=PASSWORD)
    _, secret = access.create_token("ann", name="ci", by="ann")
    assert access.disable_user("ann", by="root").disabled is True
    assert access.verify_password("ann", PASSWORD) is None
    assert access.authenticate_token(secret) is None
    with pytest.raises(ConflictError, match="disabled"):
        access.create_token("ann", name="new", by="ann")
    assert access.enable_user("ann", by="root").disabled is False
    assert access.verify_password("ann", PASSWORD) is not None
    assert access.authenticate_token(secret) is not None


def test_roles_per_project(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    one = metadata_store.projects.ensure("one", "root").id
    two = metadata_store.projects.ensure("two", "root").id
    for name in ("ann", "bob"):
        access.create_user(name, by="root")
    access.set_role(one, "ann", "viewer", by="root")
    access.set_role(one, "bob", "admin", by="root")
    access.set_role(two, "ann", "editor", by="root")
    assert access.role_of(one, "ann") == "viewer" and access.role_of(two, "ann") == "editor"
    assert access.role_of(two, "bob") is None and access.role_of(one, "nobody") is None
    assert access.roles(one) == {"ann": "viewer", "bob": "admin"}
    assert access.user_roles("ann") == {one: "viewer", two: "editor"}
    access.set_role(one, "ann", "editor", by="root")
    assert access.role_of(one, "ann") == "editor"
    assert access.remove_role(one, "ann", by="root") is True
    assert access.remove_role(one, "ann", by="root") is False
    assert access.roles(one) == {"bob": "admin"}
    with pytest.raises(DataError, match="viewer, editor, admin"):
        access.set_role(one, "ann", "owner", by="root")
    with pytest.raises(NotFoundError, match="project"):
        access.set_role("prj-missing", "ann", "viewer", by="root")
    with pytest.raises(NotFoundError, match="No user"):
        access.set_role(one, "nobody", "viewer", by="root")


def test_access_changes_are_audited_without_secrets(metadata_store: MetadataStore) -> None:
    access = metadata_store.access
    project_id = metadata_store.projects.ensure("audited", "root").id
    start = metadata_store.audit.head()[0]
    access.create_user("ann", by="root", password=PASSWORD, is_admin=True)
    access.set_password("ann", "another long password", by="ann")
    token, secret = access.create_token("ann", name="ci", by="ann")
    access.authenticate_token(secret)  # using a token is not a change
    access.revoke_token(token.id, by="root")
    access.set_role(project_id, "ann", "viewer", by="root")
    access.set_role(project_id, "ann", "viewer", by="root")  # unchanged: no event
    access.set_role(project_id, "ann", "editor", by="root")
    access.remove_role(project_id, "ann", by="root")
    access.disable_user("ann", by="root")
    access.disable_user("ann", by="root")  # unchanged: no event
    access.enable_user("ann", by="root")
    events = metadata_store.audit.events(after_seq=start)
    assert [(e.action, e.actor) for e in events] == [
        ("user.created", "root"),
        ("user.password_set", "ann"),
        ("token.created", "ann"),
        ("token.revoked", "root"),
        ("role.set", "root"),
        ("role.set", "root"),
        ("role.removed", "root"),
        ("user.disabled", "root"),
        ("user.enabled", "root"),
    ]
    assert all(e.subject_id == "ann" for e in events)
    assert [e.project_id for e in events[4:7]] == [project_id] * 3
    assert events[5].detail == {"user": "ann", "role": "editor", "previous": "viewer"}
    assert events[2].detail["prefix"] == token.prefix
    dump = _dump(metadata_store)
    assert secret not in dump and PASSWORD not in dump
    assert metadata_store.audit.verify().ok


def test_concurrent_creations_of_one_name_one_wins(metadata_store: MetadataStore) -> None:
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            metadata_store.access.create_user("ann", by=f"admin{i}")
            outcomes.append("created")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["created"]
    assert [u.name for u in metadata_store.access.list_users()] == ["ann"]
    created = metadata_store.audit.events()
    assert [e.action for e in created] == ["user.created"]
    assert metadata_store.audit.verify().ok
