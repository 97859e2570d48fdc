"""Removing the Docker images a test built, by tag, without touching anyone else's layers."""

from __future__ import annotations

from collections.abc import Callable

from training.pipeline.ship import docker


def remove_image(tag: str, model_path: str) -> None:
    """Remove the test image and the layers only it has; the shared ones stay as build cache."""
    history = docker(
        "history", "--no-trunc", "--format", "{{.ID}}\t{{.CreatedBy}}", tag, check=False
    ).stdout.splitlines()
    own_layers = []  # from the top down to the checkpoint's COPY, the last step shared by no build
    for line in history[1:]:
        image_id, _, created_by = line.partition("\t")
        if image_id.startswith("sha256:"):
            own_layers.append(image_id)
        if "COPY" in created_by and "/app/model.pt" in created_by:
            break
    docker("rmi", "--force", "--no-prune", tag, check=False)
    for image_id in own_layers:
        docker("rmi", "--no-prune", image_id, check=False)
    remove_checkpoint_stage(lambda step: model_path in step)


def remove_checkpoint_stage(made_here: Callable[[str], bool]) -> None:
    """Remove this build's images of the checkpoint stage, which the legacy builder leaves behind.

    Only the leftovers whose last step `made_here` recognizes go: a concurrent build may still need
    its own. (BuildKit leaves none.)
    """
    leftovers = docker(
        "images", "--quiet", "--no-trunc",
        "--filter", "dangling=true", "--filter", "label=mnist-service.stage=checkpoint",
        check=False,
    ).stdout.split()  # fmt: skip
    for image_id in leftovers:
        steps = docker(
            "history", "--no-trunc", "--format", "{{.CreatedBy}}", image_id, check=False
        ).stdout.splitlines()
        if steps and made_here(steps[0]):
            docker("rmi", image_id, check=False)
