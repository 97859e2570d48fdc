"""Helpers shared by the tests and the benchmarks: real servers, images, multipart bodies,
/metrics parsing, process trees.

Imported in one direction: tests and benchmarks import this package; it imports neither.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root: where `bentoml serve` finds the service, and the tests their data."""
