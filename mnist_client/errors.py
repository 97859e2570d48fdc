"""The one exception the client raises for a request that did not get its answer."""

from __future__ import annotations


class MnistClientError(Exception):
    """A request failed: the server's own `{"error": ...}` message and its HTTP status, or, when
    no answer came (connection refused, timeout), a one-line reason and `status` None."""

    def __init__(self, message: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self) -> str:
        return f"{self.status} {self.message}" if self.status is not None else self.message
