"""Who may call which metadata-store method over HTTP: one explicit table, deny by default.

Each exposed method has a :class:`Rule`: the level it needs (``viewer`` reads, ``editor``
writes, ``admin`` promotes, archives and deploys, ``platform_admin`` manages users and the
whole audit log; the REST routers ask the same for the same action), where its project comes
from (:class:`Ref`: a ``project_id`` argument, or an entity id resolved to its project with
SQLAlchemy Core), and which arguments name the actor (overwritten with the caller's name).
A method in neither :data:`RULES` nor :data:`EXCLUDED` is refused; a test checks that every
public repository method is in one of them.

Ids are not probed across projects: an id of a project the caller holds no role on is
answered exactly as a missing one (the same NotFoundError, or None from a ``find``), and
only a caller who may see an entity learns that their role is too low (403).

Platform admins pass every rule (rules only bind other users).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from meguri.errors import NotFoundError
from meguri.registry import PROTECTED_ALIASES
from meguri.server._access import Access, satisfies
from meguri.server._errors import ApiError
from meguri.store.metadata import MetadataStore, User
from meguri.store.metadata._schema import (
    alerts,
    api_tokens,
    dataset_versions,
    datasets,
    deployment_revisions,
    deployments,
    experiments,
    model_versions,
    models,
    monitor_windows,
    projects,
    runs,
    spec_versions,
)

__all__ = ["EXCLUDED", "RULES", "Caller", "Hidden", "Ref", "Rule", "authorise", "stamp_actors"]

V, E, A = Access.VIEWER, Access.EDITOR, Access.ADMIN
P, SIGNED_IN = Access.PLATFORM_ADMIN, Access.AUTHENTICATED


@dataclass(frozen=True)
class Ref:
    """An argument (``path``: ``run_id``, ``new.parents[]``, ``results[].project_id``) that
    names an entity of ``kind``, whose project the caller needs the rule's level on.
    ``drop``: ids the caller may not see are removed from the list (reads of many ids)."""

    kind: str
    path: str
    drop: bool = False


Level = Access | Callable[[Mapping[str, Any]], Access]


@dataclass(frozen=True)
class Rule:
    """``grant`` may allow a call outright (a user's own records); ``scoped`` answers
    non-admins instead of the repository; ``post`` filters what non-admins get back."""

    level: Level
    refs: tuple[Ref, ...] = ()
    actors: tuple[str, ...] = ()
    grant: Callable[[Caller, dict[str, Any]], bool] | None = None
    scoped: Callable[[Caller, dict[str, Any]], Any] | None = None
    post: Callable[[Caller, Any], Any] | None = None


class Hidden(Exception):
    """An entity the caller may not see (or that does not exist): answered as missing."""

    def __init__(self, kind: str, value: object) -> None:
        noun = kind.replace("_", " ").replace("project name", "project named")
        super().__init__(
            f"No {noun} {value!r} that you may see: check it, or ask a project admin for a role"
        )


@dataclass
class Caller:
    """The signed-in user of one call, with the roles looked up so far."""

    store: MetadataStore
    user: User
    _roles: dict[str, str | None] = field(default_factory=dict)

    def role(self, project_id: str) -> str | None:
        if project_id not in self._roles:
            self._roles[project_id] = self.store.access.role_of(project_id, self.user.name)
        return self._roles[project_id]

    def sees(self, project_id: str | None) -> bool:
        return project_id is not None and self.role(project_id) is not None


# -- finding projects -------------------------------------------------------------------------


def _owner_queries() -> dict[str, tuple[sa.ColumnElement[Any], sa.Select[Any]]]:
    """Per kind: the key column and a query of ``(key, project id)``."""
    exp, ds, mdl, dep = experiments.c, datasets.c, models.c, deployments.c
    spec, dsv, mv, rev = (
        spec_versions.c,
        dataset_versions.c,
        model_versions.c,
        deployment_revisions.c,
    )
    win, al = monitor_windows.c, alerts.c
    return {
        "project": (projects.c.id, sa.select(projects.c.id, projects.c.id)),
        "project_name": (projects.c.name, sa.select(projects.c.name, projects.c.id)),
        "experiment": (exp.id, sa.select(exp.id, exp.project_id)),
        "run": (runs.c.id, sa.select(runs.c.id, exp.project_id).join(experiments)),
        "spec_version": (spec.id, sa.select(spec.id, spec.project_id)),
        "dataset": (ds.id, sa.select(ds.id, ds.project_id)),
        "dataset_version": (dsv.id, sa.select(dsv.id, ds.project_id).join(datasets)),
        "model": (mdl.id, sa.select(mdl.id, mdl.project_id)),
        "model_version": (mv.id, sa.select(mv.id, mdl.project_id).join(models)),
        "deployment": (dep.id, sa.select(dep.id, dep.project_id)),
        "revision": (rev.id, sa.select(rev.id, dep.project_id).join(deployments)),
        "window": (win.id, sa.select(win.id, win.project_id)),
        "alert": (al.id, sa.select(al.id, al.project_id)),
    }


_OWNERS = _owner_queries()


def owners(store: MetadataStore, kind: str, keys: Iterable[str]) -> dict[str, str]:
    """The project id of each of ``keys`` (entities of ``kind``) that exists."""
    wanted = sorted({k for k in keys if isinstance(k, str)})
    if not wanted:
        return {}
    column, query = _OWNERS[kind]
    with store.db.read() as conn:
        return {str(k): str(p) for k, p in conn.execute(query.where(column.in_(wanted)))}


def values_at(arguments: Mapping[str, Any], path: str) -> list[Any]:
    """The values ``path`` reaches in the arguments (``a.b``: attribute, ``a[]``: each)."""
    found: list[Any] = [arguments]
    for step in path.split("."):
        name, each = step.removesuffix("[]"), step.endswith("[]")
        found = [
            v[name] if isinstance(v, Mapping) else getattr(v, name)
            for v in found
            if (name in v if isinstance(v, Mapping) else True)
        ]
        if each:
            found = [item for v in found if v is not None for item in v]
    return [v for v in found if v is not None]


def _check(caller: Caller, level: Access, ref: Ref, arguments: dict[str, Any]) -> None:
    wanted = values_at(arguments, ref.path)
    found = owners(caller.store, ref.kind, wanted)
    kept = []
    for value in wanted:
        project = found.get(value)
        if not caller.sees(project):
            if ref.drop:
                continue
            raise Hidden(ref.kind, value)
        assert project is not None
        role = caller.role(project)
        if not satisfies(role, level):
            raise ApiError(
                403,
                "forbidden",
                f"This needs the {level.value} role on {_where(ref.kind, value)}; your role "
                f"there is {role}. Ask a project admin.",
            )
        kept.append(value)
    key = ref.path.removesuffix("[]")
    if ref.drop and key in arguments:
        arguments[key] = kept


def authorise(caller: Caller, label: str, rule: Rule, arguments: dict[str, Any]) -> None:
    """Refuse (ApiError 403, or :class:`Hidden`) a non-admin call the rule does not allow;
    ids of ``drop`` refs the caller may not see are removed from ``arguments``."""
    if rule.grant is not None and rule.grant(caller, arguments):
        return
    level = rule.level(arguments) if callable(rule.level) else rule.level
    if level is P:
        raise ApiError(403, "forbidden", f"Only a platform admin may call {label}.")
    for ref in rule.refs:
        _check(caller, level, ref, arguments)


def stamp_actors(rule: Rule, arguments: dict[str, Any], name: str) -> None:
    """Overwrite the rule's actor arguments (``by``, ``new.created_by``,
    ``results[].created_by``) with ``name``."""
    for path in rule.actors:
        first, _, inner = path.partition(".")
        key = first.removesuffix("[]")
        if not inner:
            arguments[key] = name
        elif arguments.get(key) is not None:

            def one(item: Any, attribute: str = inner) -> Any:
                return dataclasses.replace(item, **{attribute: name})

            value = arguments[key]
            arguments[key] = [one(v) for v in value] if first.endswith("[]") else one(value)


# -- rules that need more than a level ---------------------------------------------------------


def _self(argument: str) -> Callable[[Caller, dict[str, Any]], bool]:
    def grant(caller: Caller, arguments: dict[str, Any]) -> bool:
        return arguments.get(argument) == caller.user.name

    return grant


def _own_id(caller: Caller, arguments: dict[str, Any]) -> bool:
    return arguments.get("user_id") == caller.user.id


def _own_token(caller: Caller, arguments: dict[str, Any]) -> bool:
    query = sa.select(api_tokens.c.user_id).where(api_tokens.c.id == arguments.get("token_id"))
    with caller.store.db.read() as conn:
        owner = conn.execute(query).scalar_one_or_none()
    if owner != caller.user.id:
        raise NotFoundError(f"You have no API token {arguments.get('token_id')!r}.")
    return True


def _member_of_named(caller: Caller, arguments: dict[str, Any]) -> bool:
    """``projects.ensure``: an existing project for anyone with a role on it; creating one
    is a platform admin's act."""
    name = arguments.get("name")
    found = owners(caller.store, "project_name", [name] if isinstance(name, str) else [])
    if caller.sees(found.get(str(name))):
        return True
    raise ApiError(
        403,
        "forbidden",
        f"Project {name!r} does not exist or you hold no role on it; only a platform admin "
        "creates projects. Ask one to create it (`meguri init` as a platform admin) or to "
        "give you a role (`meguri users role set`).",
    )


