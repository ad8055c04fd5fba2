"""Browser tests: headless Chromium driven by Playwright (async API) against a real uvicorn.

Chromium is, in order: $CHROMIUM_PATH, Playwright's own browser when one is installed
(`playwright install chromium`), or Debian's `chromium` package (`apt-get install chromium`,
as .ci/run does). With none of them, or without the playwright package, every browser test is
skipped with a message saying how to get one.

Each test module gets its own database (copied from the migrated template) and its own server:
uvicorn in a thread, on a socket bound before the app is built (so `PUBLIC_URL`, the OAuth
issuer and the app's redirect URI, name the real port). One browser serves the whole session;
each test opens contexts of its own. `open_page` collects console errors and uncaught page
errors, and the test fails if any page logged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine
from core.settings import Settings
from gateway.app import create_app
from tests.db import create_test_database, drop_database

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
HOW_TO_GET_CHROMIUM = (
    "browser tests skipped: no Chromium found. Install Debian's package "
    "(`apt-get install -y chromium`), or Playwright's own (`.venv/bin/playwright install "
    "chromium`), or set CHROMIUM_PATH to a Chromium or Chrome executable"
)
# Where the screenshots go: $BROWSER_SCREENSHOTS, else a temporary folder of the session.
SCREENSHOTS_ENV = "BROWSER_SCREENSHOTS"


def _candidates(own: str | None) -> Iterator[str]:
    env = os.environ.get("CHROMIUM_PATH")
    if env:
        yield env
    if own:
        yield own
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            yield found


def find_chromium(own: str | None) -> str | None:
    """The first Chromium that exists: $CHROMIUM_PATH, Playwright's own (`own`), then PATH's."""
    return next((p for p in _candidates(own) if p and Path(p).is_file()), None)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $BROWSER_SCREENSHOTS, else a temporary folder of the session."""
    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("screens"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the session (skips when there is none)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is not installed (make install)")
    async with async_playwright() as pw:
        path = find_chromium(pw.chromium.executable_path)
        if path is None:
            pytest.skip(HOW_TO_GET_CHROMIUM)
        # As root (CI, containers) Chromium refuses to start without --no-sandbox.
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        chromium = await pw.chromium.launch(executable_path=path, args=args, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


class _Server(uvicorn.Server):
    """uvicorn that tells the test thread when it listens (no polling)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own handlers
        yield


@dataclass
class LiveServer:
    base_url: str
    db_uri: str
    settings: Settings
    engine: AsyncEngine
    shots: Path


@pytest.fixture(scope="module")
def live_db() -> Iterator[str]:
    admin, uri = create_test_database("coalition_web")
    try:
        yield uri
    finally:
        drop_database(admin, uri)


@pytest.fixture(scope="module")
async def live(live_db: str, screenshots: Path) -> AsyncIterator[LiveServer]:
    """The app served by a real uvicorn on 127.0.0.1, over this module's own database."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        database_url=live_db,
        public_url=base_url,
        rate_limit_oauth_ip="1000000/minute",
        rate_limit_register="1000000/hour",
    )
    app = create_app(settings, database_url=live_db)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not await asyncio.to_thread(server.ready.wait, 60):
            raise RuntimeError("the test server did not start within 60 s")
        engine = create_engine(live_db)
        try:
            yield LiveServer(base_url, live_db, settings, engine, screenshots)
        finally:
            await engine.dispose()
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        sock.close()


OpenPage = Callable[..., Awaitable[Any]]


@pytest.fixture
async def open_page(browser: Any, live: LiveServer) -> AsyncIterator[OpenPage]:
    """`await open_page(PHONE)`: a page in a new context of that viewport; after the test,
    asserts that no page logged a console error or threw an uncaught error."""
    contexts: list[Any] = []
    errors: list[str] = []

    async def open_(viewport: dict[str, int] = PHONE) -> Any:
        context = await browser.new_context(viewport=viewport, base_url=live.base_url)
        contexts.append(context)
        page = await context.new_page()
        page.on(
            "console",
            lambda m: (
                errors.append(f"{page.url}: console.{m.type}: {m.text}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: errors.append(f"{page.url}: uncaught: {e}"))
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert not errors, "the pages logged errors:\n" + "\n".join(errors)


async def sign_in(page: Any, email: str, password: str) -> None:
    """From the app's welcome screen: through the login page and back to the app's home."""
    await page.goto("/app")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in and allow").click()
    await page.wait_for_url("**/app#/")
    await page.get_by_role("heading", name="Your points").wait_for()


async def shoot(page: Any, live: LiveServer, name: str) -> Path:
    """A full-page screenshot `<name>-<width>.png` in the session's screenshot folder."""
    path = live.shots / f"{name}-{page.viewport_size['width']}.png"
    # From the top: a full-page shot of a scrolled page draws the sticky header mid-page.
    await page.evaluate("() => window.scrollTo(0, 0)")
    await page.screenshot(path=str(path), full_page=True)
    return path
