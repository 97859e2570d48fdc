"""A server's process tree (the `bentoml serve` process, its workers and helpers) via psutil."""

from __future__ import annotations

import contextlib

import psutil

WORKER_MODULE = "_bentoml_impl.worker"  # in the command line of every BentoML service worker


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants that are still alive."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def process_tree_pids(pid: int) -> set[int]:
    """The ids of `process_tree(pid)`: a change means a process died and was replaced."""
    return {process.pid for process in process_tree(pid)}


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / (1024 * 1024)


def worker_pids(pid: int) -> list[int]:
    """Descendants of `pid` that are BentoML service workers."""
    workers = []
    for process in process_tree(pid)[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(WORKER_MODULE in part for part in process.cmdline()):
                workers.append(process.pid)
    return workers
