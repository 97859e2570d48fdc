"""`scripts/build`: retrain, evaluate, gate, register, ship and report a new model, in one command.

A candidate replaces the served model only when the gate accepts it (or `--force`), and then by
one atomic store write: registering it with `stage=production`, which `serving_tag()` picks.
A refused candidate touches neither the store, nor the checkpoint the image packs, nor any
earlier report. docs/retraining.md describes the steps, the gate and where everything lands.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.checkpoint import (
    CheckpointError,
    file_sha256,
    git_commit,
    load_model,
    read_metadata,
    save_checkpoint,
)
from training.data import DataError, ensure_mnist, load_split, write_atomically
from training.report import Misclassified, ReportFolder
from training.train import LOSSES, TrainConfig, format_epoch, resolve_device, train

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
STEPS = ("fetch data", "train", "evaluate", "gate", "register", "ship", "report")
DEFAULTS = TrainConfig()
MIN_ACCURACY = 97.5  # percent
TOLERANCE = 0.2  # percentage points
QUICK_EPOCHS, QUICK_LIMIT = 1, 2000
LOCAL_BASE_IMAGE = "local/bookworm:latest"
WORST_EXAMPLES = 24
EXIT_OK, EXIT_REFUSED, EXIT_ERROR, EXIT_AFTER_PROMOTION = 0, 1, 2, 3
EPSILON = 1e-6  # accuracies are multiples of 0.01 %; this only absorbs float rounding


class BuildError(RuntimeError):
    """A step cannot go on; the message says why and what to do."""


# ---- command line --------------------------------------------------------------------------


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show only defaults that say something, and repository paths as `<repo>/...`."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace(str(REPO), "<repo>")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/build",
        description=(
            "Retrain the MNIST MLP and, if the gate accepts it, promote it: fetch and verify "
            "MNIST, train, evaluate on the test set, gate against the promoted model, register "
            "it in the BentoML store as stage=production, copy it to --output, build the Docker "
            "image, and write a report. See docs/retraining.md."
        ),
        epilog=(
            "Exit status: 0 promoted (or dry run), 1 refused by the gate, 2 error before "
            "promotion (nothing changed), 3 promoted but the image (or bento) build failed."
        ),
        formatter_class=HelpFormatter,
    )
    t = p.add_argument_group("training (the seed recipe by default)")
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the data (default {DEFAULTS.epochs}; {QUICK_EPOCHS} with --quick)",
    )
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate")
    t.add_argument("--hidden", type=int, default=DEFAULTS.hidden, help="hidden layer width")
    t.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for init and shuffling")
    t.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss, help="training loss")
    t.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"train on the first N images only (default all 60,000; {QUICK_LIMIT} with --quick)",
    )
    t.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="training device (auto: CUDA when available)",
    )
    t.add_argument(
        "--data-dir", type=Path, default=REPO / "data", help="MNIST location (fetched if missing)"
    )
    g = p.add_argument_group("gate")
    g.add_argument(
        "--min-accuracy",
        type=float,
        default=MIN_ACCURACY,
        metavar="PERCENT",
        help="refuse a candidate whose test accuracy is below this floor",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        metavar="POINTS",
        help="refuse a candidate more than this many percentage points below the promoted model",
    )
    g.add_argument(
        "--force", action="store_true", help="promote even when the gate refuses (logged loudly)"
    )
    m = p.add_argument_group("modes")
    m.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EPOCHS} epoch on {QUICK_LIMIT:,} images unless --epochs/--limit say "
        "otherwise; gated like any run, so it is refused by the default floor",
    )
    m.add_argument(
        "--dry-run",
        action="store_true",
        help="--quick, and promote nothing: run every step up to the gate, report what the gate "
        "would decide (exit 0), touch neither the store, --output nor Docker",
    )
    o = p.add_argument_group("outputs")
    o.add_argument(
        "--output",
        type=Path,
        default=REPO / "artifacts" / "model.pt",
        help="where the promoted checkpoint is copied (atomically); the Docker image packs it",
    )
    o.add_argument(
        "--reports-dir",
        type=Path,
        default=REPO / "reports",
        help="reports land in DIR/<version>/ (refused runs: DIR/refused-<time>/)",
    )
    s = p.add_argument_group("shipping")
    s.add_argument(
        "--no-docker", action="store_true", help="skip the Docker image build on purpose"
    )
    s.add_argument(
        "--image-name",
        default="mnist-service",
        help="image repository: tags NAME:<version>, :latest",
    )
    s.add_argument(
        "--base-image",
        default=None,
        help=f"BASE_IMAGE build argument (default: {LOCAL_BASE_IMAGE} when that image exists, "
        "else the Dockerfile's own default)",
    )
    s.add_argument(
        "--bentoml-build",
        action="store_true",
        help="also run `bentoml build` for a bento of the promoted model (needs uv, see docs)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with --quick/--dry-run defaults applied and every value checked."""
    p = build_parser()
    args = p.parse_args(argv)

    if args.dry_run:
        args.quick = True
    if args.quick:
        args.epochs = QUICK_EPOCHS if args.epochs is None else args.epochs
        args.limit = QUICK_LIMIT if args.limit is None else args.limit
    if args.epochs is None:
        args.epochs = DEFAULTS.epochs
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if not args.lr > 0:
        p.error("--lr must be positive")
    if not 0 <= args.min_accuracy <= 100:
        p.error("--min-accuracy is a percentage between 0 and 100")
    if not args.tolerance >= 0:
        p.error("--tolerance must be zero or more percentage points")
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", args.image_name):
        p.error("--image-name must be a lowercase Docker repository name")
    return args


