"""Several Sala processes serving the same rooms from one PostgreSQL database.

`make_cluster` starts 2 or 3 `python -m web` processes on free ports, on a fresh
database per test (the `postgres_url` fixture), with the PostgreSQL broker
(LISTEN/NOTIFY) and short timings, so that crashes, leases and sweeps play out in
seconds. Each process is a node with a random id of its own.

`Browser` is one person's cookie jar talking to whichever process it is pointed at;
`Reader` follows a room's stream as htmx 4 does, but moves to the next process in its
list every time a stream ends or fails (no sticky sessions), resuming with the last
`id:` it saw as Last-Event-ID. `cluster_nginx` runs a real nginx with
deploy/nginx-cluster.conf in front of the processes.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
import psycopg
import pytest
from anyio.abc import TaskGroup

from tests.client import CODE_RE, SSEEvent, Stream
from tests.conftest import ROOT, Server, free_port
from tests.nginx import require_nginx, run_nginx

# Short timings (seconds), so that a lease runs out and a sweep follows within a test.
HEARTBEAT = 0.5
LEASE = 2.0
SWEEP = 0.5
GRACE = 1.0
CLUSTER_ENV = {
    "SALA_SECRET_KEY": "cluster-test-secret",  # every process signs alike
    "SALA_NODE_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "SALA_NODE_LEASE_SECONDS": str(LEASE),
    "SALA_SWEEP_SECONDS": str(SWEEP),
    "SALA_BROKER_PING_SECONDS": "0.5",
    "SALA_BROKER_RECONNECT_MAX_SECONDS": "0.5",
    "SALA_TAIL_CHECK_SECONDS": "1",
    "SALA_PRESENCE_GRACE_SECONDS": str(GRACE),
    # Dead connections show within seconds rather than the default 15.
    "SALA_HEARTBEAT_SECONDS": "2",
}
# How long after a process dies its members who had gone must have left: its lease runs
# out, a sweep follows, and the grace may still have been running; plus a wide margin
# for a loaded machine.
LEAVE_AFTER_CRASH = LEASE + SWEEP + GRACE + 8.0


@dataclass(frozen=True)
class Stored:
    """One timeline entry as the database holds it."""

    id: int
    seq: int
    kind: str
    author: str
    body: str | None
    key: str | None


class Cluster:
    """Sala processes on one database; `nodes[i].url` is where process i listens."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.nodes: list[Server] = []

    def start(self, size: int, *, args: Sequence[str] = (), env: dict[str, str]) -> None:
        """Start `size` processes at once (they migrate the database together) and wait
        until each serves and its broker is listening."""
        env = {
            "SALA_DATABASE_URL": self.database_url,
            "SALA_BROKER_URL": self.database_url,
            **CLUSTER_ENV,
            **env,
        }
        new = []
        for _ in range(size):
            workdir = self.root / f"node{len(self.nodes)}"
            workdir.mkdir()
            node = Server(workdir, env, args)
            self.nodes.append(node)
            new.append(node)
        with ThreadPoolExecutor(len(new)) as pool:
            for started in [pool.submit(node.start) for node in new]:
                started.result()
        for node in new:
            self.wait_detail(node, _listening, timeout=20)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every process still running, all at once."""
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            for stopped in [pool.submit(node.stop, sig) for node in self.nodes]:
                stopped.result()

    # -- what a process says about itself -----------------------------------

    def detail(self, node: Server) -> dict[str, Any]:
        """`/healthz/detail`, asked directly (it is never answered through a proxy)."""
        response = httpx.get(node.url + "/healthz/detail", timeout=5)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def wait_detail(
        self, node: Server, check: Callable[[dict[str, Any]], bool], *, timeout: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            detail = self.detail(node)
            if check(detail):
                return detail
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.url}/healthz/detail never passed: {detail}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- node {i} ---\n{node.log()}" for i, node in enumerate(self.nodes))

    def log_digest(self, lines: int = 80) -> str:
        """Each process's log without its access lines (warnings, errors, tracebacks),
        then its last few lines: what a failed test's report shows."""
        parts = []
        for i, node in enumerate(self.nodes):
            log = node.log().splitlines()
            notable = [line for line in log if not _ACCESS_LINE.search(line)]
            parts.append(f"--- node {i} ({node.url}) ---")
            parts.extend(notable[-lines:])
            parts.append(f"--- node {i}: last lines ---")
            parts.extend(log[-15:])
        return "\n".join(parts)

    # -- what the database holds --------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            return list(conn.execute(sql.encode(), params).fetchall())

    def stored(self, code: str) -> list[Stored]:
        """The room's entries in seq order: the one order every reader must see."""
        rows = self.query(
            "SELECT e.id, e.seq, e.kind, e.author_name, e.body, e.idempotency_key"
            " FROM entry e JOIN room r ON r.id = e.room_id WHERE r.code = %s ORDER BY e.seq",
            (code,),
        )
        return [Stored(*row) for row in rows]

    async def stored_now(self, code: str) -> list[Stored]:
        return await anyio.to_thread.run_sync(self.stored, code)

    def terminate_listeners(self) -> int:
        """Cut every process's LISTEN connection to this database; how many were cut."""
        rows = self.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'sala-listen-%%' AND datname = current_database()"
        )
        return sum(1 for (done,) in rows if done)


