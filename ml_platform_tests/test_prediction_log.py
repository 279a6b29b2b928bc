"""The prediction log on a real full disk (a small tmpfs): a record that cannot be written raises,
leaves no partial line, and writing resumes once there is space; shadow lines merge on read."""

from __future__ import annotations

from ml_platform.serving.log import SHADOW_OF, PredictionLogError, PredictionLogWriter, read_prediction_log

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
