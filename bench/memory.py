"""Where an idle stream's server memory goes: RSS, Python heap, objects and tasks.

    python -m bench.memory                          # 0 → 2,000 → 4,000 → 6,000 streams
    python -m bench.memory --steps 1000 2000 --output /tmp/memory.json

Five runs, each on a fresh server subprocess; all streams read one room as one
member (bench.run's `_member`), opened with bench.loadgen.open_streams, and every
step waits for each stream's first event, then ~2 s:

    rss            Sala (`python -m web`), nothing injected: RSS per stream (VmRSS)
    rss-nowatch    the same, with `web.sse.DisconnectWatch` replaced by one
                   that watches nothing (at 68e7077 it was a task group and a
                   task); an experiment, nothing of it is Sala
    trace          Sala with tracemalloc: Python heap per stream by source, and
                   objects (gc.get_objects() by type) and tasks per stream
    trace-nowatch  the same without the watcher: what the watcher's objects are
    baseline       bench/baseline.py: RSS per stream

The injection: a `sitecustomize.py` in a temporary directory, put first on the
server's PYTHONPATH (the venv's own path stays behind it), imports this module and
calls `install_hook()`. Driven by SALA_MEMORY_* variables, it starts tracemalloc,
patches out the watcher, and on SIGUSR2 writes a dump (tracemalloc snapshot, object
counts and sizes by type, tasks) into the run's directory. tracemalloc inflates
RSS, so RSS comes only from the runs without it.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import functools
import gc
import itertools
import json
import linecache
import os
import signal
import sys
import sysconfig
import tempfile
import time
import tracemalloc
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import Receive

    from bench.run import Target

ENV_DIR = "SALA_MEMORY_DIR"  # where requests and dumps go; enables SIGUSR2
ENV_FRAMES = "SALA_MEMORY_FRAMES"  # tracemalloc frames; 0 or unset: no tracemalloc
ENV_NO_WATCHER = "SALA_MEMORY_NO_WATCHER"  # "1": no disconnect-watch task per stream

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
SITECUSTOMIZE = "from bench.memory import install_hook\n\ninstall_hook()\n"
DEFAULT_STEPS = [2000, 4000, 6000]
SETTLE_SECONDS = 2.0
PER_STREAM_AT_LEAST = 0.5  # an object type counts as per stream from this many per stream


# -- in the server process ---------------------------------------------------------


def install_hook() -> None:
    """Called by the injected sitecustomize.py at interpreter start-up."""
    frames = int(os.environ.get(ENV_FRAMES) or 0)
    if frames > 0:
        tracemalloc.start(frames)
    if os.environ.get(ENV_NO_WATCHER) == "1":
        _patch_out_watcher()
    directory = os.environ.get(ENV_DIR)
    if directory:
        signal.signal(signal.SIGUSR2, functools.partial(_on_dump_signal, Path(directory)))


def _patch_out_watcher() -> None:
    from web import sse

    class NoWatch:
        """web.direct.DisconnectWatch watching nothing: a gone client is noticed only
        when a send fails."""

        def __init__(self, receive: Receive, gone: Callable[[], None]) -> None:
            pass

        def stop(self) -> None:
            pass

    setattr(sse, "DisconnectWatch", NoWatch)  # noqa: B010


def _on_dump_signal(directory: Path, signum: int, frame: types.FrameType | None) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _dump(directory)
        return
    loop.call_soon_threadsafe(_dump, directory)  # between callbacks, not mid-callback


def _kind(obj: object) -> str:
    """A type name; coroutines, generators, functions and methods by their qualname."""
    if isinstance(obj, (types.CoroutineType, types.AsyncGeneratorType, types.GeneratorType)):
        return f"{type(obj).__name__} {obj.__qualname__}"
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__qualname__}"
    if isinstance(obj, types.MethodType):
        return f"method {getattr(obj.__func__, '__qualname__', '?')}"
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _task_kind(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", type(coro).__name__))


def _dump(directory: Path) -> None:
    request = json.loads((directory / "request.json").read_text())
    label = request["label"]
    gc.collect()
    result: dict[str, Any] = {"label": label}
    if tracemalloc.is_tracing() and request.get("snapshot", True):
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(directory / f"{label}.snapshot"))
        del snapshot
        result["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        tasks = set()
    result["tasks"] = len(tasks)
    result["task_kinds"] = Counter(_task_kind(task) for task in tasks)
    del tasks
    objects = gc.get_objects()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in objects:
        kind = _kind(obj)
        counts[kind] += 1
        sizes[kind] += sys.getsizeof(obj)
    result["objects"] = {kind: [counts[kind], sizes[kind]] for kind in counts}
    # Sizes of sample instances with their __dict__ (reading it makes it a real dict,
    # so only in a last dump).
    wanted = set(request.get("deep", ()))
    samples: defaultdict[str, list[list[int]]] = defaultdict(list)
    for obj in objects if wanted else ():
        kind = _kind(obj)
        if kind in wanted and len(samples[kind]) < 50:
            own = sys.getsizeof(obj)
            attrs = vars(obj) if hasattr(obj, "__dict__") and not isinstance(obj, type) else None
            samples[kind].append([own, sys.getsizeof(attrs) if attrs is not None else 0])
    result["samples"] = samples
    del objects
    path = directory / f"{label}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").rename(path)


# -- in the bench process: running the servers --------------------------------------


def _start_sala(workdir: Path, extra: dict[str, str]) -> Target:
    from bench.run import _free_port, launch, sala_command, sala_env

    port = _free_port()
    env = sala_env(workdir, **extra)
    return launch("sala", port, sala_command(port), env, workdir, within=60)


def _hook_env(workdir: Path, *, frames: int, no_watcher: bool) -> dict[str, str]:
    hook = workdir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dumps = workdir / "dumps"
    dumps.mkdir()
    path = [str(hook), str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        "PYTHONPATH": os.pathsep.join(path),
        ENV_DIR: str(dumps),
        ENV_FRAMES: str(frames),
        ENV_NO_WATCHER: "1" if no_watcher else "0",
    }


async def _ask_dump(
    target: Target, dumps: Path, label: str, *, snapshot: bool = True, deep: Iterable[str] = ()
) -> dict[str, Any]:
    request = {"label": label, "snapshot": snapshot, "deep": list(deep)}
    (dumps / "request.json").write_text(json.dumps(request))
    os.kill(target.pid, signal.SIGUSR2)
    path = dumps / f"{label}.json"
    deadline = time.monotonic() + 600
    while not path.exists():
        if time.monotonic() > deadline or target.proc.poll() is not None:
            raise RuntimeError(f"no dump {label} from the server")
        await asyncio.sleep(0.2)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


async def _ramp(target: Target, steps: list[int], dumps: Path | None) -> list[dict[str, Any]]:
    """Open streams up to each step; note RSS (and ask for a dump) at each."""
    from bench.loadgen import Recorder, open_streams, rss_bytes
    from bench.run import HOST, _member, _wait

    cookie, code = await _member(target)
    path = f"/rooms/{code}/events"
    recorder = Recorder()
    transports: list[asyncio.Transport] = []
    rows: list[dict[str, Any]] = []
    try:
        for count in [0, *steps]:
            more = count - len(transports)
            if more > 0:
                transports += await open_streams(HOST, target.port, [path] * more, cookie, recorder)
                await _wait(lambda n=count: len(recorder.first_event) >= n, 600)
            await asyncio.sleep(SETTLE_SECONDS)
            row: dict[str, Any] = {
                "streams": count,
                "held": recorder.opened - recorder.closed,
                "first_events": len(recorder.first_event),
                "rss": rss_bytes(target.pid),
            }
            if dumps is not None:
                row["dump"] = await _ask_dump(target, dumps, f"step{count}")
            rows.append(row)
            print(f"  {count} streams: held {row['held']}, RSS {row['rss'] / 2**20:.1f} MiB")
        if dumps is not None:
            # Instance sizes with their __dict__, for the types that grow with the streams.
            base = rows[_base(rows)]
            first, last = base["dump"]["objects"], rows[-1]["dump"]["objects"]
            streams = max(rows[-1]["held"] - base["held"], 1)
            grown = [
                kind
                for kind, (n, _) in last.items()
                if (n - first.get(kind, [0, 0])[0]) / streams >= PER_STREAM_AT_LEAST
            ]
            deep = await _ask_dump(target, dumps, "deep", snapshot=False, deep=grown)
            rows[-1]["samples"] = deep["samples"]
    finally:
        for transport in transports:
            transport.close()
        await asyncio.sleep(1)
    return rows


def _base(rows: list[dict[str, Any]]) -> int:
    """The row per-stream figures start from: the first step with streams, so that
    what the first streams set up once (lazy tables, caches) is left out."""
    return 1 if len(rows) > 2 else 0


def _run(name: str, steps: list[int], frames: int) -> dict[str, Any]:
    from bench.run import start

    print(f"== {name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sala-memory-") as tmp:
        workdir = Path(tmp)
        dumps: Path | None = None
        if name == "baseline":
            target = start("baseline", workdir)
        elif name == "rss":
            target = _start_sala(workdir, {})
        else:
            env = _hook_env(
                workdir,
                frames=frames if name.startswith("trace") else 0,
                no_watcher=name.endswith("nowatch"),
            )
            if name.startswith("trace"):
                dumps = Path(env[ENV_DIR])
            target = _start_sala(workdir, env)
        try:
            rows = asyncio.run(_ramp(target, steps, dumps))
        finally:
            target.stop()
        result: dict[str, Any] = {"run": name, "steps": rows}
        last = rows[-1]
        base = rows[_base(rows)]
        result["rss_per_stream"] = (last["rss"] - rows[0]["rss"]) / max(last["held"], 1)
        result["rss_per_stream_after_first_step"] = (last["rss"] - base["rss"]) / max(
            last["held"] - base["held"], 1
        )
        if dumps is not None:
            streams = max(last["held"] - base["held"], 1)
            result["heap"] = _heap(
                dumps / f"step{base['streams']}.snapshot",
                dumps / f"step{last['streams']}.snapshot",
                streams,
            )
            result["objects"] = _objects(base, last, streams)
            for row in rows:  # the dumps' full type lists are summarised above
                row["traced_bytes"] = row["dump"].get("traced_bytes")
                row["tasks"] = row["dump"]["tasks"]
                row["task_kinds"] = row["dump"]["task_kinds"]
                del row["dump"]
            rows[-1].pop("samples", None)
    return result


# -- in the bench process: reading the dumps ---------------------------------------


def _package(filename: str) -> str:
    """uvicorn, starlette, anyio, …; web/stream.py; stdlib:asyncio; or other."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT) + "/"):
        return filename[len(str(ROOT)) + 1 :]
    if filename.startswith(STDLIB + "/"):
        return "stdlib:" + filename[len(STDLIB) + 1 :].split("/", 1)[0].removesuffix(".py")
    return "other"


