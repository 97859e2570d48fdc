"""Benchmarks: scripts that print numbers (docs/benchmarks.md); none of them is a test."""

import compileall

import psutil

from tests.support import REPO


def compile_service() -> None:
    """Compile the service's bytecode first, as `make serve` and the image do: on a machine with
    PYTHONDONTWRITEBYTECODE=1 (this one) each process of every start would compile the service's
    modules again, ~90 ms each, which a user of `make serve` never pays."""
    for package in ("service", "training"):
        compileall.compile_dir(REPO / package, quiet=1)


def disk_read_bytes() -> int:
    """Bytes the machine has read from its disks. This VM pages out file cache that no process
    maps and nobody read for about a minute (its kernel's DAMON `pageout` scheme), so a start
    after a pause reads torch and the bytecode from disk again: 50-100 MiB, 3.2-25 s at the
    disk's worst here (docs/benchmarks.md, "Sixth pass")."""
    counters = psutil.disk_io_counters()
    return counters.read_bytes if counters else 0
