"""The model registry's aggregate: models, their numbered versions, aliases and history.

A model is a name within a project; each registered package is a version numbered 1, 2, ...
Numbers are allocated inside one write transaction that locks the model's row (PostgreSQL) or
holds SQLite's write lock; the unique constraint on ``(model, version)`` is the backstop, and a
writer that loses a race retries. Registering a package whose digest is already a ready version
of the model stores nothing and returns that version.

An alias (``production``, ``staging``, any name) points at one version of its model; only a
ready version can carry one, and archiving a version removes its aliases. Every change of a
version or alias appends a :class:`ModelEvent` in the same transaction as the change, so the
history (the audit trail of the registry) never disagrees with the state. Each model event is
also recorded in the platform's audit log (action ``model.<kind>``), as are description, tag
and card changes; those whose caller names no actor (``by``) are attributed to ``system``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import (
    Model,
    ModelAlias,
    ModelEvent,
    ModelStatus,
    ModelVersion,
    NewAuditEvent,
)
from meguri.store.metadata._schema import model_aliases, model_events, model_versions, models
from meguri.store.metadata.repositories._named import ensure_named
from meguri.store.metadata.repositories.audit import SYSTEM, record

_RETRIES = 8


@dataclass(frozen=True)
class NewModelVersion:
    """What the registry knows of a package before it is stored (see ``add_version``)."""

    run_id: str
    package_digest: str
    files: Mapping[str, Mapping[str, Any]]
    task: str
    signature: Mapping[str, Any]
    metrics: Mapping[str, float]
    runtime: str
    created_by: str
    spec_version_id: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewModelEvent:
    """An event to append along with a change: its ``kind`` and ``detail``."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


_VERSION_COLUMNS = (models.c.name, *model_versions.c)


def _select_versions() -> sa.Select[Any]:
    return sa.select(*_VERSION_COLUMNS).join(models, models.c.id == model_versions.c.model_id)


def _version(row: sa.Row[Any], aliases: tuple[str, ...]) -> ModelVersion:
    m = dict(row._mapping)
    for column in ("files", "signature", "metrics", "tags"):
        m[column] = orjson.loads(m.pop(f"{column}_json"))
    m["status"] = ModelStatus(m["status"])
    return ModelVersion(**m, aliases=aliases)


def _load(conn: sa.Connection, query: sa.Select[Any]) -> list[ModelVersion]:
    rows = conn.execute(query).all()
    aliases: dict[str, list[str]] = {}
    if rows:
        a = model_aliases.c
        found = conn.execute(
            sa.select(a.version_id, a.alias)
            .where(a.version_id.in_([r.id for r in rows]))
            .order_by(a.alias)
        )
        for version_id, alias in found.all():
            aliases.setdefault(version_id, []).append(alias)
    return [_version(r, tuple(aliases.get(r.id, ()))) for r in rows]


def _model(row: sa.Row[Any]) -> Model:
    m = dict(row._mapping)
    tags = orjson.loads(m.pop("tags_json"))
    return Model(**{**m, "archived": bool(m["archived"])}, tags=tags)


def _event(row: sa.Row[Any]) -> ModelEvent:
    m = dict(row._mapping)
    detail = orjson.loads(m.pop("detail_json"))
    return ModelEvent(**m, detail=detail)


