"""`python -m web --host H --port P`: serve Sala with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from web.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web", description="Serve Sala.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from web.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(Settings.from_env()),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
        proxy_headers=True,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
