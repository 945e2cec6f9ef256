"""``meguri users …``: users, their API tokens and their roles per project.

There is no default user and no default password: the first admin is made here with
``meguri users create NAME --admin``. Secrets (a generated password, a token) are printed once
and stored only as hashes. Whoever may write the store may run these commands; the actor the
audit log records is the local user (``MEGURI_USER`` or the login name).
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from meguri.cli._here import workspace_session as _workspace

if TYPE_CHECKING:
    from meguri.store import Workspace

users_app = typer.Typer(
    help="Users, API tokens and roles per project (viewer, editor, admin).",
    no_args_is_help=True,
)
token_app = typer.Typer(help="API tokens of a user: create (shown once), list, revoke.")
role_app = typer.Typer(help="Roles per project: set, remove, list.")
users_app.add_typer(token_app, name="token")
users_app.add_typer(role_app, name="role")

console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)

_ROLE_HELP = "viewer (reads), editor (also writes) or admin (also grants roles)."


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def _read_password() -> str:
    """One line of stdin, without its line ending (for ``--password-stdin``)."""
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise typer.BadParameter("stdin held no password", param_hint="--password-stdin")
    return password


def _show_secret(label: str, secret: str) -> None:
    """Print a secret once, alone on its line (easy to copy or capture), with the warning."""
    console.print(f"{label} (shown once, store it now):")
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from stdin instead of generating one."
    ),
]


@users_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '.', '_', '-'.")],
    admin: Annotated[bool, typer.Option("--admin", help="A platform admin (every right).")] = False,
    email: Annotated[str | None, typer.Option(help="Their email address.")] = None,
    password_stdin: PasswordStdin = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password: API tokens only (robots).")
    ] = False,
) -> None:
    """Create a user; unless given one, a strong password is generated and printed once."""
    if password_stdin and no_password:
        raise typer.BadParameter("choose --password-stdin or --no-password, not both")
    password = None if no_password else _read_password() if password_stdin else _generated()
    with _workspace() as ws:
        user = ws.metadata.access.create_user(
            name, by=ws.user, password=password, email=email, is_admin=admin
        )
    kind = "platform admin" if user.is_admin else "user"
    console.print(f"Created {kind} [bold]{user.name}[/] ({user.id}).")
    if password is not None and not password_stdin:
        _show_secret("Password", password)


def _generated() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 random bits


@users_app.command("password")
def password(
    name: Annotated[str, typer.Argument(help="The user.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a new password (generated and printed once unless read from stdin)."""
    new = _read_password() if password_stdin else _generated()
    with _workspace() as ws:
        ws.metadata.access.set_password(name, new, by=ws.user)
    console.print(f"Password of {name} replaced; the old one no longer works.")
    if not password_stdin:
        _show_secret("Password", new)


@users_app.command("list")
def list_users() -> None:
    """Every user, with their flags and roles."""
    with _workspace() as ws:
        found = ws.metadata.access.list_users()
        roles = {u.name: ws.metadata.access.user_roles(u.name) for u in found}
        names = {p.id: p.name for p in ws.metadata.projects.list()}
    if not found:
        console.print("No users yet. Create the first admin: meguri users create NAME --admin")
        return
    table = Table(title="Users")
    for column in ("name", "admin", "state", "email", "roles", "created", "by"):
        table.add_column(column)
    for user in found:
        held = ", ".join(f"{names.get(p, p)}:{r}" for p, r in roles[user.name].items())
        cells = (
            user.name,
            "yes" if user.is_admin else "",
            "disabled" if user.disabled else "active",
            user.email or "-",
            held or "-",
            _when(user.created_at),
            user.created_by,
        )
        table.add_row(*(Text(c) for c in cells))
    console.print(table)


@users_app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Stop a user signing in or using any of their tokens (reversible with enable)."""
    with _workspace() as ws:
        ws.metadata.access.disable_user(name, by=ws.user)
    console.print(f"Disabled {name}: no sign-in, no token works until `meguri users enable`.")


@users_app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Let a disabled user sign in and use their tokens again."""
    with _workspace() as ws:
        ws.metadata.access.enable_user(name, by=ws.user)
    console.print(f"Enabled {name}.")


# -- tokens ------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="Whose token.")],
    name: Annotated[str, typer.Option("--name", help="What it is for, e.g. 'ci'.")],
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", min=0.001, help="Default: never.")
    ] = None,
) -> None:
    """Create an API token; its secret is printed once and stored only as a hash."""
    expires = None if expires_in_days is None else time.time() + expires_in_days * 86400
    with _workspace() as ws:
        token, secret = ws.metadata.access.create_token(
            user, name=name, by=ws.user, expires_at=expires
        )
    console.print(f"Created token {token.id} ({token.prefix}…) for {user}.")
    _show_secret("Token", secret)


@token_app.command("list")
def token_list(user: Annotated[str, typer.Argument(help="Whose tokens.")]) -> None:
    """The user's tokens (their prefixes, never the secrets)."""
    with _workspace() as ws:
        tokens = ws.metadata.access.list_tokens(user)
    if not tokens:
        console.print(f"{user} has no tokens; `meguri users token create {user} --name NAME`.")
        return
    now = time.time()
    table = Table(title=f"API tokens of {user}")
    for column in ("id", "name", "prefix", "state", "created", "expires", "last used"):
        table.add_column(column)
    for t in tokens:
        state = "revoked" if t.revoked_at else "active" if t.is_active(now) else "expired"
        cells = (
            t.id,
            t.name,
            t.prefix + "…",
            state,
            _when(t.created_at),
            _when(t.expires_at),
            _when(t.last_used_at),
        )
        table.add_row(*(Text(c) for c in cells))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (tok-…).")]) -> None:
    """Revoke a token for good."""
    with _workspace() as ws:
        ws.metadata.access.revoke_token(token_id, by=ws.user)
    console.print(f"Revoked {token_id}.")


# -- roles -------------------------------------------------------------------------------------

ProjectOption = Annotated[
    str | None,
    typer.Option("--project", "-p", help="The project's name (default: this folder's)."),
]


def _project(ws: Workspace, name: str | None) -> tuple[str, str]:
    project = ws.project if name is None else ws.metadata.projects.get(name)
    return project.id, project.name


@role_app.command("set")
def role_set(
    user: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help=_ROLE_HELP)],
    project: ProjectOption = None,
) -> None:
    """Give a user a role in a project (replacing the one they had)."""
    with _workspace() as ws:
        project_id, label = _project(ws, project)
        ws.metadata.access.set_role(project_id, user, role, by=ws.user)
    console.print(f"{user} is {role} of project {label}.")


@role_app.command("remove")
def role_remove(
    user: Annotated[str, typer.Argument(help="The user.")],
    project: ProjectOption = None,
) -> None:
    """Take a user's role in a project away."""
    with _workspace() as ws:
        project_id, label = _project(ws, project)
        removed = ws.metadata.access.remove_role(project_id, user, by=ws.user)
    console.print(f"{user} {'no longer has a' if removed else 'had no'} role in project {label}.")


@role_app.command("list")
def role_list(project: ProjectOption = None) -> None:
    """Who holds which role in a project."""
    with _workspace() as ws:
        project_id, label = _project(ws, project)
        roles = ws.metadata.access.roles(project_id)
    if not roles:
        console.print(f"No roles in project {label}; `meguri users role set USER ROLE`.")
        return
    table = Table(title=f"Roles in project {label}")
    table.add_column("user")
    table.add_column("role")
    for name, role in roles.items():
        table.add_row(Text(name), Text(role))
    console.print(table)