# ---- progress ------------------------------------------------------------------------------


class Progress:
    """Numbered, timed steps: a tqdm bar on a terminal, plain log lines when not a TTY."""

    def __init__(self, steps: Sequence[str]) -> None:
        self.steps = tuple(steps)
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=len(self.steps),
            unit="step",
            disable=not self.tty,
            bar_format="{desc:<12} {bar} {n_fmt}/{total_fmt} steps [{elapsed}]",
        )
        self.records: list[dict[str, Any]] = []

    def log(self, message: str, *, error: bool = False) -> None:
        stream = sys.stderr if error else sys.stdout
        tqdm.write(message, file=stream)
        stream.flush()

    def detail(self, message: str) -> None:
        """A sub-step: the bar's postfix on a terminal, a log line otherwise."""
        if self.tty:
            self.bar.set_postfix_str(message[:60])
        else:
            self.log(f"    {message}")

    def _number(self, name: str) -> str:
        return f"[{self.steps.index(name) + 1}/{len(self.steps)}]"

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time the block; the yielded record's `note` is shown and reported."""
        record: dict[str, Any] = {"step": name, "status": "done", "seconds": 0.0, "note": ""}
        self.bar.set_description_str(name)
        self.log(f"{self._number(name)} {name} ...")
        started = time.perf_counter()
        try:
            yield record
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record["seconds"] = round(time.perf_counter() - started, 3)
            self.records.append(record)
            self.bar.update(1)
            note = f" ({record['note']})" if record["note"] else ""
            took = f"{record['status']} in {record['seconds']:.1f} s{note}"
            self.log(f"{self._number(name)} {name}: {took}")

    def skip(self, name: str, reason: str) -> None:
        self.records.append({"step": name, "status": "skipped", "seconds": 0.0, "note": reason})
        self.bar.update(1)
        self.log(f"{self._number(name)} {name}: skipped: {reason}")

    def timings(self) -> dict[str, float]:
        return {r["step"]: r["seconds"] for r in self.records if r["status"] != "skipped"}

    def close(self) -> None:
        self.bar.close()


# ---- evaluate ------------------------------------------------------------------------------


@dataclass
class Evaluation:
    accuracy: float
    correct: int
    total: int
    confusion: np.ndarray  # (10, 10) counts, rows = true digit, columns = predicted
    misclassified: list[Misclassified]  # most confident first

    @property
    def per_class_accuracy(self) -> list[float]:
        return (np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)).tolist()


@torch.no_grad()
def evaluate_candidate(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, worst: int = WORST_EXAMPLES
) -> Evaluation:
    """Accuracy, confusion matrix and the most confidently wrong digits, in one pass."""
    model.eval()
    logits = model(images)
    predicted = logits.argmax(dim=1)  # the same rule as training.train.evaluate
    confidence = logits.softmax(dim=1).gather(1, predicted[:, None]).squeeze(1)
    ydim = logits.shape[1]
    confusion = np.zeros((ydim, ydim), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:worst]
    examples = [
        Misclassified(
            index=int(i),
            image=images[i].reshape(28, 28).numpy().copy(),
            true=int(labels[i]),
            predicted=int(predicted[i]),
            confidence=float(confidence[i]),
        )
        for i in order
    ]
    correct = int((predicted == labels).sum())
    return Evaluation(correct / len(labels), correct, len(labels), confusion, examples)


