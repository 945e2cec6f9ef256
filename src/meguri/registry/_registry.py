"""The model registry: named models, numbered versions, aliases, gated promotion, loading.

A version is a model package that a training run logged as its artifacts ``model/<path>``
(``model/model.json`` plus the files it lists with their sha256). Registering records those
digests; loading fetches them from the artifact store into a per-package cache folder and hands
the folder to :func:`meguri.serve._package.load_package`, which verifies every sha256 again.

References (``ref``): ``name`` or ``name@latest`` (the newest ready version), ``name@3`` (a
number), ``name@production`` (an alias) or a version id ``mv-…`` (or a unique prefix of one).

Promotion (:func:`promote`) is gated: the latest result of every success criterion recorded for
the version's run (and for the version itself) must pass. A failing or missing result blocks it
unless ``override_reason`` is given; the override and the failing criteria are then recorded as a
``gate_override`` event beside the ``promoted`` one. The alias ``production`` can only be set by
a promotion.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import orjson

from meguri.errors import GateFailedError, NotFoundError, PackageError, RegistryError
from meguri.store import Workspace, default_workspace
from meguri.store._workspace import STATE_DIR
from meguri.store.metadata import CheckResult, Model, ModelStatus, ModelVersion
from meguri.store.metadata.repositories.models import NewModelEvent, NewModelVersion

if TYPE_CHECKING:
    from meguri.serve._model import LoadedModel
    from meguri.train._train import TrainResult

__all__ = [
    "PROTECTED_ALIASES",
    "GateReport",
    "archive",
    "check_gates",
    "describe",
    "download_package",
    "get_model_version",
    "list_models",
    "list_versions",
    "load_model",
    "promote",
    "ref_alias",
    "register_model",
    "remove_alias",
    "set_alias",
    "tag",
]

#: Aliases only :func:`promote` may set (it checks the gates first).
PROTECTED_ALIASES = frozenset({"production"})
PACKAGE_PREFIX = "model/"
MANIFEST = "model.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_ALIAS = re.compile(r"^[a-z0-9_-]{1,64}$")


# -- references ------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("mv-"):
        raise RegistryError(
            f"Model name {name!r} is not valid: use 1 to 200 letters, digits, '_', '-' and "
            "'.', starting with a letter or digit (and not with 'mv-'), e.g. 'churn'"
        )
    return name


def _check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or alias == "latest" or alias.isdigit():
        raise RegistryError(
            f"Alias {alias!r} is not valid: use 1 to 64 lowercase letters, digits, '-' and '_' "
            "(not 'latest' and not a number, which name versions), e.g. 'staging'"
        )
    return alias


def _model(ws: Workspace, name: str) -> Model:
    found = ws.metadata.models.find_model(ws.project.id, name)
    if found is not None:
        return found
    known = [m.name for m in ws.metadata.models.list_models(ws.project.id)]
    listed = f"known models: {', '.join(known)}" if known else "no model is registered yet"
    raise RegistryError(
        f"No model named {name!r} in project {ws.project.name} ({listed}); register one with "
        "`meguri models register RUN --name NAME`"
    )


def _by_id(ws: Workspace, ref: str) -> ModelVersion:
    found = ws.metadata.models.match(ws.project.id, ref, limit=5)
    if len(found) == 1:
        return found[0]
    if not found:
        raise RegistryError(
            f"No model version {ref!r} in project {ws.project.name}; `meguri models list` "
            "lists the models, `meguri models show NAME` their versions"
        )
    raise RegistryError(
        f"{ref!r} matches several model versions ({', '.join(v.id for v in found)}, ...); "
        "give more of the id"
    )


def _unknown(ws: Workspace, model: Model, selector: str) -> RegistryError:
    repo = ws.metadata.models
    aliases = ", ".join(f"{a.alias} -> {a.version}" for a in repo.aliases(model.id)) or "none"
    versions = repo.versions(model.id)
    ready = ", ".join(str(v.version) for v in versions if v.status is ModelStatus.READY)
    archived = [str(v.version) for v in versions if v.status is ModelStatus.ARCHIVED]
    what = "ready version" if selector in ("", "latest") else f"version or alias {selector!r}"
    more = f"; archived versions: {', '.join(archived)}" if archived else ""
    return RegistryError(
        f"Model {model.name!r} has no {what}; its aliases: {aliases}; its ready versions: "
        f"{ready or 'none'}{more}. `meguri models show {model.name}` shows them all"
    )


def ref_alias(ref: str) -> str | None:
    """The alias ``ref`` names (``churn@production``: ``production``), or None for a version
    id, a number or the latest version."""
    if ref.startswith("mv-"):
        return None
    selector = ref.partition("@")[2]
    return None if selector in ("", "latest") or selector.isdigit() else selector


def _resolve(ws: Workspace, ref: str) -> ModelVersion:
    if ref.startswith("mv-"):
        return _by_id(ws, ref)
    name, _, selector = ref.partition("@")
    model = _model(ws, name)
    repo = ws.metadata.models
    alias = ref_alias(ref)
    if alias is not None:
        found = repo.find_alias(model.id, alias)
    elif selector.isdigit():
        found = repo.find_version(model.id, int(selector))
    else:
        found = repo.latest(model.id)
    if found is None:
        raise _unknown(ws, model, selector)
    return found


def _ready(ws: Workspace, ref: str, purpose: str) -> ModelVersion:
    version = _resolve(ws, ref)
    if version.status is ModelStatus.ARCHIVED:
        raise RegistryError(
            f"{version.ref} is archived and cannot {purpose}; choose a ready version "
            f"(`meguri models show {version.name}`) or register the run again"
        )
    return version


def get_model_version(ref: str, *, workspace: Workspace | None = None) -> ModelVersion:
    """The version ``ref`` names (see the module docstring); RegistryError when unknown."""
    return _resolve(workspace or default_workspace(), ref)


def list_models(
    *, workspace: Workspace | None = None, include_archived: bool = False
) -> list[Model]:
    """The project's models by name (``include_archived``: also those with no ready version)."""
    ws = workspace or default_workspace()
    return ws.metadata.models.list_models(ws.project.id, include_archived=include_archived)


