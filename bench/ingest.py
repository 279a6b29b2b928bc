"""Benchmark: our ingestion + validation path against a straightforward pandas implementation.

What is compared, on the same generated readings (sensor_id, timestamp, value, temperature,
vibration, all landed as text; ~0.5% of the rows bad: non-numeric or NaN/inf value, value out of
range, empty sensor_id, unparseable timestamp, duplicate (sensor_id, timestamp) key):

* ours: a fresh DuckDB warehouse file (``configure_connection(conn, "1GB")``), then
  ``load_raw_partitions`` over the whole day range, ``summarize``, and the quarantine insert the
  ``readings_quarantine`` asset runs (CREATE TABLE IF NOT EXISTS ... WHERE FALSE; DELETE; INSERT
  the rows whose ``reject_reason`` is not null), then the connection is closed (checkpointed).
* pandas: ``read_csv(dtype=str)`` / ``read_parquet``, ``to_datetime(utc)`` and
  ``to_numeric(errors="coerce")``, the same rules in the same order (required not null, types
  incl. NaN/inf, the spec's ranges, timestamps not in the future nor before the floor, unique key
  keeping the first occurrence), a quarantine frame with reasons and a typed clean frame, both
  written to a DuckDB file.

How: every (format x size x implementation) measurement runs in its own child process (this
script with ``--child``), so its peak RSS (``ru_maxrss``) is its own. Both children import the
same modules before the clock starts; wall time covers the work only. Each measurement is
repeated (3 times, once with ``--quick``) with the implementations interleaved, and the median is
reported. Both must quarantine the same number of rows, or the run fails with a per-reason diff.

Output: progress on stderr; on stdout one JSON line per figure (``ratio`` is always ours / peer;
``better`` says which direction wins). Generated inputs are cached in ``/tmp/ml_platform_bench``.

    .venv/bin/python bench/ingest.py [--quick]
    .venv/bin/python bench/ingest.py --profile csv 10m   # per-statement time and peak RSS of ours
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ml_platform.ingestion import pull  # noqa: F401  (imported lazily by load_raw_partitions)
from ml_platform.ingestion.raw import load_raw_partitions, raw_table
from ml_platform.resources.platform import configure_connection
from ml_platform.usecases.sensor_anomaly import SPEC
from ml_platform.validation.rules import validated_rows_sql
from ml_platform.validation.summary import partition_filter, summarize

BENCH_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench"
DATA_VERSION = "v1"  # bump when the generator changes, so cached inputs are regenerated
FIRST_DAY, LAST_DAY = dt.date(2026, 1, 1), dt.date(2026, 1, 10)
SENSORS = 1_000
SEED = 42
MEMORY_LIMIT = "1GB"

FORMATS = ("csv", "parquet")
IMPLEMENTATIONS = ("ours", "pandas")
FULL_SIZES = {"1m": 1_000_000, "10m": 10_000_000}
QUICK_SIZES = {"100k": 100_000, "300k": 300_000}
TARGET_SIZE = "10m"
ROWS_PER_S_TARGET = 3.0  # ours / pandas
PEAK_MEM_TARGET_MB = 2000  # absolute bound for ours
MISMATCH_TOLERANCE = 5  # quarantined rows ours and pandas may differ by

# Bad rows: a row whose hash % 1000 is below 5 gets the fault of that number (0.5% in all).
FAULTS = ("non_numeric_value", "value_out_of_range", "empty_sensor_id", "bad_timestamp", "duplicate_key")


def log(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# --- input data --------------------------------------------------------------------------------


def data_file(label: str, fmt: str) -> Path:
    """One file per directory: the directory is the landing zone our path reads."""
    return BENCH_DIR / DATA_VERSION / label / fmt / f"readings.{fmt}"


def readings_sql(rows: int) -> str:
    """Deterministic readings: SENSORS sensors, evenly spaced over FIRST_DAY..LAST_DAY, as text."""
    steps = -(-rows // SENSORS)
    interval = ((LAST_DAY - FIRST_DAY).days + 1) * 86_400 // steps
    good_ts = f"strftime(TIMESTAMP '{FIRST_DAY}' + to_seconds((key_row // {SENSORS}) * {interval}), "
    noise = "((hash(i, {salt}) % 1000000) / 1e6 - 0.5)"
    return f"""
