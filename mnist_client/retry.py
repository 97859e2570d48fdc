"""When to try a request again: a 503 (a server budget is full, or the model is still loading)
is retried after the wait its `Retry-After` header asks for, capped."""

from __future__ import annotations

import contextlib
import email.utils
import time

import httpx

RETRIED_STATUSES = frozenset({503})
DEFAULT_WAIT_S = 0.5  # doubled on each attempt when the answer names no wait


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRIED_STATUSES


def retry_wait(response: httpx.Response, attempt: int, max_wait: float) -> float:
    """Seconds to wait before the next attempt (`attempt` counts from 0): `Retry-After` in
    seconds or as an HTTP date, else exponential backoff; never negative, never over `max_wait`."""
    header = response.headers.get("retry-after", "").strip()
    wait = DEFAULT_WAIT_S * 2**attempt
    if header.isdigit():
        wait = float(header)
    elif header:
        with contextlib.suppress(TypeError, ValueError):  # unreadable: keep the backoff
            wait = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
    return min(max(wait, 0.0), max_wait)
