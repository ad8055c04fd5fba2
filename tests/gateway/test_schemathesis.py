"""schemathesis against the committed GraphQL schema, on a real uvicorn server, with valid
credentials of each role: every generated call succeeds or returns a typed or validation
error; never a 5xx, never a masked unexpected error."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.gateway import oauth_helpers as oh
from tests.gateway.gql_helpers import (
    CREATE_CLIENT,
    CREATE_PARTNER,
    REGISTER,
    SET_AGREEMENT,
    SET_EARN_RULE,
)

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.graphql.from_path(ROOT / "schema.graphql")
ROLES = ("anonymous", "member", "partner", "operator")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(db_uri: str) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": db_uri,
        "PUBLIC_URL": oh.BASE_URL,  # the helpers build redirect URIs on it "RATE_LIMIT_PER_SECOND": "100000",
        "RATE_LIMIT_BURST": "100000",
        "RATE_LIMIT_OAUTH_IP": "1000000/minute",
        "RATE_LIMIT_OAUTH_CLIENT": "1000000/minute",
        "RATE_LIMIT_REGISTER": "1000000/hour",
        "COALITION_APP": "schemathesis",
    }
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"coalition-schemathesis-{port}.log", "w+b")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "gateway.app:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(300):  # wait (bounded) until the server answers
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read().decode())
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                with socket.socket() as s:
                    s.settimeout(0.1)
                    s.connect_ex(("127.0.0.1", port))
        else:
            raise RuntimeError("server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.seek(0)
        server_log = log.read().decode()
        log.close()
        # Unexpected errors are logged in full by the server: there must be none.
        assert "Traceback" not in server_log, server_log[-5000:]


@pytest.fixture(scope="module")
def tokens(live_server: str, db_uri: str) -> dict[str, str | None]:
    async def make() -> dict[str, str | None]:
        async with httpx.AsyncClient(base_url=live_server) as c:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gateway.cli", "bootstrap-operator"],
                capture_output=True,
                text=True,
                env={**os.environ, "DATABASE_URL": db_uri},
                cwd=ROOT,
                check=True,
            )
            out = done.stdout.strip().splitlines()[-1]
            creds = json.loads(out)
            op = (
                await oh.client_credentials_token(
                    c, _Creds(creds["client_id"], creds["client_secret"])
                )
            )["access_token"]

            async def q(query: str, variables: dict, token: str | None) -> dict:
                r = await c.post(
                    "/graphql",
                    json={"query": query, "variables": variables},
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                )
                return r.json()["data"]

            pid = (
                await q(
                    CREATE_PARTNER,
                    {"input": {"name": "Fuzz", "category": "c", "currency": "RUB"}},
                    op,
                )
            )["createPartner"]["partner"]["id"]
            await q(SET_EARN_RULE, {"input": {"partnerId": pid, "baseRate": "1"}}, op)
            # An agreement in force, or every earn and redemption is refused before the ledger.
            await q(
                SET_AGREEMENT,
                {
                    "input": {
                        "partnerId": pid,
                        "issuePrice": "1",
                        "redemptionPrice": "1",
                        "effectiveFrom": "2020-01-01T00:00:00Z",
                    }
                },
                op,
            )
            cl = (
                await q(
                    CREATE_CLIENT,
                    {
                        "input": {
                            "partnerId": pid,
                            "scopes": [
                                "points:earn",
                                "points:redeem",
                                "catalog:write",
                                "settlement:read",
                            ],
                        }
                    },
                    op,
                )
            )["createPartnerClient"]
            partner = (
                await oh.client_credentials_token(c, _Creds(cl["clientId"], cl["clientSecret"]))
            )["access_token"]
            email, password = "fuzz-member@example.com", "fuzz-password-1"
            await q(REGISTER, {"input": {"email": email, "password": password, "name": "F"}}, None)
            member = (await oh.member_tokens(c, email=email, password=password))["access_token"]
        return {"anonymous": None, "member": member, "partner": partner, "operator": op}

    return asyncio.run(make())


class _Creds:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, role, live_server, tokens):
    token = tokens[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=f"{live_server}/graphql", headers=headers)
    assert response.status_code < 500, response.text
    # A token's fresh lifetime is 10 minutes: a refused token here would be a bug, not a role.
    assert response.status_code in (200, 400), response.text
    body = response.json()
    for error in body.get("errors") or []:
        assert error["message"] != "Unexpected error.", (case.body, body)
