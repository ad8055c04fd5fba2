"""The machine's speed while a benchmark runs: a fixed piece of pure-Python work, timed in CPU
time every quarter of a second by a thread of the benchmark's own process.

The VMs this project is measured on change speed by themselves: the same work takes from 13 to
22 ms of CPU within a minute on an idle machine (2026-12-06), so that two runs of the same code,
or the two phases of one run, can meet different machines. `SpeedProbe` records the work's CPU
time per phase (about 1 % of one core), which tells whether the figures of two phases or of two
runs were measured at the same speed. CPU time, not wall time: waiting for a core (the machine
being busy) does not count, only how fast the core runs when it has it.
"""

from __future__ import annotations

import statistics
import threading
import time


def _work() -> int:
    """About 2 ms of CPU on a 2026 server core."""
    s = 0
    for i in range(20_000):
        s += i * i % 7
    return s


class SpeedProbe:
    """`with SpeedProbe() as probe:` ... `probe.phase("import")` ...: `probe.summary()` gives the
    median CPU milliseconds of the fixed work in each phase (lower is faster)."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.samples: dict[str, list[float]] = {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-probe", daemon=True)

    def __enter__(self) -> SpeedProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def phase(self, name: str) -> None:
        self._phase = name

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            t0 = time.thread_time()
            _work()
            self.samples.setdefault(self._phase, []).append((time.thread_time() - t0) * 1000)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per phase: the work's median, fastest and slowest CPU ms, and how many samples."""
        return {
            name: {
                "median_ms": round(statistics.median(s), 2),
                "min_ms": round(min(s), 2),
                "max_ms": round(max(s), 2),
                "samples": len(s),
            }
            for name, s in self.samples.items()
            if s
        }
