"""Exports: a partner's statement as CSV and as a PDF invoice; the points liability as CSV.

The CSV's event lines use the reconciliation file's first four columns (order_ref, kind,
points, amount), so a partner can compare it with its own records line by line. The PDF is
what a finance team files: parties, period, line items (points x unit price at each agreement
in force), the rounded charge and reimbursement, the net and who pays whom, adjustments,
breakage, and the seal of a closed period. An open period's PDF is marked DRAFT.

Reads the ledger's views and the agreements in set-based SQL (see settlement.service);
the database reads run on the event loop, the CSV writing and the PDF rendering (CPU) in a
worker thread. Every CSV goes through `write_csv`, which neutralises spreadsheet formulas.
"""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.money import minor_units, quantize
from partners import service as partners
from settlement import service as settlement
from settlement.errors import PeriodNotFound
from settlement.pricing import CANDIDATES_FROZEN, CANDIDATES_OPEN, priced

CSV_COLUMNS = (
    "line_type",
    "order_ref",
    "kind",
    "points",
    "amount",
    "exact_amount",
    "unit_price",
    "currency",
    "effective_at",
    "transaction_id",
    "adjusts_period_id",
)


# OWASP's rule against CSV (formula) injection: a text cell starting with one of these is
# prefixed with a single quote, so a spreadsheet shows it as text instead of evaluating it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell made safe for spreadsheets: text that could start a formula gets a leading `'`.

    Only `str` cells are text: every numeric column (points, amounts, prices) is handed to the
    writers as int or Decimal, never as a string, so a negative net such as -12.50 stays a
    number a spreadsheet can add up, while an order reference or a partner name that merely
    looks like `-5` or `=1+1` (text the partner chose) is neutralised."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (RFC 4180, CRLF) of a header and rows, every cell through `csv_cell`; the one
    writer of every CSV the app produces (run it off the loop: it is CPU work)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([csv_cell(c) for c in header])
    w.writerows([csv_cell(c) for c in row] for row in rows)
    return buf.getvalue()


LIABILITY_COLUMNS = (
    "as_of",
    "period_id",
    "issuer_id",
    "issuer",
    "points",
    "issue_price",
    "value",
    "currency",
)


def _events_sql(period: settlement.Period, *, grouped: bool) -> Any:
    template = CANDIDATES_FROZEN if period.is_closed else CANDIDATES_OPEN
    candidates = template.format(
        where="AND t.partner_id = :partner AND t.kind IN ('earn', 'reversal', 'capture', 'return')"
    )
    if grouped:
        return text(
            f"SELECT kind, price, (adjusts IS NOT NULL) AS adjustment, sum(points) AS points, "
            f"sum(points * price) AS exact, count(*) AS n FROM ({priced(candidates)}) x "
            "GROUP BY kind, price, (adjusts IS NOT NULL) ORDER BY kind, adjustment, price"
        )
    return text(
        f"SELECT id, kind, points, price, ref, effective_at, adjusts FROM ({priced(candidates)}) x "
        "ORDER BY effective_at, id"
    )


async def _statement_of(
    conn: AsyncConnection, period_id: uuid.UUID, partner_id: uuid.UUID
) -> tuple[settlement.Period, settlement.Statement | None]:
    period = await settlement.get_period(conn, period_id=period_id, partner_id=partner_id)
    await partners.get(conn, partner_id=partner_id)
    found = await settlement.statements(conn, period_id=period_id, partner_id=partner_id)
    return period, (found[0] if found else None)


def _params(period: settlement.Period, partner_id: uuid.UUID) -> dict[str, Any]:
    return {
        "start": period.period_start,
        "end": period.period_end,
        "period": period.id,
        "partner": partner_id,
        "currency": period.currency,
        "frozen_before": period.frozen_before,
    }


async def statement_csv(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID
) -> str:
    """A partner's statement as CSV: one line per ledger event, then the totals."""
    period, st = await _statement_of(conn, period_id, partner_id)
    events = (
        await conn.execute(_events_sql(period, grouped=False), _params(period, partner_id))
    ).all()
    return await asyncio.to_thread(_statement_rows_csv, period, st, events)


