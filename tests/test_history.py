"""The promotion history: which model was in production when (`mnist-build history`).

In process: the record itself (closing the serving entry, appending, never losing one, replacing
the file whole, a damaged file named in one line). End to end: real builds into a temp store
record each promotion, and `scripts/build history` reads them back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO
from tests.test_build import QUICK, WORSE, Site, promoted_tag, sha256
from training.pipeline import history

METADATA = {"sha256": "a" * 64, "weights_sha256": "b" * 64, "metrics": {"test_accuracy": 0.98}}


def test_each_promotion_closes_the_serving_entry_and_appends_its_own(tmp_path: Path) -> None:
    path = tmp_path / history.HISTORY_FILE
    first = history.record_promotion(
        "mnist-mlp:one",
        METADATA,
        promoted_by="mnist-build",
        gate="passed",
        baseline=None,
        path=path,
    )
    second = history.record_promotion(
        "mnist-mlp:two",
        {**METADATA, "sha256": "c" * 64},
        promoted_by="mnist-build --force",
        gate="forced",
        baseline=None,
        path=path,
    )
    entries = history.read_history(path)
    assert [e["tag"] for e in entries] == ["mnist-mlp:one", "mnist-mlp:two"]
    assert entries[0]["to"] == second["from"] >= first["from"]
    assert entries[1]["to"] is None  # serving
    assert entries[1]["sha256"] == "c" * 64 and entries[1]["test_accuracy"] == 0.98
    assert entries[1]["promoted_by"] == "mnist-build --force" and entries[1]["gate"] == "forced"
    assert "@" in entries[1]["by"]  # user@host
    document = json.loads(path.read_text())
    assert document["schema_version"] == 1 and document["model"] == "mnist-mlp"
    # Replaced whole: no temp file is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == [history.HISTORY_FILE]


def test_no_file_means_no_promotion_yet(tmp_path: Path) -> None:
    assert history.read_history(tmp_path / history.HISTORY_FILE) == []


@pytest.mark.parametrize("text", ["{not json", '{"entries": 3}', "[]"])
def test_a_damaged_history_is_one_clear_error_and_is_not_overwritten(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / history.HISTORY_FILE
    path.write_text(text)
    with pytest.raises(history.HistoryError, match="cannot read the promotion history"):
        history.record_promotion(
            "mnist-mlp:x", METADATA, promoted_by="mnist-build", gate="passed", baseline=None,
            path=path,
        )  # fmt: skip
    assert path.read_text() == text


def test_the_table_marks_the_serving_model(tmp_path: Path) -> None:
    path = tmp_path / history.HISTORY_FILE
    for tag in ("mnist-mlp:one", "mnist-mlp:two"):
        history.record_promotion(
            tag, METADATA, promoted_by="mnist-build", gate="passed", baseline=None, path=path
        )
    lines = history.format_history(history.read_history(path)).splitlines()
    assert len(lines) == 3 and lines[0].startswith("from")
    assert "mnist-mlp:one" in lines[1] and "(serving)" not in lines[1]
    assert "mnist-mlp:two" in lines[2] and "(serving)" in lines[2] and "98.00 %" in lines[2]


# ---- real builds ---------------------------------------------------------------------------


def run_history(site: Site, *args: str, command: str = "history") -> subprocess.CompletedProcess:
    """`scripts/build history` (or `rollback`) against the site's store."""
    return subprocess.run(
        [str(REPO / "scripts" / "build"), command, *args],
        cwd=site.root,
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_builds_record_which_model_was_production_when_and_rollback_serves_the_one_before(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site")
    first = promoted_tag(site.build(*QUICK, "--no-docker"))
    # As if the first model had been promoted before histories were kept: the next promotion
    # records it too, from its store entry.
    (site.home / history.HISTORY_FILE).unlink()
    second = promoted_tag(site.build(*WORSE, "--force", "--no-docker"))
    shown = run_history(site, "--json")
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)
    assert [e["tag"] for e in entries] == [first, second]
    report = site.report(second.split(":")[1])
    assert entries[1]["sha256"] == report["model"]["file_sha256"] == report["promotion"]["sha256"]
    assert entries[1]["promoted_by"] == "mnist-build --force" and entries[1]["gate"] == "forced"
    assert entries[1]["to"] is None and entries[0]["to"] == entries[1]["from"]
    assert (
        entries[0]["promoted_by"] == "mnist-build"
        and "before the promotion history" in (entries[0]["note"])
    )
    assert entries[0]["sha256"] == site.report(first.split(":")[1])["model"]["file_sha256"]
    table = run_history(site)
    assert table.returncode == 0 and second in table.stdout.splitlines()[-1], table.stdout

    # Roll back: the first model is served again, registered anew; nothing is deleted.
    models_before = set(site.store()["models"])
    back = run_history(site, "--output", str(site.root / "back.pt"), command="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    store = site.store()
    again = store["serving"]
    assert again not in models_before and models_before < set(store["models"])
    labels = store["models"][again]
    assert labels["gate"] == "rollback" and labels["replaces"] == second
    assert labels["rollback_to"] == first
    first_sha = site.report(first.split(":")[1])["model"]["file_sha256"]
    assert sha256(site.root / "back.pt") == first_sha
    entries = json.loads(run_history(site, "--json").stdout)
    assert [e["tag"] for e in entries] == [first, second, again]
    assert entries[1].get("rolled_back") and not entries[0].get("rolled_back")
    assert entries[2]["sha256"] == first_sha and entries[2]["promoted_by"] == "mnist-build rollback"
    # Rolling back again would mean the rolled-back model or the one serving: refused.
    twice = run_history(site, "--no-output", command="rollback")
    assert twice.returncode == 2 and "Traceback" not in twice.stderr
    assert twice.stderr.startswith("error: no earlier production model to roll back to from")
    assert site.store()["serving"] == again

    (site.home / history.HISTORY_FILE).write_text("{broken")
    broken = run_history(site)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.startswith("error: cannot read the promotion history")