def list_versions(name: str, *, workspace: Workspace | None = None) -> list[ModelVersion]:
    """Every version of model ``name``, oldest first (archived ones included)."""
    ws = workspace or default_workspace()
    return ws.metadata.models.versions(_model(ws, name).id)


# -- registering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Package:
    digest: str
    manifest: dict[str, Any]
    files: dict[str, dict[str, Any]]


def _read_package(ws: Workspace, run_id: str) -> _Package:
    logged = {
        a.name[len(PACKAGE_PREFIX) :]: a
        for a in ws.metadata.runs.list_artifacts(run_id)
        if a.name.startswith(PACKAGE_PREFIX)
    }
    head = logged.get(MANIFEST)
    if head is None:
        raise RegistryError(
            f"Run {run_id} has no model package (no artifact {PACKAGE_PREFIX}{MANIFEST}); train "
            "with `meguri train` first, then register the training run"
        )
    manifest = orjson.loads(ws.artifacts.get_bytes(head.digest))
    if not isinstance(manifest, dict) or manifest.get("format") != "meguri.model":
        raise RegistryError(
            f"Run {run_id}'s {PACKAGE_PREFIX}{MANIFEST} is not a meguri model package; "
            "train with `meguri train` to log one"
        )
    files: dict[str, dict[str, Any]] = {MANIFEST: {"sha256": head.digest, "size": head.size}}
    for path, entry in dict(manifest.get("files") or {}).items():
        stored = logged.get(path)
        if stored is None or stored.digest != entry.get("sha256"):
            raise RegistryError(
                f"Run {run_id}'s model package is incomplete: {PACKAGE_PREFIX}{path} is "
                f"{'missing' if stored is None else 'not the file model.json lists'}; "
                "train again to log a whole package"
            )
        files[_safe_path(path).as_posix()] = {"sha256": stored.digest, "size": stored.size}
    return _Package(head.digest, manifest, files)


