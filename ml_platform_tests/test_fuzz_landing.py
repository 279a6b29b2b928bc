"""Fuzzing of landed files: whatever a CSV holds, ingestion never crashes, never loses a row and never
touches the file.

Hypothesis writes CSV files whose header is any arrangement of the spec's columns (some missing,
some unknown, some repeated) and whose cells are anything: valid values, values out of range or of
the wrong type, timestamps of many shapes and ages, empty cells, quotes, commas, newlines and
non-ASCII text; lines end in CRLF or LF, with empty lines among the rows, a byte order mark or
not, plain or gzip; some files are then damaged at the byte level (truncated, invalid UTF-8, a
NUL).
Each is landed alone and loaded into a fresh DuckDB over every partition the spec has, as a
partition run does. What must hold for every file:

* loading never raises: a file that cannot be read is rejected with a reason naming it, and
  nothing of it reaches the raw table;
* a well-formed file that has the required columns is loaded whole: one raw row per data row,
  each row either valid or with a reject reason (none silently dropped);
* the landed file's bytes are unchanged.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ml_platform.ingestion.landing import file_sha256
from ml_platform.ingestion.raw import load_raw_partitions, raw_table
from ml_platform.resources.platform import configure_connection
from ml_platform.usecases import get_use_case
from ml_platform.validation.summary import record_rejects, rejects_table

SPEC = get_use_case("sensor_anomaly")
FIRST = dt.date.fromisoformat(SPEC.partitions_start)
DAY = FIRST + dt.timedelta(days=40)

timestamps = st.one_of(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
        lambda t: t.isoformat()
    ),
    st.datetimes(min_value=dt.datetime(2024, 12, 1), max_value=dt.datetime(2025, 3, 1)).map(
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S")
    ),
    st.just(f"{DAY}T12:00:00Z"),
    st.sampled_from(["", "yesterday", "2025-02-30T00:00:00", "0", "NaN", "2025-01-05T25:00:00Z"]),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", "1e309", "-0", "1,5", " 3 ", "abc", "true", "NULL"]),
)
anything = st.text(max_size=20)


def cell(column: str):
    if column == SPEC.timestamp:
        return st.one_of(timestamps, anything)
    if column == SPEC.entity:
        return st.one_of(st.sampled_from(["s-1", "s-2", ""]), anything)
    return st.one_of(numbers, anything)


@st.composite
def csv_files(draw) -> tuple[bytes, str, bool]:
    """A landed file's bytes, its suffix (``.csv`` or ``.csv.gz``) and whether it was left well
    formed (not damaged after writing)."""
    known = [c.name for c in SPEC.columns]
    required = [c.name for c in SPEC.columns if c.required]
    anywhere = st.lists(
        st.one_of(st.sampled_from(known), st.sampled_from(["extra", "Value", ""])), max_size=7
    )
    # Mostly files with the required columns (in any order), so most examples reach the rows.
    header = draw(
        st.one_of(
            anywhere,
            st.tuples(
                st.permutations(required), st.lists(st.sampled_from(known[len(required) :]), max_size=2)
            ).map(lambda parts: [*parts[0], *parts[1]]),
        )
    )
    header = draw(st.permutations(header))
    rows = draw(st.lists(st.tuples(*(cell(name) for name in header)), max_size=12) if header else st.just([]))
    # RFC 4180 (CRLF; a CR or LF in a cell is quoted) or Unix lines (LF; no bare CR in a cell).
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    if newline == "\n":
        rows = [tuple(value.replace("\r", " ") for value in row) for row in rows]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    lines = text.getvalue().split(newline)
    for _ in range(draw(st.integers(0, 2))):  # empty lines among the rows (never before the header)
        lines.insert(draw(st.integers(1, len(lines))), "")
    data = newline.join(lines).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a byte order mark, as spreadsheet exports write it
    compressed = draw(st.booleans())
    if compressed:
        data = gzip.compress(data, mtime=0)
    damage = draw(st.sampled_from(["none", "none", "truncate", "invalid_utf8", "nul"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "invalid_utf8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe\x84" + data[at:]
    elif damage == "nul":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\x00" + data[at:]
    return data, ".csv.gz" if compressed else ".csv", damage == "none"


def _text(data: bytes, suffix: str) -> str:
    return (gzip.decompress(data) if suffix.endswith(".gz") else data).decode("utf-8-sig")


def _data_rows(text: str) -> int:
    return sum(1 for row in csv.reader(io.StringIO(text, newline="")) if row) - 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(csv_files())
def test_a_landed_csv_is_rejected_naming_it_or_loaded_whole_and_never_modified(tmp_path_factory, file):
    data, suffix, well_formed = file
    landing = tmp_path_factory.mktemp("landing")
    path = landing / f"readings_{DAY}{suffix}"
    path.write_bytes(data)
    sha = file_sha256(path)

    with duckdb.connect() as conn:
        configure_connection(conn, "256MB")
        load = load_raw_partitions(conn, SPEC, landing, FIRST, dt.datetime.now(dt.UTC).date())
        loaded = conn.sql(f"SELECT count(*) FROM {raw_table(SPEC)}").fetchall()[0][0]
        event("rejected" if load.rejected else f"loaded {'some' if loaded else 'no'} rows")
        if load.rejected:
            assert [r.path for r in load.rejected] == [str(path)]
            assert str(path) in load.rejected[0].reason
            assert loaded == 0
        else:
            assert (str(path) in load.files) == (loaded > 0)  # a header alone loads nothing
            record_rejects(conn, SPEC, FIRST, dt.datetime.now(dt.UTC).date())
            # Every raw row is either valid or rejected with one reason: none vanishes.
            unexplained = conn.sql(
                f"""SELECT count(*) FROM {rejects_table(SPEC)} j
                    ANTI JOIN {raw_table(SPEC)} r USING (partition_date, source_id, source_row)"""
            ).fetchall()[0][0]
            assert unexplained == 0
        required = {c.name for c in SPEC.columns if c.required}
        text = _text(data, suffix) if well_formed else ""
        header = next(csv.reader(io.StringIO(text, newline="")), [])
        distinct = len({name.lower() for name in header}) == len(header)  # SQL ignores case
        if well_formed and required <= set(header) and distinct and "" not in header:
            assert not load.rejected, (data, load.rejected)
            assert loaded == _data_rows(text)
    assert file_sha256(Path(path)) == sha and path.read_bytes() == data
