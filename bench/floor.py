"""The floor under Sala's streams: uvicorn, as `python -m web` runs it (httptools,
uvloop), serving an ASGI app that does nothing but answer a stream with its first
event. The `idle` scenario measures it beside Sala and the bare asyncio server:
what opening a stream costs in the HTTP server alone, before any of Sala's own work.

    uvicorn bench.floor:app --http httptools --loop uvloop
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

_HEAD = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store")]
_FIRST = b": floor\nretry: 1000\ndata: hello\n\n"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if not scope["path"].endswith("/events"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEAD})
    await send({"type": "http.response.body", "body": _FIRST, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
