"""A model version's monitoring baseline, read from its package once.

Every package carries, beside the model, what its training rows looked like (computed once at
packaging, as SageMaker's baseline job does): ``baseline/profile.json`` (the data profile: ranges,
missing rates, categories, for data quality), ``baseline/reference.json`` (the drift reference:
quantile sketches and category counts of the inputs and of the model's held-out predictions) and
``baseline/reference_sample.parquet`` (a uniform sample of training rows, for the multivariate
check). The files are fetched from the registry into the package cache and verified against
their sha256 like the model itself. A package built before the drift reference existed still
gets data quality; its drift is reported as skipped, naming the fix.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import polars as pl

from meguri.data import DatasetProfile, DriftReference
from meguri.errors import MonitorError
from meguri.monitor._quality import QualityBaseline
from meguri.serve._package import read_verified
from meguri.serve._signature import Signature
from meguri.store import Workspace

__all__ = ["ModelBaseline", "model_baseline"]

PROFILE = "baseline/profile.json"
REFERENCE = "baseline/reference.json"
SAMPLE = "baseline/reference_sample.parquet"


@dataclass(frozen=True)
class ModelBaseline:
    ref: str
    """``name@version``."""
    signature: Signature
    quality: QualityBaseline
    reference: DriftReference | None
    sample: pl.DataFrame | None

    @property
    def version_label(self) -> str:
        """The version as captures record it (``model_version`` column)."""
        return self.ref.rpartition("@")[2]


def model_baseline(ws: Workspace, ref: str) -> ModelBaseline:
    """The baseline of model version ``ref`` (``name@version``)."""
    from meguri.registry import download_package, get_model_version

    version = get_model_version(ref, workspace=ws)
    folder = download_package(version.id, workspace=ws)
    _, files = read_verified(folder, expected_digest=version.package_digest)
    signature = Signature.from_dict(version.signature)
    if PROFILE not in files:
        raise MonitorError(
            f"{version.ref}: its package holds no {PROFILE}; register the model again with "
            "this meguri so that monitoring has a baseline"
        )
    profile = DatasetProfile.from_json(files[PROFILE])
    reference = DriftReference.from_json(files[REFERENCE]) if REFERENCE in files else None
    sample = pl.read_parquet(io.BytesIO(files[SAMPLE])) if SAMPLE in files else None
    return ModelBaseline(
        ref=version.ref,
        signature=signature,
        quality=QualityBaseline.from_profile(profile, signature.names),
        reference=reference,
        sample=sample,
    )
