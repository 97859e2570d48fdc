"""The digit service: `service.service` is what `bentoml serve` loads.

In `bentoml serve`'s processes the garbage collector is paused from here until the service is
up: importing torch, BentoML's app and the service creates ~250k objects that live as long as
the process, and collecting them again and again while they are being made took ~0.1-0.15 s of
each start (docs/benchmarks.md). A worker resumes it once the model is loaded, with everything
made so far frozen (`service.service.MNISTClassifier.__init__`); the supervisor at the end of
`service.service`.
"""

import gc
import sys
from pathlib import Path

if "--worker-id" in sys.argv or (Path(sys.argv[0]).name == "bentoml" and "serve" in sys.argv):
    gc.disable()
