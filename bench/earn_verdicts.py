"""`bench.earn`'s arithmetic: means over rounds, the goals' ratios (peak against peak and at
each concurrency), and the printed summary."""

from __future__ import annotations

import statistics
from typing import Any


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration: the mean over rounds of each figure, and every round's throughput."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(r["key"] for r in runs):
        rs = [r for r in runs if r["key"] == key]

        def mean(name: str, rs: list[dict[str, Any]] = rs) -> float | None:
            values = [r[name] for r in rs if r.get(name) is not None]
            return statistics.fmean(values) if values else None

        first = rs[0]
        out[key] = {
            "key": key,
            "kind": first["kind"],
            "concurrency": first["concurrency"],
            "processes": first.get("processes"),
            "partners": first.get("partners"),
            "tps": mean("tps"),
            "tps_rounds": [round(r["tps"], 1) for r in rs],
            "latency_avg_ms": mean("latency_avg_ms"),
            "latency_p99_ms": mean("latency_p99_ms"),
            "machine_busy": mean("machine_busy"),
            "client_cpu_ms_per_earn": mean("client_cpu_ms_per_earn"),
            "mean_batch": mean("mean_batch"),
            "errors": sum(r.get("errors") or 0 for r in rs),
            "command": first.get("command"),
        }
    return out


def by_round(runs: list[dict[str, Any]], key: str, rnd: int) -> float:
    """The throughput of configuration `key` in round `rnd`."""
    return next(r["tps"] for r in runs if r["key"] == key and r["round"] == rnd)


def verdicts(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], rounds: int
) -> dict[str, Any]:
    """The goals' ratios, at each concurrency and peak against peak.

    At one concurrency: the service (with its best process count) against pgbench with as many
    clients. Peak against peak: each side at the concurrency where it moves the most earns
    (the throughput of a system is what it sustains at saturation); per round too, each side's
    best window of that round."""
    levels = sorted({v["concurrency"] for v in summary.values()})

    def best_service(c: int, hot: bool) -> dict[str, Any]:
        return max(
            (
                v
                for v in summary.values()
                if v["kind"] == "service" and v["concurrency"] == c and (v["partners"] == 1) == hot
            ),
            key=lambda v: v["tps"],
        )

    at: dict[str, Any] = {}
    for c in levels:
        pg = summary[f"pgbench/{c}/0/False"]
        spread = best_service(c, hot=False)
        # The hot run with the same process count as the reported spread run.
        hot = summary[f"service/{c}/{spread['processes']}/True"]
        ratios = {
            "service_spread_vs_pgbench": spread["tps"] / pg["tps"],
            "service_hot_vs_pgbench": hot["tps"] / pg["tps"],
            "hot_vs_spread": hot["tps"] / spread["tps"],
        }
        ceiling = summary.get(f"pgbench_service_sql/{c}/0/False")
        if ceiling:
            ratios["service_sql_via_pgbench_vs_pgbench"] = ceiling["tps"] / pg["tps"]
        per_round = {
            name: [
                round(by_round(runs, a, rnd) / by_round(runs, b, rnd), 3)
                for rnd in range(1, rounds + 1)
            ]
            for name, a, b in (
                ("service_spread_vs_pgbench", spread["key"], pg["key"]),
                ("service_hot_vs_pgbench", hot["key"], pg["key"]),
                ("hot_vs_spread", hot["key"], spread["key"]),
            )
        }
        at[str(c)] = {
            "pgbench": pg,
            "pgbench_service_sql": ceiling,
            "service_spread": spread,
            "service_hot": hot,
            "ratios": ratios,
            "ratios_per_round": per_round,
        }

    def peak(name: str) -> dict[str, Any]:
        return max((at[str(c)][name] for c in levels), key=lambda v: v["tps"])

    pg_peak, spread_peak, hot_peak = peak("pgbench"), peak("service_spread"), peak("service_hot")

    def round_peak(name: str, rnd: int) -> float:
        return max(by_round(runs, at[str(c)][name]["key"], rnd) for c in levels)

    peak_rounds = {
        name: [round(round_peak(a, rnd) / round_peak(b, rnd), 3) for rnd in range(1, rounds + 1)]
        for name, a, b in (
            ("service_spread_vs_pgbench", "service_spread", "pgbench"),
            ("service_hot_vs_pgbench", "service_hot", "pgbench"),
            ("hot_vs_spread", "service_hot", "service_spread"),
        )
    }
    return {
        "concurrency_levels": levels,
        "at_concurrency": at,
        "peak": {
            "pgbench": pg_peak,
            "service_spread": spread_peak,
            "service_hot": hot_peak,
            "ratios": {
                "service_spread_vs_pgbench": spread_peak["tps"] / pg_peak["tps"],
                "service_hot_vs_pgbench": hot_peak["tps"] / pg_peak["tps"],
                "hot_vs_spread": hot_peak["tps"] / spread_peak["tps"],
            },
            "ratios_per_round": peak_rounds,
        },
    }


