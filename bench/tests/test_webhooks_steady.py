"""The webhook benchmark's arithmetic: rates over one steady window, the lag over the load."""

from __future__ import annotations

import pytest

from bench.webhooks import WARM_S, steady


def test_rates_are_compared_over_the_same_steady_window() -> None:
    """Samples before WARM_S are left out of the rates (the dispatcher starts behind by its
    latency) but not out of the lag; both rates come from the window's first and last sample."""
    timeline = [
        # seconds, delivered, earns, pending, oldest pending's age
        (0.5, 0, 300, 300, 0.5),
        (1.0, 400, 700, 300, 0.9),
        (WARM_S, 1000, 1100, 100, 0.2),
        (WARM_S + 5.0, 5000, 5050, 50, 0.1),
        (WARM_S + 10.0, 9000, 9100, 100, 0.3),
    ]
    got = steady(timeline)
    assert got["steady_window_s"] == 10.0
    assert got["steady_deliveries_per_s"] == 800.0
    assert got["steady_earns_per_s"] == 800.0
    assert got["steady_ratio"] == pytest.approx(1.0)
    assert got["max_pending_during_load"] == 300
    assert got["max_oldest_pending_age_s"] == 0.9


def test_a_dispatcher_falling_behind_shows_in_the_ratio() -> None:
    timeline = [(WARM_S, 100, 100, 0, 0.0), (WARM_S + 10.0, 5100, 10100, 5000, 6.0)]
    got = steady(timeline)
    assert got["steady_ratio"] == 0.5
    assert got["max_oldest_pending_age_s"] == 6.0


def test_too_short_a_load_has_no_steady_window() -> None:
    assert steady([(0.5, 0, 10, 10, 0.1), (WARM_S, 5, 20, 15, 0.2)]) == {}
