"""`mnist-build`: retrain, evaluate, gate, register, ship and report a new model, in one command.

A candidate replaces the served model only when the gate accepts it (or `--force`), and then by
one atomic store write: registering it with `stage=production`, which `serving_tag()` picks. The
gate and that write happen under the store's promotion lock, so concurrent builds take turns.
A refused candidate touches neither the store, nor the checkpoint the image packs, nor any
earlier report. docs/retraining.md describes the steps, the gate and where everything lands.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch

from training.calibration import calibration_report
from training.checkpoint import Checkpoint, CheckpointError, creation_time
from training.cli import config_from_args
from training.data import DataError, ensure_mnist, file_hexdigest, load_split, write_atomically
from training.errors import first_line
from training.pipeline import history, rollback
from training.pipeline.cli import parse_build_args
from training.pipeline.deploy import DeployResult, roll_out, target_problem
from training.pipeline.gate import Baseline, gate
from training.pipeline.promote import (
    BaselineError,
    current_baseline,
    promotion_lock,
    register_promoted,
    store_home,
)
from training.pipeline.report import ReportFolder, analyse_errors, robustness_rows
from training.pipeline.robustness import CategoryScore, build_suite, score_suite
from training.pipeline.ship import (
    BentoResult,
    ImageResult,
    build_bento,
    build_image,
    docker_problem,
)
from training.train import evaluate, format_epoch, train_and_save

STEPS = ("fetch data", "train", "evaluate", "gate", "register", "ship", "report")
DEPLOY_STEPS = (*STEPS[:-1], "deploy", STEPS[-1])  # with --deploy
EXIT_OK, EXIT_REFUSED, EXIT_ERROR, EXIT_AFTER_PROMOTION = 0, 1, 2, 3
Shipped = TypeVar("Shipped", ImageResult, BentoResult)


class BuildError(RuntimeError):
    """A step cannot go on; the message says why and what to do."""


def log(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


def loud(lines: Sequence[str]) -> None:
    bar = "!" * 78
    log("\n".join([bar, *lines, bar]), error=True)


@dataclass
class StepRecord:
    step: str
    status: str = "done"  # or "failed", "skipped"
    seconds: float = 0.0
    note: str = ""


class StepLog:
    """The progress display: a numbered, timed line as each step starts and ends."""

    def __init__(self, names: Sequence[str] = STEPS) -> None:
        self.names = tuple(names)
        self.records: list[StepRecord] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[StepRecord]:
        """Time the block; set the yielded record's `note` (and `status`) to report them."""
        number = f"[{self.names.index(name) + 1}/{len(self.names)}] {name}"
        record = StepRecord(name)
        log(f"{number} ...")
        started = time.perf_counter()
        try:
            yield record
        except BaseException:
            record.status = "failed"
            raise
        finally:
            record.seconds = round(time.perf_counter() - started, 3)
            self.records.append(record)
            note = f" ({record.note})" if record.note else ""
            log(f"{number}: {record.status} in {record.seconds:.2f} s{note}")

    def skip(self, name: str, reason: str) -> None:
        self.records.append(StepRecord(name, "skipped", note=reason))
        log(f"[{self.names.index(name) + 1}/{len(self.names)}] {name}: skipped: {reason}")


