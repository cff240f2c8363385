"""The benchmark's verdict on the Performance II targets (bench/targets.py): read off a
run's results the way `bench.report` and `bench.run` print it."""

from __future__ import annotations

import copy
import json
from typing import Any

from bench import report, targets


def _run() -> dict[str, Any]:
    """A full run's results, shaped as bench/run.py writes them, every target met."""

    def idle(streams: int, memory: float, p99: float) -> dict[str, Any]:
        return {
            "sala": {"streams": streams, "memory_per_stream_kb": memory, "first_event_p99_ms": p99},
            "baseline": {"streams": streams, "memory_per_stream_kb": 1.8, "first_event_p99_ms": 90},
            "ratio": {},
        }

    def fanout(subscribers: int, languages: int, cpu: float, p99: float) -> dict[str, Any]:
        sizes = {"subscribers": subscribers, "rate_per_s": 10, "languages": languages}
        return {
            "sala": {
                **sizes,
                "delivered_ratio": 1.0,
                "cpu_us_per_delivery": cpu,
                "to_last_subscriber_p99_ms": p99,
            },
            "baseline": {
                **sizes,
                "delivered_ratio": 1.0,
                "cpu_us_per_delivery": 8.0,
                "to_last_subscriber_p99_ms": 20.0,
            },
            "ratio": {},
        }

    rooms = {"rooms": 1000, "per_room": 10, "posts_per_s_asked": 1000}
    return {
        "when": "2026-12-07T16:00:00Z",
        "profile": "full",
        "machine": {"cores": 2, "python": "3.11.7", "platform": "Linux"},
        "scenarios": {
            "idle": [idle(6000, 10.9, 150), idle(10000, 11.0, 170), idle(19500, 10.8, 240)],
            "fanout": [
                fanout(1000, 1, 12.0, 25.0),
                fanout(5000, 1, 11.0, 29.0),
                # Two languages, far over every limit: not the rows the targets name.
                fanout(1000, 2, 99.0, 999.0),
                fanout(5000, 2, 99.0, 999.0),
            ],
            "rooms": [
                {
                    "sala": {**rooms, "post_p99_ms": 14.0},
                    "baseline": {**rooms, "post_p99_ms": 0.9},
                    "ratio": {},
                }
            ],
        },
    }


def _verdicts(run: dict[str, Any]) -> dict[str, str]:
    return {t.name: targets.verdict(run, t)[2] for t in targets.TARGETS}


def test_a_run_meeting_every_target_is_read_as_meeting_each() -> None:
    verdicts = _verdicts(_run())
    assert set(verdicts.values()) == {targets.MET}, verdicts
    assert len(verdicts) == 10


def test_each_limit_is_read_from_its_own_row_and_figure() -> None:
    misses = [
        ("idle", 0, "memory_per_stream_kb", 12.01, "idle stream ≤ 12 KB at 6,000 streams"),
        ("idle", 2, "memory_per_stream_kb", 12.5, "idle stream ≤ 12 KB at 19,500 streams"),
        ("idle", 2, "first_event_p99_ms", 250.1, "first event p99 ≤ 250 ms"),
        ("fanout", 0, "cpu_us_per_delivery", 16.1, "fan-out 1,000 × 10/s: CPU per frame"),
        ("fanout", 0, "to_last_subscriber_p99_ms", 30.1, "fan-out 1,000 × 10/s: p99"),
        ("fanout", 0, "delivered_ratio", 0.9999, "fan-out 1,000 × 10/s: all delivered"),
        ("fanout", 1, "cpu_us_per_delivery", 16.5, "fan-out 5,000 × 10/s: CPU per frame"),
        ("fanout", 1, "to_last_subscriber_p99_ms", 31.0, "fan-out 5,000 × 10/s: p99"),
        ("fanout", 1, "delivered_ratio", 0.99, "fan-out 5,000 × 10/s: all delivered"),
        ("rooms", 0, "post_p99_ms", 25.5, "rooms, 1,000 rooms"),
    ]
    for scenario, index, key, value, name in misses:
        run = copy.deepcopy(_run())
        run["scenarios"][scenario][index]["sala"][key] = value
        verdicts = _verdicts(run)
        missed = [n for n, v in verdicts.items() if v == targets.NOT_MET]
        assert len(missed) == 1 and missed[0].startswith(name), (key, value, verdicts)


def test_a_target_the_run_did_not_measure_says_so_rather_than_passing() -> None:
    run = _run()
    del run["scenarios"]["idle"][2]  # the quick sizes stop at 2,000 streams
    run["scenarios"]["fanout"][1]["baseline"].pop("cpu_us_per_delivery")
    verdicts = _verdicts(run)
    unmeasured = sorted(n for n, v in verdicts.items() if v == targets.NOT_MEASURED)
    assert unmeasured == [
        "fan-out 5,000 × 10/s: CPU per frame ≤ 2× the bare server's",
        "first event p99 ≤ 250 ms, 19,500 streams arriving 250 at a time",
        "idle stream ≤ 12 KB at 19,500 streams",
    ]
    assert targets.MET not in (verdicts[n] for n in unmeasured)


def test_the_report_puts_the_verdicts_first() -> None:
    run = _run()
    run["scenarios"]["idle"][2]["sala"]["first_event_p99_ms"] = 359
    text = report.render(json.loads(json.dumps(run)))
    head, _, rest = text.partition("### idle")
    assert "### Performance II targets" in head
    row = next(line for line in head.splitlines() if line.startswith("| first event p99"))
    assert row.split(" | ")[1:] == ["359", "90", "**no** |"]
    assert (
        "| fan-out 1,000 × 10/s: CPU per frame ≤ 2× the bare server's | 12 | 8 (1.50×) | yes |"
        in head
    )
    assert "| 19500 |" in rest
