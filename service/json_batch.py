"""`/predict` JSON bodies -> (N, 784) float32 arrays, with the clear 4xx for every mistake.

Why not `json.loads` + `np.array` on the whole body (measured, docs/benchmarks.md): for a
256-image body `json.loads` was ~45 % of the worker's CPU and orjson parses it ~4x faster. And a
single parse holds the GIL from start to end, even in a worker thread, so one large body stalled
the event loop (a 64 MiB body: seconds). So a body of the usual form `{"images": [...]}` (no
strings but the key) is cut at the commas between its images and parsed in slices of about
`SLICE_BYTES`: each slice is one short call, and between slices a worker thread lets the loop
run. A body of any other form is parsed in one call, so it may be at most `GENERAL_JSON_BYTES`.
"""

from __future__ import annotations

import re

import numpy as np
import orjson

from service.preprocess import MIN_INK_CONTRAST
from service.request_body import ClientError

SLICE_BYTES = 128 * 1024  # one orjson call: at most a few ms of GIL, whatever the content
MAX_IMAGE_JSON_BYTES = 64 * 1024  # 784 full-precision floats, indented, take ~25 KiB
GENERAL_JSON_BYTES = 256 * 1024  # one call; worst (empty lists): ~15 ms, docs/benchmarks.md
WINDOW_BYTES = 1024 * 1024  # bracket depth is computed this many bytes at a time

_PREFIX = re.compile(rb'(?:\xef\xbb\xbf)?[ \t\r\n]*\{[ \t\r\n]*"images"[ \t\r\n]*:[ \t\r\n]*\[')
_SUFFIX = re.compile(rb"\][ \t\r\n]*\}[ \t\r\n]*\Z")
_OPEN, _CLOSE = ord("["), ord("]")
_SHAPE_RULE = (
    "each image must be 28 lists of 28 numbers or one list of 784 numbers, the same form for "
    "every image in the request"
)


def images_from_json(body: bytes, max_images: int) -> np.ndarray:
    """A `/predict` body -> (N, 784) float32 in [0, 1]; every problem is a ClientError."""
    bounds = image_bounds(body, max_images)
    if bounds is None:
        if len(body) > GENERAL_JSON_BYTES:
            raise ClientError(
                413,
                f"the JSON body is {len(body):,} bytes; above {GENERAL_JSON_BYTES:,} bytes it must "
                'be exactly {"images": [...]} with numbers only (no other keys or strings); '
                "send large batches to /predict_bulk",
            )
        return parse_image_array(parse_json(body), max_images)
    if not bounds:  # `{"images": [ ]}`
        return parse_image_array({"images": []}, max_images)
    rows = ImageRows(len(bounds))
    first = 0
    while first < len(bounds):  # slices of whole images, about SLICE_BYTES each
        last = first
        while last + 1 < len(bounds) and bounds[last + 1][1] - bounds[first][0] <= SLICE_BYTES:
            last += 1
        begin, end = bounds[first][0], bounds[last][1]
        images = parse_json(b"[" + body[begin:end] + b"]", offset=begin - 1)
        assert isinstance(images, list)  # a `[...]` document that parsed is a list
        rows.add(images)
        first = last + 1
    return rows.array


def image_bounds(body: bytes, max_images: int) -> list[tuple[int, int]] | None:
    """(start, stop) of each element of the images list, if the body is `{"images": [...]}`
    with no other strings or objects (so every `[`, `]` and `,` in it is structure); else None.

    Splits at the commas outside any bracket. Bracket positions are found with numpy, a window
    at a time (its loops leave the GIL). A wrong split could only make a piece invalid, never
    an invalid body valid: each piece is parsed as a JSON value of its own.
    """
    head = _PREFIX.match(body)
    if head is None:
        return None
    start, stop = head.end(), body.rfind(b"]", head.end())
    if stop < 0 or _SUFFIX.match(body, stop) is None:
        return None
    most_lists = 29 * max_images  # an image is at most 1 + 28 lists
    too_many = ClientError(
        413,
        f"the body holds more than {most_lists:,} JSON lists: {max_images} images "
        "of 28 rows is the most a request may send",
    )
    found = brackets(body, start, stop, 2 * most_lists, too_many, forbidden=b'"{}')
    if found is None:
        return None
    position, is_open = found
    depth = np.cumsum(np.where(is_open, 1, -1))  # depth after each bracket
    if len(depth) and depth.min() < 0:
        stray = int(position[np.argmax(depth < 0)])
        raise ClientError(400, f"body is not valid JSON: ']' at byte {stray} closes no list")
    if len(depth) and depth[-1] != 0:
        raise ClientError(400, "body is not valid JSON: a list in the images is never closed")
    starts = position[is_open & (depth == 1)]  # each image's own `[`
    if len(starts) > max_images:
        raise ClientError(413, f"{len(starts)} images in one request; the limit is {max_images}")
    ends = position[~is_open & (depth == 0)] + 1
    cuts: list[int] = []  # commas between the images (brackets, depth 0)
    for begin, end in zip([start, *ends.tolist()], [*starts.tolist(), stop], strict=True):
        comma = body.find(b",", begin, end)
        while comma >= 0:
            cuts.append(comma)
            if len(cuts) >= max_images:
                raise ClientError(
                    413, f"more than {max_images} images in one request; the limit is {max_images}"
                )
            comma = body.find(b",", comma + 1, end)
    if not cuts and stop - start <= MAX_IMAGE_JSON_BYTES and not body[start:stop].strip(b" \t\r\n"):
        return []
    bounds = list(zip([start, *(cut + 1 for cut in cuts)], [*cuts, stop], strict=True))
    for index, (begin, end) in enumerate(bounds):
        if end - begin > MAX_IMAGE_JSON_BYTES:
            raise ClientError(
                413,
                f"image {index} takes {end - begin:,} bytes of JSON; the limit is "
                f"{MAX_IMAGE_JSON_BYTES:,} per image",
            )
    return bounds


