"""The Python client without a server: retries of 503s, errors, the API key, what it sends.

Every exchange goes through httpx.MockTransport, so each request the client makes is seen here.
"""

from __future__ import annotations

import email.utils
import json
import re
import time

import httpx
import numpy as np
import pytest

from mnist_client import MnistClient, MnistClientError
from mnist_client.retry import retry_wait

PREDICTION = {"digit": 7, "confidence": 0.9, "probabilities": [0.01] * 7 + [0.9] + [0.01] * 2}


class Recorder:
    """A mock server answering with `answers` in turn; it keeps the requests and the sleeps."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def client(self, **options) -> MnistClient:
        return MnistClient(
            "http://mnist.test",
            transport=httpx.MockTransport(self.handle),
            sleep=self.sleeps.append,
            **options,
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def busy(retry_after: str | None = "2") -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"error": "the server is busy; retry shortly"}, headers=headers)


def test_a_503_is_retried_after_the_wait_retry_after_asks_for():
    server = Recorder(busy("2"), busy("1"), httpx.Response(200, json=[PREDICTION]))
    prediction = server.client().predict([0.5] * 784)
    assert prediction.digit == 7 and prediction.confidence == 0.9
    assert len(server.requests) == 3
    assert server.sleeps == [2.0, 1.0]
    # The retried requests carry the same body.
    assert len({r.content for r in server.requests}) == 1


def test_a_503_that_persists_raises_the_servers_message_after_the_retries():
    server = Recorder(*(busy() for _ in range(3)))
    with pytest.raises(MnistClientError) as caught:
        server.client(retries=2).predict_image(b"\x89PNG...")
    assert caught.value.status == 503
    assert caught.value.message == "the server is busy; retry shortly"
    assert len(server.requests) == 3 and server.sleeps == [2.0, 2.0]


def test_retry_after_is_capped_and_read_as_seconds_or_a_date():
    assert retry_wait(busy("3600"), 0, max_wait=30) == 30
    assert retry_wait(busy(None), 0, max_wait=30) == 0.5
    assert retry_wait(busy(None), 3, max_wait=30) == 4.0  # backoff doubles without a header
    assert retry_wait(busy("soon"), 1, max_wait=30) == 1.0  # unreadable: the backoff
    in_10_s = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_wait(busy(in_10_s), 0, max_wait=30) <= 10
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert retry_wait(busy(past), 0, max_wait=30) == 0


@pytest.mark.parametrize("status", [400, 401, 413, 422, 500])
def test_other_errors_are_not_retried_and_carry_the_servers_message(status):
    server = Recorder(httpx.Response(status, json={"error": f"reason {status}"}))
    with pytest.raises(MnistClientError) as caught:
        server.client().predict_image(b"x")
    assert (caught.value.status, caught.value.message) == (status, f"reason {status}")
    assert str(caught.value) == f"{status} reason {status}"
    assert len(server.requests) == 1 and server.sleeps == []


def test_an_error_without_a_json_body_keeps_its_first_line():
    server = Recorder(httpx.Response(502, text="Bad Gateway\n<html>...</html>"))
    with pytest.raises(MnistClientError, match="Bad Gateway") as caught:
        server.client().model_info()
    assert caught.value.status == 502


def test_no_server_and_no_answer_in_time_raise_the_client_error_without_a_status():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    refused = MnistClient("http://mnist.test", transport=httpx.MockTransport(refuse))
    with pytest.raises(
        MnistClientError, match=re.escape("cannot connect to http://mnist.test")
    ) as caught:
        refused.health()
    assert caught.value.status is None
    slow = MnistClient("http://mnist.test", timeout=2, transport=httpx.MockTransport(hang))
    with pytest.raises(
        MnistClientError, match=re.escape("no answer from http://mnist.test within 2 s")
    ):
        slow.predict_image(b"x")


def test_the_api_key_comes_from_the_argument_else_the_environment(monkeypatch):
    monkeypatch.setenv("MNIST_API_KEY", "from-env")
    server = Recorder(*(httpx.Response(200, json={"tag": None}) for _ in range(3)))
    server.client().model_info()
    server.client(api_key="from-arg").model_info()
    monkeypatch.setenv("MNIST_API_KEY", "")
    server.client().model_info()
    sent = [r.headers.get("authorization") for r in server.requests]
    assert sent == ["Bearer from-env", "Bearer from-arg", None]


def test_the_url_comes_from_the_argument_else_the_environment(monkeypatch):
    monkeypatch.setenv("MNIST_URL", "http://elsewhere:8080/")
    assert MnistClient().url == "http://elsewhere:8080"
    monkeypatch.delenv("MNIST_URL")
    assert MnistClient().url == "http://127.0.0.1:3000"


def test_arrays_and_lists_are_sent_as_the_json_the_service_reads():
    server = Recorder(*(httpx.Response(200, json=[PREDICTION] * 2) for _ in range(2)))
    client = server.client()
    client.predict_batch(np.zeros((2, 28, 28), dtype=np.float32))
    client.predict_batch([[0.0] * 784, [[1.0] * 28] * 28])
    first, second = (json.loads(r.content)["images"] for r in server.requests)
    assert np.asarray(first).shape == (2, 28, 28)
    assert len(second[0]) == 784 and len(second[1]) == 28
    assert server.requests[0].headers["content-type"] == "application/json"


def test_nan_is_sent_for_the_server_to_refuse_not_raised_by_the_encoder():
    server = Recorder(httpx.Response(400, json={"error": "NaN is not a valid JSON number"}))
    with pytest.raises(MnistClientError, match="NaN") as caught:
        server.client().predict([float("nan")] * 784)
    assert caught.value.status == 400 and b"NaN" in server.requests[0].content


def test_bulk_takes_uint8_arrays_or_bytes_and_nothing_else():
    answer = {"count": 2, "digits": [1, 2], "confidences": [0.5, 0.6]}
    server = Recorder(*(httpx.Response(200, json=answer) for _ in range(2)))
    pixels = np.arange(2 * 784, dtype=np.uint32).astype(np.uint8).reshape(2, 784)
    result = server.client().predict_bulk(pixels)
    assert (result.count, result.digits) == (2, [1, 2])
    server.client().predict_bulk(pixels.tobytes())
    assert [r.content for r in server.requests] == [pixels.tobytes()] * 2
    assert server.requests[0].headers["content-type"] == "application/octet-stream"
    with pytest.raises(TypeError, match="uint8"):
        server.client().predict_bulk(pixels.astype(np.float32))


def test_an_image_path_is_sent_under_its_file_name(tmp_path):
    (tmp_path / "three.png").write_bytes(b"png bytes")
    server = Recorder(httpx.Response(200, json=PREDICTION))
    server.client().predict_image(tmp_path / "three.png")
    body = server.requests[0].content
    assert b'name="image"; filename="three.png"' in body and b"png bytes" in body


def test_health_is_false_while_the_server_is_not_ready():
    server = Recorder(httpx.Response(503, text="not ready"), httpx.Response(200, text="ok"))
    client = server.client()
    assert client.health() is False
    assert client.health() is True
    assert server.sleeps == []  # a readiness probe is never retried


def test_a_prediction_keeps_the_uncertain_flag_when_the_server_sends_one():
    flagged = {**PREDICTION, "uncertain": True}
    server = Recorder(httpx.Response(200, json=PREDICTION), httpx.Response(200, json=flagged))
    client = server.client()
    assert client.predict_image(b"x").uncertain is None
    assert client.predict_image(b"x").uncertain is True


def test_the_cli_shows_the_uncertain_flag_when_the_server_sends_one(tmp_path, monkeypatch, capsys):
    from mnist_client import cli

    (tmp_path / "d.png").write_bytes(b"png")
    answers = Recorder(*(httpx.Response(200, json={**PREDICTION, "uncertain": True}),) * 2)
    transport = httpx.MockTransport(answers.handle)
    monkeypatch.setattr(
        cli, "MnistClient", lambda *a, **k: MnistClient(*a, transport=transport, **k)
    )
    assert cli.main([str(tmp_path / "d.png")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'd.png'}: 7 (confidence 0.9000, uncertain)\n"
    assert cli.main(["--json", str(tmp_path / "d.png")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["uncertain"] is True