class Build:
    """One run of the pipeline: each method is one step; the attributes are what it found."""

    def __init__(
        self, args: argparse.Namespace, argv: Sequence[str], work: Path, folder: ReportFolder
    ) -> None:
        self.args, self.argv, self.folder = args, list(argv), folder
        self.steps = StepLog(DEPLOY_STEPS if args.deploy else STEPS)
        self.candidate = work / "candidate.pt"
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.started = time.perf_counter()
        self.tag: str | None = None  # set once the store holds the promoted model
        self.version: str | None = None
        self.labels: dict[str, str] = {}
        self.artifacts: dict[str, object] = {"checkpoint": None, "sha256": None}
        self.image = ImageResult()
        self.bento: BentoResult | None = None
        self.deployment: DeployResult | None = None
        self.promotion: dict[str, object] | None = None  # its entry in the promotion history
        self.baseline_test_flagged: float | None = None  # the promoted model's, on MNIST test
        self.errors: list[str] = []  # failures after the promotion
        self.status = "running"
        self.exit_code = EXIT_OK

    def run(self) -> int:
        """Every step in order; returns the exit status. Every gate decision gets a report."""
        if self.args.deploy:  # before anything is trained: is there a service to roll into?
            problem = docker_problem() or target_problem(self.args.swarm_service)
            if problem:
                raise BuildError(f"--deploy: {problem}")
        self.fetch_data()
        self.train_model()
        self.evaluate_model()
        with promotion_lock(log):  # the baseline cannot change between the gate and the write
            self.apply_gate()
            if self.args.dry_run:
                self.promote_nothing("dry-run", EXIT_OK, "--dry-run promotes nothing")
                log(f"dry run, so nothing is promoted; gate {self.decision.summary()}")
            elif not self.decision.promote:
                self.promote_nothing("refused", EXIT_REFUSED, "the gate refused the candidate")
            else:
                self.register()
        if self.status == "promoted":
            self.ship()
            if self.args.deploy:
                self.deploy()
        published = self.report()
        self.tell(published)
        return self.exit_code

    def fetch_data(self) -> None:
        with self.steps("fetch data") as step:
            self.data_md5 = ensure_mnist(self.args.data_dir, log=log)
            self.train_data = load_split(self.args.data_dir, train=True)
            self.test_data = load_split(self.args.data_dir, train=False)
            n_train, n_test = len(self.train_data[1]), len(self.test_data[1])
            step.note = f"{n_train:,} train + {n_test:,} test images, MD5 verified"

    def train_model(self) -> None:
        with self.steps("train") as step:
            self.config = config = config_from_args(self.args)
            log(f"    {config}")
            # The same SOURCE_DATE_EPOCH, options, seed and code give a byte-identical file.
            self.result, self.checkpoint = train_and_save(
                config,
                self.train_data,
                self.test_data,
                self.candidate,
                data_md5=self.data_md5,
                on_epoch=lambda stats: log(f"    {format_epoch(stats, config.epochs)}"),
                created_at=creation_time(),
            )
            self.meta = self.checkpoint.metadata
            step.note = f"weights sha256 {self.checkpoint.weights_sha256[:16]}..."

    def evaluate_model(self) -> None:
        """Score the saved file, not the in-memory model: what is gated is what ships.

        The MNIST test set, then the robustness suite through the service's preprocessing and
        inference, then calibration on the test set (reliability before and after).
        """
        with self.steps("evaluate") as step:
            model = self.checkpoint.model
            self.accuracy = evaluate(model, *self.test_data)
            self.analysis = analysis = analyse_errors(model, *self.test_data)
            images, labels = self.test_data
            digits = (images * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
            self.suite = build_suite(digits, labels.numpy(), count=self.args.suite_size)
            self.robustness = score_suite(self.candidate, self.suite)
            self.calibration = calibration_report(
                model, self.checkpoint.calibration, *self.test_data
            )
            worst = min((s for s in self.robustness if s.digits), key=lambda s: s.accuracy or 0)
            step.note = (
                f"test accuracy {100 * self.accuracy:.2f} % "
                f"({analysis.correct:,}/{analysis.total:,}); weakest robustness category "
                f"{worst.name} {100 * (worst.accuracy or 0):.1f} %"
            )

    def apply_gate(self) -> None:
        with self.steps("gate") as step:
            try:
                baseline = current_baseline()
            except BaselineError as exc:
                if not self.args.force:
                    raise BuildError(f"{exc}; --force promotes without that comparison") from None
                loud([f"WARNING: --force: gating on the floor only: {exc}"])
                baseline = None
            self.baseline_robustness = self.score_baseline(baseline)
            theirs = {s.name: s.accuracy for s in self.baseline_robustness}
            their_flags = {s.name: s.flagged for s in self.baseline_robustness}
            self.decision = gate(
                self.accuracy,
                baseline,
                min_accuracy=self.args.min_accuracy,
                tolerance=self.args.tolerance,
                force=self.args.force,
                robustness={
                    s.name: (s.accuracy, theirs.get(s.name))
                    for s in self.robustness
                    if s.accuracy is not None
                },
                robustness_tolerance=self.args.robustness_tolerance,
                flag_rates={
                    s.name: (s.flagged, their_flags.get(s.name))
                    for s in self.robustness
                    if not s.digits
                },
                test_flagged=(self.calibration.get("flagged"), self.baseline_test_flagged),
            )
            step.note = self.decision.summary()

    def score_baseline(self, baseline: Baseline | None) -> list[CategoryScore]:
        """The promoted model on the same suite and its flag on the same MNIST test digits, so
        the gate compares like with like (`baseline_test_flagged`: None without a flag)."""
        self.baseline_test_flagged = None
        if baseline is None or baseline.checkpoint is None:
            return []
        try:
            scores = score_suite(Path(baseline.checkpoint), self.suite)
            promoted = Checkpoint.load(Path(baseline.checkpoint))
            if promoted.calibration is not None:
                flags = calibration_report(promoted.model, promoted.calibration, *self.test_data)
                self.baseline_test_flagged = flags["flagged"]
            return scores
        except CheckpointError as exc:
            if not self.args.force:
                raise BuildError(
                    f"cannot score the promoted model {baseline.tag} on the robustness suite: "
                    f"{exc}; --force promotes without that comparison"
                ) from None
            loud([f"WARNING: --force: no robustness comparison: {exc}"])
            return []

    def promote_nothing(self, status: str, exit_code: int, reason: str) -> None:
        self.status, self.exit_code = status, exit_code
        for name in ("register", "ship", *(["deploy"] if self.args.deploy else [])):
            self.steps.skip(name, reason)
        self.image.note = f"skipped: {reason}"

    def fail_after_promotion(self, message: str) -> None:
        """A one-line error; the run goes on to its report and exits with status 3."""
        log(f"error after promoting {self.tag}: {message}", error=True)
        self.errors.append(message)
        self.exit_code = EXIT_AFTER_PROMOTION

    def register(self) -> None:
        """The promotion (the store write), then the atomic copy to --output."""
        if self.decision.forced:
            reasons = [f"  - {reason}" for reason in self.decision.reasons]
            loud(["WARNING: --force: promoting a candidate the gate REFUSED:", *reasons])
        with self.steps("register") as step:
            self.tag, self.labels = register_promoted(self.candidate, self.meta, self.decision)
            self.version, self.status = self.tag.split(":", 1)[1], "promoted"
            step.note = f"{self.tag} is now stage=production"
            try:
                self.promotion = history.record_promotion(
                    self.tag,
                    self.meta,
                    promoted_by="mnist-build" + (" --force" if self.decision.forced else ""),
                    gate=self.labels["gate"],
                    baseline=self.decision.baseline,
                )
            except (OSError, history.HistoryError) as exc:
                step.status = "failed"
                self.fail_after_promotion(f"cannot record the promotion: {exc}")
            output = self.args.output
            try:
                write_atomically(output, self.candidate.read_bytes())
            except OSError as exc:
                step.status = "failed"
                self.fail_after_promotion(f"cannot copy the checkpoint to {output}: {exc}")
                return
            self.artifacts = {"checkpoint": output, "sha256": file_hexdigest(output, "sha256")}
            step.note += f"; copied to {output}"

    def ship(self) -> None:
        """The Docker image (unless --no-docker or no engine), and the bento if asked for."""
        skip = "--no-docker" if self.args.no_docker else None
        if skip is None and self.artifacts["sha256"] is None:
            skip = "no checkpoint at --output to pack"
        if skip is None and (problem := docker_problem()):
            skip = f"no Docker engine: {problem}"
        if skip:
            self.image.note = f"skipped: {skip}"
            if not self.args.bentoml_build:
                self.steps.skip("ship", skip)
                return
            log(f"    Docker image skipped: {skip}")
        with self.steps("ship") as step:
            notes = []
            if not skip:
                self.image = self.attempt(self.ship_image, ImageResult)
                notes.append(", ".join(self.image.tags) if self.image.built else self.image.note)
            if self.args.bentoml_build:
                self.bento = self.attempt(self.ship_bento, BentoResult)
                notes.append(f"bento {self.bento.tag}" if self.bento.built else self.bento.note)
            step.note = "; ".join(notes)
            if (not skip and not self.image.built) or (self.bento and not self.bento.built):
                step.status = "failed"

    def attempt(self, build: Callable[[], Shipped], failed: type[Shipped]) -> Shipped:
        """Run one shipping build; any failure becomes a one-line error, never a traceback."""
        try:
            result = build()
        except Exception as exc:
            result = failed(note=first_line(exc, with_type=True))
        if not result.built:
            self.fail_after_promotion(result.note)
        return result

    def ship_image(self) -> ImageResult:
        assert self.tag is not None
        return build_image(
            self.args.output,
            self.tag,
            str(self.artifacts["sha256"]),
            image_name=self.args.image_name,
            requested_base=self.args.base_image,
            log_path=self.folder.path("docker-build.log"),
            log=log,
        )

    def deploy(self) -> None:
        """Roll the image just shipped into the Swarm service (scripts/rollout deploy)."""
        if not self.image.built:
            reason = f"no image to roll out ({self.image.note})"
            self.steps.skip("deploy", reason)
            self.deployment = DeployResult(service=self.args.swarm_service, note=reason)
            return
        with self.steps("deploy") as step:
            self.deployment = roll_out(
                self.image.tags[0],
                self.args.swarm_service,
                timeout_s=self.args.deploy_timeout,
                log_path=self.folder.path("rollout.log"),
                log=log,
            )
            step.note = self.deployment.note
            if not self.deployment.deployed:
                step.status = "failed"
                self.fail_after_promotion(self.deployment.note)

    def ship_bento(self) -> BentoResult:
        assert self.tag is not None
        return build_bento(self.tag, self.folder.path("bentoml-build.log"))

    def report(self) -> Path:
        """Plots and files into the report folder; report.json last, with every step's time."""
        analysis, meta = self.analysis, self.meta
        history = [asdict(s) for s in self.result.history]
        with self.steps("report") as step:
            plots = self.folder.write_plots(
                history, analysis.confusion, analysis.misclassified, self.calibration
            )
            if self.status != "promoted":  # the store does not keep it: keep it for inspection
                shutil.copyfile(self.candidate, self.folder.path("candidate.pt"))
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            name = self.version or f"{self.status}-{stamp}"
            step.note = str(self.args.reports_dir / name)
        report = {
            "schema_version": 1,
            "status": self.status,
            "exit_code": self.exit_code,
            "errors": self.errors,
            "model": {
                "tag": self.tag,
                "version": self.version,
                "test_accuracy": self.accuracy,
                "test_correct": analysis.correct,
                "test_total": analysis.total,
                "per_class_accuracy": analysis.per_class_accuracy,
                "weights_sha256": meta["weights_sha256"],
                "file_sha256": meta["sha256"],
                **{k: meta[k] for k in ("created_at", "git_commit", "torch_version")},
                "architecture": meta["architecture"],
            },
            "gate": self.decision.as_dict(),
            "robustness": robustness_rows(self.robustness, self.baseline_robustness),
            "calibration": self.calibration,
            "history": history,
            "hyperparameters": self.config.as_dict(),
            "data_md5": self.data_md5,
            "store": {"bentoml_home": store_home(), "tag": self.tag, "labels": self.labels},
            "artifacts": self.artifacts,
            "image": asdict(self.image),
            "bento": asdict(self.bento) if self.bento else None,
            "deploy": asdict(self.deployment) if self.deployment else None,
            "promotion": self.promotion,
            "plots": plots,
            "misclassified": [
                {k: v for k, v in asdict(m).items() if k != "image"} for m in analysis.misclassified
            ],
            "steps": [asdict(r) for r in self.steps.records],
            "timings": {r.step: r.seconds for r in self.steps.records if r.status != "skipped"},
            "total_seconds": round(time.perf_counter() - self.started, 3),
            "started_at": self.started_at,
            "command": ["mnist-build", *self.argv],
            "torch_threads": torch.get_num_threads(),
        }
        return self.folder.publish(name, report)

    def tell(self, published: Path) -> None:
        """The outcome in a few lines: what changed, where to look."""
        report_md = published / "report.md"
        if self.status == "refused":
            args, hint = self.args, ""
            if args.quick:
                hint = (
                    f"\n  --quick trains {args.epochs} epoch(s) on {args.limit:,} images: far "
                    f"below the {args.min_accuracy:g} % floor by design. Try `scripts/build "
                    "--dry-run`, or lower --min-accuracy with a scratch BENTOML_HOME and --output."
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
            shipped = ", ".join(self.image.tags) or self.image.note
            log(
                f"promoted {self.tag}: test accuracy {100 * self.accuracy:.2f} %, "
                f"weights sha256 {self.meta['weights_sha256']}\n"
                f"  checkpoint: {self.args.output} (sha256 {self.artifacts['sha256']})\n"
                f"  image: {shipped}\n  report: {report_md}"
            )
            if self.deployment and self.deployment.deployed:
                log(f"  deployed: {self.deployment.note} in {self.deployment.seconds:.0f} s")
            if self.errors:
                log(f"error: promoted, but: {'; '.join(self.errors)}", error=True)
            if self.decision.forced:
                loud([f"WARNING: {self.tag} was promoted with --force."])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["history"]:
        return history.main(argv[1:])
    if argv[:1] == ["rollback"]:
        return rollback.main(argv[1:])
    args = parse_build_args(argv)
    build: Build | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-build-") as work:
            folder = ReportFolder(args.reports_dir)
            try:
                build = Build(args, argv, Path(work), folder)
                return build.run()
            finally:
                folder.discard()
    except KeyboardInterrupt:
        done = "nothing was promoted"
        if build and build.tag:
            done = f"{build.tag} was already promoted"
        log(f"interrupted; {done}", error=True)
        return 130
    except Exception as exc:
        expected = isinstance(exc, BuildError | DataError | CheckpointError | ValueError)
        if not expected:  # a bug rather than a condition: show where it happened
            traceback.print_exc()
        message = str(exc) if expected else first_line(exc, with_type=True)
        if build and build.tag:
            log(f"error after promoting {build.tag}: {message}", error=True)
            return EXIT_AFTER_PROMOTION
        log(f"error: {message}\nnothing was promoted; the store is unchanged", error=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