def _my_projects(caller: Caller, found: list[Any]) -> list[Any]:
    return [p for p in found if caller.sees(p.id)]


def _visible_results(caller: Caller, found: list[Any]) -> list[Any]:
    return [r for r in found if caller.sees(r.project_id)]


def _visible_versions(caller: Caller, found: Any) -> Any:
    """Dataset versions (a list or a dict by id) of projects the caller may see."""
    items = list(found.values()) if isinstance(found, dict) else list(found)
    projects_of = owners(caller.store, "dataset", [v.dataset_id for v in items])
    keep = {v.id for v in items if caller.sees(projects_of.get(v.dataset_id))}
    if isinstance(found, dict):
        return {k: v for k, v in found.items() if v.id in keep}
    return [v for v in items if v.id in keep]


def _resolve_run_id(caller: Caller, arguments: dict[str, Any]) -> str:
    """``runs.resolve_run_id`` among the runs of projects the caller holds a role on (the
    repository's search spans every project, and its errors name the ids it found)."""
    prefix = str(arguments["prefix"])
    held = list(caller.store.access.user_roles(caller.user.name))
    query = (
        sa.select(runs.c.id)
        .join(experiments)
        .where(
            experiments.c.project_id.in_(held),
            sa.or_(runs.c.id.startswith(prefix, autoescape=True), runs.c.name == prefix),
        )
        .limit(5)
    )
    with caller.store.db.read() as conn:
        ids = [str(i) for i in conn.execute(query).scalars()]
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise NotFoundError(f"No run matches {prefix!r}. List runs with `meguri runs list`.")
    raise NotFoundError(
        f"{prefix!r} matches several runs ({', '.join(ids)}, ...); give more of the ID."
    )


