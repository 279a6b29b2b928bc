"""Reading the serving endpoint's Prometheus metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class MetricsUnavailable(Exception):
    """``/metrics`` did not answer with Prometheus text; the message says what it answered."""


def scrape_error_rate(serve_url: str, use_case: str) -> float | None:
    """Share of a use case's requests answered 5xx, from ``/metrics`` (the answering replica's
    counters since it started); None when it has counted none of them."""
    url = f"{serve_url}/metrics"
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"{url} did not answer: {exc}") from None
    if answer.status_code != 200:
        # Serve answers 404 with plain text while no application is deployed.
        raise MetricsUnavailable(f"{url} answered {answer.status_code}: {answer.text[:200].strip()}")
    total = failed = 0.0
    try:
        for family in text_string_to_metric_families(answer.text):
            if family.name != "ml_platform_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("model") == use_case:
                    total += sample.value
                    failed += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
    except ValueError as exc:
        raise MetricsUnavailable(f"{url} answered text that is not Prometheus metrics: {exc}") from None
    return failed / total if total else None