WITH base AS (
    SELECT i, hash(i, {SEED}) % 1000 AS fault,
        -- a duplicate repeats the key of the row before it
        CASE WHEN hash(i, {SEED}) % 1000 = 4 AND i > 0 THEN i - 1 ELSE i END AS key_row
    FROM range({rows}) r(i)
)
SELECT
    CASE WHEN fault = 2 THEN (CASE WHEN i % 2 = 0 THEN NULL ELSE ' ' END)
        ELSE 's-' || (key_row % {SENSORS} + 1) END AS sensor_id,
    CASE WHEN fault = 3 THEN (['not-a-time', '2026-13-45T00:00:00Z', 'yesterday'])[i % 3 + 1]
        ELSE {good_ts} '%Y-%m-%dT%H:%M:%SZ') END AS timestamp,
    CASE WHEN fault = 0 THEN (['abc', 'nan', 'inf', '1.2.3'])[i % 4 + 1]
        WHEN fault = 1 THEN CAST(round(1000.5 + (hash(i, 7) % 100000) / 10.0, 4) AS VARCHAR)
        ELSE CAST(round(20 + (i % {SENSORS}) * 0.06 + 5 * sin(i / {SENSORS} * 0.01)
            + 2 * {noise.format(salt=1)}, 4) AS VARCHAR) END AS value,
    CAST(round(40 + 4 * {noise.format(salt=2)}, 3) AS VARCHAR) AS temperature,
    CAST(round(1 + 0.8 * {noise.format(salt=3)}, 4) AS VARCHAR) AS vibration,
    fault