def _alias_level(arguments: Mapping[str, Any]) -> Access:
    """Ordinary aliases are an editor's; ``production``, promotions and extra history
    events an admin's (REST: ``PUT aliases`` editor, ``promote`` admin)."""
    ordinary = (
        arguments.get("alias") not in PROTECTED_ALIASES
        and arguments.get("kind", "alias_set") == "alias_set"
        and not arguments.get("extra")
    )
    return E if ordinary else A


def _audit_level(arguments: Mapping[str, Any]) -> Access:
    """A project's events are its admins' (REST ``/projects/{p}/audit``); all events a
    platform admin's."""
    return P if arguments.get("project_id") is None else A


# -- the table ---------------------------------------------------------------------------------

PROJECT = Ref("project", "project_id")
RUN = Ref("run", "run_id")
EXPERIMENT = Ref("experiment", "experiment_id")
EXPERIMENTS = Ref("experiment", "experiment_ids[]", drop=True)  # reads: unseen ones dropped
DATASET_VERSION = Ref("dataset_version", "version_id")
MODEL = Ref("model", "model_id")
MODEL_VERSION = Ref("model_version", "version_id")
DEPLOYMENT = Ref("deployment", "deployment_id")
BY, CREATED_BY = ("by",), ("created_by",)


def _each(repository: str, names: str, rule: Rule) -> dict[str, Rule]:
    return {f"{repository}.{name}": rule for name in names.split()}


