# ruff: noqa: E501  (log lines as Dagster writes them)
"""``make demo``'s steps: numbered, their progress counted from Dagster's own log, and a failing step
reported by its own error and where its full log is (not only "failed")."""

import threading

import pytest

from ml_platform.demo import Steps, failure_summary, materializations
from ml_platform.home import child_env, prepare_home
from ml_platform.settings import load_settings

# Lines as `dagster asset materialize` writes them (from a real run; run ids shortened).
LOG = """\
2026-12-04 22:24:56 +0000 - dagster - DEBUG - __ASSET_JOB - b70e19b7 - 5110 - a__raw - ASSET_MATERIALIZATION - Materialized value a/raw.
2026-12-04 22:24:56 +0000 - dagster - DEBUG - __ASSET_JOB - b70e19b7 - 5110 - a__raw - STEP_SUCCESS - Finished execution of step "a__raw" in 0.1s.
2026-12-04 22:24:56 +0000 - dagster - ERROR - __ASSET_JOB - b70e19b7 - 5110 - a__features - STEP_FAILURE - Execution of step "a__features" failed.

dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "a__features"::

_duckdb.CatalogException: Catalog Error: Table with name "a.stg" does not exist!

Stack Trace:
  File "/x/dagster/_core/execution/plan/utils.py", line 57, in op_execution_error_boundary
2026-12-04 22:24:56 +0000 - dagster - ERROR - __ASSET_JOB - b70e19b7 - 5110 - RUN_FAILURE - Execution of run for "__ASSET_JOB" failed.
"""


def test_the_failing_steps_innermost_error_is_what_is_shown():
    assert failure_summary(LOG) == (
        'step a__features failed: CatalogException: Catalog Error: Table with name "a.stg" does not exist!'
    )
    assert materializations(LOG) == 1
    assert failure_summary("loading...\nError: Materialization failed.\n") == (
        "loading... / Error: Materialization failed."
    )


@pytest.mark.integration
def test_a_step_that_fails_says_why_and_where_its_log_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "home"))
    settings = load_settings()
    prepare_home(settings)
    steps = Steps(total=2, log_dir=tmp_path / "logs", stop=threading.Event())
    steps.log_dir.mkdir()
    with pytest.raises(RuntimeError) as failed:
        steps.materialize(
            child_env(settings), ["sensor_anomaly"], ["features"], 1, ["--partition", "2026-12-01"]
        )
    message = str(failed.value)
    assert message.startswith(
        "step sensor_anomaly__features failed: Failure: sensor_anomaly/features needs "
        "sensor_anomaly/stg_readings for 2026-12-01, never materialized; build it first:"
    )
    assert message.endswith(f"(full log: {steps.log_dir / 'materialize.log'})")
    printed = capsys.readouterr().out
    assert printed.startswith("[1/2] materializing features of sensor_anomaly --partition 2026-12-01\n")
    assert steps.done == 1