def brackets(
    body: bytes,
    start: int,
    stop: int,
    most: int,
    too_many: ClientError,
    forbidden: bytes = b"",
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where every `[` and `]` of `body[start:stop]` is, and whether each opens a list, found
    with numpy a window at a time (its loops leave the GIL). Raises `too_many` past `most`
    brackets; None as soon as a byte of `forbidden` is there."""
    positions, opens, found = [np.zeros(0, np.int64)], [np.zeros(0, bool)], 0
    for offset in range(start, stop, WINDOW_BYTES):
        window = np.frombuffer(body, np.uint8, min(WINDOW_BYTES, stop - offset), offset)
        if forbidden and any((window == byte).any() for byte in forbidden):
            return None
        is_open = window == _OPEN
        where = np.flatnonzero(is_open | (window == _CLOSE))
        found += len(where)
        if found > most:
            raise too_many
        positions.append(where + offset)
        opens.append(is_open[where])
    return np.concatenate(positions), np.concatenate(opens)


def parse_json(body: bytes, offset: int = 0) -> object:
    """orjson's parse; an error names its byte (`offset`: where `body` starts in the request)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        where = f"at byte {max(0, offset + exc.pos)}"
        if exc.msg.startswith("number is infinity"):  # 1e999, or an integer of 400 digits
            raise ClientError(
                422, f"image values must be finite numbers; a number {where} is too large"
            ) from None
        if body[exc.pos : exc.pos + 3] in (b"NaN", b"Inf", b"-In"):
            raise ClientError(
                400, f"body is not valid JSON: NaN and Infinity are not JSON numbers ({where})"
            ) from None
        if "byte order mark" in exc.msg:
            return parse_json(body[3:], offset + 3)  # RFC 8259 lets a parser ignore a BOM
        raise ClientError(400, f"body is not valid JSON: {exc.msg[:200]} {where}") from None


def parse_image_array(payload: object, max_images: int) -> np.ndarray:
    """`{"images": [...]}` -> (N, 784) float32, each image 28x28 or 784 values in [0, 1]."""
    if not isinstance(payload, dict) or "images" not in payload:
        raise ClientError(422, 'body must be a JSON object with an "images" list')
    images = payload["images"]
    if not isinstance(images, list):
        raise ClientError(422, '"images" must be a list of images')
    if not images:
        raise ClientError(422, '"images" is empty; send at least one image')
    if len(images) > max_images:
        raise ClientError(413, f"{len(images)} images in one request; the limit is {max_images}")
    rows = ImageRows(len(images))
    rows.add(images)
    return rows.array


class ImageRows:
    """The (N, 784) float32 result, filled a slice of images at a time with the same checks
    (and image numbers) as if the whole list had been converted at once."""

    def __init__(self, total: int) -> None:
        self.array = np.empty((total, 784), np.float32)
        self.filled = 0
        self.form: list[int] | None = None  # shape of image 0: [784] or [28, 28]

    def add(self, images: list) -> None:
        first = self.filled
        try:
            array = np.array(images)  # numpy infers the type: anything but numbers is refused
        except (ValueError, TypeError):
            raise ClientError(422, f"{_SHAPE_RULE}; {self.odd_shape(images)}") from None
        if array.dtype.kind not in "iuf":  # strings, booleans, nulls, ragged or huge integers
            raise ClientError(
                422,
                "each image must be 28 lists of 28 numbers or one list of 784 numbers "
                "(no strings, booleans or nulls)",
            )
        form = list(array.shape[1:])
        if self.form is not None and form != self.form:
            raise ClientError(422, f"{_SHAPE_RULE}; {self.odd_shape(images)}")
        self.form = form
        if array.shape[1:] == (28, 28):
            array = array.reshape(len(array), 784)
        if array.ndim != 2 or array.shape[1] != 784:
            raise ClientError(422, f"images have shape {form}; expected [28, 28] or [784]")
        if not np.isfinite(array).all():
            raise ClientError(422, "image values must be finite numbers (no NaN or infinity)")
        if array.min() < 0 or array.max() > 1:
            raise ClientError(422, "image values must lie in [0, 1]")
        blank = np.flatnonzero(np.ptp(array, axis=1) < MIN_INK_CONTRAST / 255)
        if len(blank):  # as for an uploaded file: a blank image is not answered with a guess
            raise ClientError(422, f"no digit found in image {first + int(blank[0])} (it is blank)")
        self.array[first : first + len(array)] = array
        self.filled += len(array)

    def odd_shape(self, images: list) -> str:
        """Name the first ragged image, or the first whose shape differs from image 0's."""
        reference = self.form
        for index, image in enumerate(images, start=self.filled):
            try:
                shape = list(np.shape(image))
            except ValueError:
                return f"image {index} is not a regular array (rows of different lengths)"
            if reference is None:
                reference = shape
            elif shape != reference:
                return f"image 0 has shape {reference}, image {index} has shape {shape}"
        return f"images have shape {reference}"
