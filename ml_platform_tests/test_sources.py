"""Remote sources declared in a spec: a PostgreSQL table read day by day, a paged JSON API."""

import dataclasses
import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import dagster as dg
import psycopg
import pytest

from ml_platform.ingestion.assets import build_ingestion_assets
from ml_platform.resources.platform import build_resources
from ml_platform.spec import HttpJsonApi, PostgresTable
from ml_platform.usecases import get_use_case

from .conftest import FIRST_DAY, POSTGRES_ADMIN_DSN, USE_CASE, day_range_tags, make_platform

DSN = POSTGRES_ADMIN_DSN  # the source table lives in the local server's `test` database
SECOND_DAY = FIRST_DAY + dt.timedelta(days=1)


def readings(day: dt.date, sensors: int = 3, per_sensor: int = 4) -> list[dict]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return [
        {
            "sensor_id": f"s-{s}",
            "timestamp": start + dt.timedelta(hours=5 * i),
            "value": 40.0 + s + i / 10,
        }
        for s in range(1, sensors + 1)
        for i in range(per_sensor)
    ]


def ingest_with(tmp_path, source, first, last):
    """Materialize raw_readings + quarantine of a sensor_anomaly spec whose only source is ``source``."""
    spec = dataclasses.replace(get_use_case(USE_CASE), sources=(source,))
    platform = make_platform(tmp_path / "home")
    result = dg.materialize(
        build_ingestion_assets(spec),
        instance=platform.instance,
        resources=build_resources(platform.settings),
        tags=day_range_tags(first, last),
    )
    return platform, result


def _rows(platform, sql):
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(sql).fetchall()


@pytest.fixture
def pg_table(monkeypatch):
    name = f"readings_{uuid.uuid4().hex[:10]}"  # earlier runs may have left tables behind
    monkeypatch.setenv("ML_PLATFORM_POSTGRES_DSN", DSN)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE {name} (sensor_id text, "timestamp" timestamptz, value double precision)')
        yield name, conn
        conn.execute(f"DROP TABLE {name}")


def _insert(conn, table, rows):
    with conn.cursor() as cursor:
        cursor.executemany(
            f'INSERT INTO {table} (sensor_id, "timestamp", value) VALUES (%s, %s, %s)',
            [(r["sensor_id"], r["timestamp"], r["value"]) for r in rows],
        )


def test_postgres_table_is_read_day_by_day(tmp_path, pg_table):
    table, conn = pg_table
    _insert(conn, table, readings(FIRST_DAY) + readings(SECOND_DAY))
    source = PostgresTable(table=table, timestamp_column="timestamp")

    platform, result = ingest_with(tmp_path, source, SECOND_DAY, SECOND_DAY)
    assert result.success
    loaded = _rows(
        platform,
        f"SELECT partition_date, source_file, count(*) FROM {USE_CASE}.raw_readings GROUP BY ALL",
    )
    assert loaded == [(SECOND_DAY, f"postgresql:{table}", 12)]  # only the window of the run

    # A late row for the first day lands in that day when the day is loaded again.
    late = readings(FIRST_DAY, sensors=1, per_sensor=1)
    late[0]["sensor_id"] = "s-late"
    _insert(conn, table, late)
    result = dg.materialize(
        build_ingestion_assets(dataclasses.replace(get_use_case(USE_CASE), sources=(source,))),
        instance=platform.instance,
        resources=build_resources(platform.settings),
        partition_key=FIRST_DAY.isoformat(),
    )
    counts = dict(_rows(platform, f"SELECT partition_date, count(*) FROM {USE_CASE}.raw_readings GROUP BY 1"))
    assert counts == {FIRST_DAY: 13, SECOND_DAY: 12}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert all(checks.values()), checks


def test_unreachable_postgres_fails_with_a_message_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_POSTGRES_DSN", "host=127.0.0.1 port=1 dbname=test user=postgres")
    with pytest.raises(Exception, match="postgresql:nowhere"):
        ingest_with(tmp_path, PostgresTable(table="nowhere", timestamp_column="ts"), FIRST_DAY, FIRST_DAY)


class _Api(BaseHTTPRequestHandler):
    records: list[dict] = []
    pages_served: list[int] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        start, end = dt.datetime.fromisoformat(query["start"]), dt.datetime.fromisoformat(query["end"])
        page, size = int(query["page"]), int(query["page_size"])
        window = [r for r in self.records if start <= dt.datetime.fromisoformat(r["timestamp"]) < end]
        items = window[(page - 1) * size : page * size]
        self.pages_served.append(page)
        body = json.dumps({"items": items}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.records = [
        {**r, "timestamp": r["timestamp"].isoformat()} for r in readings(FIRST_DAY) + readings(SECOND_DAY)
    ]
    _Api.pages_served = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/readings"
    server.shutdown()


def test_json_api_is_pulled_page_by_page(tmp_path, api):
    source = HttpJsonApi(url=api, page_size=5)
    platform, result = ingest_with(tmp_path, source, FIRST_DAY, SECOND_DAY)
    assert result.success
    rows = _rows(
        platform,
        f"""SELECT partition_date, count(*), min(source_row), max(source_row)
            FROM {USE_CASE}.raw_readings WHERE source_file = '{api}' GROUP BY 1 ORDER BY 1""",
    )
    assert rows == [(FIRST_DAY, 12, 1, 12), (SECOND_DAY, 12, 13, 24)]
    assert _Api.pages_served == [1, 2, 3, 4, 5]  # 24 records in pages of 5: the last is short
