"""`coalition serve` on the embedded PostgreSQL stops the server when it is stopped itself.

Real processes: `python -m gateway.cli serve` in a temporary DATA_DIR (no DATABASE_URL), the
embedded PostgreSQL it starts, the signals an operator or a supervisor sends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0  # initdb and the first start on a loaded machine
STOP_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the postmaster serving `pgdata`, when one runs."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if _alive(pid) else None


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A DATA_DIR of its own; whatever a failing test left running is stopped afterwards."""
    yield tmp_path
    pid = _postmaster_pid(tmp_path / "pg")
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown of a server the test failed to stop


class Serve:
    """`coalition serve` in a subprocess, its output in a file (shown when a test fails)."""

    def __init__(self, data_dir: Path, workers: int = 1) -> None:
        self.port = _free_port()
        self.log = data_dir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "gateway.cli", "serve", "--workers", str(workers)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=data_dir,  # no .env of the working copy
                env=_env(data_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Poll /healthz until it answers (bounded), failing early if the process ended."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:  # the poll interval, and an early exit shows at once
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.output()}")
        self.proc.kill()
        pytest.fail(f"serve not ready in {START_TIMEOUT} s:\n{self.output()}")

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"serve still running {STOP_TIMEOUT} s after {sig.name}:\n{self.output()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_the_embedded_postgres_on(sig: signal.Signals, data_dir: Path) -> None:
    serve = Serve(data_dir)
    serve.wait_ready()
    assert _postmaster_pid(data_dir / "pg") is not None
    code = serve.stop(sig)
    assert code in (0, 128 + sig, -sig), serve.output()
    assert _postmaster_pid(data_dir / "pg") is None, (
        f"the embedded PostgreSQL outlived serve ({sig.name}):\n{serve.output()}"
    )


def test_serve_recovers_from_a_stale_handle_of_a_killed_process(data_dir: Path) -> None:
    # What a process killed before its exit hooks ran leaves behind: the server running, its
    # (dead) pid still in the wheel's handle list.
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal\n"
            "from core.db import resolve_database_url\n"
            "from core.settings import get_settings\n"
            "resolve_database_url(get_settings())\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
        ],
        cwd=data_dir,
        env=_env(data_dir),
        capture_output=True,
        timeout=START_TIMEOUT,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")
    pgdata = data_dir / "pg"
    orphan = _postmaster_pid(pgdata)
    assert orphan is not None
    stale = json.loads((pgdata / ".handle_pids.json").read_text())
    assert stale and not any(_alive(pid) for pid in stale)

    serve = Serve(data_dir)
    serve.wait_ready()
    serve.stop(signal.SIGINT)  # Ctrl-C: what stopped the server before, without a stale entry
    assert _postmaster_pid(pgdata) is None, serve.output()


def test_serve_with_workers_starts_the_embedded_postgres_once(data_dir: Path) -> None:
    """`--workers 2`: the parent starts the server and is its only holder (the workers use its
    URL); SIGTERM stops the workers, then the server."""
    serve = Serve(data_dir, workers=2)
    serve.wait_ready()
    pgdata = data_dir / "pg"
    assert _postmaster_pid(pgdata) is not None
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == [serve.proc.pid]
    worker = httpx.get(f"http://127.0.0.1:{serve.port}/healthz", timeout=5.0).json()["worker"]
    assert worker != serve.proc.pid
    assert serve.stop(signal.SIGTERM) in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    assert _postmaster_pid(pgdata) is None, serve.output()
