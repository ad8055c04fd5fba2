"""The earn benchmark's verdict: each side's peak over the concurrencies measured, per round too."""

from __future__ import annotations

from typing import Any

import pytest

from bench.earn_verdicts import summarize, verdicts


def _run(kind: str, c: int, p: int, hot: bool, rnd: int, tps: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "concurrency": c,
        "processes": p if kind == "service" else None,
        "partners": (1 if hot else 100) if kind == "service" else None,
        "round": rnd,
        "key": f"{kind}/{c}/{p}/{hot}",
        "tps": tps,
        "latency_avg_ms": 1.0,
        "machine_busy": 0.8,
    }


def _runs(table: dict[tuple[str, int, int, bool], list[float]]) -> list[dict[str, Any]]:
    return [
        _run(kind, c, p, hot, rnd + 1, tps)
        for (kind, c, p, hot), rounds in table.items()
        for rnd, tps in enumerate(rounds)
    ]


def test_each_side_is_judged_at_its_own_peak() -> None:
    # pgbench saturates early (best at C=16), the service late (best at C=64).
    runs = _runs(
        {
            ("pgbench", 8, 0, False): [4000, 4100],
            ("pgbench", 16, 0, False): [4500, 4400],
            ("pgbench", 64, 0, False): [4200, 4300],
            ("service", 8, 2, False): [2000, 2100],
            ("service", 8, 2, True): [1900, 2000],
            ("service", 16, 2, False): [2700, 2600],
            ("service", 16, 2, True): [2600, 2500],
            ("service", 64, 2, False): [3900, 3800],
            ("service", 64, 2, True): [4100, 4000],
        }
    )
    v = verdicts(runs, summarize(runs), rounds=2)

    assert v["concurrency_levels"] == [8, 16, 64]
    peak = v["peak"]
    assert (peak["pgbench"]["concurrency"], peak["pgbench"]["tps"]) == (16, 4450)
    assert (peak["service_spread"]["concurrency"], peak["service_spread"]["tps"]) == (64, 3850)
    assert peak["ratios"]["service_spread_vs_pgbench"] == pytest.approx(3850 / 4450)
    assert peak["ratios"]["service_hot_vs_pgbench"] == pytest.approx(4050 / 4450)
    assert peak["ratios"]["hot_vs_spread"] == pytest.approx(4050 / 3850)
    # Per round, each side's best window of that round: round 2's pgbench peak is C=16's 4400.
    assert peak["ratios_per_round"]["service_spread_vs_pgbench"] == [
        round(3900 / 4500, 3),
        round(3800 / 4400, 3),
    ]
    # The equal-concurrency ratios are kept beside it.
    at8 = v["at_concurrency"]["8"]
    assert at8["ratios"]["service_spread_vs_pgbench"] == pytest.approx(2050 / 4050)
    assert at8["ratios_per_round"]["hot_vs_spread"] == [
        round(1900 / 2000, 3),
        round(2000 / 2100, 3),
    ]


def test_the_hot_run_is_paired_with_the_reported_process_count() -> None:
    # Two process counts at one concurrency: the spread figure picks P=2, and the hot ratio uses
    # P=2's hot run, not the better hot run of P=1.
    runs = _runs(
        {
            ("pgbench", 8, 0, False): [4000],
            ("service", 8, 1, False): [1500],
            ("service", 8, 1, True): [3000],
            ("service", 8, 2, False): [2000],
            ("service", 8, 2, True): [1800],
        }
    )
    at = verdicts(runs, summarize(runs), rounds=1)["at_concurrency"]["8"]

    assert at["service_spread"]["processes"] == 2
    assert at["service_hot"]["key"] == "service/8/2/True"
    assert at["ratios"]["hot_vs_spread"] == pytest.approx(0.9)
