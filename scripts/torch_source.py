"""Where torch comes from: the one place that knows (make setup, the Dockerfile, docker-engine.sh).

    python scripts/torch_source.py --install [--index-url URL] [--find-links DIR]...
                                   [--fallback-index URL] [--quiet]
    python scripts/torch_source.py --wheels [--any-python] [--find-links DIR]...

In order, the first that applies:
  1. --index-url URL (make setup passes TORCH_INDEX_URL when set; e.g. the PyTorch CPU index
     https://download.pytorch.org/whl/cpu): `pip install --index-url URL '<pyproject's torch>'`;
  2. a CPU-only wheel `torch-*+cpu-*.whl` for this interpreter and platform, within pyproject's
     range, in the --find-links directories (default: pip's own find-links, `pip config list`
     and PIP_FIND_LINKS): the newest one, installed from its file (~200 MB imported vs ~510 MB
     for the CUDA build, and ~1.8 GB of environment instead of ~6 GB);
  3. --fallback-index URL when given (the Dockerfile: the PyTorch CPU index), else plain
     `pip install 'torch<range>'` from pip's configured indexes (PyPI: on Linux the CUDA build).

--install installs into the interpreter running this script, and does nothing when that
environment already has torch (to switch builds, start from a new environment). --wheels only
prints the matching CPU wheels, one path per line (exit 1 if none); --any-python drops the
Python-tag check (docker-engine.sh copies wheels for the image's Python, not the host's).
Standard library only (plus pip's vendored packaging when present).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
WHEEL_GLOB = "torch-*+cpu-*.whl"


def torch_requirement(pyproject: Path = PYPROJECT) -> str:
    """pyproject's torch requirement (e.g. `torch>=2.4,<2.15`), else plain `torch`."""
    text = pyproject.read_text() if pyproject.is_file() else ""
    try:
        import tomllib

        deps = tomllib.loads(text).get("project", {}).get("dependencies", [])
    except ImportError:  # Python < 3.11 on the host (docker-engine.sh): the quoted strings
        deps = re.findall(r'"([^"]+)"', text)
    found = [d for d in deps if re.match(r"torch\s*([<>=!~;\[]|$)", d)]
    return found[0] if found else "torch"


def pip_find_links() -> list[str]:
    """The directories pip itself searches (its config files and PIP_FIND_LINKS)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            values += shlex.split(value)[0].split() if value.strip() else []
    dirs: list[str] = []
    for value in values:
        path = value.removeprefix("file://")
        if "://" not in path and path not in dirs:
            dirs.append(path)
    return dirs


def _packaging():  # pip's vendored copy; a plain `packaging` otherwise; None without either
    try:
        from pip._vendor.packaging import requirements, tags, utils, version
    except ImportError:
        try:
            from packaging import requirements, tags, utils, version
        except ImportError:
            return None
    return requirements, tags, utils, version


def cpu_wheels(dirs: list[str], requirement: str, any_python: bool = False) -> list[Path]:
    """The CPU torch wheels in `dirs` that fit `requirement` and this machine, newest first."""
    found = sorted({p.resolve() for d in dirs for p in Path(d).glob(WHEEL_GLOB) if p.is_file()})
    pkg = _packaging()
    if pkg is None:  # no version logic at hand: the machine's architecture, sorted by name
        arch = platform.machine()
        return sorted((p for p in found if arch in p.name), reverse=True)
    requirements, tags, utils, _ = pkg
    spec = requirements.Requirement(requirement).specifier
    supported = set(tags.sys_tags())
    arch = platform.machine()
    fitting = []
    for path in found:
        try:
            _, wheel_version, _, wheel_tags = utils.parse_wheel_filename(path.name)
        except utils.InvalidWheelFilename:
            continue
        if not spec.contains(wheel_version, prereleases=True):
            continue
        if any_python:
            if not any(t.platform.endswith(arch) for t in wheel_tags):
                continue
        elif not wheel_tags & supported:
            continue
        fitting.append((wheel_version, path))
    return [path for _, path in sorted(fitting, key=lambda vp: vp[0], reverse=True)]


def installed_torch() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def pip_arguments(args: argparse.Namespace, requirement: str) -> tuple[list[str], str]:
    """`pip install` arguments for torch and a one-line description of the choice."""
    if args.index_url:
        return ["--index-url", args.index_url, requirement], f"{requirement} from {args.index_url}"
    wheels = cpu_wheels(args.find_links or pip_find_links(), requirement)
    if wheels:
        return [str(wheels[0])], f"the local CPU-only wheel {wheels[0]}"
    if args.fallback_index:
        return ["--index-url", args.fallback_index, requirement], (
            f"{requirement} from {args.fallback_index} (no local CPU wheel)"
        )
    return [requirement], f"{requirement} from pip's index (no local CPU wheel, no TORCH_INDEX_URL)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--install", action="store_true", help="pip install the chosen torch")
    action.add_argument("--wheels", action="store_true", help="print the local CPU wheels")
    parser.add_argument("--index-url", default="", help="take torch from this index (first)")
    parser.add_argument("--find-links", action="append", help="wheel directory (repeatable)")
    parser.add_argument("--fallback-index", default="", help="index when no local wheel fits")
    parser.add_argument("--any-python", action="store_true", help="--wheels: any Python tag")
    parser.add_argument("--quiet", action="store_true", help="pass --quiet to pip")
    args = parser.parse_args(argv)
    requirement = torch_requirement()

    if args.wheels:
        wheels = cpu_wheels(args.find_links or pip_find_links(), requirement, args.any_python)
        for wheel in wheels:
            print(wheel)
        return 0 if wheels else 1

    present = installed_torch()
    if present is not None:
        print(f"torch: keeping the installed torch {present} (a new environment chooses again)")
        return 0
    pip_args, choice = pip_arguments(args, requirement)
    print(f"torch: installing {choice}", flush=True)
    quiet = ["--quiet"] if args.quiet else []
    command = [sys.executable, "-m", "pip", "install", *quiet, *pip_args]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
