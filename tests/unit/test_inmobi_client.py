"""The InMobi client against the sandbox over HTTP: sessions, errors by reaction, secrets."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from worker.errors import (
    AuthError,
    FatalError,
    FileRejectedError,
    TransientError,
    UnknownSegmentError,
)
from worker.inmobi import (
    InMobiClient,
    InMobiConfig,
    SessionManager,
    multipart_file,
    raise_for_status,
)
from worker.sandbox.server import SandboxThread


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread() as s:
        yield s


def config(url: str, key: str = "sandbox-secret", **kw: Any) -> InMobiConfig:
    return InMobiConfig(
        base_url=url,
        session_url=url,
        username="sandbox-user",
        account_id="sandbox-account",
        api_key=SecretStr(key),
        property_id="1234567890",
        **kw,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(url: str, http: aiohttp.ClientSession, **kw: Any) -> InMobiClient:
    cfg = config(url, **kw)
    return InMobiClient(cfg, http, SessionManager(cfg, http, time.monotonic))


def csv_gz(*ids: str) -> bytes:
    return gzip.compress(("\n".join(("ida", *ids)) + "\n").encode())


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, FileRejectedError),
        (401, AuthError),
        (404, UnknownSegmentError),
        (413, FileRejectedError),
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
        (418, TransientError),
    ],
)
def test_every_status_maps_to_one_reaction(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        raise_for_status(status, {"message": "x"}, {}, "upload")


def test_retry_after_is_carried() -> None:
    with pytest.raises(TransientError) as exc:
        raise_for_status(429, None, {"Retry-After": "7"}, "upload")
    assert exc.value.retry_after == 7.0


async def test_one_session_serves_many_requests(
    sandbox: SandboxThread, http: aiohttp.ClientSession
) -> None:
    c = client(sandbox.url, http)
    seg = await c.create_segment("CLIENT_TEST_A", 30)
    for _ in range(3):
        assert await c.upload(seg, "add", csv_gz("6f1c2a3b-0000-4000-8000-000000000001")) == 1
    assert c.sessions.generated == 1


async def test_revoked_session_is_replaced_once_and_the_request_succeeds(
    sandbox: SandboxThread, http: aiohttp.ClientSession
) -> None:
    c = client(sandbox.url, http)
    seg = await c.create_segment("CLIENT_TEST_B", 30)
    async with http.post(f"{sandbox.url}/_sandbox/sessions/revoke") as r:
        assert r.status == 200
    assert await c.upload(seg, "remove", csv_gz("6f1c2a3b-0000-4000-8000-000000000001")) == 1
    assert c.sessions.generated == 2


async def test_session_budget_stops_generation_with_a_retry_after(
    sandbox: SandboxThread, http: aiohttp.ClientSession
) -> None:
    c = client(sandbox.url, http, max_sessions_per_hour=1)
    await c.create_segment("CLIENT_TEST_C", 30)
    async with http.post(f"{sandbox.url}/_sandbox/sessions/revoke") as r:
        assert r.status == 200
    with pytest.raises(TransientError) as exc:
        await c.create_segment("CLIENT_TEST_C", 30)
    assert exc.value.retry_after is not None and exc.value.retry_after > 3000
    assert c.sessions.generated == 1


async def test_bad_credentials_become_fatal_and_never_show_the_key(
    sandbox: SandboxThread, http: aiohttp.ClientSession
) -> None:
    c = client(sandbox.url, http, key="wrong-key-123", auth_fatal_after=2)
    with pytest.raises(AuthError) as first:
        await c.create_segment("X", 30)
    with pytest.raises(FatalError) as second:
        await c.create_segment("X", 30)
    for exc in (first.value, second.value):
        assert "wrong-key-123" not in str(exc)


async def test_unreachable_api_is_transient(http: aiohttp.ClientSession) -> None:
    c = client("http://127.0.0.1:9", http, timeout_seconds=2)
    with pytest.raises(TransientError):
        await c.create_segment("X", 30)


async def test_multipart_body_is_what_aiohttp_form_data_writes() -> None:
    payload = gzip.compress(b"ida\nabc\n")
    body, content_type = multipart_file("file", "users 1.csv.gz", "application/gzip", payload)
    form = aiohttp.FormData()
    form.add_field("file", payload, filename="users 1.csv.gz", content_type="application/gzip")
    writer = form()
    written = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            written.extend(chunk)

    await writer.write(Sink())  # type: ignore[arg-type]
    # Same bytes but for the random boundary.
    ours = content_type.removeprefix("multipart/form-data; boundary=")
    theirs = writer.boundary
    assert body.replace(ours.encode(), theirs.encode()) == bytes(written)
    assert content_type.replace(ours, theirs) == writer.headers["Content-Type"]
