"""Sala's benchmark, with a bare asyncio baseline measured in the same run.

    python -m bench.run --quick          # what `make bench` runs: small sizes, a few minutes
    python -m bench.run                  # full sizes: 6k/10k/19.5k idle streams, 5,000 subscribers
    python -m bench.run --only fanout    # one scenario: idle, fanout, rooms, posting, cluster

Servers run as subprocesses on free ports (Sala on a fresh SQLite file, with the
rate limit off: the load comes from a few members); the load client runs in this
process. Results go to bench/results.json and a table on stdout. Ratios are
baseline ÷ Sala for costs (CPU per delivery, latency): 1.0 is as cheap as the bare
server, 0.25 is four times its cost; and Sala ÷ baseline for throughput. The cluster
scenario (bench/cluster.py, on PostgreSQL) has no bare baseline: its rows compare N
processes with one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import targets
from bench.loadgen import (
    Poster,
    Recorder,
    cpu_seconds,
    open_streams,
    percentile,
    rss_bytes,
    session_cookie,
)

HOST = "127.0.0.1"
PAD = "x" * 100
RESULTS = Path(__file__).parent / "results.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def sala_env(workdir: Path, **extra: str) -> dict[str, str]:
    """Sala's settings for a benchmark: a fresh SQLite file, no limits, long streams."""
    return {
        **os.environ,
        "SALA_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "SALA_LIMITS": "off",
        "SALA_STREAM_MAX_SECONDS": "3600",
        "SALA_SUBSCRIBER_QUEUE_SIZE": "10000",
        **extra,
    }


def sala_command(port: int) -> list[str]:
    return [sys.executable, "-m", "web", "--port", str(port), "--log-level", "warning"]


def launch(
    name: str, port: int, command: list[str], env: dict[str, str], workdir: Path, within: float = 20
) -> Target:
    """Start a server and wait until /healthz answers; its output goes to a log that a
    failure to start shows."""
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return Target(name, proc, port)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-2000:]}")


def start(name: str, workdir: Path) -> Target:
    port = _free_port()
    if name == "sala":
        return launch(name, port, sala_command(port), sala_env(workdir), workdir)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
    if name == "floor":  # uvicorn as Sala runs it, with an app that only writes a first event
        command = [
            *(sys.executable, "-m", "uvicorn", "bench.floor:app", "--host", HOST),
            *("--port", str(port), "--http", "httptools", "--loop", "uvloop"),
            *("--log-level", "warning", "--no-access-log"),
        ]
    return launch(name, port, command, env, workdir)


async def _member(target: Target, name: str = "Bench") -> tuple[str, str]:
    """A session cookie and a new room code."""
    if target.name in ("baseline", "floor"):
        return "", f"R{random.randrange(10**9)}"
    return await _create_room(target, "", name)


async def _create_room(target: Target, cookie: str, name: str) -> tuple[str, str]:
    poster = Poster(HOST, target.port, cookie)
    status, answer = await poster.post("/", f"name={name}&action=create", htmx=False)
    poster.close()
    assert status == 303, answer[:300]
    location = next(line for line in answer.split(b"\r\n") if line.lower().startswith(b"location:"))
    return session_cookie(answer) or cookie, location.decode().rsplit("/", 1)[-1].strip()


