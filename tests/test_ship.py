"""The ship step's messages name logs that still exist after the run: the report folder is a
temp folder until it is published (renamed), so a printed temp path would be gone."""

from __future__ import annotations

from training.pipeline import ship


def test_a_failed_image_build_names_its_log_in_the_report_folder(tmp_path, monkeypatch):
    temp_folder = tmp_path / ".build-abc123"
    temp_folder.mkdir()
    (tmp_path / "model.pt").write_bytes(b"a checkpoint")
    monkeypatch.setattr(ship, "base_image", lambda requested: None)
    monkeypatch.setattr(ship, "run_logged", lambda command, log_path: 1)
    printed: list[str] = []
    result = ship.build_image(
        tmp_path / "model.pt",
        "mnist-mlp:k2bpv6qz4wm5ccdq",
        "ab" * 32,
        image_name="mnist-service",
        requested_base=None,
        log_path=temp_folder / "docker-build.log",
        log=printed.append,
    )
    assert not result.built
    assert result.note == "docker build exited 1; see docker-build.log in the report folder"
    assert printed[-1].endswith("(output: docker-build.log in the report folder)")
    assert ".build-abc123" not in result.note + "".join(printed)
    assert "MODEL_TAG=mnist-mlp:k2bpv6qz4wm5ccdq" in result.command  # for the image's /model_info
