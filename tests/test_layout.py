"""The layout's promises: serving and the training core never import the retraining pipeline,
and the console scripts work from the installed project."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import REPO
from training.checkpoint import save_checkpoint
from training.model import MLP

BENTOML_SERVICE = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["bentoml"]["build"][
    "service"
]
CORE_MODULES = """
import importlib, pkgutil, training
for module in pkgutil.iter_modules(training.__path__):
    if not module.ispkg:
        importlib.import_module(f"training.{module.name}")
"""


def modules_after(code: str, **env: str) -> list[str]:
    """The modules a fresh interpreter has loaded once it has run `code`."""
    listing = "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code + listing],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()[-1].split()


def pipeline_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "training.pipeline" or m.startswith("training.pipeline.")]


def test_the_service_does_not_import_the_pipeline(tmp_path):
    """What `bentoml serve` imports (pyproject's service module), with a model to load."""
    model = tmp_path / "model.pt"
    save_checkpoint(model, MLP(), config={}, metrics={"history": []}, data_md5={})
    module = BENTOML_SERVICE.split(":")[0]
    modules = modules_after(
        f"import {module}", MODEL_PATH=str(model), BENTOML_HOME=str(tmp_path / "bentoml")
    )
    assert module in modules and "training.checkpoint" in modules
    assert pipeline_modules(modules) == []


def test_the_supervisor_imports_neither_torch_numpy_nor_pil(tmp_path):
    """`bentoml serve`'s own process imports the service only for its configuration: what the
    workers need (torch, numpy, PIL, the endpoints) would delay their start (docs/benchmarks.md,
    cold start), and its collector is back on once the module is loaded."""
    model = tmp_path / "model.pt"
    save_checkpoint(model, MLP(), config={}, metrics={"history": []}, data_md5={})
    code = (
        "import sys; sys.argv = ['/venv/bin/bentoml', 'serve']\n"
        f"import {BENTOML_SERVICE.split(':')[0]}, gc\n"
        "assert gc.isenabled()"
    )
    modules = modules_after(code, MODEL_PATH=str(model), BENTOML_HOME=str(tmp_path / "bentoml"))
    assert "service.service" in modules and "service.settings" in modules
    heavy = {"torch", "numpy", "PIL", "service.endpoints", "service.inference"}
    heavy.add("trio")  # selenium's; httpcore imports it when installed (Makefile SELENIUM)
    assert heavy & set(modules) == set()


def test_the_client_imports_neither_torch_nor_the_service():
    """`mnist_client` must stay light to install and quick to start: httpx and the stdlib."""
    modules = set(modules_after("import mnist_client, mnist_client.cli"))
    assert {"mnist_client.client", "mnist_client.cli", "httpx"} <= modules
    heavy = {"torch", "numpy", "PIL", "bentoml", "service", "training"}
    assert {m.partition(".")[0] for m in modules} & heavy == set()


def test_the_training_core_does_not_import_the_pipeline():
    modules = modules_after(CORE_MODULES)
    assert {"training.cli", "training.registry", "training.train"} <= set(modules)
    assert pipeline_modules(modules) == []


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ([str(Path(sys.executable).with_name("mnist-train")), "--help"], "usage: mnist-train"),
        ([str(Path(sys.executable).with_name("mnist-build")), "--help"], "usage: mnist-build"),
        ([str(REPO / "scripts" / "build"), "--help"], "usage: mnist-build"),
        ([str(Path(sys.executable).with_name("mnist-predict")), "--help"], "usage: mnist-predict"),
    ],
    ids=["mnist-train", "mnist-build", "scripts/build", "mnist-predict"],
)
def test_the_commands_answer_help_from_any_directory(command, usage, tmp_path):
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(usage)


@pytest.mark.parametrize(
    ("args", "host"), [([], "0.0.0.0"), (["SERVE_HOST=127.0.0.1"], "127.0.0.1")]
)
def test_make_serve_listens_where_the_readme_says(args, host):
    """All interfaces by default (the README warns of it); SERVE_HOST binds one address."""
    result = subprocess.run(
        ["make", "-n", "serve", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    serve = [line for line in result.stdout.splitlines() if "bentoml serve" in line]
    assert serve and serve[-1].endswith(f"bentoml serve --host {host} --port 3000"), serve


def make_variable(name: str, *args: str) -> str:
    """A variable of the Makefile as make resolves it (`-n -p`: prints, runs nothing)."""
    result = subprocess.run(
        ["make", "-n", "-p", "setup", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    values = [
        line.split(":=", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.startswith(f"{name} :=")
    ]
    assert values, f"make defines no {name}"
    return values[-1]


def test_setup_builds_the_venv_on_the_systems_own_python_where_it_has_one():
    """Debian's python3.11 (the image's; profile-guided and LTO build) started the server in 0.80x
    the time of pyenv's default build and served c=32 1.2x faster (docs/benchmarks.md): `make
    setup` must choose it over the one first on PATH, and this suite runs on what it chose."""
    system = Path("/usr/bin/python3.11")
    usable = system.exists() and (
        subprocess.run([system, "-c", "import ensurepip, venv"], timeout=60).returncode == 0
    )
    chosen = make_variable("PYTHON_BINARY")
    if usable:
        assert chosen == str(system)
    assert os.path.realpath(sys.executable) == chosen


def test_setup_resolves_a_launcher_script_to_the_interpreter_it_runs(tmp_path):
    """`make setup PYTHON=...` with a launcher (pyenv's shims are shell scripts) compares .venv
    with the binary it runs, not with the script, which would rebuild .venv on every setup."""
    shim = tmp_path / "python3.11"
    shim.write_text(f'#!/bin/sh\nexec "{os.path.realpath(sys.executable)}" "$@"\n')
    shim.chmod(0o755)
    assert make_variable("PYTHON_BINARY", f"PYTHON={shim}") == os.path.realpath(sys.executable)
