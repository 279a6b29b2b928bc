"""Events over MQTT reach the landing zone and the online store, and survive a consumer restart
and a consumer killed with SIGKILL mid-stream."""

import dataclasses
import datetime as dt
import json
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from ml_platform.features.online_store import make_online_store
from ml_platform.serving.mqtt import MqttConsumer, default_topics
from ml_platform.settings import load_settings
from ml_platform.usecases import get_use_case

SPEC = get_use_case("sensor_anomaly")
START = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)


def reading(i: int, sensor: str = "s-mqtt") -> dict:
    moment = START + dt.timedelta(minutes=i)
    return {"sensor_id": sensor, "timestamp": moment.isoformat(), "value": 50.0 + i, "vibration": 1.0}


def publish(topic: str, payloads: list) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    for payload in payloads:
        body = payload if isinstance(payload, bytes) else json.dumps(payload)
        client.publish(topic, body, qos=1).wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def mqtt_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ML_PLATFORM_ONLINE_STORE", raising=False)
    topic = f"ml_platform-test/{uuid.uuid4().hex[:8]}/readings"  # unique: the broker outlives runs
    client_id = f"ml_platform-test-{uuid.uuid4().hex[:8]}"
    yield load_settings(), topic, client_id
    # End the persistent session this test created on the broker.
    cleaner = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    cleaner.connect("127.0.0.1", 1883)
    cleaner.disconnect()


def landed_events(settings) -> list[dict]:
    files = sorted(settings.landing_dir_for(SPEC.name).glob("events_*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_consumer_restart_loses_no_acknowledged_or_queued_event(mqtt_setup):
    settings, topic, client_id = mqtt_setup
    consumer = MqttConsumer(settings, SPEC, client_id, (topic,))
    consumer.start()
    wait_for(consumer.subscribed.is_set)
    publish(topic, [reading(i) for i in range(5)])
    wait_for(lambda: consumer.processed == 5)
    consumer.stop()

    # Published while no consumer runs: the broker keeps them for the persistent session.
    publish(topic, [[reading(i) for i in range(5, 8)], reading(8), b"{not json"])

    restarted = MqttConsumer(settings, SPEC, client_id, (topic,))
    restarted.start()
    wait_for(lambda: restarted.processed == 3)
    restarted.stop()

    # Every acknowledged event landed exactly once (files list in the order writers started).
    events = landed_events(settings)
    assert [e["value"] for e in events] == [50.0 + i for i in range(9)]
    store = make_online_store(settings)
    vector = store.get(SPEC.name, "s-mqtt")
    assert vector.event_timestamp == START + dt.timedelta(minutes=8)
    assert vector.features["value"] == 58.0
    assert len(store.state(SPEC.name, "s-mqtt").times) == 9
    rejected = list((settings.landing_dir_for(SPEC.name) / "rejected_events").glob("*.jsonl"))
    assert len(rejected) == 1 and "not json" in rejected[0].read_text()


def test_a_message_breaking_the_schema_is_kept_with_its_reason(mqtt_setup):
    settings, topic, client_id = mqtt_setup
    consumer = MqttConsumer(settings, SPEC, client_id, (topic,))
    consumer.start()
    wait_for(consumer.subscribed.is_set)
    publish(topic, [{"sensor_id": "s-1", "timestamp": "yesterday", "value": 1.0}, reading(1)])
    wait_for(lambda: consumer.processed == 2)
    consumer.stop()
    assert [e["sensor_id"] for e in landed_events(settings)] == ["s-mqtt"]
    rejected = (settings.landing_dir_for(SPEC.name) / "rejected_events").glob("*.jsonl")
    record = json.loads(next(rejected).read_text().splitlines()[0])
    assert "field 'timestamp'" in record["reason"] and "yesterday" in record["payload"]


def test_default_topics_come_from_the_spec_with_its_aliases(mqtt_setup):
    settings, _, client_id = mqtt_setup
    tag = uuid.uuid4().hex[:8]  # unique: the broker outlives runs
    spec = dataclasses.replace(SPEC, name=f"streams_{tag}", topic_aliases=(f"legacy-{tag}/readings",))
    assert default_topics(spec) == (f"ml_platform/streams_{tag}/events", f"legacy-{tag}/readings")
    consumer = MqttConsumer(settings, spec, client_id)
    consumer.start()
    wait_for(consumer.subscribed.is_set)
    publish(f"ml_platform/streams_{tag}/events", [{"events": [reading(0), reading(1)]}])
    publish(f"legacy-{tag}/readings", [{spec.table: [reading(2)]}])
    wait_for(lambda: consumer.processed == 2)
    consumer.stop()
    files = settings.landing_dir_for(spec.name).glob("events_*.jsonl")
    landed = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(e["value"] for e in landed) == [50.0, 51.0, 52.0]


def test_a_consumer_killed_mid_stream_loses_no_event(mqtt_setup):
    """``ml-platform consume`` as its own process, killed with SIGKILL while messages stream in
    (so some are received and not yet acknowledged), then started again: every published event
    is in the landing zone. At-least-once: a message on disk but not acknowledged comes again."""
    import os
    import signal
    import subprocess
    import sys

    settings, topic, client_id = mqtt_setup
    command = [
        sys.executable, "-m", "ml_platform.cli", "consume",
        "--use-case", SPEC.name, "--topic", topic, "--client-id", client_id,
    ]  # fmt: skip
    env = {**os.environ, "ML_PLATFORM_HOME": str(settings.home)}

    def landed_values() -> list[float]:
        return [e["value"] for e in landed_events(settings)] if settings.landing_dir.exists() else []

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "consuming" in first.stdout.readline()
        time.sleep(1.0)  # subscribed with its persistent session
        total = 400
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        publisher.connect("127.0.0.1", 1883)
        publisher.loop_start()
        sent = [publisher.publish(topic, json.dumps(reading(i)), qos=1) for i in range(total)]
        wait_for(lambda: len(landed_values()) >= total // 4)
        first.send_signal(signal.SIGKILL)  # mid-stream: no handler, no clean disconnect
        first.wait(timeout=10)
        for message in sent:
            message.wait_for_publish(timeout=20)
        publisher.loop_stop()
        publisher.disconnect()
        assert len(set(landed_values())) < total  # the kill did stop it part-way
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "consuming" in second.stdout.readline()
        wait_for(lambda: set(landed_values()) >= {50.0 + i for i in range(total)}, timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    values = landed_values()
    assert set(values) == {50.0 + i for i in range(total)}
    assert len(values) - total <= 20  # redelivered: at most the broker's in-flight window
