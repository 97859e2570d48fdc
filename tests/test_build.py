"""The retraining pipeline: its gate rules and options in process, then `scripts/build` end to end
(marked `e2e`): real runs of the CLI, each into its own temp store, reports and output.

A "site" is one place a build writes to: a BentoML home, a reports folder and the checkpoint copy
(`--output`). Builds run with `--no-docker` except in the Docker test.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import DATA_DIR
from tests.requirements import require_docker_engine
from tests.support import REPO
from tests.support.servers import running_server, server_env
from training.cli import config_from_args
from training.data import file_hexdigest
from training.pipeline.cli import build_parser, parse_build_args
from training.pipeline.gate import Baseline, gate
from training.pipeline.promote import LOCK_FILE
from training.pipeline.ship import docker
from training.train import RECIPES

BUILD = REPO / "scripts" / "build"
QUICK = ["--quick", "--min-accuracy", "60"]  # 1 epoch on 2,000 images: about 76 %
WORSE = ["--quick", "--limit", "300", "--min-accuracy", "10"]  # 300 images: about 38 %
SOURCE_DATE_EPOCH = "1700000000"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STORE_QUERY = """
import json, bentoml
from training.registry import serving_tag
try:
    models = {str(m.tag): m.info.labels for m in bentoml.models.list("mnist-mlp")}
except bentoml.exceptions.NotFound:
    models = {}
print(json.dumps({"serving": serving_tag() if models else None, "models": models}))
"""
PROMOTE_AT_99_PERCENT = """
import sys
from pathlib import Path
from training import Checkpoint
from training.registry import register_checkpoint
checkpoint = Path(sys.argv[1])
metadata = Checkpoint.load(checkpoint).metadata
metadata["metrics"]["test_accuracy"] = 0.99
print(register_checkpoint(checkpoint, metadata, {"stage": "production"}))
"""


@dataclass
class Site:
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "bentoml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def output(self) -> Path:
        return self.root / "artifacts" / "model.pt"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        return {**env, "BENTOML_HOME": str(self.home), **extra}

    def command(self, *args: str, program: Sequence[str] = (str(BUILD),)) -> list[str]:
        """`scripts/build` (or `program`) with this site's store, reports and output."""
        command = [*program, "--data-dir", str(DATA_DIR), "--reports-dir", str(self.reports)]
        return [*command, "--output", str(self.output), *args]

    def build(
        self, *args: str, program: Sequence[str] = (str(BUILD),), timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess:
        """Run a build from another directory; later options win, so `args` may override."""
        self.root.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            self.command(*args, program=program),
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, *args: str) -> str:
        """Run a Python snippet against this site's store; returns its last printed line."""
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def store(self) -> dict:
        """{"serving": tag the service would serve, "models": {tag: labels}}."""
        return json.loads(self.python(STORE_QUERY))

    def report(self, name: str) -> dict:
        return json.loads((self.reports / name / "report.json").read_text())

    def copy(self, root: Path) -> Site:
        shutil.copytree(self.root, root)
        return Site(root)


