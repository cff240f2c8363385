"""`python -m web --host H --port P`: serve Sala with uvicorn."""

from __future__ import annotations

import argparse
import logging

from web.server import serve
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
    args = parser.parse_args(argv)

    from web.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    serve(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        header_timeout=settings.header_timeout_seconds,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )


if __name__ == "__main__":
    main()
