"""``meguri users …``: the first admin without any default password, secrets printed once,
tokens and roles, every change audited under the local user's name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from meguri.cli import _users
from meguri.errors import DataError, NotFoundError
from meguri.store import Workspace, open_workspace


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    _users.register(root)

    @root.callback()
    def _main() -> None:  # a group, so that `users` stays a subcommand
        pass

    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEGURI_USER", "root")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".meguri").mkdir()
    return tmp_path


@pytest.fixture
def ws(project: Path) -> Iterator[Workspace]:
    workspace = open_workspace(project)
    yield workspace
    workspace.close()


def _invoke(app: typer.Typer, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["users", *args], input=stdin)


def _ok(app: typer.Typer, *args: str, stdin: str | None = None) -> str:
    result = _invoke(app, *args, stdin=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_the_first_admin_gets_a_generated_password_shown_once(
    app: typer.Typer, ws: Workspace
) -> None:
    assert "No users yet" in _ok(app, "list")  # nothing to sign in with by default
    out = _ok(app, "create", "ann", "--admin", "--email", "ann@example.org")
    assert "Created platform admin ann" in out and "shown once" in out
    password = out.strip().splitlines()[-1]
    assert len(password) == 24
    user = ws.metadata.access.verify_password("ann", password)
    assert user is not None and user.is_admin and user.created_by == "root"
    listed = _ok(app, "list")
    assert "ann" in listed and "yes" in listed and password not in listed
    again = _ok(app, "password", "ann")
    fresh = again.strip().splitlines()[-1]
    assert fresh != password and ws.metadata.access.verify_password("ann", password) is None
    assert ws.metadata.access.verify_password("ann", fresh) is not None


def test_password_from_stdin_is_not_echoed(app: typer.Typer, ws: Workspace) -> None:
    secret = "a long passphrase from a vault"
    out = _ok(app, "create", "bob", "--password-stdin", stdin=secret + "\n")
    assert secret not in out and "shown once" not in out
    assert ws.metadata.access.verify_password("bob", secret) is not None
    empty = _invoke(app, "create", "cy", "--password-stdin", stdin="")
    assert empty.exit_code == 2 and "stdin held no password" in empty.output
    short = _invoke(app, "create", "cy", "--password-stdin", stdin="short\n")
    assert isinstance(short.exception, DataError) and "12 to 1024" in str(short.exception)
    assert ws.metadata.access.find_user("cy") is None
    robot = _ok(app, "create", "ci-bot", "--no-password")
    assert "shown once" not in robot
    bad = _invoke(app, "create", "../etc")
    assert isinstance(bad.exception, DataError) and "user name" in str(bad.exception)


def test_tokens_are_printed_once_listed_by_prefix_and_revoked(
    app: typer.Typer, ws: Workspace
) -> None:
    _ok(app, "create", "ann", "--no-password")
    out = _ok(app, "token", "create", "ann", "--name", "ci", "--expires-in-days", "30")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("mgr_")
    found = ws.metadata.access.authenticate_token(secret)
    assert found is not None and found[0].name == "ann"
    token = found[1]
    assert token.expires_at is not None
    listed = _ok(app, "token", "list", "ann")
    assert token.id in listed and token.prefix in listed and secret not in listed
    assert "active" in listed
    assert "Revoked" in _ok(app, "token", "revoke", token.id)
    assert ws.metadata.access.authenticate_token(secret) is None
    assert "revoked" in _ok(app, "token", "list", "ann")
    missing = _invoke(app, "token", "create", "nobody", "--name", "x")
    assert isinstance(missing.exception, NotFoundError)


def test_disable_and_enable(app: typer.Typer, ws: Workspace) -> None:
    _ok(app, "create", "ann", "--password-stdin", stdin="a long passphrase here\n")
    assert "Disabled ann" in _ok(app, "disable", "ann")
    assert ws.metadata.access.verify_password("ann", "a long passphrase here") is None
    assert "disabled" in _ok(app, "list")
    _ok(app, "enable", "ann")
    assert ws.metadata.access.verify_password("ann", "a long passphrase here") is not None


def test_roles_per_project(app: typer.Typer, ws: Workspace) -> None:
    other = ws.metadata.projects.ensure("other", "root")
    _ok(app, "create", "ann", "--no-password")
    assert f"ann is editor of project {ws.project.name}" in _ok(app, "role", "set", "ann", "editor")
    _ok(app, "role", "set", "ann", "viewer", "--project", "other")
    assert ws.metadata.access.role_of(ws.project.id, "ann") == "editor"
    assert ws.metadata.access.role_of(other.id, "ann") == "viewer"
    listed = _ok(app, "role", "list", "--project", "other")
    assert "ann" in listed and "viewer" in listed
    assert "other:viewer" in _ok(app, "list")
    bad = _invoke(app, "role", "set", "ann", "owner")
    assert isinstance(bad.exception, DataError) and "viewer, editor, admin" in str(bad.exception)
    unknown = _invoke(app, "role", "set", "ann", "viewer", "--project", "nope")
    assert isinstance(unknown.exception, NotFoundError)
    assert "no longer has a role" in _ok(app, "role", "remove", "ann", "--project", "other")
    assert "had no role" in _ok(app, "role", "remove", "ann", "--project", "other")
    assert "No roles in project other" in _ok(app, "role", "list", "--project", "other")


def test_every_change_is_audited_as_the_local_user(app: typer.Typer, ws: Workspace) -> None:
    start = ws.metadata.audit.head()[0]
    _ok(app, "create", "ann", "--admin")
    out = _ok(app, "token", "create", "ann", "--name", "ci")
    token_id = out.split("Created token ")[1].split()[0]
    _ok(app, "token", "revoke", token_id)
    _ok(app, "role", "set", "ann", "admin")
    _ok(app, "disable", "ann")
    events = ws.metadata.audit.events(after_seq=start)
    assert [(e.action, e.actor) for e in events] == [
        ("user.created", "root"),
        ("token.created", "root"),
        ("token.revoked", "root"),
        ("role.set", "root"),
        ("user.disabled", "root"),
    ]
    assert ws.metadata.audit.verify().ok