_ACCESS_LINE = re.compile(r'" \d{3}( |$)')


def _listening(detail: dict[str, Any]) -> bool:
    broker = detail.get("broker")
    return isinstance(broker, dict) and broker.get("connected") is True


def presence_of(stored: Sequence[Stored], author: str) -> list[str]:
    """The joins and leaves recorded for `author`, in order."""
    return [e.kind for e in stored if e.author == author and e.kind != "message"]


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path: Path, postgres_url: str) -> Iterator[ClusterFactory]:
    """`make_cluster(size, args=…, **env)`: a started cluster; `env` become SALA_* variables."""
    made: list[Cluster] = []

    def make(size: int = 3, *, args: Sequence[str] = (), **env: object) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(made)}", postgres_url)
        cluster.root.mkdir()
        made.append(cluster)
        cluster.start(size, args=args, env={f"SALA_{k.upper()}": str(v) for k, v in env.items()})
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
        # Shown with the test's report when it fails.
        print(cluster.log_digest())


# -- people -------------------------------------------------------------------


class Browser:
    """One person's browser: one cookie jar, and any process's address to talk to
    (cookies ignore the port, and every process signs them alike)."""

    def __init__(self, name: str, *, address: str | None = None) -> None:
        """`address`: the local address to connect from (another 127.x.y.z is another
        client address, as far as per-address limits can tell)."""
        self.name = name
        transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=30), transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def create_room(self, node: str) -> str:
        response = await self.client.post(node + "/", data={"name": self.name, "action": "create"})
        assert response.status_code == 303, response.text
        match = CODE_RE.match(response.headers["location"])
        assert match, response.headers["location"]
        return match.group(1)

    async def join(self, node: str, code: str) -> None:
        data = {"name": self.name, "code": code, "action": "join"}
        response = await self.client.post(node + "/", data=data)
        assert response.status_code == 303, response.text

    async def say(
        self, node: str, code: str, text: str, *, key: str | None = None, htmx: bool = True
    ) -> httpx.Response:
        data = {"text": text}
        if key is not None:
            data["idempotency_key"] = key
        headers = {"HX-Request": "true"} if htmx else {}
        return await self.client.post(f"{node}/rooms/{code}/messages", data=data, headers=headers)

    async def say_until_taken(
        self, node: str, code: str, text: str, *, key: str, timeout: float = 30
    ) -> httpx.Response:
        """Post, and after a 429 wait as told and post again with the same key (as the
        page does); the first answer that is not a 429."""
        with anyio.fail_after(timeout):
            while True:
                response = await self.say(node, code, text, key=key)
                if response.status_code != 429:
                    return response
                await anyio.sleep(float(response.headers.get("retry-after", "1")))

    def stream(
        self,
        node: str,
        code: str,
        *,
        after: int | None = None,
        last_event_id: int | None = None,
        parse: bool = True,
    ) -> Stream:
        url = f"{node}/rooms/{code}/events" + (f"?after={after}" if after is not None else "")
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        return Stream(self.client, url, headers, parse=parse)

    def reader(self, nodes: Sequence[str], code: str, *, after: int = 0) -> Reader:
        return Reader(self.client, nodes, code, after=after)


