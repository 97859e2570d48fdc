"""The Docker image end to end: build it from the repository root, run it, classify MNIST digits.

Needs a Docker engine (`bash scripts/docker-engine.sh` starts one, even without a registry). Without
one these tests are skipped, except under CI=true, where a missing engine is a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.requirements import require_docker_engine
from tests.support import REPO
from tests.support.docker_images import remove_checkpoint_stage, remove_image
from tests.support.servers import free_port
from training.pipeline.ship import base_image, docker
from training.registry import MODEL_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(1800)]

BUILD_TIMEOUT_S = 1500
READY_TIMEOUT_S = 120
STOP_BUDGET_S = 10


def base_image_args() -> list[str]:
    """Build on the debootstrapped base image when there is one (no registry needed)."""
    base = base_image()
    return ["--build-arg", f"BASE_IMAGE={base}"] if base else []


def wait_until_ready(name: str, base_url: str) -> None:
    """Poll /readyz; fail early, with the container's log, if the container exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet; the first connections can also be reset
        running = docker("inspect", "--format", "{{.State.Running}}", name, check=False)
        if running.stdout.strip() != "true":
            logs = docker("logs", "--tail", "50", name, check=False)
            pytest.fail(f"container {name} exited before ready:\n{logs.stdout}{logs.stderr}")
        time.sleep(1)
    logs = docker("logs", "--tail", "50", name, check=False)
    pytest.fail(f"{base_url}/readyz not 200 after {READY_TIMEOUT_S} s:\n{logs.stdout}{logs.stderr}")


@contextlib.contextmanager
def running_container(image: str, *run_options: str) -> Iterator[tuple[str, str]]:
    """Start the image on a free port of 127.0.0.1; yield (container name, base URL); remove it."""
    name = f"mnist-service-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:3000", *run_options, image)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(name, base_url)
        yield name, base_url
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def docker_engine() -> None:
    require_docker_engine()


@pytest.fixture(scope="module")
def image(docker_engine: None, trained_checkpoint: Path) -> Iterator[str]:
    """Build the image from the repository root around the session's trained checkpoint."""
    build_id = uuid.uuid4().hex[:12]
    tag = f"mnist-service-test:{build_id}"
    # The checkpoint must lie inside the build context; artifacts/ is git-ignored.
    model_path = f"artifacts/docker-test-{build_id}/model.pt"
    try:
        try:
            (REPO / model_path).parent.mkdir(parents=True)
            shutil.copy2(trained_checkpoint, REPO / model_path)
            docker(
                "build",
                "--force-rm",
                *base_image_args(),
                "--build-arg",
                f"MODEL_PATH={model_path}",
                "--build-arg",
                f"MODEL_TAG={MODEL_NAME}:{build_id}",  # as scripts/build passes it
                "-t",
                tag,
                str(REPO),
                timeout=BUILD_TIMEOUT_S,
            )
        finally:
            shutil.rmtree((REPO / model_path).parent, ignore_errors=True)
        yield tag
    finally:
        remove_image(tag, model_path)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, str]]:
    with running_container(image) as name_and_url:
        yield name_and_url


