"""Moved to `tests.support.servers`; this name stays only until tests/test_service.py and
tests/test_auth.py import from there (their request-path rework moves them). Do not add to it."""

from tests.support import REPO
from tests.support.servers import (
    BENTOML,
    Server,
    free_port,
    running_server,
    serve_until_exit,
    server_env,
    stop,
    wait_ready,
)

__all__ = [
    "BENTOML",
    "REPO",
    "Server",
    "free_port",
    "running_server",
    "serve_until_exit",
    "server_env",
    "stop",
    "wait_ready",
]
