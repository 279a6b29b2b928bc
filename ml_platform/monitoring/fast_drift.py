"""Per-column data drift with Evidently 0.7's default statistics, vectorized for large frames.

Evidently's ``DataDriftPreset`` is the report people read; on millions of rows it takes minutes and
gigabytes. This module computes the same per-column statistic, with the same default choice of test
and threshold, on polars frames with sorted numpy arrays and polars group-bys, so the automated
path can run on all rows and agree with Evidently's verdicts.

What it mirrors (``evidently/legacy/calculations/stattests/registry.py::_get_default_stattest`` and
``evidently/core/datasets.py::infer_column_type``, with the frames handed to Evidently as
``frame.to_pandas()``):

* Column kind, inferred on the *current* frame: floats are numeric; signed integers are categorical
  when they hold at most 10 distinct values and numeric otherwise, but an integer column with nulls
  becomes float64 in pandas and so is always numeric; strings are categorical unless more than half
  of the non-null values are distinct (then Evidently treats them as text); booleans, polars
  Categorical and Enum are categorical. Unsigned integers without nulls, booleans with nulls, dates,
  datetimes and nested types are "Unknown" to Evidently and get no drift test.
* Per column, nulls (and +-inf) are dropped from each side before anything else.
* The test, from the reference row count (after dropping) and the number of distinct values in
  reference and current together:

  ==================  ==============================  =====================================
  reference rows      numeric                         categorical
  ==================  ==============================  =====================================
  <= 1000             <= 2 values: Z-test             <= 2 values: Z-test
                      3-5 values: chi-square          > 2 values: chi-square
                      > 5 values: K-S
  > 1000              <= 5 values: Jensen-Shannon     Jensen-Shannon
                      > 5 values: Wasserstein (normed)
  ==================  ==============================  =====================================

  with thresholds 0.05 for the p-values (drift when p < 0.05; K-S: p <= 0.05) and 0.1 for the
  distances (drift when distance >= 0.1). Jensen-Shannon and chi-square use value frequencies
  (Evidently bins by value for these columns, never by histogram).

The Wasserstein distance of two samples is computed from their sorted values as the integral of
the absolute difference of the two empirical quantile functions (equal to scipy's integral of the
CDF difference), divided by the reference's population standard deviation (at least 0.001).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats
from scipy.spatial import distance

Kind = Literal["numeric", "categorical"]

SMALL_REFERENCE_ROWS = 1000  # at or below: hypothesis tests (p-values); above: distances
INTEGER_CARDINALITY_LIMIT = 10  # integer columns with at most this many distinct values are categorical
FEW_NUMERIC_VALUES = 5  # numeric columns with at most this many distinct values are tested by frequency
BINARY_VALUES = 2  # at most this many distinct values: Z-test of proportions on small samples
TEXT_UNIQUE_SHARE = 0.5  # string columns with more distinct values than this share of rows are text
MIN_NORM = 0.001  # Evidently's floor for the reference standard deviation in the normed Wasserstein

FREQUENCY_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


@dataclass(frozen=True)
class StatTest:
    """One of Evidently's registered drift tests with its default threshold."""

    name: str  # Evidently's registry name, e.g. "wasserstein"
    method: str  # Evidently's display name, as its report shows it
    threshold: float
    p_value: bool  # p-values drift below the threshold, distances at or above it
    drift_at_threshold: bool  # whether a score equal to the threshold is drift

    def drifted(self, score: float) -> bool:
        if self.p_value:
            return score <= self.threshold if self.drift_at_threshold else score < self.threshold
        return score >= self.threshold


WASSERSTEIN = StatTest("wasserstein", "Wasserstein distance (normed)", 0.1, False, True)
JENSEN_SHANNON = StatTest("jensenshannon", "Jensen-Shannon distance", 0.1, False, True)
KS = StatTest("ks", "K-S p_value", 0.05, True, True)
CHI_SQUARE = StatTest("chisquare", "chi-square p_value", 0.05, True, False)
Z = StatTest("z", "Z-test p_value", 0.05, True, False)


@dataclass(frozen=True)
class FastColumnDrift:
    """The drift verdict for one column."""

    column: str
    kind: Kind
    method: str  # Evidently's display name of the test, e.g. "Wasserstein distance (normed)"
    score: float
    threshold: float
    drifted: bool
    stattest: str  # Evidently's registry name of the test, e.g. "wasserstein"


