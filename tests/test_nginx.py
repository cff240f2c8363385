"""Sala behind a real nginx, with the shipped deploy/nginx.conf."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.client import Person
from tests.conftest import ROOT, Server, free_port
from tests.nginx import require_nginx, run_nginx

pytestmark = pytest.mark.anyio


@pytest.fixture
def nginx(server: Server, tmp_path: Path) -> Iterator[str]:
    require_nginx()
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.port};")
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    # Compression on everywhere, as many setups have it: the stream must still go through raw.
    gzip = "gzip on;\n    gzip_types text/event-stream text/css application/javascript;"
    with run_nginx(tmp_path, site, port, http_extra=gzip) as url:
        yield url


async def test_events_arrive_live_through_nginx(server: Server, nginx: str) -> None:
    async with Person(nginx, "Ana") as ana, Person(nginx, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        headers = {"Accept-Encoding": "gzip"}
        async with bo.stream(code, headers=headers) as stream:
            assert stream.response is not None
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in stream.response.headers
            await stream.wait_for(lambda s: len(s.entries) >= 1)
            for n in range(3):
                await ana.say(code, f"through nginx {n}")
                # Each one shows up while the stream is still open: live, not at the end.
                await stream.wait_text(f"through nginx {n}", timeout=5)
                assert not stream.ended
        texts = [e.text for e in stream.entries if e.kind == "message"]
        assert texts == [f"through nginx {n}" for n in range(3)]


def _probe() -> str:
    return f"/healthz?probe={uuid.uuid4().hex}"


def _reached_sala(server: Server, path: str, *, control: str) -> bool:
    """Whether Sala logged a request for `path`; `control`, requested after it, must show."""
    deadline = time.monotonic() + 5
    while control not in server.log():
        assert time.monotonic() < deadline, f"Sala never logged {control}"
        time.sleep(0.05)
    return path in server.log()


def test_a_body_over_32k_is_refused_by_nginx(server: Server, nginx: str) -> None:
    """Bug: nginx read and forwarded bodies of up to 1 MB to Sala, whose forms are a few KB.
    Fix: client_max_body_size 32k; nginx answers 413 and Sala never sees the request."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=nginx, headers=form) as client:
        too_big, small = _probe(), _probe()
        assert client.post(too_big, content=b"text=" + b"a" * 40_000).status_code == 413
        client.post(small, content=b"text=" + b"a" * 20_000)
        control = _probe()
        assert client.get(control).status_code == 200
    assert not _reached_sala(server, too_big, control=control)
    assert _reached_sala(server, small, control=control)


def test_unsafe_requests_are_rate_limited_per_address_but_reads_are_not(
    server: Server, nginx: str
) -> None:
    """Bug: one address could post as fast as it liked, every post reaching Sala.
    Fix: limit_req on unsafe methods only (20/s, bursts of 100) answers 429 in words with
    Retry-After; a class behind one address stays well inside it, and reads never count."""
    with httpx.Client(base_url=nginx) as client:
        answers = [client.post("/healthz", content=b"x=1") for _ in range(250)]
        limited = [n for n, r in enumerate(answers) if "from your address" in r.text]
        assert limited, "no request was limited"
        assert limited[0] >= 100, "a burst of 100 must go through"
        for n in limited:
            assert answers[n].status_code == 429
            assert answers[n].headers["retry-after"] == "1"
        # Over its limit for posts, the same address still reads.
        assert all(client.get("/healthz").status_code == 200 for _ in range(150))
