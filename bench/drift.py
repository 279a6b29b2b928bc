"""Benchmark: our vectorized drift (``fast_drift.column_drift``) against Evidently's DataDriftPreset.

Input: generated (seeded) reference and current frames of 1M rows each (``--quick``: 100k each), 50
columns: 40 numeric (float64 normal, lognormal, exponential and uniform, and int64 Poisson counts
with more than 10 distinct values, so numeric for Evidently too; 3 of them with 2% nulls) and 10
categorical strings with 5 to 20 Zipf-distributed levels (one with 1% nulls). In current, 10 columns
are shifted: 6 numeric (3 mean shifts of 0.3 std, 3 scale changes of 1.5x) and 4 categorical (the
level frequencies reversed). Both frames are cached as Parquet under /tmp/ml_platform_bench/drift.

Compared, on the full data (every row of both frames):

* ours: ``column_drift(pl.read_parquet(reference), pl.read_parquet(current))``;
* evidently: ``Report([DataDriftPreset()], include_tests=True).run(current_data=..., reference_data=...)``
  on ``pl.read_parquet(...).to_pandas()`` (how the project hands frames to Evidently), then
  ``snapshot.dict()``; its per-column verdict is the status of its "Value Drift" test.

Both use Evidently's default test per column (here: normed Wasserstein distance for numeric,
Jensen-Shannon distance for categorical columns, threshold 0.1), so the verdicts should agree;
``verdict_agreement`` is the share of columns with the same verdict, ``shifted_found`` the share of
the 10 shifted columns flagged (ours; ``peer_value`` is Evidently's share).

How: every measurement runs in its own child process (this script with ``--child``) with
POLARS_MAX_THREADS=2, so its peak RSS (``ru_maxrss``) is its own; the parent imports only the
standard library. The clock starts after the imports and covers reading both Parquet files and the
drift computation. Ours runs 3 times (median reported), Evidently once: it takes minutes at 1M rows.

Output: progress on stderr; on stdout one JSON line per figure (``ratio`` is ours / peer_value,
``better`` says which direction wins; targets apply to the full run only).

    .venv/bin/python bench/drift.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import own_peak_rss_mb, peak_rss_mb, run_child, significant

# Only the standard library at module level: the parent must stay small (see the docstring).

BENCH_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench" / "drift"
DATA_VERSION = "v1"  # bump when the generator changes, so cached inputs are regenerated
SEED = 20260
THREADS = 2
OUR_REPEATS = 3

FULL = ("1m", 1_000_000)
QUICK = ("100k", 100_000)
NUMERIC = 40
CATEGORICAL = 10
SHIFTED_NUMERIC = {3: "mean", 8: "scale", 14: "mean", 21: "scale", 27: "mean", 36: "scale"}
SHIFTED_CATEGORICAL = (1, 4, 6, 9)
NUMERIC_WITH_NULLS = (1, 12, 30)
CATEGORICAL_WITH_NULLS = (2,)
NULL_SHARE = {"numeric": 0.02, "categorical": 0.01}
MEAN_SHIFT_STD = 0.3
SCALE_FACTOR = 1.5

TIME_TARGET = 0.01  # ours / Evidently wall time
MEMORY_TARGET = 0.5  # ours / Evidently peak RSS
AGREEMENT_TARGET = 0.95  # share of columns with the same verdict
SHIFTED_TARGET = 1.0  # share of the shifted columns ours flags


def log(message: str) -> None:
    print(f"[drift] {message}", file=sys.stderr, flush=True)


# --- input data (child process) ----------------------------------------------------------------


def numeric_name(i: int) -> str:
    return f"num_{i:02d}"


def categorical_name(j: int) -> str:
    return f"cat_{j}"


def shifted_columns() -> list[str]:
    return [numeric_name(i) for i in SHIFTED_NUMERIC] + [categorical_name(j) for j in SHIFTED_CATEGORICAL]


def data_file(label: str, side: str) -> Path:
    return BENCH_DIR / DATA_VERSION / f"{side}_{label}.parquet"


def numeric_column(rng, i: int, rows: int, shift: str | None):
    """Column ``i``'s values: one of five distributions, with the shift (in std units) applied."""
    import numpy as np

    kind = i % 5
    if kind == 4:  # counts with more than 10 distinct values: numeric for Evidently too
        lam = 20.0 + i
        values = rng.poisson(lam * (SCALE_FACTOR if shift == "scale" else 1.0), rows)
        return values + (round(MEAN_SHIFT_STD * lam**0.5) if shift == "mean" else 0)
    center, spread = float(i), 1.0 + i / 10
    draws = {
        0: lambda: rng.normal(center, spread, rows),
        1: lambda: rng.lognormal(0.0, 0.5, rows) * spread,
        2: lambda: rng.exponential(spread, rows),
        3: lambda: rng.uniform(center, center + 3 * spread, rows),
    }
    draw = draws[kind]()
    if shift == "scale":
        mean = draw.mean()
        draw = mean + (draw - mean) * SCALE_FACTOR
    elif shift == "mean":
        draw = draw + MEAN_SHIFT_STD * float(np.std(draw))
    return draw