@dataclass(frozen=True)
class FastDriftResult:
    """Per-column verdicts, the share of drifted columns and the dataset verdict.

    ``skipped`` names the columns found in the frames that get no test, with the reason (only when
    ``columns`` was not given: columns asked for by name must be testable).
    """

    columns: list[FastColumnDrift]
    drift_share: float  # share of tested columns that drifted
    dataset_drift: bool  # drift_share >= the drift_share asked for
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def by_column(self) -> dict[str, FastColumnDrift]:
        return {c.column: c for c in self.columns}


@dataclass(frozen=True)
class Frequencies:
    """Value counts of one column in reference and current, aligned on the sorted union of values."""

    keys: np.ndarray
    reference: np.ndarray
    current: np.ndarray

    @property
    def n_values(self) -> int:
        return len(self.keys)


# --- column kinds ------------------------------------------------------------------------------


def unsupported_reason(series: pl.Series) -> str | None:
    """Why Evidently (given ``to_pandas()`` of the frame) infers no drift-testable kind, else None."""
    dtype, null_count = series.dtype, series.null_count()
    if null_count == len(series) and dtype in (pl.String, pl.Boolean, pl.Null):
        return "all null: object dtype, Evidently 0.7 infers Unknown"
    if dtype.is_float() or dtype.is_signed_integer():
        return None
    if dtype.is_unsigned_integer():
        # Without nulls pandas keeps uint*, whose dtype name Evidently does not recognize.
        return None if null_count else "unsigned integer: Evidently 0.7 infers Unknown"
    if dtype == pl.Boolean:
        return "boolean with nulls: object dtype, Evidently 0.7 infers Unknown" if null_count else None
    if isinstance(dtype, FREQUENCY_DTYPES):
        return None
    return f"{dtype}: no drift test in Evidently 0.7"


