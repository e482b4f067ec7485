"""Reading this process' Prometheus metrics the way an operator's scraper does: over HTTP."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from feeds import metrics

Samples = dict[tuple[str, frozenset], float]


def metrics_port() -> int:
    """The metrics port of this (test) process: started on a free loopback port on first use."""
    return metrics.serve(0)


def scrape(port: int | None = None) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port or metrics_port()}/metrics", timeout=5)
    response.raise_for_status()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