def categorical_column(rng, j: int, rows: int, shifted: bool):
    """Strings of 5 to 20 levels with Zipf-like frequencies (reversed when shifted), as a polars Series."""
    import numpy as np
    import polars as pl

    levels = 5 + j * 15 // (CATEGORICAL - 1)
    weights = 1.0 / np.arange(1, levels + 1) ** 0.8
    if shifted:
        weights = weights[::-1]
    codes = rng.choice(levels, size=rows, p=weights / weights.sum())
    names = pl.Series([f"{categorical_name(j)}_level_{k:02d}" for k in range(levels)])
    return names.gather(codes)


def with_nulls(rng, series, share: float):
    import polars as pl

    mask = pl.Series(rng.random(len(series)) < share)
    return pl.select(pl.when(mask).then(None).otherwise(series)).to_series()


def generate_side(label: str, rows: int, side: str) -> None:
    import numpy as np
    import polars as pl

    current = side == "current"
    rng = np.random.default_rng([SEED, int(current)])
    columns = {}
    for i in range(NUMERIC):
        shift = SHIFTED_NUMERIC.get(i) if current else None
        values = pl.Series(numeric_column(rng, i, rows, shift))
        if i in NUMERIC_WITH_NULLS:
            values = with_nulls(rng, values, NULL_SHARE["numeric"])
        columns[numeric_name(i)] = values
    for j in range(CATEGORICAL):
        values = categorical_column(rng, j, rows, current and j in SHIFTED_CATEGORICAL)
        if j in CATEGORICAL_WITH_NULLS:
            values = with_nulls(rng, values, NULL_SHARE["categorical"])
        columns[categorical_name(j)] = values
    path = data_file(label, side)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pl.DataFrame(columns).write_parquet(tmp)
    os.replace(tmp, path)


def ensure_data(label: str, rows: int) -> None:
    for side in ("reference", "current"):
        if not data_file(label, side).exists():
            log(f"generating {rows:,} {side} rows into {data_file(label, side)}")
            subprocess.run([sys.executable, __file__, "--generate", label, str(rows), side], check=True)


# --- the two implementations (child process) ---------------------------------------------------


def run_ours(label: str) -> dict[str, dict]:
    import polars as pl

    from ml_platform.monitoring.fast_drift import column_drift

    reference = pl.read_parquet(data_file(label, "reference"))
    current = pl.read_parquet(data_file(label, "current"))
    result = column_drift(reference, current)
    return {c.column: {"method": c.method, "score": c.score, "drifted": c.drifted} for c in result.columns}


def run_evidently(label: str) -> dict[str, dict]:
    import polars as pl
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference = pl.read_parquet(data_file(label, "reference")).to_pandas()
    current = pl.read_parquet(data_file(label, "current")).to_pandas()
    report = (
        Report([DataDriftPreset()], include_tests=True)
        .run(current_data=current, reference_data=reference)
        .dict()
    )
    failed = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in report["tests"]
        if t["metric_config"]["params"]["type"] == "evidently:metric_v2:ValueDrift"
    }
    return {
        m["config"]["column"]: {
            "method": m["config"]["method"],
            "score": float(m["value"]),
            "drifted": failed[m["config"]["column"]],
        }
        for m in report["metrics"]
        if m["config"]["type"] == "evidently:metric_v2:ValueDrift"
    }


RUNS = {"ours": run_ours, "evidently": run_evidently}
IMPORTS = {
    "ours": ("polars", "numpy", "scipy.stats", "scipy.spatial", "ml_platform.monitoring.fast_drift"),
    "evidently": ("polars", "pandas", "pyarrow", "evidently", "evidently.presets"),
}


def child(implementation: str, label: str) -> None:
    """One measurement in this process, printed as one JSON line."""
    import importlib

    for module in IMPORTS[implementation]:
        importlib.import_module(module)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    columns = RUNS[implementation](label)
    seconds = time.perf_counter() - start
    summary = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "own_peak_rss_mb": own_peak_rss_mb()}
    print(json.dumps(summary | {"baseline_rss_mb": baseline, "columns": columns}))


# --- the benchmark (parent process) ------------------------------------------------------------


