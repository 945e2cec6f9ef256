"""Read ``meguri.yaml``: YAML syntax and validation errors with file, line and column.

Pydantic reports where a problem is as a path of keys and indexes; the YAML node tree (from
``yaml.compose``) knows where each key and value starts. Joining the two gives messages like::

    meguri.yaml:14:5: success_criteria[1].measured_on: 'prod' is not allowed; use one of
    test, validation, staging, production

All problems are collected and reported together, sorted by line.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

from meguri.errors import SpecError
from meguri.spec._model import Loc, ProjectSpec, SpecProblems, dotted

SPEC_FILE = "meguri.yaml"


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One thing wrong with a spec, where it is (1-based line and column) and how to fix it."""

    source: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}:{self.line}:{self.column}: {where}{self.message}"


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """A YAML document: its node tree (with positions) and the plain data built from it."""

    node: yaml.Node | None
    data: Any


def spec_error(problems: list[SpecProblem]) -> SpecError:
    """One :class:`SpecError` listing every problem, one per line."""
    lines = [str(p) for p in problems]
    if len(lines) == 1:
        return SpecError(lines[0])
    head = f"{problems[0].source} has {len(lines)} problems:"
    return SpecError("\n".join([head, *(f"  {line}" for line in lines)]))


def parse_yaml(text: str, source: str = SPEC_FILE) -> ParsedYaml:
    """Parse YAML text, raising :class:`SpecError` with the position of a syntax error."""
    parsed = _compose(text, source)
    if isinstance(parsed, SpecProblem):
        raise spec_error([parsed])
    return parsed


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true`` and ``false`` (any case
    PyYAML allows) are booleans. YAML 1.1's ``on``/``off``/``yes``/``no`` stay strings, so a
    key like ``sql_lookup: {on: [id]}`` reads as the key ``"on"``, not ``True``."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_yaml(text: str) -> Any:
    """Plain data from YAML text, read as the spec is (see :class:`SpecLoader`)."""
    return yaml.load(text, Loader=SpecLoader)


def _compose(text: str, source: str) -> ParsedYaml | SpecProblem:
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        return ParsedYaml(node, None if node is None else loader.construct_document(node))
    except yaml.MarkedYAMLError as err:
        return _syntax_problem(err, source)
    except yaml.YAMLError as err:
        return SpecProblem(source, 1, 1, "", f"cannot read the YAML ({err}); check its syntax")
    finally:
        loader.dispose()


def _syntax_problem(err: yaml.MarkedYAMLError, source: str) -> SpecProblem:
    mark, start = err.problem_mark or err.context_mark, err.context_mark
    message = f"YAML syntax error: {err.problem}"
    if err.context:
        message += f" {err.context}"
        if start is not None and mark is not None and start.line != mark.line:
            message += f" that starts at line {start.line + 1}, column {start.column + 1}"
    hint = (
        "YAML indents with spaces, not tabs"
        if "\\t" in str(err.problem)
        else ("check the indentation here, and quote values that contain ': ' or ' #'")
    )
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return SpecProblem(source, line, column, "", f"{message}; {hint}")


def check_spec_text(text: str, source: str = SPEC_FILE) -> list[SpecProblem]:
    """Every problem of the spec in ``text``, sorted by line (empty when it is valid)."""
    return _validate(text, source)[1]


def parse_spec(text: str, source: str = SPEC_FILE) -> ProjectSpec:
    """Validate spec YAML ``text``; ``source`` names it in error messages."""
    spec, problems = _validate(text, source)
    if problems:
        raise spec_error(problems)
    assert spec is not None
    return spec


