"""`mnist-predict FILE...`: the digit in each image file, one line each (or `--json`).

Exit status: 0 when every file got a prediction, 1 when any did not (each failure is one line on
stderr, never a traceback), 2 for bad usage. A failure that every later file would meet too (no
server, a wrong key or URL, a server error) stops the run at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from mnist_client.client import API_KEY_ENV, DEFAULT_URL, URL_ENV, MnistClient
from mnist_client.errors import MnistClientError

# Answers about one file (its image, its size); any other failure would repeat for every file.
PER_FILE_STATUSES = frozenset({400, 413, 415, 422})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mnist-predict",
        description="Send image files to the MNIST digit service and print the digit in each.",
        allow_abbrev=False,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--url", help=f"the server (default: ${URL_ENV}, else {DEFAULT_URL})")
    p.add_argument("--api-key", help=f"sent as `Authorization: Bearer` (default: ${API_KEY_ENV})")
    p.add_argument("--json", action="store_true", help="print one JSON array, an object per file")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument("--retries", type=int, default=3, help="retries of a 503 (default 3)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.timeout <= 0 or args.retries < 0:
        cli.error("--timeout must be positive and --retries 0 or more")
    results: list[dict[str, Any]] = []
    with MnistClient(
        args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries
    ) as client:
        for path in args.files:
            result, fatal = predict_file(client, path)
            results.append(result)
            if not args.json:
                show(result)
            if fatal:
                break
    if args.json:
        print(json.dumps(results))
    return 0 if all("error" not in r for r in results) else 1


def predict_file(client: MnistClient, path: str) -> tuple[dict[str, Any], bool]:
    """One file's result (its prediction or its error), and whether the error ends the run."""
    try:
        prediction = client.predict_image(path)
    except OSError as error:  # the file itself: missing, a directory, unreadable
        return {"file": path, "error": error.strerror or str(error), "status": None}, False
    except MnistClientError as error:
        fatal = error.status not in PER_FILE_STATUSES
        return {"file": path, "error": error.message, "status": error.status}, fatal
    answer = {"digit": prediction.digit, "confidence": prediction.confidence}
    if prediction.uncertain is not None:  # only from a server that flags uncertain answers
        answer["uncertain"] = prediction.uncertain
    return {"file": path, **answer, "probabilities": prediction.probabilities}, False


def show(result: dict[str, Any]) -> None:
    if "error" not in result:
        flag = ", uncertain" if result.get("uncertain") else ""
        print(f"{result['file']}: {result['digit']} (confidence {result['confidence']:.4f}{flag})")
        return
    status = f"{result['status']} " if result["status"] is not None else ""
    print(f"mnist-predict: error: {result['file']}: {status}{result['error']}", file=sys.stderr)
