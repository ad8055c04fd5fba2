"""A partner's statement rendered as a PDF invoice (pure CPU: callers run it off the event loop)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any

from core.clock import utcnow
from settlement import pdf_text
from settlement.records import Period, Statement


@dataclass(frozen=True)
class _Line:
    description: str
    points: int | None
    price: str
    amount: str


_LABELS = {
    ("earn", False): "Points issued to your customers",
    ("bonus", False): "Bonus points you awarded",
    ("reversal", False): "Points reversed (refunds of purchases)",
    ("capture", False): "Points accepted as payment",
    ("reward", False): "Points redeemed for your rewards",
    ("return", False): "Points returned (refunds of payments in points)",
    ("earn", True): "Adjustment: points issued in a closed period",
    ("bonus", True): "Adjustment: bonus points awarded in a closed period",
    ("reversal", True): "Adjustment: points reversed in a closed period",
    ("capture", True): "Adjustment: points accepted in a closed period",
    ("reward", True): "Adjustment: points redeemed for rewards in a closed period",
    ("return", True): "Adjustment: points returned in a closed period",
}
# Kinds that add to their part (issuance or reimbursement); the others take from it.
_ADDING = ("earn", "bonus", "capture", "reward")


def render_statement_pdf(
    *,
    period: Period,
    statement: Statement | None,
    partner: Any,
    operator: str,
    groups: Sequence[Any],
    adjustments: list[Any],
    adjusted: dict[uuid.UUID, Any],
) -> bytes:
    """Render a statement PDF from what `exports.statement_pdf` read (pure CPU: runs off the loop).

    What a finance team files: parties, period, line items (points x unit price at each
    agreement in force), the rounded charge and reimbursement, the net and who pays whom,
    adjustments, breakage, and the seal of a closed period; an open period's PDF is a DRAFT."""
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
    regular, bold = pdf_text.fonts()

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
        signed = exact if g.kind in _ADDING else -exact
        label = _LABELS[(g.kind, bool(g.adjustment))]
        part = "issuance" if g.kind in ("earn", "bonus", "reversal") else "reimbursement"
        events = f"{g.n} event{'s' if g.n != 1 else ''}"
        lines[part].append(
            _Line(
                f"{label} <font size='7.5' color='#666666'>({events})</font>",
                int(g.points) if g.kind in _ADDING else -int(g.points),
                pdf_text.price(g.price),
                pdf_text.exact(signed, cur),
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
        for it in items or [_Line("No events in the period", None, "", pdf_text.money(zero, cur))]:
            rows.append(
                [
                    Paragraph(it.description, base),
                    "" if it.points is None else pdf_text.points(it.points),
                    it.price,
                    it.amount,
                ]
            )
        rows.append(
            [
                Paragraph(total_label, strong),
                "",
                "",
                Paragraph(
                    pdf_text.money(total, cur), ParagraphStyle("t", parent=right, fontName=bold)
                ),
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
        "B. Redemption: points accepted as payment or for rewards",
        lines["reimbursement"],
        "Reimbursement (B)",
        reimb,
    )
    rows.append(
        [
            Paragraph("Net (B \u2212 A)", strong),
            "",
            "",
            Paragraph(pdf_text.money(net, cur), ParagraphStyle("n", parent=right, fontName=bold)),
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
        amount = f"<font name='{bold}'>{pdf_text.money(net, cur)} {cur}</font>"
        pay = f"{esc(operator)} pays {esc(partner.name)} {amount}."
    elif net < 0:
        amount = f"<font name='{bold}'>{pdf_text.money(-net, cur)} {cur}</font>"
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
                pdf_text.points(st.issued_points),
                "Points redeemed",
                pdf_text.points(st.redeemed_points),
            ],
            [
                "Points reversed",
                pdf_text.points(st.reversed_points),
                "Points returned",
                pdf_text.points(st.returned_points),
            ],
            [
                "Breakage (expired, issued by you)",
                pdf_text.points(st.breakage_points),
                f"Breakage value ({cur}, not paid)",
                pdf_text.money(st.breakage_value.amount, cur),
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
                    pdf_text.points(a.points),
                    pdf_text.exact(a.amount.amount, cur),
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
