"""Garbage collection for a process that holds thousands of long-lived connections.

CPython's collector looks again, in each older-generation pass, at every object that
outlived a young pass. An open stream keeps about 55 such objects (uvicorn's
protocol, its request, the stream's task and coroutines) for as long as it is open,
so with thousands of streams those passes cost more than anything else Sala does to
open one (bench/README.md: about 15 µs of the ~110 it costs, and pauses of 60 to 110 ms
while 19,500 streams arrive), and they find almost nothing: streams end by reference
counting, not in cycles.

So here the old generations stay empty. After every pass, what survived it is frozen
(`gc.freeze()`: kept where no pass looks, freed as usual when its last reference
goes). Garbage in reference cycles among frozen objects is left for a full
collection (unfreeze, collect, freeze again), run when the process's memory has
grown by a quarter since the last one (CPython's rule for its oldest generation
counts objects instead), at most once per `min_interval` seconds, as checked every
`check_interval` seconds. The cost: cyclic garbage that outlives a young pass waits
longer to be freed (at most a quarter of the heap, as with CPython's rule).

Memory, not the frozen objects, because counting them walks every one: 65 ms with
10,000 streams open (bench/README.md, run F), a stall of everything every
`check_interval`. The resident size is one read of /proc/self/statm; where there is
none, the objects are counted.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

logger = logging.getLogger(__name__)


class Collector:
    def __init__(
        self, *, growth: float = 0.25, check_interval: float = 10.0, min_interval: float = 60.0
    ) -> None:
        self.growth = growth
        self.check_interval = check_interval
        self.min_interval = min_interval
        self.full_collections = 0
        self._baseline = 0  # the size (_size) right after the last full collection
        self._last_full = 0.0
        self._installed = False

    def install(self) -> None:
        """Freeze what exists now (start-up: modules, settings, templates) and from now
        on what survives each pass."""
        if self._installed:
            return
        gc.freeze()
        gc.callbacks.append(self._after_pass)
        self._installed = True
        self._baseline = _size()
        self._last_full = time.monotonic()

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._after_pass)
            self._installed = False

    def _after_pass(self, phase: str, info: dict[str, Any]) -> None:
        # The pass is over: its survivors are all reachable now. (A pass runs in
        # whichever thread allocated; freezing only moves lists, in constant time.)
        if phase == "stop":
            gc.freeze()

    def check(self) -> bool:
        """Run a full collection if memory grew enough, and not too soon after the
        last one."""
        if time.monotonic() - self._last_full < self.min_interval:
            return False
        if _size() <= self._baseline * (1 + self.growth):
            return False
        self.full()
        return True

    def full(self) -> None:
        started = time.monotonic()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.full_collections += 1
        self._baseline = _size()
        self._last_full = time.monotonic()
        logger.info(
            "full collection: %d unreachable, %d bytes kept, %.0f ms",
            found,
            self._baseline,
            (self._last_full - started) * 1000,
        )

    async def run(self) -> None:
        """Check now and then, for as long as the app runs."""
        while True:
            await asyncio.sleep(self.check_interval)
            self.check()

    def status(self, *, count_frozen: bool = False) -> dict[str, int]:
        """For /healthz/detail. The frozen objects only when asked: counting them walks
        every one (65 ms with 10,000 streams open), a stall of the whole process that
        a monitor polling every few seconds would cause as often."""
        status = {"resident_bytes": _size(), "full_collections": self.full_collections}
        if count_frozen:
            status["frozen"] = gc.get_freeze_count()
        return status


def _size() -> int:
    """The process's resident size in bytes; where /proc is missing, its frozen objects
    (a walk of them all)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return gc.get_freeze_count()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

COLLECTOR = Collector()  # the collector is the process's: one policy for it
