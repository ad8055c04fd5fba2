"""The SQL that prices ledger events at the agreement in force (shared by runs, reconciliation
and exports, so every number the settlement shows comes from one rule).

An event uses the agreement of its partner with the latest `effective_from` not after the
event's effective time, among the agreements already recorded when the event was recorded (an
agreement entered later with a past `effective_from` never reprices recorded events). A
reversal uses the issue price of the earn it reverses, a return the redemption price of the
capture it returns: the original event's times are used (`ledger_events.reverses_id`).
Agreements in another currency than the settlement's are not used; such events are unpriced
(counted, priced at zero) and the statement says so.
"""

from __future__ import annotations

# Columns: id, kind, partner_id, points, reverses_id, ref, effective_at, recorded_at, adjusts,
# operator_points (of `points`, those the operator issued: `priced` takes them out).
# `{where}` filters transactions `t`; an assignment row `a` is joined where the source needs it.
CANDIDATES_OPEN = """
    SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at,
           t.recorded_at, CAST(NULL AS uuid) AS adjusts, t.operator_points
    FROM ledger_events t
    WHERE t.effective_at >= :start AND t.effective_at < :end {where}
    UNION ALL
    SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at,
           t.recorded_at, a.adjusts_period_id AS adjusts, t.operator_points
    FROM settlement_assignments a JOIN ledger_events t ON t.id = a.transaction_id
    WHERE a.period_id = :period AND a.adjusts_period_id IS NOT NULL {where}
"""

# A closed period: its own range as the close saw it (recorded before `frozen_before`, or
# assigned to it explicitly) and the late events it settled.
CANDIDATES_FROZEN = """
    SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at,
           t.recorded_at, CAST(NULL AS uuid) AS adjusts, t.operator_points
    FROM ledger_events t
    WHERE t.effective_at >= :start AND t.effective_at < :end {where}
      AND (t.recorded_at < :frozen_before
           OR EXISTS (SELECT 1 FROM settlement_assignments a
                      WHERE a.transaction_id = t.id AND a.period_id = :period))
    UNION ALL
    SELECT t.id, t.kind, t.partner_id, t.points, t.reverses_id, t.ref, t.effective_at,
           t.recorded_at, a.adjusts_period_id AS adjusts, t.operator_points
    FROM settlement_assignments a JOIN ledger_events t ON t.id = a.transaction_id
    WHERE a.period_id = :period AND a.adjusts_period_id IS NOT NULL {where}
"""


# Prices as intervals, computed once per statement from the (few) agreements: for each partner
# and each "epoch" of recording (from one agreement's recorded_at to the next), the agreement
# that wins over each range of effective time. An event then joins the one interval holding its
# (recorded_at, effective_at): a hash join on the partner, instead of a lookup per event.
# The agreements are read through the view the partners publish (migration 0009).
PRICE_CTE = """
    price_epochs AS (
        SELECT partner_id, recorded_at AS rec_from,
               coalesce(lead(recorded_at) OVER (PARTITION BY partner_id ORDER BY recorded_at),
                        CAST('infinity' AS timestamptz)) AS rec_to
        FROM (SELECT DISTINCT partner_id, recorded_at FROM partner_agreements
              WHERE currency = :currency) d
    ), price_winners AS (
        SELECT DISTINCT ON (e.partner_id, e.rec_from, a.effective_from)
               e.partner_id, e.rec_from, e.rec_to, a.effective_from, a.issue_price,
               a.redemption_price
        FROM price_epochs e
        JOIN partner_agreements a ON a.partner_id = e.partner_id
                                 AND a.recorded_at <= e.rec_from AND a.currency = :currency
        ORDER BY e.partner_id, e.rec_from, a.effective_from, a.recorded_at DESC, a.id DESC
    ), price_intervals AS (
        SELECT partner_id, rec_from, rec_to, effective_from AS eff_from,
               coalesce(lead(effective_from) OVER (PARTITION BY partner_id, rec_from
                                                   ORDER BY effective_from),
                        CAST('infinity' AS timestamptz)) AS eff_to,
               issue_price, redemption_price
        FROM price_winners
    )
"""


def price_join(alias: str, partner: str, effective: str, recorded: str) -> str:
    """A LEFT JOIN giving `alias.issue_price`, `alias.redemption_price` in force (needs
    PRICE_CTE in the statement's WITH)."""
    return f"""
    LEFT JOIN price_intervals {alias}
           ON {alias}.partner_id = {partner}
          AND {recorded} >= {alias}.rec_from AND {recorded} < {alias}.rec_to
          AND {effective} >= {alias}.eff_from AND {effective} < {alias}.eff_to
    """


def priced(candidates: str) -> str:
    """Rows of `candidates` with `price`: per point, in the settlement currency (NULL: none).

    `points` are those the event's partner answers for: an earn's coalition-wide offer points
    (and a reversal's share of them) are the operator's, issued by no partner and charged to
    none (`operator_points`, reported on the period: `settlement.compute`)."""
    return f"""
    WITH {PRICE_CTE}
    SELECT c.id, c.kind, c.partner_id, c.points - c.operator_points AS points,
           c.operator_points, c.ref, c.effective_at, c.recorded_at, c.adjusts,
           CASE WHEN c.kind IN ('earn', 'bonus', 'reversal') THEN pr.issue_price
                WHEN c.kind IN ('capture', 'reward', 'return') THEN pr.redemption_price
           END AS price
    FROM ({candidates}) c
    LEFT JOIN ledger_events o ON o.id = c.reverses_id AND c.kind IN ('reversal', 'return')
    {
        price_join(
            "pr",
            "c.partner_id",
            "coalesce(o.effective_at, c.effective_at)",
            "coalesce(o.recorded_at, c.recorded_at)",
        )
    }
    """


# The sign of an event in a partner's net (reimbursement - issuance charge).
NET_SIGN = {"earn": -1, "bonus": -1, "reversal": 1, "capture": 1, "reward": 1, "return": -1}
# The kinds of ledger event on a partner's statement (those with a partner and a price), as
# partners see them in their statement files and reconciliation files.
SETTLED_KINDS = ("earn", "bonus", "reversal", "capture", "reward", "return")
# As SQL: `kind IN ({SETTLED_KINDS_SQL})`.
SETTLED_KINDS_SQL = ", ".join(f"'{k}'" for k in SETTLED_KINDS)
