"""A real Sala server (a `python -m web` subprocess) per test, with its own SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One Sala process. `restart()` keeps the port and the database."""

    def __init__(self, workdir: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.db_path = workdir / "sala.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SALA_DATABASE_URL": f"sqlite:///{self.db_path}",
            "SALA_SECRET_KEY": "test-secret-key",
            "SALA_PRESENCE_GRACE_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        self.exit_code: int | None = None

    def command(self) -> list[str]:
        """What starts it (tests/test_servers.py starts other ASGI servers)."""
        command = [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", str(self.port)]
        return [*command, *self.args]

    def start(self) -> None:
        log = self.log_path.open("ab")
        command = self.command()
        self.proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{command[0]} did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> float:
        """Stop the process; returns how long it took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()
        return time.monotonic() - started

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    servers: list[Server] = []

    def make(*, args: Sequence[str] = (), **env: str) -> Server:
        """A started server; `env` become SALA_* variables, `args` extra command-line options."""
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        server = Server(workdir, {f"SALA_{k.upper()}": str(v) for k, v in env.items()}, args)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    return make_server()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