def _new_version(ws: Workspace, run_id: str, package: _Package) -> NewModelVersion:
    m = package.manifest
    lineage = m.get("lineage") or {}
    spec_version = (
        lineage.get("spec_version_id") or ws.metadata.runs.get_run(run_id).spec_version_id
    )
    return NewModelVersion(
        run_id=run_id,
        package_digest=package.digest,
        files=package.files,
        task=str(m.get("task", "")),
        signature=dict(m.get("signature") or {}),
        metrics={k: float(v) for k, v in dict(m.get("metrics") or {}).items()},
        runtime=str(m.get("runtime", "")),
        created_by=ws.user,
        spec_version_id=spec_version,
    )


def register_model(
    source: TrainResult | str,
    name: str,
    *,
    workspace: Workspace | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Register the model package of ``source`` as the next version of model ``name``.

    ``source``: a :class:`~meguri.train.TrainResult` (its package is logged first) or a run id,
    unique id prefix or run name whose artifacts hold ``model/model.json``. A package already
    registered as a ready version of ``name`` returns that version.
    """
    ws = workspace or default_workspace()
    _check_name(name)
    if isinstance(source, str):
        try:
            run_id = ws.metadata.runs.resolve_run_id(source)
        except NotFoundError as err:
            raise RegistryError(f"{err} Train one with `meguri train` first.") from None
    else:
        from meguri.registry._package import log_model

        log_model(source, ws)
        run_id = source.run_id
    package = _read_package(ws, run_id)
    version, created = ws.metadata.models.add_version(
        ws.project.id, name, _new_version(ws, run_id, package)
    )
    if created or version.card_html_digest is None:
        version = write_card(version, workspace=ws)
    if description is not None or tags:
        version = ws.metadata.models.update_version(
            version.id, description=description, tags=dict(tags or {}), by=ws.user
        )
    return version


def write_card(version: ModelVersion, *, workspace: Workspace | None = None) -> ModelVersion:
    """Generate the version's model card from its lineage (see :mod:`meguri.registry._card`),
    store its Markdown, HTML and facts as artifacts and record their digests on the version."""
    from meguri.registry._card import model_card

    ws = workspace or default_workspace()
    card = model_card(
        ws,
        run_id=version.run_id,
        model_name=version.name,
        version=version.version,
        spec_version_id=version.spec_version_id,
    )
    markdown = ws.artifacts.put_bytes(card.markdown.encode())
    html = ws.artifacts.put_bytes(card.html.encode())
    return ws.metadata.models.set_card(
        version.id, markdown_digest=markdown.digest, html_digest=html.digest, by=ws.user
    )


def read_card(ref: str, *, html: bool = False, workspace: Workspace | None = None) -> str:
    """The stored model card of ``ref`` (Markdown, or HTML with ``html=True``); written on
    first use for a version registered before cards existed."""
    ws = workspace or default_workspace()
    version = _resolve(ws, ref)
    if version.card_html_digest is None or version.card_markdown_digest is None:
        version = write_card(version, workspace=ws)
    digest = version.card_html_digest if html else version.card_markdown_digest
    assert digest is not None
    return ws.artifacts.get_bytes(digest).decode()


# -- aliases, gates, archive -----------------------------------------------------------------


@dataclass(frozen=True)
class GateReport:
    """The latest result of each success criterion recorded for a version (its run's and its
    own). ``passed``: at least one result and none failing."""

    version: ModelVersion
    results: list[CheckResult]

    @property
    def failing(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failing

    def problems(self) -> str:
        """What blocks promotion, in words (empty when :attr:`passed`)."""
        if not self.results:
            return f"no success-criterion results are recorded for run {self.version.run_id}"
        return "; ".join(_criterion_text(r) for r in self.failing)


def _criterion_text(result: CheckResult) -> str:
    value = "not measured" if result.value is None else f"{result.value:.6g}"
    return (
        f"{result.criterion_id} ({result.stage} {result.metric} = {value}, "
        f"needs {result.comparison} {result.threshold:g})"
    )


def _gate_report(ws: Workspace, version: ModelVersion) -> GateReport:
    checks = ws.metadata.checks
    latest: dict[str, CheckResult] = {}
    for result in [
        *checks.for_subject("run", version.run_id),
        *checks.for_subject("model_version", version.id),
    ]:
        latest[result.criterion_id] = result  # oldest first: the last one wins
    return GateReport(version, sorted(latest.values(), key=lambda r: r.criterion_id))


def check_gates(ref: str, *, workspace: Workspace | None = None) -> GateReport:
    """The gate results of version ``ref`` (what :func:`promote` checks)."""
    ws = workspace or default_workspace()
    return _gate_report(ws, _resolve(ws, ref))


def _failing_detail(report: GateReport) -> list[dict[str, Any]]:
    return [
        {
            "criterion": r.criterion_id,
            "metric": r.metric,
            "value": r.value,
            "comparison": r.comparison,
            "threshold": r.threshold,
            "check_id": r.id,
        }
        for r in report.failing
    ]


def promote(
    ref: str,
    alias: str = "production",
    *,
    override_reason: str | None = None,
    workspace: Workspace | None = None,
) -> ModelVersion:
    """Point ``alias`` at version ``ref`` once its gates pass (see the module docstring).

    Raises :class:`GateFailedError` naming each failing criterion unless ``override_reason``
    is given; an override is recorded (``gate_override`` event) with the reason and criteria.
    """
    ws = workspace or default_workspace()
    _check_alias(alias)
    version = _ready(ws, ref, f"be promoted to {alias!r}")
    reason = None if override_reason is None else override_reason.strip()
    if reason == "":
        raise RegistryError("The override reason is empty; say why the gates may be skipped")
    report = _gate_report(ws, version)
    if not report.passed and reason is None:
        raise GateFailedError(
            f"Cannot promote {version.ref} to {alias!r}: {report.problems()}. Improve the "
            'model, or promote anyway with --override "reason" (override_reason=...), '
            "which is recorded in the model's history"
        )
    extra = []
    if not report.passed:
        detail = {"reason": reason, "alias": alias, "failing": _failing_detail(report)}
        extra.append(NewModelEvent("gate_override", {**detail, "no_checks": not report.results}))
    ws.metadata.models.set_alias(
        version.id,
        alias,
        by=ws.user,
        kind="promoted",
        detail={"checks": [r.id for r in report.results], "gates_passed": report.passed},
        extra=extra,
    )
    return ws.metadata.models.get_version(version.id)


def set_alias(ref: str, alias: str, *, workspace: Workspace | None = None) -> ModelVersion:
    """Point ``alias`` at version ``ref`` (moving it from another version of the model)."""
    ws = workspace or default_workspace()
    _check_alias(alias)
    if alias in PROTECTED_ALIASES:
        raise RegistryError(
            f"The alias {alias!r} is set by promotion, which checks the gates: run "
            f"`meguri models promote {ref} --to {alias}`"
        )
    version = _ready(ws, ref, f"carry the alias {alias!r}")
    ws.metadata.models.set_alias(version.id, alias, by=ws.user)
    return ws.metadata.models.get_version(version.id)


def remove_alias(ref: str, alias: str, *, workspace: Workspace | None = None) -> None:
    """Remove ``alias`` from the model ``ref`` names (``name``, ``name@…`` or ``mv-…``)."""
    ws = workspace or default_workspace()
    if ref.startswith("mv-"):
        model_id = _resolve(ws, ref).model_id
    else:
        model_id = _model(ws, ref.partition("@")[0]).id
    if not ws.metadata.models.remove_alias(model_id, alias, by=ws.user):
        known = ", ".join(a.alias for a in ws.metadata.models.aliases(model_id)) or "none"
        raise RegistryError(f"No alias {alias!r} to remove from {ref!r}; its aliases: {known}")


def archive(ref: str, *, workspace: Workspace | None = None) -> ModelVersion:
    """Archive version ``ref``: it keeps its package and history but loses its aliases and can
    get none; ``name@latest`` skips it."""
    ws = workspace or default_workspace()
    return ws.metadata.models.archive_version(_resolve(ws, ref).id, by=ws.user)


def _is_version_ref(ref: str) -> bool:
    return ref.startswith("mv-") or "@" in ref


def describe(
    ref: str, description: str, *, workspace: Workspace | None = None
) -> Model | ModelVersion:
    """Set the description of model ``name`` or of version ``name@…``/``mv-…``."""
    ws = workspace or default_workspace()
    repo = ws.metadata.models
    if _is_version_ref(ref):
        return repo.update_version(_resolve(ws, ref).id, description=description, by=ws.user)
    return repo.update_model(_model(ws, ref).id, description=description, by=ws.user)


def tag(
    ref: str, tags: Mapping[str, str | None], *, workspace: Workspace | None = None
) -> Model | ModelVersion:
    """Merge ``tags`` into model ``name``'s or version ``name@…``'s (``None`` removes a key)."""
    ws = workspace or default_workspace()
    repo = ws.metadata.models
    if _is_version_ref(ref):
        return repo.update_version(_resolve(ws, ref).id, tags=tags, by=ws.user)
    return repo.update_model(_model(ws, ref).id, tags=tags, by=ws.user)


# -- downloading and loading -----------------------------------------------------------------


def _safe_path(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or relative.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise PackageError(
            f"The package file name {path!r} is not a plain relative path; the package is "
            "damaged: train again and register the new run"
        )
    return relative


def cache_folder(ws: Workspace, digest: str) -> Path:
    """Where the package with ``model.json`` digest ``digest`` is cached: the workspace's
    ``.meguri/cache/models/``, or, when the artifacts are encrypted at rest, a private folder
    in memory (tmpfs), so that the decrypted package never lands on disk."""
    if ws.artifacts.encrypts_at_rest:
        from meguri.store.artifacts import memory_cache_folder

        return memory_cache_folder(ws.root) / "models" / digest
    return ws.root / STATE_DIR / "cache" / "models" / digest


def _fetch(ws: Workspace, version: ModelVersion, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        for path, entry in version.files.items():
            ws.artifacts.get_file(str(entry["sha256"]), temp / _safe_path(path))
        try:
            os.rename(temp, folder)  # whole or not at all; an empty folder is replaced
        except OSError:
            if not (folder / MANIFEST).is_file():  # not a concurrent download that won
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def download_package(
    ref: str, dest: str | Path | None = None, *, workspace: Workspace | None = None
) -> Path:
    """The folder holding version ``ref``'s package: ``dest`` (which must not exist or be
    empty), else the workspace's cache (:func:`cache_folder`), fetched once."""
    ws = workspace or default_workspace()
    version = _resolve(ws, ref)
    folder = Path(dest) if dest is not None else cache_folder(ws, version.package_digest)
    if folder.is_dir() and any(folder.iterdir()):
        if dest is None:
            return folder
        raise RegistryError(
            f"Cannot download {version.ref} into {folder}: the folder is not empty; "
            "name a new or empty folder"
        )
    _fetch(ws, version, folder)
    return folder


def load_model(ref: str, *, workspace: Workspace | None = None) -> LoadedModel:
    """The version ``ref`` names, ready to predict: its package downloaded (cached) and every
    file's sha256 verified before loading."""
    from meguri.serve._package import load_package

    ws = workspace or default_workspace()
    version = _resolve(ws, ref)
    folder = download_package(version.id, workspace=ws)
    return load_package(
        folder,
        expected_digest=version.package_digest,
        name=version.name,
        version=str(version.version),
    )
