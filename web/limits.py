"""Limits per client address and per member: token buckets and stream counts.

Each limit answers how long to wait (0.0: go ahead), so a view can say 429 with
`Retry-After`. The defaults let a class of 30 people behind one address (a school
or office NAT) join one room within a minute and chat; `SALA_LIMITS=off` turns
every limit off at once (benchmarks and load tests).
"""

from __future__ import annotations

import math
import time
from enum import StrEnum

from web.i18n import N_, _
from web.settings import Settings

_FORGET_AFTER = 100_000  # keys kept before full buckets are dropped


class TokenBucket:
    """`burst` tokens at most, `per_second` regained; one bucket per key."""

    def __init__(self, *, burst: float, per_second: float) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def _tokens(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - updated) * self._rate)

    def wait(self, key: str) -> float:
        """Seconds until `key` may take a token (0.0: it may now), taking nothing."""
        if self._rate <= 0:
            return 0.0
        tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def take(self, key: str) -> float:
        """Take a token; 0.0 when allowed, else the seconds to wait before retrying."""
        if self._rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > _FORGET_AFTER:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate

    def _forget_full(self, now: float) -> None:
        full = [key for key in self._buckets if self._tokens(key, now) >= self._burst]
        for key in full:
            del self._buckets[key]


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


class Limit(StrEnum):
    MESSAGES = "messages"  # per member
    POSTS = "posts"  # per address: messages from every member behind it
    ROOMS = "rooms"  # per address: rooms created
    JOINS = "joins"  # per address
    LOOKUPS = "lookups"  # per address: room codes that matched no room
    STREAM_OPENS = "stream_opens"  # per member


_WORDS = {
    Limit.MESSAGES: N_("You are sending messages too fast. Wait a moment, then send again."),
    Limit.POSTS: N_(
        "Too many messages are coming from your network. Wait a moment, then send again."
    ),
    Limit.ROOMS: N_("Too many rooms were created from your network. Wait a minute and try again."),
    Limit.JOINS: N_(
        "Too many people joined from your network just now. Wait a moment and try again."
    ),
    Limit.LOOKUPS: N_(
        "Too many room codes that do not exist were tried from your network. "
        "Wait a minute, check the code and try again."
    ),
    Limit.STREAM_OPENS: N_("The room was reconnected too often. Wait a moment."),
}
TOO_MANY_STREAMS = N_("Too many open connections to this room. Close a tab or wait a moment.")


def limit_words(limit: Limit) -> str:
    """What a 429 from `limit` says, in the request's language."""
    return _(_WORDS[limit])


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.limits.strip().lower() != "off"
        per_minute = {
            Limit.POSTS: settings.limit_posts_per_minute,
            Limit.ROOMS: settings.limit_rooms_per_minute,
            Limit.JOINS: settings.limit_joins_per_minute,
            Limit.LOOKUPS: settings.limit_lookups_per_minute,
            Limit.STREAM_OPENS: settings.limit_stream_opens_per_minute,
        }
        self._buckets = {
            limit: TokenBucket(burst=count, per_second=count / 60)
            for limit, count in per_minute.items()
        }
        self._buckets[Limit.MESSAGES] = TokenBucket(
            burst=settings.limit_message_burst, per_second=settings.limit_messages_per_second
        )
        self._streams_per_member = settings.limit_streams_per_member
        self._streams_per_address = settings.limit_streams_per_address
        self._streams: dict[str, int] = {}

    def take(self, limit: Limit, key: str) -> float:
        return self._buckets[limit].take(key) if self.enabled else 0.0

    def wait(self, limit: Limit, key: str) -> float:
        return self._buckets[limit].wait(key) if self.enabled else 0.0

    def open_stream(self, member_id: str, address: str) -> bool:
        """Count one more open stream, or False when the member or address has too many."""
        member_key, address_key = "m:" + member_id, "a:" + address
        if self.enabled and (
            self._streams.get(member_key, 0) >= self._streams_per_member
            or self._streams.get(address_key, 0) >= self._streams_per_address
        ):
            return False
        for key in (member_key, address_key):
            self._streams[key] = self._streams.get(key, 0) + 1
        return True

    def close_stream(self, member_id: str, address: str) -> None:
        for key in ("m:" + member_id, "a:" + address):
            left = self._streams.get(key, 0) - 1
            if left > 0:
                self._streams[key] = left
            else:
                self._streams.pop(key, None)
