"""`python -m web --host H --port P`: serve Sala with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn
from uvicorn.supervisors import Multiprocess

from web.server import config
from web.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web", description="Serve Sala.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="ADDRESSES",
        help="Comma-separated addresses or networks of the proxies (nginx) whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed. Without it they are ignored "
        "and a request comes from its TCP peer. '*' believes any peer and takes the first "
        "address in the header, which a client behind nginx can forge.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Processes serving one port, each a node of its own. More than one needs "
        "SALA_BROKER_URL=postgresql://…",
    )
    args = parser.parse_args(argv)

    from web.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.exit(2, f"sala: {exc}\n")
    if args.workers < 1:
        parser.exit(2, "sala: --workers must be 1 or more.\n")
    if args.workers > 1 and settings.broker_url.startswith("memory:"):
        parser.exit(
            2,
            "sala: --workers above 1 needs SALA_BROKER_URL=postgresql://… (memory:// fans "
            "out inside one process only, so the workers would not see each other's messages).\n",
        )
    try:
        app = create_app(settings)
    except ValueError as exc:
        parser.exit(2, f"sala: {exc}\n")
    settings_for_uvicorn = config(
        app if args.workers == 1 else "web.app:app",
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        header_timeout=settings.header_timeout_seconds,
        forwarded_allow_ips=args.forwarded_allow_ips,
        workers=args.workers,
    )
    if args.workers == 1:
        uvicorn.Server(settings_for_uvicorn).run()
        return
    # Each worker is its own process (and node): it builds the app from the environment.
    sock = settings_for_uvicorn.bind_socket()
    Multiprocess(settings_for_uvicorn, sockets=[sock]).run()


if __name__ == "__main__":
    main()