# ---- gate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The model the service serves now, i.e. what a promotion would replace."""

    tag: str
    test_accuracy: float  # 0-1
    promoted: bool  # carries stage=production (else it is served as the newest model)
    sha256: str | None
    weights_sha256: str | None


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    forced: bool
    candidate_accuracy: float  # 0-1
    baseline: Baseline | None
    min_accuracy: float  # percent
    tolerance: float  # percentage points
    reasons: tuple[str, ...]  # why it was refused; empty when it passed

    @property
    def promote(self) -> bool:
        return self.passed or self.forced

    @property
    def decision(self) -> str:
        return "accept" if self.passed else "refuse"

    def summary(self) -> str:
        candidate = f"candidate {100 * self.candidate_accuracy:.2f} %"
        if self.baseline is None:
            against = f"no promoted model yet, floor {self.min_accuracy:.2f} %"
        else:
            against = (
                f"promoted {self.baseline.tag} {100 * self.baseline.test_accuracy:.2f} % "
                f"(tolerance {self.tolerance:g} points), floor {self.min_accuracy:.2f} %"
            )
        verdict = "accepted" if self.passed else ("REFUSED, FORCED" if self.forced else "REFUSED")
        return f"{verdict}: {candidate} vs {against}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "forced": self.forced,
            "promoted": self.promote,
            "candidate_accuracy": self.candidate_accuracy,
            "baseline": asdict(self.baseline) if self.baseline else None,
            "min_accuracy": self.min_accuracy,
            "tolerance": self.tolerance,
            "reasons": list(self.reasons),
            "summary": self.summary(),
        }


def gate(
    candidate_accuracy: float,
    baseline: Baseline | None,
    *,
    min_accuracy: float = MIN_ACCURACY,
    tolerance: float = TOLERANCE,
    force: bool = False,
) -> GateDecision:
    """Refuse below the floor, or more than `tolerance` points below the promoted model.

    Accuracies are fractions; `min_accuracy` is in percent, `tolerance` in percentage points.
    Without a promoted model only the floor applies. Equal to a limit is not "below" it.
    """
    candidate = 100 * candidate_accuracy
    reasons = []
    if candidate < min_accuracy - EPSILON:
        reasons.append(
            f"candidate test accuracy {candidate:.2f} % is below the floor of "
            f"{min_accuracy:.2f} % (--min-accuracy)"
        )
    if baseline is not None:
        current = 100 * baseline.test_accuracy
        if current - candidate > tolerance + EPSILON:
            reasons.append(
                f"candidate test accuracy {candidate:.2f} % is {current - candidate:.2f} "
                f"percentage points below the promoted model {baseline.tag} at {current:.2f} % "
                f"(--tolerance {tolerance:g})"
            )
    return GateDecision(
        passed=not reasons,
        forced=force and bool(reasons),
        candidate_accuracy=candidate_accuracy,
        baseline=baseline,
        min_accuracy=min_accuracy,
        tolerance=tolerance,
        reasons=tuple(reasons),
    )


def current_baseline() -> Baseline | None:
    """What the service would serve now (`serving_tag()`), or None when the store is empty."""
    import bentoml

    from training.registry import CHECKPOINT_FILE, PROMOTED_LABEL, serving_tag

    try:
        tag = serving_tag()
    except bentoml.exceptions.NotFound:
        return None
    model = bentoml.models.get(tag)
    accuracy = model.info.metadata.get("test_accuracy")
    if accuracy is None:  # an entry from before metadata was searchable: ask the checkpoint
        try:
            meta = read_metadata(Path(model.path_of(CHECKPOINT_FILE)))
        except CheckpointError as exc:
            raise BuildError(f"cannot read the promoted model {tag}: {exc}") from None
        accuracy = meta.get("metrics", {}).get("test_accuracy")
    if accuracy is None:
        raise BuildError(f"the promoted model {tag} records no test accuracy to compare with")
    key, value = PROMOTED_LABEL
    return Baseline(
        tag=tag,
        test_accuracy=float(accuracy),
        promoted=model.info.labels.get(key) == value,
        sha256=model.info.metadata.get("sha256"),
        weights_sha256=model.info.labels.get("weights_sha256"),
    )


