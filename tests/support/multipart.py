"""multipart/form-data request bodies, byte for byte, for requests no client library would send
(truncated, hand-framed) and for load generators that replay raw bodies."""

from __future__ import annotations

from collections.abc import Iterable


def file_part_head(field: str, filename: str, boundary: str, part_type: str = "image/png") -> bytes:
    """The boundary line and headers that open one file part; its data follows."""
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: {part_type}\r\n\r\n'
    ).encode()


def multipart_body(parts: Iterable[tuple[str, str, bytes]], boundary: str) -> bytes:
    """A complete body of (field, filename, data) file parts."""
    body = b"".join(file_part_head(f, name, boundary) + data + b"\r\n" for f, name, data in parts)
    return body + f"--{boundary}--\r\n".encode()


def content_type(boundary: str) -> str:
    """The request's Content-Type header for a body framed with `boundary`."""
    return f"multipart/form-data; boundary={boundary}"
