"""Client addresses: X-Forwarded-For counts only from proxies named by --forwarded-allow-ips.

The address the app sees is read from outside, in uvicorn's access log line.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx

from tests.conftest import Server, ServerFactory


def _client_address_seen(server: Server, forwarded_for: str) -> str:
    path = f"/healthz?probe={uuid.uuid4().hex}"
    response = httpx.get(server.url + path, headers={"X-Forwarded-For": forwarded_for})
    assert response.status_code == 200
    line = re.compile(r"(\S+) - \"GET " + re.escape(path) + r" HTTP/1\.1\" 200")
    deadline = time.monotonic() + 5
    while (found := line.search(server.log())) is None:
        assert time.monotonic() < deadline, f"no access log line for {path}:\n{server.log()}"
        time.sleep(0.05)
    host, _, _port = found.group(1).rpartition(":")
    return host


def test_x_forwarded_for_is_ignored_without_forwarded_allow_ips(
    make_server: ServerFactory,
) -> None:
    """Bug: the server trusted X-Forwarded-For from 127.0.0.1 by default, so anything
    connecting from the machine itself chose the address its per-client limits count.
    Fix: proxy headers are believed only with --forwarded-allow-ips; otherwise a
    request comes from its TCP peer."""
    server = make_server()
    assert _client_address_seen(server, "203.0.113.9") == "127.0.0.1"


def test_x_forwarded_for_names_the_client_behind_a_listed_proxy(
    make_server: ServerFactory,
) -> None:
    """Bug (guarded against): behind nginx every client would count as nginx's address.
    Fix: --forwarded-allow-ips names the proxy; the client is the last address it added,
    not one the client wrote into the header itself."""
    server = make_server(args=["--forwarded-allow-ips", "127.0.0.1"])
    assert _client_address_seen(server, "203.0.113.9") == "203.0.113.9"
    # What nginx's $proxy_add_x_forwarded_for sends when the client forged a header.
    assert _client_address_seen(server, "198.51.100.7, 203.0.113.9") == "203.0.113.9"
