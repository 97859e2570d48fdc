"""The Python client and `mnist-predict` against a real `bentoml serve` that needs an API key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mnist_client import MnistClient, MnistClientError
from tests.support import REPO
from tests.support.servers import Server, free_port, running_server, server_env

API_KEY = "s3cret"  # as in the README's examples
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def keyed_server(trained_checkpoint, tmp_path_factory) -> Iterator[Server]:
    # Its own BENTOML_HOME: every `bentoml serve` empties the home's Prometheus directory.
    home = tmp_path_factory.mktemp("client")
    env = server_env(home, MODEL_PATH=str(trained_checkpoint), API_KEY=API_KEY, MNIST_WORKERS="1")
    with running_server(env, home / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def client(keyed_server) -> Iterator[MnistClient]:
    with MnistClient(keyed_server.url, api_key=API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def ten_pixels() -> np.ndarray:
    return np.fromfile(SAMPLES / "ten.u8", dtype=np.uint8).reshape(10, 784)


@pytest.fixture(scope="module")
def ten_digits(offline_model, ten_pixels) -> list[int]:
    with torch.inference_mode():
        return offline_model(torch.from_numpy(ten_pixels / np.float32(255))).argmax(1).tolist()


def mnist_predict(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (`python -m mnist_client` = `mnist-predict`)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MNIST_URL", "MNIST_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "mnist_client", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_route_of_the_client_answers_like_the_offline_model(client, ten_pixels, ten_digits):
    assert client.health() is True
    assert client.predict_image(SAMPLES / "digit.png").digit == 7
    assert client.predict_image((SAMPLES / "digit.png").read_bytes()).digit == 7
    assert [p.digit for p in client.predict_images([SAMPLES / "digit.png"] * 2)] == [7, 7]
    floats = ten_pixels / np.float32(255)
    assert client.predict(floats[0]).digit == ten_digits[0]
    assert client.predict(floats[0].reshape(28, 28).tolist()).digit == ten_digits[0]
    assert [p.digit for p in client.predict_batch(floats)] == ten_digits
    bulk = client.predict_bulk(ten_pixels)
    assert (bulk.count, bulk.digits) == (10, ten_digits)
    info = client.model_info()
    assert 0.9 < info["test_accuracy"] <= 1 and len(info["sha256"]) == 64


def test_a_wrong_or_missing_key_raises_the_servers_401(keyed_server):
    for key in ("wrong", ""):
        client = MnistClient(keyed_server.url, api_key=key)
        with client, pytest.raises(MnistClientError) as caught:
            client.predict_image(SAMPLES / "digit.png")
        assert caught.value.status == 401
        assert caught.value.message == "missing or invalid API key (Authorization: Bearer <key>)"
        with MnistClient(keyed_server.url, api_key=key) as client:
            assert client.health() is True  # readiness needs no key


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.predict_image(b"not an image"), 400, "not a supported image file"),
        (lambda c: c.predict_image((SAMPLES / "ten.u8").read_bytes()), 400, "not a supported"),
        (lambda c: c.predict([0.0] * 784), 422, "no digit found"),
        (lambda c: c.predict([0.5] * 100), 422, "expected [28, 28] or [784]"),
        (lambda c: c.predict([2.0] * 784), 422, "[0, 1]"),
        (lambda c: c.predict_bulk(b"\x00" * 100), 422, "784"),
    ],
    ids=["garbage", "raw bytes as image", "blank", "wrong shape", "out of range", "bulk size"],
)
def test_bad_input_raises_the_client_error_with_the_servers_message(client, call, status, message):
    with pytest.raises(MnistClientError) as caught:
        call(client)
    assert caught.value.status == status
    assert message in caught.value.message


def test_the_cli_prints_the_digit_of_each_file(keyed_server, tmp_path):
    (tmp_path / "copy.png").write_bytes((SAMPLES / "digit.png").read_bytes())
    url, key = ["--url", keyed_server.url], ["--api-key", API_KEY]
    result = mnist_predict(*url, *key, "samples/digit.png", str(tmp_path / "copy.png"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("samples/digit.png: 7 (confidence 0.")
    assert lines[1].startswith(f"{tmp_path / 'copy.png'}: 7 (confidence 0.")
    as_json = mnist_predict(
        "--json", "samples/digit.png", MNIST_URL=keyed_server.url, MNIST_API_KEY=API_KEY
    )
    assert as_json.returncode == 0, as_json.stderr
    [answer] = json.loads(as_json.stdout)
    assert answer["file"] == "samples/digit.png" and answer["digit"] == 7
    assert answer["confidence"] == max(answer["probabilities"])


def test_the_cli_reports_bad_files_one_line_each_and_exits_1(keyed_server, tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"garbage")
    result = mnist_predict(
        "samples/digit.png",
        str(tmp_path / "garbage.png"),
        str(tmp_path / "missing.png"),
        MNIST_URL=keyed_server.url,
        MNIST_API_KEY=API_KEY,
    )
    assert result.returncode == 1
    assert result.stdout.startswith("samples/digit.png: 7 ")  # the good file still answered
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert errors[0].startswith(f"mnist-predict: error: {tmp_path / 'garbage.png'}: 400 not a")
    assert (
        errors[1] == f"mnist-predict: error: {tmp_path / 'missing.png'}: No such file or directory"
    )


def test_the_cli_stops_at_a_wrong_key_or_no_server_and_exits_1(keyed_server):
    wrong = mnist_predict("samples/digit.png", "samples/digit.png", "--url", keyed_server.url)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.splitlines() == [
        "mnist-predict: error: samples/digit.png: 401 missing or invalid API key "
        "(Authorization: Bearer <key>)"
    ]  # one line: the second file is not tried
    nobody = f"http://127.0.0.1:{free_port()}"
    refused = mnist_predict("samples/digit.png", "--url", nobody, "--json")
    assert refused.returncode == 1
    [answer] = json.loads(refused.stdout)
    assert answer["status"] is None and answer["error"].startswith(f"cannot connect to {nobody}")


@pytest.mark.parametrize(
    "args",
    [[], ["--nope", "samples/digit.png"], ["--jso", "samples/digit.png"], ["--timeout", "0", "x"]],
    ids=["no file", "unknown flag", "abbreviated flag", "zero timeout"],
)
def test_the_cli_refuses_bad_usage_with_exit_2(args):
    result = mnist_predict(*args, MNIST_URL="http://127.0.0.1:1")
    assert result.returncode == 2
    assert "usage: mnist-predict" in result.stderr and "Traceback" not in result.stderr


def test_the_readme_client_example_prints_what_its_comments_say(keyed_server, ten_digits):
    readme = (REPO / "README.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "MnistClient(" in b]
    env = {k: v for k, v in os.environ.items() if k != "MNIST_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=REPO,
        env={**env, "MNIST_URL": keyed_server.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with MnistClient(keyed_server.url, api_key=API_KEY) as client:
        version = client.model_info()["version"]
    assert result.stdout.splitlines() == [
        "7",
        str(ten_digits),
        str(ten_digits[1]),
        f"{version} True",
        "422 no digit found in image 0 (it is blank)",
    ]
