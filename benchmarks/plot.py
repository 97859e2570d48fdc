"""The side-by-side plot for docs/serving.png: req/s and p99 against concurrency, per server.

Medians over the rounds, with the rounds' min-max as error bars, so the plot shows the spread
that decides issue 12's "in every round" targets, not just a best run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"A": "tab:blue", "B": "tab:orange", "C": "tab:gray"}


def plot(results: dict[str, Any], path: Path) -> None:
    """Two panels (req/s linear, p99 log) over the measured concurrency levels."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    levels = sorted(int(level) for level in results["levels"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, server in results["servers"].items():
        rows = [results["levels"][str(level)]["servers"][key] for level in levels]
        median = [row["median_rps"] for row in rows]
        spread = [
            [m - row["min_rps"] for m, row in zip(median, rows, strict=True)],
            [row["max_rps"] - m for m, row in zip(median, rows, strict=True)],
        ]
        style = {"color": COLOURS.get(key), "marker": "o", "label": f"{key}: {server['label']}"}
        left.errorbar(levels, median, yerr=spread, capsize=3, **style)
        right.plot(levels, [row["median_p99_ms"] for row in rows], **style)
    for axis, title in ((left, "req/s (median, min-max)"), (right, "p99 latency, ms (median)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrent connections (wrk -t1)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    left.legend(fontsize="small")
    settings = results["settings"]
    figure.suptitle(
        f"/predict_image side by side, {results['date'][:10]}, {settings['cpus']} CPUs, "
        f"{settings['rounds']} round(s) x {settings['duration_s']} s"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