RULES: dict[str, Rule] = {
    # projects: found by name; only platform admins create them
    "projects.ensure": Rule(P, actors=CREATED_BY, grant=_member_of_named),
    **_each("projects", "find get", Rule(V, (Ref("project_name", "name"),))),
    "projects.list": Rule(SIGNED_IN, post=_my_projects),
    # specs and documents
    "specs.add": Rule(E, (PROJECT,), CREATED_BY),
    "specs.get": Rule(V, (Ref("spec_version", "version_id"),)),
    **_each("specs", "count find_by_hash latest list match nth", Rule(V, (PROJECT,))),
    "specs.number": Rule(V, (Ref("project", "version.project_id"),)),
    "documents.add_version": Rule(E, (PROJECT,), CREATED_BY),
    **_each("documents", "find get latest_versions list version versions", Rule(V, (PROJECT,))),
    # checks: a subject may be any kind, so its results are filtered by their project
    "checks.record": Rule(E, (Ref("project", "results[].project_id"),), ("results[].created_by",)),
    "checks.history": Rule(V, (PROJECT,)),
    "checks.for_subject": Rule(SIGNED_IN, post=_visible_results),
    # experiments and runs
    "runs.ensure_experiment": Rule(E, (PROJECT,), CREATED_BY),
    **_each("runs", "find_experiment list_experiments", Rule(V, (PROJECT,))),
    "runs.get_experiment": Rule(V, (EXPERIMENT,)),
    **_each(
        "runs",
        "rename_experiment delete_experiment restore_experiment set_experiment_tags "
        "delete_experiment_tag",
        Rule(E, (EXPERIMENT,), BY),
    ),
    **_each(
        "runs",
        "count experiment_tags search",
        Rule(V, (Ref("experiment", "experiment_ids[]", drop=True),)),
    ),
    "runs.create_run": Rule(
        E,
        (EXPERIMENT, Ref("run", "parent_run_id"), Ref("spec_version", "spec_version_id")),
        CREATED_BY,
    ),
    **_each("runs", "end_run log_batch add_inputs add_artifact", Rule(E, (RUN,))),
    **_each("runs", "rename_run delete_run restore_run delete_tag", Rule(E, (RUN,), BY)),
    "runs.heartbeat": Rule(E, (Ref("run", "run_ids[]"),)),
    **_each("runs", "get_run list_artifacts metric_history", Rule(V, (RUN,))),
    "runs.resolve_run_id": Rule(SIGNED_IN, scoped=_resolve_run_id),
    "runs.fail_stale_runs": Rule(P),  # a sweep over every project's runs
    # datasets
    "datasets.add_version": Rule(
        E, (PROJECT, Ref("dataset_version", "new.parents[]")), ("new.created_by",)
    ),
    "datasets.set_digest": Rule(E, (DATASET_VERSION,), BY),
    **_each("datasets", "set_tag delete_tag", Rule(E, (Ref("dataset", "dataset_id"),), BY)),
    **_each(
        "datasets",
        "find find_by_hash get latest_versions list match version versions",
        Rule(V, (PROJECT,)),
    ),
    "datasets.get_version": Rule(V, (DATASET_VERSION,)),
    **_each("datasets", "ancestors children", Rule(V, (DATASET_VERSION,), post=_visible_versions)),
    "datasets.get_versions": Rule(V, (Ref("dataset_version", "version_ids[]", drop=True),)),
    # models: registering and describing is an editor's; promoting, archiving an admin's
    "models.add_version": Rule(
        E,
        (PROJECT, Ref("run", "new.run_id"), Ref("spec_version", "new.spec_version_id")),
        ("new.created_by",),
    ),
    "models.set_alias": Rule(_alias_level, (MODEL_VERSION,), BY),
    "models.remove_alias": Rule(A, (MODEL,), BY),
    "models.archive_version": Rule(A, (MODEL_VERSION,), BY),
    "models.add_event": Rule(A, (MODEL, MODEL_VERSION), BY),
    "models.update_model": Rule(E, (MODEL,), BY),
    **_each("models", "update_version set_card", Rule(E, (MODEL_VERSION,), BY)),
    **_each("models", "find_model get_model list_models match", Rule(V, (PROJECT,))),
    **_each("models", "aliases find_alias find_version latest versions", Rule(V, (MODEL,))),
    "models.events": Rule(V, (MODEL, MODEL_VERSION)),
    "models.get_version": Rule(V, (MODEL_VERSION,)),
    "models.versions_of_run": Rule(V, (RUN,)),
    # deployments: every change is an admin's
    "deployments.ensure": Rule(A, (PROJECT,), BY),
    "deployments.update": Rule(A, (DEPLOYMENT,), BY),
    "deployments.add_revision": Rule(
        A, (DEPLOYMENT, Ref("model_version", "new.targets[].model_version_id")), ("new.created_by",)
    ),
    "deployments.set_revision_state": Rule(A, (Ref("revision", "revision_id"),), BY),
    **_each("deployments", "find get list", Rule(V, (PROJECT,))),
    **_each("deployments", "get_by_id find_revision revisions", Rule(V, (DEPLOYMENT,))),
    "deployments.get_revision": Rule(V, (Ref("revision", "revision_id"),)),
    # monitoring: the monitor writes windows and alerts as an editor
    "monitor.save_windows": Rule(E, (Ref("project", "windows[].project_id"),), BY),
    "monitor.open_alert": Rule(E, (PROJECT, Ref("window", "window_id")), BY),
    "monitor.update_alert": Rule(
        E, (Ref("alert", "alert_id"), Ref("window", "last_window_id")), BY
    ),
    **_each("monitor", "alerts environments figure_series windows", Rule(V, (PROJECT,))),
    "monitor.get_window": Rule(V, (Ref("window", "window_id"),)),
    "monitor.get_alert": Rule(V, (Ref("alert", "alert_id"),)),
    # access: platform admins, except a user's own records and a project admin's roles
    **_each(
        "access",
        "create_user disable_user enable_user set_password",
        Rule(P, actors=BY),
    ),
    "access.list_users": Rule(P),
    **_each("access", "find_user get_user", Rule(P, grant=_self("name"))),
    **_each("access", "list_tokens user_roles", Rule(P, grant=_self("user_name"))),
    "access.user_by_id": Rule(P, grant=_own_id),
    "access.revoke_token": Rule(P, actors=BY, grant=_own_token),
    **_each("access", "set_role remove_role", Rule(A, (PROJECT,), BY)),
    "access.roles": Rule(A, (PROJECT,)),
    "access.role_of": Rule(A, (PROJECT,), grant=_self("user_name")),
    # tuning: optuna's journal of the project's studies (its trials are runs, ruled above)
    "tuning.append_logs": Rule(E, (PROJECT,)),
    "tuning.read_logs": Rule(V, (PROJECT,)),
    # the audit log
    "audit.append": Rule(P, actors=("event.actor",)),
    **_each("audit", "head verify", Rule(P)),
    "audit.events": Rule(_audit_level, (PROJECT,)),
}

#: Public repository methods never offered over HTTP, with the reason.
EXCLUDED: dict[str, str] = {
    "audit.record": "writes inside the caller's own database transaction (takes a connection)",
    "audit.iter_events": "streams one database snapshot; RemoteMetadataStore pages through "
    "audit.events instead",
    "access.verify_password": "a password oracle; signing in is POST /login, rate limited",
    "access.authenticate_token": "the server authenticates each caller itself; no token oracle",
    "access.create_token": "a token cannot mint tokens: POST /api/v1/me/tokens from a password "
    "sign-in",
    "access.end_session": "Studio sessions are the server's own: signing out is POST /logout",
    "access.session_ended": "Studio sessions are the server's own; no probing of session ids",
}


def _where(kind: str, value: str) -> str:
    """``project 'prj-…'``, or ``the project of run 'run-…'``."""
    if kind == "project":
        return f"project {value!r}"
    return f"the project of {kind.replace('_', ' ')} {value!r}"
