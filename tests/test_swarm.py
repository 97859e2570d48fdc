"""Docker Swarm: the stack in deploy/swarm/ keeps answering through rollouts, failures and scaling.

One single-node swarm (initialised here unless the engine is already a manager, and left again
only then), one stack deployed for the whole module: 3 replicas of the service image behind the
HAProxy image, the API key as a Docker secret. Each test drives a bounded load through the load
balancer (c=16, at least LOAD_S seconds, every answer checked) while it changes the stack, and
leaves it at 3 healthy replicas for the next. What they measure lands in test-artifacts/swarm.json
(docs/deploy.md quotes it).

Needs a Docker engine (`bash scripts/docker-engine.sh`); skipped without one, except under CI=true.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch

from service.preprocess import preprocess_image_bytes
from tests.conftest import DATA_DIR
from tests.requirements import require_docker_engine, unavailable
from tests.support import REPO
from tests.support.docker_images import remove_image
from tests.support.servers import free_port
from training import load_model
from training.pipeline.deploy import roll_out
from training.train import TrainConfig, train_and_save

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(1800)]

STACK_FILE = REPO / "deploy" / "swarm" / "stack.yml"
LB_CONTEXT = REPO / "deploy" / "swarm" / "haproxy"
ROLLOUT = REPO / "scripts" / "rollout"
BUILD = REPO / "scripts" / "build"
MEASUREMENTS = REPO / "test-artifacts" / "swarm.json"
LOCAL_BASE_IMAGE = "local/bookworm:latest"  # scripts/docker-engine.sh makes it
GWBRIDGE = "docker_gwbridge"  # the bridge `docker swarm init` creates for host-mode ports
REPLICAS = 3
CONCURRENCY = 16
# The scenarios' load is paced to about a third of what 3 replicas answer here (measured by the
# first test, unpaced): at full load on 2 cores a starting replica took ~26 s to get ready instead
# of ~5, and a rollout 90 s. Production rolls out with headroom too.
PACED_RATE = 200  # requests per second, all clients together
LOAD_S = 30  # each scenario's load lasts at least this long, and as long as its change takes
CAPACITY_BACK_S = 15  # a killed replica is replaced and serving again within this
STOP_BUDGET_S = 10  # SIGTERM to exit, requests in flight finished
CONVERGE_S = 240
BUILD_TIMEOUT_S = 1500
SAMPLES = 60  # /model_info calls that must all name the expected model


def docker(
    *args: str, timeout: float = 120, check: bool = True, env: dict | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The docker CLI, output captured; a failure raises with its output."""
    result = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def rollout(stack: Stack, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """scripts/rollout against the test's service; its result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROLLOUT), "--service", stack.service, "--no-resolve-image", *args],
        capture_output=True,
        text=True,
        timeout=CONVERGE_S * 2,
    )
    return result, time.monotonic() - started


# ---- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """c clients, each one request at a time on a kept-alive connection, every answer checked."""

    url: str
    key: str
    digits: list[tuple[bytes, int]]  # (PNG, the digit every served model answers for it)
    concurrency: int = CONCURRENCY
    rate_limit: float | None = PACED_RATE  # None: each client sends as fast as it is answered
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        interval = self.concurrency / self.rate_limit if self.rate_limit else 0.0
        next_at = time.monotonic() + interval * index / self.concurrency
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            turn = index
            while not self._stop.is_set():
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
                png, digit = self.digits[turn % len(self.digits)]
                turn += self.concurrency
                problem = self.check(http, png, digit)
                with self._lock:
                    self.requests += 1
                    if problem:
                        self.failures.append(problem)

    @staticmethod
    def check(http: httpx.Client, png: bytes, digit: int) -> str | None:
        """Why this answer is wrong, or None: 200 with the expected digit."""
        try:
            response = http.post("/predict_image", files={"image": ("d.png", png, "image/png")})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return f"{response.status_code}: {response.text[:200]}"
        answer = response.json().get("digit")
        return None if answer == digit else f"digit {answer}, expected {digit}"

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "failed": len(self.failures),
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(self.rate),
            "first_failures": self.failures[:5],
        }


@contextlib.contextmanager
def under_load(
    stack: Stack,
    min_s: float = LOAD_S,
    rate_limit: float | None = PACED_RATE,
    digits: list[tuple[bytes, int]] | None = None,
) -> Iterator[Load]:
    """Load through the load balancer while the body runs, and at least `min_s` seconds."""
    load = Load(stack.url, stack.key, digits or stack.digits, rate_limit=rate_limit)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(load.concurrency) as pool:
        clients = [pool.submit(load.client, i) for i in range(load.concurrency)]
        try:
            yield load
            time.sleep(max(0.0, min_s - (time.monotonic() - started)))
        finally:
            load._stop.set()
            for client in clients:
                client.result()
    load.seconds = time.monotonic() - started
    assert load.requests > 0


# ---- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    name: str
    url: str
    stats_url: str
    key: str
    digits: list[tuple[bytes, int]]
    images: Images
    measured: dict

    @property
    def service(self) -> str:
        return f"{self.name}_mnist"

    @property
    def network(self) -> str:
        return f"{self.name}_mnist"

    def slots(self) -> dict[str, dict[str, str]]:
        """HAProxy's replica slots by name, each a row of its stats: addr ("" while empty),
        status, scur (requests in flight), eresp, wretr... (see HAProxy's management guide)."""
        text = httpx.get(f"{self.stats_url}/stats;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            r["svname"]: r for r in rows if r["pxname"] == "replicas" and r["svname"] != "BACKEND"
        }

    def servers(self) -> list[dict[str, str]]:
        """The slots that hold a replica."""
        return [row for row in self.slots().values() if row["addr"]]

    def up(self) -> list[dict[str, str]]:
        return [s for s in self.servers() if s["status"].startswith("UP")]

    def spec_image(self) -> str:
        spec = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
        return docker("service", "inspect", "--format", spec, self.service).stdout.strip()

    def update_state(self) -> str:
        found = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", self.service)
        return (json.loads(found.stdout) or {}).get("State", "")

    def containers(self) -> list[str]:
        """Ids of the service's running containers."""
        label = f"label=com.docker.swarm.service.name={self.service}"
        return docker("ps", "--quiet", "--filter", label).stdout.split()

    def address(self, container: str) -> str:
        template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return docker("inspect", "--format", template, container).stdout.strip()

    def model_info(self, headers: dict | None = None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.key}"} if headers is None else headers
        return httpx.post(f"{self.url}/model_info", headers=auth, timeout=10)

    def served_models(self, samples: int = SAMPLES) -> dict[str, set[str]]:
        """sha256 -> the HAProxy slots that answered with it, over `samples` calls."""
        served: dict[str, set[str]] = {}
        for _ in range(samples):
            response = self.model_info()
            assert response.status_code == 200, response.text
            served.setdefault(response.json()["sha256"], set()).add(response.headers["x-served-by"])
        return served


def wait_for(condition, timeout: float, what: str, poll: float = 0.25) -> float:
    """Poll `condition` until true; the seconds it took. Fails naming `what`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if condition():
                return time.monotonic() - started
        time.sleep(poll)
    raise AssertionError(f"not within {timeout} s: {what}")


def wait_for_replicas(stack: Stack, count: int = REPLICAS, timeout: float = CONVERGE_S) -> float:
    """Until exactly `count` containers run and HAProxy has each of them UP."""

    def converged() -> bool:
        addresses = {stack.address(c) for c in stack.containers()}
        up = {ip(row) for row in stack.up()}
        return len(addresses) == count and up == addresses

    return wait_for(converged, timeout, f"{count} replicas of {stack.service} up in HAProxy")


def assert_serves_everywhere(stack: Stack, sha256: str) -> None:
    """Many /model_info calls through the load balancer: all this model, from every replica."""
    served = stack.served_models()
    assert set(served) == {sha256}, f"expected only {sha256[:12]}, served {served}"
    assert len(served[sha256]) == REPLICAS, f"answered by {served[sha256]}"


# ---- fixtures ------------------------------------------------------------------------------------


@dataclass
class Models:
    """Checkpoint files: the session's model, another one, and a tampered copy of the first."""

    first: Path
    second: Path
    tampered: Path

    @staticmethod
    def sha256(path: Path) -> str:
        import hashlib

        return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Images:
    first: str
    second: str
    broken: str  # a tampered checkpoint: the server exits at start
    never_ready: str  # the server starts and never gets ready
    lb: str


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A swarm this node manages; initialised (and left at the end) only if there was none."""
    require_docker_engine()
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    node_state, manager = state.stdout.split()
    if node_state == "active" and manager == "true":
        yield
        return
    if node_state != "inactive":
        unavailable(f"this engine is in swarm state {node_state!r} (manager: {manager})")
    had_bridge = docker("network", "inspect", GWBRIDGE, check=False).returncode == 0
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force", check=False)
        if not had_bridge:  # `swarm init` made it, `swarm leave` keeps it
            docker("network", "rm", GWBRIDGE, check=False)


@pytest.fixture(scope="module")
def models(
    trained_checkpoint: Path, mnist_train, mnist_test, mnist_md5, tmp_path_factory
) -> Models:
    folder = tmp_path_factory.mktemp("swarm-models")
    second = folder / "second.pt"
    train_and_save(
        TrainConfig(epochs=1, seed=1), mnist_train, mnist_test, second, data_md5=mnist_md5
    )
    payload = torch.load(trained_checkpoint, weights_only=True)
    first_weight = next(iter(payload["state_dict"].values()))
    first_weight.view(-1)[0] += 1.0  # the recorded weights_sha256 no longer matches
    tampered = folder / "tampered.pt"
    torch.save(payload, tampered)
    return Models(trained_checkpoint, second, tampered)


def build(tag: str, context: Path, *args: str) -> None:
    base = docker("image", "inspect", LOCAL_BASE_IMAGE, check=False).returncode == 0
    base_args = ["--build-arg", f"BASE_IMAGE={LOCAL_BASE_IMAGE}"] if base else []
    docker(
        "build", "--force-rm", *base_args, *args, "-t", tag, str(context), timeout=BUILD_TIMEOUT_S
    )


def derived_image(tag: str, base: str, checkpoint: Path, folder: Path) -> None:
    """`base` with another checkpoint: one layer, seconds to build."""
    folder.mkdir()
    shutil.copy2(checkpoint, folder / "model.pt")
    (folder / "Dockerfile").write_text(f"FROM {base}\nCOPY model.pt /app/model.pt\n")
    build(tag, folder)


def never_ready_image(tag: str, base: str, folder: Path) -> None:
    """`base` whose checkpoint is a FIFO nobody writes to: reading it blocks forever, as on a
    hung network mount, so the server runs but never listens, let alone answers /readyz."""
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"FROM {base}\nUSER root\nRUN rm /app/model.pt && mkfifo -m 0644 /app/model.pt\n"
        "USER 10001:10001\n"
    )
    build(tag, folder)


@contextlib.contextmanager
def service_image(tag: str, checkpoint: Path) -> Iterator[str]:
    """The service image from the repository's Dockerfile around `checkpoint`; removed after."""
    model_path = f"artifacts/{tag.replace(':', '-')}/model.pt"  # inside the build context
    try:
        (REPO / model_path).parent.mkdir(parents=True)
        shutil.copy2(checkpoint, REPO / model_path)
        try:
            build(tag, REPO, "--build-arg", f"MODEL_PATH={model_path}")
        finally:
            shutil.rmtree((REPO / model_path).parent, ignore_errors=True)
        yield tag
    finally:
        remove_image(tag, model_path)


@pytest.fixture(scope="module")
def images(swarm: None, models: Models, tmp_path_factory) -> Iterator[Images]:
    """The service image built once from the Dockerfile; the others derived from it."""
    build_id = uuid.uuid4().hex[:10]
    kinds = ("a", "b", "broken", "never-ready", "lb")
    names = Images(*(f"mnist-swarm-test-{n}:{build_id}" for n in kinds))
    folder = tmp_path_factory.mktemp("swarm-images")
    with service_image(names.first, models.first):
        try:
            derived_image(names.second, names.first, models.second, folder / "second")
            derived_image(names.broken, names.first, models.tampered, folder / "broken")
            never_ready_image(names.never_ready, names.first, folder / "never-ready")
            build(names.lb, LB_CONTEXT)
            yield names
        finally:
            for tag in (names.never_ready, names.broken, names.second, names.lb):
                docker("rmi", "--force", tag, check=False)


@pytest.fixture(scope="module")
def agreed_digits(models: Models, mnist_test, mnist_test_pngs) -> list[tuple[bytes, int]]:
    """Test digits (as PNGs) that both models classify alike: the load checks every answer."""
    images, _ = mnist_test
    with torch.inference_mode():
        second = load_model(models.second)(images[: len(mnist_test_pngs)]).argmax(dim=1).tolist()
    agreed = [
        (png, d) for (png, d), other in zip(mnist_test_pngs, second, strict=True) if d == other
    ]
    assert len(agreed) >= 50
    return agreed[:50]


@pytest.fixture(scope="module")
def measured() -> Iterator[dict]:
    """What the tests measured, written to test-artifacts/swarm.json at the end."""
    numbers: dict = {"cpus": os.cpu_count(), "replicas": REPLICAS, "concurrency": CONCURRENCY}
    yield numbers
    MEASUREMENTS.parent.mkdir(exist_ok=True)
    MEASUREMENTS.write_text(json.dumps(numbers, indent=2) + "\n")


def stack_resources(name: str) -> list[str]:
    """What of the stack is still there: services, containers, networks."""
    label = f"label=com.docker.stack.namespace={name}"
    found = [
        f"service {s}" for s in docker("service", "ls", "-q", "--filter", label).stdout.split()
    ]
    found += [f"container {c}" for c in docker("ps", "-aq", "--filter", label).stdout.split()]
    found += [
        f"network {n}" for n in docker("network", "ls", "-q", "--filter", label).stdout.split()
    ]
    return found


@pytest.fixture(scope="module")
def built_by_tests(swarm: None) -> Iterator[list[tuple[str, str]]]:
    """(image tag, its checkpoint's path in the build context) of images that tests build while
    the stack runs; removed after the stack (which may still run them) is gone."""
    built: list[tuple[str, str]] = []
    yield built
    for tag, model_path in built:
        remove_image(tag, model_path)


@pytest.fixture(scope="module")
def stack(
    swarm: None,
    images: Images,
    agreed_digits,
    measured: dict,
    models: Models,
    built_by_tests: list[tuple[str, str]],
) -> Iterator[Stack]:
    name = f"mnisttest{uuid.uuid4().hex[:6]}"
    key = uuid.uuid4().hex
    secret_id = docker("secret", "create", f"{name}_api_key", "-", stdin=key).stdout.strip()
    port, stats_port = free_port(), free_port()
    env = {
        **os.environ,
        "MNIST_IMAGE": images.first,
        "MNIST_LB_IMAGE": images.lb,
        "MNIST_PORT": str(port),
        "MNIST_STATS_PORT": str(stats_port),
        "MNIST_API_KEY_SECRET": f"{name}_api_key",
        "MNIST_REPLICAS": str(REPLICAS),
    }
    running = Stack(
        name,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{stats_port}",
        key,
        agreed_digits,
        images,
        measured,
    )
    try:
        started = time.monotonic()
        docker(
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            str(STACK_FILE),
            name,
            env=env,
            timeout=300,
        )
        wait_for_replicas(running)
        measured["deploy_s"] = round(time.monotonic() - started, 1)
        yield running
    finally:
        docker("stack", "rm", name, check=False)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not stack_resources(name), 120, f"stack {name} removed", poll=1)
        left = stack_resources(name)
        docker("secret", "rm", secret_id, check=False)
        assert not left, f"left behind: {left}"


# ---- the tests ---------------------------------------------------------------------------------


def test_stack_serves_the_model_from_every_replica_with_the_secret_key(
    stack: Stack, models: Models
) -> None:
    assert_serves_everywhere(stack, Models.sha256(models.first))
    # The key comes from the Docker secret's file (API_KEY_FILE), through the image's own
    # entrypoint and command: no shell wrapper around them.
    spec = json.loads(
        docker(
            "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}",
            stack.service,
        ).stdout
    )  # fmt: skip
    assert "API_KEY_FILE=/run/secrets/api_key" in spec["Env"]
    assert not spec.get("Command") and not spec.get("Args"), spec
    assert stack.model_info(headers={}).status_code == 401
    assert stack.model_info(headers={"Authorization": "Bearer wrong"}).status_code == 401
    with under_load(stack, min_s=10, rate_limit=None) as load:
        pass
    assert not load.failures, load.summary()
    stack.measured["steady_3_replicas"] = load.summary()


def test_rolling_to_another_model_fails_no_request(stack: Stack, models: Models) -> None:
    with under_load(stack) as load:
        result, seconds = rollout(stack, "deploy", stack.images.second)
    stack.measured["rollout_to_second_model"] = {"rollout_s": round(seconds, 1), **load.summary()}
    assert result.returncode == 0, result.stdout + result.stderr
    assert not load.failures, load.summary()
    assert stack.spec_image() == stack.images.second
    wait_for_replicas(stack)
    assert_serves_everywhere(stack, Models.sha256(models.second))


def test_a_broken_image_is_rolled_back_by_swarm_and_fails_no_request(
    stack: Stack, models: Models
) -> None:
    with under_load(stack) as load:
        result, seconds = rollout(stack, "deploy", stack.images.broken)
    stack.measured["rollout_to_broken_image"] = {
        "rolled_back_s": round(seconds, 1),
        **load.summary(),
    }
    assert result.returncode == 1, result.stdout + result.stderr
    assert stack.update_state() == "rollback_completed"
    assert stack.spec_image() == stack.images.second
    assert not load.failures, load.summary()
    wait_for_replicas(stack)
    assert_serves_everywhere(stack, Models.sha256(models.second))


def test_an_image_that_never_gets_ready_is_rolled_back_by_swarm_and_fails_no_request(
    stack: Stack, models: Models
) -> None:
    """Its replica runs but never passes the /readyz healthcheck: it never gets traffic, the
    update fails once the healthcheck's start period is over, and Swarm rolls it back."""
    with under_load(stack) as load:
        result, seconds = rollout(stack, "deploy", stack.images.never_ready)
    stack.measured["rollout_to_never_ready_image"] = {
        "rolled_back_s": round(seconds, 1),
        **load.summary(),
    }
    assert result.returncode == 1, result.stdout + result.stderr
    assert stack.update_state() == "rollback_completed"
    assert stack.spec_image() == stack.images.second
    assert not load.failures, load.summary()
    wait_for_replicas(stack)
    assert_serves_everywhere(stack, Models.sha256(models.second))


def test_the_rollback_command_serves_the_previous_model_again(stack: Stack, models: Models) -> None:
    with under_load(stack) as load:
        result, seconds = rollout(stack, "rollback")
    stack.measured["rollback_command"] = {"rollback_s": round(seconds, 1), **load.summary()}
    assert result.returncode == 0, result.stdout + result.stderr
    assert not load.failures, load.summary()
    assert stack.spec_image() == stack.images.first
    wait_for_replicas(stack)
    assert_serves_everywhere(stack, Models.sha256(models.first))
    history, _ = rollout(stack, "history")
    assert stack.images.second in history.stdout, history.stdout  # kept, marked rolled back


def ip(row: dict[str, str]) -> str:
    return row["addr"].rsplit(":", 1)[0]


def a_replica(stack: Stack) -> tuple[str, str, str]:
    """One replica under load: its container, address and HAProxy slot."""
    container = stack.containers()[0]
    address = stack.address(container)
    slot = next(name for name, row in stack.slots().items() if ip(row) == address)
    return container, address, slot


def troubles(stack: Stack, slot: str) -> tuple[int, int]:
    """HAProxy's counts for a slot: requests the replica did not answer (eresp: connection
    closed or reset, answer broken off), and how many of them went to another replica (wretr)."""
    row = stack.slots()[slot]
    return int(row["eresp"] or 0), int(row["wretr"] or 0)


def test_a_killed_replica_costs_only_its_requests_in_flight(stack: Stack) -> None:
    """SIGKILL: the requests that replica was answering may fail (HAProxy cannot replay an
    answer already under way); every other request is retried elsewhere. Swarm replaces it."""
    with under_load(stack) as load:
        time.sleep(3)  # the load reaches a steady state
        container, address, slot = a_replica(stack)
        broken_before, retried_before = troubles(stack, slot)
        docker("kill", container)
        killed = time.monotonic()
        wait_for(
            lambda: address not in {ip(row) for row in stack.up()},
            CAPACITY_BACK_S,
            "the killed replica out of HAProxy",
        )
        broken_after, retried_after = troubles(stack, slot)
        wait_for_replicas(stack, timeout=CAPACITY_BACK_S * 2)
        back_s = time.monotonic() - killed
    in_flight = broken_after - broken_before
    retried = retried_after - retried_before
    stack.measured["kill_one_replica"] = {
        "in_flight_on_it": in_flight,
        "retried_elsewhere": retried,
        "capacity_back_s": round(back_s, 1),
        **load.summary(),
    }
    assert len(load.failures) <= in_flight, load.summary()
    assert back_s <= CAPACITY_BACK_S


def test_scaling_3_to_5_to_2_fails_no_request(stack: Stack) -> None:
    timings = {}
    with under_load(stack) as load:
        for count in (5, 2):
            started = time.monotonic()
            docker("service", "scale", "--detach", f"{stack.service}={count}")
            wait_for_replicas(stack, count)
            timings[f"to_{count}_s"] = round(time.monotonic() - started, 1)
    stack.measured["scale_3_5_2"] = {**timings, **load.summary()}
    assert not load.failures, load.summary()
    docker("service", "scale", "--detach", f"{stack.service}={REPLICAS}")
    wait_for_replicas(stack)


def test_a_stopped_replica_finishes_its_requests_and_exits_promptly(stack: Stack) -> None:
    """`docker stop` behind Swarm's back (no DNS removal first): the replica gets SIGTERM with
    requests in flight and more arriving; it must finish them and exit, and HAProxy must send
    the rest elsewhere. Swarm then replaces it."""
    with under_load(stack) as load:
        time.sleep(3)
        container, _, slot = a_replica(stack)
        before = stack.slots()[slot]
        started = time.monotonic()
        docker("stop", "--time", str(STOP_BUDGET_S), container, timeout=STOP_BUDGET_S + 30)
        stop_s = time.monotonic() - started
        after = stack.slots()[slot]
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        wait_for_replicas(stack)
    delta = {k: int(after[k] or 0) - int(before[k] or 0) for k in ("stot", "eresp", "wretr")}
    stack.measured["docker_stop_one_replica"] = {
        "in_flight_at_sigterm": int(before["scur"] or 0),
        "sent_to_it_while_stopping": delta["stot"],
        "not_answered_by_it": delta["eresp"],
        "retried_elsewhere": delta["wretr"],
        "stop_s": round(stop_s, 1),
        "exit_code": int(exit_code),
        **load.summary(),
    }
    assert exit_code != "137", "SIGTERM did not stop the server: killed after the grace period"
    assert stop_s < STOP_BUDGET_S
    assert not load.failures, load.summary()


def test_a_failed_rollout_from_the_build_is_one_line_and_the_old_image_keeps_serving(
    stack: Stack, tmp_path: Path
) -> None:
    """The deploy step's outcome when Swarm refuses the image (here: no such image on the
    node, so its task is rejected and Swarm rolls the update back): one line, nothing lost."""
    before = stack.spec_image()
    missing = f"mnist-swarm-test-missing:{uuid.uuid4().hex[:8]}"
    with under_load(stack, min_s=10) as load:
        result = roll_out(
            missing,
            stack.service,
            timeout_s=CONVERGE_S,
            log_path=tmp_path / "rollout.log",
            log=lambda line: None,
        )
    stack.measured["failed_rollout_from_build"] = {"rollout_s": result.seconds, **load.summary()}
    assert not result.deployed and result.previous_image == before
    assert result.serving_image == before == stack.spec_image()
    assert result.note.startswith(f"rollout of {missing} to {stack.service} failed"), result.note
    assert "\n" not in result.note and "did not complete" in result.note
    assert not load.failures, load.summary()
    wait_for_replicas(stack)


def test_one_build_command_retrains_promotes_ships_and_rolls_the_stack_out(
    stack: Stack, built_by_tests: list[tuple[str, str]], tmp_path: Path
) -> None:
    """`scripts/build --deploy`: train (1 epoch on 20,000 images), gate, promote into a scratch
    store, build the image, roll it into the running stack; 0 failed requests meanwhile."""
    image_name = f"mnist-swarm-test-build-{uuid.uuid4().hex[:8]}"
    options = ["--recipe", "seed", "--epochs", "1", "--limit", "20000", "--min-accuracy", "80"]
    options += ["--data-dir", str(DATA_DIR), "--reports-dir", str(tmp_path / "reports")]
    options += ["--output", str(tmp_path / "model.pt"), "--image-name", image_name]
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}

    # A service that is not there: refused before anything is trained or promoted.
    wrong = subprocess.run(
        [str(BUILD), *options, "--deploy", "--swarm-service", f"{stack.name}_nosuch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert wrong.stderr.startswith(
        f"error: --deploy: cannot deploy to the Swarm service '{stack.name}_nosuch'"
    ), wrong.stderr
    assert "Traceback" not in wrong.stderr and "nothing was promoted" in wrong.stderr
    assert not (tmp_path / "model.pt").exists()

    started = time.monotonic()
    build = subprocess.Popen(
        [str(BUILD), *options, "--deploy", "--swarm-service", stack.service],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert build.stdout is not None
    printed = ""
    try:
        for line in build.stdout:  # until the rollout starts: the new model is known then
            printed += line
            if line.startswith("[7/8] deploy ..."):
                break
        assert "[7/8] deploy ..." in printed, printed
        built_by_tests.append((f"{image_name}:latest", ""))
        # The load checks every answer: only digits the new model and the served one agree on.
        new_model = load_model(tmp_path / "model.pt")
        batch = torch.stack([torch.from_numpy(preprocess_image_bytes(p)) for p, _ in stack.digits])
        with torch.inference_mode():
            predicted = new_model(batch.reshape(len(batch), -1)).argmax(dim=1).tolist()
        digits = [pair for pair, new in zip(stack.digits, predicted, strict=True) if pair[1] == new]
        assert len(digits) >= 20, f"{len(digits)} of {len(stack.digits)} agreed"
        with under_load(stack, digits=digits) as load:
            printed += build.stdout.read()
            returncode = build.wait(timeout=CONVERGE_S * 2)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    total_s = time.monotonic() - started
    reports = [p for p in (tmp_path / "reports").iterdir() if not p.name.startswith(".")]
    (folder,) = reports
    report = json.loads((folder / "report.json").read_text())
    version = report["model"]["version"]
    built_by_tests.append((f"{image_name}:{version}", f"artifacts/.ship-{version}/model.pt"))
    stack.measured["build_and_deploy"] = {
        "build_s": round(total_s, 1),
        "rollout_s": (report["deploy"] or {}).get("seconds"),
        **load.summary(),
    }
    assert returncode == 0, printed
    assert report["status"] == "promoted" and report["exit_code"] == 0
    deployed = report["deploy"]
    assert deployed["deployed"] and deployed["service"] == stack.service, deployed
    assert deployed["image"] == deployed["serving_image"] == f"{image_name}:{version}"
    assert deployed["previous_image"] == stack.images.first
    assert "deployed" in (folder / "report.md").read_text()
    assert f"deployed: {stack.service} serves {image_name}:{version}" in printed
    assert not load.failures, load.summary()
    assert stack.spec_image() == f"{image_name}:{version}"
    wait_for_replicas(stack)
    assert_serves_everywhere(stack, report["model"]["file_sha256"])
    history, _ = rollout(stack, "history")
    assert stack.images.first in history.stdout, history.stdout
