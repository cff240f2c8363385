"""The servers scenario: the same fan-out, Sala's `web.app:app` under each ASGI server.

    python -m bench.run --only servers [--quick]

One room, N subscribers, 10 messages/s (run.py's `fanout`), against, in one run:

- `python -m web`: uvicorn as Sala serves itself (httptools, uvloop, its own header
  timeout), as in the other scenarios;
- `uvicorn web.app:app --http httptools --loop uvloop`: plain uvicorn;
- `hypercorn web.app:app -k uvloop`: one worker process under its supervisor;
- `granian --interface asgi web.app:app`: one worker process (uvloop, its default
  here) under its supervisor; `--backpressure` raised so that a thousand open
  streams are not its limit (by default one worker serves 1,024 requests at once);
- and the bare asyncio baseline (bench/baseline.py), the row every ratio is against.

CPU per delivered frame is that of the whole process tree (supervisor and worker
for Hypercorn and Granian) over the publishing phase: run.py's `fanout` reads
`cpu_seconds(pid)`, which this scenario sums over the server's descendants too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

from bench import run
from bench.loadgen import cpu_seconds
from bench.run import HOST, Target, _free_port, _ratios, fanout

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"fanout": [(100, 10), (1000, 10)], "seconds": 3},
    "full": {"fanout": [(100, 10), (1000, 10)], "seconds": 10},
}
BACKPRESSURE = 20_000  # Granian's concurrent requests per worker; every stream is one

# Each server's command line for `web.app:app` on HOST:port, one process of Sala.
COMMANDS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn web.app:app": lambda port: [
        *("uvicorn", "web.app:app", "--host", HOST, "--port", str(port)),
        *("--http", "httptools", "--loop", "uvloop", "--log-level", "warning"),
    ],
    "hypercorn": lambda port: [
        *("hypercorn", "web.app:app", "--bind", f"{HOST}:{port}"),
        *("--workers", "1", "--worker-class", "uvloop", "--log-level", "warning"),
    ],
    "granian": lambda port: [
        *("granian", "--interface", "asgi", "--host", HOST, "--port", str(port)),
        *("--workers", "1", "--backpressure", str(BACKPRESSURE), "--log-level", "warning"),
        "web.app:app",
    ],
}
SERVERS = ["python -m web", *COMMANDS]


def _executable(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def missing() -> list[str]:
    """The servers whose executable is not here (they are left out of the run)."""
    return [name for name in COMMANDS if _executable(COMMANDS[name](0)[0]) is None]


def tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            with contextlib.suppress(OSError):  # the thread or process ended meanwhile
                pids += [int(child) for child in (task / "children").read_text().split()]
        i += 1
    return pids


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for each in tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def start(server: str, workdir: Path) -> Target:
    """`server` on a free port, on a fresh SQLite file, as run.py starts Sala."""
    if server in ("python -m web", "baseline"):
        return run.start("sala" if server == "python -m web" else "baseline", workdir)
    port = _free_port()
    command = COMMANDS[server](port)
    command[0] = _executable(command[0]) or command[0]
    env = run.sala_env(workdir, SALA_SECRET_KEY="bench-secret-key")
    return run.launch(server, port, command, env, workdir, within=30)


Unit = Callable[[Target], Coroutine[Any, Any, dict[str, Any]]]


def measure(unit: Unit, server: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        target = start(server, Path(tmp))
        try:
            with mock.patch.object(run, "cpu_seconds", tree_cpu_seconds):
                result = asyncio.run(unit(target))
            result["processes"] = len(tree(target.pid))
        finally:
            target.stop()
    result["server"] = server
    result["load_1m"] = round(load, 2)
    return result


def rows(*, quick: bool) -> Iterator[dict[str, Any]]:
    """For each size, the baseline, then each server against it (run.py's row shape:
    {"sala", "baseline", "ratio"})."""
    sizes = SIZES["quick" if quick else "full"]
    absent = missing()
    for name in absent:
        print(f"  servers: no {name} here, left out", file=sys.stderr, flush=True)
    for subscribers, rate in sizes["fanout"]:
        unit = partial(fanout, subscribers=subscribers, rate=rate, seconds=sizes["seconds"])
        base = measure(unit, "baseline")
        for server in SERVERS:
            if server not in absent:
                result = measure(unit, server)
                yield {"sala": result, "baseline": base, "ratio": _ratios(result, base)}
