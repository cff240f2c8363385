"""The cluster scenario: Sala on 1, 2 and 3 processes sharing one PostgreSQL database,
fanning out through LISTEN/NOTIFY, and the same with a process killed under load.

    python -m bench.run --only cluster [--quick]

Every run gets a fresh database on the local PostgreSQL (SALA_TEST_POSTGRES, by
default postgresql://127.0.0.1:5432/test, is the admin URL; `bench_cluster_<random>`
is created beside it and dropped afterwards) and fresh processes
(`python -m web --port P` with SALA_DATABASE_URL = SALA_BROKER_URL = that database,
one SALA_SECRET_KEY for all of them, so one member's cookie works on every process).

- **fanout**: readers spread evenly over the processes (reader i on process i mod N),
  posts to process 0. A delivery to a reader on process 0 is same-process, on any
  other cross-process; each is timed from just before its POST. CPU is each
  process's own (/proc/PID/stat) over the publishing phase, per delivery it made.
- **kill**: 2 processes, posts to process 0; right after the answer to half the
  messages, process 1 gets SIGKILL. Its readers reconnect to the survivor with the
  last event id they saw (bench.loadgen.Reader): once all at once (the survivor's
  worst case), once after the stream's `retry:` with jitter, as htmx does. Reported:
  the share of (message, reader) pairs delivered, and how long until every moved
  reader was back and had every message posted before it came back.
- **listener cut**: the same, but instead of the process, process 1's LISTEN
  connection is ended from PostgreSQL's side (pg_terminate_backend) right before a
  post; its streams stay open. Caught up: when every reader had that post.

Figures are overhead against one process on the same cores, not speed-up: the
machine's cores are shared by PostgreSQL, the processes and the load client.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from bench.loadgen import Poster, Reader, Recorder, cpu_seconds, open_readers, percentile
from bench.run import HOST, PAD, Target, _create_room, _free_port, _ms, _ratios, _wait

ADMIN_URL = os.environ.get("SALA_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
SAMPLE_SECONDS = 1.0  # how often each process's /healthz/detail is read
LISTEN_APP = "sala-listen-"  # application_name of a process's LISTEN connection, + node id


def unavailable() -> str | None:
    """Why the scenario cannot run here (no PostgreSQL), or None."""
    try:
        psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL at {ADMIN_URL} ({str(exc).strip()})"
    return None


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database beside the admin URL's, dropped afterwards (with whatever is
    still connected to it)."""
    name = f"bench_cluster_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cluster:
    nodes: list[Target]
    database_url: str

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]


