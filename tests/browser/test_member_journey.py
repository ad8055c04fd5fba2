"""The member app's main journey in a real browser: a member signs up, a partner earns for them
through the API, the member sees the points (live), makes a code with "Pay with points", the
partner redeems it through the API, and the member sees it in the activity."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.browser.conftest import DESKTOP, PHONE, LiveServer, OpenPage, shoot, sign_in
from tests.gateway import gql_helpers as g

expect = pytest.importorskip("playwright.async_api").expect
pytestmark = pytest.mark.browser


@pytest.fixture
async def api(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.base_url) as client:
        yield client


async def test_sign_up_earn_pay_with_points_and_see_it_in_the_activity(
    open_page: OpenPage, live: LiveServer, api: httpx.AsyncClient
) -> None:
    op = await g.operator_token(api, live.engine)
    shop = await g.setup_partner(api, op, name="Corner Shop", base_rate="1", hold_days=0)
    email, password = f"web-{secrets.token_hex(4)}@example.com", "a-long-password-1"

    page = await open_page(PHONE)
    await page.goto("/app")
    await shoot(page, live, "journey-welcome")
    await page.get_by_role("link", name="Create an account").click()
    await page.get_by_label("Your name").fill("Wendy Web")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Welcome to Coalition!")).to_be_visible()
    card = (await page.locator(".mono").first.inner_text()).replace(" ", "")
    assert re.fullmatch(r"\d{16}", card), card
    await shoot(page, live, "journey-signed-up")

    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in and allow").click()
    await page.wait_for_url("**/app#/")
    available = page.locator(".big [data-balance=available]")
    await expect(available).to_have_text("0")
    await expect(page.locator("#live")).to_have_text("Live")

    # The partner earns through the API: the open page shows the points without a reload.
    earned = await g.gql(
        api,
        g.EARN,
        {
            "input": {
                "cardNumber": card,
                "amount": g.rub("1500.00"),
                "category": "shop",
                "orderRef": "W-1",
                "idempotencyKey": g.key(),
            }
        },
        shop.token,
    )
    assert earned["earn"]["transaction"]["points"] == 1500, earned
    await expect(available).to_have_text(re.compile(r"^1[,.\s\u202f\u00a0]?500$"))

    await page.get_by_role("button", name="Pay with points").click()
    digits = page.locator(".code .digits")
    await expect(digits).to_be_visible()
    await expect(page.locator(".code img.qr")).to_be_visible()
    assert await page.locator(".code img.qr").evaluate("img => img.naturalWidth > 0")
    await expect(page.get_by_role("timer")).to_have_text(re.compile(r"^Expires in \d+:\d\d$"))
    code = (await digits.inner_text()).replace(" ", "")
    assert re.fullmatch(r"\d{12}", code), code
    await shoot(page, live, "journey-pay-with-points")

    # The partner takes 400 points with the code, through the API.
    held = await g.gql(
        api,
        g.AUTHORIZE,
        {
            "input": {
                "redemptionCode": code,
                "points": 400,
                "purchaseAmount": g.rub("900.00"),
                "orderRef": "W-2",
                "idempotencyKey": g.key(),
            }
        },
        shop.token,
    )
    hold = held["authorizeRedemption"]["hold"]
    assert hold["points"] == 400, held
    captured = await g.gql(
        api,
        g.CAPTURE,
        {"input": {"holdId": hold["id"], "points": 400, "idempotencyKey": g.key()}},
        shop.token,
    )
    assert captured["captureRedemption"]["__typename"] == "CaptureRedemptionSuccess", captured
    await expect(available).to_have_text(re.compile(r"^1[,.\s\u202f\u00a0]?100$"))

    await page.get_by_role("link", name="Activity").click()
    first = page.locator("ol.activity > li").first
    await expect(first).to_contain_text("Paid with points at Corner Shop")
    await expect(first).to_contain_text("400")
    await expect(page.locator("ol.activity")).to_contain_text("Earned at Corner Shop")
    await expect(page.locator("ol.activity .breakdown").first).to_contain_text("Base: 1")
    await shoot(page, live, "journey-activity")

    # The same member at desktop width, in a new browser context, signs in again.
    desk = await open_page(DESKTOP)
    await sign_in(desk, email, password)
    await expect(desk.locator(".big [data-balance=available]")).to_have_text(
        re.compile(r"^1[,.\s\u202f\u00a0]?100$")
    )
