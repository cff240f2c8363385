"""Settings: the only place that reads the environment."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
        90.0,
        "A member leaves when their last stream has been closed for this long, so a "
        "refresh, a reconnect or a phone locking its screen for a minute makes no "
        "join/leave noise (the Leave button records an exit at once).",
    )
    broker_url: str = _setting(
        "memory://",
        "Where events fan out: memory:// (one process) or postgresql://… (several processes "
        "on one PostgreSQL database, through LISTEN/NOTIFY: usually the same database as "
        "SALA_DATABASE_URL, over a direct connection, not a transaction-pooling proxy).",
    )
    node_heartbeat_seconds: float = _setting(
        5.0, "With the PostgreSQL broker: each process renews its lease this often."
    )
    node_lease_seconds: float = _setting(
        15.0,
        "With the PostgreSQL broker: the members held by a process that stopped renewing "
        "its lease for this long are released by the others (each leaves once).",
    )
    sweep_seconds: float = _setting(
        5.0, "With the PostgreSQL broker: how often processes look for stopped ones."
    )
    broker_ping_seconds: float = _setting(
        5.0,
        "With the PostgreSQL broker: each process pings its own LISTEN connection this "
        "often and reconnects when a ping has not come back within twice as long.",
    )
    broker_reconnect_max_seconds: float = _setting(
        5.0, "With the PostgreSQL broker: the longest wait between LISTEN reconnect attempts."
    )
    tail_check_seconds: float = _setting(
        10.0,
        "With the PostgreSQL broker: how often each process compares its rooms' newest "
        "entries with the database (a safety net under LISTEN).",
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
    poll_wait_seconds: float = _setting(
        20.0, "In poll mode (?mode=poll) a request with nothing to send ends after this long."
    )

    public_url: str = _setting(
        "",
        "The public origin, e.g. https://chat.example.org. Invite links use it, requests "
        "for any other Host get 400, and an https origin makes the cookie Secure.",
    )
    cookie_secure: bool = _setting(
        False,
        "Mark the session cookie Secure and name it __Host-session (set it when serving "
        "over https; an https SALA_PUBLIC_URL implies it).",
    )
    header_timeout_seconds: float = _setting(
        10.0,
        "A connection whose request line and headers have not all arrived within this "
        "long is closed (slow clients holding connections open).",
    )
    body_timeout_seconds: float = _setting(
        10.0, "A form body that has not all arrived within this long gets 408."
    )
    limits: str = _setting(
        "on",
        "off turns every per-client and per-member limit below off at once "
        "(benchmarks and load tests only).",
    )
    limit_message_burst: int = _setting(
        60, "Messages a member may send in a burst before answers become 429."
    )
    limit_messages_per_second: float = _setting(
        10.0, "Messages per second a member regains after a burst; 0 turns this limit off."
    )
    limit_posts_per_minute: int = _setting(
        1200, "Messages per minute from one client address, all its members together."
    )
    limit_rooms_per_minute: int = _setting(30, "Rooms one client address may create per minute.")
    limit_joins_per_minute: int = _setting(
        120, "Joins per minute from one client address (a class of 30 fits in one minute)."
    )
    limit_lookups_per_minute: int = _setting(
        30,
        "Room codes that match no room, per minute and client address, before every "
        "lookup by code from it gets 429 (against guessing codes).",
    )
    limit_stream_opens_per_minute: int = _setting(
        600, "Room streams one member may open per minute (reconnects included)."
    )
    limit_streams_per_member: int = _setting(10, "Room streams one member may hold open at once.")
    limit_streams_per_address: int = _setting(
        50, "Room streams one client address may hold open at once."
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
                values[f.name] = _parse(kind, raw.strip())
            except ValueError as exc:
                raise ValueError(f"{env_name(f.name)} must be a {kind.__name__}: {raw!r}") from exc
        settings = cls(**values)
        settings.check()
        if not settings.secret_key and not settings.broker_url.startswith("memory:"):
            raise ValueError(
                "SALA_SECRET_KEY must be set when SALA_BROKER_URL is not memory://: every "
                "process must sign cookies and author tags with the same key."
            )
        if not settings.secret_key:
            settings = cls(**{**values, "secret_key": _stored_secret(settings.database_url)})
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work, in words, before serving anything."""
        scheme = self.broker_url.split(":", 1)[0].lower()
        if scheme not in ("memory", "postgresql", "postgres"):
            raise ValueError(
                f"SALA_BROKER_URL must be memory:// or postgresql://…, not {scheme}://"
            )
        for name in (
            "node_heartbeat_seconds",
            "node_lease_seconds",
            "sweep_seconds",
            "broker_ping_seconds",
            "broker_reconnect_max_seconds",
            "tail_check_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{env_name(name)} must be a positive number of seconds")
        if self.node_heartbeat_seconds >= self.node_lease_seconds:
            raise ValueError(
                "SALA_NODE_HEARTBEAT_SECONDS must be shorter than SALA_NODE_LEASE_SECONDS"
            )
        if not self.broker_url.startswith("memory:") and self.database_url.startswith("sqlite"):
            raise ValueError(
                "SALA_BROKER_URL is not memory://, but SALA_DATABASE_URL is SQLite: several "
                "processes need PostgreSQL (SQLite with memory:// serves one process)."
            )
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("SALA_PUBLIC_URL must be an http(s) origin, e.g. https://host")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError("SALA_PUBLIC_URL is an origin only: no path, query or fragment")

    @property
    def public_origin(self) -> str | None:
        """`scheme://host[:port]` of SALA_PUBLIC_URL, lower-cased, or None."""
        if not self.public_url:
            return None
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def secure_cookie(self) -> bool:
        return self.cookie_secure or self.public_url.lower().startswith("https://")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(kind: type[Any], raw: str) -> Any:
    if kind is bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(raw)
    return kind(raw)


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
