"""How fast the commands start: each read-only command ÷ a bare ``python -c "import pandas, sqlalchemy"``
(goal ≤ 2×), and seconds from starting ``p2p serve`` on a fresh data dir to the first HTTP 200 (goal ≤ 15 s).

    python benchmarks/bench_startup.py [--runs 5]

Set-up (not timed): a data dir where the demo's colonoscopy study is generated and frozen, one rater added.
Every figure is the median of ``--runs`` fresh processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str], cwd: Path, ok: bool = True) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if ok and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return elapsed


def median_of(runs: int, cmd: list[str], env: dict[str, str], cwd: Path, ok: bool = True) -> float:
    return statistics.median(timed(cmd, env, cwd, ok) for _ in range(runs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_seconds(env: dict[str, str], cwd: Path, data_dir: Path) -> float:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "p2p_app.cli", "serve", "--port", str(port), "--data-dir",
                             str(data_dir)], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < 180:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit("p2p serve exited before answering")
            time.sleep(0.05)
        raise SystemExit("p2p serve did not answer within 180 s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="p2p-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["P2P_MODEL_DIR"] = str(work / "models")
    data = work / "data"
    p2p = [sys.executable, "-m", "p2p_app.cli"]
    print("set-up: generating the demo colonoscopy study (not timed)…", flush=True)
    timed([*p2p, "study", "generate", "colonoscopy_pilot", "--data-dir", str(data)], env, work)
    timed([*p2p, "raters", "add", "endo_a", "--study", "colonoscopy_pilot", "--data-dir", str(data)], env, work)

    base = median_of(args.runs, [sys.executable, "-c", "import pandas, sqlalchemy"], env, work)
    print(f"baseline `python -c \"import pandas, sqlalchemy\"`: {base:.2f} s (median of {args.runs})")
    commands = {
        "export": ["export", str(work / "out.csv")],
        "report": ["report", "colonoscopy_pilot", "--out", str(work / "r.html"), "--bootstrap", "200"],
        "raters list": ["raters", "list"],
        "study status": ["study", "status", "colonoscopy_pilot"],
        "study verify": ["study", "verify", "colonoscopy_pilot"],
        "settings": ["settings"],
    }
    print(f"{'command':<28}{'seconds':>9}{'÷ baseline':>12}")
    for name, cmd in commands.items():
        extra = [] if name == "settings" else ["--data-dir", str(data)]
        t = median_of(args.runs, [*p2p, *cmd, *extra], env, work)
        print(f"p2p {name:<24}{t:>9.2f}{t / base:>12.2f}")
    empty = work / "empty"
    t = median_of(args.runs, [*p2p, "export", str(work / "x.csv"), "--data-dir", str(empty)], env, work, ok=False)
    print(f"{'p2p export (no database)':<28}{t:>9.2f}{t / base:>12.2f}   (refused; created nothing: {not empty.exists()})")

    cold_env = dict(env, P2P_MODEL_DIR=str(work / "cold-models"))
    cold = serve_seconds(cold_env, work, work / "fresh-cold")
    warm = statistics.median(serve_seconds(env, work, work / f"fresh-{i}") for i in range(min(args.runs, 3)))
    print(f"p2p serve, fresh data dir, first HTTP 200: {cold:.1f} s with no model built yet, {warm:.1f} s with "
          "models cached (goal ≤ 15 s)")


if __name__ == "__main__":
    main()
