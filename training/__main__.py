"""`python -m training`, the same command as `mnist-train` (see `training.cli`)."""

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
