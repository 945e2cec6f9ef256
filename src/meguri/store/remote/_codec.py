"""The one codec of the metadata store over HTTP, shared by the client and the server.

Nothing here is written per method: each method's wire format is derived from the real
repository method's signature and type hints, so a method added to a repository travels
without a line of codec code, and client and server can never disagree about a field.

* **Arguments** go as one JSON object, ``{parameter: value}``, holding only the arguments the
  caller gave (the server's defaults apply to the rest, as they would locally). The client
  encodes values by what they are (dataclasses, named tuples, enums, NaN and infinities as
  JSON's ``NaN``/``Infinity`` tokens) with ``pydantic_core.to_json``; the server validates the
  object strictly against a TypedDict of the parameters' annotations (unknown parameters and
  wrong types refused with a :class:`DataError` naming the path, e.g.
  ``windows[1].figures['requests']``). ``Literal`` parameters are validated as their base
  type and ``Iterable`` ones as lists, so that the repository's own checks (and messages)
  decide, exactly as they do locally.
* **Results** go the same way back and are validated (leniently: the server is trusted to
  send what the annotation says) into the annotated type: frozen dataclasses, StrEnums,
  tuples. :class:`MetricHistory` (numpy arrays) is the one special case: its columns travel
  as base64 of their little-endian bytes, bit-exact and compact.
* **Errors** keep their class: a :mod:`meguri.errors` class travels as the snake-case of its
  name (``NotFoundError`` → ``not_found_error``), ``ValueError``/``TypeError`` raised by a
  repository for a bad argument as ``value_error``/``type_error``, with the message.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Required

import numpy as np
import pydantic_core
from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from meguri import errors
from meguri.errors import DataError
from meguri.store.metadata.repositories.access import AccessRepository
from meguri.store.metadata.repositories.audit import AuditRepository
from meguri.store.metadata.repositories.checks import CheckRepository
from meguri.store.metadata.repositories.datasets import DatasetRepository
from meguri.store.metadata.repositories.deployments import DeploymentRepository
from meguri.store.metadata.repositories.documents import DocumentRepository
from meguri.store.metadata.repositories.models import ModelRepository
from meguri.store.metadata.repositories.monitor import MonitorRepository
from meguri.store.metadata.repositories.projects import ProjectRepository
from meguri.store.metadata.repositories.runs import MetricHistory, RunRepository
from meguri.store.metadata.repositories.specs import SpecRepository
from meguri.store.metadata.repositories.tuning import TuningJournalRepository

__all__ = [
    "ACTORS_HEADER",
    "REPOSITORIES",
    "STORE_PATH",
    "MethodCodec",
    "error_class",
    "error_code",
    "method_codec",
    "public_methods",
]

#: Where the server mounts the store: ``POST <STORE_PATH>/<repository>/<method>``.
STORE_PATH = "/api/v1/store"
#: Sent as ``as-given`` to keep the actor names of a call (platform admins only).
ACTORS_HEADER = "X-Meguri-Actors"

#: The repositories of a :class:`~meguri.store.metadata.MetadataStore`, by attribute name.
REPOSITORIES: dict[str, type] = {
    "projects": ProjectRepository,
    "specs": SpecRepository,
    "documents": DocumentRepository,
    "checks": CheckRepository,
    "runs": RunRepository,
    "datasets": DatasetRepository,
    "models": ModelRepository,
    "deployments": DeploymentRepository,
    "monitor": MonitorRepository,
    "access": AccessRepository,
    "audit": AuditRepository,
    "tuning": TuningJournalRepository,
}


def public_methods(cls: type) -> list[str]:
    """The names of ``cls``'s public methods (inherited ones included), sorted."""
    return sorted(
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethod(member))
    )


# -- errors -----------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_ERRORS: dict[str, type[Exception]] = {
    _snake(name): getattr(errors, name) for name in (*errors.__all__, "MeguriError")
}
_ERRORS |= {"value_error": ValueError, "type_error": TypeError}


