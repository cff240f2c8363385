"""The Performance II targets, read off one run's results (bench/results.json).

    python -m bench.targets [bench/results.json]

Each target names the row it is read from (a scenario and the sizes of the unit) and
a limit: a figure of Sala's own (milliseconds, KB) or a multiple of the bare server's
figure in the same row. A target whose row the run did not measure (the quick sizes
have no 19,500-stream unit) says so rather than passing. `bench.report` puts this
table first; `bench.run` prints it at the end of a run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MET, NOT_MET, NOT_MEASURED = "yes", "**no**", "not measured"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    scenario: str
    row: dict[str, int]  # the unit's sizes, as its `sala` figures carry them
    key: str
    at_most: float | None = None  # Sala's own figure ≤ this
    at_least: float | None = None  # Sala's own figure ≥ this
    times_baseline: float | None = None  # Sala's figure ≤ this × the bare server's


_ONE_ROOM_1000 = {"subscribers": 1000, "rate_per_s": 10, "languages": 1}
_ONE_ROOM_5000 = {"subscribers": 5000, "rate_per_s": 10, "languages": 1}

TARGETS = [
    Target(
        "idle stream ≤ 12 KB at 6,000 streams",
        "idle",
        {"streams": 6000},
        "memory_per_stream_kb",
        at_most=12,
    ),
    Target(
        "idle stream ≤ 12 KB at 19,500 streams",
        "idle",
        {"streams": 19500},
        "memory_per_stream_kb",
        at_most=12,
    ),
    Target(
        "first event p99 ≤ 250 ms, 19,500 streams arriving 250 at a time",
        "idle",
        {"streams": 19500},
        "first_event_p99_ms",
        at_most=250,
    ),
    Target(
        "fan-out 1,000 × 10/s: CPU per frame ≤ 2× the bare server's",
        "fanout",
        _ONE_ROOM_1000,
        "cpu_us_per_delivery",
        times_baseline=2,
    ),
    Target(
        "fan-out 1,000 × 10/s: p99 to the last subscriber ≤ 1.5× the bare server's",
        "fanout",
        _ONE_ROOM_1000,
        "to_last_subscriber_p99_ms",
        times_baseline=1.5,
    ),
    Target(
        "fan-out 1,000 × 10/s: all delivered",
        "fanout",
        _ONE_ROOM_1000,
        "delivered_ratio",
        at_least=1.0,
    ),
    Target(
        "fan-out 5,000 × 10/s: CPU per frame ≤ 2× the bare server's",
        "fanout",
        _ONE_ROOM_5000,
        "cpu_us_per_delivery",
        times_baseline=2,
    ),
    Target(
        "fan-out 5,000 × 10/s: p99 to the last subscriber ≤ 1.5× the bare server's",
        "fanout",
        _ONE_ROOM_5000,
        "to_last_subscriber_p99_ms",
        times_baseline=1.5,
    ),
    Target(
        "fan-out 5,000 × 10/s: all delivered",
        "fanout",
        _ONE_ROOM_5000,
        "delivered_ratio",
        at_least=1.0,
    ),
    Target(
        "rooms, 1,000 rooms at 1,000 posts/s: POST p99 ≤ 25 ms",
        "rooms",
        {"rooms": 1000, "posts_per_s_asked": 1000},
        "post_p99_ms",
        at_most=25,
    ),
]


def _row(report: dict[str, Any], target: Target) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = report.get("scenarios", {}).get(target.scenario, [])
    for row in rows:
        sala = row.get("sala", {})
        if all(sala.get(key) == value for key, value in target.row.items()):
            return row
    return None


def verdict(report: dict[str, Any], target: Target) -> tuple[str, str, str]:
    """(Sala's figure, the bare server's, met?) for one target of one run."""
    row = _row(report, target)
    if row is None or target.key not in row["sala"]:
        return "-", "-", NOT_MEASURED
    sala = float(row["sala"][target.key])
    base = row.get("baseline", {}).get(target.key)
    met = True
    if target.at_most is not None:
        met = met and sala <= target.at_most
    if target.at_least is not None:
        met = met and sala >= target.at_least
    if target.times_baseline is not None:
        if not isinstance(base, (int, float)):
            return f"{sala:g}", "-", NOT_MEASURED
        met = met and sala <= target.times_baseline * base
    shown_base = f"{base:g}" if isinstance(base, (int, float)) else "-"
    if target.times_baseline is not None and base:
        shown_base += f" ({sala / base:.2f}×)"
    return f"{sala:g}", shown_base, MET if met else NOT_MET


def render(report: dict[str, Any]) -> str:
    lines = ["| target | Sala | bare server | met? |", "|---|---|---|---|"]
    for target in TARGETS:
        sala, base, met = verdict(report, target)
        lines.append(f"| {target.name} | {sala} | {base} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from bench.run import RESULTS

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
