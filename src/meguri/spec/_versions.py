"""Spec versions and versioned documents, stored through the metadata store's repositories.

**What identifies a spec version.** The hash is the sha256 of the spec's *data*: the YAML parsed
to plain values and written as canonical JSON (keys sorted, dates in ISO form). Comments,
indentation, quoting, key order and ``0.950`` vs ``0.95`` therefore do not make a new version;
a change in any value, and the order of list items, does. The stored text is the file as it was
when that content was first saved, comments included. A spec that fails validation is never
stored.

**Documents** are hashed on their exact text after normalising line endings to ``\\n`` and
ending it with one newline: for prose, formatting is content.

Refs accepted where a spec version is named: ``latest``, ``latest~N`` (N versions before the
latest), a version number (``3``), a version id or a unique prefix of it, or a unique prefix
(4+ characters) of its hash.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meguri.errors import NotFoundError, SpecError
from meguri.spec._criteria import is_stricter
from meguri.spec._load import SPEC_FILE, parse_spec, parse_yaml, read_spec_text
from meguri.spec._model import COMPARISONS, Comparison, check_name

if TYPE_CHECKING:
    from meguri.store.metadata import DocumentVersion, MetadataStore, SpecVersion

_LATEST_BACK = re.compile(r"latest~(\d+)")
_HEX = re.compile(r"[0-9a-f]{4,64}")


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON: keys as strings and sorted, no spaces, dates in ISO form."""
    return json.dumps(
        _plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def spec_hash(text: str, source: str = SPEC_FILE) -> str:
    """The sha256 that identifies the spec in ``text`` (see the module's note on what counts)."""
    data = parse_yaml(text, source).data
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def save_spec_version(
    store: MetadataStore,
    project_id: str,
    text: str,
    *,
    created_by: str,
    message: str | None = None,
    source: str = SPEC_FILE,
) -> tuple[SpecVersion, bool]:
    """Validate the spec in ``text`` and store it; ``(version, created)``.

    ``created`` is False when the same spec content is already stored for the project: that
    version is returned. Raises :class:`~meguri.errors.SpecError` if the spec is invalid.
    """
    parse_spec(text, source)
    digest = spec_hash(text, source)
    return store.specs.add(
        project_id, content=text, hash=digest, created_by=created_by, message=message
    )


def save_spec_file(
    store: MetadataStore,
    project_id: str,
    path: str | Path | None = None,
    *,
    created_by: str,
    message: str | None = None,
) -> tuple[SpecVersion, bool]:
    """:func:`save_spec_version` of the file at ``path`` (default: the nearest meguri.yaml)."""
    text, source = read_spec_text(path)
    return save_spec_version(
        store, project_id, text, created_by=created_by, message=message, source=source
    )


def resolve_spec_version(store: MetadataStore, project_id: str, ref: str) -> SpecVersion:
    """The stored spec version named by ``ref`` (see the module docstring for the forms)."""
    ref = ref.strip()
    back = _LATEST_BACK.fullmatch(ref)
    if ref == "latest" or back:
        total = store.specs.count(project_id)
        if total == 0:
            raise NotFoundError("No spec version is saved yet; run `meguri spec save`")
        steps = int(back[1]) if back else 0
        if steps >= total:
            raise NotFoundError(f"{ref!r} goes back past the first of {total} spec versions")
        return store.specs.nth(project_id, total - steps)
    if ref.isdigit():
        return store.specs.nth(project_id, int(ref))
    return _by_prefix(store, project_id, ref)


def _by_prefix(store: MetadataStore, project_id: str, ref: str) -> SpecVersion:
    matches = store.specs.match(project_id, ref, limit=5)
    exact = [v for v in matches if v.id == ref]
    if exact:
        return exact[0]
    if len(matches) == 1 and (ref.startswith("spec-") or _HEX.fullmatch(ref)):
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(v.id for v in matches)
        raise NotFoundError(
            f"{ref!r} matches several spec versions ({shown}); give more characters"
        )
    raise NotFoundError(
        f"No spec version {ref!r}; use latest, latest~N, a number, an id or a hash prefix of "
        "at least 4 characters (`meguri spec history` lists them)"
    )


# -- diffs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecChange:
    """One difference between two specs' data: ``kind`` is added, removed or changed."""

    kind: str
    path: str
    old: Any = None
    new: Any = None
    note: str | None = None

    def __str__(self) -> str:
        tail = f" ({self.note})" if self.note else ""
        if self.kind == "added":
            return f"+ {self.path}: {_brief(self.new)}{tail}"
        if self.kind == "removed":
            return f"- {self.path}: {_brief(self.old)}{tail}"
        return f"~ {self.path}: {_brief(self.old)} → {_brief(self.new)}{tail}"


@dataclass(frozen=True, slots=True)
class SpecDiff:
    """What changed from one spec to another: structured changes and a unified text diff."""

    old_label: str
    new_label: str
    changes: list[SpecChange]
    unified: str

    @property
    def identical(self) -> bool:
        return not self.changes


def diff_specs(
    old_text: str, new_text: str, old_label: str = "a", new_label: str = "b"
) -> SpecDiff:
    """Compare two spec texts. Lists keyed by ``id`` or ``name`` (criteria, sources, team)
    are matched by that key, so reordering them is not reported as a change of every item."""
    old = parse_yaml(old_text, old_label).data
    new = parse_yaml(new_text, new_label).data
    changes: list[SpecChange] = []
    _diff(old, new, "", changes)
    unified = unified_diff(old_text, new_text, old_label, new_label)
    return SpecDiff(old_label, new_label, _annotate(changes, new), unified)


def unified_diff(old: str, new: str, old_label: str = "a", new_label: str = "b") -> str:
    """A unified diff of two texts ('' when they are equal)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_label, new_label
    )
    return "".join(line if line.endswith("\n") else f"{line}\n" for line in lines)


def _diff(old: Any, new: Any, path: str, out: list[SpecChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_items(_keyed_items(old), _keyed_items(new), path, ".", out)
    elif (key := _list_key(old, new)) is not None:
        olds = {str(item[key]): item for item in old}
        news = {str(item[key]): item for item in new}
        _diff_items(olds, news, path, "[", out)
    elif old != new:
        out.append(SpecChange("changed", path or "(spec)", old, new))


def _keyed_items(mapping: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in mapping.items()}


def _diff_items(
    old: dict[str, Any], new: dict[str, Any], path: str, how: str, out: list[SpecChange]
) -> None:
    for key in [*old, *(k for k in new if k not in old)]:
        sub = f"{path}[{key}]" if how == "[" else (f"{path}.{key}" if path else key)
        if key not in new:
            out.append(SpecChange("removed", sub, old=old[key]))
        elif key not in old:
            out.append(SpecChange("added", sub, new=new[key]))
        else:
            _diff(old[key], new[key], sub, out)


def _list_key(old: Any, new: Any) -> str | None:
    """``id`` or ``name`` when both are lists of mappings uniquely keyed by it."""
    if not (isinstance(old, list) and isinstance(new, list)):
        return None
    items = [*old, *new]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in ("id", "name"):
        if all(key in item for item in items) and _unique(old, key) and _unique(new, key):
            return key
    return None


def _unique(items: list[dict[str, Any]], key: str) -> bool:
    return len({str(item[key]) for item in items}) == len(items)


_THRESHOLD = re.compile(r"success_criteria\[([^\]]+)\]\.threshold")


def _annotate(changes: list[SpecChange], new: Any) -> list[SpecChange]:
    """Note on each criterion threshold change whether it makes the criterion stricter."""
    comparisons = _comparisons(new)
    changed = {c.path for c in changes}
    out = []
    for change in changes:
        match = _THRESHOLD.fullmatch(change.path)
        comparison = comparisons.get(match[1]) if match else None
        base = change.path.rsplit(".", 1)[0]
        numbers = all(isinstance(v, int | float) for v in (change.old, change.new))
        if comparison and numbers and f"{base}.comparison" not in changed:
            stricter = is_stricter(comparison, change.old, change.new)
            note = None if stricter is None else ("stricter" if stricter else "looser")
            change = replace(change, note=note)
        out.append(change)
    return out


def _comparisons(data: Any) -> dict[str, Comparison]:
    criteria = data.get("success_criteria") if isinstance(data, dict) else None
    if not isinstance(criteria, list):
        return {}
    return {
        str(c["id"]): c["comparison"]
        for c in criteria
        if isinstance(c, dict) and "id" in c and c.get("comparison") in COMPARISONS
    }


def _brief(value: Any) -> str:
    if isinstance(value, dict) and {"metric", "comparison", "threshold"} <= value.keys():
        where = f" on {value['measured_on']}" if "measured_on" in value else ""
        return f"{value['metric']} {value['comparison']} {value['threshold']}{where}"
    text = canonical_json(value) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# -- documents --------------------------------------------------------------------------------


def normalise_document(text: str) -> str:
    """``text`` with ``\\n`` line endings and exactly one final newline."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") + "\n"


def check_document_name(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as err:
        raise SpecError(f"Document name: {err}") from None


def save_document(
    store: MetadataStore,
    project_id: str,
    name: str,
    text: str,
    *,
    created_by: str,
    message: str | None = None,
) -> tuple[DocumentVersion, bool]:
    """Store ``text`` as the next version of document ``name``; ``(version, created)``.

    ``created`` is False when the (normalised) text equals the latest version's.
    """
    check_document_name(name)
    return store.documents.add_version(
        project_id, name, content=normalise_document(text), created_by=created_by, message=message
    )
