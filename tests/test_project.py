"""The project installs and the README's two commands work: every module imports, `make course` serves JupyterLab."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "hsd3_learn",
    "hsd3_learn.utils",
    "hsd3_learn.spaces",
    "hsd3_learn.models.bandits",
    "hsd3_learn.models.blocks",
    "hsd3_learn.models.factory",
    "hsd3_learn.models.traced",
    "hsd3_learn.replaybuffer",
    "hsd3_learn.hashcount",
    "hsd3_learn.render",
    "hsd3_learn.agents",
    "hsd3_learn.agents.base",
    "hsd3_learn.agents.sac",
    "hsd3_learn.agents.hsd3_math",
    "hsd3_learn.agents.hsd3_interface",
    "hsd3_learn.agents.hsd3",
    "hsd3_learn.agents.sacmt",
    "hsd3_learn.agents.hsdb",
    "hsd3_learn.training",
    "hsd3_learn.train",
    "hsd3_learn.pretraining",
    "hsd3_learn.pretrain",
    "hsd3_learn.spirl",
    "hsd3_learn.spirl.data",
    "hsd3_learn.spirl.collect",
    "hsd3_learn.spirl.models",
    "hsd3_learn.spirl.agents",
    "hsd3_learn.spirl.skill_critic",
    "hsd3_learn.spirl.train",
    "hsd3_learn.spirl.train_prior",
    "hsd3_learn.envs",
    "hsd3_learn.envs.goal_spaces",
    "hsd3_learn.envs.pretraining",
    "hsd3_learn.envs.wrappers",
    "hsd3_learn.envs.vector",
    "envs",
    "envs.robots",
    "envs.base",
    "envs.gallery",
    "envs.tasks.course",
    "envs.tasks.floor",
    "envs.tasks.hurdles",
    "envs.tasks.limbo",
    "envs.tasks.hurdles_limbo",
    "envs.tasks.gaps",
    "envs.tasks.stairs",
    "envs.tasks.goalwall",
    "envs.tasks.polebalance",
    "autograder",
    "autograder.core",
    "autograder.build",
    "autograder.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} needs a module docstring saying what it is for"


def test_public_functions_and_classes_have_docstrings() -> None:
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if (callable(obj) or isinstance(obj, type)) and not getattr(obj, "__doc__", None):
                missing.append(f"{name}.{attr}")
    assert not missing, f"public objects without a docstring: {missing}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    sys.prefix == sys.base_prefix or not (Path(sys.prefix) / ".installed").exists(),
    reason="needs the Makefile's own .venv (run through `make test`), never a system Python",
)
def test_make_course_serves_jupyterlab_on_the_course_folder(tmp_path: Path) -> None:
    """The README's first command, as a user runs it (with a fixed port and no browser)."""
    port = _free_port()
    venv = Path(sys.prefix)
    args = f"--no-browser --port {port} --ip 127.0.0.1 --IdentityProvider.token=test-token"
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    proc = subprocess.Popen(
        ["make", "-s", "course", f"VENV={venv}", f"JUPYTER_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        contents = None
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents?token=test-token"
                with urllib.request.urlopen(url, timeout=2) as response:
                    contents = json.load(response)
                    break
            except OSError:
                time.sleep(0.5)
        assert contents is not None, f"JupyterLab did not answer on port {port} (make exited: {proc.poll()})"
        names = {item["name"] for item in contents["content"]}
        assert "README.md" in names and "hsd3_learn" not in names  # served from course/, not the repo root
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token=test-token", timeout=10) as response:
            assert response.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
