"""Benchmarks: scripts that print numbers (docs/benchmarks.md); none of them is a test."""

import compileall

from tests.support import REPO


def compile_service() -> None:
    """Compile the service's bytecode first, as `make serve` and the image do: on a machine with
    PYTHONDONTWRITEBYTECODE=1 (this one) each process of every start would compile the service's
    modules again, ~90 ms each, which a user of `make serve` never pays."""
    for package in ("service", "training"):
        compileall.compile_dir(REPO / package, quiet=1)