async def _wait(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


async def _subscribe(
    target: Target, paths: list[str], cookie: str | list[str], languages: list[str] | None = None
) -> tuple[Recorder, list[asyncio.Transport]]:
    """Open the streams and wait until each has shown its first event."""
    recorder = Recorder()
    transports = await open_streams(HOST, target.port, paths, cookie, recorder, languages=languages)
    await _wait(lambda: len(recorder.first_event) >= len(paths), 120)
    return recorder, transports


async def _unsubscribe(transports: list[asyncio.Transport], settle: float) -> None:
    for transport in transports:
        transport.close()
    await asyncio.sleep(settle)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- scenarios -----------------------------------------------------------------


async def idle(target: Target, count: int) -> dict[str, Any]:
    cookie, code = await _member(target)
    before = rss_bytes(target.pid)
    cpu = cpu_seconds(target.pid)
    recorder, transports = await _subscribe(target, [f"/rooms/{code}/events"] * count, cookie)
    cpu = cpu_seconds(target.pid) - cpu
    await asyncio.sleep(2)
    held = recorder.opened - recorder.closed
    after = rss_bytes(target.pid)
    await _unsubscribe(transports, 2)
    return {
        "streams": count,
        "held": held,
        "first_event_p50_ms": _ms(percentile(recorder.first_event, 50)),
        "first_event_p99_ms": _ms(percentile(recorder.first_event, 99)),
        "memory_per_stream_kb": round((after - before) / max(held, 1) / 1024, 2),
        # The server's CPU while the streams opened, per stream: steadier from hour to
        # hour than the p99, which is a queue behind it (bench/README.md).
        "cpu_us_per_open": round(cpu / max(count, 1) * 1e6, 1),
    }


# Readers of one room in each language Sala speaks (frames rendered once per language).
BOTH_LANGUAGES = ["en-US,en;q=0.9", "pt-BR,pt;q=0.9"]


async def fanout(
    target: Target, subscribers: int, rate: float, seconds: float, languages: int = 1
) -> dict[str, Any]:
    cookie, code = await _member(target)
    paths = [f"/rooms/{code}/events"] * subscribers
    asked = BOTH_LANGUAGES if languages == 2 else None
    recorder, transports = await _subscribe(target, paths, cookie, asked)
    await asyncio.sleep(1)
    poster = Poster(HOST, target.port, cookie)
    await poster.connect()
    messages = max(1, int(rate * seconds))
    cpu_before = cpu_seconds(target.pid)
    started = time.monotonic()
    for seq in range(messages):
        due = started + seq / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        recorder.post_times[seq] = time.monotonic()
        status, _ = await poster.post(f"/rooms/{code}/messages", f"text=m{seq} {PAD}")
        assert status == 200, status
    expected = subscribers * messages
    await _wait(lambda: recorder.deliveries() >= expected, 30)
    cpu = cpu_seconds(target.pid) - cpu_before
    last_arrival = max((max(t) for t in recorder.arrivals.values()), default=started)
    poster.close()
    await _unsubscribe(transports, 1)
    to_last = [max(recorder.arrivals[s]) - recorder.post_times[s] for s in recorder.arrivals]
    delivered = recorder.deliveries()
    return {
        "subscribers": subscribers,
        "rate_per_s": rate,
        "languages": languages,
        "messages": messages,
        "delivered_ratio": round(delivered / expected, 4),
        "to_last_subscriber_p50_ms": _ms(percentile(to_last, 50)),
        "to_last_subscriber_p99_ms": _ms(percentile(to_last, 99)),
        "deliveries_per_s": round(delivered / max(last_arrival - started, 1e-9), 1),
        "cpu_us_per_delivery": round(cpu * 1e6 / max(delivered, 1), 2),
    }


async def rooms(
    target: Target, count: int, per_room: int, rate: float, seconds: float
) -> dict[str, Any]:
    # One member per room: a session is bound to the rooms it joined.
    members = {code: cookie for cookie, code in [await _member(target) for _ in range(count)]}
    codes = list(members)
    paths = [f"/rooms/{code}/events" for code in codes for _ in range(per_room)]
    cookies = [members[code] for code in codes for _ in range(per_room)]
    recorder, transports = await _subscribe(target, paths, cookies)
    await asyncio.sleep(1)
    posters: asyncio.Queue[Poster] = asyncio.Queue()
    for _ in range(32):
        poster = Poster(HOST, target.port, "")
        await poster.connect()
        posters.put_nowait(poster)
    weights = [1 / (i + 1) for i in range(count)]  # Zipf: a few busy rooms, a long tail
    post_latency: list[float] = []

    async def post(seq: int, code: str) -> None:
        poster = await posters.get()
        recorder.post_times[seq] = time.monotonic()
        status, _ = await poster.post(
            f"/rooms/{code}/messages", f"text=m{seq} {PAD}", cookie=members[code]
        )
        post_latency.append(time.monotonic() - recorder.post_times[seq])
        posters.put_nowait(poster)
        assert status == 200, status

    messages = int(rate * seconds)
    cpu_before = cpu_seconds(target.pid)
    started = time.monotonic()
    tasks = []
    for seq, code in enumerate(random.choices(codes, weights, k=messages)):
        await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
        tasks.append(asyncio.create_task(post(seq, code)))
    await asyncio.gather(*tasks)
    posting_took = time.monotonic() - started
    expected = messages * per_room
    await _wait(lambda: recorder.deliveries() >= expected, 30)
    cpu = cpu_seconds(target.pid) - cpu_before
    delivery = [
        arrival - recorder.post_times[seq]
        for seq, arrivals in recorder.arrivals.items()
        for arrival in arrivals
    ]
    while not posters.empty():
        posters.get_nowait().close()
    await _unsubscribe(transports, 2)
    return {
        "rooms": count,
        "per_room": per_room,
        "posts_per_s_asked": rate,
        "posts_per_s_done": round(messages / posting_took, 1),
        "post_p99_ms": _ms(percentile(post_latency, 99)),
        "delivery_p50_ms": _ms(percentile(delivery, 50)),
        "delivery_p99_ms": _ms(percentile(delivery, 99)),
        "delivered_ratio": round(recorder.deliveries() / max(expected, 1), 4),
        # Steadier than the p99 from hour to hour: the p99 is mostly queueing for it.
        "cpu_ms_per_post": round(cpu * 1000 / max(messages, 1), 3),
    }


async def posting(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    cookie, code = await _member(target)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        poster = Poster(HOST, target.port, cookie)
        await poster.connect()
        seq = 0
        while time.monotonic() < deadline:
            began = time.monotonic()
            status, _ = await poster.post(f"/rooms/{code}/messages", f"text=p{n}-{seq} {PAD}")
            latencies.append(time.monotonic() - began)
            assert status == 200, status
            seq += 1
        poster.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    took = time.monotonic() - started
    return {
        "concurrency": concurrency,
        "posts_per_s": round(len(latencies) / took, 1),
        "post_p50_ms": _ms(percentile(latencies, 50)),
        "post_p99_ms": _ms(percentile(latencies, 99)),
    }


# -- the run -------------------------------------------------------------------

SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "idle": [2000],
        "fanout": [(1, 10), (100, 10), (1000, 1), (1000, 10)],
        "fanout_languages": [(1000, 10)],  # half the readers English, half Portuguese
        "fanout_seconds": 3,
        "rooms": (100, 10, 200),
        "rooms_seconds": 3,
        "posting": [1, 16, 64],
        "posting_seconds": 3,
        "cluster": {
            "processes": [1, 2, 3],
            "fanout": [(1000, 10)],
            "seconds": 3,
            "faults": (1000, 10, 6),  # subscribers, messages/s, seconds (fault halfway)
        },
    },
    "full": {
        "idle": [6000, 10000, 19500],
        "fanout": [(s, r) for s in (1, 100, 1000, 5000) for r in (1, 10)],
        "fanout_languages": [(1000, 10), (5000, 10)],
        "fanout_seconds": 10,
        "rooms": (1000, 10, 1000),
        "rooms_seconds": 10,
        "posting": [1, 16, 64],
        "posting_seconds": 10,
        "cluster": {
            "processes": [1, 2, 3],
            "fanout": [(100, 10), (1000, 10)],
            "seconds": 10,
            "faults": (1000, 10, 20),
        },
    },
}
SCENARIOS = ["idle", "fanout", "rooms", "posting", "cluster", "servers"]
COSTS = ("ms", "cpu_us", "memory")  # smaller is better: ratio = baseline / sala


