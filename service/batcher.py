"""Adaptive batching inside one worker: concurrent single-image requests share a forward pass.

Requests that arrive while the event loop is busy pile up and are run together, so batches
grow with load and a lone request waits at most `max_latency_ms` (0: just one loop turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_latency_ms: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self.on_batch = on_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._timer: asyncio.Handle | None = None

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """Queue one (784,) image; resolve to its row of the batch output."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((image, future))
        if len(self._pending) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = (
                loop.call_later(self.max_latency_s, self._flush)
                if self.max_latency_s > 0
                else loop.call_soon(self._flush)
            )
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        # Requests cancelled while waiting (client went away) are dropped from the batch.
        batch = [(image, future) for image, future in batch if not future.done()]
        if not batch:
            return
        self.on_batch(len(batch))
        try:
            outputs = self.run_batch(np.stack([image for image, _ in batch]))
        except Exception as exc:  # every waiting request gets the failure, none hangs
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), row in zip(batch, outputs, strict=True):
            future.set_result(row)
