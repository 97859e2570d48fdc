"""`mnist-build`'s command line: the training flags of `training.cli` plus gate, modes, outputs
and shipping; every flag, default and check."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

from training.cli import QUICK_EPOCHS, QUICK_LIMIT, add_training_arguments, check_training_arguments
from training.pipeline import REPO
from training.pipeline.gate import MIN_ACCURACY, ROBUSTNESS_TOLERANCE, TOLERANCE
from training.pipeline.robustness import QUICK_SUITE_SIZE, SUITE_SIZE
from training.pipeline.ship import LOCAL_BASE_IMAGE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # `--no` must not mean --no-docker
        prog="mnist-build",
        description=(
            "Retrain the MNIST MLP and, if the gate accepts it, promote it: fetch and verify "
            "MNIST, train, evaluate on the test set, gate against the promoted model, register "
            "it in the BentoML store as stage=production, copy it to --output, build the Docker "
            "image, and write a report. See docs/retraining.md."
        ),
        epilog=(
            "Exit status: 0 promoted (or dry run), 1 refused by the gate, 2 error before "
            "promotion (nothing changed), 3 promoted but a later step (copy to --output, image "
            "or bento build) failed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(p, data_dir=REPO / "data", recipe="robust")
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
        "--robustness-tolerance",
        type=float,
        default=ROBUSTNESS_TOLERANCE,
        metavar="POINTS",
        help="refuse a candidate more than this many points below the promoted model in any "
        "category of the robustness suite",
    )
    g.add_argument(
        "--suite-size",
        type=int,
        default=SUITE_SIZE,
        metavar="N",
        help="uploads per robustness category (made from MNIST test digits, fonts, strokes)",
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
        help="image repository: tags NAME:<version>, NAME:latest",
    )
    s.add_argument(
        "--base-image",
        help=f"BASE_IMAGE build argument; when None: {LOCAL_BASE_IMAGE} if that image exists, "
        "else the Dockerfile's own default",
    )
    s.add_argument(
        "--bentoml-build",
        action="store_true",
        help="also run `bentoml build` for a bento of the promoted model (BentoML installs uv "
        "and locks packages from PyPI; docs/retraining.md)",
    )
    d = p.add_argument_group("deploy (Docker Swarm, docs/deploy.md)")
    d.add_argument(
        "--deploy",
        action="store_true",
        help="after shipping, roll the new image into the running Swarm service with "
        "`scripts/rollout deploy` (one replica at a time; Swarm rolls a failing image back); "
        "exit status 3 if that fails",
    )
    d.add_argument(
        "--swarm-service",
        default=os.environ.get("MNIST_SWARM_SERVICE", "mnist_mnist"),
        metavar="SERVICE",
        help="the service --deploy rolls into ($MNIST_SWARM_SERVICE, else <stack>_mnist)",
    )
    d.add_argument(
        "--deploy-timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="how long --deploy waits for the rollout to finish",
    )
    return p


def parse_build_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`mnist-build`'s options, checked; --quick/--dry-run defaults applied."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick or args.dry_run:  # smaller defaults; explicit --epochs/--limit still win
        p.set_defaults(
            epochs=QUICK_EPOCHS, limit=QUICK_LIMIT, suite_size=QUICK_SUITE_SIZE, quick=True
        )
        args = p.parse_args(argv)
    check_training_arguments(p, args)
    if not 0 <= args.min_accuracy <= 100:
        p.error("--min-accuracy is a percentage between 0 and 100")
    if not args.tolerance >= 0:
        p.error("--tolerance must be zero or more percentage points")
    if not args.robustness_tolerance >= 0:
        p.error("--robustness-tolerance must be zero or more percentage points")
    if args.suite_size < 20:
        p.error("--suite-size must be at least 20 uploads per category")
    if args.deploy and (args.no_docker or args.dry_run):
        p.error("--deploy rolls out the image the build ships: not with --no-docker or --dry-run")
    if not args.deploy_timeout > 0:
        p.error("--deploy-timeout must be more than 0 seconds")
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", args.image_name):
        p.error("--image-name must be a lowercase Docker repository name")
    return args