def _statement_rows_csv(
    period: settlement.Period, st: settlement.Statement | None, events: Sequence[Any]
) -> str:
    cur = period.currency
    rows: list[list[Any]] = []
    for r in events:
        exact = Decimal(r.points) * (r.price or Decimal(0))
        rows.append(
            [
                "adjustment" if r.adjusts else "event",
                r.ref or "",
                r.kind,
                r.points,
                quantize(exact, cur),
                exact,
                "" if r.price is None else r.price,
                cur,
                r.effective_at.astimezone(UTC).isoformat(),
                r.id,
                r.adjusts or "",
            ]
        )
    if st is not None:
        for kind, points, amount in [
            ("issued", st.issued_points, None),
            ("reversed", st.reversed_points, None),
            ("redeemed", st.redeemed_points, None),
            ("returned", st.returned_points, None),
            ("issuance_charge", None, st.issuance_charge.amount),
            ("reimbursement", None, st.reimbursement.amount),
            ("net", None, st.net.amount),
            ("breakage", st.breakage_points, st.breakage_value.amount),
            ("adjustments", st.adjustment_count, st.adjustment_net.amount),
        ]:
            rows.append(
                [
                    "total",
                    "",
                    kind,
                    "" if points is None else points,
                    "" if amount is None else amount,
                    "",
                    "",
                    cur,
                    "",
                    "",
                    "",
                ]
            )
    return write_csv(CSV_COLUMNS, rows)


async def liability_csv(
    conn: AsyncConnection, *, currency: str, at: datetime | None = None, history: int = 24
) -> str:
    """The points liability by issuing partner now (valued in `currency`), then at the end of
    each closed period."""
    now_lines = await settlement.liability(conn, currency=currency, at=at)
    snapshots = await settlement.liability_history(conn, first=history)
    ids = list({x.issuer_id for x in now_lines} | {x.issuer_id for s in snapshots for x in s.lines})
    names = {p.id: p.name for p in await partners.get_many(conn, ids=ids) if p is not None}
    cur = currency.upper()
    rows: list[list[Any]] = [
        [
            x.as_of.isoformat(),
            "",
            x.issuer_id,
            names.get(x.issuer_id, ""),
            x.points,
            x.issue_price if x.issue_price is not None else "",
            x.value.amount,
            cur,
        ]
        for x in now_lines
    ]
    rows += [
        [
            s.period_end.isoformat(),
            s.period_id,
            x.issuer_id,
            names.get(x.issuer_id, ""),
            x.points,
            x.issue_price if x.issue_price is not None else "",
            x.value.amount,
            x.value.currency,
        ]
        for s in snapshots
        for x in s.lines
    ]
    return await asyncio.to_thread(write_csv, LIABILITY_COLUMNS, rows)


# ---------------------------------------------------------------------------------------------
# PDF


_FONT_CANDIDATES = [
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
]


_FONT_LOCK = threading.Lock()  # PDFs render in worker threads: register the fonts once


def _fonts() -> tuple[str, str]:
    """DejaVu Sans (Cyrillic and the rest) when installed, else reportlab's own Vera (Latin)."""
    from reportlab import rl_config
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _FONT_LOCK:
        if "CoalitionSans" in pdfmetrics.getRegisteredFontNames():
            return "CoalitionSans", "CoalitionSans-Bold"
        pairs = list(_FONT_CANDIDATES)
        for d in rl_config.TTFSearchPath:
            pairs.append((str(Path(d) / "Vera.ttf"), str(Path(d) / "VeraBd.ttf")))
        for regular, bold in pairs:
            if Path(regular).is_file() and Path(bold).is_file():
                pdfmetrics.registerFont(TTFont("CoalitionSans", regular))
                pdfmetrics.registerFont(TTFont("CoalitionSans-Bold", bold))
                return "CoalitionSans", "CoalitionSans-Bold"
        return "Helvetica", "Helvetica-Bold"


def _money(amount: Decimal, cur: str) -> str:
    places = minor_units(cur)
    q = amount.quantize(Decimal(1).scaleb(-places)) if places else amount.quantize(Decimal(1))
    sign = "-" if q < 0 else ""
    whole, _, frac = f"{abs(q):f}".partition(".")
    whole = f"{int(whole):,}".replace(",", "\u202f")
    return f"{sign}{whole}{'.' + frac if frac else ''}"


def _exact(amount: Decimal, cur: str) -> str:
    """An exact line amount: minor units, more digits only when the exact value needs them."""
    places = minor_units(cur)
    q = amount.normalize()
    exp = q.as_tuple().exponent
    digits = max(places, -exp if isinstance(exp, int) else places)
    return _money(amount, cur) if digits == places else f"{amount:.{digits}f}"


def _price(p: Decimal | None) -> str:
    if p is None:
        return "none"
    s = f"{p.normalize():f}"
    return s if "." in s else s + ".00"


