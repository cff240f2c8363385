"""Delivery figures: resume after N missed entries, and shutdown with M open streams.

    .venv/bin/python -m bench.delivery [--missed 1000] [--streams 500]

Starts its own Sala (a subprocess on a free port, a fresh SQLite file) and prints
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(workdir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "SALA_DATABASE_URL": f"sqlite:///{workdir / 'sala.db'}",
        "SALA_LIMITS": "off",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "web", "--port", str(port), "--log-level", "warning"],
        cwd=workdir,
        env=environ,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


async def _join(client: httpx.AsyncClient, name: str, code: str | None) -> str:
    data = (
        {"name": name, "action": "create"}
        if code is None
        else {"name": name, "code": code, "action": "join"}
    )
    response = await client.post("/", data=data)
    return response.headers["location"].rsplit("/", 1)[-1]


async def _count_entries(response: httpx.Response, wanted: int) -> tuple[int, int | None]:
    seen = 0
    last: int | None = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            seen += 1
            last = int(line[4:])
            if seen >= wanted:
                break
    return seen, last


async def resume_figure(base: str, missed: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        code = await _join(client, "Bench", None)
        for n in range(missed):
            await client.post(f"/rooms/{code}/messages", data={"text": f"missed {n}"})
        started = time.perf_counter()
        async with client.stream(
            "GET", f"/rooms/{code}/events", headers={"Last-Event-ID": "0"}
        ) as response:
            # Everything stored: the messages plus this member's join.
            seen, _ = await _count_entries(response, missed + 1)
        took = time.perf_counter() - started
    return {"missed_entries": float(seen), "resume_seconds": round(took, 4)}


async def shutdown_figure(
    base: str, proc: subprocess.Popen[bytes], streams: int
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        code = await _join(client, "Bench", None)
        opened = 0
        clean = 0
        all_open = asyncio.Event()

        async def hold() -> None:
            nonlocal opened, clean
            async with client.stream("GET", f"/rooms/{code}/events") as response:
                opened += 1
                if opened == streams:
                    all_open.set()
                try:
                    async for _ in response.aiter_raw():
                        pass
                    clean += 1
                except httpx.HTTPError:
                    pass

        tasks = [asyncio.create_task(hold()) for _ in range(streams)]
        await asyncio.wait_for(all_open.wait(), 60)
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks, return_exceptions=True)
        streams_ended = time.perf_counter() - started
        await asyncio.to_thread(proc.wait)
        exited = time.perf_counter() - started
    return {
        "open_streams": float(streams),
        "streams_ended_cleanly": float(clean),
        "all_streams_ended_seconds": round(streams_ended, 3),
        "process_exited_seconds": round(exited, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = start_server(Path(tmp), port)
        base = f"http://127.0.0.1:{port}"
        try:
            result = asyncio.run(resume_figure(base, args.missed))
            result |= asyncio.run(shutdown_figure(base, proc, args.streams))
        finally:
            if proc.poll() is None:
                proc.kill()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
