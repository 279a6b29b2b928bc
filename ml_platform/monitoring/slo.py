"""Reading the serving endpoint's Prometheus metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape_error_rate(serve_url: str, use_case: str) -> float | None:
    """Share of a use case's requests answered 5xx, from ``/metrics`` (the answering replica's
    counters since it started); None when serving does not answer."""
    try:
        text = httpx.get(f"{serve_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    total = failed = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "ml_platform_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("model") == use_case:
                total += sample.value
                failed += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
    return failed / total if total else None