@functools.cache
def _functions(filename: str) -> list[tuple[int, int, str]]:
    try:
        tree = ast.parse(Path(filename).read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                found.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _function_at(filename: str, lineno: int) -> str:
    inside = [
        (end - start, name) for start, end, name in _functions(filename) if start <= lineno <= end
    ]
    return min(inside)[1] if inside else "<module>"


def _where(frame: tracemalloc.Frame) -> str:
    package = _package(frame.filename)
    file = frame.filename.rsplit("/", 1)[-1]
    function = _function_at(frame.filename, frame.lineno)
    return f"{package} {file}:{frame.lineno} {function}"


def _owner(frames: list[tracemalloc.Frame]) -> tracemalloc.Frame | None:
    """The innermost frame outside the standard library: on whose behalf it was allocated."""
    for frame in reversed(frames):  # tracemalloc lists them oldest first
        if not _package(frame.filename).startswith("stdlib:"):
            return frame
    return None


def _group(frames: list[tracemalloc.Frame]) -> str:
    if not frames:
        return "other"
    if frames[-1].filename.endswith("asyncio/runners.py"):
        # No Python frame above the loop's own: uvloop's C code (accept, transport).
        return "uvloop, in C: transport, socket, handles"
    owner = _owner(frames)
    if owner is None:
        return _package(frames[-1].filename)
    package = _package(owner.filename)
    if package.startswith("web/"):
        return "Sala: " + package
    if package == "bench/memory.py":
        return "Sala: the patched DisconnectWatch"
    if package == "uvicorn":
        return "uvicorn: " + _function_at(owner.filename, owner.lineno)
    return package


# uvicorn's functions by what they allocate for a connection (the rest: "uvicorn, other").
UVICORN_PARTS = {
    "uvicorn connection: protocol object, parser, flow control, addresses": (
        "HttpToolsProtocol.__init__",  # the instance, its httptools parser, `pipeline` deque
        "HttpToolsProtocol.connection_made",
        "HttpToolsProtocol.data_received",  # what httptools hands to the callbacks below
        "HttpToolsProtocol.on_message_begin",  # the scope dict, the headers list
        "HttpToolsProtocol.on_url",
        "HttpToolsProtocol.on_header",
        "FlowControl.__init__",  # an asyncio.Event (and its deque)
        "get_local_addr",
        "get_remote_addr",
        "Server.startup.create_protocol",
    ),
    "uvicorn request: scope, RequestResponseCycle, its task": (
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol._start_asgi_task",
        "Config.asgi_version",
        "RequestResponseCycle.__init__",
        "RequestResponseCycle.run_asgi",
        "RequestResponseCycle.receive",
        "RequestResponseCycle.send",
    ),
}


def _components(groups: Counter[str]) -> Counter[str]:
    """`_group`'s sources, uvicorn's functions merged into parts of a connection."""
    parts = {f"uvicorn: {f}": part for part, fs in UVICORN_PARTS.items() for f in fs}
    merged: Counter[str] = Counter()
    for key, size in groups.items():
        if key in parts:
            key = parts[key]
        elif key.startswith("uvicorn: "):
            key = "uvicorn, other"
        elif key == "Sala: web/server.py":
            key = "Sala: web/server.py (uvicorn's protocol subclass)"
        merged[key] += size
    return merged


def _heap(before: Path, after: Path, streams: int) -> dict[str, Any]:
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    groups: Counter[str] = Counter()
    allocated_in: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    blocks = 0
    for diff in new.compare_to(old, "traceback"):
        frames = list(diff.traceback)
        if frames and frames[-1].filename == tracemalloc.__file__:
            continue
        blocks += diff.count_diff
        groups[_group(frames)] += diff.size_diff
        inner = frames[-1] if frames else None
        allocated_in[_package(inner.filename) if inner else "other"] += diff.size_diff
        owner = _owner(frames)
        key = _where(owner) if owner is not None else "-"
        if inner is not None and inner is not owner:
            key += f"  (in {_where(inner)})"
        if owner is not None:
            source = linecache.getline(owner.filename, owner.lineno).strip()
            key += f"  `{source[:70]}`"
        lines[key] += diff.size_diff
    total = sum(groups.values())

    def per_stream(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v / streams, 1)) for k, v in counter.most_common() if abs(v) >= streams]

    return {
        "bytes_per_stream": round(total / streams, 1),
        "blocks_per_stream": round(blocks / streams, 2),
        "by_component": per_stream(_components(groups)),
        "by_source": per_stream(groups),
        "by_allocating_package": per_stream(allocated_in),
        "top_lines": per_stream(lines)[:30],
    }