def _is_numpy_column(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and not isinstance(dtype, pl.Decimal)


# --- the statistics ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of (0, 1] on which the empirical quantile functions of n and m values are both constant.

    In units of 1 / (n * m) the breakpoints are i * m and j * n. Returns, per piece, the index of the
    n-sample's and the m-sample's order statistic and the piece's length (in those units). The two
    sorted progressions are merged by computing each breakpoint's rank, without sorting.
    """
    i, j = np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    merged = np.empty(n + m, dtype=np.int64)
    merged[i + (i * m + n - 1) // n] = i * m  # after the j * n strictly below it
    merged[j + (j * n) // m + 1] = j * n  # after the i * m at or below it
    starts = merged[np.diff(merged, prepend=np.int64(-1)) != 0]
    lengths = np.diff(starts, append=np.int64(n) * m).astype(np.float64)
    return starts // m, starts // n, lengths


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two samples given sorted, as ``scipy.stats.wasserstein_distance``."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.abs(u - v).mean())
    u_index, v_index, lengths = _quantile_grid(n, m)
    return float(np.dot(np.abs(u[u_index] - v[v_index]), lengths) / (float(n) * float(m)))


def wasserstein_normed(u: np.ndarray, v: np.ndarray) -> float:
    """Evidently's "wasserstein": the distance divided by the reference's std (ddof=0, at least 0.001)."""
    norm = max(float(np.std(u)), MIN_NORM)
    return wasserstein_sorted(u, v) / norm


def ks_p_value(u: np.ndarray, v: np.ndarray) -> float:
    """Evidently's "ks": the two-sided two-sample Kolmogorov-Smirnov p-value."""
    return float(stats.ks_2samp(u, v)[1])


def jensen_shannon(freq: Frequencies) -> float:
    """Evidently's "jensenshannon" on value frequencies: scipy's distance (natural log) of the shares."""
    reference = freq.reference / freq.reference.sum()
    current = freq.current / freq.current.sum()
    return float(distance.jensenshannon(reference, current))


def chi_square_p_value(freq: Frequencies) -> float:
    """Evidently's "chisquare": current counts against reference counts scaled to the current size."""
    expected = freq.reference * (freq.current.sum() / freq.reference.sum())
    with np.errstate(divide="ignore", invalid="ignore"):  # a value absent from reference: p = 0
        return float(stats.chisquare(freq.current, expected)[1])


def z_p_value(freq: Frequencies) -> float:
    """Evidently's "z": two-sided Z-test that the share of values other than the smallest is equal."""
    if freq.n_values == 1:
        return 1.0
    n1, n2 = int(freq.reference.sum()), int(freq.current.sum())
    p1 = float(n1 - int(freq.reference[0])) / n1
    p2 = float(n2 - int(freq.current[0])) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def default_stat_test(kind: Kind, reference_rows: int, n_values: int) -> StatTest:
    """Evidently 0.7's default test for a column (``_get_default_stattest``)."""
    by_frequency = kind == "categorical" or n_values <= FEW_NUMERIC_VALUES
    if reference_rows <= SMALL_REFERENCE_ROWS:
        if n_values <= BINARY_VALUES:
            return Z
        return CHI_SQUARE if by_frequency else KS
    return JENSEN_SHANNON if by_frequency else WASSERSTEIN


FREQUENCY_TESTS = {JENSEN_SHANNON: jensen_shannon, CHI_SQUARE: chi_square_p_value, Z: z_p_value}
SAMPLE_TESTS = {WASSERSTEIN: wasserstein_normed, KS: ks_p_value}


def _verdict(column: str, kind: Kind, test: StatTest, score: float) -> FastColumnDrift:
    return FastColumnDrift(column, kind, test.method, score, test.threshold, test.drifted(score), test.name)


def _frequency_drift(column: str, kind: Kind, freq: Frequencies) -> FastColumnDrift:
    test = default_stat_test(kind, int(freq.reference.sum()), freq.n_values)
    return _verdict(column, kind, test, FREQUENCY_TESTS[test](freq))


# --- numeric-typed columns: sorted numpy arrays ------------------------------------------------


def _sorted_values(series: pl.Series) -> np.ndarray:
    """The column's values without nulls, NaN and +-inf, sorted."""
    values = series.to_numpy(writable=True)  # our own copy, so it can be sorted in place
    if values.dtype.kind == "f":  # nulls became NaN, which sorts last; scipy computes in float64
        values = values.astype(np.float64, copy=False)
        values.sort()
        return values[np.searchsorted(values, -np.inf, "right") : np.searchsorted(values, np.inf, "left")]
    values.sort()
    return values


def _distinct_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a new value starts in a sorted array."""
    starts = np.empty(len(values), dtype=bool)
    starts[:1] = True
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    return np.flatnonzero(starts)


def _n_distinct(values: np.ndarray, limit: int) -> int:
    """Distinct values of a sorted array, counted up to ``limit + 1`` (by jumping over each run)."""
    count, position = 0, 0
    while position < len(values) and count <= limit:
        position = int(np.searchsorted(values, values[position], side="right"))
        count += 1
    return count


def _sorted_frequencies(reference: np.ndarray, current: np.ndarray) -> Frequencies:
    """Value counts of two sorted arrays on their sorted union of values."""
    sides = []
    for values in (reference, current):
        starts = _distinct_starts(values)
        sides.append((values[starts], np.diff(starts, append=len(values))))
    keys = np.union1d(sides[0][0], sides[1][0])
    counts = []
    for side_keys, side_counts in sides:
        aligned = np.zeros(len(keys), dtype=np.int64)
        aligned[np.searchsorted(keys, side_keys)] = side_counts
        counts.append(aligned)
    return Frequencies(keys, counts[0], counts[1])


def _numpy_kind(current: pl.Series, values: np.ndarray) -> Kind:
    """Evidently's kind of a numeric-dtype column, from its current values (sorted, nulls dropped)."""
    if current.dtype.is_integer() and not current.null_count():
        # pandas keeps the integer dtype: Evidently counts the current column's distinct values.
        limit = INTEGER_CARDINALITY_LIMIT
        return "categorical" if _n_distinct(values, limit) <= limit else "numeric"
    return "numeric"  # floats, and integers with nulls (float64 in pandas)


def _numpy_column_drift(column: str, reference: pl.Series, current: pl.Series) -> FastColumnDrift:
    u, v = _sorted_values(reference), _sorted_values(current)
    _require_values(column, len(u), len(v))
    kind = _numpy_kind(current, v)
    few = FEW_NUMERIC_VALUES
    if kind == "numeric" and max(_n_distinct(u, few), _n_distinct(v, few)) > few:
        return _verdict(column, kind, *_sample_test(len(u), u, v))
    freq = _sorted_frequencies(u, v)
    test = default_stat_test(kind, len(u), freq.n_values)
    if test in SAMPLE_TESTS:  # a few values on each side, but more than a few together
        return _verdict(column, kind, *_sample_test(len(u), u, v))
    return _verdict(column, kind, test, FREQUENCY_TESTS[test](freq))


def _sample_test(reference_rows: int, u: np.ndarray, v: np.ndarray) -> tuple[StatTest, float]:
    """The test and score of a numeric column with more than a few distinct values."""
    test = default_stat_test("numeric", reference_rows, FEW_NUMERIC_VALUES + 1)
    return test, SAMPLE_TESTS[test](u, v)


# --- string, categorical and boolean columns: polars group-bys ---------------------------------


def _count_query(frame: pl.DataFrame, column: str) -> pl.LazyFrame:
    key = pl.col(column)
    if isinstance(frame.schema[column], pl.Categorical | pl.Enum):
        key = key.cast(pl.String)
    return frame.lazy().group_by(key.alias("key")).agg(pl.len().alias("count")).drop_nulls("key")


def _counted_frequencies(reference: pl.DataFrame, current: pl.DataFrame) -> Frequencies:
    """Aligned counts from two (key, count) frames, on the sorted union of keys."""
    joined = (
        reference.join(current, on="key", how="full", coalesce=True, suffix="_current")
        .fill_null(0)
        .sort("key")
    )
    return Frequencies(
        joined["key"].to_numpy(),
        joined["count"].to_numpy().astype(np.int64),
        joined["count_current"].to_numpy().astype(np.int64),
    )


def _count_columns(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str]
) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Value counts (nulls dropped) of each column in both frames, in one parallel polars run."""
    queries = [_count_query(frame, c) for c in columns for frame in (reference, current)]
    counted = pl.collect_all(queries)
    return {c: (counted[2 * i], counted[2 * i + 1]) for i, c in enumerate(columns)}


def _is_text(current_counts: pl.DataFrame) -> bool:
    return current_counts.height > current_counts["count"].sum() * TEXT_UNIQUE_SHARE


# --- the public entry point --------------------------------------------------------------------


def _require_values(column: str, reference_rows: int, current_rows: int) -> None:
    for side, rows in (("reference", reference_rows), ("current", current_rows)):
        if not rows:
            raise ValueError(f"An empty column '{column}' was provided for drift calculation in the {side}")


def _plan(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The columns to test, in order, and the columns (of the frame) that get no test, with the reason."""
    explicit = columns is not None
    names = list(columns) if explicit else list(current.columns)
    tested, skipped = [], {}
    for name in names:
        if name not in current.columns or name not in reference.columns:
            raise ValueError(f"Cannot find column '{name}' in both the reference and the current frame")
        reason = unsupported_reason(current[name])
        if reason is None:
            tested.append(name)
        elif explicit:
            raise ValueError(f"Cannot calculate drift for column '{name}': {reason}")
        else:
            skipped[name] = reason
    return tested, skipped


