"""The error rate ``serving_slo`` reads from ``/metrics``: counted from the replicas' Prometheus
counters, and said unknown (not zero, not a crash) when the endpoint answers anything else."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from ml_platform.metadata import latest_metadata
from ml_platform.monitoring.slo import MetricsUnavailable, scrape_error_rate

from .conftest import key, make_platform


class _Metrics(BaseHTTPRequestHandler):
    status = 200
    body = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metrics_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def answer(server, status: int, body: bytes) -> str:
    server.status, server.body = status, body
    return f"http://127.0.0.1:{server.server_address[1]}"


def counters(answered: dict[tuple[str, str], int]) -> bytes:
    """Prometheus text as the serving replicas write it."""
    registry = CollectorRegistry()
    labels = ["model", "version", "route", "status"]
    requests = Counter("ml_platform_requests", "Requests answered", labels, registry=registry)
    for (model, status), count in answered.items():
        requests.labels(model, "1", "predict", status).inc(count)
    return generate_latest(registry)


def test_the_error_rate_is_the_use_cases_share_of_5xx_answers(metrics_server):
    url = answer(metrics_server, 200, counters({("a", "200"): 6, ("a", "503"): 2, ("b", "500"): 5}))
    assert scrape_error_rate(url, "a") == pytest.approx(0.25)
    assert scrape_error_rate(url, "b") == 1.0
    assert scrape_error_rate(url, "c") is None  # no request of it counted


def test_an_endpoint_without_metrics_is_said_with_what_it_answered(metrics_server):
    # What Serve answers on its port while no application is deployed.
    url = answer(metrics_server, 404, b"Path '/metrics' not found. Ping .../-/routes for available routes.")
    with pytest.raises(MetricsUnavailable, match=r"/metrics answered 404: Path '/metrics' not found"):
        scrape_error_rate(url, "a")
    answer(metrics_server, 200, b"<html>a proxy's login page</html>")
    with pytest.raises(MetricsUnavailable, match="not Prometheus metrics"):
        scrape_error_rate(url, "a")
    metrics_server.shutdown()
    metrics_server.server_close()
    with pytest.raises(MetricsUnavailable, match="did not answer"):
        scrape_error_rate(url, "a")


@pytest.mark.integration
def test_serving_slo_says_the_error_rate_is_unknown_when_metrics_do_not_answer(
    tmp_path, monkeypatch, metrics_server
):
    url = answer(metrics_server, 404, b"Path '/metrics' not found.")
    monkeypatch.setenv("ML_PLATFORM_SERVE_PORT", url.rsplit(":", 1)[1])
    platform = make_platform(tmp_path / "home")
    result = platform.materialize(["serving_slo"])
    slo = latest_metadata(platform.instance, key("serving_slo"))
    assert "answered 404" in slo["error_rate_unavailable"]
    assert "champion/error_rate" not in slo
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and "error rate not judged" in check.description