def _objects(base: dict[str, Any], end: dict[str, Any], streams: int) -> dict[str, Any]:
    first, last = base["dump"], end["dump"]
    kinds = []
    for kind, (count, size) in last["objects"].items():
        old_count, old_size = first["objects"].get(kind, [0, 0])
        per = (count - old_count) / streams
        if per >= PER_STREAM_AT_LEAST:
            sample = end.get("samples", {}).get(kind, [])
            own = sum(s[0] for s in sample) / len(sample) if sample else None
            attrs = sum(s[1] for s in sample) / len(sample) if sample else None
            kinds.append(
                {
                    "kind": kind,
                    "per_stream": round(per, 2),
                    "bytes_per_stream": round((size - old_size) / streams, 1),
                    "sizeof": round(own, 1) if own is not None else None,
                    "dict_sizeof": round(attrs, 1) if attrs else None,
                }
            )
    kinds.sort(key=lambda k: -k["bytes_per_stream"])
    new_tasks = Counter(last["task_kinds"])
    new_tasks.subtract(first["task_kinds"])
    return {
        "objects_per_stream": round(
            (
                sum(c for c, _ in last["objects"].values())
                - sum(c for c, _ in first["objects"].values())
            )
            / streams,
            1,
        ),
        "tasks_per_stream": round((last["tasks"] - first["tasks"]) / streams, 2),
        "new_tasks_by_coroutine": {
            k: round(v / streams, 2) for k, v in new_tasks.most_common() if v >= streams / 10
        },
        "kinds": kinds,
    }


