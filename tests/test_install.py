"""The README's install commands give a CPU torch and no CUDA packages on a machine whose pip is configured plainly.

``pip install torch==2.13.0`` from the public index is the CUDA build plus ~19 nvidia/cuda/triton packages; the
README therefore installs torch from PyTorch's CPU wheel index first, then the project, whose ``torch>=2.4`` is
then already satisfied. The dry-run below resolves the project's install under a plain pip configuration (no
config file, no find-links: what a clinician's laptop has) in this environment, where step one has run, and
reads pip's JSON report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
CUDA_NAME = re.compile(r"^(nvidia-|triton$|torch$)|cuda", re.I)


def _readme_commands() -> list[str]:
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("python3 -m venv .venv")]


def test_both_readme_commands_install_the_cpu_torch_first():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for cmd in commands:
        steps = [s.strip() for s in cmd.split("&&")]
        torch_steps = [i for i, s in enumerate(steps) if s.startswith("pip install torch")]
        project = [i for i, s in enumerate(steps) if s.startswith("pip install -e")]
        assert torch_steps and project and torch_steps[0] < project[0], cmd
        assert CPU_INDEX in steps[torch_steps[0]], f"torch without PyTorch's CPU index: {cmd}"
        assert "torch" not in steps[project[0]], f"the project step must not name torch again: {cmd}"


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in _readme_commands() if "pytest" in c)
    in_venv = test_cmd.split("&& ", 2)[2]  # after "python3 -m venv .venv && . .venv/bin/activate && "
    assert in_venv in (ROOT / ".ci" / "run").read_text().splitlines()


def test_space_requirements_take_torch_from_the_cpu_index():
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "torch==2.13.0+cpu" in lines


def test_project_install_under_a_plain_pip_config_adds_no_cuda_package(tmp_path):
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_DEFAULT_TIMEOUT="30")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                          "-e", f"{ROOT}[models,test]"], env=env, capture_output=True, text=True, cwd=tmp_path)
    if run.returncode != 0 and re.search(r"NewConnectionError|NameResolution|Network is unreachable", run.stderr):
        pytest.skip(f"the public package index is not reachable from here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert "prompt-to-polyp" in installs
    cuda = [name for name in installs if CUDA_NAME.search(name)]
    assert not cuda, f"a plain pip would install CUDA packages: {cuda}"
