"""Reading the service's Prometheus `/metrics`."""

from __future__ import annotations

import re

import httpx

BATCH_SIZE_BUCKET = re.compile(r'mnist_adaptive_batch_size_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)')


def batch_histogram(url: str) -> dict[str, float]:
    """Cumulative forward-pass counts of the adaptive batcher per batch-size bucket, summed over
    the workers; keyed by the `le` label as /metrics writes it (`"1.0"`, ..., `"+Inf"`)."""
    counts: dict[str, float] = {}
    for le, value in BATCH_SIZE_BUCKET.findall(httpx.get(f"{url}/metrics").text):
        counts[le] = counts.get(le, 0) + float(value)
    return counts


def histogram_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Non-cumulative batch counts per bucket upper bound between two `batch_histogram` reads."""
    cumulative = [(le, after.get(le, 0) - before.get(le, 0)) for le in after]
    result, previous = {}, 0.0
    for le, count in cumulative:
        if count - previous:
            result[le] = int(count - previous)
        previous = count
    return result