def print_summary(report: dict[str, Any]) -> None:
    """The table per concurrency, the peaks, the goals' ratios and the round trips."""
    v, counts, goals = report["verdicts"], report["per_earn"], report["goals"]
    rounds = report["settings"]["rounds"]
    print()
    print(
        f"{'measure':<40} {'C':>4} {'earns/s':>9} {'avg ms':>7} {'p99 ms':>7} {'busy':>5} "
        f"{'cli ms':>6} {'batch':>5}"
    )
    for c in v["concurrency_levels"]:
        at = v["at_concurrency"][str(c)]
        rows = [("pgbench, equivalent SQL transaction", at["pgbench"])]
        if at["pgbench_service_sql"]:
            rows.append(("pgbench, the service's two statements", at["pgbench_service_sql"]))
        for label, key in (
            ("service, %d partners", "service_spread"),
            ("service, 1 hot partner", "service_hot"),
        ):
            r = at[key]
            label = label % r["partners"] if "%d" in label else label
            rows.append((f"{label} ({r['processes']} proc)", r))
        for label, r in rows:

            def num(name: str, r: dict[str, Any] = r) -> float:
                x = r.get(name)
                return float("nan") if x is None else x

            print(
                f"{label:<40} {c:>4} {r['tps']:>9.1f} {r['latency_avg_ms']:>7.2f} "
                f"{num('latency_p99_ms'):>7.2f} {r['machine_busy']:>5.0%} "
                f"{num('client_cpu_ms_per_earn'):>6.2f} {num('mean_batch'):>5.1f}"
            )
    print(f"(means of {rounds} round(s); busy: whole machine CPU in the window;")
    print(" cli ms: the service processes' own CPU per earn; batch: earns per group commit)")
    print()

    def line(label: str, value: float, goal: float | None, per_round: list[float]) -> None:
        verdict = (
            "" if goal is None else f"  goal >= {goal}: " + ("meets" if value >= goal else "BELOW")
        )
        rounds_text = ", ".join(f"{x:.2f}" for x in per_round)
        print(f"{label:<44} {value:5.2f}{verdict}  (rounds: {rounds_text})")

    peak = v["peak"]
    n = peak["service_spread"]["partners"]
    print(
        f"peak throughput: pgbench {peak['pgbench']['tps']:.0f}/s at C={peak['pgbench']['concurrency']}; "
        f"service {peak['service_spread']['tps']:.0f}/s ({n} partners) at "
        f"C={peak['service_spread']['concurrency']}, {peak['service_hot']['tps']:.0f}/s "
        f"(1 hot partner) at C={peak['service_hot']['concurrency']}"
    )
    for label, key, goal in (
        (
            f"service ({n} partners) / pgbench, peaks",
            "service_spread_vs_pgbench",
            goals["service_vs_pgbench"],
        ),
        (
            "service (1 hot partner) / pgbench, peaks",
            "service_hot_vs_pgbench",
            goals["service_vs_pgbench"],
        ),
        (f"1 hot partner / {n} partners, peaks", "hot_vs_spread", goals["hot_vs_spread"]),
    ):
        line(label, peak["ratios"][key], goal, peak["ratios_per_round"][key])
    print("at equal concurrency (the same number of clients on both sides):")
    for c in v["concurrency_levels"]:
        at = v["at_concurrency"][str(c)]
        for label, key in (
            (f"  C={c}: service ({n} partners) / pgbench", "service_spread_vs_pgbench"),
            (f"  C={c}: service (1 hot partner) / pgbench", "service_hot_vs_pgbench"),
            (f"  C={c}: 1 hot partner / {n} partners", "hot_vs_spread"),
        ):
            line(label, at["ratios"][key], None, at["ratios_per_round"][key])
        if "service_sql_via_pgbench_vs_pgbench" in at["ratios"]:
            value = at["ratios"]["service_sql_via_pgbench_vs_pgbench"]
            print(
                f"{f'  C={c}: service SQL via pgbench / pgbench':<44} {value:5.2f}  (server-side ceiling)"
            )
    print(f"{'SQL statements per earn':<44} {counts['sql_statements_per_earn']:5.2f}")
    trips = counts["round_trips_per_earn"]
    print(f"{'round trips per earn':<44} {trips:5.2f}  (BEGIN and COMMIT included)")
    for name, c in counts.get("group_commit", {}).items():
        print(
            f"{'group commit, ' + name.replace('_', ' '):<44} "
            f"{c['sql_statements_per_batch']:5.2f} statements, "
            f"{c['round_trips_per_batch']:5.2f} round trips per batch "
            f"({c['round_trips_per_earn']:.3f} per earn)"
        )
