"""uvicorn's httptools protocol with the two limits it lacks: header size and header time.

Measured before: 8 MB and 100 MB header blocks were accepted, ten unfinished 100 MB headers held
+858 MB, and 1,000 connections trickling header bytes stayed open for 30 s (each byte resets
uvicorn's keep-alive timer). The application never sees a request before its headers are
complete, so these limits can only live here, in the worker's HTTP protocol.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line plus all header lines
HEADER_TIMEOUT_S = 10.0  # from a request's first byte (or the connection) to its last header


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """431 for a header block over MAX_HEADER_BYTES, 408 when it takes over HEADER_TIMEOUT_S."""

    refused = False
    header_bytes = 0
    header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        if self.header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        if not self.refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers get their own time from its first byte; an idle
        # keep-alive connection is uvicorn's keep-alive timeout's business.

    def _count(self, size: int) -> bool:
        if self.refused:
            return False
        self.header_bytes += size
        if self.header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
            return False
        return True

    def _arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timed_out(self) -> None:
        self.header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(408, f"request headers not complete within {HEADER_TIMEOUT_S:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close the connection: the request cannot be read any further."""
        self.refused = True
        self._disarm_header_timer()
        if self.transport.is_closing():
            return
        from service.request_body import log_client_error

        log_client_error("-", "-", status, message)
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = json.dumps({"error": message}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()


def install(header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """In a worker: uvicorn's "auto" HTTP protocol becomes this one (BentoML leaves it at auto)."""
    import uvicorn.config

    global HEADER_TIMEOUT_S
    HEADER_TIMEOUT_S = header_timeout_s
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpToolsProtocol"
