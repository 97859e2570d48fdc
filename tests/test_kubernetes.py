"""Kubernetes: the kustomize overlays in deploy/kubernetes/ render, validate, and describe the pod
that the image and the service really are.

No cluster can run here, so: every overlay is rendered with `kubectl kustomize` and validated
offline against the API schemas of the oldest and the newest Kubernetes supported
(`kubernetes-validate --strict`: unknown fields fail too); the rendered objects are checked
against the Dockerfile (port, user, writable paths) and each other (selectors, names); the probe
routes are asked on a real server that requires an API key; and the image is run in Docker the
way the pod spec runs it (read-only root, the emptyDir mounts, no capabilities, the preStop hook).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.requirements import require_docker_engine, unavailable
from tests.support import REPO
from tests.support.servers import free_port, running_server, server_env
from tests.test_swarm import docker, service_image  # one way to build and run the image

KUSTOMIZE_ROOT = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUSTOMIZE_ROOT / "overlays").iterdir() if path.is_dir())
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")  # the oldest and the newest supported
IMAGE_NAME = "mnist-service"  # what `make docker` and scripts/build tag
HEALTH_ROUTES = {"/livez", "/readyz"}  # the service's routes that need no API key
STOP_BUDGET_S = 10  # the server exits this long after SIGTERM at most
READY_TIMEOUT_S = 120


def tool(name: str) -> str:
    """A CLI from this virtual environment (the dev extra installs it), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        unavailable(f"no {name} (make setup installs it with the dev extra)")
    return str(found)


@functools.cache
def rendered(overlay: str) -> str:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUSTOMIZE_ROOT / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered(overlay)) if doc]


def one(overlay: str, kind: str) -> dict:
    found = [obj for obj in objects(overlay) if obj["kind"] == kind]
    assert len(found) == 1, f"{overlay}: {len(found)} {kind} objects"
    return found[0]


def pod_spec(overlay: str) -> dict:
    return one(overlay, "Deployment")["spec"]["template"]["spec"]


def server_container(overlay: str) -> dict:
    (container,) = pod_spec(overlay)["containers"]
    return container


@functools.cache
def runtime_stage() -> dict[str, list[str]]:
    """The Dockerfile's final stage: each instruction's arguments, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stage: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        instruction, argument = words[0].upper(), words[1] if len(words) > 1 else ""
        if instruction == "FROM":
            stage = {}
        stage.setdefault(instruction, []).append(argument)
    return stage


def image_env(name: str) -> str:
    """A variable the Dockerfile's final stage sets with ENV (KEY=value form)."""
    for argument in runtime_stage()["ENV"]:
        for pair in shlex.split(argument):
            key, _, value = pair.partition("=")
            if key == name:
                return value
    raise AssertionError(f"the Dockerfile sets no {name}")


def container_port(overlay: str, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in server_container(overlay)["ports"]}
    return ports[name_or_number]


