"""How long work in another thread keeps this one waiting: the event loop's view of a GIL hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def longest_wait_ms(work: Callable[[], T], tick_s: float = 0.001) -> tuple[float, T]:
    """Run `work` in a thread while this one sleeps `tick_s` at a time; the longest time one
    tick took (ms), and what `work` returned (its exception is raised here)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:
            outcome.append((False, exc))

    worker = threading.Thread(target=run)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        time.sleep(tick_s)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return longest * 1000, value


def longest_gil_hold_ms(work: Callable[[], object], runs: int = 3) -> float:
    """The least, over `runs`, of the longest wait while `work` runs in another thread: a call
    that holds the GIL makes every run's wait that long, while the machine's own scheduling
    noise rarely hits all of them."""
    return min(longest_wait_ms(work)[0] for _ in range(runs))