def test_predicts_the_digits_the_offline_model_predicts(
    container: tuple[str, str], mnist_test_pngs: list[tuple[bytes, int]]
) -> None:
    _, base_url = container
    assert mnist_test_pngs
    for index, (png, expected_digit) in enumerate(mnist_test_pngs):
        response = httpx.post(
            f"{base_url}/predict_image",
            files={"image": (f"digit-{index}.png", png, "image/png")},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["digit"] == expected_digit, f"image {index}: {answer}"
        assert 0.0 <= answer["confidence"] <= 1.0
        assert len(answer["probabilities"]) == 10
        assert answer["confidence"] == pytest.approx(max(answer["probabilities"]))


def test_open_inference_clients_work_against_the_image(
    container: tuple[str, str], mnist_test_pngs: list[tuple[bytes, int]]
) -> None:
    import asyncio

    import numpy as np
    import tritonclient.http as triton
    from kserve import InferenceRESTClient, RESTConfig

    _, base_url = container
    client = triton.InferenceServerClient(base_url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("mnist")
    files = [png for png, _ in mnist_test_pngs[:20]]
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    digits = client.infer("mnist", [tensor]).as_numpy("digit").tolist()
    assert digits == [digit for _, digit in mnist_test_pngs[:20]]

    async def kserve_ready() -> bool:
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            return await rest.is_model_ready(base_url, "mnist")
        finally:
            await rest.close()

    assert asyncio.run(kserve_ready())


def test_model_info_names_the_store_tag_the_image_was_built_from(
    image: str, container: tuple[str, str], trained_checkpoint: Path
) -> None:
    _, base_url = container
    version = image.rpartition(":")[2]  # the fixture passed MODEL_TAG=mnist-mlp:<its build id>
    info = httpx.get(f"{base_url}/model_info", timeout=10).json()
    assert info["tag"] == f"{MODEL_NAME}:{version}" and info["version"] == version
    assert info["source"] == "file"
    assert info["sha256"] == hashlib.sha256(trained_checkpoint.read_bytes()).hexdigest()
    model = httpx.get(f"{base_url}/v2/models/mnist", timeout=10).json()
    assert model["versions"] == [version]  # the Open Inference model version is the same


def test_server_runs_as_non_root_user(container: tuple[str, str]) -> None:
    name, _ = container
    uid = docker("exec", name, "id", "-u").stdout.strip()
    assert uid.isdigit() and uid != "0", f"server runs as uid {uid!r}"


def test_healthcheck_command_passes_on_a_ready_server(container: tuple[str, str]) -> None:
    name, _ = container
    config = docker("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout
    healthcheck = json.loads(config)
    assert healthcheck and healthcheck["Test"][0] == "CMD", healthcheck
    result = docker("exec", name, *healthcheck["Test"][1:], check=False, timeout=30)
    assert result.returncode == 0, result.stderr


def test_image_holds_no_cuda(image: str) -> None:
    packages = docker(
        "run", "--rm", "--entrypoint", "pip", image, "list", "--format=freeze", timeout=120
    ).stdout.lower()
    cuda = [
        line
        for line in packages.splitlines()
        if line.startswith(("nvidia-", "triton", "cuda")) and not line.startswith("nvidia-ml-py")
    ]
    assert not cuda, cuda
    torch_cuda = docker(
        "run", "--rm", "--entrypoint", "python", image,
        "-c", "import torch; print(torch.version.cuda)",
        timeout=120,
    ).stdout.strip()  # fmt: skip
    assert torch_cuda == "None"


IMPORTS_OF_THE_SERVICE = """
import importlib.util, json, sys
import service.service
print(json.dumps({
    "pipeline_found": importlib.util.find_spec("training.pipeline") is not None,
    "training_modules": sorted(name for name in sys.modules if name.startswith("training")),
}))
"""


def test_image_holds_the_training_core_but_not_the_pipeline(image: str) -> None:
    """The service loads in the image, with the training core and without the pipeline."""
    files = docker(
        "run", "--rm", "--entrypoint", "find", image, "/app/training", "-name", "*.py",
        timeout=120,
    ).stdout.split()  # fmt: skip
    assert "/app/training/checkpoint.py" in files
    assert not [f for f in files if "pipeline" in f], files
    imported = (
        docker(
            "run",
            "--rm",
            "--entrypoint",
            "python",
            image,
            "-c",
            IMPORTS_OF_THE_SERVICE,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    found = json.loads(imported)
    assert not found["pipeline_found"]
    assert "training.checkpoint" in found["training_modules"]
    assert not [m for m in found["training_modules"] if m.startswith("training.pipeline")]


# What docs/docker.md says a read-only container needs: the server writes only BENTOML_HOME
# (/app/bentoml, owned by the image's uid 10001) and /tmp.
READ_ONLY = ["--read-only", "--tmpfs", "/tmp", "--tmpfs", "/app/bentoml:uid=10001,gid=10001"]


def test_a_read_only_container_with_its_two_tmpfs_gets_ready_and_answers(
    image: str, mnist_test_pngs: list[tuple[bytes, int]]
) -> None:
    with running_container(image, *READ_ONLY) as (name, base_url):
        png, digit = mnist_test_pngs[0]
        response = httpx.post(
            f"{base_url}/predict_image", files={"image": ("d.png", png, "image/png")}, timeout=30
        )
        assert response.status_code == 200 and response.json()["digit"] == digit, response.text
        read_only = docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name)
        assert read_only.stdout.strip() == "true"
        probe = docker("exec", name, "touch", "/app/probe", check=False)
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    # Without the owner, the tmpfs over BENTOML_HOME is root's: the server stops at start.
    plain = [*READ_ONLY[:-1], "/app/bentoml"]
    refused = docker("run", "--rm", *plain, image, check=False, timeout=120)
    assert refused.returncode != 0
    assert "Permission denied: '/app/bentoml" in refused.stdout + refused.stderr


def test_docker_stop_ends_the_server_promptly(image: str) -> None:
    with running_container(image) as (name, _):
        started = time.monotonic()
        docker("stop", "--time", str(STOP_BUDGET_S), name, timeout=STOP_BUDGET_S + 30)
        elapsed = time.monotonic() - started
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    # 137 would mean SIGTERM was ignored and docker had to SIGKILL after the grace period.
    assert exit_code != "137", f"killed after {elapsed:.1f} s: SIGTERM did not stop the server"
    assert elapsed < STOP_BUDGET_S


def test_build_without_checkpoint_fails_with_a_clear_message(docker_engine: None) -> None:
    try:
        result = docker(
            "build",
            "--force-rm",
            *base_image_args(),
            "--build-arg",
            "MODEL_PATH=artifacts/no-such-checkpoint.pt",
            "--target",
            "checkpoint",
            str(REPO),
            check=False,
            timeout=600,
        )
    finally:
        # A failed build ends the stage at its COPY (of pyproject.toml alone); the RUN step of a
        # successful one is a concurrent build's.
        remove_checkpoint_stage(lambda step: "#(nop) COPY" in step and "/checkpoint/" in step)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "checkpoint 'artifacts/no-such-checkpoint.pt' not found" in output, output[-2000:]
    assert "make train" in output
