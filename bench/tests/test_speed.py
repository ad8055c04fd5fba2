"""The speed probe's summary: per phase, the median, fastest and slowest CPU ms of its work."""

from __future__ import annotations

from bench.speed import SpeedProbe


def test_the_summary_is_per_phase() -> None:
    probe = SpeedProbe()
    probe.samples = {"start": [2.0, 4.0, 3.0], "import": [5.0, 7.0], "empty": []}
    assert probe.summary() == {
        "start": {"median_ms": 3.0, "min_ms": 2.0, "max_ms": 4.0, "samples": 3},
        "import": {"median_ms": 6.0, "min_ms": 5.0, "max_ms": 7.0, "samples": 2},
    }
    probe.__exit__()  # never started: nothing to stop
