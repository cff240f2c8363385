"""The same app on PostgreSQL (SALA_DATABASE_URL=postgresql://…), through the same models."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from tests.client import Person
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

PG_ADMIN_URL = os.environ.get("SALA_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL for this test, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable under CI=true ({PG_ADMIN_URL}): {exc}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL} ({exc})")
    name = f"sala_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_chat_history_and_resume_on_postgresql(
    make_server: ServerFactory, postgres_url: str
) -> None:
    server: Server = make_server(database_url=postgres_url)
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with bo.stream(code) as stream:
            await stream.wait_entries(1)
            await ana.say(code, "<b>on postgres</b>", key="pg-1")
            await ana.say(code, "<b>on postgres</b>", key="pg-1")  # stored once
            await ana.say(code, "second")
            await stream.wait_text("second")
        cursor = stream.ids[0]
        server.restart()
        page = await bo.page(code)
        assert page.status_code == 200 and "&lt;b&gt;on postgres&lt;/b&gt;" in page.text
        async with bo.stream(code, last_event_id=cursor) as again:
            await again.wait_text("second")
        texts = [e.text for e in again.entries if e.kind == "message"]
        assert texts == ["<b>on postgres</b>", "second"]
        assert again.ids == sorted(set(again.ids)) and all(i > cursor for i in again.ids)
        for entry in again.entries:
            assert entry.time.endswith("Z")


async def test_hostile_numbers_and_codes_are_4xx_on_postgresql(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """Bug: `?before=2147483648` overflowed PostgreSQL's INTEGER, and a NUL in a room
    code reached it ("A string literal cannot contain NUL"): both were 500s.
    Fix: ids have a ceiling and codes match their pattern before any query."""
    server: Server = make_server(database_url=postgres_url)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        assert len(code) == 8  # the migration widened room.code
        await ana.say(code, "kept")
        for query in ("before=2147483648", "before=9223372036854775808"):
            assert (await ana.client.get(f"/rooms/{code}/messages?{query}")).status_code == 400
        assert (await ana.client.get(f"/rooms/{code}/events?after=2147483648")).status_code == 400
        for raw in ("ABCD%00EFGH", "%00"):
            assert (await ana.client.get(f"/rooms/{raw}")).status_code == 404
        joined = await ana.client.post("/", data={"name": "Ana", "code": "AB\x00CDEFG"})
        assert joined.status_code == 404
        history = await ana.client.get(f"/rooms/{code}/messages")
        assert history.status_code == 200 and "kept" in history.text
