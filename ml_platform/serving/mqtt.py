"""An MQTT consumer feeding events to the same event path as ``POST /v1/events/{use_case}``.

It keeps a persistent session (fixed client id, clean_session=False) and subscribes with QoS 1,
acknowledging a message only after its events are fsynced to the landing zone: the broker keeps
unacknowledged and new messages while the consumer is down and delivers them when it returns.
A message that breaks the schema is written, with the reason, to ``rejected_events/`` beside
the landing files and acknowledged (kept, never retried forever).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from ml_platform.features.online_store import make_online_store
from ml_platform.serving.events import EventError, EventIngestor
from ml_platform.settings import Settings
from ml_platform.spec import UseCaseSpec

log = logging.getLogger(__name__)


def default_topics(spec: UseCaseSpec) -> tuple[str, ...]:
    """``ml_platform/<use case>/events``, then the spec's aliases."""
    return (f"ml_platform/{spec.name}/events", *spec.topic_aliases)


def _reject(settings: Settings, spec: UseCaseSpec, payload: bytes, reason: str) -> None:
    folder = settings.landing_dir_for(spec.name) / "rejected_events"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "reason": reason,
        "payload": payload.decode("utf-8", errors="replace"),
    }
    with (folder / f"{dt.datetime.now(dt.UTC).date()}.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


class MqttConsumer:
    def __init__(
        self, settings: Settings, spec: UseCaseSpec, client_id: str, topics: tuple[str, ...] = ()
    ) -> None:
        self.settings, self.spec = settings, spec
        self.topics = topics or default_topics(spec)
        self.ingestor = EventIngestor(settings, spec, make_online_store(settings))
        self.subscribed = threading.Event()
        self.processed = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client, userdata, message) -> None:
        try:
            ingested = self.ingestor.ingest(json.loads(message.payload))
            if ingested.online_error:
                log.warning(
                    "landed a message on %s; online features lag: %s", message.topic, ingested.online_error
                )
        except (EventError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            _reject(self.settings, self.spec, message.payload, str(exc))
            log.warning("rejected a message on %s: %s", message.topic, exc)
        # Acknowledged only now: the events (or the rejection) are on disk.
        client.ack(message.mid, message.qos)
        self.processed += 1

    def start(self) -> None:
        url = urlparse(self.settings.mqtt_url)
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
