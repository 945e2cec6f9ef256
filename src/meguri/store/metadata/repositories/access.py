"""Access control: users, their API tokens and their roles per project.

There is no default user and no default password: the first admin is created by
``meguri users create NAME --admin``. Secrets are never stored in clear:

* Passwords are hashed with scrypt (``hashlib.scrypt``, a random 16-byte salt per hash, n=2**15,
  r=8, p=1), stored as ``scrypt$n$r$p$salt$hash`` so that the parameters can be raised later
  without invalidating older hashes, and compared in constant time. Checking the password of an
  unknown or disabled user costs the same scrypt as a real check, so timing does not tell which
  names exist.
* A token's secret is ``mgr_`` followed by 32 random bytes (URL-safe base64), shown once by
  :meth:`AccessRepository.create_token`. Only its sha256 is stored (a secret of 256 random bits
  needs no slow hash), plus a short non-secret ``prefix`` that tells tokens apart in listings.

Roles are ``viewer``, ``editor`` and ``admin`` per project (:data:`ROLES`); a platform admin
(``User.is_admin``) needs none. Deciding what each role may do is the server's business; this
repository only stores who holds what. Every change is recorded in the audit log, in its own
transaction.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import sqlalchemy as sa

from meguri.errors import ConflictError, DataError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import ROLES, NewAuditEvent, Token, User
from meguri.store.metadata._schema import (
    api_tokens,
    ended_sessions,
    project_roles,
    projects,
    users,
)
from meguri.store.metadata.repositories.audit import record

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "AccessRepository",
    "hash_password",
    "password_matches",
    "validate_user_name",
]

TOKEN_PREFIX = "mgr_"
_TOKEN_BYTES = 32
_TOKEN_LENGTH = len(TOKEN_PREFIX) + len(secrets.token_urlsafe(_TOKEN_BYTES))
_SHOWN = 12  # characters of a secret kept as its display prefix: "mgr_" + 8 of 43 random ones
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_SCRYPT_MAXMEM = 2**27
_MIN_PASSWORD = 12
_MAX_PASSWORD = 1024
_TOUCH_EVERY = 60.0  # seconds between writes of a token's last-use time
_USER_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_RESERVED = frozenset({"system", "anonymous"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

_U = users.c
_T = api_tokens.c
_R = project_roles.c


# -- passwords -------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def hash_password(password: str) -> str:
    """``password`` hashed with scrypt and a random salt, parameters included."""
    salt = secrets.token_bytes(16)
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


def password_matches(password: str, stored: str | None) -> bool:
    """Whether ``password`` hashes to ``stored`` (constant-time). With ``stored`` None (no
    such user, no password set) a dummy hash is checked, so the answer takes as long."""
    if stored is None:
        _scrypt(password, b"\x00" * 16, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:  # a malformed hash matches nothing
        return False
    return hmac.compare_digest(computed, _unb64(digest))


def _check_password(password: object) -> str:
    if not isinstance(password, str) or not _MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        size = len(password) if isinstance(password, str) else type(password).__name__
        raise DataError(
            f"The password must be text of {_MIN_PASSWORD} to {_MAX_PASSWORD} characters (this "
            f"one: {size}); leave it out and meguri generates a strong one"
        )
    return password


# -- validation ------------------------------------------------------------------------------


def validate_user_name(name: object) -> str:
    """``name`` when it is a valid user name; :class:`DataError` naming the rule otherwise."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise DataError(
            f"The user name {name!r} is not valid: use 1 to 64 lowercase letters, digits, '.', "
            "'_' or '-', starting with a letter (e.g. 'ana' or 'ci-bot')"
        )
    if name in _RESERVED:
        raise DataError(f"The user name {name!r} is reserved for meguri itself; choose another")
    return name


def _check_email(email: str | None) -> str | None:
    if email is None or email == "":
        return None
    if len(email) > 320 or not _EMAIL.fullmatch(email):
        raise DataError(f"The email {email!r} is not an address like name@example.org")
    return email


def _check_token_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not name.isprintable():
        raise DataError(
            f"The token name {name!r} is not valid: give 1 to 200 printable characters saying "
            "what it is for (e.g. 'ci' or 'laptop')"
        )
    return name.strip()


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise DataError(f"The role {role!r} is not one of {', '.join(ROLES)}")
    return str(role)


# -- rows ------------------------------------------------------------------------------------

_USER_COLUMNS = (
    _U.id,
    _U.name,
    _U.email,
    _U.is_admin,
    _U.created_at,
    _U.created_by,
    _U.disabled,
    _U.sessions_since,
)
_TOKEN_COLUMNS = (
    _T.id,
    _T.user_id,
    _T.name,
    _T.prefix,
    _T.created_at,
    _T.expires_at,
    _T.revoked_at,
    _T.last_used_at,
)


