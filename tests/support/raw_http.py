"""Read one whole HTTP/1.1 response off a raw socket, for tests that speak HTTP by hand.

A single `recv` may return the head without the body (the server writes them separately),
so tests that look at the body read until Content-Length bytes of it have arrived.
"""

from __future__ import annotations

import socket


def read_response(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Head and body of the next response; stops at Content-Length, end of stream or `limit`."""
    data = b""
    while len(data) < limit:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0 and len(data) >= head_end + 4 + _content_length(data[:head_end]):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
