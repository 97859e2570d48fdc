"""Rolling a shipped image into the running Swarm service: `mnist-build --deploy`.

The rolling itself is `scripts/rollout deploy` (one replica at a time, start-first; Swarm rolls
an image whose replicas fail or never get ready back by itself; the service keeps its rollout
history in labels), so a build and an operator roll out the same way. Here: check the target
before anything is trained, run the script with its output in a log, and say in one line what
happened. The image is this node's own (no registry push), hence `--no-resolve-image`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.pipeline import REPO
from training.pipeline.ship import DockerError, docker

ROLLOUT = REPO / "scripts" / "rollout"


@dataclass
class DeployResult:
    deployed: bool = False
    service: str = ""
    image: str = ""
    previous_image: str | None = None  # what the service ran before
    serving_image: str | None = None  # what it runs after (the previous one if rolled back)
    update_state: str | None = None  # Swarm's UpdateStatus.State at the end
    seconds: float = 0.0
    note: str = ""  # the outcome in one line
    command: list[str] | None = None


def service_image(service: str) -> tuple[str, str | None]:
    """(the image the service's spec runs, its update state); DockerError if there is none."""
    found = docker("service", "inspect", service, timeout=30)
    info = json.loads(found.stdout)[0]
    state = (info.get("UpdateStatus") or {}).get("State")
    return info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], state


def target_problem(service: str) -> str | None:
    """Why `service` cannot be rolled out to (no swarm, no such service), or None."""
    try:
        service_image(service)
    except DockerError as exc:
        return f"cannot deploy to the Swarm service {service!r}: {str(exc).splitlines()[0]}"
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"cannot deploy to the Swarm service {service!r}: {exc}"
    return None


def roll_out(
    image: str,
    service: str,
    *,
    timeout_s: float,
    log_path: Path,
    log: Callable[[str], None] = print,
    rollout: Path = ROLLOUT,
) -> DeployResult:
    """`scripts/rollout deploy image` on `service`, its output echoed and kept in `log_path`."""
    result = DeployResult(service=service, image=image)
    result.command = [sys.executable, str(rollout), "--service", service, "--no-resolve-image"]
    result.command += ["--timeout", f"{timeout_s:g}", "deploy", image]
    try:
        result.previous_image, _ = service_image(service)
    except DockerError as exc:
        result.note = f"cannot inspect the Swarm service {service!r}: {str(exc).splitlines()[0]}"
        return result
    log(f"    {' '.join(result.command)}  (output: {log_path})")
    started = time.perf_counter()
    lines: list[str] = []
    with open(log_path, "w") as out:
        process = subprocess.Popen(
            result.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            lines.append(line.rstrip())
            log(f"    {line.rstrip()}")
        returncode = process.wait()
    result.seconds = round(time.perf_counter() - started, 1)
    with contextlib.suppress(DockerError):
        result.serving_image, result.update_state = service_image(service)
    if returncode == 0 and result.serving_image == image:
        result.deployed = True
        result.note = f"{service} serves {image} (was {result.previous_image})"
    else:
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        result.note = (
            f"rollout of {image} to {service} failed (scripts/rollout exited {returncode}; "
            f"serving {result.serving_image}): {last.removeprefix('error: ')}"
        )
    return result