def find_spec_file(start: Path | None = None) -> Path:
    """The nearest ``meguri.yaml`` from ``start`` (default: the current folder) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SPEC_FILE).is_file():
            return folder / SPEC_FILE
    raise SpecError(
        f"No {SPEC_FILE} in {here} or any folder above it; run `meguri init` to write an "
        "example, or pass the file's path"
    )


def read_spec_text(path: str | Path | None = None) -> tuple[str, str]:
    """``(text, source label)`` of the spec file at ``path`` (a file or its folder)."""
    file = find_spec_file() if path is None else Path(path)
    if file.is_dir():
        file = file / SPEC_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{file} does not exist; run `meguri init` to write an example") from None
    except UnicodeDecodeError:
        raise SpecError(f"{file} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise SpecError(f"Cannot read {file}: {err.strerror}; check its permissions") from None
    return text, _label(file)


def _label(file: Path) -> str:
    """``file`` relative to the current folder when it is inside it (shorter messages)."""
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(file)


def load_spec(path: str | Path | None = None) -> ProjectSpec:
    """Load and validate ``meguri.yaml`` (by default the nearest one from the current folder).

    Raises :class:`~meguri.errors.SpecError` listing every problem with its line and column.
    """
    text, source = read_spec_text(path)
    return parse_spec(text, source)


# -- validation and locating errors -----------------------------------------------------------


def _validate(text: str, source: str) -> tuple[ProjectSpec | None, list[SpecProblem]]:
    parsed = _compose(text, source)
    if isinstance(parsed, SpecProblem):
        return None, [parsed]
    problems = list(_duplicate_keys(parsed.node, source))
    if parsed.node is None or not isinstance(parsed.data, dict):
        return None, [*problems, _not_a_mapping(parsed, source)]
    try:
        spec = ProjectSpec.model_validate(parsed.data)
    except ValidationError as err:
        problems += [p for e in err.errors() for p in _explain(e, parsed.node, source)]
        return None, sorted(problems, key=lambda p: (p.line, p.column))
    return (None, problems) if problems else (spec, [])


def _not_a_mapping(parsed: ParsedYaml, source: str) -> SpecProblem:
    if parsed.node is None:
        return SpecProblem(
            source,
            1,
            1,
            "",
            "the file is empty; run `meguri init --force` to write an example spec",
        )
    mark = parsed.node.start_mark
    got = type(parsed.data).__name__
    return SpecProblem(
        source,
        mark.line + 1,
        mark.column + 1,
        "",
        f"the spec must be a mapping of keys (version, project, objective, ...), not a {got}",
    )


def _duplicate_keys(node: yaml.Node | None, source: str) -> Iterator[SpecProblem]:
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name in first:
                yield SpecProblem(
                    source,
                    key.start_mark.line + 1,
                    key.start_mark.column + 1,
                    str(name),
                    f"appears twice (first on line {first[name]}); YAML would keep only the "
                    "last: remove one",
                )
            elif name is not None:
                first[name] = key.start_mark.line + 1
            yield from _duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, source)


def _without_union_tags(root: yaml.Node, loc: Loc) -> Loc:
    """``loc`` less the tags pydantic inserts for tagged unions (``checks.0.range.min`` →
    ``checks.0.min``): a part the YAML mapping lacks, followed by one it has, is a tag."""
    node: yaml.Node | None = root
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        found = _child(node, part) if node is not None else None
        following = loc[i + 1] if i + 1 < len(loc) else None
        is_tag = (
            found is None
            and isinstance(node, yaml.MappingNode)
            and following is not None
            and _child(node, following) is not None
        )
        if is_tag:
            continue
        kept.append(part)
        node = found[1] if found is not None else None
    return tuple(kept)


def _explain(error: ErrorDetails, root: yaml.Node, source: str) -> Iterator[SpecProblem]:
    loc: Loc = _without_union_tags(root, tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        yield _at(root, loc, _extra_message(tuple(error["loc"])), source, key=True)
        return
    ctx = error.get("ctx") or {}
    nested = ctx.get("error")
    if error["type"] == "value_error" and isinstance(nested, SpecProblems):
        for sub_loc, message in nested.problems:
            yield _at(root, (*loc, *sub_loc), message, source, key=False)
        return
    message = _message(error, loc)
    yield _at(root, loc, message, source, key=error["type"] in ("extra_forbidden", "missing"))


def _at(root: yaml.Node, loc: Loc, message: str, source: str, *, key: bool) -> SpecProblem:
    node = _locate(root, loc, key=key)
    path = dotted(part for part in loc if part != "[key]")
    return SpecProblem(source, node.start_mark.line + 1, node.start_mark.column + 1, path, message)


def _locate(root: yaml.Node, loc: Loc, *, key: bool) -> yaml.Node:
    """The node of ``loc`` (its key node if ``key``), or the nearest enclosing one found."""
    node, holder = root, root
    for i, part in enumerate(loc):
        if part == "[key]":
            return holder
        found = _child(node, part)
        if found is None:
            return holder
        holder, node = found
        if key and i == len(loc) - 1:
            return holder
    return node


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item, item
    return None


_EXPECTED = {
    "list_type": "a list (one `- item` per line)",
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text (quote it if YAML reads it as something else)",
    "date_from_datetime_parsing": "a date written YYYY-MM-DD",
    "date_from_datetime_inexact": "a date written YYYY-MM-DD",
    "date_parsing": "a date written YYYY-MM-DD",
    "date_type": "a date written YYYY-MM-DD",
}


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return _literal_message(value, str(ctx.get("expected", "")), loc)
    if kind == "extra_forbidden":
        return _extra_message(loc)
    if kind == "missing":
        return "is required but missing; add it"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping of keys, not {_show(value)}"
    if kind in _EXPECTED:
        return f"should be {_EXPECTED[kind]}, not {_show(value)}"
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    text = error["msg"]
    return f"{text[:1].lower()}{text[1:]}, not {_show(value)}"


def _literal_message(value: Any, expected: str, loc: Loc) -> str:
    if loc == ("version",):
        return f"{_show(value)} is not supported; this meguri reads `version: 1`"
    choices = re.findall(r"'([^']*)'", expected) or [expected]
    hint = difflib.get_close_matches(str(value), choices, n=1)
    tail = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{_show(value)} is not allowed{tail}; use one of {', '.join(choices)}"


def _extra_message(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    allowed = [f.alias or n for n, f in model.model_fields.items()] if model else []
    hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    tail = f" (did you mean {hint[0]!r}?)" if hint else ""
    keys = f"; allowed here: {', '.join(allowed)}" if allowed else ""
    return f"is not a known key{tail}{keys}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc``, following the annotations."""
    tp: Any = ProjectSpec
    for part in loc:
        tagged = _union_models(_strip_annotated(tp))
        tp = _unwrap(tp)
        if tagged and isinstance(part, str):
            tp = tagged.get(part)
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            tp = field.annotation if field else None
        elif get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_models(tp: Any) -> dict[str, type[BaseModel]]:
    """A tagged union's members by tag (pydantic ``Tag`` or a one-value Literal field)."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for arg in get_args(tp):
        tags = [m.tag for m in getattr(arg, "__metadata__", ()) if isinstance(m, Tag)]
        model = _strip_annotated(arg)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return {}
        for field in model.model_fields.values():
            if get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1:
                tags.append(str(get_args(field.annotation)[0]))
        members.update(dict.fromkeys(tags, model))
    return members


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(arg for arg in get_args(tp) if arg is not type(None))
        else:
            return tp