def error_code(err: BaseException) -> str | None:
    """The wire code of ``err``'s class (its nearest class that travels), or None."""
    for cls in type(err).__mro__:
        code = _snake(cls.__name__)
        if _ERRORS.get(code) is cls:
            return code
    return None


def error_class(code: str) -> type[Exception] | None:
    """The exception class of a wire code, or None for a code that is not a class's."""
    return _ERRORS.get(code)


# -- values -----------------------------------------------------------------------------------


def _fallback(value: Any) -> Any:
    """What ``to_json`` cannot encode by itself: numpy values, other iterables."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


def to_json(value: Any) -> bytes:
    """``value`` as JSON, NaN and infinities kept as ``NaN``/``Infinity`` tokens."""
    return pydantic_core.to_json(value, inf_nan_mode="constants", fallback=_fallback)


def _children(value: Any) -> Iterable[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, Mapping):
        return ((f"[{k!r}]", v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return ((f"[{i}]", v) for i, v in enumerate(value))
    return ()


def _unencodable(value: Any, path: str) -> str | None:
    """The path of the first part of ``value`` that cannot be encoded, or None."""
    try:
        to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        for suffix, child in _children(value):
            found = _unencodable(child, path + suffix)
            if found is not None:
                return found
        return path
    return None


# -- types ------------------------------------------------------------------------------------


def _union(members: Iterable[Any]) -> Any:
    return functools.reduce(lambda a, b: a | b, members)


def _rebuild(origin: Any, args: tuple[Any, ...]) -> Any:
    if origin in (typing.Union, types.UnionType):
        return _union(args)
    return origin[args if len(args) > 1 else args[0]]


def _wire(tp: Any) -> Any:
    """``tp`` as the server validates it: ``Literal`` as its base type, ``Iterable`` as list
    (so the repository's own checks speak, and an iterable arrives in full)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _union({type(a) for a in args})
    if origin is None or not args:
        return tp
    wired = tuple(a if a is Ellipsis else _wire(a) for a in args)
    if origin is Iterable:
        return list[wired[0]]  # type: ignore[valid-type]
    return _rebuild(origin, wired)


def _members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _step(tp: Any, key: str | int) -> tuple[str, Any] | None:
    """How ``key`` of a validation error's location reads below type ``tp``, and the type
    it leads to; None for a key that is not data (a union member's tag)."""
    for member in _members(tp):
        origin, args = typing.get_origin(member) or member, typing.get_args(member)
        if dataclasses.is_dataclass(member) and isinstance(key, str):
            hints = typing.get_type_hints(member)
            if key in hints:
                return f".{key}", hints[key]
        elif isinstance(origin, type) and issubclass(origin, Mapping) and isinstance(key, str):
            return f"[{key!r}]", args[1] if len(args) == 2 else Any
        elif isinstance(origin, type) and issubclass(origin, Sequence) and isinstance(key, int):
            inner = args[0] if len(args) == 1 or Ellipsis in args else args[min(key, len(args) - 1)]
            return f"[{key}]", inner
    return None


def _location(loc: tuple[str | int, ...], hints: Mapping[str, Any]) -> str:
    if not loc:
        return "the arguments"
    text, tp = str(loc[0]), hints.get(str(loc[0]), Any)
    for key in loc[1:]:
        step = _step(tp, key)
        if step is not None:
            text, tp = text + step[0], step[1]
    return text


# -- methods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodCodec:
    """The wire format of one repository method (see the module docstring)."""

    repository: str
    name: str
    signature: inspect.Signature  # without ``self``
    hints: dict[str, Any]
    doc: str | None

    @property
    def label(self) -> str:
        return f"{self.repository}.{self.name}"

    @property
    def returns(self) -> Any:
        return self.hints.get("return", Any)

    @functools.cached_property
    def _arguments(self) -> TypeAdapter[dict[str, Any]]:
        fields: dict[str, Any] = {}
        for name, param in self.signature.parameters.items():
            wired = _wire(self.hints.get(name, Any))
            required = param.default is inspect.Parameter.empty
            fields[name] = Required[wired] if required else NotRequired[wired]
        make: Any = TypedDict  # built at run time, from the signature
        shape = make(f"{self.repository}_{self.name}", fields, total=False)
        shape.__pydantic_config__ = ConfigDict(extra="forbid")
        adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(shape)
        return adapter

    @functools.cached_property
    def _result(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.returns)

    def prepare(self) -> None:
        """Build the validators now, so that a type pydantic cannot handle fails here (a
        test calls this for every method the server offers), not on a first call."""
        self._arguments  # noqa: B018
        if self.returns is not MetricHistory:
            self._result  # noqa: B018

    def encode_arguments(self, arguments: Mapping[str, Any]) -> bytes:
        """The JSON of the arguments a caller gave; DataError naming the path of a value that
        cannot travel."""
        try:
            return to_json(dict(arguments))
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
            path = _unencodable(dict(arguments), "") or ""
            raise DataError(
                f"{self.label}: the argument {_argument_path(path)} cannot be sent to the "
                "server (not a JSON value); pass strings, numbers, booleans, None, lists and "
                "dicts of them, or the store's own records"
            ) from None

    def decode_arguments(self, body: bytes) -> dict[str, Any]:
        """The keyword arguments of ``body``, strictly validated (DataError naming the path)."""
        try:
            return dict(self._arguments.validate_json(body or b"{}", strict=True))
        except ValidationError as err:
            problems = [
                f"{_location(e['loc'], self.hints)}: {e['msg']}"
                for e in err.errors(include_url=False)[:3]
            ]
            raise DataError(
                f"Invalid arguments for {self.label}: {'; '.join(problems)}. Pass what the "
                "method's signature says"
            ) from None

    def encode_result(self, value: Any) -> bytes:
        if self.returns is MetricHistory:
            return to_json(_history_columns(value))
        return to_json(value)

    def decode_result(self, body: bytes) -> Any:
        if self.returns is MetricHistory:
            return _history(TypeAdapter(dict[str, str]).validate_json(body))
        return self._result.validate_json(body)


def _argument_path(path: str) -> str:
    """``['windows'][1].details['x']`` → ``windows[1].details['x']``."""
    match = re.match(r"\['([^']*)'\]", path)
    return match.group(1) + path[match.end() :] if match else path or "?"


_COLUMNS: dict[str, type[np.generic]] = {
    "steps": np.int64,
    "values": np.float64,
    "timestamps": np.float64,
}


def _little_endian(kind: type[np.generic]) -> np.dtype[Any]:
    return np.dtype(kind).newbyteorder("<")


def _history_columns(history: MetricHistory) -> dict[str, str]:
    """The columns of ``history`` as base64 of their little-endian bytes (bit-exact)."""
    columns = {
        name: base64.b64encode(
            np.ascontiguousarray(getattr(history, name), _little_endian(kind)).tobytes()
        ).decode()
        for name, kind in _COLUMNS.items()
    }
    return {"key": history.key, **columns}


def _history(columns: Mapping[str, str]) -> MetricHistory:
    arrays = {
        name: np.frombuffer(base64.b64decode(columns[name]), _little_endian(kind)).astype(kind)
        for name, kind in _COLUMNS.items()
    }
    return MetricHistory(columns["key"], arrays["steps"], arrays["values"], arrays["timestamps"])


@functools.cache
def method_codec(repository: str, name: str) -> MethodCodec:
    """The codec of ``repository.name`` (KeyError for a repository or method that has none)."""
    cls = REPOSITORIES[repository]
    if name not in public_methods(cls):
        raise KeyError(f"{repository}.{name}")
    function = getattr(cls, name)
    signature = inspect.signature(function)
    if not isinstance(inspect.getattr_static(cls, name), staticmethod):
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    hints = typing.get_type_hints(function)
    return MethodCodec(repository, name, signature, hints, inspect.getdoc(function))
