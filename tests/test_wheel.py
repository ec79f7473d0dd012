"""The built wheel is complete: every file the app reads at run time is in it, and a server installed from the
wheel alone (no editable install, no source tree on the path) starts and renders a rater screen.

The editable install the other tests use reads files from the checkout, so it hides a file missing from the wheel
(the reading screen's ``viewer.html`` and the default config's ``studies/`` folder were missing once). Here the
wheel is installed with ``--no-deps`` into a fresh virtual environment whose dependencies come from this
environment's site-packages through a ``.pth`` line (its ``.pth`` hooks, the editable finder among them, are not
run), and the server is started from an empty folder.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from deploy_harness import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy without build outputs: setuptools reuses a stale build/ folder, which would hide a missing file.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", ".venv", ".ci-venv", "p2p_data", "__pycache__", "mutants"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                   check=True, cwd=out, capture_output=True)
    (found,) = out.glob("prompt_to_polyp-*.whl")
    return found


def _runtime_files() -> set[str]:
    """Every non-Python file of the packages as the wheel must hold it (studies/ ships as p2p_app/studies)."""
    want = set()
    for top, prefix in (("p2p_app", "p2p_app"), ("generators", "generators"), ("studies", "p2p_app/studies")):
        for f in (ROOT / top).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in {".pyc"}:
                want.add(f"{prefix}/{f.relative_to(ROOT / top).as_posix()}")
    return want


def test_wheel_holds_every_file_of_the_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_runtime_files() - names)
    assert not missing, f"files the app reads at run time are not in the wheel: {missing}"
    assert "p2p_app/ui/assets/viewer.html" in names and "p2p_app/studies/demo.toml" in names


def test_server_installed_from_the_wheel_serves_a_rater_screen(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies from this environment; a plain path line, so its editable-install hook is not run.
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "P2P_CONFIG"}}
    where = subprocess.run([str(py), "-c", "import p2p_app, generators; print(p2p_app.__file__, generators.__file__)"],
                           check=True, capture_output=True, text=True, cwd=work, env=env).stdout
    assert str(ROOT) not in where and purelib in where, where

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(venv / "bin" / "p2p"), "serve", "--port", str(port), "--data-dir", "data",
                             "--no-prepare-studies"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(proc, base, tmp_path / "serve.log", timeout=120)
        assert httpx.get(base + "/", timeout=30).status_code == 200
        config = httpx.get(base + "/config", timeout=30).raise_for_status().json()
        markup = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
        assert "p2p-tools" in markup, "the reading screen's viewer toolbar (assets/viewer.html) is not on the page"
        # The packaged default config's studies are the ones offered.
        assert any("colonoscopy" in str(c.get("props", {}).get("choices", "")).lower() for c in config["components"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
