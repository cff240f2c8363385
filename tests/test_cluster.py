"""Several processes serving the same rooms from PostgreSQL: LISTEN/NOTIFY fan-out and
presence in database rows.

Every test starts its own `python -m web` processes on a fresh database
(tests/cluster.py). People post on one process and read on another; nothing relies on
a client staying with one process.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from tests.client import Stream
from tests.cluster import (
    GRACE,
    LEASE,
    LEAVE_AFTER_CRASH,
    SWEEP,
    Answers,
    Browser,
    ClusterFactory,
    assert_exactly_once_in_order,
    browsers,
    cluster_nginx,
    presence_of,
)
from tests.cluster import make_cluster as make_cluster  # a fixture
from tests.conftest import ROOT
from tests.test_migrations import HEAD, _make_legacy, _rows, _versions
from tests.test_postgres import postgres_url as postgres_url  # a fresh database per test

pytestmark = pytest.mark.anyio


def comings_and_goings(stream: Stream) -> list[tuple[str, str]]:
    """(kind, name) of the joins and leaves a stream has shown."""
    return [(e.kind, e.author) for e in stream.entries if e.kind != "message"]


def joined(*names: str) -> Callable[[Stream], bool]:
    return lambda s: {("join", name) for name in names} <= set(comings_and_goings(s))


def left(*names: str) -> Callable[[Stream], bool]:
    return lambda s: {("leave", name) for name in names} <= set(comings_and_goings(s))


async def test_a_post_on_one_process_is_read_once_on_another(make_cluster: ClusterFactory) -> None:
    """A message posted on A reaches a reader streaming on B (and one on A) once, and
    the other way round; each process is a node of its own with a listening broker."""
    cluster = make_cluster(2)
    a, b = cluster.urls
    details = [cluster.detail(node) for node in cluster.nodes]
    assert details[0]["node_id"] != details[1]["node_id"]
    for detail in details:
        assert detail["status"] == "ok"
        broker = detail["broker"]
        assert broker["kind"] == "postgresql" and broker["connected"] is True
        assert isinstance(broker["reconnects"], int)
        assert isinstance(broker["notification_queue_usage"], int | float)
    async with browsers("Ana", "Bo") as (ana, bo):
        code = await ana.create_room(a)
        await bo.join(b, code)
        async with bo.stream(b, code, after=0) as on_b, ana.stream(a, code, after=0) as on_a:
            await on_b.wait_for(joined("Ana", "Bo"))
            assert (await ana.say(a, code, "hello from A")).status_code == 200
            await on_b.wait_text("hello from A")
            assert (await bo.say(b, code, "hello from B", htmx=False)).status_code == 303
            await on_a.wait_text("hello from B")
            await on_b.wait_text("hello from B")
            await on_a.wait_text("hello from A")
            await anyio.sleep(0.5)  # a second copy of anything would be here by now
        stored = await cluster.stored_now(code)
        assert [(e.kind, e.author, e.body) for e in stored if e.kind == "message"] == [
            ("message", "Ana", "hello from A"),
            ("message", "Bo", "hello from B"),
        ]
        for name, stream in (("reader on A", on_a), ("reader on B", on_b)):
            assert_exactly_once_in_order(stream.ids, [e.id for e in stored], name)
        message = next(e for e in on_b.entries if e.text == "hello from A")
        assert message.author == "Ana" and message.time.endswith("Z")
        detail = cluster.detail(cluster.nodes[1])
        assert isinstance(detail["broker"]["last_notification_age_seconds"], int | float)


PROCESSES = 3
POSTERS_PER_PROCESS = 3
POSTS_EACH = 300
READERS_PER_PROCESS = 2


@pytest.mark.timeout(300)
async def test_concurrent_posters_on_three_processes_are_read_in_one_order_everywhere(
    make_cluster: ClusterFactory,
) -> None:
    """Three processes, three posters on each sending 300 posts to one room, and two
    readers on every process: every reader gets every entry exactly once, in the stored
    (seq) order, so the same order everywhere; ids only grow along it, and each poster's
    messages keep the order they were sent in."""
    cluster = make_cluster(PROCESSES, limits="off")
    nodes = cluster.urls
    posters = [f"Poster {n}" for n in range(PROCESSES * POSTERS_PER_PROCESS)]
    readers = [f"Reader {n}" for n in range(PROCESSES * READERS_PER_PROCESS)]
    async with browsers("Host", *posters, *readers) as people:
        host, poster_browsers, reader_browsers = (
            people[0],
            people[1 : 1 + len(posters)],
            people[1 + len(posters) :],
        )
        code = await host.create_room(nodes[0])
        for n, person in enumerate(people[1:]):
            await person.join(nodes[n % PROCESSES], code)
        answers = Answers()

        async def post(person: Browser, node: str) -> None:
            for n in range(POSTS_EACH):
                key = f"{person.name}-{n}"
                answers.add(await person.say(node, code, f"{person.name} #{n}", key=key))

        async with contextlib.AsyncExitStack() as stack:
            reading = [
                await stack.enter_async_context(person.reader([nodes[n % PROCESSES]], code))
                for n, person in enumerate(reader_browsers)
            ]
            async with anyio.create_task_group() as posting:
                for n, person in enumerate(poster_browsers):
                    posting.start_soon(post, person, nodes[n % PROCESSES])
            answers.assert_all_ok(len(posters) * POSTS_EACH)
            stored = await cluster.stored_now(code)
            ids = [e.id for e in stored]
            for reader in reading:
                await reader.wait_ids(ids, timeout=90)
            await anyio.sleep(0.5)
        messages = [e for e in stored if e.kind == "message"]
        assert len(messages) == len(posters) * POSTS_EACH
        assert ids == sorted(ids), "ids must grow along the room's seq"
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        for name in posters:
            bodies = [e.body for e in messages if e.author == name]
            assert bodies == [f"{name} #{n}" for n in range(POSTS_EACH)], name
        for n, reader in enumerate(reading):
            assert_exactly_once_in_order(reader.ids, ids, f"reader {n} on {nodes[n % PROCESSES]}")


NGINX_POSTERS = 3
NGINX_POSTS_EACH = 50
NGINX_READERS = 6
NGINX_GREEDY_POSTS = 150


@pytest.mark.timeout(180)
async def test_through_nginx_posts_and_streams_spread_over_the_processes(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """A real nginx with deploy/nginx-cluster.conf (least_conn, no stickiness) in front
    of three processes: streams and posts land on different processes, and every
    reader still gets every entry exactly once, in the stored order. Posts that nginx
    holds back (429, per address and per session) are sent again with the same key, as
    the page does, and are stored once. One session posting as fast as it can is held
    back by nginx after its burst, across processes, while another session from the
    same address still gets through."""
    cluster = make_cluster(3, args=["--forwarded-allow-ips", "127.0.0.1"])
    with cluster_nginx(cluster, tmp_path / "nginx") as url:
        posters = [f"Poster {n}" for n in range(NGINX_POSTERS)]
        readers = [f"Reader {n}" for n in range(NGINX_READERS)]
        async with (
            browsers("Host", *posters, *readers) as people,
            # Another client address (another loopback one), with a bucket of its own.
            Browser("Greedy", address="127.0.0.2") as greedy,
            Browser("Neighbour", address="127.0.0.2") as neighbour,
        ):
            host = people[0]
            code = await host.create_room(url)
            for person in [*people[1:], greedy, neighbour]:
                await person.join(url, code)

            greedy_keys: list[str] = []
            for n in range(NGINX_GREEDY_POSTS):
                refused = await greedy.say(url, code, f"greedy {n}", key=f"greedy-{n}")
                if refused.status_code != 200:
                    break
                greedy_keys.append(f"greedy-{n}")
            assert refused.status_code == 429 and "from your address" in refused.text
            assert len(greedy_keys) >= 60, "a burst of 60 must go through"
            other = await neighbour.say(url, code, "from another session", key="other")
            assert other.status_code == 200, "the address itself is not held back"

            answers = Answers()

            async def post(person: Browser) -> None:
                for n in range(NGINX_POSTS_EACH):
                    text, key = f"{person.name} #{n}", f"{person.name}-{n}"
                    answers.add(await person.say_until_taken(url, code, text, key=key))

            async with contextlib.AsyncExitStack() as stack:
                reading = [
                    await stack.enter_async_context(person.reader([url], code))
                    for person in people[1 + NGINX_POSTERS :]
                ]
                async with anyio.create_task_group() as posting:
                    for person in people[1 : 1 + NGINX_POSTERS]:
                        posting.start_soon(post, person)
                answers.assert_all_ok(NGINX_POSTERS * NGINX_POSTS_EACH)
                stored = await cluster.stored_now(code)
                ids = [e.id for e in stored]
                for reader in reading:
                    await reader.wait_ids(ids)
                await anyio.sleep(0.5)
    messages = [e for e in stored if e.kind == "message"]
    keys = [f"{p}-{n}" for p in posters for n in range(NGINX_POSTS_EACH)]
    assert sorted(e.key or "" for e in messages) == sorted([*greedy_keys, "other", *keys])
    for n, reader in enumerate(reading):
        assert_exactly_once_in_order(reader.ids, ids, f"reader {n} through nginx")
    streams = [node.log().count(f"GET /rooms/{code}/events") for node in cluster.nodes]
    posts = [node.log().count(f"POST /rooms/{code}/messages") for node in cluster.nodes]
    assert sum(1 for count in streams if count) >= 2, f"streams per process: {streams}"
    assert sum(1 for count in posts if count) >= 2, f"posts per process: {posts}"


ROUNDS = 20


async def test_one_idempotency_key_posted_to_two_processes_at_once_stores_once(
    make_cluster: ClusterFactory,
) -> None:
    """The same message (same idempotency key) posted to A and B at the same moment,
    twenty times over: one message each time, both answers are successes (htmx 200 and
    a plain form's 303) naming the same entry, and a reader sees each message once."""
    cluster = make_cluster(2)
    a, b = cluster.urls
    async with browsers("Ana", "Bo") as (ana, bo):
        code = await ana.create_room(a)
        await bo.join(b, code)

        async def post(node: str, key: str, text: str, answers: dict[str, httpx.Response]) -> None:
            # htmx on A, a plain form on B: a 200 with a fragment and a 303 back to the room.
            answers[node] = await ana.say(node, code, text, key=key, htmx=node == a)

        async with bo.reader([b], code) as reader:
            for n in range(ROUNDS):
                answers: dict[str, httpx.Response] = {}
                async with anyio.create_task_group() as both:
                    for node in (a, b):
                        both.start_soon(post, node, f"twice-{n}", f"once {n}", answers)
                assert answers[a].status_code == 200, answers[a].text
                assert answers[b].status_code == 303, answers[b].text
                assert answers[a].headers["sala-entry-id"] == answers[b].headers["sala-entry-id"]
            stored = await cluster.stored_now(code)
            await reader.wait_ids([e.id for e in stored])
            await anyio.sleep(0.3)
    messages = [e for e in stored if e.kind == "message"]
    assert [(e.key, e.body) for e in messages] == [
        (f"twice-{n}", f"once {n}") for n in range(ROUNDS)
    ]
    assert_exactly_once_in_order(reader.ids, [e.id for e in stored], "reader on B")


CRASH_POSTS = 60


@pytest.mark.timeout(120)
async def test_a_killed_process_loses_nothing_and_makes_no_presence_noise(
    make_cluster: ClusterFactory,
) -> None:
    """SIGKILL process A while messages are being posted to it. Its reader reconnects to
    B with Last-Event-ID and gets every entry exactly once, in order; a post in flight to
    A, sent again to B with the same key, is stored once. Presence: a member still
    connected on C (whose tab on A died) and the member who moved make no join or leave;
    a member whose tab had closed on A just before leaves exactly once, within lease +
    sweep (+ margin); the member lists converge."""
    cluster = make_cluster(3)
    a, b, c = cluster.urls
    async with browsers("Ana", "Bo", "Cy", "Dora", "Eli") as (ana, bo, cy, dora, eli):
        code = await bo.create_room(b)
        for person in (ana, cy, dora, eli):
            await person.join(b, code)
        sent: list[tuple[str, int]] = []
        a_third_sent = anyio.Event()

        async def post_through_the_crash() -> None:
            node = a
            for n in range(CRASH_POSTS):
                key = f"crash-{n}"
                while True:
                    try:
                        response = await eli.say(node, code, f"message {n}", key=key)
                        break
                    except httpx.TransportError:
                        node = b  # A is gone: the same post, same key, to another process
                sent.append((key, response.status_code))
                if n == CRASH_POSTS // 3:
                    a_third_sent.set()
                await anyio.sleep(0.02)

        async with (
            bo.stream(b, code, after=0) as watcher,
            ana.reader([a, b], code) as moving,
            cy.stream(a, code) as cy_on_a,
            cy.stream(c, code) as cy_on_c,
        ):
            async with anyio.create_task_group() as posting:
                async with dora.stream(a, code):
                    await watcher.wait_for(joined("Ana", "Bo", "Cy", "Dora"))
                    posting.start_soon(post_through_the_crash)
                    await a_third_sent.wait()
                # Dora's tab has just closed: A dies while her grace is still running.
                await anyio.to_thread.run_sync(cluster.nodes[0].stop, signal.SIGKILL)
                killed = time.monotonic()
            await watcher.wait_for(
                left("Dora"), timeout=killed + LEAVE_AFTER_CRASH - time.monotonic()
            )
            await anyio.sleep(LEASE + SWEEP)  # every claim of A's has been swept by now
            stored = await cluster.stored_now(code)
            ids = [e.id for e in stored]
            await moving.wait_ids(ids)
            await watcher.wait_for(lambda s: set(ids) <= set(s.ids))
            await watcher.wait_for(
                lambda s: bool(s.presence) and s.presence[-1] == ["Ana", "Bo", "Cy"]
            )
            assert cy_on_a.ended and not cy_on_c.ended
        assert sent == [(f"crash-{n}", 200) for n in range(CRASH_POSTS)]
        messages = [e for e in stored if e.kind == "message"]
        assert [e.key for e in messages] == [f"crash-{n}" for n in range(CRASH_POSTS)]
        assert_exactly_once_in_order(moving.ids, ids, "reader moved from A to B")
        assert_exactly_once_in_order(watcher.ids, ids, "reader on B")
        assert moving.opened_on[0] == a and moving.opened_on[-1] == b
        assert presence_of(stored, "Ana") == ["join"]
        assert presence_of(stored, "Cy") == ["join"]
        assert presence_of(stored, "Bo") == ["join"]
        assert presence_of(stored, "Dora") == ["join", "leave"]
        assert presence_of(stored, "Eli") == []


@pytest.mark.timeout(120)
async def test_a_rolling_restart_moves_readers_without_presence_noise(
    make_cluster: ClusterFactory,
) -> None:
    """SIGTERM process A, as a rolling deploy does: it exits by itself, its readers
    reconnect to B with their cursor and miss nothing, and no join or leave is recorded
    for them; a member whose tab had just closed on A still leaves, once."""
    cluster = make_cluster(2)
    a, b = cluster.urls
    async with browsers("Ana", "Bo", "Cy", "Dora", "Eli") as (ana, bo, cy, dora, eli):
        code = await bo.create_room(b)
        for person in (ana, cy, dora, eli):
            await person.join(b, code)
        answers = Answers()
        some_sent = anyio.Event()

        async def post_steadily() -> None:
            for n in range(40):
                answers.add(await eli.say(b, code, f"during the deploy {n}"))
                if n == 10:
                    some_sent.set()
                await anyio.sleep(0.03)

        async with (
            bo.stream(b, code, after=0) as watcher,
            ana.reader([a, b], code) as ana_moving,
            cy.reader([a, b], code) as cy_moving,
        ):
            async with anyio.create_task_group() as posting:
                async with dora.stream(a, code):
                    await watcher.wait_for(joined("Ana", "Bo", "Cy", "Dora"))
                    posting.start_soon(post_steadily)
                    await some_sent.wait()
                await anyio.to_thread.run_sync(cluster.nodes[0].stop)
                stopped = time.monotonic()
            # It ended by itself (uvicorn re-raises the SIGTERM it handled once shut down);
            # one that hung would have been SIGKILLed by the harness.
            assert cluster.nodes[0].exit_code in (0, -signal.SIGTERM), cluster.nodes[0].log()
            await watcher.wait_for(
                left("Dora"), timeout=stopped + LEAVE_AFTER_CRASH - time.monotonic()
            )
            await anyio.sleep(LEASE + SWEEP)  # A's lease has run out and been swept
            stored = await cluster.stored_now(code)
            ids = [e.id for e in stored]
            for reader in (ana_moving, cy_moving):
                await reader.wait_ids(ids)
            await anyio.sleep(0.3)
        answers.assert_all_ok(40)
        for name, reader in (("Ana", ana_moving), ("Cy", cy_moving)):
            assert_exactly_once_in_order(reader.ids, ids, f"{name}'s reader")
            assert reader.opened_on[0] == a and reader.opened_on[-1] == b, reader.opened_on
            assert presence_of(stored, name) == ["join"], name
        assert presence_of(stored, "Dora") == ["join", "leave"]
        assert presence_of(stored, "Bo") == ["join"]


LISTENER_POSTS = 150  # per poster; one poster on each process


@pytest.mark.timeout(120)
async def test_listener_connections_cut_by_postgresql_lose_nothing(
    make_cluster: ClusterFactory,
) -> None:
    """pg_terminate_backend on every process's LISTEN connection (found by its
    application_name), twice, while messages are posted on both processes: every reader
    gets every entry exactly once, in order, and /healthz/detail counts the reconnects."""
    cluster = make_cluster(2, limits="off")
    a, b = cluster.urls
    async with browsers("Ana", "Bo", "Cy", "Dan") as (ana, bo, cy, dan):
        code = await ana.create_room(a)
        for person, node in ((bo, b), (cy, a), (dan, b)):
            await person.join(node, code)
        answers = Answers()
        cut: list[int] = []

        async def post(person: Browser, node: str) -> None:
            for n in range(LISTENER_POSTS):
                answers.add(await person.say(node, code, f"{person.name} {n}"))
                await anyio.sleep(0.005)

        def cut_when_listening() -> int:
            for node in cluster.nodes:
                cluster.wait_detail(node, lambda d: d["broker"]["connected"] is True)
            return cluster.terminate_listeners()

        async def cut_listeners() -> None:
            for share in (1 / 3, 2 / 3):
                while len(answers) < share * 2 * LISTENER_POSTS:
                    await anyio.sleep(0.01)
                cut.append(await anyio.to_thread.run_sync(cut_when_listening))

        async with cy.reader([a], code) as on_a, dan.reader([b], code) as on_b:
            async with anyio.create_task_group() as posting:
                posting.start_soon(post, ana, a)
                posting.start_soon(post, bo, b)
                posting.start_soon(cut_listeners)
            stored = await cluster.stored_now(code)
            ids = [e.id for e in stored]
            for reader in (on_a, on_b):
                await reader.wait_ids(ids)
            await anyio.sleep(0.5)
        assert cut == [2, 2], "each process has one LISTEN connection named sala-listen-<node>"
        answers.assert_all_ok(2 * LISTENER_POSTS)
        assert_exactly_once_in_order(on_a.ids, ids, "reader on A")
        assert_exactly_once_in_order(on_b.ids, ids, "reader on B")
        for server in cluster.nodes:
            detail = cluster.wait_detail(
                server,
                lambda d: d["broker"]["connected"] is True and d["broker"]["reconnects"] >= 2,
            )
            assert detail["status"] == "ok"


BIG_TEXTS = [
    "😀" * 2000,  # 2,000 characters, 8,000 bytes of UTF-8
    "🎉" * 1000 + "&<>\"'" * 200,  # 6,000 bytes; 8,600 once HTML-escaped
    "after the big ones",
]


async def test_a_message_over_8000_bytes_arrives_intact_on_another_process(
    make_cluster: ClusterFactory,
) -> None:
    """A NOTIFY payload must stay under 8,000 bytes. Messages of 2,000 four-byte emoji,
    and of emoji mixed with characters that HTML and JSON escape, posted on A reach
    readers on B and A intact (escaped in the HTML), in order with a short one after."""
    cluster = make_cluster(2)
    a, b = cluster.urls
    assert len(BIG_TEXTS[0].encode()) >= 8000 and len(BIG_TEXTS[1]) == 2000
    async with browsers("Ana", "Bo") as (ana, bo):
        code = await ana.create_room(a)
        await bo.join(b, code)
        async with bo.stream(b, code, after=0) as on_b, ana.stream(a, code, after=0) as on_a:
            await on_b.wait_for(joined("Ana", "Bo"))
            for text in BIG_TEXTS:
                assert (await ana.say(a, code, text)).status_code == 200
            for stream in (on_b, on_a):
                await stream.wait_text(BIG_TEXTS[-1])
            await anyio.sleep(0.3)
        stored = await cluster.stored_now(code)
    assert [e.body for e in stored if e.kind == "message"] == BIG_TEXTS
    for stream in (on_b, on_a):
        assert [e.text for e in stream.entries if e.kind == "message"] == BIG_TEXTS
        assert_exactly_once_in_order(stream.ids, [e.id for e in stored], "reader")
    mixed = next(e for e in on_b.events if e.entry is not None and "🎉" in e.data)
    assert "&amp;&lt;&gt;" in mixed.data and "&<>" not in mixed.data


async def test_three_processes_starting_at_once_upgrade_an_old_database(
    make_cluster: ClusterFactory, postgres_url: str
) -> None:
    """A database made by the schema from before migrations is upgraded by three
    processes starting at the same moment: all of them serve, one of them migrates,
    every entry is kept, every room is numbered 1..n in id order, and an old room works
    across processes."""
    legacy = _make_legacy(postgres_url)
    try:
        before = _rows(legacy)
        cluster = make_cluster(3)
        assert _rows(legacy) == before
        assert _versions(legacy) == [HEAD]
    finally:
        legacy.dispose()
    upgraded = [node for node in cluster.nodes if "upgraded from 0001" in node.log()]
    assert len(upgraded) == 1, "one process migrates; the others find it done"
    rows = cluster.query(
        "SELECT r.code, e.seq FROM entry e JOIN room r ON r.id = e.room_id ORDER BY e.id"
    )
    numbered: dict[str, list[int]] = {}
    for room_code, seq in rows:
        numbered.setdefault(room_code, []).append(seq)
    for room_code, last_seq in cluster.query("SELECT code, last_seq FROM room"):
        seqs = numbered.get(room_code, [])
        assert seqs == list(range(1, len(seqs) + 1)) and last_seq == len(seqs), room_code
    a, b, c = cluster.urls
    async with browsers("Dora") as (dora,):
        await dora.join(a, "abcdef")
        async with dora.stream(b, "ABCDEF", after=0) as on_b:
            await on_b.wait_for(joined("Dora"))
            assert (await dora.say(c, "ABCDEF", "after the upgrade")).status_code == 200
            await on_b.wait_text("after the upgrade")
            await anyio.sleep(0.3)
        stored = await cluster.stored_now("ABCDEF")
    assert [e.body for e in stored if e.kind == "message"] == [
        "olá <b>mundo</b>",
        "linha 1\nlinha 2 🎉",
        "sem chave",
        "after the upgrade",
    ]
    assert_exactly_once_in_order(on_b.ids, [e.id for e in stored], "reader of the old room")


SOAK_ROOMS = 4
SOAK_POSTERS = 12
SOAK_POSTS_EACH = 30
SOAK_WANDERERS = 4


@pytest.mark.timeout(180)
async def test_random_posting_to_many_rooms_from_three_processes_never_deadlocks(
    make_cluster: ClusterFactory,
) -> None:
    """People in four rooms post at random to random rooms through random processes
    (so one process's batches hold several rooms), while others open and close streams
    in random rooms on random processes (joins and leaves lock rooms too): every answer
    is a success, no log mentions a deadlock, PostgreSQL counted none, and every room
    is numbered without a gap."""
    cluster = make_cluster(3, limits="off")
    nodes = cluster.urls
    rng = random.Random(20260101)
    names = [f"Poster {n}" for n in range(SOAK_POSTERS)]
    wanderer_names = [f"Wanderer {n}" for n in range(SOAK_WANDERERS)]
    async with browsers("Host", *names, *wanderer_names) as people:
        host = people[0]
        codes = [await host.create_room(rng.choice(nodes)) for _ in range(SOAK_ROOMS)]
        for person in people[1:]:
            for code in codes:
                await person.join(rng.choice(nodes), code)
        answers = Answers()
        stream_answers: list[int] = []
        done = anyio.Event()

        async def post(person: Browser, seed: int) -> None:
            own = random.Random(seed)
            for n in range(SOAK_POSTS_EACH):
                node, code = own.choice(nodes), own.choice(codes)
                answers.add(await person.say(node, code, f"{person.name} {n}"))

        async def wander(person: Browser, seed: int) -> None:
            own = random.Random(seed)
            while not done.is_set():
                async with person.stream(own.choice(nodes), own.choice(codes)) as tab:
                    assert tab.response is not None
                    stream_answers.append(tab.response.status_code)
                    await anyio.sleep(own.uniform(0.05, 0.4))

        async with anyio.create_task_group() as wandering:
            for n, person in enumerate(people[1 + SOAK_POSTERS :]):
                wandering.start_soon(wander, person, 1000 + n)
            async with anyio.create_task_group() as posting:
                for n, person in enumerate(people[1 : 1 + SOAK_POSTERS]):
                    posting.start_soon(post, person, n)
            done.set()
    answers.assert_all_ok(SOAK_POSTERS * SOAK_POSTS_EACH)
    assert stream_answers and set(stream_answers) == {200}
    stored = {code: await cluster.stored_now(code) for code in codes}
    for code, entries in stored.items():
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), code
    assert sum(1 for es in stored.values() for e in es if e.kind == "message") == len(answers)
    logs = cluster.logs().lower()
    assert "deadlock" not in logs
    assert " 500 " not in logs and " 503 " not in logs
    cluster.stop()  # every backend reports its counters as it ends
    [(deadlocks,)] = cluster.query(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    assert deadlocks == 0


TWO_TAB_MEMBERS = ["Ana", "Bia", "Caio", "Duda"]


@pytest.mark.timeout(120)
async def test_tabs_on_two_processes_closed_together_leave_once_and_moving_is_silent(
    make_cluster: ClusterFactory,
) -> None:
    """Members each with one tab on A and one on B who close both together leave exactly
    once (the two processes release them at the same moment). A tab closed on A and
    reopened on B within the grace records nothing at all; closing that one leaves once."""
    cluster = make_cluster(2)
    a, b = cluster.urls
    async with browsers("Host", *TWO_TAB_MEMBERS, "Eva") as people:
        host, *two_tabs, eva = people
        code = await host.create_room(a)
        for person in [*two_tabs, eva]:
            await person.join(b, code)
        async with host.stream(a, code, after=0) as watcher:
            async with contextlib.AsyncExitStack() as tabs:
                for person in two_tabs:
                    await tabs.enter_async_context(person.stream(a, code))
                    await tabs.enter_async_context(person.stream(b, code))
                await watcher.wait_for(joined(*TWO_TAB_MEMBERS))
            # Both tabs of every member closed just now, within milliseconds.
            await watcher.wait_for(left(*TWO_TAB_MEMBERS), timeout=GRACE + LEASE + 8)
            await anyio.sleep(GRACE + SWEEP)  # a second leave would be here by now
            stored = await cluster.stored_now(code)
            for name in TWO_TAB_MEMBERS:
                assert presence_of(stored, name) == ["join", "leave"], name

            async with eva.stream(a, code):
                await watcher.wait_for(joined("Eva"))
            async with eva.stream(b, code) as moved:
                await moved.wait_for(lambda s: len(s.events) >= 1)
                await anyio.sleep(2 * GRACE + SWEEP)  # A's grace for her ran out long ago
                assert presence_of(await cluster.stored_now(code), "Eva") == ["join"]
                await watcher.wait_for(
                    lambda s: bool(s.presence) and s.presence[-1] == ["Eva", "Host"]
                )
            await watcher.wait_for(left("Eva"), timeout=GRACE + LEASE + 8)
            await anyio.sleep(GRACE + SWEEP)
            stored = await cluster.stored_now(code)
        assert presence_of(stored, "Eva") == ["join", "leave"]
        assert presence_of(stored, "Host") == ["join"]
        assert_exactly_once_in_order(watcher.ids, [e.id for e in stored], "watcher")


def _directives(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_the_cluster_nginx_config_is_the_single_process_one_with_upstreams() -> None:
    """deploy/nginx-cluster.conf keeps every directive of deploy/nginx.conf, in the same
    order (limits, timeouts, the streams' settings), and its upstream spreads requests
    over the listed processes with least_conn, without any stickiness."""
    single = _directives(ROOT / "deploy" / "nginx.conf")
    cluster = _directives(ROOT / "deploy" / "nginx-cluster.conf")
    remaining = iter(cluster)
    missing = [
        line
        for line in single
        if not line.startswith("server 127.0.0.1:") and line not in remaining
    ]
    assert missing == [], "nginx-cluster.conf lost (or reordered) these"
    upstream = cluster[
        cluster.index("upstream sala {") : cluster.index("}", cluster.index("upstream sala {"))
    ]
    assert upstream[1] == "least_conn;"
    assert [line for line in upstream if line.startswith("server ")] == [
        f"server 127.0.0.1:800{n};" for n in (1, 2, 3)
    ]
    assert not any(word in line for line in cluster for word in ("ip_hash", "sticky", "hash $"))
