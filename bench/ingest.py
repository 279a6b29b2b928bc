"""Benchmark: our ingestion + validation path against a straightforward pandas implementation.

What is compared, on the same generated readings (sensor_id, timestamp, value, temperature,
vibration, all landed as text; ~0.5% of the rows bad: non-numeric or NaN/inf value, value out of
range, empty sensor_id, unparseable timestamp, duplicate (sensor_id, timestamp) key):

* ours: a fresh DuckDB warehouse file (``configure_connection(conn, "1GB")``), then what the
  ``raw_readings`` and ``readings_quarantine`` assets run over the whole day range:
  ``load_raw_partitions``, ``record_rejects``, ``summarize`` and ``write_quarantine``; then the
  connection is closed (checkpointed).
* pandas: ``read_csv(dtype=str)`` / ``read_parquet``, ``to_datetime(utc)`` and
  ``to_numeric(errors="coerce")``, the same rules in the same order (required not null, types
  incl. NaN/inf, the spec's ranges, timestamps not in the future nor before the floor, unique key
  keeping the first occurrence, an entity over the bad share in a day quarantined whole), a
  quarantine frame with reasons and a typed clean frame, both written to a DuckDB file.

How: every (format x size x implementation) measurement runs in its own child process (this
script with ``--child``), so its peak RSS (``ru_maxrss``) is its own. Both children import the
same modules before the clock starts; wall time covers the work only. Each measurement is
repeated (3 times, once with ``--quick``) with the implementations interleaved, and the median is
reported. On every repetition both must quarantine the same rows (data row numbers) for the same
rules, or the run stops showing the rows that differ and the counts per reason.

Output: progress on stderr; on stdout one JSON line per figure (``ratio`` is always ours / peer;
``better`` says which direction wins). Generated inputs are cached in
``/tmp/ml_platform_bench/ingest``. No input line is malformed: our path would quarantine it
("parse:..."), while ``read_csv`` would raise, so that rule has no pandas counterpart.

    .venv/bin/python bench/ingest.py [--quick]
    .venv/bin/python bench/ingest.py --profile csv 10m   # per-statement time and peak RSS of ours
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from _measure import cpu_seconds, own_peak_rss_mb, peak_rss_mb

# Only the standard library at module level: the parent process must stay small, because a child
# started with vfork + exec inherits the parent's peak RSS as the floor of its own ru_maxrss.
# The processes doing the work import the heavy modules (import_work_modules, local imports).
if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from ml_platform.spec import UseCaseSpec

WORK_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench" / "ingest"  # inputs, warehouses
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

# Bad rows: a row whose hash % 1000 is below 5 gets the fault of that number (0.5% in all).
FAULTS = ("non_numeric_value", "value_out_of_range", "empty_sensor_id", "bad_timestamp", "duplicate_key")


def log(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


def import_work_modules() -> UseCaseSpec:
    """Import what either implementation uses, so both start the clock with the same baseline."""
    import duckdb  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import ml_platform.ingestion.pull  # noqa: F401  (load_raw_partitions imports it lazily)
    import ml_platform.ingestion.raw  # noqa: F401
    import ml_platform.resources.platform  # noqa: F401
    import ml_platform.validation.summary  # noqa: F401
    from ml_platform.usecases.sensor_anomaly import SPEC

    return SPEC


# --- input data --------------------------------------------------------------------------------


def data_file(label: str, fmt: str) -> Path:
    """One file per directory: the directory is the landing zone our path reads."""
    return WORK_DIR / DATA_VERSION / label / fmt / f"readings.{fmt}"


def faults_file(label: str) -> Path:
    return WORK_DIR / DATA_VERSION / label / "faults.json"


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


def generate(label: str, rows: int) -> None:
    """Write the CSV and Parquet inputs of one size and the count of each injected fault."""
    import duckdb

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
    faults_file(label).write_text(json.dumps(faults))


def ensure_data(label: str, rows: int) -> dict[str, int]:
    """The injected faults of one size; the inputs are generated (in a child process) unless cached."""
    if not (faults_file(label).exists() and all(data_file(label, fmt).exists() for fmt in FORMATS)):
        log(f"generating {rows:,} rows ({label}) under {faults_file(label).parent}")
        subprocess.run([sys.executable, __file__, "--generate", label, str(rows)], check=True)
    return json.loads(faults_file(label).read_text())


# --- ours --------------------------------------------------------------------------------------


@contextmanager
def phase(phases: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    phases[name] = round(time.perf_counter() - start, 3)


def run_ours(spec: UseCaseSpec, path: Path, warehouse: Path, wrap=None) -> dict[str, float]:
    """Our path; ``wrap`` may wrap the connection (the profile times each statement)."""
    import duckdb

    from ml_platform.ingestion.raw import load_raw_partitions
    from ml_platform.resources.platform import configure_connection
    from ml_platform.validation.summary import record_rejects, summarize, write_quarantine

    phases: dict[str, float] = {}
    conn = duckdb.connect(str(warehouse))
    configure_connection(conn, MEMORY_LIMIT)
    work = wrap(conn) if wrap else conn
    with phase(phases, "load_raw_partitions"):
        load_raw_partitions(work, spec, path.parent, FIRST_DAY, LAST_DAY)
    with phase(phases, "record_rejects"):
        record_rejects(work, spec, FIRST_DAY, LAST_DAY)
    with phase(phases, "summarize"):
        summarize(work, spec, FIRST_DAY, LAST_DAY)
    with phase(phases, "quarantine"):
        write_quarantine(work, spec, FIRST_DAY, LAST_DAY)
    with phase(phases, "close"):
        conn.close()
    return phases


def ours_quarantined(spec: UseCaseSpec, warehouse: Path) -> list[tuple[int, str]]:
    """(data row number from 1, reason) of every quarantined row, in row order."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        table = f"{spec.name}.readings_quarantine"
        return conn.sql(f"SELECT source_row, reject_reason FROM {table} ORDER BY 1").fetchall()


