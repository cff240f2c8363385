"""`web.app:app` under each mainstream ASGI server: a real process, a real client."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from tests.client import Person, Stream
from tests.conftest import Server

pytestmark = pytest.mark.anyio

# Each server's command line for `web.app:app` on 127.0.0.1:port (one process).
COMMANDS: dict[str, Callable[[str, int], list[str]]] = {
    "uvicorn": lambda exe, port: [exe, "web.app:app", "--host", "127.0.0.1", "--port", str(port)],
    "hypercorn": lambda exe, port: [exe, "web.app:app", "--bind", f"127.0.0.1:{port}"],
    "granian": lambda exe, port: [
        *(exe, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)),
        "web.app:app",
    ],
}


def executable(name: str) -> str | None:
    """The venv's own first (the one that can import `web`), else the PATH's."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class ASGIServer(Server):
    """conftest's Server (env, fresh SQLite file, port, stop, log), started by another
    server's command line instead of `python -m web`."""

    def __init__(self, workdir: Path, command: Callable[[int], list[str]]) -> None:
        super().__init__(workdir, {})
        self._command = command(self.port)

    def command(self) -> list[str]:
        return self._command

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> float:
        """As Server.stop; then the workers of a supervisor that had to be killed go too."""
        workers = _children(self.proc.pid) if self.proc is not None else []
        took = super().stop(sig, timeout)
        if self.exit_code == -signal.SIGKILL:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return took


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def started(name: str, workdir: Path, *extra: str) -> ASGIServer:
    exe = executable(name)
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing under CI=true: install the test extras (.[test])")
        pytest.skip(f"no {name} here (pip install -e '.[test]' installs it)")
    server = ASGIServer(workdir, lambda port: [*COMMANDS[name](exe, port), *extra])
    server.start()
    return server


@pytest.fixture
def stop_later() -> Iterator[list[ASGIServer]]:
    servers: list[ASGIServer] = []
    yield servers
    for server in servers:
        server.stop()


async def message_comes_down(server: ASGIServer, person: Person, code: str, stream: Stream) -> None:
    """A post is answered, and its event comes down the open stream (an `id:` line and
    `data:` lines holding the text)."""
    assert stream.response is not None and stream.response.status_code == 200
    text = f"hello through {Path(server.command()[0]).name}"
    answer = await person.say(code, text)
    assert answer.status_code == 200, answer.text
    await stream.wait_text(text)
    event = next(e for e in stream.events if text in e.data)
    assert event.id is not None and f"id: {event.id}" in stream.raw_lines
    assert any(line.startswith("data:") and text in line for line in stream.raw_lines)


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_each_server_serves_a_room_and_its_stream_then_stops_on_sigterm(
    name: str, tmp_path: Path, stop_later: list[ASGIServer]
) -> None:
    server = started(name, tmp_path)
    stop_later.append(server)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await message_comes_down(server, ana, code, stream)
    took = await anyio.to_thread.run_sync(server.stop)
    assert took < 15, server.log()
    # uvicorn ends itself with the signal it got (after a clean shutdown).
    assert server.exit_code in (0, -signal.SIGTERM), server.log()
    assert "Traceback" not in server.log(), server.log()


HYPERCORN_WAITS = pytest.mark.xfail(
    sys.version_info >= (3, 12, 1),
    reason="Hypercorn waits for open connections before its graceful timeout on Python "
    "3.12.1+ (asyncio.Server.wait_closed; pgjones/hypercorn#308)",
)


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        # Sala's streams end themselves when uvicorn shuts down.
        pytest.param("uvicorn", (), id="uvicorn"),
        # Hypercorn cancels what is left after its graceful timeout (3 s).
        pytest.param("hypercorn", (), marks=HYPERCORN_WAITS, id="hypercorn"),
        # Granian tells the app nothing until its connections are gone, so an open stream
        # holds the worker: only a kill timeout bounds the stop (README's command has one).
        pytest.param("granian", ("--workers-kill-timeout", "5"), id="granian"),
    ],
)
async def test_sigterm_with_a_stream_open_still_stops_the_server(
    name: str, extra: tuple[str, ...], tmp_path: Path, stop_later: list[ASGIServer]
) -> None:
    server = started(name, tmp_path, *extra)
    stop_later.append(server)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await message_comes_down(server, ana, code, stream)
            took = await anyio.to_thread.run_sync(server.stop)
            assert took < 15, server.log()
            await stream.wait_end(timeout=5)