def column_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str] | None = None,
    drift_share: float = 0.5,
    threads: int | None = None,
) -> FastDriftResult:
    """Per-column drift of ``current`` against ``reference`` with Evidently 0.7's default tests.

    Args:
        reference: the reference rows (e.g. the champion's training features).
        current: the recent rows.
        columns: the columns to test (each must be testable); default: every testable column of
            ``current`` (text and Unknown-kind columns are reported in ``skipped``).
        drift_share: the dataset drifts when at least this share of the tested columns drifts.
        threads: worker threads for the numeric columns; default: polars' thread pool size.

    Returns:
        The per-column verdicts (in column order), the drifted share and the dataset verdict.
    """
    tested, skipped = _plan(reference, current, columns)
    by_frequency = [c for c in tested if not _is_numpy_column(current.schema[c])]
    counts = _count_columns(reference, current, by_frequency) if by_frequency else {}
    results: dict[str, FastColumnDrift] = {}
    for name, (reference_counts, current_counts) in counts.items():
        if current.schema[name] == pl.String and _is_text(current_counts):
            if columns is not None:
                raise ValueError(f"Cannot calculate drift for column '{name}': text (not reproduced)")
            skipped[name] = "text: Evidently 0.7 uses a text-content classifier, not reproduced"
            continue
        _require_values(name, reference_counts.height, current_counts.height)
        freq = _counted_frequencies(reference_counts, current_counts)
        results[name] = _frequency_drift(name, "categorical", freq)
    numeric = [c for c in tested if c not in counts]
    with ThreadPoolExecutor(max_workers=threads or pl.thread_pool_size()) as pool:
        for result in pool.map(lambda c: _numpy_column_drift(c, reference[c], current[c]), numeric):
            results[result.column] = result
    ordered = [results[c] for c in tested if c in results]
    share = sum(c.drifted for c in ordered) / len(ordered) if ordered else 0.0
    return FastDriftResult(ordered, share, share >= drift_share, skipped)
