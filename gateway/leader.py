"""The scheduler's leader: which process of the deployment runs the scheduled jobs.

`coalition serve --workers N` (or several machines) runs N copies of the app; the settlement,
referral and tier-review loops must run in one of them only. Each process keeps a connection
of its own and tries a session advisory lock on it (`LEADER_LOCK`); the one that holds it runs
the jobs, the others try again every `RETRY_SECONDS`. A leader that dies loses its connection,
PostgreSQL releases the lock, and a standby takes over within `RETRY_SECONDS`; a leader whose
connection breaks stops its jobs at its next check. The jobs also keep their own advisory
locks, so the short overlap a broken connection can cause runs nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg

from core.db import libpq_uri, long_lived_connection

log = logging.getLogger(__name__)

LEADER_LOCK = 727_278  # settlement's is 727_275, the referral sweep's 727_276, tiers' 727_277
RETRY_SECONDS = 5.0  # a standby's interval between tries, and the wait after a lost connection
CHECK_SECONDS = 5.0  # the leader's interval between checks that its session still holds

Job = Callable[[], Coroutine[Any, Any, None]]


class Leadership:
    """Runs `jobs` while this process holds the leader lock (see the module docstring).
    `state` is what /healthz reports: "starting", "leader" or "standby"."""

    def __init__(self, url: str, jobs: list[Job]) -> None:
        self.url = libpq_uri(url)
        self.jobs = jobs
        self.state = "starting"

    async def run(self) -> None:
        """Contend for the lock until cancelled."""
        while True:
            try:
                async with await long_lived_connection(self.url, "coalition-leader") as conn:
                    await self._wait_for_lock(conn)
                    await self._lead(conn)
            except (psycopg.Error, OSError) as exc:
                log.warning("scheduler leadership: connection lost (%s); trying again", exc)
            self.state = "standby"
            await asyncio.sleep(RETRY_SECONDS)

    async def _wait_for_lock(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK])
            row = await cur.fetchone()
            if row is not None and row[0]:
                return
            self.state = "standby"
            await asyncio.sleep(RETRY_SECONDS)

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Run the jobs for as long as the session (and so the lock) lives."""
        self.state = "leader"
        log.info("scheduler leadership: this process runs the scheduled jobs")
        tasks = [asyncio.create_task(job()) for job in self.jobs]
        try:
            while True:
                await asyncio.sleep(CHECK_SECONDS)
                await conn.execute("SELECT 1")  # raises once the session is gone
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
