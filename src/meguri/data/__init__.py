"""Phase 2, data preparation: sources, catalog, profile, quality, transforms, split.

::

    import meguri.data as md

    version = md.ingest("bundled://breast_cancer", name="cancer")   # a dataset version
    prof = md.profile_version(version, target="malignant")           # stored with it
    prepared = md.prepare(meguri.load_spec())                        # the spec's data phase

Polars lazy frames inside, Arrow/Parquet at the edges; see each function's docstring.
"""

from meguri.data._catalog import (
    Lineage,
    SchemaDiff,
    attach,
    attachment,
    get_version,
    history,
    ingest,
    lineage,
    list_datasets,
    read,
    remove_tag,
    save_version,
    schema_diff,
    search,
    set_tag,
)
from meguri.data._pipeline import PreparedData, check_version, prepare, profile_version
from meguri.data._profile import DatasetProfile, profile
from meguri.data._quality import QualityReport, QualityResult, run_checks
from meguri.data._reference import DriftReference
from meguri.data._report import render_profile_html
from meguri.data._split import SplitResult, split
from meguri.data._transform import FittedTransform, fit_transform

__all__ = [
    "DatasetProfile",
    "DriftReference",
    "FittedTransform",
    "Lineage",
    "PreparedData",
    "QualityReport",
    "QualityResult",
    "SchemaDiff",
    "SplitResult",
    "attach",
    "attachment",
    "check_version",
    "fit_transform",
    "get_version",
    "history",
    "ingest",
    "lineage",
    "list_datasets",
    "prepare",
    "profile",
    "profile_version",
    "read",
    "remove_tag",
    "render_profile_html",
    "run_checks",
    "save_version",
    "schema_diff",
    "search",
    "set_tag",
    "split",
]
