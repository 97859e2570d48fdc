"""The in-memory multipart parser: what clients send comes back part by part, or a clear error."""

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.multipart import MultipartError, parse_multipart, parse_parts, single_part


def encode(files=None, data=None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_files_and_fields_come_back_in_order():
    body, content_type = encode(
        files=[("images", ("a.png", b"first")), ("images", ("b.png", b"\r\nsecond--"))],
        data={"note": "hello"},
    )
    parts = parse_multipart(body, content_type, max_parts=10)
    assert [(p.name, p.filename, p.content) for p in parts] == [
        ("note", None, b"hello"),
        ("images", "a.png", b"first"),
        ("images", "b.png", b"\r\nsecond--"),
    ]


def test_binary_content_is_exact():
    payload = bytes(range(256)) * 40
    body, content_type = encode(files={"image": ("x.bin", payload)})
    assert parse_multipart(body, content_type, 1)[0].content == payload


@pytest.mark.parametrize("cut", [1, 20, 60, -20, -8])
def test_truncated_body_is_refused(cut):
    body, content_type = encode(files={"image": ("x.png", b"0123456789" * 5)})
    with pytest.raises(MultipartError, match=r"truncated|malformed"):
        parse_multipart(body[:cut], content_type, 1)


def test_missing_boundary_is_refused():
    body, _ = encode(files={"image": ("x.png", b"abc")})
    with pytest.raises(MultipartError, match="boundary"):
        parse_multipart(body, "multipart/form-data", 1)


def test_too_many_parts_are_refused():
    body, content_type = encode(files=[("images", (f"{i}.png", b"x")) for i in range(5)])
    with pytest.raises(MultipartError, match="more than 4 parts"):
        parse_multipart(body, content_type, 4)


def test_garbage_is_refused():
    with pytest.raises(MultipartError):
        parse_multipart(b"not multipart at all", "multipart/form-data; boundary=abc", 4)


@given(
    content=st.binary(max_size=300) | st.sampled_from([b"\r\n--b", b"--b--", b"\r\n\r\n"]),
    name=st.text(min_size=1, max_size=10),
    filename=st.text(max_size=10) | st.none(),
    extra=st.sampled_from([b"", b"Content-Type: image/png\r\n", b"X: y\r\n", b"bad\r\n"]),
    tail=st.sampled_from([b"", b"\r\n", b"junk"]),
)
def test_the_one_part_shortcut_agrees_with_the_full_parser(content, name, filename, extra, tail):
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    body = (
        b"--b\r\nContent-Disposition: "
        + disposition.encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + content
        + b"\r\n--b--"
        + tail
    )
    fast = single_part(body, b"b")
    if fast is None:
        return  # left to the full parser
    full = parse_parts(body, b"b", max_parts=10)
    assert [(p.name, p.filename, p.content) for p in full] == [
        (fast.name, fast.filename, fast.content)
    ]
