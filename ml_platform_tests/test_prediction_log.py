"""The prediction log on a real full disk (a small tmpfs): a record that cannot be written raises,
leaves no partial line, and writing resumes once there is space; shadow lines merge on read. The
same log in PostgreSQL (the local server): a batch is logged whole or not at all, a dropped
connection is opened again, and a database that does not answer is named without its password."""

from __future__ import annotations

import psycopg
import pytest

from ml_platform.serving.log import (
    LOG_TABLE,
    SHADOW_OF,
    PostgresPredictionLog,
    PredictionLogError,
    PredictionLogWriter,
    read_postgres_prediction_log,
    read_prediction_log,
)

from .conftest import fresh_database
from .disks import fill, small_disk


def record(i: int) -> dict:
    return {"prediction_id": f"p{i}", "anomaly_score": i / 10, "features": {"value": float(i)}}


def test_a_full_disk_refuses_the_record_whole_and_writing_resumes_when_space_is_back(tmp_path):
    with small_disk(tmp_path / "log") as disk:
        writer = PredictionLogWriter(disk)
        writer.append("uc", [record(0)])
        filler = fill(disk)
        written, refused = 1, 0
        for i in range(1, 500):  # the last page of the log file has room for a few more
            try:
                writer.append("uc", [record(i), record(10_000 + i)])
                written += 2
            except PredictionLogError as exc:
                refused += 1
                assert "No space left on device" in str(exc) and str(disk) in str(exc)
        assert refused > 400
        logged = read_prediction_log(disk, "uc")
        assert len(logged) == written  # every line whole: none cut where the disk filled
        filler.unlink()
        writer.append("uc", [record(999)])
        assert [r["prediction_id"] for r in read_prediction_log(disk, "uc")][-1] == "p999"
        assert len(read_prediction_log(disk, "uc")) == written + 1
        writer.close()


def test_shadow_lines_merge_into_their_predictions(tmp_path):
    writer = PredictionLogWriter(tmp_path)
    writer.append("uc", [record(1), record(2)])
    writer.append("uc", [{SHADOW_OF: "p2", "shadow": {"model_version": "3", "anomaly_score": 0.5}}])
    logged = {r["prediction_id"]: r for r in read_prediction_log(tmp_path, "uc")}
    assert set(logged) == {"p1", "p2"}
    assert "shadow" not in logged["p1"] and logged["p2"]["shadow"] == {
        "model_version": "3",
        "anomaly_score": 0.5,
    }
    writer.close()


@pytest.fixture
def log_database():
    with fresh_database("prediction_log") as url:
        yield url.replace("postgresql+psycopg2://", "postgresql://")


def test_the_postgres_log_reads_back_what_was_logged_with_shadows_merged(log_database):
    log = PostgresPredictionLog(log_database)
    log.append("uc", [record(1), record(2)])
    log.append("other", [record(3)])
    # JSON in PostgreSQL has no NaN: a missing feature served as NaN is logged as null.
    log.append("uc", [{**record(5), "features": {"value": float("nan"), "other": [float("inf"), 1.5]}}])
    log.append(
        "uc", [{SHADOW_OF: "p2", "shadow": {"model_version": "3", "anomaly_score": 0.123456789012345}}]
    )
    log.close()
    logged = read_postgres_prediction_log(log_database, "uc")
    assert [r["prediction_id"] for r in logged] == ["p1", "p2", "p5"]
    assert logged[0] == record(1)  # every value as it was logged, floats to the last bit
    assert logged[1]["shadow"] == {"model_version": "3", "anomaly_score": 0.123456789012345}
    assert logged[2]["features"] == {"value": None, "other": [None, 1.5]}
    assert [r["prediction_id"] for r in read_postgres_prediction_log(log_database, "other")] == ["p3"]


def test_a_batch_the_database_refuses_is_logged_not_at_all_and_the_next_one_is(log_database):
    log = PostgresPredictionLog(log_database)
    log.append("uc", [record(1)])
    # PostgreSQL's JSON cannot hold a NUL character: the second record fails, so the first goes too.
    with pytest.raises(PredictionLogError, match="prediction log postgresql://postgres@127.0.0.1"):
        log.append("uc", [record(2), {**record(3), "entity": "a\x00b"}])
    log.append("uc", [record(4)])
    log.close()
    assert [r["prediction_id"] for r in read_postgres_prediction_log(log_database, "uc")] == ["p1", "p4"]


def test_a_dropped_connection_is_opened_again_and_nothing_is_lost(log_database):
    log = PostgresPredictionLog(log_database)
    log.append("uc", [record(1)])
    with psycopg.connect(log_database, autocommit=True) as admin:
        (ended,) = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended == 1  # the log's own connection, gone
    log.append("uc", [record(2)])
    log.close()
    assert [r["prediction_id"] for r in read_postgres_prediction_log(log_database, "uc")] == ["p1", "p2"]
    with psycopg.connect(log_database) as conn:
        assert conn.execute(f"SELECT count(*) FROM {LOG_TABLE}").fetchone() == (2,)


def test_a_log_database_that_does_not_answer_is_named_without_its_password():
    url = "postgresql://logger:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(PredictionLogError) as refused:
        PostgresPredictionLog(url).append("uc", [record(1)])
    assert "prediction log postgresql://logger:***@127.0.0.1:1/nowhere" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    with pytest.raises(PredictionLogError, match="logger:\\*\\*\\*@"):
        read_postgres_prediction_log(url, "uc")