# ---- rendering and validation --------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_validation(overlay: str, version: str, tmp_path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path) -> None:
    """The check above would pass anything if strictness were off: a misspelt field must fail."""
    deployment = one(OVERLAYS[0], "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSIONS[-1],
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0


def test_there_are_dev_and_production_overlays() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


# ---- the pod against the Dockerfile and the service ----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_container_uses_the_port_user_and_image_the_dockerfile_builds(overlay: str) -> None:
    container = server_container(overlay)
    (exposed,) = runtime_stage()["EXPOSE"]
    cmd = json.loads(runtime_stage()["CMD"][-1])
    assert container_port(overlay, "http") == int(exposed) == int(cmd[cmd.index("--port") + 1])
    uid, _, gid = runtime_stage()["USER"][-1].partition(":")
    security = pod_spec(overlay)["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid or uid))
    name, _, tag = container["image"].rpartition(":")
    assert name.rsplit("/", 1)[-1] == IMAGE_NAME, container["image"]
    assert tag and tag != "latest", f"{overlay}: pin the image tag, got {container['image']!r}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_service_health_routes_on_its_port(overlay: str) -> None:
    container = server_container(overlay)
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/livez"
    for probe in probes.values():
        assert probe["path"] in HEALTH_ROUTES
        assert container_port(overlay, probe["port"]) == int(runtime_stage()["EXPOSE"][0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_is_locked_down_and_writes_only_where_the_server_writes(overlay: str) -> None:
    spec, container = pod_spec(overlay), server_container(overlay)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
    assert writable == {"/tmp", image_env("BENTOML_HOME")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_shutdown_and_resources(overlay: str) -> None:
    deployment = one(overlay, "Deployment")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = server_container(overlay)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + STOP_BUDGET_S
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_key_scaling_and_budget_point_at_the_right_objects(overlay: str) -> None:
    deployment = one(overlay, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = server_container(overlay)
    (settings_ref,) = container["envFrom"]
    settings = one(overlay, "ConfigMap")
    assert settings_ref["configMapRef"]["name"] == settings["metadata"]["name"]
    assert settings["data"]["MNIST_WORKERS"] == "1"
    api_key = {e["name"]: e for e in container["env"]}["API_KEY"]["valueFrom"]["secretKeyRef"]
    secrets = [obj for obj in objects(overlay) if obj["kind"] == "Secret"]
    if overlay == "production":
        assert not secrets, "the production key is created in the cluster, never committed"
    for secret in secrets:
        assert secret["metadata"]["name"] == api_key["name"]
        assert api_key["key"] in secret["data"]
    hpa = one(overlay, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    for selector in (
        one(overlay, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(overlay, "Service")["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    (port,) = one(overlay, "Service")["spec"]["ports"]
    assert container_port(overlay, port["targetPort"]) == int(runtime_stage()["EXPOSE"][0])


# ---- against the real service --------------------------------------------------------------------


def test_probe_routes_answer_without_the_api_key_on_a_real_server(
    trained_checkpoint: Path, tmp_path
) -> None:
    """The probes send no credentials: their routes must answer 200 where every API route needs
    the key (the kubelet would otherwise never see the pod ready)."""
    key = uuid.uuid4().hex
    env = server_env(tmp_path / "home", MODEL_PATH=str(trained_checkpoint), API_KEY=key)
    probe_paths = {
        server_container(overlay)[kind]["httpGet"]["path"]
        for overlay in OVERLAYS
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    with running_server(env, tmp_path / "server.log") as server:
        for path in sorted(probe_paths):
            assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
        assert httpx.post(f"{server.url}/model_info", timeout=10).status_code == 401


@contextlib.contextmanager
def pod_like_container(
    image: str, overlay: str, key: str, scratch: Path
) -> Iterator[tuple[str, str]]:
    """`image` run the way the overlay's pod spec runs it: its user, read-only root, its emptyDir
    mounts, no capabilities, no privilege escalation, its settings and key."""
    container, spec = server_container(overlay), pod_spec(overlay)
    settings = one(overlay, "ConfigMap")["data"]
    security = spec["securityContext"]
    args = [
        "run",
        "-d",
        "--name",
        f"mnist-k8s-test-{uuid.uuid4().hex[:10]}",
        "--read-only",
        "--user",
        f"{security['runAsUser']}:{security['runAsGroup']}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        f"API_KEY={key}",
    ]
    for name, value in settings.items():
        args += ["-e", f"{name}={value}"]
    for mount in container["volumeMounts"]:
        # An emptyDir is an empty directory with mode 0777. (Not a Docker tmpfs: Docker gives
        # one the mode of the image's directory it covers, owned by root, whatever tmpfs-mode.)
        empty_dir = scratch / mount["name"]
        empty_dir.mkdir()
        empty_dir.chmod(0o777)
        args += ["--mount", f"type=bind,source={empty_dir},destination={mount['mountPath']}"]
    port = free_port()
    args += ["-p", f"127.0.0.1:{port}:{container_port(overlay, 'http')}", image]
    name = docker(*args).stdout.strip()
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def wait_ready(url: str, path: str, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        if docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
            break
        time.sleep(0.5)
    logs = docker("logs", "--tail", "40", name, check=False)
    pytest.fail(f"{path} never answered 200:\n{logs.stdout}{logs.stderr}")


@pytest.mark.docker
@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_the_image_runs_as_the_production_pod_spec_says(trained_checkpoint: Path, tmp_path) -> None:
    require_docker_engine()
    overlay, key = "production", uuid.uuid4().hex
    container = server_container(overlay)
    with (
        service_image(f"mnist-k8s-test:{uuid.uuid4().hex[:10]}", trained_checkpoint) as image,
        pod_like_container(image, overlay, key, tmp_path) as (name, url),
    ):
        wait_ready(url, container["startupProbe"]["httpGet"]["path"], name)
        for kind in ("readinessProbe", "livenessProbe"):
            path = container[kind]["httpGet"]["path"]
            assert httpx.get(f"{url}{path}", timeout=5).status_code == 200, path
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{url}/model_info", headers=auth, timeout=10).status_code == 200
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert docker("exec", name, *pre_stop, timeout=60).returncode == 0
        grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
        started = time.monotonic()
        docker("stop", "--time", str(grace), name, timeout=grace + 30)
        stop_s = time.monotonic() - started
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert exit_code != "137", "SIGTERM did not stop the server"
    assert stop_s < STOP_BUDGET_S