FROM base
"""


def ensure_data(label: str, rows: int) -> dict[str, int]:
    """Write the CSV and Parquet inputs of one size (unless cached); return the injected faults."""
    meta_path = data_file(label, "csv").parent.parent / "faults.json"
    if meta_path.exists() and all(data_file(label, fmt).exists() for fmt in FORMATS):
        return json.loads(meta_path.read_text())
    log(f"generating {rows:,} rows ({label}) under {meta_path.parent}")
    with duckdb.connect() as conn:
        conn.sql(f"CREATE TABLE readings AS {readings_sql(rows)}")
        for fmt in FORMATS:
            path = data_file(label, fmt)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")  # dot files are not landing files
            options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
            conn.sql(f"COPY (SELECT * EXCLUDE (fault) FROM readings) TO '{tmp}' ({options})")
            os.replace(tmp, path)
        counts = dict(conn.sql("SELECT fault, count(*) FROM readings WHERE fault < 5 GROUP BY 1").fetchall())
    faults = {name: counts.get(number, 0) for number, name in enumerate(FAULTS)}
    meta_path.write_text(json.dumps(faults))
    return faults


# --- ours --------------------------------------------------------------------------------------


@contextmanager
def phase(phases: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    phases[name] = round(time.perf_counter() - start, 3)


def quarantine_rejects(conn: duckdb.DuckDBPyConnection) -> None:
    """The statements of the ``readings_quarantine`` asset, for the whole day range."""
    table = f"{SPEC.name}.readings_quarantine"
    scope = partition_filter(FIRST_DAY, LAST_DAY)
    validated = validated_rows_sql(SPEC, raw_table(SPEC), scope)
    conn.sql(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM ({validated}) WHERE FALSE")
    conn.begin()
    conn.sql(f"DELETE FROM {table} WHERE {scope}")
    conn.sql(f"INSERT INTO {table} SELECT * FROM ({validated}) WHERE reject_reason IS NOT NULL")
    conn.commit()


def run_ours(path: Path, warehouse: Path, conn_wrapper=None) -> dict[str, float]:
    phases: dict[str, float] = {}
    conn = duckdb.connect(str(warehouse))
    configure_connection(conn, MEMORY_LIMIT)
    work = conn_wrapper(conn) if conn_wrapper else conn
    with phase(phases, "load_raw_partitions"):
        load_raw_partitions(work, SPEC, path.parent, FIRST_DAY, LAST_DAY)
    with phase(phases, "summarize"):
        summarize(work, SPEC, FIRST_DAY, LAST_DAY)
    with phase(phases, "quarantine"):
        quarantine_rejects(work)
    with phase(phases, "close"):
        conn.close()
    return phases


def ours_reasons(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        table = f"{SPEC.name}.readings_quarantine"
        return dict(conn.sql(f"SELECT reject_reason, count(*) FROM {table} GROUP BY 1").fetchall())


# --- pandas ------------------------------------------------------------------------------------


def read_text_frame(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        # keep_default_na=False: "nan" or "NA" stay text (a type error), as DuckDB reads them.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


def parse_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    parsed = {}
    for column in SPEC.columns:
        text = frame[column.name]
        if column.dtype == "timestamp":
            parsed[column.name] = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        elif column.dtype == "float":
            parsed[column.name] = pd.to_numeric(text, errors="coerce")
        else:
            parsed[column.name] = text
    return parsed


def rule_masks(frame: pd.DataFrame, parsed: dict[str, pd.Series]) -> list[tuple[str, pd.Series]]:
    """The spec's row rules, in the order of ``validation.rules.row_rules`` (first broken wins)."""
    absent = {c.name: frame[c.name].isna() | (frame[c.name].str.strip() == "") for c in SPEC.columns}
    rules = [(f"not_null:{c.name}", absent[c.name]) for c in SPEC.columns if c.required]
    for column in SPEC.columns:
        if column.dtype == "string":
            continue
        value = parsed[column.name]
        bad = value.isna() | (np.isinf(value) if column.dtype == "float" else False)
        rules.append((f"type:{column.name}", ~absent[column.name] & bad))
    for column in SPEC.numeric_columns:
        value = parsed[column.name]
        low = value < column.min_value if column.min_value is not None else False
        high = value > column.max_value if column.max_value is not None else False
        if column.min_value is not None or column.max_value is not None:
            rules.append((f"range:{column.name}", low | high))
    for column in SPEC.columns:
        if column.allowed_values:
            text = frame[column.name]
            rules.append((f"allowed:{column.name}", text.notna() & ~text.isin(column.allowed_values)))
    ts = parsed[SPEC.timestamp]
    expectations = SPEC.expectations
    floor = pd.Timestamp(expectations.timestamp_floor or SPEC.partitions_start, tz="UTC")
    rules.append((f"future:{SPEC.timestamp}", ts > pd.Timestamp.now(tz="UTC") + expectations.max_future))
    rules.append((f"too_old:{SPEC.timestamp}", ts < floor))
    return rules


def reject_reasons(frame: pd.DataFrame, parsed: dict[str, pd.Series]) -> pd.Series:
    rules = rule_masks(frame, parsed)
    reasons = pd.Series(
        np.select([mask.to_numpy() for _, mask in rules], [name for name, _ in rules], default=""),
        index=frame.index,
    )
    passing = reasons == ""
    keys = pd.DataFrame({name: parsed[name] for name in SPEC.expectations.key})[passing]
    reasons.loc[keys.index[keys.duplicated(keep="first")]] = "duplicate_key"
    return reasons


