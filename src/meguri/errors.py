"""The one exception tree of meguri.

Every error a user can see is a :class:`MeguriError`. Each message says what went wrong *and*
what to do about it; third-party errors (SQLAlchemy, fsspec, pydantic, YAML) are translated at
the boundary where they occur and never leak as raw stack traces from the CLI::

    MeguriError
    ├── ConfigError            environment, URLs, folders, permissions
    ├── SpecError              meguri.yaml: parse and validation errors, with line and column
    ├── StoreError             persistence
    │   ├── MetadataStoreError     the SQL metadata store (schema version, connection)
    │   ├── NotFoundError          a run, spec version, document... that does not exist
    │   ├── ConflictError          a write that contradicts stored state
    │   └── ArtifactError          the artifact store
    │       └── ArtifactCorruptedError   content does not match its sha256
    ├── DataError              input data that cannot be read or used (file, column, row)
    │   ├── DataQualityError       an error-level quality check failed
    │   └── TransformError         a preparation step cannot be fitted or applied
    ├── TrainError             no candidate meets the spec's constraints (size, budget)
    ├── PackageError           a model package that cannot be built or loaded
    │   └── PackageIntegrityError  a package file does not match its recorded sha256
    ├── RegistryError          model registry misuse (unknown alias, archived version)
    │   └── GateFailedError        promotion blocked by failing success criteria
    ├── InvalidInputError      a prediction request that does not match the model's signature
    ├── PipelineError          a pipeline that cannot run as asked (unknown step, uncached --from)
    ├── DeploymentError        an endpoint that did not come up or settle in time
    ├── TrackingError          run tracking misuse (logging to a finished run, bad metric)
    └── QuerySyntaxError       a search filter or order-by that cannot be read
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorruptedError",
    "ArtifactError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "DataQualityError",
    "DeploymentError",
    "GateFailedError",
    "InvalidInputError",
    "MeguriError",
    "MetadataStoreError",
    "MonitorError",
    "NotFoundError",
    "PackageError",
    "PackageIntegrityError",
    "PipelineError",
    "QuerySyntaxError",
    "RegistryError",
    "SpecError",
    "StoreError",
    "TrackingError",
    "TrainError",
    "TransformError",
]


class MeguriError(Exception):
    """Root of every meguri error. ``str(err)`` is a message a person can act on."""


class ConfigError(MeguriError):
    """The environment or a setting is wrong (store URL, folder permissions, ...)."""


class SpecError(MeguriError):
    """The project spec (meguri.yaml) cannot be read or is invalid."""


class StoreError(MeguriError):
    """A persistence failure."""


class MetadataStoreError(StoreError):
    """The metadata store is unreachable, of a newer schema, or otherwise unusable."""


class NotFoundError(StoreError):
    """The named entity does not exist."""


class ConflictError(StoreError):
    """The write contradicts what is stored (e.g. a duplicate name)."""


class ArtifactError(StoreError):
    """The artifact store failed to read or write."""


class ArtifactCorruptedError(ArtifactError):
    """Stored content no longer matches its recorded sha256."""


class TrackingError(MeguriError):
    """Run tracking was used wrongly (e.g. logging to a run that has ended)."""


class QuerySyntaxError(MeguriError):
    """A search filter or order-by expression cannot be parsed."""


class DataError(MeguriError):
    """Input data cannot be read or used; the message names the file, column or row."""


class DataQualityError(DataError):
    """An error-level data quality check failed; the message names the rows and columns."""


class TransformError(DataError):
    """A preparation step cannot be fitted or applied (unknown column, wrong type, ...)."""


class TrainError(MeguriError):
    """Training cannot satisfy the spec's constraints (model size, training-time budget)."""


class PackageError(MeguriError):
    """A model package cannot be built (conversion, verification) or loaded."""


class PackageIntegrityError(PackageError):
    """A package file's sha256 differs from the one recorded: it was changed after packaging."""


class RegistryError(MeguriError):
    """Model registry misuse: an unknown model, version or alias; an archived version."""


class GateFailedError(RegistryError):
    """Promotion blocked: the version's success criteria fail (``--override`` with a reason)."""


class InvalidInputError(MeguriError):
    """A prediction request that does not match the signature; ``column`` names the culprit."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class PipelineError(MeguriError):
    """A pipeline cannot run as asked (an unknown step, ``--from`` without cached results, a
    step whose feature is not available)."""


class DeploymentError(MeguriError):
    """An endpoint did not come up or settle in time (its message names the supervisor log)."""


class MonitorError(MeguriError):
    """Monitoring cannot run as asked (an unknown environment, a capture or feedback file it
    cannot read, a model version without its monitoring baseline)."""
