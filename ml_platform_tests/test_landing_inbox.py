"""Events and labels posted to replicas without the home's filesystem: with the prediction log in
PostgreSQL, a post is held as rows of the landing inbox (nothing is written under the home), and
the landing sensor lands them as files before it looks at the landing zone, so they are ingested
like files landed by hand. A database that does not answer refuses the post and only delays the
sensor's delivery."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest

from ml_platform.features.online_store import make_online_store
from ml_platform.serving.events import EventIngestor
from ml_platform.serving.inbox import INBOX_TABLE, InboxError, PostgresInbox, deliver, landing_inbox
from ml_platform.serving.labels import LabelLanding
from ml_platform.usecases import use_cases

from .conftest import (
    FIRST_DAY,
    INGESTION,
    USE_CASE,
    fresh_database,
    keys,
    land_days,
    make_platform,
    requested_partitions,
)


@pytest.fixture(scope="module")
def inbox_url():
    with fresh_database("inbox") as url:
        yield url.replace("+psycopg2", "")


@pytest.fixture
def platform(tmp_path, inbox_url, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_PREDICTION_LOG_URL", inbox_url)
    return make_platform(tmp_path / "home")


def reading(sensor: str, minute: int) -> dict:
    moment = dt.datetime.combine(FIRST_DAY, dt.time(3, minute), tzinfo=dt.UTC)
    return {"sensor_id": sensor, "timestamp": moment.isoformat(), "value": 40.0 + minute}


def held(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT kind, name FROM {INBOX_TABLE} WHERE use_case = %s", [USE_CASE]
        ).fetchall()


def test_posts_wait_in_the_inbox_and_the_landing_sensor_lands_them_as_files(platform, inbox_url):
    settings = platform.settings
    spec = use_cases(settings)[USE_CASE]
    inbox = landing_inbox(settings)
    assert isinstance(inbox, PostgresInbox)
    events = EventIngestor(settings, spec, make_online_store(settings), inbox)
    first = [reading("inbox-1", 0), reading("inbox-2", 1)]
    assert events.ingest(first).accepted == 2
    assert events.ingest(reading("inbox-1", 2)).accepted == 1
    window = {
        "sensor_id": "inbox-1",
        "start": f"{FIRST_DAY}T03:00:00Z",
        "end": f"{FIRST_DAY}T03:05:00Z",
    }
    landed = LabelLanding(settings, spec, inbox).land(
        {"first_day": str(FIRST_DAY), "last_day": str(FIRST_DAY), "windows": [window]}
    )
    inbox.close()
    # Nothing under the home: three posts held in PostgreSQL.
    assert not settings.landing_dir_for(USE_CASE).exists()
    assert sorted(kind for kind, _ in held(inbox_url)) == ["events", "events", "labels"]

    requests, cursor = platform.run_requests(platform.sensor("landing_sensor"))
    assert held(inbox_url) == []
    (events_file,) = settings.landing_dir_for(USE_CASE).glob("events_*.jsonl")
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert lines == [*first, reading("inbox-1", 2)]  # both posts of the writer, in post order
    labels_file = settings.labels_dir_for(USE_CASE) / landed.file
    assert labels_file.read_text().splitlines() == [
        "sensor_id,start,end",
        f"inbox-1,{FIRST_DAY}T03:00:00Z,{FIRST_DAY}T03:05:00Z",
    ]
    # The tick that landed them asks for their day, as for files landed by hand.
    (ingest,) = [r for r in requests if set(r.asset_selection) == set(keys(*INGESTION))]
    assert requested_partitions(ingest) == (str(FIRST_DAY), str(FIRST_DAY))
    assert events_file.name in ingest.run_key
    (labels,) = [r for r in requests if set(r.asset_selection) == set(keys("raw_labels"))]
    assert landed.file in labels.run_key
    assert platform.materialize(["raw_readings", "readings_quarantine"], tags=ingest.tags).success
    with platform.defs.resources["warehouse"].get_connection() as conn:
        rows = conn.sql(
            f"SELECT sensor_id, count(*) FROM {USE_CASE}.raw_rows "
            "WHERE sensor_id LIKE 'inbox-%' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("inbox-1", 2), ("inbox-2", 1)]

    # A later post is a new file: a delivered one is never written again.
    before = events_file.read_bytes()
    events = EventIngestor(settings, spec, make_online_store(settings), landing_inbox(settings))
    events.ingest(reading("inbox-3", 4))
    [delivered] = deliver(settings, USE_CASE)
    assert delivered.path != events_file and delivered.rows == 1
    assert events_file.read_bytes() == before
    assert deliver(settings, USE_CASE) == []


def test_an_inbox_that_does_not_answer_refuses_the_post_and_delays_only_the_delivery(tmp_path, monkeypatch):
    down = "postgresql://inbox:s3cret@127.0.0.1:9/nowhere"
    monkeypatch.setenv("ML_PLATFORM_PREDICTION_LOG_URL", down)
    platform = make_platform(tmp_path / "home")
    spec = use_cases(platform.settings)[USE_CASE]
    events = EventIngestor(
        platform.settings, spec, make_online_store(platform.settings), landing_inbox(platform.settings)
    )
    with pytest.raises(InboxError) as refused:
        events.ingest(reading("inbox-1", 0))
    assert "landing inbox postgresql://inbox:***@127.0.0.1:9/nowhere" in refused.value.strerror
    assert "s3cret" not in str(refused.value)
    # The sensor still starts the ingestion of files landed by hand.
    land_days(platform, FIRST_DAY, 1)
    requests, _ = platform.run_requests(platform.sensor("landing_sensor"))
    assert any(set(r.asset_selection) == set(keys(*INGESTION)) for r in requests)


def test_a_stored_name_cannot_place_a_file_outside_its_folder(platform, inbox_url):
    settings = platform.settings
    inbox = landing_inbox(settings)
    inbox.put(USE_CASE, "labels", "../../escaped_labels.csv", b"sensor_id,start,end\n")
    inbox.put(USE_CASE, "events", "/tmp/.hidden_events", b"{}\n")
    inbox.close()
    delivered = deliver(settings, USE_CASE)
    folders = {settings.labels_dir_for(USE_CASE), settings.landing_dir_for(USE_CASE)}
    assert len(delivered) == 2
    for file in delivered:
        assert file.path.parent in folders and file.path.exists()
        assert "/" not in file.path.name and not file.path.name.startswith(".")
    assert not (settings.home / "escaped_labels.csv").exists()
    assert not list(settings.home.parent.glob("escaped_labels.csv"))