def _user(row: sa.RowMapping, prefix: str = "") -> User:
    m = {c.name: row[prefix + c.name] for c in _USER_COLUMNS}
    return User(**{**m, "is_admin": bool(m["is_admin"]), "disabled": bool(m["disabled"])})


def _token(row: sa.RowMapping) -> Token:
    return Token(**{c.name: row[c.name] for c in _TOKEN_COLUMNS})


def _no_user(name: str) -> NotFoundError:
    return NotFoundError(
        f"No user named {name!r}; `meguri users list` lists them and "
        "`meguri users create NAME` adds one"
    )


def _user_event(by: str, action: str, user: User | str, **detail: Any) -> NewAuditEvent:
    name = user if isinstance(user, str) else user.name
    return NewAuditEvent(by, action, "user", name, None, {"user": name, **detail})


class AccessRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- users -----------------------------------------------------------------------------

    def create_user(
        self,
        name: str,
        *,
        by: str,
        password: str | None = None,
        email: str | None = None,
        is_admin: bool = False,
    ) -> User:
        """A new user; without ``password`` it can only use API tokens until one is set.
        Raises :class:`ConflictError` when the name is taken."""
        validate_user_name(name)
        row = {
            "id": new_id("usr"),
            "name": name,
            "email": _check_email(email),
            "is_admin": bool(is_admin),
            "disabled": False,
            "password_hash": None if password is None else hash_password(_check_password(password)),
            "created_at": time.time(),
            "created_by": by,
        }
        detail = {
            "is_admin": bool(is_admin),
            "email": row["email"],
            "password": password is not None,
        }
        try:
            with self._db.write() as conn:
                if self._find(conn, name) is not None:
                    raise _taken(name)
                conn.execute(users.insert(), row)
                record(conn, [_user_event(by, "user.created", name, **detail)])
        except sa.exc.IntegrityError:
            raise _taken(name) from None
        return self.get_user(name)

    def find_user(self, name: str) -> User | None:
        with self._db.read() as conn:
            row = self._find(conn, name, lock=False)
        return None if row is None else _user(row)

    def get_user(self, name: str) -> User:
        found = self.find_user(name)
        if found is None:
            raise _no_user(name)
        return found

    def user_by_id(self, user_id: str) -> User | None:
        with self._db.read() as conn:
            row = conn.execute(sa.select(*_USER_COLUMNS).where(_U.id == user_id)).mappings().first()
        return None if row is None else _user(row)

    def list_users(self) -> builtins.list[User]:
        """Every user, by name."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(*_USER_COLUMNS).order_by(_U.name)).mappings()
            return [_user(r) for r in rows]

    def verify_password(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs and they are not disabled; None otherwise
        (an unknown name costs the same time as a wrong password)."""
        if not isinstance(password, str) or len(password) > _MAX_PASSWORD:
            return None  # refused by its type or size alone, before any hashing work
        with self._db.read() as conn:
            row = (
                conn.execute(sa.select(*_USER_COLUMNS, _U.password_hash).where(_U.name == name))
                .mappings()
                .first()
            )
        stored = None if row is None else row["password_hash"]
        matches = password_matches(password, stored)
        if row is None or not matches or row["disabled"]:
            return None
        return _user(row)

    def set_password(self, name: str, password: str, *, by: str) -> None:
        """Replace the user's password (the old one stops working at once, and every browser
        session signed in before now is void: see ``User.sessions_since``)."""
        hashed = hash_password(_check_password(password))
        with self._db.write() as conn:
            self._require(conn, name)
            changed = {"password_hash": hashed, "sessions_since": time.time()}
            conn.execute(users.update().where(_U.name == name).values(**changed))
            record(conn, [_user_event(by, "user.password_set", name)])

    def disable_user(self, name: str, *, by: str) -> User:
        """Stop the user signing in or using any token (their tokens and roles are kept)."""
        return self._set_disabled(name, True, by)

    def enable_user(self, name: str, *, by: str) -> User:
        return self._set_disabled(name, False, by)

    def _set_disabled(self, name: str, disabled: bool, by: str) -> User:
        with self._db.write() as conn:
            user = _user(self._require(conn, name))
            if user.disabled != disabled:
                changed: dict[str, Any] = {"disabled": disabled}
                if disabled:  # enabling again must not bring back the sessions of before
                    changed["sessions_since"] = time.time()
                conn.execute(users.update().where(_U.name == name).values(**changed))
                action = "user.disabled" if disabled else "user.enabled"
                record(conn, [_user_event(by, action, user)])
        return self.get_user(name)

    # -- browser sessions ------------------------------------------------------------------

    def end_session(self, user_name: str, sid: str, expires_at: float) -> None:
        """Record that the browser session ``sid`` of the user was signed out: it stays void
        until ``expires_at`` (when its cookie would have expired anyway), restarts included.
        Ended sessions past their expiry are forgotten in the same transaction."""
        now = time.time()
        with self._db.write() as conn:
            user = _user(self._require(conn, user_name))
            conn.execute(ended_sessions.delete().where(ended_sessions.c.expires_at <= now))
            if expires_at > now:
                gone = sa.select(ended_sessions.c.sid).where(ended_sessions.c.sid == sid)
                if conn.execute(gone).first() is None:
                    row = {"sid": sid, "user_id": user.id, "expires_at": expires_at,
                           "ended_at": now}  # fmt: skip
                    conn.execute(ended_sessions.insert(), row)
            record(conn, [_user_event(user_name, "session.signed_out", user)])

    def session_ended(self, sid: str) -> bool:
        """Whether the browser session ``sid`` was signed out (and has not expired since)."""
        query = sa.select(ended_sessions.c.sid).where(
            ended_sessions.c.sid == sid, ended_sessions.c.expires_at > time.time()
        )
        with self._db.read() as conn:
            return conn.execute(query).first() is not None

    def _find(self, conn: sa.Connection, name: str, *, lock: bool = True) -> sa.RowMapping | None:
        """The user's row; in a write transaction locked (PostgreSQL) against a concurrent
        change of the same user."""
        query = sa.select(*_USER_COLUMNS).where(_U.name == name)
        return conn.execute(query.with_for_update() if lock else query).mappings().first()

    def _require(self, conn: sa.Connection, name: str) -> sa.RowMapping:
        row = self._find(conn, name)
        if row is None:
            raise _no_user(name)
        return row

    # -- tokens ----------------------------------------------------------------------------

    def create_token(
        self, user_name: str, *, name: str, by: str, expires_at: float | None = None
    ) -> tuple[Token, str]:
        """A new API token of the user and its secret, which is not stored and cannot be
        shown again. ``expires_at`` (epoch seconds) must lie in the future."""
        label = _check_token_name(name)
        if expires_at is not None and not expires_at > time.time():
            raise DataError(
                f"The token's expiry ({expires_at!r}) is not in the future; give a later time"
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
        with self._db.write() as conn:
            user = _user(self._require(conn, user_name))
            if user.disabled:
                raise ConflictError(
                    f"User {user_name!r} is disabled; `meguri users enable {user_name}` first"
                )
            row = {
                "id": new_id("tok"),
                "user_id": user.id,
                "name": label,
                "prefix": secret[:_SHOWN],
                "secret_hash": _secret_hash(secret),
                "expires_at": expires_at,
                "revoked_at": None,
                "last_used_at": None,
                "created_at": time.time(),
                "created_by": by,
            }
            conn.execute(api_tokens.insert(), row)
            detail = {"token": row["id"], "name": label, "prefix": row["prefix"]}
            record(conn, [_user_event(by, "token.created", user, **detail, expires_at=expires_at)])
            return _token(conn.execute(_token_by_id(str(row["id"]))).mappings().one()), secret

    def authenticate_token(self, secret: str) -> tuple[User, Token] | None:
        """The user and token of ``secret`` when the token is neither revoked nor expired and
        the user is not disabled; None for anything else (forged, malformed, revoked)."""
        if not isinstance(secret, str) or len(secret) != _TOKEN_LENGTH:
            return None
        if not secret.startswith(TOKEN_PREFIX):
            return None
        digest = _secret_hash(secret)
        user_columns = (c.label(f"u_{c.name}") for c in _USER_COLUMNS)
        query = (
            sa.select(*_TOKEN_COLUMNS, _T.secret_hash, *user_columns)
            .join(users, _U.id == _T.user_id)
            .where(_T.secret_hash == digest)
        )
        with self._db.read() as conn:
            row = conn.execute(query).mappings().first()
        if row is None or not hmac.compare_digest(str(row["secret_hash"]), digest):
            return None
        token = _token(row)
        user = _user(row, "u_")
        now = time.time()
        if user.disabled or not token.is_active(now):
            return None
        return user, self._touch(token, now)

    def _touch(self, token: Token, now: float) -> Token:
        """Record the token's use, at most once a minute (not an audited change)."""
        if token.last_used_at is not None and now - token.last_used_at < _TOUCH_EVERY:
            return token
        with self._db.write() as conn:
            conn.execute(api_tokens.update().where(_T.id == token.id).values(last_used_at=now))
        return Token(**{**_token_fields(token), "last_used_at": now})

    def revoke_token(self, token_id: str, *, by: str) -> Token:
        """Revoke a token for good (revoking it again changes nothing)."""
        with self._db.write() as conn:
            row = conn.execute(_token_by_id(token_id).with_for_update()).mappings().first()
            if row is None:
                raise NotFoundError(
                    f"No API token {token_id!r}; `meguri users token list USER` lists them"
                )
            if row["revoked_at"] is None:
                conn.execute(
                    api_tokens.update().where(_T.id == token_id).values(revoked_at=time.time())
                )
                owner = conn.execute(sa.select(_U.name).where(_U.id == row["user_id"])).scalar_one()
                detail = {"token": token_id, "name": row["name"], "prefix": row["prefix"]}
                record(conn, [_user_event(by, "token.revoked", str(owner), **detail)])
            return _token(conn.execute(_token_by_id(token_id)).mappings().one())

    def list_tokens(self, user_name: str) -> builtins.list[Token]:
        """The user's tokens, oldest first (revoked and expired ones included)."""
        user = self.get_user(user_name)
        query = sa.select(*_TOKEN_COLUMNS).where(_T.user_id == user.id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(_T.created_at, _T.id)).mappings()
            return [_token(r) for r in rows]

    # -- roles -----------------------------------------------------------------------------

    def set_role(self, project_id: str, user_name: str, role: str, *, by: str) -> None:
        """Give the user ``role`` in the project (replacing the role they had there)."""
        _check_role(role)
        with self._db.write() as conn:
            user = _user(self._require(conn, user_name))
            _require_project(conn, project_id)
            key = {"project_id": project_id, "user_id": user.id}
            previous = conn.execute(
                sa.select(_R.role).filter_by(**key).with_for_update()
            ).scalar_one_or_none()
            if previous == role:
                return
            values = {"role": role, "updated_at": time.time(), "updated_by": by}
            if previous is None:
                conn.execute(project_roles.insert(), {**key, **values})
            else:
                conn.execute(project_roles.update().filter_by(**key).values(values))
            detail = {"user": user.name, "role": role, "previous": previous}
            record(conn, [NewAuditEvent(by, "role.set", "user", user.name, project_id, detail)])

    def remove_role(self, project_id: str, user_name: str, *, by: str) -> bool:
        """Take the user's role in the project away; False when they had none."""
        with self._db.write() as conn:
            user = _user(self._require(conn, user_name))
            key = {"project_id": project_id, "user_id": user.id}
            previous = conn.execute(sa.select(_R.role).filter_by(**key)).scalar_one_or_none()
            if previous is None:
                return False
            conn.execute(project_roles.delete().filter_by(**key))
            detail = {"user": user.name, "previous": previous}
            record(conn, [NewAuditEvent(by, "role.removed", "user", user.name, project_id, detail)])
        return True

    def role_of(self, project_id: str, user_name: str) -> str | None:
        """The user's role in the project, None without one (platform admins included: the
        caller treats ``User.is_admin`` as every right)."""
        query = (
            sa.select(_R.role)
            .join(users, _U.id == _R.user_id)
            .where(_R.project_id == project_id, _U.name == user_name)
        )
        with self._db.read() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)

    def roles(self, project_id: str) -> dict[str, str]:
        """Who holds which role in the project: user name → role, by name."""
        query = (
            sa.select(_U.name, _R.role)
            .join(users, _U.id == _R.user_id)
            .where(_R.project_id == project_id)
            .order_by(_U.name)
        )
        with self._db.read() as conn:
            return {str(n): str(r) for n, r in conn.execute(query)}

    def user_roles(self, user_name: str) -> dict[str, str]:
        """The user's roles: project id → role."""
        query = (
            sa.select(_R.project_id, _R.role)
            .join(users, _U.id == _R.user_id)
            .where(_U.name == user_name)
            .order_by(_R.project_id)
        )
        with self._db.read() as conn:
            return {str(p): str(r) for p, r in conn.execute(query)}


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _token_by_id(token_id: str) -> sa.Select[Any]:
    return sa.select(*_TOKEN_COLUMNS).where(_T.id == token_id)


def _token_fields(token: Token) -> dict[str, Any]:
    return {c.name: getattr(token, c.name) for c in _TOKEN_COLUMNS}


def _taken(name: str) -> ConflictError:
    return ConflictError(f"A user named {name!r} exists already; choose another name")


def _require_project(conn: sa.Connection, project_id: str) -> None:
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        raise NotFoundError(
            f"No project with id {project_id!r}; open the project (`meguri init`) first"
        )