# --- pandas ------------------------------------------------------------------------------------


def read_text_frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    if path.suffix == ".csv":
        # keep_default_na=False: "nan" or "NA" stay text (a type error), as DuckDB reads them.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


def parse_columns(spec: UseCaseSpec, frame: pd.DataFrame) -> dict[str, pd.Series]:
    import pandas as pd

    parsed = {}
    for column in spec.columns:
        text = frame[column.name]
        if column.dtype == "timestamp":
            parsed[column.name] = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        elif column.dtype == "float":
            parsed[column.name] = pd.to_numeric(text, errors="coerce")
        else:
            parsed[column.name] = text
    return parsed


def rule_masks(
    spec: UseCaseSpec, frame: pd.DataFrame, parsed: dict[str, pd.Series]
) -> list[tuple[str, pd.Series]]:
    """The spec's row rules, in the order of ``validation.rules.row_rules`` (first broken wins)."""
    import numpy as np
    import pandas as pd

    absent = {c.name: frame[c.name].isna() | (frame[c.name].str.strip() == "") for c in spec.columns}
    rules = [(f"not_null:{c.name}", absent[c.name]) for c in spec.columns if c.required]
    for column in spec.columns:
        if column.dtype == "string":
            continue
        value = parsed[column.name]
        bad = value.isna() | (np.isinf(value) if column.dtype == "float" else False)
        rules.append((f"type:{column.name}", ~absent[column.name] & bad))
    for column in spec.numeric_columns:
        if column.min_value is None and column.max_value is None:
            continue
        value = parsed[column.name]
        low = value < column.min_value if column.min_value is not None else False
        high = value > column.max_value if column.max_value is not None else False
        rules.append((f"range:{column.name}", low | high))
    for column in spec.columns:
        if column.allowed_values:
            text = frame[column.name]
            rules.append((f"allowed:{column.name}", text.notna() & ~text.isin(column.allowed_values)))
    ts = parsed[spec.timestamp]
    expectations = spec.expectations
    floor = pd.Timestamp(expectations.timestamp_floor or spec.partitions_start, tz="UTC")
    rules.append((f"future:{spec.timestamp}", ts > pd.Timestamp.now(tz="UTC") + expectations.max_future))
    rules.append((f"too_old:{spec.timestamp}", ts < floor))
    return rules


