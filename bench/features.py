"""Benchmark: our batch feature build and online feature store against straightforward peers.

Batch. Input: generated readings (sensor_id string, timestamp datetime[us, UTC], value float64) of
1000 sensors at 1-minute intervals, in arrival order (minute by minute), cached as Parquet. Each
implementation reads that file and produces (sensor_id, event_timestamp, value_mean_12,
value_std_12, value_max_60) in (sensor_id, timestamp) order, with the semantics of
``ml_platform/features/definitions.py`` (a window of ``rows`` holds the current reading and the
``rows - 1`` before it; mean and max need one value, std (ddof=1) of fewer than two values is 0.0):

* ours: ``compute_features(pl.read_parquet(file), spec)`` with a spec whose features are exactly
  ``Rolling("value", "mean", rows=12)``, ``Rolling("value", "std", rows=12)`` and
  ``Rolling("value", "max", rows=60)``;
* pandas: ``read_parquet``, ``sort_values``, ``groupby("sensor_id")["value"].rolling(...)``;
* polars: the same features hand-written (lazy scan, sort, ``rolling_*(...).over("sensor_id")``);
* duckdb: SQL window functions ``OVER (PARTITION BY sensor_id ORDER BY timestamp ROWS ...)``,
  ``SET threads=2``, fetched as a polars frame.

Every run's output (first repetition) is compared with ours; a difference above 1e-9 fails the run.

Online. The real ``sensor_anomaly`` spec (12 features), 1000 entities holding 72 events each,
written with ``write_snapshot`` to ``SqliteOnlineStore`` (embedded) and ``RedisOnlineStore``; the
same vectors in a DuckDB table (one column per feature) are the peer. Timed, with
``time.perf_counter_ns`` after a warm-up: ``get`` of one random entity, ``get_many`` of 50, and an
online update (``store.update`` applying one new event with ``OnlineFeatures.apply``; the peer keeps
the state as JSON in a DuckDB table and runs the same updater in a transaction).

How: every (implementation x size) batch measurement runs in its own child process (this script
with ``--child``) with POLARS_MAX_THREADS=2, so its peak RSS (``ru_maxrss``) is its own; the
parent imports only the standard library (a child started by vfork + exec inherits the parent's
peak RSS). The clock starts after the imports and covers read + compute + the materialized result.
Runs are interleaved, repeated 3 times (once with ``--quick``), and the median is reported.

Output: progress on stderr; on stdout one JSON line per figure (``ratio`` is ours / peer_value,
``better`` says which direction wins). Inputs and outputs are kept under /tmp/ml_platform_bench.

    .venv/bin/python bench/features.py [--quick]
    .venv/bin/python bench/features.py --profile 10m   # where ours spends time and memory
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from _measure import cpu_seconds, own_peak_rss_mb, peak_rss_mb, run_child, significant

# Only the standard library at module level: the parent must stay small (see the docstring).
if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from ml_platform.spec import UseCaseSpec

BENCH_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench" / "features"
DATA_VERSION = "v1"  # bump when the generator changes, so cached inputs are regenerated
SENSORS = 1_000
SEED = 42
THREADS = 2
TOLERANCE = 1e-9

IMPLEMENTATIONS = ("ours", "pandas", "polars", "duckdb")
FAST_PEERS = ("polars", "duckdb")
FULL_SIZES = {"1m": 1_000_000, "10m": 10_000_000}
QUICK_SIZES = {"100k": 100_000, "300k": 300_000}
TARGET_SIZE = "10m"
SPEEDUP_TARGET = 1 / 6  # ours / pandas time at 10m: at least 6x faster
FASTEST_TARGET = 1.1  # ours / the faster of polars and duckdb at 10m
PEAK_MEM_TARGET_MB = 1500.0

USE_CASE = "sensor_anomaly"
REDIS_URL = "redis://127.0.0.1:6379/0"
ONLINE_ENTITIES = 1_000
ONLINE_EVENTS = 72  # the spec's longest row window: what a kept state holds
BATCH = 50
LOOKUP_TARGETS_MS = {"embedded": 1.0, "redis": 2.0}  # p99 of one-entity lookups
UPDATE_TARGET_MS = 100.0  # p99 of an online update ("within 100 ms")

FEATURE_COLUMNS = ("value_mean_12", "value_std_12", "value_max_60")
IMPORTS = {
    "ours": ("polars", "ml_platform.features.compute", "ml_platform.usecases"),
    "pandas": ("pandas", "pyarrow"),
    "polars": ("polars",),
    "duckdb": ("duckdb", "polars", "pyarrow"),
}


def log(message: str) -> None:
    print(f"[features] {message}", file=sys.stderr, flush=True)


# --- input data (child process) ----------------------------------------------------------------


def data_file(label: str) -> Path:
    return BENCH_DIR / DATA_VERSION / f"readings_{label}.parquet"


def output_file(label: str, implementation: str) -> Path:
    return BENCH_DIR / "outputs" / f"{label}_{implementation}.parquet"


def generate(label: str, rows: int) -> None:
    """Readings in arrival order: minute by minute, the sensors in a fresh random order each minute."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(SEED)
    minutes = np.arange(rows) // SENSORS
    sensors = np.argsort(rng.random((-(-rows // SENSORS), SENSORS)), axis=1).ravel()[:rows]
    start = np.datetime64("2026-01-01T00:00:00", "us")
    daily = np.sin(2 * np.pi * minutes / 1440.0 + sensors)
    frame = pl.DataFrame(
        {
            "sensor_id": pl.Series([f"sensor-{i:04d}" for i in range(SENSORS)]).gather(sensors),
            "timestamp": pl.Series(start + minutes * np.timedelta64(60, "s")).dt.replace_time_zone("UTC"),
            "value": 20.0 + 0.05 * sensors + 5.0 * daily + rng.normal(0.0, 1.0, rows),
        }
    )
    path = data_file(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def ensure_data(label: str, rows: int) -> Path:
    path = data_file(label)
    if not path.exists():
        log(f"generating {rows:,} readings ({label}) into {path}")
        subprocess.run([sys.executable, __file__, "--generate", label, str(rows)], check=True)
    return path


# --- the four implementations (child process) --------------------------------------------------


def bench_spec() -> UseCaseSpec:
    import dataclasses

    from ml_platform.features.definitions import Rolling
    from ml_platform.usecases import get_use_case

    spec = get_use_case(USE_CASE)
    features = (
        Rolling("value", "mean", rows=12),
        Rolling("value", "std", rows=12),
        Rolling("value", "max", rows=60),
    )
    return dataclasses.replace(spec, features=dataclasses.replace(spec.features, features=features))


def run_ours(path: Path) -> pl.DataFrame:
    import polars as pl

    from ml_platform.features.compute import compute_features

    return compute_features(pl.read_parquet(path), bench_spec())


def run_pandas(path: Path) -> pd.DataFrame:
    import pandas as pd

    frame = pd.read_parquet(path).sort_values(["sensor_id", "timestamp"], ignore_index=True)
    by_sensor = frame.groupby("sensor_id")["value"]

    def per_row(series: pd.Series) -> pd.Series:  # (sensor_id, row) index -> the frame's row index
        return series.reset_index(level=0, drop=True)

    return pd.DataFrame(
        {
            "sensor_id": frame["sensor_id"],
            "event_timestamp": frame["timestamp"],
            "value_mean_12": per_row(by_sensor.rolling(12, min_periods=1).mean()),
            "value_std_12": per_row(by_sensor.rolling(12, min_periods=2).std()).fillna(0.0),
            "value_max_60": per_row(by_sensor.rolling(60, min_periods=1).max()),
        }
    )


def run_polars(path: Path) -> pl.DataFrame:
    import polars as pl

    value = pl.col("value")
    return (
        pl.scan_parquet(path)
        .sort("sensor_id", "timestamp")
        .select(
            "sensor_id",
            pl.col("timestamp").alias("event_timestamp"),
            value.rolling_mean(12, min_samples=1).over("sensor_id").alias("value_mean_12"),
            value.rolling_std(12, min_samples=2).fill_null(0.0).over("sensor_id").alias("value_std_12"),
            value.rolling_max(60, min_samples=1).over("sensor_id").alias("value_max_60"),
        )
        .collect()
    )


DUCKDB_SQL = """
SELECT sensor_id, timestamp AS event_timestamp,
    avg(value) OVER last_12 AS value_mean_12,
    coalesce(stddev_samp(value) OVER last_12, 0.0) AS value_std_12,
    max(value) OVER last_60 AS value_max_60
FROM read_parquet(?)
WINDOW
    last_12 AS (PARTITION BY sensor_id ORDER BY timestamp ROWS BETWEEN 11 PRECEDING AND CURRENT ROW),
    last_60 AS (PARTITION BY sensor_id ORDER BY timestamp ROWS BETWEEN 59 PRECEDING AND CURRENT ROW)
ORDER BY sensor_id, timestamp
"""


def run_duckdb(path: Path) -> pl.DataFrame:
    import duckdb

    with duckdb.connect() as conn:
        conn.execute(f"SET threads={THREADS}")
        conn.execute("SET TimeZone='UTC'")
        return conn.sql(DUCKDB_SQL, params=[str(path)]).pl()


RUNS = {"ours": run_ours, "pandas": run_pandas, "polars": run_polars, "duckdb": run_duckdb}


def write_output(result: pl.DataFrame | pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(result, "write_parquet"):
        result.write_parquet(path)
    else:
        result.to_parquet(path, index=False)


def child(implementation: str, label: str, keep_output: bool) -> None:
    """One measurement in this process, printed as one JSON line."""
    for module in IMPORTS[implementation]:
        importlib.import_module(module)
    if implementation == "ours":
        bench_spec()  # the spec's modules are imported before the clock starts
    baseline = peak_rss_mb()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = RUNS[implementation](data_file(label))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    peak, own_peak = peak_rss_mb(), own_peak_rss_mb()
    if keep_output:
        write_output(result, output_file(label, implementation))
    summary = {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "own_peak_rss_mb": own_peak}
    print(json.dumps(summary | {"baseline_rss_mb": baseline, "rows": len(result)}))


# --- agreement (child process) -----------------------------------------------------------------


def read_output(label: str, implementation: str) -> pl.DataFrame:
    import polars as pl

    frame = pl.read_parquet(output_file(label, implementation))
    timestamp = pl.col("event_timestamp").cast(pl.Datetime("us", "UTC"))
    return frame.select(pl.col("sensor_id").cast(pl.String), timestamp, *FEATURE_COLUMNS)


def differences(ours: pl.DataFrame, other: pl.DataFrame) -> dict[str, object]:
    """Where ``other`` differs from ours: row count, keys, nulls, and each feature's largest gap."""
    if ours.height != other.height:
        return {"rows": [ours.height, other.height]}
    found: dict[str, object] = {}
    for key in ("sensor_id", "event_timestamp"):
        if not ours[key].equals(other[key]):
            found[key] = "differs"
    gaps = []
    for column in FEATURE_COLUMNS:
        a, b = ours[column], other[column].fill_nan(None)
        if not a.is_null().equals(b.is_null()):
            found[f"{column} nulls"] = [a.null_count(), b.null_count()]
        gaps.append((a - b).abs().max() or 0.0)
        if gaps[-1] > TOLERANCE:
            found[column] = gaps[-1]
    return found | {"max_gap": max(gaps)}


def compare(label: str) -> None:
    ours = read_output(label, "ours")
    report = {impl: differences(ours, read_output(label, impl)) for impl in IMPLEMENTATIONS[1:]}
    print(json.dumps(report))


# --- online lookups and updates (child process) ------------------------------------------------


def percentiles_ms(samples_ns: list[int]) -> dict[str, float]:
    import numpy as np

    p50, p99 = np.percentile(np.asarray(samples_ns, dtype=np.float64), [50, 99]) / 1e6
    return {"p50": float(p50), "p99": float(p99)}


def timed(call, arguments: list, warmup: int) -> dict[str, float]:
    """p50 and p99 in ms of ``call(argument)`` over ``arguments`` after ``warmup`` untimed calls."""
    for argument in arguments[:warmup]:
        call(argument)
    samples = []
    for argument in arguments:
        start = time.perf_counter_ns()
        call(argument)
        samples.append(time.perf_counter_ns() - start)
    return percentiles_ms(samples)


class OnlineData:
    """1000 entity states of the real spec (72 events each) and a stream of new events."""

    def __init__(self, calls: int) -> None:
        import datetime as dt

        import numpy as np

        from ml_platform.features.online import OnlineFeatures
        from ml_platform.usecases import get_use_case

        self.spec = get_use_case(USE_CASE)
        self.online = OnlineFeatures(self.spec)
        self.rng = np.random.default_rng(SEED)
        self.start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.entities = [f"sensor-{i:04d}" for i in range(ONLINE_ENTITIES)]
        times = [self.start + dt.timedelta(minutes=m) for m in range(ONLINE_EVENTS)]
        self.states = {
            e: self.online.state_from_events(times, self.events(ONLINE_EVENTS)) for e in self.entities
        }
        self.names = self.spec.features.feature_names()
        self.singles = list(self.rng.choice(self.entities, size=calls))
        self.batches = [list(self.rng.choice(self.entities, size=BATCH, replace=False)) for _ in range(calls)]

    def events(self, count: int) -> list[dict[str, float]]:
        values = self.rng.normal([50.0, 40.0, 1.0], [5.0, 2.0, 0.3], size=(count, 3))
        return [{"value": v, "temperature": t, "vibration": max(b, 0.0)} for v, t, b in values.tolist()]

    def stream(self, count: int) -> list[tuple[str, object, dict[str, float]]]:
        """``count`` new events of random entities, each a minute after that entity's newest."""
        import datetime as dt

        newest = {e: ONLINE_EVENTS - 1 for e in self.entities}
        stream = []
        for entity, values in zip(
            self.rng.choice(self.entities, size=count), self.events(count), strict=True
        ):
            newest[entity] += 1
            stream.append((entity, self.start + dt.timedelta(minutes=newest[entity]), values))
        return stream


class DuckDBPeer:
    """The naive peer: the vectors in a DuckDB table, one column per feature; states as JSON rows."""

    def __init__(self, path: Path, data: OnlineData) -> None:
        import duckdb
        import polars as pl

        self.names, self.online = data.names, data.online
        self.conn = duckdb.connect(str(path))
        self.conn.execute(f"SET threads={THREADS}")
        columns = ", ".join(f'"{n}" DOUBLE' for n in self.names)
        self.conn.execute(
            f"CREATE TABLE features (sensor_id VARCHAR PRIMARY KEY, event_timestamp BIGINT, {columns})"
        )
        self.conn.execute("CREATE TABLE states (sensor_id VARCHAR PRIMARY KEY, state VARCHAR)")
        vectors = [
            {"sensor_id": e, "event_timestamp": s.times[-1]} | s.vector for e, s in data.states.items()
        ]
        states = {"sensor_id": list(data.states), "state": [self.dump(s) for s in data.states.values()]}
        self.conn.register("vector_frame", pl.DataFrame(vectors))
        self.conn.register("state_frame", pl.DataFrame(states))
        self.conn.execute("INSERT INTO features SELECT * FROM vector_frame")
        self.conn.execute("INSERT INTO states SELECT * FROM state_frame")
        self.conn.unregister("vector_frame")
        self.conn.unregister("state_frame")

    @staticmethod
    def dump(state) -> str:
        return json.dumps(state.to_json())

    def vector(self, row: tuple) -> dict[str, float | None]:
        return dict(zip(self.names, row[2:], strict=True))

    def get(self, entity: str) -> dict[str, float | None] | None:
        row = self.conn.execute("SELECT * FROM features WHERE sensor_id = ?", [entity]).fetchone()
        return self.vector(row) if row else None

    def get_many(self, entities: list[str]) -> list[dict[str, float | None] | None]:
        marks = ",".join("?" * len(entities))
        rows = self.conn.execute(f"SELECT * FROM features WHERE sensor_id IN ({marks})", entities).fetchall()
        found = {row[0]: self.vector(row) for row in rows}
        return [found.get(e) for e in entities]

    def update(self, entity: str, timestamp, values: dict[str, float]) -> None:
        from ml_platform.features.online import EntityState

        self.conn.execute("BEGIN")
        row = self.conn.execute("SELECT state FROM states WHERE sensor_id = ?", [entity]).fetchone()
        state, changed = self.online.apply(EntityState.from_json(json.loads(row[0])), timestamp, values)
        if changed:
            self.conn.execute("UPDATE states SET state = ? WHERE sensor_id = ?", [self.dump(state), entity])
            vector = [state.times[-1], *(state.vector[n] for n in self.names)]
            assignments = ", ".join(f'"{n}" = ?' for n in ["event_timestamp", *self.names])
            self.conn.execute(f"UPDATE features SET {assignments} WHERE sensor_id = ?", [*vector, entity])
        self.conn.execute("COMMIT")


def same(a: float | None, b: float | None) -> bool:
    return a is None and b is None or a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)


def check_same_vectors(stores: dict, peer: DuckDBPeer, data: OnlineData) -> None:
    for entity in data.entities[:20]:
        expected = data.states[entity].vector
        got = {name: store.get(USE_CASE, entity).features for name, store in stores.items()}
        got["duckdb"] = peer.get(entity)
        for name, vector in got.items():
            if vector.keys() != expected.keys() or not all(same(vector[k], expected[k]) for k in expected):
                raise SystemExit(f"online store {name} returned {vector} for {entity}, expected {expected}")


def lookups(store_get, store_get_many, data: OnlineData, warmup: int) -> dict[str, dict[str, float]]:
    return {
        "1": timed(store_get, data.singles, warmup),
        str(BATCH): timed(store_get_many, data.batches, warmup),
    }


def online_child(calls: int) -> None:
    """Lookup and update latencies of both backends and the DuckDB peer, printed as one JSON line."""
    import redis

    from ml_platform.features.online_store import RedisOnlineStore, SqliteOnlineStore

    data = OnlineData(calls)
    warmup = max(calls // 10, 100)
    namespace = f"mlp-bench-{uuid.uuid4().hex}"
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        stores = {
            "embedded": SqliteOnlineStore(Path(tmp) / "online.sqlite"),
            "redis": RedisOnlineStore(REDIS_URL, namespace),
        }
        peer = DuckDBPeer(Path(tmp) / "online.duckdb", data)
        try:
            for store in stores.values():
                store.write_snapshot(USE_CASE, data.states)
            check_same_vectors(stores, peer, data)
            for name, store in stores.items():
                result[name] = lookups(
                    lambda e, s=store: s.get(USE_CASE, e),
                    lambda es, s=store: s.get_many(USE_CASE, es),
                    data,
                    warmup,
                )
                log(f"online lookups {name}: {result[name]}")
            result["duckdb"] = lookups(peer.get, peer.get_many, data, warmup)
            log(f"online lookups duckdb: {result['duckdb']}")
            stream = data.stream(calls + warmup)
            for name, store in stores.items():
                result[name]["update"] = timed(
                    lambda event, s=store: s.update(
                        USE_CASE, event[0], lambda state: data.online.apply(state, event[1], event[2])
                    ),
                    stream,
                    warmup,
                )
                log(f"online update {name}: {result[name]['update']}")
            result["duckdb"]["update"] = timed(lambda event: peer.update(*event), stream, warmup)
            log(f"online update duckdb: {result['duckdb']['update']}")
        finally:
            peer.conn.close()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{namespace}:*"))
            if keys:
                client.delete(*keys)
    print(json.dumps(result))


# --- the benchmark (parent process) ------------------------------------------------------------


def check_agreement(label: str) -> None:
    report = run_child(__file__, THREADS, "--compare", label)
    log(
        f"{label}: largest difference from ours per implementation: "
        + str({i: r["max_gap"] for i, r in report.items()})
    )
    wrong = {impl: {k: v for k, v in r.items() if k != "max_gap"} for impl, r in report.items()}
    wrong = {impl: found for impl, found in wrong.items() if found}
    if wrong:
        raise SystemExit(f"{label}: implementations disagree with ours beyond {TOLERANCE}: {wrong}")


def run_size(label: str, rows: int, repeats: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {impl: [] for impl in IMPLEMENTATIONS}
    for attempt in range(repeats):
        for impl in IMPLEMENTATIONS:  # interleaved, so machine noise hits all alike
            args = ["--child", impl, label] + (["--keep-output"] if attempt == 0 else [])
            result = run_child(__file__, THREADS, *args)
            if result["rows"] != rows:
                raise SystemExit(f"{impl} {label} produced {result['rows']:,} rows, expected {rows:,}")
            if result["peak_rss_mb"] > result["own_peak_rss_mb"] + 20:
                log(f"warning: ru_maxrss {result['peak_rss_mb']:.0f} MB includes memory the parent held")
            runs[impl].append(result)
            log(
                f"{label} {impl:<6} run {attempt + 1}/{repeats}: {result['seconds']:.2f} s"
                f" (cpu {result['cpu_seconds']:.2f} s), peak {result['peak_rss_mb']:.0f} MB"
                f" (after imports {result['baseline_rss_mb']:.0f} MB)"
            )
        if attempt == 0:
            check_agreement(label)
    return runs


def figure(name: str, ours: float, peer: str, peer_value: float, better: str, target=None, **extra) -> dict:
    met = None
    if target is not None:
        measured = ours if extra.get("target_kind", "").startswith("absolute") else ours / peer_value
        met = measured <= target if better == "lower" else measured >= target
    line = {
        "bench": "features",
        "figure": name,
        "ours": significant(ours),
        "peer": peer,
        "peer_value": significant(peer_value),
        "ratio": significant(ours / peer_value),
        "better": better,
        "target": significant(target),
        "met": met,
    }
    return line | extra


def batch_figures(label: str, runs: dict[str, list[dict]], at_target: bool) -> list[dict]:
    seconds = {impl: statistics.median(r["seconds"] for r in runs[impl]) for impl in IMPLEMENTATIONS}
    memory = {impl: statistics.median(r["peak_rss_mb"] for r in runs[impl]) for impl in IMPLEMENTATIONS}
    fastest = min(FAST_PEERS, key=seconds.get)
    speedup, vs_fastest = (SPEEDUP_TARGET, FASTEST_TARGET) if at_target else (None, None)
    memory_target = {"target": PEAK_MEM_TARGET_MB, "target_kind": "absolute_mb"} if at_target else {}
    return [
        figure(f"time_s_{label}", seconds["ours"], "pandas", seconds["pandas"], "lower", speedup),
        figure(f"time_s_{label}_vs_fastest", seconds["ours"], fastest, seconds[fastest], "lower", vs_fastest),
        figure(f"peak_mem_mb_{label}", memory["ours"], "pandas", memory["pandas"], "lower", **memory_target),
    ]


def online_figures(result: dict[str, dict], with_targets: bool) -> list[dict]:
    lines = []
    peer = result["duckdb"]
    for backend in ("embedded", "redis"):
        for size in ("1", str(BATCH)):
            for stat in ("p50", "p99"):
                target = LOOKUP_TARGETS_MS[backend] if with_targets and (size, stat) == ("1", "p99") else None
                extra = {"target_kind": "absolute_ms"} if target is not None else {}
                ours, theirs = result[backend][size][stat], peer[size][stat]
                name = f"lookup_{stat}_ms_{size}_{backend}"
                lines.append(figure(name, ours, "duckdb", theirs, "lower", target, **extra))
    for backend in ("embedded", "redis"):
        for stat in ("p50", "p99"):
            target = UPDATE_TARGET_MS if with_targets and stat == "p99" else None
            extra = {"target_kind": "absolute_ms"} if target is not None else {}
            ours, theirs = result[backend]["update"][stat], peer["update"][stat]
            lines.append(
                figure(f"online_update_{stat}_ms_{backend}", ours, "duckdb", theirs, "lower", target, **extra)
            )
    return lines


def benchmark(quick: bool) -> None:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 1 if quick else 3
    for label, rows in sizes.items():
        ensure_data(label, rows)
    lines = []
    for label, rows in sizes.items():
        runs = run_size(label, rows, repeats)
        lines += batch_figures(label, runs, at_target=label == TARGET_SIZE and not quick)
    log("online lookups and updates")
    lines += online_figures(
        run_child(__file__, THREADS, "--online", str(1_000 if quick else 5_000)), with_targets=not quick
    )
    for line in lines:
        print(json.dumps(line))


# --- profile: where ours spends time and memory ------------------------------------------------


def stable_two_pass_sort(readings: pl.DataFrame, entity: str, ts: str) -> pl.DataFrame:
    """A candidate for ``compute_features``' sort: by time, then stably by the entity's lexical code."""
    import polars as pl

    names = readings[entity].unique().drop_nulls().sort()
    by_time = readings.sort(ts)
    return by_time.sort(pl.col(entity).cast(pl.Enum(names)), maintain_order=True)


def profile(label: str) -> None:
    """Ours step by step in this process (read, sort, each feature alone, all), with peak RSS after,
    and a candidate sort that gives the same order."""
    os.environ.setdefault("POLARS_MAX_THREADS", str(THREADS))
    import polars as pl

    from ml_platform.features.compute import compute_features

    spec = bench_spec()
    entity, ts = spec.entity, spec.timestamp
    path = ensure_data(label, (FULL_SIZES | QUICK_SIZES)[label])
    steps = []

    def step(name: str, function):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        value = function()
        steps.append((name, time.perf_counter() - start, cpu_seconds() - cpu_start, peak_rss_mb()))
        return value

    readings = step("read_parquet", lambda: pl.read_parquet(path))
    ordered = step(f"sort({entity}, {ts})", lambda: readings.sort(entity, ts))
    for feature in spec.features.features:
        step(f"select {feature.name}", lambda f=feature: ordered.select(f.polars(entity, ts)))
    step("compute_features (all)", lambda: compute_features(readings, spec))
    candidate = step("candidate: stable_two_pass_sort", lambda: stable_two_pass_sort(readings, entity, ts))
    if not candidate.equals(ordered):
        raise SystemExit("stable_two_pass_sort gives another order than sort(entity, ts)")
    log(f"profile of ours on {label} ({os.environ['POLARS_MAX_THREADS']} polars threads)")
    for name, seconds, cpu, rss in steps:
        log(f"  {seconds:7.2f} s  cpu {cpu:6.2f} s  peak {rss:6.0f} MB  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k and 300k rows, one run each")
    parser.add_argument("--profile", metavar="SIZE", help="profile ours on one input size")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--keep-output", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare", metavar="SIZE", help=argparse.SUPPRESS)
    parser.add_argument("--online", metavar="CALLS", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("SIZE", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, keep_output=args.keep_output)
    elif args.compare:
        compare(args.compare)
    elif args.online:
        online_child(args.online)
    elif args.generate:
        generate(args.generate[0], int(args.generate[1]))
    elif args.profile:
        profile(args.profile)
    else:
        benchmark(args.quick)


if __name__ == "__main__":
    main()
