"""The operator console in headless Chromium: an operator signs in, creates a partner with an
agreement, an earn rule and an API client (its secret shown once), runs and closes a settlement
period and downloads the partner's statement; every screen at phone and desktop widths, with
no console error on any page."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx

from core.db import create_engine
from ledger import service as ledger
from members import service as members
from tests.browser.console.conftest import (
    OPERATOR_EMAIL,
    OPERATOR_PASSWORD,
    LiveServer,
    PageProblems,
)

WIDTHS = (390, 1280)


async def sign_in(page: Any, server: LiveServer) -> None:
    await page.goto(f"{server.url}/console")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Email").fill(OPERATOR_EMAIL)
    await page.get_by_label("Password").fill(OPERATOR_PASSWORD)
    await page.get_by_role("button", name="Sign in and allow").click()
    await page.get_by_role("heading", name="Partners", exact=True).wait_for()


async def _past_earn(db_uri: str, partner_id: str, at: datetime) -> str:
    """A member and an earn at the partner at `at` (in the past: a settlement period may only
    end in the past, so the event must be earlier than now)."""
    engine = create_engine(db_uri)
    try:
        async with engine.begin() as conn:
            m = await members.create(
                conn, email=f"t-{secrets.token_hex(4)}@example.com", name="Tia"
            )
            await ledger.earn(
                conn,
                actor="test",
                idempotency_key=f"console-{secrets.token_hex(4)}",
                member_id=m.id,
                partner_id=uuid.UUID(partner_id),
                points=150,
                hold_days=0,
                validity_months=24,
                ref="CONSOLE-1",
                amount=Decimal("150.00"),
                currency="RUB",
                category="fuel",
                at=at,
            )
        return m.card_number
    finally:
        await engine.dispose()


async def test_an_operator_sets_up_a_partner_and_settles_a_period(
    console_page: tuple[Any, PageProblems], console_server: LiveServer, tmp_path: Path
) -> None:
    page, problems = console_page
    server = console_server
    await sign_in(page, server)

    # A partner...
    name = f"Test Fuel {secrets.token_hex(3)}"
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Category").fill("fuel")
    await page.get_by_role("button", name="Create partner").click()
    await page.get_by_role("heading", name=name).wait_for()
    partner_id = re.search(r"#/partners/([0-9a-f-]+)$", page.url).group(1)  # type: ignore[union-attr]

    # ... its agreement (in force since 2020, so yesterday's purchase is priced) ...
    await page.get_by_label("Issue price per point").fill("1.20")
    await page.get_by_label("Redemption price per point").fill("0.95")
    await page.get_by_label("In force from (your local time)").fill("2020-01-01T00:00")
    await page.get_by_role("button", name="Record agreement").click()
    await page.get_by_role("cell", name="1.20 RUB").wait_for()
    assert await page.get_by_role("status").inner_text() == "The agreement was recorded."

    # ... its earn rule ...
    await page.get_by_label("Points per currency unit").fill("1")
    await page.get_by_role("button", name="Put rule in force").click()
    await page.get_by_text("The earn rule is in force.").wait_for()

    # ... and an API client, whose secret is shown once and works.
    await page.get_by_role("button", name="Create client").click()
    client_id = await page.get_by_test_id("client-id").inner_text()
    secret = await page.get_by_test_id("client-secret").inner_text()
    async with httpx.AsyncClient() as http:
        token = await http.post(
            f"{server.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
    assert token.status_code == 200 and "points:earn" in token.json()["scope"]
    await page.reload()
    await page.get_by_role("heading", name="API clients").wait_for()
    content = await page.content()
    assert client_id in content and secret not in content

    # Yesterday's purchase at the partner; then the period of yesterday is run and closed.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    await _past_earn(server.db_uri, partner_id, yesterday + timedelta(hours=12))
    await page.get_by_role("link", name="Settlement").click()
    await page.get_by_label("First day").fill(yesterday.date().isoformat())
    await page.get_by_label("Ends before").fill(today.date().isoformat())
    await page.get_by_role("button", name="Run settlement").click()
    await page.get_by_role("heading", name="Statements").wait_for()
    row = await page.get_by_role("row").filter(has_text=name).inner_text()
    assert "150" in row and "180.00 RUB" in row  # 150 x 1.20
    await page.get_by_role("button", name="Close and seal this period").click()
    await page.get_by_text("The period is closed and sealed.").wait_for()
    assert await page.get_by_role("button", name="Close and seal this period").count() == 0

    # The statement's CSV, downloaded through the page (with the operator's token).
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name=f"Download the CSV statement of {name}").click()
    download = await download_info.value
    csv = await anyio.Path(await download.path()).read_text(encoding="utf-8")
    assert download.suggested_filename.endswith(".csv")
    assert "CONSOLE-1" in csv and "150" in csv
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name=f"Download the PDF statement of {name}").click()
    download = await download_info.value
    assert (await anyio.Path(await download.path()).read_bytes())[:5] == b"%PDF-"

    # Reconciliation: the partner's file disagrees on the points.
    upload = tmp_path / "northwind-december.csv"
    await anyio.Path(upload).write_text("order_ref,kind,points,amount\nCONSOLE-1,earn,140,150.00\n")
    await page.get_by_label("Partner", exact=True).select_option(label=name)
    await page.get_by_label("The partner's file (CSV)").set_input_files(str(upload))
    await page.get_by_role("button", name="Reconcile").click()
    await page.get_by_role("table", name="Discrepancies").wait_for()
    report = await page.get_by_role("table", name="Discrepancies").inner_text()
    assert "Points or amount differ" in report

    assert problems.seen == []


async def test_every_screen_at_phone_and_desktop_widths(
    console_page: tuple[Any, PageProblems], console_server: LiveServer, console_shots: Path
) -> None:
    page, problems = console_page
    server = console_server
    await page.goto(f"{server.url}/console")
    await page.get_by_role("button", name="Sign in").wait_for()
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=console_shots / f"signin-{width}.png", full_page=True)
    await sign_in(page, server)
    screens = [
        ("partners", "#/partners", "New partner"),
        ("members", "#/members", "Members"),
        ("liability", "#/liability", "Outstanding now"),
        ("settlement", "#/settlement", "Run a period"),
        ("health", "#/health", "Points expiry"),
    ]
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        for name, hash_, heading in screens:
            await page.goto(f"{server.url}/console{hash_}")
            await page.get_by_role("heading", name=heading, exact=True).wait_for()
            await page.screenshot(path=console_shots / f"{name}-{width}.png", full_page=True)
        await page.goto(f"{server.url}/console#/members/nobody@example.com")
        await page.get_by_text("No member has this card number or email.").wait_for()
    assert problems.seen == []
