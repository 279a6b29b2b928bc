"""``make demo``: one command from a fresh clone to a served champion, and a clean stop on Ctrl-C.

Every process is started in its own session and recorded, so stopping ends exactly the
processes this demo started (by their ids) and leaves no port bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ml_platform.home import child_env, prepare_home
from ml_platform.settings import REPO_ROOT, Settings

TRAIN_AND_SERVE = [
    "online_features",
    "training_set",
    "model",
    "model_evaluation",
    "champion",
    "deployment",
]
MONITOR = ["predictions", "drift_report"]


def _keys(use_cases: list[str], names: list[str]) -> str:
    return ",".join(f"{use_case}/{n}" for use_case in use_cases for n in names)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str]
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops children in order
            )
        self.children[name] = process
        print(f"  started {name} (pid {process.pid}, log {self.log_dir / (name + '.log')})")
        return process

    def dead(self) -> list[str]:
        return [name for name, p in self.children.items() if p.poll() is not None]

    def stop_all(self, grace_s: float = 8) -> None:
        """Tell every child at once (SIGTERM to the session we created for it, no other), give them
        ``grace_s`` together to stop, then end what is left of each session by its id."""
        running = {name: p for name, p in self.children.items() if p.poll() is None}
        for name, process in reversed(list(running.items())):
            print(f"  stopping {name} (pid {process.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, process in running.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} still running after {grace_s:.0f} s: ending it")
            # Children of the child (workers) that outlived it are in the same session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_http(url: str, timeout_s: float, stop: threading.Event) -> bool:
    """Until ``url`` answers 200: the proxy listens (and answers 404) before the app is deployed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    if stop.is_set():
        raise Stopped
    return False


class Stopped(Exception):
    """Ctrl-C (or SIGTERM) arrived while a step was running."""


def failure_summary(log_text: str) -> str:
    """The failing step's own error in a ``dagster asset materialize`` log: the step and the
    innermost exception line before its stack trace (else the log's last lines)."""
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if " - STEP_FAILURE - " not in line:
            continue
        step = line.split(" - STEP_FAILURE - ")[0].rsplit(" - ", 1)[-1]
        block = []
        for later in lines[i + 1 :]:
            if later.startswith("Stack Trace:") or " - dagster - " in later:
                break
            if later.strip():
                block.append(later.strip())
        if block:
            kind, sep, message = block[-1].partition(": ")
            if sep and " " not in kind:  # "module.path.SomeError: ..." -> "SomeError: ..."
                return f"step {step} failed: {kind.rsplit('.', 1)[-1]}: {message}"
            return f"step {step} failed: {block[-1]}"
    return " / ".join([line.strip() for line in lines if line.strip()][-3:])


def materializations(log_text: str) -> int:
    return log_text.count(" - ASSET_MATERIALIZATION - ")


@dataclass
class Steps:
    """``[i/n]`` before each long step, its progress while it runs, its own error if it fails."""

    total: int
    log_dir: Path
    stop: threading.Event
    done: int = 0
    progress_every_s: float = 15.0

    def materialize(
        self,
        env: dict[str, str],
        use_cases: list[str],
        names: list[str],
        expected: int,
        extra: list[str] | None = None,
    ) -> None:
        self.done += 1
        command = [
            _bin("dagster"),
            "asset",
            "materialize",
            "-m",
            "ml_platform.definitions",
            "--select",
            _keys(use_cases, names),
            *(extra or []),
        ]
        what = f"{', '.join(names)} of {', '.join(use_cases)} {' '.join(extra or [])}".strip()
        print(f"[{self.done}/{self.total}] materializing {what}", flush=True)
        log = self.log_dir / "materialize.log"
        offset = log.stat().st_size if log.exists() else 0
        started = time.monotonic()
        with log.open("ab") as handle:  # the child keeps its own copy
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        shown = (-1, started)
        while process.poll() is None:
            if self.stop.wait(1):
                process.terminate()
                process.wait()
                raise Stopped
            count = materializations(_read_from(log, offset))
            now = time.monotonic()
            if count != shown[0] or now - shown[1] >= self.progress_every_s:
                print(f"    {count} of {expected} materialized, {now - started:.0f} s", flush=True)
                shown = (count, now)
        elapsed = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"{failure_summary(_read_from(log, offset))} (full log: {log})")
        print(f"    done in {elapsed:.0f} s")


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


def _missing_raw_partitions(settings: Settings, use_case: str) -> list[str]:
    """Partitions whose landed files the raw asset does not hold yet (at their current content)."""
    import dagster as dg

    from ml_platform.automation.sensors import ingested_files_by_partition
    from ml_platform.ingestion.landing import file_sha256, list_landing_files
    from ml_platform.ingestion.raw import file_grains
    from ml_platform.partitions import partitions_of
    from ml_platform.usecases import get_use_case

    spec = get_use_case(use_case)
    key = dg.AssetKey([use_case, spec.raw_name])
    missing: set[str] = set()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for path in list_landing_files(settings.landing_dir_for(use_case)):
            sha = file_sha256(path)
            partitions = partitions_of(spec, file_grains(path, spec))
            ingested = ingested_files_by_partition(instance, key, partitions)
            missing.update(p for p in partitions if ingested.get(p, {}).get(str(path)) != sha)
    return sorted(missing)