def _points(n: int) -> str:
    return f"{n:,}".replace(",", "\u202f")


@dataclass(frozen=True)
class _Line:
    description: str
    points: int | None
    price: str
    amount: str


_LABELS = {
    ("earn", False): "Points issued to your customers",
    ("reversal", False): "Points reversed (refunds of purchases)",
    ("capture", False): "Points accepted as payment",
    ("return", False): "Points returned (refunds of payments in points)",
    ("earn", True): "Adjustment: points issued in a closed period",
    ("reversal", True): "Adjustment: points reversed in a closed period",
    ("capture", True): "Adjustment: points accepted in a closed period",
    ("return", True): "Adjustment: points returned in a closed period",
}


async def statement_pdf(
    conn: AsyncConnection,
    *,
    period_id: uuid.UUID,
    partner_id: uuid.UUID,
    operator_name: str,
) -> bytes:
    """A partner's statement as a PDF invoice issued by `operator_name`: the reads here, the
    rendering in a worker thread (reportlab takes tens of milliseconds of CPU per statement,
    which would stall the loop)."""
    period, st = await _statement_of(conn, period_id, partner_id)
    if period is None:  # pragma: no cover - get_period raises
        raise PeriodNotFound(str(period_id))
    partner = await partners.get(conn, partner_id=partner_id)
    groups = (
        await conn.execute(_events_sql(period, grouped=True), _params(period, partner_id))
    ).all()
    adjustments = await settlement.adjustments(conn, period_id=period_id, partner_id=partner_id)
    adjusted: dict[uuid.UUID, Any] = {}
    if adjustments:
        adjusted = {
            r.id: r
            for r in await conn.execute(
                text(
                    "SELECT id, period_start, period_end FROM settlement_periods "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": list({a.adjusts_period_id for a in adjustments})},
            )
        }
    return await asyncio.to_thread(
        render_statement_pdf,
        period=period,
        statement=st,
        partner=partner,
        operator=operator_name,
        groups=groups,
        adjustments=adjustments,
        adjusted=adjusted,
    )


def render_statement_pdf(
    *,
    period: settlement.Period,
    statement: settlement.Statement | None,
    partner: Any,
    operator: str,
    groups: Sequence[Any],
    adjustments: list[Any],
    adjusted: dict[uuid.UUID, Any],
) -> bytes:
    """Render a statement PDF from what `statement_pdf` read (pure CPU: runs off the loop)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    st = statement
    partner_id = partner.id
    cur = period.currency
    regular, bold = _fonts()

    base = ParagraphStyle("base", fontName=regular, fontSize=9, leading=12)
    small = ParagraphStyle(
        "small", parent=base, fontSize=7.5, leading=10, textColor=colors.HexColor("#555555")
    )
    h1 = ParagraphStyle(
        "h1", parent=base, fontName=bold, fontSize=18, leading=22, alignment=TA_RIGHT
    )
    h2 = ParagraphStyle(
        "h2", parent=base, fontName=bold, fontSize=10.5, leading=14, spaceBefore=10, spaceAfter=4
    )
    right = ParagraphStyle("right", parent=base, alignment=TA_RIGHT)
    strong = ParagraphStyle("strong", parent=base, fontName=bold)

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    number = f"ST-{period.period_start:%Y%m%d}-{str(partner_id)[-8:].upper()}"
    closed = period.is_closed
    issued_on = (period.closed_at or utcnow()).astimezone(UTC)
    fmt = "%d %b %Y %H:%M UTC"

    story: list[Any] = []
    head = Table(
        [
            [
                Paragraph(
                    f"<font name='{bold}' size='13'>{esc(operator)}</font><br/>Points settlement",
                    base,
                ),
                Paragraph("SETTLEMENT STATEMENT" if closed else "SETTLEMENT STATEMENT (DRAFT)", h1),
            ]
        ],
        colWidths=[90 * mm, 90 * mm],
    )
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [head, Spacer(1, 6 * mm)]
    meta = [
        ["Statement no.", number],
        ["Date of issue", issued_on.strftime("%d %b %Y")],
        [
            "Period",
            f"{period.period_start.astimezone(UTC):{fmt}} \u2013 "
            f"{period.period_end.astimezone(UTC):{fmt}} (end exclusive)",
        ],
        ["Currency", cur],
        ["Status", "Closed and sealed" if closed else "Open: figures may still change"],
    ]
    parties = Table(
        [
            [
                Paragraph(f"<font name='{bold}'>Issued by</font><br/>{esc(operator)}", base),
                Paragraph(
                    f"<font name='{bold}'>Partner</font><br/>{esc(partner.name)}<br/>"
                    f"<font size='7.5'>Partner id {partner.id}</font>",
                    base,
                ),
            ]
        ],
        colWidths=[90 * mm, 90 * mm],
    )
    parties.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#bbbbbb")),
                ("LINEAFTER", (0, 0), (0, 0), 0.5, colors.HexColor("#bbbbbb")),
                ("TOPPADDING", (0, 0), (-1, -1), 6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    meta_t = Table(
        [[Paragraph(k, strong), Paragraph(esc(v), base)] for k, v in meta],
        colWidths=[35 * mm, 145 * mm],
    )
    meta_t.setStyle(
        TableStyle([("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)])
    )
    story += [parties, Spacer(1, 4 * mm), meta_t]

    # Line items: points x unit price, grouped by the agreement price in force at each event.
    lines: dict[str, list[_Line]] = {"issuance": [], "reimbursement": []}
    for g in groups:
        exact = g.exact or Decimal(0)
        signed = exact if g.kind in ("earn", "capture") else -exact
        label = _LABELS[(g.kind, bool(g.adjustment))]
        part = "issuance" if g.kind in ("earn", "reversal") else "reimbursement"
        events = f"{g.n} event{'s' if g.n != 1 else ''}"
        lines[part].append(
            _Line(
                f"{label} <font size='7.5' color='#666666'>({events})</font>",
                int(g.points) if g.kind in ("earn", "capture") else -int(g.points),
                _price(g.price),
                _exact(signed, cur),
            )
        )
    zero = Decimal(0)
    charge = st.issuance_charge.amount if st else zero
    reimb = st.reimbursement.amount if st else zero
    net = st.net.amount if st else zero

    header = ["Description", "Points", f"Unit price ({cur})", f"Amount ({cur})"]
    rows: list[list[Any]] = [[Paragraph(h, strong) for h in header]]
    style: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, -1), regular),
        ("FONTSIZE", (0, 0), (-1, -1), 9),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]

    def section(title: str, items: list[_Line], total_label: str, total: Decimal) -> None:
        rows.append([Paragraph(title, strong), "", "", ""])
        style.append(
            ("BACKGROUND", (0, len(rows) - 1), (-1, len(rows) - 1), colors.HexColor("#f0f0f0"))
        )
        for it in items or [_Line("No events in the period", None, "", _money(zero, cur))]:
            rows.append(
                [
                    Paragraph(it.description, base),
                    "" if it.points is None else _points(it.points),
                    it.price,
                    it.amount,
                ]
            )
        rows.append(
            [
                Paragraph(total_label, strong),
                "",
                "",
                Paragraph(_money(total, cur), ParagraphStyle("t", parent=right, fontName=bold)),
            ]
        )
        style.append(("LINEABOVE", (0, len(rows) - 1), (-1, len(rows) - 1), 0.5, colors.black))

    section(
        "A. Issuance: points your customers earned",
        lines["issuance"],
        "Issuance charge (A)",
        charge,
    )
    section(
        "B. Redemption: points accepted as payment",
        lines["reimbursement"],
        "Reimbursement (B)",
        reimb,
    )
    rows.append(
        [
            Paragraph("Net (B \u2212 A)", strong),
            "",
            "",
            Paragraph(_money(net, cur), ParagraphStyle("n", parent=right, fontName=bold)),
        ]
    )
    style += [
        ("LINEABOVE", (0, len(rows) - 1), (-1, len(rows) - 1), 1.2, colors.black),
        ("BACKGROUND", (0, len(rows) - 1), (-1, len(rows) - 1), colors.HexColor("#e4ecf7")),
    ]
    items = Table(rows, colWidths=[92 * mm, 22 * mm, 32 * mm, 34 * mm], repeatRows=1)
    items.setStyle(TableStyle(style))
    story += [Paragraph("Charges and reimbursements", h2), items]
    story.append(
        Paragraph(
            "Each event is priced at the agreement in force when it happened; a reversal or "
            "return at "
            "the price of what it reverses. Line amounts are exact; the issuance charge and the "
            "reimbursement are each rounded once, half-even, to the currency's minor unit.",
            small,
        )
    )

    # Payment instruction.
    if net > 0:
        amount = f"<font name='{bold}'>{_money(net, cur)} {cur}</font>"
        pay = f"{esc(operator)} pays {esc(partner.name)} {amount}."
    elif net < 0:
        amount = f"<font name='{bold}'>{_money(-net, cur)} {cur}</font>"
        pay = f"{esc(partner.name)} pays {esc(operator)} {amount}."
    else:
        pay = "Nothing to pay for this period."
    box = Table(
        [
            [
                Paragraph(
                    f"<font name='{bold}'>Payment instruction</font><br/>{pay}<br/>"
                    f"<font size='7.5'>Reference: {number}</font>",
                    base,
                )
            ]
        ],
        colWidths=[180 * mm],
    )
    box.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1, colors.black),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fafafa")),
                ("TOPPADDING", (0, 0), (-1, -1), 8),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
            ]
        )
    )
    story += [Spacer(1, 5 * mm), KeepTogether(box)]

    # Points summary and breakage.
    if st is not None:
        summary = [
            [
                "Points issued",
                _points(st.issued_points),
                "Points redeemed",
                _points(st.redeemed_points),
            ],
            [
                "Points reversed",
                _points(st.reversed_points),
                "Points returned",
                _points(st.returned_points),
            ],
            [
                "Breakage (expired, issued by you)",
                _points(st.breakage_points),
                f"Breakage value ({cur}, not paid)",
                _money(st.breakage_value.amount, cur),
            ],
        ]
        if st.unpriced_events:
            summary.append(
                [
                    "Events without an agreement in force (priced at zero)",
                    str(st.unpriced_events),
                    "",
                    "",
                ]
            )
        t = Table(summary, colWidths=[55 * mm, 30 * mm, 60 * mm, 35 * mm])
        t.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), regular),
                    ("FONTSIZE", (0, 0), (-1, -1), 8.5),
                    ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                    ("ALIGN", (3, 0), (3, -1), "RIGHT"),
                    ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#cccccc")),
                ]
            )
        )
        story += [Paragraph("Points", h2), t]

    if adjustments:
        arows: list[list[Any]] = [
            [
                Paragraph(h, strong)
                for h in (
                    "Effective",
                    "Order",
                    "Kind",
                    "Adjusts period",
                    "Points",
                    f"Amount ({cur})",
                )
            ]
        ]
        for a in adjustments:
            ap = adjusted[a.adjusts_period_id]
            arows.append(
                [
                    a.effective_at.astimezone(UTC).strftime("%d %b %Y %H:%M"),
                    Paragraph(esc(a.ref or "\u2014"), base),
                    a.kind,
                    f"{ap.period_start.astimezone(UTC):%d %b %Y} \u2013 "
                    f"{ap.period_end.astimezone(UTC):%d %b %Y}",
                    _points(a.points),
                    _exact(a.amount.amount, cur),
                ]
            )
        at = Table(
            arows, colWidths=[30 * mm, 38 * mm, 18 * mm, 46 * mm, 20 * mm, 28 * mm], repeatRows=1
        )
        at.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 1), (-1, -1), regular),
                    ("FONTSIZE", (0, 1), (-1, -1), 8),
                    ("ALIGN", (4, 0), (-1, -1), "RIGHT"),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ]
            )
        )
        story += [Paragraph("Adjustments: late events of closed periods, included above", h2), at]

    seal = (
        f"Sealed {period.closed_at.astimezone(UTC):{fmt}}. SHA-256 of the period's contents: "
        f"<font name='Courier' size='7'>{period.content_hash}</font>. The operator can verify the "
        "seal at any time; a closed statement never changes (late events are adjustments of a "
        "later period)."
        if closed and period.closed_at
        else "This period is open: this is a draft, not a demand for payment."
    )
    story += [Spacer(1, 6 * mm), Paragraph(seal, small)]

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.setFillColor(colors.HexColor("#777777"))
        canvas.drawString(15 * mm, 10 * mm, f"{operator} \u2022 {number} \u2022 {partner.name}")
        canvas.drawRightString(195 * mm, 10 * mm, f"Page {doc.page}")
        if not closed:
            canvas.setFont(bold, 90)
            canvas.setFillColor(colors.Color(0.85, 0.1, 0.1, alpha=0.12))
            canvas.translate(105 * mm, 150 * mm)
            canvas.rotate(40)
            canvas.drawCentredString(0, 0, "DRAFT")
        canvas.restoreState()

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=18 * mm,
        title=f"Settlement statement {number}",
        author=operator,
        subject=f"{partner.name}, {cur}",
        creator="Coalition",
        invariant=1,
    )
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return out.getvalue()