def _ratios(sala: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in sala.items():
        other = base.get(key)
        if not isinstance(value, (int, float)) or not isinstance(other, (int, float)):
            continue
        if key in ("subscribers", "rate_per_s", "messages", "streams", "rooms", "per_room"):
            continue
        if key in ("processes", "languages"):
            continue
        if key in ("concurrency", "posts_per_s_asked"):
            continue
        if any(part in key for part in COSTS):
            out[key] = round(other / value, 3) if value else float("nan")
        elif "per_s" in key or key == "held":
            out[key] = round(value / other, 3) if other else float("nan")
    return out


def units(
    name: str, sizes: dict[str, Any]
) -> list[Callable[[Target], Coroutine[Any, Any, dict[str, Any]]]]:
    """The runs of a scenario; each gets a fresh server."""
    if name == "idle":
        return [partial(idle, count=count) for count in sizes["idle"]]
    if name == "fanout":
        seconds = sizes["fanout_seconds"]
        return [
            partial(fanout, subscribers=subscribers, rate=rate, seconds=seconds)
            for subscribers, rate in sizes["fanout"]
        ] + [
            partial(fanout, subscribers=subscribers, rate=rate, seconds=seconds, languages=2)
            for subscribers, rate in sizes["fanout_languages"]
        ]
    if name == "rooms":
        count, per_room, rate = sizes["rooms"]
        seconds = sizes["rooms_seconds"]
        return [partial(rooms, count=count, per_room=per_room, rate=rate, seconds=seconds)]
    seconds = sizes["posting_seconds"]
    return [partial(posting, concurrency=c, seconds=seconds) for c in sizes["posting"]]


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT on this machine (Linux), 0 where it cannot tell."""
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError):
        pass
    return 0


def drain_time_wait(most: int = 2000, within: float = 90) -> None:
    """Wait until the sockets the last unit closed have left TIME_WAIT (60 s on Linux).
    The client closes its streams, so each unit leaves thousands; tens of thousands
    of them made every later unit's connects slower (bare server and Sala alike) and
    its first-event times noisy."""
    deadline = time.monotonic() + within
    while time_wait_sockets() > most and time.monotonic() < deadline:
        time.sleep(1)


def measure(
    unit: Callable[[Target], Coroutine[Any, Any, dict[str, Any]]], name: str
) -> dict[str, Any]:
    drain_time_wait()
    with tempfile.TemporaryDirectory() as tmp:
        target = start(name, Path(tmp))
        try:
            return asyncio.run(unit(target))
        finally:
            target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (make bench)")
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    scenarios = args.only or SCENARIOS
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile": "quick" if args.quick else "full",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scenarios": {},
    }
    for scenario in scenarios:
        if scenario == "cluster":
            from bench import cluster  # it builds on this module

            missing = cluster.unavailable()
            if missing:
                if args.only:
                    parser.exit(2, f"cluster: {missing}\n")
                print(f"== cluster skipped: {missing}", flush=True)
                continue
            report["scenarios"][scenario] = []
            print(f"== {scenario}", flush=True)
            for row in cluster.rows(sizes["cluster"]):
                report["scenarios"][scenario].append(row)
                print(json.dumps(row), flush=True)
            continue
        if scenario == "servers":
            from bench import servers  # it builds on this module

            report["scenarios"][scenario] = []
            print(f"== {scenario}", flush=True)
            for row in servers.rows(quick=args.quick):
                report["scenarios"][scenario].append(row)
                print(json.dumps(row), flush=True)
            continue
        report["scenarios"][scenario] = []
        print(f"== {scenario}", flush=True)
        for unit in units(scenario, sizes):
            base = measure(unit, "baseline")
            sala = measure(unit, "sala")
            row = {"sala": sala, "baseline": base, "ratio": _ratios(sala, base)}
            if scenario == "idle":  # and the HTTP server alone (bench/floor.py)
                row["floor"] = measure(unit, "floor")
            report["scenarios"][scenario].append(row)
            print(json.dumps(row), flush=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}\n")
    print(targets.render(report), end="")


if __name__ == "__main__":
    main()
