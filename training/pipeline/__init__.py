"""The retraining pipeline behind `mnist-build`: build -> gate -> promote -> ship -> report.

It runs from a checkout of the repository (the Docker build context) and uses the training
core (`training`), never the other way round: serving never imports this package, and the
serving image does not contain it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository checkout: default data, output and reports folders, and the build context."""
