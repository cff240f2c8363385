"""A real nginx (Debian's) serving a site config for a test, from its own directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def require_nginx() -> str:
    """nginx's path; skips the test without it (fails it under CI=true)."""
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is missing under CI=true: .ci/run should have installed it")
        pytest.skip("no nginx here (install Debian's nginx-light to run this test)")
    return NGINX


@contextlib.contextmanager
def run_nginx(
    workdir: Path, site: str, port: int, *, worker_connections: int = 256, http_extra: str = ""
) -> Iterator[str]:
    """nginx with `site` included in its http block, listening on `port`; its URL once
    it answers /healthz through to Sala."""
    nginx = require_nginx()
    (workdir / "sala.conf").write_text(site)
    temp = workdir / "temp"
    temp.mkdir()
    (workdir / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    {http_extra}
    include {workdir}/sala.conf;
}}
"""
    )
    proc = subprocess.Popen([nginx, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)])
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
                log = workdir / "error.log"
                raise RuntimeError(
                    f"nginx did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
