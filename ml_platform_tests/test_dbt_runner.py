"""dbt in the calling process: a failed command says what dbt said and where its log is."""

from ml_platform.validation.dbt_runner import invoke_dbt


def test_a_model_dbt_cannot_parse_is_named_with_dbts_message_and_log(tmp_path):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: broken\nversion: '1.0'\nprofile: ml_platform\n")
    (project / "models" / "orders.sql").write_text("select {{ ref('orders' }} as x\n")  # ) missing
    target = tmp_path / "target"

    parse = invoke_dbt(["--quiet", "parse"], target, project_dir=project)

    assert parse.error is not None and parse.error.startswith("dbt parse failed: ")
    assert "orders" in parse.error and "Compilation Error" in parse.error
    assert f"dbt's full log: {target / 'dbt.log'}" in parse.error
    assert (target / "dbt.log").exists()
