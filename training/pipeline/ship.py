"""Shipping a promoted model: the Docker image that packs its checkpoint, and optionally a bento.

Both are built from the repository (the build context) by their own CLIs, each with its output in
a log file. Failures come back as results with a one-line `note` or as exceptions; the caller
decides what they mean (for `mnist-build`: promoted, but not shipped).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.pipeline import REPO

LOCAL_BASE_IMAGE = "local/bookworm:latest"  # made by `make docker-engine` where no registry is


class DockerError(RuntimeError):
    """A docker command failed: the first line says which and how, the rest is its output."""


@dataclass
class ImageResult:
    built: bool = False
    tags: list[str] = field(default_factory=list)
    note: str = ""  # why it was not built, or skipped
    base_image: str | None = None
    command: list[str] = field(default_factory=list)
    image_id: str | None = None
    packed_sha256: str | None = None  # of the checkpoint found inside the image


@dataclass
class BentoResult:
    built: bool = False
    tag: str | None = None
    note: str = ""
    command: list[str] = field(default_factory=list)


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI with its output captured; `check` raises DockerError when it fails."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        last = output.splitlines()[-1] if output else "no output"
        command = f"docker {' '.join(args)}"
        raise DockerError(f"{command} exited {result.returncode}: {last}\n{output[-4000:]}")
    return result


def docker_problem() -> str | None:
    """Why no Docker engine can be used, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        result = docker("info", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return f"`docker info` failed: {lines[-1]}; start an engine with `make docker-engine`"
    return None


def base_image(requested: str | None = None) -> str | None:
    """The BASE_IMAGE build argument: `requested`, else the local base image when the engine has
    it, else None (the Dockerfile's own default)."""
    if requested is not None:
        return requested
    found = docker("image", "inspect", LOCAL_BASE_IMAGE, check=False).returncode == 0
    return LOCAL_BASE_IMAGE if found else None


@contextlib.contextmanager
def in_build_context(checkpoint: Path, version: str) -> Iterator[str]:
    """The checkpoint's path inside the build context (the repository), staged there if outside."""
    if checkpoint.resolve().is_relative_to(REPO):
        yield checkpoint.resolve().relative_to(REPO).as_posix()
        return
    staging = REPO / "artifacts" / f".ship-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(checkpoint, staging / "model.pt")
        yield (staging / "model.pt").relative_to(REPO).as_posix()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_logged(command: Sequence[str], log_path: Path) -> int:
    """Run `command` in the repository, stdout and stderr into `log_path`; its exit status."""
    with open(log_path, "w") as log:
        return subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode


def build_image(
    checkpoint: Path,
    tag: str,
    sha256: str,
    *,
    image_name: str,
    requested_base: str | None,
    log_path: Path,
    log: Callable[[str], None] = print,
) -> ImageResult:
    """`docker build` around `checkpoint` (model store `tag`), then check that the image packs
    exactly the file with `sha256`. Tags NAME:<version> and NAME:latest."""
    version = tag.split(":", 1)[1]
    result = ImageResult(base_image=base_image(requested_base))
    tags = [f"{image_name}:{version}", f"{image_name}:latest"]
    with in_build_context(checkpoint, version) as model_path:
        command = ["docker", "build", "--force-rm", "--build-arg", f"MODEL_PATH={model_path}"]
        if result.base_image:
            command += ["--build-arg", f"BASE_IMAGE={result.base_image}"]
        command += ["--build-arg", f"MODEL_TAG={tag}"]  # the image's /model_info names it
        command += ["--label", f"org.opencontainers.image.version={version}"]
        command += ["--label", f"mnist.model.tag={tag}", "--label", f"mnist.model.sha256={sha256}"]
        for image_tag in tags:
            command += ["-t", image_tag]
        result.command = [*command, str(REPO)]
        # The report folder is renamed when it is published: name the log, not its temp path.
        log(f"    {' '.join(result.command)}  (output: {log_path.name} in the report folder)")
        returncode = run_logged(result.command, log_path)
    if returncode != 0:
        result.note = f"docker build exited {returncode}; see {log_path.name} in the report folder"
        return result
    result.image_id = docker("image", "inspect", "--format", "{{.Id}}", tags[0]).stdout.strip()
    packed = docker(
        "run", "--rm", "--entrypoint", "sh", tags[0], "-c", 'sha256sum "$MODEL_PATH"', timeout=120
    ).stdout.split()
    result.packed_sha256 = packed[0] if packed else None
    if result.packed_sha256 != sha256:
        result.note = f"the image packs sha256 {result.packed_sha256}, expected {sha256}"
        return result
    result.built, result.tags = True, tags
    return result


def build_bento(tag: str, log_path: Path) -> BentoResult:
    """`bentoml build` of the repository; it packs `serving_tag()`, i.e. the promoted model."""
    cli = Path(sys.executable).with_name("bentoml")
    version = tag.split(":", 1)[1]
    result = BentoResult(command=[str(cli), "build", "--version", version, "-o", "tag", str(REPO)])
    if not cli.is_file():
        result.note = f"no bentoml CLI at {cli}; run `make setup`"
        return result
    returncode = run_logged(result.command, log_path)
    printed = log_path.read_text(errors="replace").splitlines()
    tags = [line.removeprefix("__tag__:") for line in printed if line.startswith("__tag__:")]
    if returncode != 0 or not tags:
        result.note = (
            f"bentoml build exited {returncode} without a bento tag; "
            f"see {log_path.name} in the report folder"
        )
        return result
    result.built, result.tag = True, tags[-1]
    return result