# ---- register ------------------------------------------------------------------------------


def promote(candidate: Path, decision: GateDecision, output: Path) -> tuple[str, dict[str, str]]:
    """Register the candidate as `stage=production` (the promotion), then copy it to `output`."""
    from training.registry import PROMOTED_LABEL, register_checkpoint

    metadata = read_metadata(candidate)
    labels = {
        PROMOTED_LABEL[0]: PROMOTED_LABEL[1],
        "weights_sha256": metadata["weights_sha256"],
        "gate": "forced" if decision.forced else "passed",
        "replaces": decision.baseline.tag if decision.baseline else "none",
        "promoted_by": "scripts/build",
    }
    tag = register_checkpoint(candidate, metadata, extra_labels=labels)
    write_atomically(output, candidate.read_bytes())
    return tag, labels


# ---- ship ----------------------------------------------------------------------------------


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_problem() -> str | None:
    """Why no Docker engine can be used, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        result = docker("info", timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return f"`docker info` failed: {lines[-1]}; start an engine with `make docker-engine`"
    return None


@contextlib.contextmanager
def in_build_context(checkpoint: Path, version: str) -> Iterator[str]:
    """The checkpoint's path inside the build context (the repository), staged there if outside."""
    try:
        relative = checkpoint.resolve().relative_to(REPO)
    except ValueError:
        relative = None
    if relative is not None:
        yield relative.as_posix()
        return
    staging = REPO / "artifacts" / f".ship-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(checkpoint, staging / "model.pt")
        yield (staging / "model.pt").relative_to(REPO).as_posix()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def stream(command: Sequence[str], log_path: Path, progress: Progress, cwd: Path = REPO) -> int:
    """Run a command in `cwd`, its output into `log_path`; Dockerfile steps shown as progress."""
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            step = re.match(r"(Step \d+/\d+ : .*|#\d+ \[.*\].*)", line.strip())
            if step:
                progress.detail(step.group(1)[:100])
        return process.wait()


def build_image(
    checkpoint: Path, tag: str, args: argparse.Namespace, log_path: Path, progress: Progress
) -> dict[str, Any]:
    """`docker build` of the repository's Dockerfile around the promoted checkpoint, verified."""
    version = tag.split(":", 1)[1]
    tags = [f"{args.image_name}:{version}", f"{args.image_name}:latest"]
    base = args.base_image
    if base is None and docker("image", "inspect", LOCAL_BASE_IMAGE).returncode == 0:
        base = LOCAL_BASE_IMAGE
    expected = file_sha256(checkpoint)
    with in_build_context(checkpoint, version) as model_path:
        command = ["docker", "build", "--force-rm", "--build-arg", f"MODEL_PATH={model_path}"]
        if base:
            command += ["--build-arg", f"BASE_IMAGE={base}"]
        command += ["--label", f"org.opencontainers.image.version={version}"]
        command += [
            "--label",
            f"mnist.model.tag={tag}",
            "--label",
            f"mnist.model.sha256={expected}",
        ]
        for image_tag in tags:
            command += ["-t", image_tag]
        command.append(str(REPO))
        progress.log(f"    {' '.join(command)}")
        returncode = stream(command, log_path, progress)
    result: dict[str, Any] = {"built": False, "tags": [], "base_image": base, "command": command}
    if returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
        result["note"] = f"docker build exited {returncode}"
        progress.log(f"error: docker build exited {returncode}; last lines:\n{tail}", error=True)
        return result
    image_id = docker("image", "inspect", "--format", "{{.Id}}", tags[0]).stdout.strip()
    # The image must hold exactly the promoted checkpoint, wherever its MODEL_PATH points.
    packed = docker(
        "run", "--rm", "--entrypoint", "sh", tags[0], "-c", 'sha256sum "$MODEL_PATH"', timeout=120
    )
    packed_sha = packed.stdout.split()[0] if packed.returncode == 0 and packed.stdout else None
    result.update(built=True, tags=tags, image_id=image_id, packed_sha256=packed_sha)
    if packed_sha != expected:
        result.update(built=False, note=f"image packs sha256 {packed_sha}, expected {expected}")
        progress.log(f"error: {result['note']}", error=True)
    return result


