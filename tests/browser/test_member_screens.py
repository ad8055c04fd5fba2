"""Every screen of the member app over the demo coalition (what `make run` serves), at phone and
desktop widths: each shows the demo member's data, every field has a label, errors read as
sentences, the keyboard reaches "Pay with points", and signing out revokes the token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway import demo
from tests.browser.conftest import DESKTOP, PHONE, LiveServer, OpenPage, shoot, sign_in

expect = pytest.importorskip("playwright.async_api").expect
pytestmark = pytest.mark.browser

ANNA, PASSWORD = "anna@example.com", "demo-password"
ANNA_CARD = "7000000000000005"
ERROR_CODE = re.compile(r"\b[A-Z]+_[A-Z_]+\b")  # MEMBER_NOT_FOUND and the like

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && el.labels.length === 0)
  .map(el => el.name || el.id)"""


@pytest.fixture(scope="module")
async def coalition(live: LiveServer) -> AsyncIterator[LiveServer]:
    """The demo coalition loaded into this module's database."""
    await demo.load(live.engine, live.settings)
    yield live


def luhn_card(body: str) -> str:
    """`body` (15 digits) with its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


async def _labelled(page: Any) -> None:
    assert await page.evaluate(UNLABELLED) == [], "fields without a label"


async def _screen(page: Any, live: LiveServer, link: str, heading: str, name: str) -> None:
    await page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
    await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Loading")).to_have_count(0)
    await _labelled(page)
    await shoot(page, live, name)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_every_screen_shows_the_demo_members_data(
    open_page: OpenPage, coalition: LiveServer, viewport: dict[str, int]
) -> None:
    live = coalition
    page = await open_page(viewport)
    await page.goto("/app")
    await _labelled(page)
    await shoot(page, live, "welcome")
    await page.get_by_role("link", name="Create an account").click()
    await _labelled(page)
    await shoot(page, live, "signup")

    await sign_in(page, ANNA, PASSWORD)
    await expect(page.locator(".big [data-balance=available]")).not_to_have_text("0")
    await expect(page.get_by_text("Pending", exact=True)).to_be_visible()
    await expect(page.get_by_text("On hold", exact=True)).to_be_visible()
    await expect(page.get_by_text("Expiring in 30 days")).to_be_visible()
    await expect(page.get_by_role("heading", name="Your tier")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("Live")
    await _labelled(page)
    await shoot(page, live, "home")
    await page.get_by_role("button", name="Pay with points").click()
    await expect(page.locator(".code img.qr")).to_be_visible()
    await shoot(page, live, "pay-with-points")

    await _screen(page, live, "Activity", "Activity", "activity")
    await expect(page.locator("ol.activity > li")).to_have_count(10)
    await expect(page.locator("ol.activity")).to_contain_text("Earned at")
    await expect(page.locator("ol.activity .breakdown").first).to_contain_text("Base:")
    await page.get_by_role("button", name="Show more").click()
    await expect(page.locator("ol.activity > li")).to_have_count(20)

    await _screen(page, live, "Rewards", "Rewards", "rewards")
    await expect(page.locator(".reward")).not_to_have_count(0)
    await expect(page.locator(".voucher").first).to_have_text(re.compile(r"\S"))

    await _screen(page, live, "Offers", "Offers", "offers")
    await expect(page.locator(".offer")).not_to_have_count(0)
    await expect(page.get_by_text("Activated").first).to_be_visible()

    await _screen(page, live, "Partners", "Partners", "partners")
    await expect(page.locator(".partner").filter(has_text="Northwind Fuel")).to_contain_text(
        re.compile(r"points? per")
    )

    await _screen(page, live, "Transfer", "Transfer points", "transfer")
    await _screen(page, live, "Account", "Account", "account")
    await expect(page.locator("#referral-code")).to_have_text(re.compile(r"\w{4,}"))
    await expect(page.locator("table tbody tr")).not_to_have_count(0)


async def test_errors_read_as_sentences_never_as_codes(
    open_page: OpenPage, coalition: LiveServer
) -> None:
    page = await open_page(PHONE)
    await sign_in(page, ANNA, PASSWORD)
    await page.get_by_role("link", name="Transfer").click()
    alert = page.get_by_role("alert")

    async def transfer(card: str, points: str) -> None:
        await page.get_by_label("Their card number").fill(card)
        await page.get_by_label("Points to give").fill(points)
        await page.get_by_role("button", name="Transfer points").click()

    await transfer(luhn_card("799999999999999"), "10")
    await expect(alert).to_have_text(re.compile("couldn't find a member with that card number"))
    await transfer(ANNA_CARD, "10")
    await expect(alert).to_have_text(re.compile("can't transfer to yourself"))
    await transfer("7000000000000013", "20000")  # over TRANSFER_DAILY_LIMIT (10,000)
    await expect(alert).to_have_text(re.compile("more than you can transfer in one day"))
    await shoot(page, coalition, "transfer-error")
    assert not ERROR_CODE.search(await page.locator("main").inner_text())

    await page.get_by_role("link", name="Offers").click()
    await page.get_by_label("Promo code").fill("welcome10")
    await page.get_by_role("button", name="Apply code").click()
    await expect(page.get_by_role("status").filter(has_text="Code applied")).to_be_visible()
    await page.get_by_label("Promo code").fill("welcome10")
    await page.get_by_role("button", name="Apply code").click()
    await expect(alert).to_have_text(re.compile("promo code isn't valid"))
    assert not ERROR_CODE.search(await page.locator("main").inner_text())


async def test_the_keyboard_reaches_pay_with_points(
    open_page: OpenPage, coalition: LiveServer
) -> None:
    page = await open_page(PHONE)
    await sign_in(page, ANNA, PASSWORD)
    for _ in range(40):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("() => document.activeElement.textContent")
        if focused == "Pay with points":
            break
    else:
        pytest.fail("Tab never reached the Pay with points button")
    await page.keyboard.press("Enter")
    await expect(page.locator(".code .digits")).to_have_text(re.compile(r"^\d{4} \d{4} \d{4}$"))


async def test_signing_out_revokes_the_token(open_page: OpenPage, coalition: LiveServer) -> None:
    page = await open_page(DESKTOP)
    await sign_in(page, ANNA, PASSWORD)
    stored = await page.evaluate("() => JSON.parse(sessionStorage.getItem('coalition.tokens'))")
    await page.get_by_role("link", name="Account").click()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    assert await page.evaluate("() => sessionStorage.getItem('coalition.tokens')") is None
    async with httpx.AsyncClient(base_url=coalition.base_url) as api:
        r = await api.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {stored['access']}"},
        )
        assert r.status_code == 401, r.text
        assert r.json()["errors"][0]["extensions"]["code"] == "TOKEN_REVOKED"
        refreshed = await api.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": stored["refresh"],
                "client_id": "coalition-app",
            },
        )
        assert refreshed.status_code == 400, refreshed.text
