"""A webhook receiver for the tests: a minimal HTTP/1.1 endpoint on 127.0.0.1 (the `receiver`
fixture of tests/gateway/conftest.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Receiver:
    """A minimal HTTP/1.1 endpoint on 127.0.0.1: records each request, answers `statuses`
    in turn (then 200); `hold` makes it wait before answering (a delivery in flight)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.statuses.pop(0) if self.statuses else 200
                self.requests.append((headers, body, status))
                self.arrived.set()
                if self.hold is not None:
                    await self.hold.wait()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def delivered(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b, s in self.requests if s == 200]
