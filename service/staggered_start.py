"""With several workers, the first one starts alone: the server is ready sooner.

BentoML spawns every worker at once, and each one's start is ~2.2 s of CPU (BentoML's imports,
torch, the model). With as many CPUs as workers, the workers and the supervisor then compete for
the cores, and the first worker to accept connections (what makes `/readyz` answer 200) came up
later than it does with no sibling starting beside it. So every worker but the first sleeps, as
soon as it imports the service, until a sibling accepts connections (`service.fair_accept`'s
board says so) or `WAIT_LIMIT_S` has passed; the others then start while the first one serves.
A worker that BentoML restarts later does not wait: its siblings are accepting. Measured with
2 workers on 2 CPUs, 12 starts each way, alternating (`benchmarks.cold_start`,
docs/benchmarks.md): median 2.91 vs 3.07 s to `/readyz` 200, sooner in 9 of the 12 pairs; the
second worker accepts ~2 s after the first instead of with it.
"""

from __future__ import annotations

import logging
import time

from service.fair_accept import ConnectionBoard

logger = logging.getLogger("service")

WAIT_LIMIT_S = 30.0
POLL_S = 0.01


def wait_for_first_worker(board: ConnectionBoard | None, limit_s: float = WAIT_LIMIT_S) -> float:
    """In a worker other than the first: sleep until a sibling accepts connections (at most
    `limit_s`); the seconds waited. No board (one worker) or the first worker: no wait."""
    if board is None or board.slot == 0:
        return 0.0
    started = time.monotonic()
    while not board.accepting_elsewhere():
        if (waited := time.monotonic() - started) >= limit_s:
            logger.warning("no other worker accepts after %.0f s; starting anyway", waited)
            return waited
        time.sleep(POLL_S)
    waited = time.monotonic() - started
    logger.info("starting now that another worker accepts connections (waited %.1f s)", waited)
    return waited