def _never_materialized(settings: Settings, use_cases: list[str], names: list[str]) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        return [
            f"{u}/{n}"
            for u in use_cases
            for n in names
            if instance.get_latest_materialization_event(dg.AssetKey([u, n])) is None
        ]


def _predict(settings: Settings, use_case: str, body: dict) -> httpx.Response:
    return httpx.post(f"{settings.serve_url}/v1/models/{use_case}/predict", json=body, timeout=30)


def _ingest_assets(use_case: str) -> list[str]:
    from ml_platform.usecases import get_use_case

    spec = get_use_case(use_case)
    return [spec.raw_name, spec.quarantine_name, "raw_labels", spec.staged_name, "features"]


def run_demo(settings: Settings, dagster_port: int = 3000, mlflow_port: int = 5000) -> int:
    from ml_platform.serving.mqtt import default_topics
    from ml_platform.usecases import examples, get_use_case, use_cases
    from ml_platform.validation.dbt_assets import prepare_dbt_project

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    prepare_home(settings)
    shipped = examples()  # the shipped examples, each with its synthetic data and requests
    names = list(shipped)
    env = child_env(settings)
    log_dir = settings.run_dir / "logs"
    supervisor = Supervisor(log_dir, env)
    print(f"ml_platform demo, home {settings.home}; use cases {', '.join(names)}")
    try:
        for name, example in shipped.items():
            landing = settings.landing_dir_for(name)
            # Days up to yesterday; days already landed are kept as they are.
            written = example.land(landing)
            if written:
                print(
                    f"  generated {len(written)} files of synthetic {get_use_case(name).table} in {landing}"
                )
        # Generate staging and parse dbt once, before several processes load the definitions.
        prepare_dbt_project(use_cases(settings).values())

        supervisor.start(
            "dagster-webserver",
            [
                _bin("dagster-webserver"),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(dagster_port),
            ],
        )
        supervisor.start(
            "mlflow-ui",
            [
                _bin("mlflow"),
                "server",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--default-artifact-root",
                settings.mlflow_artifacts_dir.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
        )

        missing = {name: keys for name in names if (keys := _missing_raw_partitions(settings, name))}
        ingested = bool(missing)
        train = ingested or bool(_never_materialized(settings, names, TRAIN_AND_SERVE))
        monitor = ingested or bool(_never_materialized(settings, names, MONITOR))
        steps = Steps(total=len(missing) + train + monitor, log_dir=log_dir, stop=stop)
        # Serving needs no data: its Ray head starts while the days are ingested.
        supervisor.start("serving", [_bin("ml-platform"), "serve"])
        for name, keys in missing.items():
            extra = ["--partition-range", f"{keys[0]}...{keys[-1]}"]
            steps.materialize(env, [name], _ingest_assets(name), len(_ingest_assets(name)) * len(keys), extra)
        if not _wait_http(f"{settings.serve_url}/v2/health/live", 180, stop):
            raise RuntimeError(f"serving did not come up; see {log_dir / 'serving.log'}")
        supervisor.start("dagster-daemon", [_bin("dagster-daemon"), "run", "-w", "workspace.yaml"])
        first = names[0]
        supervisor.start("mqtt-consumer", [_bin("ml-platform"), "consume", "--use-case", first])

        if train:
            steps.materialize(env, names, TRAIN_AND_SERVE, len(TRAIN_AND_SERVE) * len(names))
        for name, example in shipped.items():
            # A second demo's serving loads the champions as it starts: wait until each is served.
            ready = f"{settings.serve_url}/v2/models/{name}/ready"
            if not _wait_http(ready, 120, stop):
                raise RuntimeError(f"{ready} did not answer 200 within 120 s; see {log_dir / 'serving.log'}")
            for body in example.requests:
                _predict(settings, name, body)

        tries = []
        for name, example in shipped.items():
            answer = _predict(settings, name, example.requests[0])
            tries.append(
                f"""  curl -s -X POST {settings.serve_url}/v1/models/{name}/predict \\
       -H 'content-type: application/json' -d '{json.dumps(example.requests[0])}'
  -> {answer.status_code} {json.dumps(answer.json())}"""
            )
        newline = "\n"
        print(
            f"""
ml_platform is up:
  Dagster UI   http://127.0.0.1:{dagster_port}   (lineage: Assets > {", ".join(names)})
  MLflow UI    http://127.0.0.1:{mlflow_port}
  Serving      {settings.serve_url}{f"   (gRPC v2: {settings.grpc_address})" if settings.grpc_port else ""}

Try:
{newline.join(tries)}

Real-time events: POST {settings.serve_url}/v1/events/<use case>, or MQTT topic
  {default_topics(get_use_case(first))[0]} on {settings.mqtt_url} (the consumer is running)
""",
            flush=True,
        )
        # Serving answers already; the monitors' first reports follow (the daemon runs them after).
        if monitor:
            steps.materialize(env, names, MONITOR, len(MONITOR) * len(names))
        print("Ctrl-C stops everything this demo started.", flush=True)
        while not stop.wait(2):
            if dead := supervisor.dead():
                print(f"  {', '.join(dead)} exited unexpectedly; see {log_dir}; stopping")
                return 1
        return 0
    except Stopped:
        return 0
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...")
        supervisor.stop_all()
        print("stopped.")