def _merge_tags(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class ModelRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- registering ---------------------------------------------------------------------------

    def add_version(
        self, project_id: str, name: str, new: NewModelVersion
    ) -> tuple[ModelVersion, bool]:
        """Store ``new`` as the next version of model ``name`` (created if new) and append its
        ``registered`` event. Returns ``(version, created)``; ``created`` is False when a ready
        version with the same package digest exists, which is returned unchanged."""
        for _ in range(_RETRIES):
            try:
                with self._db.write() as conn:
                    return self._add(conn, project_id, name, new)
            except sa.exc.IntegrityError:
                continue  # a concurrent writer took the number or created the model
        raise ConflictError(
            f"Could not register a new version of model {name!r}: other writers kept taking "
            "the next number; try again"
        )

    def _add(
        self, conn: sa.Connection, project_id: str, name: str, new: NewModelVersion
    ) -> tuple[ModelVersion, bool]:
        model_id = ensure_named(
            conn,
            models,
            prefix="mdl",
            project_id=project_id,
            name=name,
            created_by=new.created_by,
            tags_json="{}",
            archived=False,
        )
        v = model_versions.c
        same = _load(
            conn,
            _select_versions().where(
                v.model_id == model_id,
                v.package_digest == new.package_digest,
                v.status == ModelStatus.READY.value,
            ),
        )
        if same:
            return same[0], False
        row = _version_row(conn, model_id, new)
        conn.execute(model_versions.insert(), row)
        conn.execute(models.update().where(models.c.id == model_id).values(archived=False))
        detail = {"run_id": new.run_id, "package_digest": new.package_digest}
        _append(conn, model_id, row["id"], new.created_by, [NewModelEvent("registered", detail)])
        return _load(conn, _select_versions().where(v.id == row["id"]))[0], True

    # -- aliases -------------------------------------------------------------------------------

    def set_alias(
        self,
        version_id: str,
        alias: str,
        *,
        by: str,
        kind: str = "alias_set",
        detail: Mapping[str, Any] | None = None,
        extra: Sequence[NewModelEvent] = (),
        only_from: str | None = None,
    ) -> ModelAlias:
        """Point ``alias`` at ``version_id`` (a ready version) and append a ``kind`` event
        (detail: the alias, the version it pointed at before, and ``detail``) plus ``extra``.
        With ``only_from`` (a version id), the alias moves only if it points at that version
        now, else :class:`ConflictError` (someone moved it since)."""
        with self._db.write() as conn:
            version = self._locked_version(conn, version_id)
            if version.status is not ModelStatus.READY:
                raise ConflictError(
                    f"{version.ref} is archived and cannot carry the alias {alias!r}; "
                    "register or choose a ready version"
                )
            previous = _alias_row(conn, version.model_id, alias)
            now_at = None if previous is None else previous.version_id
            if only_from is not None and now_at != only_from:
                raise ConflictError(
                    f"the alias {alias!r} points at {now_at or 'no version'}, not {only_from}; "
                    "left where it is"
                )
            now = time.time()
            key = {"model_id": version.model_id, "alias": alias}
            values = {"version_id": version_id, "updated_at": now, "updated_by": by}
            if previous is None:
                conn.execute(model_aliases.insert(), {**key, **values})
            else:
                conn.execute(model_aliases.update().filter_by(**key).values(values))
            before = None if previous is None else previous.version_id
            info = {"alias": alias, "previous_version_id": before, **dict(detail or {})}
            _append(conn, version.model_id, version_id, by, [NewModelEvent(kind, info), *extra])
        return ModelAlias(version.model_id, alias, version_id, version.version, now, by)

    def remove_alias(self, model_id: str, alias: str, *, by: str) -> bool:
        """Remove ``alias`` of the model (appending ``alias_removed``); False when unset."""
        with self._db.write() as conn:
            previous = _alias_row(conn, model_id, alias)
            if previous is None:
                return False
            conn.execute(model_aliases.delete().filter_by(model_id=model_id, alias=alias))
            event = NewModelEvent("alias_removed", {"alias": alias})
            _append(conn, model_id, previous.version_id, by, [event])
        return True

    def aliases(self, model_id: str) -> builtins.list[ModelAlias]:
        """The model's aliases by name."""
        a = model_aliases.c
        query = (
            sa.select(*model_aliases.c, model_versions.c.version)
            .join(model_versions, model_versions.c.id == a.version_id)
            .where(a.model_id == model_id)
            .order_by(a.alias)
        )
        with self._db.read() as conn:
            return [ModelAlias(**r._mapping) for r in conn.execute(query).all()]

    # -- changes -------------------------------------------------------------------------------

    def archive_version(self, version_id: str, *, by: str) -> ModelVersion:
        """Archive a version: its aliases are removed (each with an ``alias_removed`` event),
        then ``archived`` is appended. The model is archived when no version is left ready."""
        with self._db.write() as conn:
            version = self._locked_version(conn, version_id)
            if version.status is ModelStatus.ARCHIVED:
                return version
            conn.execute(model_aliases.delete().where(model_aliases.c.version_id == version_id))
            conn.execute(
                model_versions.update()
                .where(model_versions.c.id == version_id)
                .values(status=ModelStatus.ARCHIVED.value)
            )
            _archive_model_if_empty(conn, version.model_id)
            events = [NewModelEvent("alias_removed", {"alias": a}) for a in version.aliases]
            events.append(NewModelEvent("archived", {"removed_aliases": list(version.aliases)}))
            _append(conn, version.model_id, version_id, by, events)  # last: it audits
            return _load(conn, _select_versions().where(model_versions.c.id == version_id))[0]

    def update_model(
        self,
        model_id: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        by: str | None = None,
    ) -> Model:
        """Set the description (when given) and merge ``tags`` (``None`` removes a key)."""
        with self._db.write() as conn:
            row = conn.execute(
                sa.select(models).where(models.c.id == model_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFoundError(
                    f"No model with id {model_id!r}; `meguri models list` lists them"
                )
            values = _changes(row, description, tags)
            conn.execute(models.update().where(models.c.id == model_id).values(values))
            detail = _change_detail(row.name, description, tags)
            event = NewAuditEvent(
                by or SYSTEM, "model.updated", "model", model_id, row.project_id, detail
            )
            record(conn, [event])
            return _model(conn.execute(sa.select(models).where(models.c.id == model_id)).one())

    def update_version(
        self,
        version_id: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        by: str | None = None,
    ) -> ModelVersion:
        """Set the version's description (when given) and merge ``tags``."""
        with self._db.write() as conn:
            version = self._locked_version(conn, version_id)
            row = conn.execute(
                sa.select(model_versions).where(model_versions.c.id == version_id)
            ).one()
            values = _changes(row, description, tags)
            conn.execute(
                model_versions.update().where(model_versions.c.id == version_id).values(values)
            )
            detail = _change_detail(version.ref, description, tags)
            _audit_version(conn, version, by, "model.version_updated", detail)
            return _load(conn, _select_versions().where(model_versions.c.id == version_id))[0]

    def set_card(
        self, version_id: str, *, markdown_digest: str, html_digest: str, by: str | None = None
    ) -> ModelVersion:
        """Record the artifact digests of the version's model card (Markdown and HTML)."""
        with self._db.write() as conn:
            version = self._locked_version(conn, version_id)
            conn.execute(
                model_versions.update()
                .where(model_versions.c.id == version_id)
                .values(card_markdown_digest=markdown_digest, card_html_digest=html_digest)
            )
            detail = {"model": version.ref, "markdown": markdown_digest, "html": html_digest}
            _audit_version(conn, version, by, "model.card_set", detail)
            return _load(conn, _select_versions().where(model_versions.c.id == version_id))[0]

    def add_event(
        self, model_id: str, version_id: str | None, event: NewModelEvent, *, by: str
    ) -> ModelEvent:
        """Append one event to the model's history."""
        with self._db.write() as conn:
            return _append(conn, model_id, version_id, by, [event])[0]

    def _locked_version(self, conn: sa.Connection, version_id: str) -> ModelVersion:
        query = _select_versions().where(model_versions.c.id == version_id)
        found = _load(conn, query.with_for_update(of=model_versions))
        if not found:
            raise _no_version(version_id)
        return found[0]

    # -- reads ---------------------------------------------------------------------------------

    def find_model(self, project_id: str, name: str) -> Model | None:
        query = sa.select(models).where(models.c.project_id == project_id, models.c.name == name)
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _model(row)

    def get_model(self, project_id: str, name: str) -> Model:
        found = self.find_model(project_id, name)
        if found is None:
            raise NotFoundError(
                f"No model named {name!r} in this project; `meguri models list` lists them, "
                "`meguri models register RUN --name NAME` adds one"
            )
        return found

    def list_models(
        self, project_id: str, *, include_archived: bool = True
    ) -> builtins.list[Model]:
        """The project's models by name."""
        query = sa.select(models).where(models.c.project_id == project_id)
        if not include_archived:
            query = query.where(models.c.archived == sa.false())
        with self._db.read() as conn:
            return [_model(r) for r in conn.execute(query.order_by(models.c.name)).all()]

    def versions(self, model_id: str) -> builtins.list[ModelVersion]:
        """Every version of the model, oldest first."""
        query = _select_versions().where(model_versions.c.model_id == model_id)
        with self._db.read() as conn:
            return _load(conn, query.order_by(model_versions.c.version))

    def get_version(self, version_id: str) -> ModelVersion:
        with self._db.read() as conn:
            found = _load(conn, _select_versions().where(model_versions.c.id == version_id))
        if not found:
            raise _no_version(version_id)
        return found[0]

    def find_version(self, model_id: str, number: int) -> ModelVersion | None:
        v = model_versions.c
        query = _select_versions().where(v.model_id == model_id, v.version == number)
        with self._db.read() as conn:
            found = _load(conn, query)
        return found[0] if found else None

    def latest(self, model_id: str) -> ModelVersion | None:
        """The newest ready version of the model, or None when every version is archived."""
        v = model_versions.c
        query = (
            _select_versions()
            .where(v.model_id == model_id, v.status == ModelStatus.READY.value)
            .order_by(v.version.desc())
            .limit(1)
        )
        with self._db.read() as conn:
            found = _load(conn, query)
        return found[0] if found else None

    def find_alias(self, model_id: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, or None when the alias is unset."""
        a = model_aliases.c
        query = _select_versions().join(model_aliases, a.version_id == model_versions.c.id)
        with self._db.read() as conn:
            found = _load(conn, query.where(a.model_id == model_id, a.alias == alias))
        return found[0] if found else None

    def match(
        self, project_id: str, prefix: str, *, limit: int = 10
    ) -> builtins.list[ModelVersion]:
        """Versions of the project whose id starts with ``prefix`` (at most ``limit``)."""
        query = _select_versions().where(
            models.c.project_id == project_id,
            model_versions.c.id.startswith(prefix, autoescape=True),
        )
        with self._db.read() as conn:
            return _load(conn, query.order_by(model_versions.c.id).limit(limit))

    def versions_of_run(self, run_id: str) -> builtins.list[ModelVersion]:
        """The versions registered from run ``run_id``."""
        query = _select_versions().where(model_versions.c.run_id == run_id)
        with self._db.read() as conn:
            return _load(conn, query.order_by(model_versions.c.id))

    def events(self, model_id: str, *, version_id: str | None = None) -> builtins.list[ModelEvent]:
        """The model's history (or one version's), oldest first."""
        e = model_events.c
        query = sa.select(model_events).where(e.model_id == model_id)
        if version_id is not None:
            query = query.where(e.version_id == version_id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(e.created_at, e.id)).all()
        return [_event(r) for r in rows]


def _version_row(conn: sa.Connection, model_id: str, new: NewModelVersion) -> dict[str, Any]:
    v = model_versions.c
    latest = conn.execute(
        sa.select(sa.func.max(v.version)).where(v.model_id == model_id)
    ).scalar_one_or_none()
    return {
        "id": new_id("mv"),
        "model_id": model_id,
        "version": (latest or 0) + 1,
        "run_id": new.run_id,
        "spec_version_id": new.spec_version_id,
        "package_digest": new.package_digest,
        "files_json": _dumps(new.files),
        "task": new.task,
        "signature_json": _dumps(new.signature),
        "metrics_json": _dumps(new.metrics),
        "runtime": new.runtime,
        "status": ModelStatus.READY.value,
        "description": new.description,
        "tags_json": _dumps(new.tags),
        "card_markdown_digest": None,
        "card_html_digest": None,
        "created_at": time.time(),
        "created_by": new.created_by,
    }


def _changes(
    row: sa.Row[Any], description: str | None, tags: Mapping[str, str | None] | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if description is not None:
        values["description"] = description or None
    if tags is not None:
        values["tags_json"] = _dumps(_merge_tags(orjson.loads(row.tags_json), tags))
    return values


def _alias_row(conn: sa.Connection, model_id: str, alias: str) -> sa.Row[Any] | None:
    a = model_aliases.c
    query = sa.select(model_aliases).where(a.model_id == model_id, a.alias == alias)
    return conn.execute(query).one_or_none()


def _archive_model_if_empty(conn: sa.Connection, model_id: str) -> None:
    v = model_versions.c
    ready = conn.execute(
        sa.select(v.id).where(v.model_id == model_id, v.status == ModelStatus.READY.value).limit(1)
    ).first()
    if ready is None:
        conn.execute(models.update().where(models.c.id == model_id).values(archived=True))


def _append(
    conn: sa.Connection,
    model_id: str,
    version_id: str | None,
    by: str,
    events: Iterable[NewModelEvent],
) -> list[ModelEvent]:
    now = time.time()  # a microsecond apart: reading back keeps the appended order
    stored = [
        ModelEvent(new_id("mev"), model_id, version_id, e.kind, dict(e.detail), now + i * 1e-6, by)
        for i, e in enumerate(events)
    ]
    rows = [
        {
            "id": e.id,
            "model_id": e.model_id,
            "version_id": e.version_id,
            "kind": e.kind,
            "detail_json": _dumps(e.detail),
            "created_at": e.created_at,
            "created_by": e.created_by,
        }
        for e in stored
    ]
    if rows:
        conn.execute(model_events.insert(), rows)
        _audit_events(conn, model_id, stored)
    return stored


def _project_of(conn: sa.Connection, model_id: str) -> tuple[str, str]:
    """The model's project id and name."""
    query = sa.select(models.c.project_id, models.c.name).where(models.c.id == model_id)
    project_id, name = conn.execute(query).one()
    return str(project_id), str(name)


def _audit_events(conn: sa.Connection, model_id: str, events: Sequence[ModelEvent]) -> None:
    """Mirror model events in the audit log (each ``model.<kind>``, on the version when it
    names one): the last statement of the caller's transaction."""
    project_id, name = _project_of(conn, model_id)
    record(
        conn,
        [
            NewAuditEvent(
                e.created_by,
                f"model.{e.kind}",
                "model" if e.version_id is None else "model_version",
                e.version_id or model_id,
                project_id,
                {"model": name, **e.detail},
            )
            for e in events
        ],
    )


def _audit_version(
    conn: sa.Connection, version: ModelVersion, by: str | None, action: str, detail: dict[str, Any]
) -> None:
    project_id, _ = _project_of(conn, version.model_id)
    event = NewAuditEvent(by or SYSTEM, action, "model_version", version.id, project_id, detail)
    record(conn, [event])


def _change_detail(
    what: str, description: str | None, tags: Mapping[str, str | None] | None
) -> dict[str, Any]:
    detail: dict[str, Any] = {"model": what}
    if description is not None:
        detail["description"] = description
    if tags is not None:
        detail["tags"] = dict(tags)
    return detail


def _no_version(version_id: str) -> NotFoundError:
    return NotFoundError(
        f"No model version {version_id!r}; `meguri models list` lists the models and "
        "`meguri models show NAME` their versions"
    )
