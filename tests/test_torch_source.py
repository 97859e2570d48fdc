"""scripts/torch_source.py: which torch `make setup` and the Dockerfile install."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys

import pytest

from tests.support import REPO

SCRIPT = REPO / "scripts" / "torch_source.py"
spec = importlib.util.spec_from_file_location("torch_source", SCRIPT)
assert spec is not None and spec.loader is not None
torch_source = importlib.util.module_from_spec(spec)
spec.loader.exec_module(torch_source)

PY = f"cp{sys.version_info.major}{sys.version_info.minor}"
ARCH = platform.machine()


def wheel(directory, version: str, py: str = PY, arch: str = ARCH):
    path = directory / f"torch-{version}-{py}-{py}-manylinux_2_28_{arch}.whl"
    path.write_bytes(b"")
    return path


def choose(tmp_path, index_url: str = "", fallback_index: str = "") -> list[str]:
    args = argparse.Namespace(
        index_url=index_url, find_links=[str(tmp_path)], fallback_index=fallback_index
    )
    return torch_source.pip_arguments(args, "torch>=2.4,<2.15")[0]


def test_the_requirement_comes_from_pyproject():
    assert torch_source.torch_requirement().startswith("torch")
    assert torch_source.torch_requirement() in (REPO / "pyproject.toml").read_text()


def test_the_newest_cpu_wheel_in_range_for_this_python_and_machine(tmp_path):
    wheel(tmp_path, "2.12.0+cpu")
    newest = wheel(tmp_path, "2.13.0+cpu")
    wheel(tmp_path, "2.15.0+cpu")  # outside pyproject's range
    wheel(tmp_path, "2.14.0+cpu", py="cp39")  # another Python
    wheel(tmp_path, "2.14.0+cpu", arch="ppc64le" if ARCH != "ppc64le" else "x86_64")
    (tmp_path / f"torch-2.14.1-{PY}-{PY}-manylinux_2_28_{ARCH}.whl").write_bytes(b"")  # CUDA

    assert torch_source.cpu_wheels([str(tmp_path)], "torch>=2.4,<2.15") == [
        newest,
        tmp_path / f"torch-2.12.0+cpu-{PY}-{PY}-manylinux_2_28_{ARCH}.whl",
    ]
    assert choose(tmp_path) == [str(newest)]


def test_any_python_keeps_other_python_tags_but_not_other_machines(tmp_path):
    other_python = wheel(tmp_path, "2.13.0+cpu", py="cp39")
    wheel(tmp_path, "2.13.0+cpu", arch="ppc64le" if ARCH != "ppc64le" else "x86_64")
    found = torch_source.cpu_wheels([str(tmp_path)], "torch>=2.4,<2.15", any_python=True)
    assert found == [other_python]


def test_an_index_url_wins_over_a_local_wheel(tmp_path):
    wheel(tmp_path, "2.13.0+cpu")
    url = "https://download.pytorch.org/whl/cpu"
    assert choose(tmp_path, index_url=url) == ["--index-url", url, "torch>=2.4,<2.15"]


def test_without_a_local_wheel_the_fallback_index_else_plain_pip(tmp_path):
    url = "https://download.pytorch.org/whl/cpu"
    assert choose(tmp_path, fallback_index=url) == ["--index-url", url, "torch>=2.4,<2.15"]
    assert choose(tmp_path) == ["torch>=2.4,<2.15"]


@pytest.mark.parametrize("present", [True, False])
def test_the_wheels_command_exits_1_when_there_is_none(tmp_path, present):
    if present:
        path = wheel(tmp_path, "2.13.0+cpu")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--wheels", "--find-links", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == (0 if present else 1)
    assert result.stdout == (f"{path}\n" if present else "")


def test_install_keeps_an_installed_torch():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--install", "--index-url", "http://127.0.0.1:9/none"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "keeping the installed torch" in result.stdout