# -- the report ------------------------------------------------------------------


def _print_report(runs: dict[str, dict[str, Any]]) -> None:
    print("\n## RSS: at 0 streams, then KB per stream added at each step\n")
    counts = [row["streams"] for row in next(iter(runs.values()))["steps"]]
    print("| run | " + " | ".join(f"{n}" for n in counts) + " | 0 → last | first step → last |")
    for name, run in runs.items():
        steps = run["steps"]
        cells = [f"{steps[0]['rss'] / 2**20:.1f} MiB"]
        for prev, row in itertools.pairwise(steps):
            grew = (row["rss"] - prev["rss"]) / max(row["held"] - prev["held"], 1) / 1024
            cells.append(f"+{grew:.2f}")
        cells.append(f"{run['rss_per_stream'] / 1024:.2f}")
        cells.append(f"{run['rss_per_stream_after_first_step'] / 1024:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, run in runs.items():
        if "heap" not in run:
            continue
        heap, objects = run["heap"], run["objects"]
        print(f"\n## {name}: Python heap per stream (tracemalloc, first step → last)\n")
        traced = [
            f"{row['streams']}: {(row['traced_bytes'] or 0) / 2**20:.1f} MiB, {row['tasks']} tasks"
            for row in run["steps"]
        ]
        print("traced / tasks at each step: " + "; ".join(traced))
        print(f"{heap['bytes_per_stream']} B/stream in {heap['blocks_per_stream']} blocks\n")
        for title, part in (
            ("by component", "by_component"),
            ("by source (innermost frame outside the standard library)", "by_source"),
            ("by allocating package (innermost frame)", "by_allocating_package"),
            ("top lines", "top_lines"),
        ):
            print(f"{title}, B/stream:")
            for key, value in heap[part]:
                print(f"  {value:>8} {key}")
        print(
            f"\nobjects: {objects['objects_per_stream']} gc-tracked objects/stream, "
            f"{objects['tasks_per_stream']} tasks/stream {objects['new_tasks_by_coroutine']}"
        )
        print("| kind | per stream | getsizeof B/stream | sizeof one | its __dict__ |")
        for kind in objects["kinds"]:
            print(
                f"| {kind['kind']} | {kind['per_stream']} | {kind['bytes_per_stream']} "
                f"| {kind['sizeof']} | {kind['dict_sizeof']} |"
            )


RUNS = ["rss", "rss-nowatch", "trace", "trace-nowatch", "baseline"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=DEFAULT_STEPS)
    parser.add_argument("--frames", type=int, default=10, help="tracemalloc frames")
    parser.add_argument("--only", choices=RUNS, action="append")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    steps = sorted(set(args.steps))
    runs = {name: _run(name, steps, args.frames) for name in args.only or RUNS}
    _print_report(runs)
    if args.output is not None:
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "runs": runs,
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
