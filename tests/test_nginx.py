"""Sala behind a real nginx, with the shipped deploy/nginx.conf."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.client import Person
from tests.conftest import ROOT, Server, free_port

pytestmark = pytest.mark.anyio

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture
def nginx(server: Server, tmp_path: Path) -> Iterator[str]:
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is missing under CI=true: .ci/run should have installed it")
        pytest.skip("no nginx here (install Debian's nginx-light to run this test)")
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.port};")
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "sala.conf").write_text(site)
    temp = tmp_path / "temp"
    temp.mkdir()
    # Compression on everywhere, as many setups have it: the stream must still go through raw.
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    gzip on;
    gzip_types text/event-stream text/css application/javascript;
    include {tmp_path}/sala.conf;
}}
"""
    )
    proc = subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log = (
                    (tmp_path / "error.log").read_text()
                    if (tmp_path / "error.log").exists()
                    else ""
                )
                raise RuntimeError(f"nginx did not start: {log}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


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