def reject_reasons(spec: UseCaseSpec, frame: pd.DataFrame, parsed: dict[str, pd.Series]) -> pd.Series:
    """Each row's first broken rule, else "duplicate_key" for a passing row whose key came before."""
    import numpy as np
    import pandas as pd

    rules = rule_masks(spec, frame, parsed)
    reasons = pd.Series(
        np.select([mask.to_numpy() for _, mask in rules], [name for name, _ in rules], default=""),
        index=frame.index,
    )
    keys = pd.DataFrame({name: parsed[name] for name in spec.expectations.key})[reasons == ""]
    reasons.loc[keys.index[keys.duplicated(keep="first")]] = "duplicate_key"
    # An entity whose share of bad rows in a day is over the maximum is quarantined whole (a row
    # without a valid timestamp counts on the first day, as ours places it). One file per run: a
    # file's share per day is the day's share.
    day = parsed[spec.timestamp].dt.date
    day = day.fillna(day.dropna().min())
    entity = frame[spec.entity].fillna("").str.strip()
    bad = reasons != ""
    share = bad.groupby([day, entity]).transform("mean")
    isolated = ~bad & (entity != "") & (share > spec.expectations.max_bad_share)
    reasons.loc[isolated] = "bad_entity"
    return reasons


def persist(warehouse: Path, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None:
    import duckdb

    from ml_platform.resources.platform import configure_connection

    with duckdb.connect(str(warehouse)) as conn:
        configure_connection(conn, MEMORY_LIMIT)
        conn.register("clean_frame", clean)
        conn.register("quarantine_frame", quarantine)
        conn.sql("CREATE TABLE readings_clean AS SELECT * FROM clean_frame")
        conn.sql("CREATE TABLE readings_quarantine AS SELECT * FROM quarantine_frame")


def run_pandas(spec: UseCaseSpec, path: Path, warehouse: Path) -> dict[str, float]:
    import pandas as pd

    phases: dict[str, float] = {}
    with phase(phases, "read"):
        frame = read_text_frame(path)
    with phase(phases, "parse"):
        parsed = parse_columns(spec, frame)
    with phase(phases, "rules"):
        reasons = reject_reasons(spec, frame, parsed)
        bad = reasons != ""
        quarantine = frame[bad].assign(reject_reason=reasons[bad], source_row=frame.index[bad] + 1)
        clean = pd.DataFrame({name: values[~bad] for name, values in parsed.items()})
    with phase(phases, "persist"):
        persist(warehouse, clean, quarantine)
    return phases


def pandas_quarantined(spec: UseCaseSpec, warehouse: Path) -> list[tuple[int, str]]:
    """(data row number from 1, reason) of every quarantined row: the frame's index + 1, as ours
    numbers a file's data rows."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        query = "SELECT source_row, reject_reason FROM readings_quarantine ORDER BY 1"
        return conn.sql(query).fetchall()


# --- one measurement (child process) -----------------------------------------------------------


def child(implementation: str, path: Path) -> None:
    """Run one measurement in this process and print its result as one JSON line."""
    spec = import_work_modules()
    baseline = peak_rss_mb()
    runs_dir = WORK_DIR / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    run, quarantined = (
        (run_ours, ours_quarantined) if implementation == "ours" else (run_pandas, pandas_quarantined)
    )
    with tempfile.TemporaryDirectory(dir=runs_dir) as tmp:
        warehouse = Path(tmp) / "warehouse.duckdb"
        start, cpu_start = time.perf_counter(), cpu_seconds()
        phases = run(spec, path, warehouse)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        peak, own_peak = peak_rss_mb(), own_peak_rss_mb()
        rows = quarantined(spec, warehouse)
    result = {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "own_peak_rss_mb": own_peak}
    result |= {"baseline_rss_mb": baseline, "phases": phases, "quarantined": rows}
    print(json.dumps(result))


def measure(implementation: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", implementation, str(path)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(command)} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["peak_rss_mb"] > result["own_peak_rss_mb"] + 20:
        log(f"warning: ru_maxrss {result['peak_rss_mb']:.0f} MB includes memory the parent held")
    return result


# --- the benchmark (parent process) ------------------------------------------------------------


def check_agreement(
    fmt: str, label: str, attempt: int, results: dict[str, dict], faults: dict[str, int]
) -> None:
    """Both quarantined the same rows for the same rules, or the benchmark stops with the diff."""
    ours, peer = ({int(r): reason for r, reason in results[impl]["quarantined"]} for impl in IMPLEMENTATIONS)
    log(
        f"{fmt} {label} run {attempt + 1}: quarantined rows ours={len(ours):,} pandas={len(peer):,}"
        f" (injected {sum(faults.values()):,}: {faults})"
    )
    if ours == peer:
        return
    differing = sorted(r for r in ours.keys() | peer.keys() if ours.get(r) != peer.get(r))
    lines = [f"  row {r:>10}: ours={ours.get(r, '-'):<24} pandas={peer.get(r, '-')}" for r in differing[:20]]
    by_reason = Counter(ours.values()), Counter(peer.values())
    lines += [
        f"  {reason:<24} ours={by_reason[0].get(reason, 0):>9,} pandas={by_reason[1].get(reason, 0):>9,}"
        for reason in sorted(by_reason[0] | by_reason[1])
    ]
    raise SystemExit(
        f"ours and pandas quarantined different rows on {fmt} {label} (run {attempt + 1}): "
        f"{len(differing)} row(s) differ; the two no longer apply the same rules to the same rows.\n"
        + "\n".join(lines)
    )


def run_case(fmt: str, label: str, rows: int, repeats: int, faults: dict[str, int]) -> dict[str, list]:
    path = data_file(label, fmt)
    runs: dict[str, list[dict]] = {impl: [] for impl in IMPLEMENTATIONS}
    for attempt in range(repeats):
        for impl in IMPLEMENTATIONS:  # interleaved, so machine noise hits both alike
            result = measure(impl, path)
            runs[impl].append(result)
            log(
                f"{fmt} {label} {impl:<6} run {attempt + 1}/{repeats}: {result['seconds']:.2f} s"
                f" (cpu {result['cpu_seconds']:.2f} s),"
                f" {rows / result['seconds']:,.0f} rows/s, peak {result['peak_rss_mb']:.0f} MB"
                f" (after imports {result['baseline_rss_mb']:.0f} MB), phases {result['phases']}"
            )
        check_agreement(fmt, label, attempt, {impl: runs[impl][attempt] for impl in IMPLEMENTATIONS}, faults)
        for impl in IMPLEMENTATIONS:
            runs[impl][attempt].pop("quarantined")  # compared; not kept for the figures
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
    rows_target = ROWS_PER_S_TARGET if at_target else None
    rows_met = speed["ours"] / speed["pandas"] >= ROWS_PER_S_TARGET if at_target else None
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
            runs = run_case(fmt, label, rows, repeats, faults[label])
            lines += figures(fmt, label, rows, runs, quick)
    for line in lines:
        print(json.dumps(line))


# --- profile: where our path spends time and memory --------------------------------------------


class TimedRelation:
    """A relation whose fetches add their time to the statement that made it."""

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

    def timed(self, text: str, function):
        """``function`` with its calls listed as statements (e.g. the file hash, in Python)."""

        def call(*args, **kwargs):
            entry = [text, 0.0, 0.0]
            self.entries.append(entry)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                entry[1], entry[2] = time.perf_counter() - start, peak_rss_mb()

        return call

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def profile(fmt: str, label: str) -> None:
    """Run ours once in this process; list its statements taking >= 50 ms, with the peak RSS after."""
    ensure_data(label, (FULL_SIZES | QUICK_SIZES)[label])
    spec = import_work_modules()
    import ml_platform.ingestion.raw as raw

    hashed = raw.file_sha256
    wrappers: list[TimedConnection] = []

    def wrap(conn):
        wrappers.append(TimedConnection(conn))
        raw.file_sha256 = wrappers[-1].timed("python: file_sha256", hashed)
        return wrappers[-1]

    log(f"profiling ours on {fmt} {label}; peak RSS after imports {peak_rss_mb():.0f} MB")
    runs_dir = WORK_DIR / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs_dir) as tmp:
        start = time.perf_counter()
        phases = run_ours(spec, data_file(label, fmt), Path(tmp) / "warehouse.duckdb", wrap)
        total = time.perf_counter() - start
    raw.file_sha256 = hashed
    log(f"total {total:.2f} s, phases {phases}, peak RSS {peak_rss_mb():.0f} MB")
    for number, (text, seconds, rss) in enumerate(wrappers[-1].entries, 1):
        if seconds >= 0.05:
            log(f"  #{number:<3} {seconds:7.2f} s  peak {rss:6.0f} MB  {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k and 300k rows, one run each")
    parser.add_argument("--profile", nargs=2, metavar=("FORMAT", "SIZE"), help="profile ours on one input")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("SIZE", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
    elif args.generate:
        generate(args.generate[0], int(args.generate[1]))
    elif args.profile:
        profile(*args.profile)
    else:
        benchmark(args.quick)


if __name__ == "__main__":
    main()