def build_bento(tag: str, log_path: Path, progress: Progress) -> dict[str, Any]:
    """`bentoml build` in the repository; it packs `serving_tag()`, i.e. the promoted model."""
    version = tag.split(":", 1)[1]
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml_cli), "build", "--version", version, "-o", "tag", str(REPO)]
    returncode = stream(command, log_path, progress)
    output = log_path.read_text(errors="replace").strip().splitlines()
    if returncode != 0:
        progress.log(f"error: bentoml build exited {returncode}: {output[-1:]}", error=True)
        return {"built": False, "note": f"bentoml build exited {returncode}", "command": command}
    return {"built": True, "tag": output[-1].removeprefix("__tag__:"), "command": command}


# ---- the run -------------------------------------------------------------------------------


def created_at_now() -> str:
    """The checkpoint's `created_at`: $SOURCE_DATE_EPOCH when set (reproducible files), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise BuildError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in seconds") from None
    else:
        moment = dt.datetime.now(dt.UTC)
    return moment.isoformat(timespec="seconds")


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def loud(progress: Progress, lines: Sequence[str]) -> None:
    bar = "!" * 78
    progress.log("\n".join([bar, *lines, bar]), error=True)


class Build:
    """One run of the pipeline: each method is one step; the attributes are what it found."""

    def __init__(
        self,
        args: argparse.Namespace,
        argv: Sequence[str],
        progress: Progress,
        work: Path,
        folder: ReportFolder,
    ) -> None:
        self.args, self.argv, self.progress, self.folder = args, list(argv), progress, folder
        self.candidate = work / "candidate.pt"
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.started = time.perf_counter()
        self.tag: str | None = None  # set once the store holds the promoted model
        self.version: str | None = None
        self.labels: dict[str, str] = {}
        self.artifacts: dict[str, Any] = {"checkpoint": None, "sha256": None}
        self.image: dict[str, Any] = {"built": False, "tags": [], "note": ""}
        self.bento: dict[str, Any] | None = None
        self.status = "running"
        self.exit_code = EXIT_OK

    def run(self) -> int:
        """Every step in order; returns the exit status. Every gate decision gets a report."""
        self.fetch_data()
        self.train_model()
        self.evaluate_model()
        self.apply_gate()
        if self.args.dry_run:
            self.promote_nothing("dry-run", EXIT_OK, "--dry-run promotes nothing")
            self.progress.log(f"dry run, so nothing is promoted; gate {self.decision.summary()}")
        elif not self.decision.promote:
            self.promote_nothing("refused", EXIT_REFUSED, "the gate refused the candidate")
        else:
            self.register()
            self.ship()
        published = self.report()
        self.tell(published)
        return self.exit_code

    def fetch_data(self) -> None:
        with self.progress.step("fetch data") as step:
            self.data_md5 = ensure_mnist(self.args.data_dir, log=self.progress.log)
            self.train_data = load_split(self.args.data_dir, train=True)
            self.test_data = load_split(self.args.data_dir, train=False)
            n_train, n_test = len(self.train_data[1]), len(self.test_data[1])
            step["note"] = f"{n_train:,} train + {n_test:,} test images, MD5 verified"

    def train_model(self) -> None:
        args = self.args
        with self.progress.step("train") as step:
            self.config = config = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                hidden=args.hidden,
                seed=args.seed,
                loss=args.loss,
                limit=args.limit,
                device=str(resolve_device(args.device)),
            )
            self.progress.log(f"    {config}")
            self.result = train(
                config,
                self.train_data,
                self.test_data,
                on_epoch=lambda stats: self.progress.log(
                    f"    {format_epoch(stats, config.epochs)}"
                ),
            )
            # Only deterministic content goes into the checkpoint (no wall-clock seconds), so the
            # same options, seed, code and SOURCE_DATE_EPOCH give a byte-identical file.
            history = [vars(s) for s in self.result.history]
            metrics = {
                "test_accuracy": self.result.test_accuracy,
                "history": [{k: v for k, v in h.items() if k != "seconds"} for h in history],
            }
            save_checkpoint(
                self.candidate,
                self.result.model,
                config=config.as_dict(),
                metrics=metrics,
                data_md5=self.data_md5,
                created_at=created_at_now(),
                commit=git_commit(REPO),
            )
            self.meta = read_metadata(self.candidate)
            step["note"] = f"weights sha256 {self.meta['weights_sha256'][:16]}..."

    def evaluate_model(self) -> None:
        """Score the saved file, not the in-memory model: what is gated is what ships."""
        with self.progress.step("evaluate") as step:
            x_test, y_test = self.test_data
            self.evaluation = e = evaluate_candidate(load_model(self.candidate), x_test, y_test)
            if e.correct != round(self.result.test_accuracy * e.total):
                raise BuildError(
                    f"the saved checkpoint scores {e.accuracy:.4f} but training measured "
                    f"{self.result.test_accuracy:.4f}: the file does not hold the trained model"
                )
            step["note"] = f"test accuracy {100 * e.accuracy:.2f} % ({e.correct:,}/{e.total:,})"

    def apply_gate(self) -> None:
        with self.progress.step("gate") as step:
            try:
                baseline = current_baseline()
            except BuildError as exc:
                if not self.args.force:
                    raise BuildError(f"{exc}; --force promotes without that comparison") from None
                loud(self.progress, [f"WARNING: --force: gating on the floor only: {exc}"])
                baseline = None
            self.decision = gate(
                self.evaluation.accuracy,
                baseline,
                min_accuracy=self.args.min_accuracy,
                tolerance=self.args.tolerance,
                force=self.args.force,
            )
            step["note"] = self.decision.summary()

    def promote_nothing(self, status: str, exit_code: int, reason: str) -> None:
        self.status, self.exit_code = status, exit_code
        for name in ("register", "ship"):
            self.progress.skip(name, reason)
        self.image["note"] = f"skipped: {reason}"

    def register(self) -> None:
        self.status = "promoted"
        if self.decision.forced:
            reasons = [f"  - {reason}" for reason in self.decision.reasons]
            loud(
                self.progress,
                ["WARNING: --force: promoting a candidate the gate REFUSED:", *reasons],
            )
        with self.progress.step("register") as step:
            self.tag, self.labels = promote(self.candidate, self.decision, self.args.output)
            self.version = self.tag.split(":", 1)[1]
            output = self.args.output
            self.artifacts = {"checkpoint": output, "sha256": file_sha256(output)}
            step["note"] = f"{self.tag} is now stage=production; copied to {output}"

    def ship(self) -> None:
        """The Docker image (unless --no-docker or no engine), and the bento if asked for."""
        assert self.tag is not None
        skip = "--no-docker" if self.args.no_docker else None
        if skip is None and (problem := docker_problem()):
            skip = f"no Docker engine: {problem}"
        if skip:
            self.image["note"] = f"skipped: {skip}"
            if not self.args.bentoml_build:
                self.progress.skip("ship", skip)
                return
            self.progress.log(f"    Docker image skipped: {skip}")
        with self.progress.step("ship") as step:
            notes = []
            if not skip:
                try:
                    log = self.folder.path("docker-build.log")
                    self.image = build_image(
                        self.args.output, self.tag, self.args, log, self.progress
                    )
                except (OSError, subprocess.SubprocessError) as exc:
                    self.image = {
                        "built": False,
                        "tags": [],
                        "note": f"{type(exc).__name__}: {exc}",
                    }
                built = self.image["built"]
                notes.append(
                    f"built {', '.join(self.image['tags'])}" if built else self.image["note"]
                )
            if self.args.bentoml_build:
                self.bento = build_bento(
                    self.tag, self.folder.path("bentoml-build.log"), self.progress
                )
                notes.append(
                    f"bento {self.bento['tag']}" if self.bento["built"] else self.bento["note"]
                )
            image_failed = not skip and not self.image["built"]
            if image_failed or (self.bento is not None and not self.bento["built"]):
                step["status"], self.exit_code = "failed", EXIT_AFTER_PROMOTION
            step["note"] = "; ".join(notes)

    def report(self) -> Path:
        """Plots and files into the report folder; report.json last, with every step's time."""
        e = self.evaluation
        with self.progress.step("report") as step:
            plots = self.folder.write_plots(
                [vars(s) for s in self.result.history], e.confusion, e.misclassified
            )
            if self.status != "promoted":  # the store does not keep it: keep it for inspection
                shutil.copyfile(self.candidate, self.folder.path("candidate.pt"))
            name = self.version if self.version else f"{self.status}-{utc_stamp()}"
            step["note"] = str(self.args.reports_dir / name)
        meta = self.meta
        report = {
            "schema_version": 1,
            "status": self.status,
            "exit_code": self.exit_code,
            "model": {
                "tag": self.tag,
                "version": self.version,
                "test_accuracy": e.accuracy,
                "test_correct": e.correct,
                "test_total": e.total,
                "per_class_accuracy": e.per_class_accuracy,
                "weights_sha256": meta["weights_sha256"],
                "file_sha256": meta["sha256"],
                "created_at": meta["created_at"],
                "git_commit": meta["git_commit"],
                "torch_version": meta["torch_version"],
                "architecture": meta["architecture"],
            },
            "gate": self.decision.as_dict(),
            "history": [vars(s) for s in self.result.history],
            "hyperparameters": self.config.as_dict(),
            "data_md5": self.data_md5,
            "store": {
                "bentoml_home": os.environ.get("BENTOML_HOME", "~/bentoml"),
                "tag": self.tag,
                "labels": self.labels,
            },
            "artifacts": self.artifacts,
            "image": self.image,
            "bento": self.bento,
            "plots": plots,
            "misclassified": [
                {
                    "index": m.index,
                    "true": m.true,
                    "predicted": m.predicted,
                    "confidence": m.confidence,
                }
                for m in e.misclassified
            ],
            "steps": self.progress.records,
            "timings": self.progress.timings(),
            "total_seconds": round(time.perf_counter() - self.started, 3),
            "started_at": self.started_at,
            "command": ["scripts/build", *self.argv],
            "torch_threads": torch.get_num_threads(),
        }
        return self.folder.publish(name, report)

    def tell(self, published: Path) -> None:
        """The outcome in a few lines: what changed, where to look."""
        self.progress.close()
        log, report_md = self.progress.log, published / "report.md"
        if self.status == "refused":
            hint = ""
            if self.args.quick:
                args = self.args
                hint = (
                    f"\n  --quick trains {args.epochs} epoch(s) on {args.limit:,} images: far "
                    f"below the {MIN_ACCURACY} % floor by design. Try `scripts/build --dry-run`, "
                    "or lower --min-accuracy with a scratch BENTOML_HOME and --output."
                )
            log(
                "error: the gate refused the candidate; nothing was promoted:\n  - "
                + "\n  - ".join(self.decision.reasons)
                + "\n  The store, the served model and --output are unchanged; "
                + f"--force promotes it anyway.{hint}\n  Report: {report_md}",
                error=True,
            )
        elif self.status == "dry-run":
            log(f"dry run finished; nothing was promoted. Report: {report_md}")
        else:
            shipped = ", ".join(self.image["tags"]) or self.image.get("note", "")
            log(
                f"promoted {self.tag}: test accuracy {100 * self.evaluation.accuracy:.2f} %, "
                f"weights sha256 {self.meta['weights_sha256']}\n"
                f"  checkpoint: {self.args.output} (sha256 {self.artifacts['sha256']})\n"
                f"  image: {shipped}\n  report: {report_md}"
            )
            if self.decision.forced:
                loud(self.progress, [f"WARNING: {self.tag} was promoted with --force."])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    progress = Progress(STEPS)
    build: Build | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-build-") as work:
            folder = ReportFolder(args.reports_dir)
            try:
                build = Build(args, argv, progress, Path(work), folder)
                return build.run()
            finally:
                folder.discard()
    except KeyboardInterrupt:
        progress.close()
        done = (
            f"{build.tag} was already promoted" if build and build.tag else "nothing was promoted"
        )
        progress.log(f"interrupted; {done}", error=True)
        return 130
    except Exception as exc:
        progress.close()
        expected = isinstance(exc, BuildError | DataError | CheckpointError | ValueError)
        if not expected:  # a bug rather than a condition: show where it happened
            traceback.print_exc()
        message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        if build and build.tag:
            progress.log(f"error after promoting {build.tag}: {message}", error=True)
            return EXIT_AFTER_PROMOTION
        progress.log(f"error: {message}\nnothing was promoted; the store is unchanged", error=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
