"""`python -m mnist_client` = `mnist-predict`."""

from mnist_client.cli import main

raise SystemExit(main())
