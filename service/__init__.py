"""The digit service: `service.service` is what `bentoml serve` loads.

In `bentoml serve`'s processes the garbage collector is paused from here until the service is
up: importing torch, BentoML's app and the service creates ~320k objects that live as long as
the process, and collecting them again and again while they are being made took ~0.1-0.15 s of
each start (docs/benchmarks.md). A worker resumes it once the model is loaded, with everything
made so far frozen (`service.service.MNISTClassifier.__init__`); the supervisor at the end of
`service.service`.
"""

import gc
import sys
from pathlib import Path


def server_role(argv: list[str]) -> str | None:
    """The process's part in `bentoml serve`: "supervisor" (the process it runs), "worker" (one
    it spawns), or None anywhere else (tests, `bentoml build`, training)."""
    if "--worker-id" in argv:
        return "worker"
    if Path(argv[0]).name == "bentoml" and "serve" in argv[1:]:
        return "supervisor"
    return None


if server_role(sys.argv) is not None:
    gc.disable()
