"""On SIGTERM a worker first reports not ready, keeps serving a moment, then shuts down as before.

A load balancer learns that a replica is going away from its health checks (HAProxy asks
/readyz every second; Kubernetes its readinessProbe). If the server stopped accepting at once,
the balancer would find out from refused connections instead. So the first SIGTERM makes
/readyz answer 503 while every route keeps answering for `drain_s` seconds; then the server's
own SIGTERM handling (uvicorn's: stop accepting, finish the requests in flight, exit) runs. A
second SIGTERM skips the wait.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger("service")
DRAINING = threading.Event()


def install(drain_s: float) -> bool:
    """Wrap this process's SIGTERM handler; False where there is none to wrap (not the main
    thread, or no handler installed yet, as in tests that call the app in process)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return False

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if DRAINING.is_set() or drain_s <= 0:
            DRAINING.set()
            previous(sig, frame)
            return
        DRAINING.set()
        logger.info("SIGTERM: /readyz answers 503 now; shutting down in %.1f s", drain_s)
        timer = threading.Timer(drain_s, previous, (sig, frame))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