def sha256(path: Path) -> str:
    return file_hexdigest(path, "sha256")


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` by relative name, with its sha256: equal digests, equal trees."""
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def promoted_tag_in(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("promoted mnist-mlp:")]
    assert lines, stdout
    return lines[-1].split()[1].rstrip(":")


def promoted_tag(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return promoted_tag_in(result.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory, mnist_md5) -> tuple[Site, str]:
    """A site with one promoted quick model (the floor lowered for it); returns its store tag."""
    site = Site(tmp_path_factory.mktemp("site") / "promoted")
    result = site.build(*QUICK, "--no-docker")
    return site, promoted_tag(result)


# ---- the gate rules, without training ------------------------------------------------------


def baseline(accuracy: float) -> Baseline:
    return Baseline("mnist-mlp:before", accuracy, True, None, None)


def test_without_a_promoted_model_only_the_floor_applies():
    assert gate(0.975, None).passed  # equal to the floor is not below it
    refused = gate(0.9749, None)
    assert not refused.passed and not refused.promote
    assert "97.49 %" in refused.reasons[0] and "97.50 %" in refused.reasons[0]


def test_a_candidate_may_trail_the_promoted_model_by_the_tolerance_and_no_more():
    assert gate(0.9780, baseline(0.9800)).passed  # exactly 0.2 points below
    assert gate(0.9900, baseline(0.9800)).passed
    refused = gate(0.9779, baseline(0.9800))
    assert not refused.passed
    (reason,) = refused.reasons
    assert "97.79 %" in reason and "98.00 %" in reason and "mnist-mlp:before" in reason
    assert gate(0.9779, baseline(0.9800), tolerance=0.5).passed


def test_force_promotes_a_refused_candidate_and_says_so():
    forced = gate(0.9000, baseline(0.9800), force=True)
    assert not forced.passed and forced.forced and forced.promote
    assert "FORCED" in forced.summary()
    assert not gate(0.99, None, force=True).forced  # nothing to force


def test_help_documents_every_option():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, f"{action.option_strings} has no help"


def test_quick_and_dry_run_set_small_defaults_that_explicit_flags_override():
    full = config_from_args(parse_build_args([]))
    assert full == replace(RECIPES["robust"], device=full.device)  # the robust recipe, whole
    assert parse_build_args([]).suite_size == 1000
    quick = parse_build_args(["--quick"])
    assert (quick.epochs, quick.limit, quick.dry_run, quick.suite_size) == (1, 2000, False, 100)
    dry = parse_build_args(["--dry-run", "--epochs", "3"])
    assert (dry.epochs, dry.limit, dry.quick) == (3, 2000, True)
    seed = config_from_args(parse_build_args(["--recipe", "seed", "--lr", "0.01"]))
    assert seed == replace(RECIPES["seed"], lr=0.01, device=seed.device)


@pytest.mark.parametrize(
    "args",
    [
        ["--tolerance", "-1"],
        ["--min-accuracy", "101"],
        ["--epochs", "0"],
        ["--robustness-tolerance", "-1"],
        ["--suite-size", "5"],
        ["--recipe", "fancy"],
    ],
)
def test_bad_options_are_usage_errors(args):
    with pytest.raises(SystemExit) as exit_info:
        parse_build_args(args)
    assert exit_info.value.code == 2


# ---- real builds ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_quick_build_promotes_and_writes_a_complete_report(site):
    site, tag = site
    version = tag.split(":")[1]
    store = site.store()
    assert store["serving"] == tag
    assert store["models"][tag]["stage"] == "production"
    report = site.report(version)
    assert report["status"] == "promoted" and report["model"]["tag"] == tag
    assert report["gate"]["decision"] == "accept" and report["gate"]["baseline"] is None
    assert report["hyperparameters"]["epochs"] == 1 and report["hyperparameters"]["limit"] == 2000
    assert report["model"]["test_total"] == 10_000 and report["model"]["test_accuracy"] > 0.6
    assert report["artifacts"]["sha256"] == sha256(site.output) == report["model"]["file_sha256"]
    assert report["model"]["weights_sha256"] == store["models"][tag]["weights_sha256"]
    assert set(report["timings"]) == {
        "fetch data",
        "train",
        "evaluate",
        "gate",
        "register",
        "report",
    }
    assert [s["step"] for s in report["steps"]][-2:] == ["ship", "report"]
    assert len(report["history"]) == 1 and len(report["data_md5"]) == 4
    markdown = (site.reports / version / "report.md").read_text()
    for name in report["plots"].values():
        assert f"]({name})" in markdown
        data = (site.reports / version / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert all(600 <= side <= 1500 for side in image.size), (name, image.size)


@pytest.mark.e2e
def test_a_server_started_afterwards_serves_the_promoted_model(site, tmp_path):
    site, tag = site
    report = site.report(tag.split(":")[1])
    with running_server(server_env(site.home), tmp_path / "server.log") as server:
        info = httpx.post(f"{server.url}/model_info", timeout=10).json()
    assert info["tag"] == tag
    assert info["sha256"] == report["model"]["file_sha256"]
    assert info["test_accuracy"] == report["model"]["test_accuracy"]


@pytest.mark.e2e
def test_a_worse_candidate_is_refused_and_changes_nothing(site, tmp_path):
    site, tag = site
    site = site.copy(tmp_path / "site")
    version = tag.split(":")[1]
    before = {
        "store": tree_digest(site.home / "models"),
        "report": tree_digest(site.reports / version),
        "output": sha256(site.output),
    }
    result = site.build(*WORSE, "--no-docker")
    assert result.returncode == 1, result.stdout + result.stderr
    promoted_accuracy = f"{100 * site.report(version)['model']['test_accuracy']:.2f} %"
    refused_name = next(p.name for p in site.reports.iterdir() if p.name.startswith("refused-"))
    refused = site.report(refused_name)
    candidate_accuracy = f"{100 * refused['model']['test_accuracy']:.2f} %"
    assert promoted_accuracy in result.stderr and candidate_accuracy in result.stderr
    assert tag in result.stderr and "--force" in result.stderr and "--dry-run" in result.stderr
    assert refused["status"] == "refused" and refused["gate"]["baseline"]["tag"] == tag
    assert refused["model"]["tag"] is None and refused["image"]["built"] is False
    assert (site.reports / refused_name / "candidate.pt").is_file()
    assert tree_digest(site.home / "models") == before["store"]
    assert tree_digest(site.reports / version) == before["report"]
    assert sha256(site.output) == before["output"]
    assert site.store()["serving"] == tag


@pytest.mark.e2e
def test_force_promotes_the_worse_candidate_and_says_so_loudly(site, tmp_path):
    site, tag = site
    site = site.copy(tmp_path / "site")
    result = site.build(*WORSE, "--force", "--no-docker", "--bentoml-build")
    new_tag = promoted_tag(result)
    assert new_tag != tag
    assert "--force" in result.stderr and "REFUSED" in result.stderr
    store = site.store()
    assert store["serving"] == new_tag
    labels = store["models"][new_tag]
    assert labels["gate"] == "forced" and labels["replaces"] == tag
    report = site.report(new_tag.split(":")[1])
    assert report["gate"]["forced"] and report["gate"]["decision"] == "refuse"
    assert "FORCED" in (site.reports / new_tag.split(":")[1] / "report.md").read_text()
    assert sha256(site.output) == report["model"]["file_sha256"]
    # --bentoml-build needs no Docker: the bento packs the model that was just promoted.
    assert report["bento"]["built"], report["bento"]
    bento = subprocess.run(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "get",
            report["bento"]["tag"],
            "-o",
            "json",
        ],
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bento.returncode == 0, bento.stderr
    (service,) = json.loads(bento.stdout)["services"]
    assert [m["tag"] for m in service["models"]] == [new_tag]


@pytest.mark.e2e
def test_same_options_and_seed_give_the_same_model(site, tmp_path):
    """Identity is the weights sha256; with the same SOURCE_DATE_EPOCH the file is identical too."""
    site, tag = site
    first = site.report(tag.split(":")[1])["model"]
    again = Site(tmp_path / "again")
    result = again.build(*QUICK, "--no-docker", SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    promoted = again.report(promoted_tag(result).split(":")[1])["model"]
    dry = Site(tmp_path / "dry")
    result = dry.build("--dry-run", SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing was promoted" in result.stdout
    (name,) = [p.name for p in dry.reports.iterdir()]
    assert name.startswith("dry-run-")
    rehearsal = dry.report(name)["model"]
    assert dry.store()["models"] == {} and not dry.output.exists()

    assert first["weights_sha256"] == promoted["weights_sha256"] == rehearsal["weights_sha256"]
    assert promoted["created_at"] == rehearsal["created_at"] == "2023-11-14T22:13:20+00:00"
    assert promoted["file_sha256"] == rehearsal["file_sha256"]
    assert sha256(dry.reports / name / "candidate.pt") == rehearsal["file_sha256"]
    assert sha256(again.output) == promoted["file_sha256"]


@pytest.mark.e2e
def test_a_second_build_waits_for_the_promotion_lock_and_gates_against_the_new_model(
    site, tmp_path
):
    """The lock makes gate-and-register one step: no two builds promote against one baseline."""
    site, tag = site
    site = site.copy(tmp_path / "site")
    with open(site.home / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as if another build were promoting right now
        build = subprocess.Popen(
            site.command(*QUICK, "--no-docker"),
            cwd=site.root,
            env=site.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert build.stdout is not None
        printed = ""
        while "waiting for another build" not in printed:
            line = build.stdout.readline()
            assert line, f"the build ended without waiting for the lock:\n{printed}"
            printed += line
        assert build.poll() is None
        # Meanwhile "the other build" promotes a better model.
        better_tag = site.python(PROMOTE_AT_99_PERCENT, str(site.output))
    printed += build.stdout.read()
    assert build.wait(timeout=120) == 1, printed  # refused against the model promoted meanwhile
    refused_name = next(p.name for p in site.reports.iterdir() if p.name.startswith("refused-"))
    assert site.report(refused_name)["gate"]["baseline"]["tag"] == better_tag != tag
    assert better_tag in printed and "99.00 %" in printed
    assert site.store()["serving"] == better_tag


@pytest.mark.e2e
def test_a_failure_after_the_promotion_is_one_line_and_the_report_is_still_written(site, tmp_path):
    site, _ = site
    site = site.copy(tmp_path / "site")
    not_a_directory = site.root / "file"
    not_a_directory.write_text("")
    # No bentoml CLI next to this "interpreter", and --output cannot be written.
    no_bentoml_cli = "import sys; sys.executable = '/nowhere/python'; "
    no_bentoml_cli += "import training.pipeline.build as b; "
    program = [sys.executable, "-c", no_bentoml_cli + "sys.exit(b.main(sys.argv[1:]))"]
    args = [*QUICK, "--no-docker", "--bentoml-build", "--output", str(not_a_directory / "m.pt")]
    result = site.build(*args, program=program, PYTHONPATH=str(REPO))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error after")]
    assert len(errors) == 2, result.stderr
    assert "cannot copy the checkpoint" in errors[0] and "no bentoml CLI" in errors[1]
    new_tag = promoted_tag_in(result.stdout)
    assert site.store()["serving"] == new_tag
    report = site.report(new_tag.split(":")[1])
    assert report["status"] == "promoted" and report["exit_code"] == 3
    assert len(report["errors"]) == 2 and not report["bento"]["built"]
    assert report["artifacts"]["sha256"] is None
    assert "ERROR after promotion" in (site.reports / report["name"] / "report.md").read_text()


# ---- shipping ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.docker
@pytest.mark.timeout(1800)
@pytest.mark.e2e
def test_the_ship_step_builds_an_image_that_packs_the_promoted_checkpoint(site, tmp_path):
    require_docker_engine()
    site, _ = site
    site = site.copy(tmp_path / "site")
    image = f"mnist-service-buildtest-{uuid.uuid4().hex[:12]}"
    try:
        result = site.build(*QUICK, "--image-name", image, timeout=1500)
        tag = promoted_tag(result)
        version = tag.split(":")[1]
        shipped = site.report(version)["image"]
        assert shipped["built"], shipped
        assert shipped["tags"] == [f"{image}:{version}", f"{image}:latest"]
        assert shipped["packed_sha256"] == sha256(site.output)
        labels = json.loads(
            docker(
                "image", "inspect", "--format", "{{json .Config.Labels}}", shipped["tags"][1]
            ).stdout
        )
        assert labels["mnist.model.tag"] == tag
        config_env = docker(
            "image", "inspect", "--format", "{{json .Config.Env}}", shipped["tags"][1]
        ).stdout
        assert f"MNIST_MODEL_TAG={tag}" in json.loads(config_env)  # /model_info names the tag
        assert not list((REPO / "artifacts").glob(".ship-*")), "staging copy left behind"
    finally:
        listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}", image, check=False)
        if tags := listed.stdout.split():  # --no-prune keeps the parents as the next build's cache
            docker("rmi", "--force", "--no-prune", *tags, check=False)
