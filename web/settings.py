"""Settings: the only place that reads the environment."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///sala.db"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        DEFAULT_DATABASE_URL,
        "SQLAlchemy URL of the database. SQLite by default (./sala.db); "
        "postgresql://user@host/db for PostgreSQL (through psycopg 3, same models).",
    )
    secret_key: str = _setting(
        "",
        "Key that signs the session cookie. When unset, one is generated once and "
        "kept in a file beside the database (sala.db.secret).",
    )
    heartbeat_seconds: float = _setting(
        15.0, "A heartbeat comment goes down every stream at least this often."
    )
    stream_max_seconds: float = _setting(
        300.0,
        "A stream ends itself after about this long (jittered down by up to 20%); "
        "the client reconnects with its cursor.",
    )
    presence_grace_seconds: float = _setting(
        5.0,
        "A member leaves when their last stream has been closed for this long, so a "
        "refresh or a reconnect makes no join/leave noise.",
    )
    broker_url: str = _setting(
        "memory://", "Where events fan out. Only memory:// (one process) for now."
    )
    subscriber_queue_size: int = _setting(
        1000,
        "Events a stream may have waiting before it counts as too slow and is "
        "disconnected (it resumes from its cursor).",
    )
    send_timeout_seconds: float = _setting(
        30.0,
        "A stream whose client has not taken a write for this long is closed (it resumes "
        "from its cursor), so a stalled reader holds nothing for long.",
    )
    rate_limit_burst: int = _setting(
        60, "Messages a member may send in a burst before answers become 429."
    )
    rate_limit_per_second: float = _setting(
        10.0, "Messages per second a member regains after a burst; 0 turns the limit off."
    )
    poll_wait_seconds: float = _setting(
        20.0, "In poll mode (?mode=poll) a request with nothing to send ends after this long."
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw.strip() == "":
                continue
            kind: type[Any] = type(f.default)
            try:
                values[f.name] = kind(raw.strip())
            except ValueError as exc:
                raise ValueError(f"{env_name(f.name)} must be a {kind.__name__}: {raw!r}") from exc
        settings = cls(**values)
        if not settings.secret_key:
            settings = cls(**{**values, "secret_key": _stored_secret(settings.database_url)})
        return settings


def env_name(field_name: str) -> str:
    return "SALA_" + field_name.upper()


def documented() -> list[tuple[str, str, Any]]:
    """(variable, help, default) for every setting, for the README and its test."""
    return [(env_name(f.name), f.metadata["help"], f.default) for f in fields(Settings)]


def _secret_path(database_url: str) -> Path:
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        return Path(database_url.removeprefix("sqlite:///") + ".secret")
    return Path("sala.secret")


def _stored_secret(database_url: str) -> str:
    path = _secret_path(database_url)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Created exclusively and private: two processes starting together agree on one key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key