def start_nodes(count: int, database_url: str, broker_url: str, workdir: Path) -> list[Target]:
    """`count` Sala processes on free ports, started together, each logging to
    node<i>.log in `workdir`."""
    env = {
        **os.environ,
        "SALA_DATABASE_URL": database_url,
        "SALA_BROKER_URL": broker_url,
        "SALA_SECRET_KEY": secrets.token_urlsafe(32),
        "SALA_LIMITS": "off",
        "SALA_STREAM_MAX_SECONDS": "3600",
        "SALA_SUBSCRIBER_QUEUE_SIZE": "10000",
    }
    nodes = []
    for i in range(count):
        port = _free_port()
        cmd = [sys.executable, "-m", "web", "--host", HOST, "--port", str(port)]
        with open(workdir / f"node{i}.log", "wb") as log:
            proc = subprocess.Popen(
                [*cmd, "--log-level", "warning"],
                cwd=workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        nodes.append(Target(f"node{i}", proc, port))
    deadline = time.monotonic() + 60
    for i, node in enumerate(nodes):
        while True:
            try:
                if httpx.get(f"http://{HOST}:{node.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if node.proc.poll() is not None or time.monotonic() > deadline:
                stop_nodes(nodes)
                said = (workdir / f"node{i}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sala process {i} did not start:\n{said}")
            time.sleep(0.05)
    return nodes


def stop_nodes(nodes: list[Target]) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL after 30 s)."""
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.proc.wait(30)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()


def server_errors(workdir: Path) -> list[str]:
    """Lines of the processes' logs (warnings and above) that say something went wrong."""
    lines = []
    for log in sorted(workdir.glob("node*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(("ERROR", "CRITICAL", "Traceback")):
                lines.append(f"{log.stem}: {line}")
    return lines


# -- what the run watches ------------------------------------------------------


@dataclass
class Sampler:
    """Reads every process's /healthz/detail while it runs: the node ids and the
    highest PostgreSQL notification queue usage any of them reported."""

    ports: list[int]
    node_ids: dict[int, str] = field(default_factory=dict)
    reconnects: dict[int, int] = field(default_factory=dict)  # the LISTEN connection's
    max_queue_usage: float | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for port in self.ports:
                    try:
                        answer = await client.get(f"http://{HOST}:{port}/healthz/detail")
                        detail = answer.json()
                    except (httpx.HTTPError, ValueError):
                        continue  # a killed process, or a busy one
                    broker = detail.get("broker") or {}
                    node_id = detail.get("node_id") or broker.get("node_id")
                    if isinstance(node_id, str):
                        self.node_ids[port] = node_id
                    if isinstance(broker.get("reconnects"), int):
                        self.reconnects[port] = broker["reconnects"]
                    usage = broker.get("notification_queue_usage")
                    if isinstance(usage, (int, float)):
                        usage = float(f"{usage:.2g}")  # a fraction of 8 GB: 9.5e-07 is one page
                        self.max_queue_usage = max(self.max_queue_usage or 0.0, usage)
                await asyncio.sleep(SAMPLE_SECONDS)


def postgres_cpu(database_url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the database (the
    processes' pools and listeners), by pid; not the server's background processes."""
    if not database_url.startswith("postgresql"):
        return {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    out = {}
    for (pid,) in rows:
        with suppress(OSError):
            out[pid] = _task_cpu_seconds(pid)
    return out


def _task_cpu_seconds(pid: int) -> float:
    """A backend is one thread: its scheduler's nanoseconds, finer than /proc's ticks
    (10 ms, coarse for a backend's few milliseconds per run)."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)


def _postgres_cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """A backend that came meanwhile counts from zero; one that went is not counted."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def _readers(
    cluster: Cluster, count: int, code: str, cookie: str, *, follow_retry: bool = False
) -> list[Reader]:
    """`count` readers spread over the processes, each open, past its first event and
    holding a cursor (the id of a warm-up message, which no reader counts), so that
    each can resume. They open without a cursor, as a page's first stream does: with
    one, every open would replay from the database, and a thousand replays still
    running would be measured with the messages."""
    recorder = Recorder()
    path = f"/rooms/{code}/events"
    readers = await open_readers(
        HOST, cluster.ports, count, path, cookie, recorder, follow_retry=follow_retry
    )
    await _wait(lambda: all(r.first_event is not None for r in readers), 120)
    waiting = sum(r.first_event is None for r in readers)
    if waiting:
        raise RuntimeError(f"{waiting} of {count} streams never showed a first event")
    poster = Poster(HOST, cluster.ports[0], cookie)
    status, answer = await poster.post(f"/rooms/{code}/messages", "text=warm-up")
    poster.close()
    assert status == 200, (status, answer[:300])
    await _wait(lambda: all(r.last_id is not None for r in readers), 30)
    waiting = sum(r.last_id is None for r in readers)
    if waiting:
        raise RuntimeError(f"{waiting} of {count} streams never got the warm-up message")
    return readers


async def _close(readers: list[Reader], settle: float) -> None:
    for reader in readers:
        reader.close()
    await asyncio.sleep(settle)


Hook = Callable[[int], Coroutine[Any, Any, None]]


async def _publish(
    poster: Poster,
    code: str,
    messages: int,
    rate: float,
    *,
    before_post: Hook | None = None,
    after_post: Hook | None = None,
) -> dict[int, float]:
    """Post `messages` at `rate`, noting when each POST began."""
    post_times: dict[int, float] = {}
    started = time.monotonic()
    for seq in range(messages):
        await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
        if before_post is not None:
            await before_post(seq)
        post_times[seq] = time.monotonic()
        status, answer = await poster.post(f"/rooms/{code}/messages", f"text=m{seq} {PAD}")
        assert status == 200, (status, answer[:300])
        if after_post is not None:
            await after_post(seq)
    return post_times


def _delivered(readers: list[Reader], messages: int) -> int:
    return sum(sum(1 for seq in r.seen if seq < messages) for r in readers)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- the units -----------------------------------------------------------------


async def fanout(cluster: Cluster, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    nodes = cluster.nodes
    cookie, code = await _create_room(nodes[0], "", "Bench")
    readers = await _readers(cluster, subscribers, code, cookie)
    await asyncio.sleep(1)
    poster = Poster(HOST, nodes[0].port, cookie)
    await poster.connect()
    messages = max(1, int(rate * seconds))
    sampler = Sampler(cluster.ports)
    sampling = asyncio.create_task(sampler.run())
    cpu_before = [cpu_seconds(node.pid) for node in nodes]
    pg_before = postgres_cpu(cluster.database_url)
    post_times = await _publish(poster, code, messages, rate)
    await _wait(lambda: all(len(r.seen) >= messages for r in readers), 30)
    cpu = [cpu_seconds(node.pid) - before for node, before in zip(nodes, cpu_before, strict=True)]
    pg_cpu = _postgres_cpu_used(pg_before, postgres_cpu(cluster.database_url))
    sampling.cancel()
    poster.close()
    await _close(readers, 1)

    def delays(group: list[Reader]) -> tuple[list[float], list[float]]:
        each = [t - post_times[s] for r in group for s, t in r.seen.items() if s < messages]
        to_last = [
            max(r.seen[s] for r in group if s in r.seen) - post_times[s]
            for s in range(messages)
            if any(s in r.seen for r in group)
        ]
        return each, to_last

    same, same_last = delays([r for r in readers if r.home == 0])
    cross, cross_last = delays([r for r in readers if r.home != 0])
    by_node = [_delivered([r for r in readers if r.home == i], messages) for i in range(len(nodes))]
    delivered = sum(by_node)
    same_p99 = percentile(same, 99)
    cross_p99 = percentile(cross, 99) if cross else None
    return {
        "processes": len(nodes),
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages": messages,
        "delivered_ratio": round(delivered / (messages * subscribers), 4),
        "duplicates": sum(r.duplicates for r in readers),
        "out_of_order": sum(r.out_of_order for r in readers),
        "reconnects": sum(len(r.lost) for r in readers),
        "same_p50_ms": _ms(percentile(same, 50)),
        "same_p99_ms": _ms(same_p99),
        "cross_p50_ms": _ms(percentile(cross, 50)) if cross else None,
        "cross_p99_ms": _ms(cross_p99) if cross_p99 is not None else None,
        "cross_minus_same_p99_ms": _ms(cross_p99 - same_p99) if cross_p99 is not None else None,
        "same_to_last_p99_ms": _ms(percentile(same_last, 99)),
        "cross_to_last_p99_ms": _ms(percentile(cross_last, 99)) if cross_last else None,
        "cpu_us_per_delivery": round(sum(cpu) * 1e6 / max(delivered, 1), 2),
        "cpu_us_per_delivery_by_process": [
            round(c * 1e6 / max(n, 1), 2) for c, n in zip(cpu, by_node, strict=True)
        ],
        "postgres_cpu_us_per_message": round(pg_cpu * 1e6 / messages, 1) if pg_cpu else None,
        "max_notification_queue_usage": sampler.max_queue_usage,
        "node_ids_distinct": len(set(sampler.node_ids.values())) == len(nodes)
        if sampler.node_ids
        else None,
    }


async def kill(
    cluster: Cluster, subscribers: int, rate: float, seconds: float, follow_retry: bool
) -> dict[str, Any]:
    """Readers on both processes, posts to process 0, process 1 SIGKILLed right after
    the answer to half the messages. The readers it had reconnect at once (the
    worst case for the survivor: all at the same moment) or, with `follow_retry`,
    after the stream's `retry:` (1-3 s) with ±30% jitter, as htmx does."""
    nodes = cluster.nodes
    victim = nodes[-1]
    cookie, code = await _create_room(nodes[0], "", "Bench")
    readers = await _readers(cluster, subscribers, code, cookie, follow_retry=follow_retry)
    await asyncio.sleep(1)
    poster = Poster(HOST, nodes[0].port, cookie)
    await poster.connect()
    messages = max(2, int(rate * seconds))
    killed_at = 0.0

    async def maybe_kill(seq: int) -> None:
        # Right after an answer: the victim is likely still writing that message out.
        nonlocal killed_at
        if seq == messages // 2 - 1:
            killed_at = time.monotonic()
            victim.proc.kill()

    sampler = Sampler(cluster.ports)
    sampling = asyncio.create_task(sampler.run())
    post_times = await _publish(poster, code, messages, rate, after_post=maybe_kill)
    await _wait(lambda: all(len(r.seen) >= messages for r in readers), 30)
    sampling.cancel()
    poster.close()
    await _close(readers, 1)
    victim.proc.wait()

    moved = [r for r in readers if r.lost]
    back: list[float] = []  # each moved reader's first event on a surviving process
    caught_up: list[float] = []  # … and when it had every message posted before that
    for r in moved:
        if not r.resumed:
            continue
        resumed = r.resumed[0]
        back.append(resumed - killed_at)
        before = [s for s, t in post_times.items() if t <= resumed]
        if all(s in r.seen for s in before):
            caught_up.append(max([resumed] + [r.seen[s] for s in before]) - killed_at)
    delays = [t - post_times[s] for r in readers for s, t in r.seen.items() if s < messages]
    all_back = len(back) == len(moved)
    return {
        "fault": "kill -9, retry: waited" if follow_retry else "kill -9, at once",
        "processes": len(nodes),
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages": messages,
        "delivered_ratio": round(_delivered(readers, messages) / (messages * subscribers), 4),
        "duplicates": sum(r.duplicates for r in readers),
        "out_of_order": sum(r.out_of_order for r in readers),
        "readers_moved": len(moved),
        "refused_streams": sum(r.refused for r in readers),
        "reconnected_p50_s": _round(percentile(back, 50) if back else None, 3),
        "reconnected_max_s": _round(max(back) if back and all_back else None, 3),
        "caught_up_s": _round(
            max(caught_up) if caught_up and len(caught_up) == len(moved) else None, 3
        ),
        "max_delay_ms": _ms(max(delays)) if delays else None,
        "max_notification_queue_usage": sampler.max_queue_usage,
    }


async def listener(
    cluster: Cluster, subscribers: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Readers on both processes, posts to process 0; right before half the messages,
    process 1's LISTEN connection is ended from PostgreSQL's side
    (pg_terminate_backend), so that the message posted next reaches its readers only
    once that process has noticed, listened again and caught up from the database."""
    nodes = cluster.nodes
    victim = nodes[-1]
    cookie, code = await _create_room(nodes[0], "", "Bench")
    readers = await _readers(cluster, subscribers, code, cookie)
    sampler = Sampler(cluster.ports)
    sampling = asyncio.create_task(sampler.run())
    await _wait(lambda: victim.port in sampler.node_ids, 10)
    node_id = sampler.node_ids.get(victim.port)
    if node_id is None:
        raise RuntimeError("process 1 told no node_id in /healthz/detail")
    await asyncio.sleep(1)
    poster = Poster(HOST, nodes[0].port, cookie)
    await poster.connect()
    messages = max(2, int(rate * seconds))
    cut_at = 0.0
    relay_reconnects = sampler.reconnects.get(victim.port)

    async def maybe_cut(seq: int) -> None:
        nonlocal cut_at
        if seq == messages // 2:
            cut_at = time.monotonic()
            if not await asyncio.to_thread(_end_listener, cluster.database_url, node_id):
                raise RuntimeError(f"no LISTEN backend named {LISTEN_APP}{node_id}")

    post_times = await _publish(poster, code, messages, rate, before_post=maybe_cut)
    await _wait(lambda: all(len(r.seen) >= messages for r in readers), 30)
    await asyncio.sleep(2 * SAMPLE_SECONDS)
    sampling.cancel()
    poster.close()
    await _close(readers, 1)
    # The message posted right after the cut reaches process 1's readers only once
    # it has listened again and caught up; once all have it, all have what came before.
    first = messages // 2
    arrivals = [r.seen[first] for r in readers if first in r.seen]
    caught_up = max(arrivals) - cut_at if len(arrivals) == len(readers) else None
    delays = [t - post_times[s] for r in readers for s, t in r.seen.items() if s < messages]
    return {
        "fault": "listener cut",
        "processes": len(nodes),
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages": messages,
        "delivered_ratio": round(_delivered(readers, messages) / (messages * subscribers), 4),
        "duplicates": sum(r.duplicates for r in readers),
        "out_of_order": sum(r.out_of_order for r in readers),
        "readers_moved": sum(bool(r.lost) for r in readers),
        "caught_up_s": _round(caught_up, 3),
        "max_delay_ms": _ms(max(delays)) if delays else None,
        "relay_reconnects": (sampler.reconnects.get(victim.port, 0) - relay_reconnects)
        if relay_reconnects is not None
        else None,
        "max_notification_queue_usage": sampler.max_queue_usage,
    }


def _end_listener(database_url: str, node_id: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (LISTEN_APP + node_id,),
        ).fetchone()
    return bool(row and row[0])


# -- the run -------------------------------------------------------------------

Unit = Callable[[Cluster], Coroutine[Any, Any, dict[str, Any]]]


def measure(unit: Unit, processes: int) -> dict[str, Any]:
    """One unit on a fresh database and `processes` fresh Sala processes."""
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nodes = start_nodes(processes, url, url, workdir)
        try:
            result = asyncio.run(unit(Cluster(nodes, url)))
        finally:
            stop_nodes(nodes)
        errors = server_errors(workdir)
        result["server_errors"] = len(errors)
        for line in errors[:20]:
            print(f"  server: {line}", file=sys.stderr)
        return result


def rows(sizes: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The scenario's rows, each as run.py's {"sala", "baseline", "ratio"}; here the
    baseline of a row is the one-process row of the same size."""
    seconds = sizes["seconds"]
    for subscribers, rate in sizes["fanout"]:
        one: dict[str, Any] = {}
        for processes in sizes["processes"]:
            unit = partial(fanout, subscribers=subscribers, rate=rate, seconds=seconds)
            result = measure(unit, processes)
            if processes == 1:
                one = result
                yield {"sala": result, "baseline": {}, "ratio": {}}
            else:
                yield {"sala": result, "baseline": one, "ratio": _ratios(result, one)}
    subscribers, rate, fault_seconds = sizes["faults"]
    faults: list[Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = [
        partial(kill, follow_retry=False),
        partial(kill, follow_retry=True),
        listener,
    ]
    for fault in faults:
        unit = partial(fault, subscribers=subscribers, rate=rate, seconds=fault_seconds)
        yield {"sala": measure(unit, 2), "baseline": {}, "ratio": {}}
