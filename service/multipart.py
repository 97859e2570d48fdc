"""multipart/form-data bodies already in memory -> their parts, with python-multipart's parser.

Starlette's `request.form()` wraps the same parser but spools every file to a temporary file
object; for small digit images that costs ~7x the parse itself (23 us vs 170 us per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


class MultipartError(ValueError):
    """The body is not a complete, well-formed multipart/form-data body."""


@dataclass
class Part:
    name: str | None = None
    filename: str | None = None
    chunks: list[bytes] = field(default_factory=list)

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks)


SINGLE_PART_HEADER_LIMIT = 2048


def single_part(body: bytes, boundary: bytes) -> Part | None:
    """The one part of the common one-file body, found with `bytes.find`; None for anything
    else (preamble, several parts, odd header lines), which the full parser then reads.

    Why: python-multipart's callbacks cost ~12 % of a worker's CPU at c=128 for a 28x28 PNG
    upload (py-spy); this costs a few microseconds and gives the same part for such bodies
    (tests/test_multipart.py checks both readers agree).
    """
    opening = b"--" + boundary + b"\r\n"
    if not body.startswith(opening):
        return None
    head_end = body.find(b"\r\n\r\n", len(opening), len(opening) + SINGLE_PART_HEADER_LIMIT)
    if head_end < 0:
        return None
    closing = b"\r\n--" + boundary + b"--"
    tail = body.rfind(closing)
    if tail < head_end or body[tail + len(closing) :] not in (b"", b"\r\n"):
        return None
    content = body[head_end + 4 : tail]
    if b"\r\n--" + boundary in content:
        return None  # a second part: the full parser decides
    part = Part()
    for line in body[len(opening) : head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\r" in line or b"\n" in line:
            return None
        if name.strip().lower() == b"content-disposition":
            kind, disposition = parse_options_header(value.strip())
            if kind != b"form-data":
                return None
            raw_name, raw_filename = disposition.get(b"name"), disposition.get(b"filename")
            part.name = raw_name.decode("utf-8", "replace") if raw_name is not None else None
            if raw_filename is not None:
                part.filename = raw_filename.decode("utf-8", "replace")
    part.chunks.append(content)
    return part


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """All parts in order; raises MultipartError for a missing boundary, malformed or truncated
    body, or more than `max_parts` parts."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MultipartError("multipart Content-Type without a valid boundary")
    single = single_part(body, boundary)
    return [single] if single is not None else parse_parts(body, boundary, max_parts)


def parse_parts(body: bytes, boundary: bytes, max_parts: int) -> list[Part]:
    """python-multipart's parser over the whole body: any well-formed body."""
    parts: list[Part] = []
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    finished = False

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} parts in the multipart body")
        parts.append(Part())

    def on_header_end() -> None:
        name = b"".join(header_name).strip().lower()
        if name == b"content-disposition":
            _, disposition = parse_options_header(b"".join(header_value))
            part = parts[-1]
            raw_name, raw_filename = disposition.get(b"name"), disposition.get(b"filename")
            part.name = raw_name.decode("utf-8", "replace") if raw_name is not None else None
            if raw_filename is not None:
                part.filename = raw_filename.decode("utf-8", "replace")
        header_name.clear()
        header_value.clear()

    def on_end() -> None:
        nonlocal finished
        finished = True

    callbacks: MultipartCallbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": lambda data, start, end: parts[-1].chunks.append(data[start:end]),
        "on_header_field": lambda data, start, end: header_name.append(data[start:end]),
        "on_header_value": lambda data, start, end: header_value.append(data[start:end]),
        "on_header_end": on_header_end,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(f"malformed multipart body: {exc}") from None
    if not finished:
        raise MultipartError("truncated multipart body (no closing boundary)")
    return parts