def persist(warehouse: Path, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        configure_connection(conn, MEMORY_LIMIT)
        conn.register("clean_frame", clean)
        conn.register("quarantine_frame", quarantine)
        conn.sql("CREATE TABLE readings_clean AS SELECT * FROM clean_frame")
        conn.sql("CREATE TABLE readings_quarantine AS SELECT * FROM quarantine_frame")


def run_pandas(path: Path, warehouse: Path) -> dict[str, float]:
    phases: dict[str, float] = {}
    with phase(phases, "read"):
        frame = read_text_frame(path)
    with phase(phases, "parse"):
        parsed = parse_columns(frame)
    with phase(phases, "rules"):
        reasons = reject_reasons(frame, parsed)
        bad = reasons != ""
        quarantine = frame[bad].assign(reject_reason=reasons[bad])
        clean = pd.DataFrame({name: values[~bad] for name, values in parsed.items()})
    with phase(phases, "persist"):
        persist(warehouse, clean, quarantine)
    return phases


def pandas_reasons(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return dict(conn.sql("SELECT reject_reason, count(*) FROM readings_quarantine GROUP BY 1").fetchall())


# --- one measurement (child process) -----------------------------------------------------------


def child(implementation: str, path: Path) -> None:
    """Run one measurement in this process and print its result as one JSON line."""
    baseline = peak_rss_mb()
    runs_dir = BENCH_DIR / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs_dir) as tmp:
        warehouse = Path(tmp) / "warehouse.duckdb"
        run, count = (run_ours, ours_reasons) if implementation == "ours" else (run_pandas, pandas_reasons)
        start = time.perf_counter()
        phases = run(path, warehouse)
        seconds = time.perf_counter() - start
        peak = peak_rss_mb()
        reasons = count(warehouse)
    result = {"seconds": seconds, "peak_rss_mb": peak, "baseline_rss_mb": baseline, "phases": phases}
    print(json.dumps(result | {"reasons": reasons}))


def measure(implementation: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", implementation, str(path)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(command)} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark (parent process) ------------------------------------------------------------


def check_agreement(fmt: str, label: str, results: dict[str, dict], faults: dict[str, int]) -> None:
    ours, peer = (results[impl]["reasons"] for impl in IMPLEMENTATIONS)
    total_ours, total_peer = sum(ours.values()), sum(peer.values())
    log(
        f"{fmt} {label}: quarantined rows ours={total_ours:,} pandas={total_peer:,}"
        f" (injected {sum(faults.values()):,}: {faults})"
    )
    if abs(total_ours - total_peer) <= MISMATCH_TOLERANCE:
        return
    lines = [f"  {r:<24} ours={ours.get(r, 0):>9,} pandas={peer.get(r, 0):>9,}" for r in sorted(ours | peer)]
    raise SystemExit(
        f"ours and pandas disagree on {fmt} {label} by {abs(total_ours - total_peer)} quarantined rows"
        f" (more than {MISMATCH_TOLERANCE}): the two implementations no longer apply the same rules"
        " to the same rows. Per reason:\n" + "\n".join(lines)
    )


def run_case(fmt: str, label: str, repeats: int, faults: dict[str, int]) -> dict[str, list[dict]]:
    path = data_file(label, fmt)
    runs: dict[str, list[dict]] = {impl: [] for impl in IMPLEMENTATIONS}
    rows = FULL_SIZES.get(label) or QUICK_SIZES[label]
    for attempt in range(repeats):
        for impl in IMPLEMENTATIONS:  # interleaved, so machine noise hits both alike
            result = measure(impl, path)
            runs[impl].append(result)
            log(
                f"{fmt} {label} {impl:<6} run {attempt + 1}/{repeats}: {result['seconds']:.2f} s,"
                f" {rows / result['seconds']:,.0f} rows/s, peak {result['peak_rss_mb']:.0f} MB"
                f" (after imports {result['baseline_rss_mb']:.0f} MB), phases {result['phases']}"
            )
        if attempt == 0:
            check_agreement(fmt, label, {impl: runs[impl][0] for impl in IMPLEMENTATIONS}, faults)
    return runs


def figure(name: str, ours: float, peer: float, better: str, target, met) -> dict:
    return {
        "bench": "ingest",
        "figure": name,
        "ours": round(ours, 1),
        "peer": "pandas",
        "peer_value": round(peer, 1),
        "ratio": round(ours / peer, 2),
        "better": better,
        "target": target,
        "met": met,
    }


def figures(fmt: str, label: str, rows: int, runs: dict[str, list[dict]], quick: bool) -> list[dict]:
    speed = {impl: rows / statistics.median(r["seconds"] for r in runs[impl]) for impl in runs}
    memory = {impl: statistics.median(r["peak_rss_mb"] for r in runs[impl]) for impl in runs}
    at_target = label == TARGET_SIZE and not quick
    ratio = speed["ours"] / speed["pandas"]
    rows_target = ROWS_PER_S_TARGET if at_target else None
    rows_met = ratio >= ROWS_PER_S_TARGET if at_target else None
    mem_target = PEAK_MEM_TARGET_MB if at_target else None
    mem_met = memory["ours"] < PEAK_MEM_TARGET_MB if at_target else None
    memory_figure = figure(
        f"peak_mem_mb_{fmt}_{label}", memory["ours"], memory["pandas"], "lower", mem_target, mem_met
    )
    if at_target:
        memory_figure["target_kind"] = "absolute_mb"
    return [
        figure(f"rows_per_s_{fmt}_{label}", speed["ours"], speed["pandas"], "higher", rows_target, rows_met),
        memory_figure,
    ]


def benchmark(quick: bool) -> None:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 1 if quick else 3
    faults = {label: ensure_data(label, rows) for label, rows in sizes.items()}
    lines = []
    for fmt in FORMATS:
        for label, rows in sizes.items():
            runs = run_case(fmt, label, repeats, faults[label])
            lines += figures(fmt, label, rows, runs, quick)
    for line in lines:
        print(json.dumps(line))


# --- profile: where our path spends time and memory --------------------------------------------


class TimedRelation:
    def __init__(self, relation, entry: list) -> None:
        self._relation, self._entry = relation, entry

    def __getattr__(self, name: str):
        attribute = getattr(self._relation, name)
        if not name.startswith("fetch"):
            return attribute

        def fetch(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._entry[1] += time.perf_counter() - start
                self._entry[2] = peak_rss_mb()

        return fetch


class TimedConnection:
    """Wraps a connection: every statement's wall time (including its fetch) and peak RSS after."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn, self.entries = conn, []

    def sql(self, query: str, **kwargs):
        entry = [" ".join(query.split())[:100], 0.0, 0.0]
        self.entries.append(entry)
        start = time.perf_counter()
        relation = self._conn.sql(query, **kwargs)
        entry[1], entry[2] = time.perf_counter() - start, peak_rss_mb()
        return None if relation is None else TimedRelation(relation, entry)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def profile(fmt: str, label: str) -> None:
    """Run ours once in this process and list its statements by time, with the peak RSS after each."""
    rows = (FULL_SIZES | QUICK_SIZES)[label]
    ensure_data(label, rows)
    wrappers: list[TimedConnection] = []

    def wrap(conn):
        wrappers.append(TimedConnection(conn))
        return wrappers[-1]

    import ml_platform.ingestion.raw as raw

    hashed = raw.file_sha256

    def timed_sha256(path):
        entry = ["python: file_sha256", 0.0, 0.0]
        wrappers[-1].entries.append(entry)
        start = time.perf_counter()
        digest = hashed(path)
        entry[1], entry[2] = time.perf_counter() - start, peak_rss_mb()
        return digest

    raw.file_sha256 = timed_sha256
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        log(f"profiling ours on {fmt} {label}, peak RSS after imports {peak_rss_mb():.0f} MB")
        start = time.perf_counter()
        phases = run_ours(data_file(label, fmt), Path(tmp) / "warehouse.duckdb", wrap)
        total = time.perf_counter() - start
    log(f"total {total:.2f} s, phases {phases}, peak RSS {peak_rss_mb():.0f} MB")
    for number, (text, seconds, rss) in enumerate(wrappers[-1].entries, 1):
        if seconds >= 0.05:
            log(f"  #{number:<3} {seconds:7.2f} s  peak {rss:6.0f} MB  {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k and 300k rows, one run each")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs=2, metavar=("FORMAT", "SIZE"), help="profile ours on one input")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
    elif args.profile:
        profile(*args.profile)
    else:
        benchmark(args.quick)


if __name__ == "__main__":
    main()