class Answers:
    """The status of every post, and the words of the first few that were not a 200."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.problems: list[str] = []

    def __len__(self) -> int:
        return len(self.codes)

    def add(self, response: httpx.Response) -> None:
        self.codes.append(response.status_code)
        if response.status_code != 200 and len(self.problems) < 5:
            words = " ".join(re.sub(r"<[^>]*>", " ", response.text).split())
            self.problems.append(f"{response.status_code} from {response.url}: {words[:300]}")

    def assert_all_ok(self, count: int) -> None:
        assert Counter(self.codes) == {200: count}, self.problems


@contextlib.asynccontextmanager
async def browsers(*names: str) -> AsyncIterator[list[Browser]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Browser(name)) for name in names]


class Reader:
    """Follows a room's stream as htmx 4 does (the original URL, then Last-Event-ID with
    the last `id:` seen), moving on to the next process in `nodes` after every end or
    failure. Keeps every entry id it was sent, duplicates included, in arrival order."""

    def __init__(self, client: httpx.AsyncClient, nodes: Sequence[str], code: str, *, after: int):
        self.client = client
        self.nodes = list(nodes)
        self.path = f"/rooms/{code}/events?after={after}"
        self.last_event_id: str | None = None
        self.ids: list[int] = []
        self.events: list[SSEEvent] = []
        self.opened_on: list[str] = []  # the process of every stream that opened (200)
        self.failures = 0
        self._first = anyio.Event()
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        with anyio.fail_after(10):
            await self._first.wait()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    async def _run(self) -> None:
        turn = 0
        while True:
            node = self.nodes[turn % len(self.nodes)]
            turn += 1
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            stream = Stream(
                self.client, node + self.path, headers, on_event=self._take, parse=False
            )
            async with stream:
                opened = stream.response is not None and stream.response.status_code == 200
                if opened:
                    self.opened_on.append(node)
                await stream.wait_end(timeout=3600)
            if not opened or stream.error is not None:
                self.failures += 1
            await anyio.sleep(0.05 if opened else 0.2)

    def _take(self, event: SSEEvent) -> None:
        self._first.set()
        if event.id:
            self.last_event_id = event.id
            self.ids.append(int(event.id))
            self.events.append(event)

    async def wait_ids(self, ids: Sequence[int], timeout: float = 30) -> None:
        """Wait until every one of `ids` has arrived (the caller then checks the order)."""
        wanted = set(ids)
        try:
            with anyio.fail_after(timeout):
                while not wanted <= set(self.ids):
                    await anyio.sleep(0.05)
        except TimeoutError:
            missing = sorted(wanted - set(self.ids))
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} entries never arrived (first {missing[:10]}); "
                f"streams opened on {self.opened_on}, {self.failures} failed"
            ) from None


def duplicates(ids: Sequence[int]) -> list[int]:
    """The ids that arrived more than once."""
    return sorted(i for i, n in Counter(ids).items() if n > 1)


# -- nginx --------------------------------------------------------------------


def cluster_site(template: str, ports: Sequence[int], listen_port: int) -> str:
    """deploy/nginx-cluster.conf with these processes' ports and nginx's own."""
    site = template
    for n, port in enumerate(ports, start=1):
        line = f"server 127.0.0.1:800{n};"
        assert line in site, f"deploy/nginx-cluster.conf lists no {line}"
        site = site.replace(line, f"server 127.0.0.1:{port};")
    assert "server 127.0.0.1:800" not in site, "more upstream lines than processes"
    assert "listen 8080;" in site
    return site.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")


@contextlib.contextmanager
def cluster_nginx(cluster: Cluster, workdir: Path) -> Iterator[str]:
    """A real nginx with deploy/nginx-cluster.conf in front of the cluster; its URL."""
    require_nginx()
    workdir.mkdir()
    port = free_port()
    template = (ROOT / "deploy" / "nginx-cluster.conf").read_text()
    site = cluster_site(template, [node.port for node in cluster.nodes], port)
    with run_nginx(workdir, site, port, worker_connections=512) as url:
        yield url


def assert_exactly_once_in_order(got: Sequence[int], want: Sequence[int], who: str) -> None:
    """`got` is `want`: every id once, nothing else, in the same order; if not, says how."""
    got, want = list(got), list(want)
    if got == want:
        return
    differ = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
    if differ is None:
        differ = min(len(got), len(want))
    raise AssertionError(
        f"{who}: {len(got)} ids arrived for {len(want)} stored; "
        f"duplicates {duplicates(got)[:10]}, missing {sorted(set(want) - set(got))[:10]}, "
        f"not stored {sorted(set(got) - set(want))[:10]}; first difference at {differ}: "
        f"got {got[max(0, differ - 2) : differ + 3]}, "
        f"stored {want[max(0, differ - 2) : differ + 3]}"
    )
