"""A bad model stops `bentoml serve` with one line and a non-zero exit, without torch in it.

`bentoml serve`'s own process (the supervisor: it spawns and watches the workers) imports the
service only to read its configuration. Loading the checkpoint there to validate it cost
~500 MB of resident memory and ~1.7 s of start-up, for a process that never predicts. So the
supervisor checks only what is cheap (the file is there and readable), and the workers, which
load the model anyway, report a refused checkpoint through a small file that a thread here
watches: BentoML itself would keep running, never ready, when a worker fails to start.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from service import server_role

FATAL_ENV = "_MNIST_FATAL_FILE"
POLL_S = 0.1


def is_supervisor(argv: list[str]) -> bool:
    """True in the process that `bentoml serve` runs (not in its workers, tests or builds)."""
    return server_role(argv) == "supervisor"


def check_readable(path: Path) -> None:
    """The cheap part of validation: raise OSError if the checkpoint cannot be read at all."""
    with open(path, "rb") as f:
        f.read(1)


def watch_for_fatal_errors() -> None:
    """Start the thread that ends this process when a worker reports an unusable model."""
    fd, name = tempfile.mkstemp(prefix="mnist-fatal-")
    os.close(fd)
    os.environ[FATAL_ENV] = name
    threading.Thread(target=_watch, args=(Path(name),), daemon=True, name="mnist-fatal").start()


def report_fatal(message: str) -> None:
    """In a worker: ask the supervisor to stop with `message` (no-op outside `bentoml serve`)."""
    path = os.environ.get(FATAL_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as f:
            f.write(message + "\n")


def _watch(path: Path) -> None:
    while True:
        time.sleep(POLL_S)
        with contextlib.suppress(OSError):
            text = path.read_text()
            if text.strip():
                print(text.splitlines()[0], file=sys.stderr, flush=True)
                _stop_workers()
                path.unlink(missing_ok=True)
                os._exit(1)


def _stop_workers() -> None:
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=3)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
