"""The store's record of which model was in production when: `mnist-build history`.

BentoML's store knows which entries carry `stage=production`, not since when each one was the
served model nor who made it so. Every promotion appends an entry here (tag, sha256s, accuracy,
from/to times, who and what promoted it) and closes the one before; nothing is ever removed. The
file lives beside the store's promotion lock, `$BENTOML_HOME/mnist-mlp.production.json`, is only
written under that lock, and is replaced whole (temp file, fsync, rename), so a reader never
sees half a record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.data import write_atomically
from training.pipeline.gate import Baseline
from training.pipeline.promote import store_home
from training.registry import MODEL_NAME, import_bentoml

HISTORY_FILE = f"{MODEL_NAME}.production.json"
SCHEMA_VERSION = 1


class HistoryError(RuntimeError):
    """The history file cannot be read; the message names it and says why."""


def history_path(home: Path | None = None) -> Path:
    return (home or store_home()) / HISTORY_FILE


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def who() -> str:
    """The user and host that ran the promotion, for the record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def read_history(path: Path | None = None) -> list[dict[str, Any]]:
    """The entries, oldest first; [] when nothing was promoted yet (no file)."""
    path = path or history_path()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise HistoryError(f"cannot read the promotion history {path}: {exc}") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise HistoryError(f"cannot read the promotion history {path}: no 'entries' list")
    return entries


def write_history(entries: Sequence[dict[str, Any]], path: Path | None = None) -> None:
    document = {"schema_version": SCHEMA_VERSION, "model": MODEL_NAME, "entries": list(entries)}
    write_atomically(path or history_path(), (json.dumps(document, indent=2) + "\n").encode())


def earlier_entry(baseline: Baseline) -> dict[str, Any]:
    """The entry for a model that was served before this history was kept (from the store)."""
    bentoml = import_bentoml()
    model = bentoml.models.get(baseline.tag)
    return {
        "tag": baseline.tag,
        "sha256": baseline.sha256,
        "weights_sha256": baseline.weights_sha256,
        "test_accuracy": baseline.test_accuracy,
        "from": model.info.creation_time.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "to": None,
        "promoted_by": model.info.labels.get("promoted_by") or "mnist-train (never promoted)",
        "by": None,
        "gate": model.info.labels.get("gate"),
        "note": "served before the promotion history was kept; its start is its store time",
    }


def record_promotion(
    tag: str,
    metadata: dict[str, Any],
    *,
    promoted_by: str,
    gate: str,
    baseline: Baseline | None,
    note: str = "",
    rolled_back: bool = False,
    path: Path | None = None,
) -> dict[str, Any]:
    """Close the serving entry (marked `rolled_back` if so) and append `tag` as production from
    now. Call under the promotion lock."""
    entries = read_history(path)
    if not entries and baseline is not None:
        entries.append(earlier_entry(baseline))
    when = now()
    for entry in entries:
        if entry.get("to") is None:
            entry["to"] = when
            if rolled_back:
                entry["rolled_back"] = True
    entry = {
        "tag": tag,
        "sha256": metadata.get("sha256"),
        "weights_sha256": metadata.get("weights_sha256"),
        "test_accuracy": metadata.get("metrics", {}).get("test_accuracy"),
        "from": when,
        "to": None,
        "promoted_by": promoted_by,
        "by": who(),
        "gate": gate,
        "note": note,
    }
    write_history([*entries, entry], path)
    return entry


def format_history(entries: Sequence[dict[str, Any]]) -> str:
    """One line per entry, oldest first, the serving one marked."""
    if not entries:
        return f"no promotion recorded in {history_path()}"
    lines = [f"{'from':<25}  {'to':<25}  {'tag':<30}  {'sha256':<12}  accuracy  promoted by"]
    for entry in entries:
        accuracy = entry.get("test_accuracy")
        lines.append(
            f"{entry.get('from') or '?':<25}  {entry.get('to') or '(serving)':<25}  "
            f"{entry.get('tag', '?'):<30}  {(entry.get('sha256') or '?')[:12]:<12}  "
            f"{f'{100 * accuracy:.2f} %' if accuracy is not None else '?':>8}  "
            f"{entry.get('promoted_by', '?')}"
            + (f" ({entry['by']})" if entry.get("by") else "")
            + (f", gate {entry['gate']}" if entry.get("gate") else "")
            + (", rolled back" if entry.get("rolled_back") else "")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`mnist-build history [--json]`: which model was production when, oldest first."""
    p = argparse.ArgumentParser(
        prog="mnist-build history",
        description="Which model was in production when, oldest first, from "
        f"$BENTOML_HOME/{HISTORY_FILE} (written at every promotion). See docs/retraining.md.",
    )
    p.add_argument("--json", action="store_true", help="the entries as JSON, for machines")
    args = p.parse_args(argv)
    try:
        entries = read_history()
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(entries, indent=2) if args.json else format_history(entries))
    return 0
