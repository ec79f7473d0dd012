"""Throwaway servers for tests and benchmarks: a PostgreSQL cluster (Debian's initdb/pg_ctl), `p2p serve`
processes and Debian's nginx running the repository's deploy/nginx.conf, all on 127.0.0.1 in temp folders.

Used by tests/conftest.py (the PostgreSQL variants of the storage tests), tests/test_multiserver.py and
benchmarks/bench_multiserver.py. Each helper raises :class:`Unavailable` with the reason when its program is not
on the machine, so a test can skip saying why.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"


class Unavailable(RuntimeError):
    """A program the harness needs is missing or would not start (the message says which, and how to get it)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ PostgreSQL
def pg_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PgCluster:
    """A running throwaway cluster; ``url`` is the server's base URL (append a database name)."""

    root: Path
    bindir: Path
    port: int
    as_user: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args],
                       check=check, capture_output=True, text=True)  # fmt: skip

    def start(self) -> None:
        self._ctl("-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: disconnect every client and shut down cleanly (a restart); ``immediate``: like a crash."""
        self._ctl("-m", mode, "-w", "stop", check=False)

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg

        admin = self.url.replace("postgresql+psycopg://", "postgresql://") + "postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url + name


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """Start a throwaway PostgreSQL cluster in a temp folder (as the postgres user when run as root)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg (v3) is not installed: pip install -e '.[test]'") from None
    bindir = pg_binaries()
    if bindir is None:
        raise Unavailable("no PostgreSQL: install Debian's postgresql (pg_ctl), or set P2P_TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="p2p-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = PgCluster(root, bindir, free_port(), as_user)
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                        "--no-sync"], check=True, capture_output=True, text=True)  # fmt: skip
        cluster.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"could not start a throwaway PostgreSQL cluster: {exc.stderr.strip()[-300:]}") from None
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ app servers
def start_app_server(config: Path, data_dir: Path, database_url: str, model_dir: Path, log: Path,
                     port: int | None = None, timeout: float = 300) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """One ``p2p serve`` process (the CLI a deployment runs) on 127.0.0.1; returns it and its URL once it answers."""
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "P2P_MODEL_DIR": str(model_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-c", "from p2p_app.cli import main; main()", "serve", "--config", str(config),
           "--data-dir", str(data_dir), "--database-url", database_url, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, url, log, timeout)
    return proc, url


def wait_until_serving(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    """Return once the app server ``proc`` answers ``GET url/config``; raise ``RuntimeError`` (with the end of
    ``log``) when it exits first, or kill it and raise when it does not answer within ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app server exited ({proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the app server did not answer in {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ nginx
def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def render_nginx_conf(upstreams: list[str], listen_port: int, prefix: Path, sticky: bool = True) -> str:
    """A complete nginx.conf for a private nginx (its own prefix, pid and logs) around the repository's
    deploy/nginx.conf, with its ``server`` lines pointing at ``upstreams`` (host:port) and its ``listen`` at
    ``listen_port``. ``sticky=False`` drops the ``hash`` line: the misconfigured proxy of docs/deploy.md."""
    site = NGINX_TEMPLATE.read_text(encoding="utf-8")
    lines = []
    for line in site.splitlines():
        if re.match(r"\s*server\s+[\d.]+:\d+", line):
            continue  # the template's example app servers
        if re.match(r"\s*hash\s", line) and not sticky:
            continue
        lines.append(line)
        if re.match(r"\s*upstream\s+p2p_app\s*\{", line):
            lines += [f"    server {u} max_fails=1 fail_timeout=30s;" for u in upstreams]
    site = "\n".join(lines)
    site, n = re.subn(r"listen\s+80;", f"listen 127.0.0.1:{listen_port};", site)
    assert n == 1, "deploy/nginx.conf: expected one 'listen 80;' line"
    # which app server answered, for the harness only (not in the deployed config: it names internal addresses)
    site = site.replace("proxy_pass http://p2p_app;", "proxy_pass http://p2p_app;\n        add_header X-P2P-Upstream $upstream_addr always;")
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ text/html html; application/javascript js; text/css css; }}
{site}
}}
"""


@contextmanager
def nginx_proxy(upstreams: list[str], sticky: bool = True) -> Iterator[str]:
    """Debian's nginx on 127.0.0.1 running deploy/nginx.conf in front of ``upstreams``; yields its URL."""
    import httpx

    binary = nginx_binary()
    if binary is None:
        raise Unavailable("no nginx: install Debian's nginx (apt-get install nginx)")
    prefix = Path(tempfile.mkdtemp(prefix="p2p-nginx-"))
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(upstreams, port, prefix, sticky), encoding="utf-8")
    test = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    if test.returncode != 0:
        raise RuntimeError(f"nginx refused the config: {test.stderr.strip()}")
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(prefix / "stderr.log", "ab"))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(prefix / 'stderr.log').read_text()[-1000:]}")
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer in 20 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(prefix, ignore_errors=True)
