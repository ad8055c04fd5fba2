"""The operator console in a real browser: a live uvicorn server on its own database, one
Chromium for the session (Debian's `chromium` through Playwright's `executable_path`, or
Playwright's own browser), and an operator user to sign in with.

Self-contained on purpose (the member app's browser tests have their own conftest). When no
Chromium is found the tests are skipped with a message saying how to get one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.db import create_engine
from core.settings import Settings
from members import operators
from tests.db import create_test_database, drop_database

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="browser tests need Playwright for Python (pip install playwright)",
)

HOW_TO_GET_CHROMIUM = (
    "no Chromium found for the console's browser tests: install Debian's package "
    "(`apt-get install chromium`, found at /usr/bin/chromium), or Playwright's own browser "
    "(`playwright install chromium`), or set CHROMIUM=/path/to/chromium"
)
OPERATOR_EMAIL = "console-operator@example.com"
OPERATOR_PASSWORD = "console operator password"
SCREENSHOTS_ENV = "CONSOLE_SCREENSHOTS"  # keep the screenshots there (default: a temp dir)


def find_chromium() -> str | None:
    """A Chromium executable: $CHROMIUM, Debian's, another on PATH, or Playwright's own."""
    for candidate in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    own = _playwright_own_chromium()
    return own if own and os.access(own, os.X_OK) else None


def _playwright_own_chromium() -> str | None:
    """Where `playwright install chromium` puts its browser, if it did."""
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache/ms-playwright")
    found = sorted(cache.glob("chromium-*/chrome-linux*/chrome"))
    return str(found[-1]) if found else None


@dataclass(frozen=True)
class LiveServer:
    url: str
    db_uri: str
    settings: Settings


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def _add_operator_user(db_uri: str) -> None:
    engine = create_engine(db_uri)
    try:
        async with engine.begin() as conn:
            await operators.add(conn, email=OPERATOR_EMAIL, password=OPERATOR_PASSWORD)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def console_chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(HOW_TO_GET_CHROMIUM)
    return path


@pytest.fixture(scope="module")
def console_db() -> Iterator[tuple[str, str]]:
    admin, uri = create_test_database("coalition_console")
    try:
        yield admin, uri
    finally:
        drop_database(admin, uri)


@pytest.fixture(scope="module")
async def console_server(
    console_chromium: str, console_db: tuple[str, str]
) -> AsyncIterator[LiveServer]:
    """The app under uvicorn in a thread, on a socket bound before it starts (requests wait in
    the socket's backlog until it serves: nothing polls for readiness)."""
    import uvicorn

    from gateway.app import create_app

    _, uri = console_db
    await _add_operator_user(uri)
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        database_url=uri,
        public_url=url,
        rate_limit_oauth_ip="1000000/minute",
        rate_limit_register="1000000/hour",
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, database_url=uri), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield LiveServer(url, uri, settings)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        sock.close()


@pytest.fixture(scope="module")
async def console_browser(console_chromium: str) -> AsyncIterator[Any]:
    """One headless Chromium for the console's tests."""
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=console_chromium, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


class PageProblems:
    """Console errors and uncaught exceptions of a page, collected as they happen."""

    def __init__(self, page: Any) -> None:
        self.seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.seen.append(f"uncaught: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.seen.append(f"console {message.type}: {message.text} at {message.location}")


@pytest.fixture
async def console_page(
    console_browser: Any, console_server: LiveServer
) -> AsyncIterator[tuple[Any, PageProblems]]:
    """A fresh browser context (its own storage) with a page whose problems are collected;
    the test asserts there were none."""
    context = await console_browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    problems = PageProblems(page)
    try:
        yield page, problems
    finally:
        await context.close()


@pytest.fixture(scope="module")
def console_shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: $CONSOLE_SCREENSHOTS, or a temporary folder."""
    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("console-screens"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots
