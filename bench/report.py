"""Render bench/results.json as the Markdown tables in bench/README.md.

python -m bench.report [bench/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import targets
from bench.run import RESULTS

COLUMNS = {
    "idle": [
        "streams",
        "held",
        "first_event_p50_ms",
        "first_event_p99_ms",
        "memory_per_stream_kb",
        "cpu_us_per_open",
        "floor_first_event_p99_ms",
        "floor_cpu_us_per_open",
    ],
    "fanout": [
        "subscribers",
        "rate_per_s",
        "languages",
        "delivered_ratio",
        "to_last_subscriber_p50_ms",
        "to_last_subscriber_p99_ms",
        "deliveries_per_s",
        "cpu_us_per_delivery",
    ],
    "rooms": [
        "rooms",
        "per_room",
        "posts_per_s_asked",
        "posts_per_s_done",
        "post_p99_ms",
        "delivery_p50_ms",
        "delivery_p99_ms",
        "delivered_ratio",
        "cpu_ms_per_post",
    ],
    "posting": ["concurrency", "posts_per_s", "post_p50_ms", "post_p99_ms"],
    "cluster": [
        "processes",
        "subscribers",
        "rate_per_s",
        "delivered_ratio",
        "duplicates",
        "same_p50_ms",
        "same_p99_ms",
        "cross_p50_ms",
        "cross_p99_ms",
        "cross_minus_same_p99_ms",
        "cpu_us_per_delivery",
        "cpu_us_per_delivery_by_process",
        "postgres_cpu_us_per_message",
        "max_notification_queue_usage",
    ],
    "servers": [
        "server",
        "processes",
        "subscribers",
        "rate_per_s",
        "delivered_ratio",
        "to_last_subscriber_p50_ms",
        "to_last_subscriber_p99_ms",
        "cpu_us_per_delivery",
        "load_1m",
    ],
    "cluster faults": [
        "fault",
        "processes",
        "subscribers",
        "rate_per_s",
        "messages",
        "delivered_ratio",
        "duplicates",
        "out_of_order",
        "readers_moved",
        "reconnected_max_s",
        "caught_up_s",
        "max_delay_ms",
    ],
}


def _cell(row: dict[str, Any], key: str) -> str:
    if key.startswith("floor_"):  # uvicorn alone (bench/floor.py), in idle rows
        return str(row.get("floor", {}).get(key.removeprefix("floor_"), "-"))
    sala = row["sala"].get(key)
    if sala is None:
        return "-"  # not measured in this row (no cross-process readers on one process)
    if isinstance(sala, list):
        sala = " / ".join(str(v) for v in sala)
    ratio = row["ratio"].get(key)
    base = row["baseline"].get(key)
    if ratio is None:
        return f"{sala}"
    return f"{sala} ({base}; {ratio})"


def render(report: dict[str, Any]) -> str:
    out = [
        f"Run {report['when']}, profile `{report['profile']}`, "
        f"{report['machine']['cores']} cores, Python {report['machine']['python']}.",
        "",
        "Each cell: Sala (baseline; ratio). Ratios: baseline ÷ Sala for times and CPU, "
        "Sala ÷ baseline for rates. In the cluster tables the baseline is one process.",
        "",
        "### Performance II targets",
        "",
        targets.render(report).rstrip("\n"),
    ]
    for scenario, rows in report["scenarios"].items():
        for table, part in _tables(scenario, rows):
            columns = COLUMNS[table]
            out += ["", f"### {table}", "", "| " + " | ".join(columns) + " |"]
            out.append("|" + "---|" * len(columns))
            for row in part:
                out.append("| " + " | ".join(_cell(row, c) for c in columns) + " |")
    return "\n".join(out) + "\n"


def _tables(scenario: str, rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The cluster scenario's fault rows get a table of their own."""
    if scenario != "cluster":
        return [(scenario, rows)]
    faults = [row for row in rows if "fault" in row["sala"]]
    fanout = [row for row in rows if "fault" not in row["sala"]]
    return [
        (name, part) for name, part in (("cluster", fanout), ("cluster faults", faults)) if part
    ]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
