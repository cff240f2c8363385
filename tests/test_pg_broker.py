"""The PostgreSQL broker on one machine: `--workers`, the database going away and back.

(Several separate processes, nginx in front of them and process faults are in
tests/test_cluster.py.)
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.client import Person, eventually
from tests.conftest import Server, ServerFactory
from tests.test_postgres import PG_ADMIN_URL, postgres_url

pytestmark = pytest.mark.anyio
__all__ = ["postgres_url"]  # the fixture, used by name

FAST = {
    "node_heartbeat_seconds": "0.5",
    "node_lease_seconds": "2",
    "sweep_seconds": "0.5",
    "broker_ping_seconds": "0.5",
    "broker_reconnect_max_seconds": "0.5",
    "tail_check_seconds": "1",
    "presence_grace_seconds": "1",
}


def shared(url: str) -> dict[str, str]:
    return {"database_url": url, "broker_url": url, "secret_key": "one-key-for-all", **FAST}


def admin_execute(*statements: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def detail(server: Server) -> dict[str, object]:
    data: dict[str, object] = httpx.get(server.url + "/healthz/detail", timeout=5).json()
    return data


async def test_workers_are_nodes_of_their_own_and_deliver_to_each_other(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """`python -m web --workers 3` runs three processes on one port, each a node with its
    own lease; whichever worker takes a post, every stream gets it once."""
    import psycopg

    server = make_server(args=("--workers", "3"), **shared(postgres_url))

    def live_nodes() -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT count(*) FROM sala_node WHERE expires_at > now()")
            found = row.fetchone()
            return int(found[0]) if found else 0

    with anyio.fail_after(20):
        while live_nodes() < 3:
            await anyio.sleep(0.1)
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        streams = [ana.stream(code), bo.stream(code), bo.stream(code)]
        async with streams[0] as s1, streams[1] as s2, streams[2] as s3:
            for n in range(30):
                speaker = ana if n % 2 else bo
                # A new connection each time: the kernel spreads them over the workers.
                speaker.client.headers["Connection"] = "close"
                response = await speaker.say(code, f"m{n}", key=f"k{n}")
                assert response.status_code == 200, response.text
            for stream in (s1, s2, s3):
                await stream.wait_text("m29", timeout=15)
                texts = [e.text for e in stream.entries if e.kind == "message"]
                assert texts == [f"m{n}" for n in range(30)]
                assert stream.ids == sorted(set(stream.ids))


async def test_database_outage_gives_503_in_words_then_everything_arrives_once(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """The database refuses connections (and every session to it is cut, the LISTEN
    connection included): a post answers 503 in words and stores nothing; the open
    stream stays open. Once it is back, the listener reconnects, the retried post
    (same key) is stored once, and the stream gets it with no duplicate."""
    server = make_server(**shared(postgres_url))
    database = postgres_url.rsplit("/", 1)[1]
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code) as stream:
            await ana.say(code, "before", key="k-before")
            await stream.wait_text("before")
            admin_execute(
                f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false',
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
            )
            try:
                refused = await ana.say(code, "during", key="k-during")
                assert refused.status_code == 503, refused.text
                assert "cannot reach its database" in refused.text
                assert refused.headers["retry-after"]
                page = await ana.say(code, "during", key="k-during", htmx=False)
                assert page.status_code == 503 and "try again" in page.text
                await anyio.sleep(1.5)  # several failed pings and reconnects
            finally:
                admin_execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

            def reconnected(data: dict[str, object]) -> bool:
                broker = data["broker"]
                assert isinstance(broker, dict)
                return bool(broker["connected"]) and int(broker["reconnects"]) >= 1

            await eventually(lambda: anyio.to_thread.run_sync(detail, server), reconnected, 20)
            stored = await ana.say(code, "during", key="k-during")
            assert stored.status_code == 200, stored.text
            again = await ana.say(code, "during", key="k-during")
            assert again.headers["sala-entry-id"] == stored.headers["sala-entry-id"]
            await ana.say(code, "after", key="k-after")
            await stream.wait_text("after", timeout=15)
        texts = [e.text for e in stream.entries if e.kind == "message"]
        assert texts == ["before", "during", "after"]
        assert stream.ids == sorted(set(stream.ids))


def kinds(postgres_url: str) -> list[tuple[str, str]]:
    """(kind, author name) of every entry, in the stored order."""
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT kind, author_name FROM entry ORDER BY room_id, seq")
        return [(str(kind), str(name)) for kind, name in rows]


async def test_a_stuck_process_is_swept_and_comes_back_without_losing_anything(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """B stops (SIGSTOP) for longer than its lease: A sweeps it (its LISTEN backend is
    ended, so it cannot pin the notification queue; its member leaves once). When B
    continues, it registers again, claims its member back (one join) and its open
    stream gets, in order, everything posted while it was stopped."""
    import signal

    a = make_server(**shared(postgres_url))
    b = make_server(**shared(postgres_url))
    b_node = str(detail(b)["node_id"])
    async with Person(a.url, "Ana") as ana, Person(b.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with bo.stream(code) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
            assert b.proc is not None
            b.proc.send_signal(signal.SIGSTOP)
            try:

                def listener_gone() -> bool:
                    import psycopg

                    with psycopg.connect(postgres_url) as conn:
                        row = conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (f"sala-listen-{b_node}",),
                        ).fetchone()
                        return row is not None and row[0] == 0

                with anyio.fail_after(20):
                    while not listener_gone():
                        await anyio.sleep(0.2)
                await eventually(
                    lambda: anyio.to_thread.run_sync(kinds, postgres_url),
                    lambda rows: ("leave", "Bo") in rows,
                    10,
                )
                for n in range(5):
                    assert (await ana.say(code, f"while stopped {n}")).status_code == 200
                # Nothing pins the queue: what is left is at most the page being written.
                usage = detail(a)["broker"]
                assert isinstance(usage, dict) and usage["notification_queue_usage"] < 1e-5
            finally:
                b.proc.send_signal(signal.SIGCONT)
            await stream.wait_text("while stopped 4", timeout=20)
            texts = [e.text for e in stream.entries if e.kind == "message"]
            assert texts == [f"while stopped {n}" for n in range(5)]
            assert stream.ids == sorted(set(stream.ids))
            await eventually(
                lambda: anyio.to_thread.run_sync(kinds, postgres_url),
                lambda rows: (
                    [r for r in rows if r[1] == "Bo"]
                    == [("join", "Bo"), ("leave", "Bo"), ("join", "Bo")]
                ),
                10,
            )


async def test_changes_reach_another_process_as_the_message_now(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """An edit, a reaction and a reply made on A reach a reader on B, rendered from the
    message's state in the database (a change's notification carries ids only)."""
    a = make_server(**shared(postgres_url))
    b = make_server(**shared(postgres_url))
    async with Person(a.url, "Ana") as ana, Person(b.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with bo.stream(code) as stream:
            posted = await ana.say(code, "first try")
            message = posted.headers["sala-entry-id"]
            edit = await ana.client.post(
                f"/rooms/{code}/messages/{message}/edit",
                data={"text": "second try"},
                headers={"HX-Request": "true"},
            )
            assert edit.status_code == 200
            react = await ana.client.post(
                f"/rooms/{code}/messages/{message}/reactions",
                data={"emoji": "🙏"},
                headers={"HX-Request": "true"},
            )
            reply = await ana.client.post(
                f"/rooms/{code}/messages",
                data={"text": "and a reply", "reply_to": message},
                headers={"HX-Request": "true"},
            )
            assert react.status_code == 200 and reply.status_code == 200
            await stream.wait_text("and a reply")
            changed = [
                e for e in stream.events if e.entry is not None and e.entry.has_attr("hx-swap-oob")
            ]
            assert [e.id for e in changed] == [
                edit.headers["sala-entry-id"],
                react.headers["sala-entry-id"],
            ]
            assert "second try" in changed[0].data and "edited" in changed[0].data
            assert "🙏" in changed[1].data
            quoted = next(e for e in stream.events if e.id == reply.headers["sala-entry-id"])
            assert "second try" in quoted.data and 'href="#entry-' in quoted.data