def measure(implementation: str, label: str, attempt: str) -> dict:
    log(f"{label} {implementation} {attempt}: running")
    result = run_child(__file__, THREADS, "--child", implementation, label)
    if result["peak_rss_mb"] > result["own_peak_rss_mb"] + 20:
        log(f"warning: ru_maxrss {result['peak_rss_mb']:.0f} MB includes memory the parent held")
    log(
        f"{label} {implementation} {attempt}: {result['seconds']:.2f} s, peak {result['peak_rss_mb']:.0f} MB"
        f" (after imports {result['baseline_rss_mb']:.0f} MB), {len(result['columns'])} columns"
    )
    return result


def compare(ours: dict[str, dict], theirs: dict[str, dict]) -> dict[str, float]:
    """Verdict agreement over all columns either side tested, and the largest relative score gap."""
    columns = sorted(set(ours) | set(theirs))
    same = [c in ours and c in theirs and ours[c]["drifted"] == theirs[c]["drifted"] for c in columns]
    disagreeing = [c for c, s in zip(columns, same, strict=True) if not s]
    gaps = [
        abs(ours[c]["score"] - theirs[c]["score"]) / max(abs(theirs[c]["score"]), 1e-12)
        for c in columns
        if c in ours and c in theirs
    ]
    methods_differ = [
        c for c in columns if c in ours and c in theirs and ours[c]["method"] != theirs[c]["method"]
    ]
    if disagreeing or methods_differ:
        log(f"verdicts differ on {disagreeing}, methods differ on {methods_differ}")
    return {"agreement": sum(same) / len(columns), "max_score_rel_gap": max(gaps, default=0.0)}


def shifted_found(columns: dict[str, dict]) -> float:
    shifted = shifted_columns()
    return sum(columns.get(c, {}).get("drifted", False) for c in shifted) / len(shifted)


def figure(
    name: str, ours: float, peer_value: float | None, better: str, target: float | None, **extra
) -> dict:
    """One contract line; ``target_kind`` "absolute..." compares ours itself, else ours / peer_value.
    A figure that is itself a comparison of the two (the verdict agreement) has no peer value."""
    ratio = ours / peer_value if peer_value else None
    met = None
    if target is not None:
        measured = ours if extra.get("target_kind", "").startswith("absolute") else ratio
        met = measured is not None and (measured <= target if better == "lower" else measured >= target)
    line = {
        "bench": "drift",
        "figure": name,
        "ours": significant(ours),
        "peer": "evidently" if peer_value is not None else None,
        "peer_value": significant(peer_value) if peer_value is not None else None,
        "ratio": significant(ratio),
        "better": better,
        "target": target,
        "met": met,
    }
    return line | extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows per frame, no targets")
    parser.add_argument("--generate", nargs=3, metavar=("LABEL", "ROWS", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("IMPLEMENTATION", "LABEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate_side(args.generate[0], int(args.generate[1]), args.generate[2])
        return
    if args.child:
        child(*args.child)
        return

    label, rows = QUICK if args.quick else FULL
    with_targets = not args.quick
    ensure_data(label, rows)
    ours = [measure("ours", label, f"run 1/{OUR_REPEATS}")]
    evidently = measure("evidently", label, "run 1/1")
    ours += [measure("ours", label, f"run {k}/{OUR_REPEATS}") for k in range(2, OUR_REPEATS + 1)]

    agreement = compare(ours[0]["columns"], evidently["columns"])
    gap = agreement["max_score_rel_gap"]
    log(f"{label}: verdict agreement {agreement['agreement']:.3f}, largest relative score gap {gap:.2e}")
    seconds = statistics.median(r["seconds"] for r in ours)
    memory = statistics.median(r["peak_rss_mb"] for r in ours)
    lines = [
        figure(
            f"time_s_{label}", seconds, evidently["seconds"], "lower", TIME_TARGET if with_targets else None
        ),
        figure(
            f"peak_mem_mb_{label}",
            memory,
            evidently["peak_rss_mb"],
            "lower",
            MEMORY_TARGET if with_targets else None,
        ),
        figure(
            f"verdict_agreement_{label}",  # ours against Evidently: the share of same verdicts
            agreement["agreement"],
            None,
            "higher",
            AGREEMENT_TARGET if with_targets else None,
            target_kind="absolute_share",
            max_score_rel_gap=significant(agreement["max_score_rel_gap"], 2),
        ),
        figure(
            f"shifted_found_{label}",
            shifted_found(ours[0]["columns"]),
            shifted_found(evidently["columns"]),
            "higher",
            SHIFTED_TARGET if with_targets else None,
            target_kind="absolute_share",
        ),
    ]
    for line in lines:
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
