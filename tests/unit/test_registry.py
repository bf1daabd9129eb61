"""Schema Registry client against a tiny in-test registry: requests, answers, error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import test_utils, web

from worker.errors import FatalError, TransientError
from worker.registry import REGISTRY_CONTENT_TYPE, SchemaRegistryClient

SCHEMA = '{"type": "string"}'


@dataclass
class FakeRegistry:
    """Confluent's two endpoints; ``reply`` overrides the next answers when set."""

    schemas: dict[int, str] = field(default_factory=lambda: {1: SCHEMA})
    reply: web.StreamResponse | None = None
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    hang: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: bool = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.raw_path, dict(request.headers), body))
        if self.hanging:
            await self.hang.wait()  # released at teardown; the client times out first
        if self.reply is not None:
            return self.reply
        if request.method == "POST":
            return web.json_response({"id": 42}, content_type=REGISTRY_CONTENT_TYPE)
        schema = self.schemas.get(int(request.match_info["id"]))
        if schema is None:
            return web.json_response(
                {"error_code": 40403, "message": "Schema not found"}, status=404
            )
        return web.json_response({"schema": schema}, content_type=REGISTRY_CONTENT_TYPE)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/base/schemas/ids/{id}", self.handle)
        app.router.add_post("/base/subjects/{subject}/versions", self.handle)
        return app


@dataclass
class Harness:
    fake: FakeRegistry
    server: test_utils.TestServer
    session: aiohttp.ClientSession

    def client(self, timeout_seconds: float = 10, userinfo: str = "") -> SchemaRegistryClient:
        url = str(self.server.make_url("/base/"))
        if userinfo:
            url = url.replace("http://", f"http://{userinfo}@")
        return SchemaRegistryClient(url, self.session, timeout_seconds)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    fake = FakeRegistry()
    server = test_utils.TestServer(fake.app())
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Harness(fake, server, session)
    fake.hang.set()
    await server.close()


# --- fetch ----------------------------------------------------------------------------------------


async def test_fetch_returns_the_schema_text(harness: Harness) -> None:
    assert await harness.client().fetch(1) == SCHEMA
    method, path, headers, _ = harness.fake.requests[0]
    assert (method, path) == ("GET", "/base/schemas/ids/1")
    assert headers["Accept"] == REGISTRY_CONTENT_TYPE


async def test_fetch_of_an_unknown_id_returns_none(harness: Harness) -> None:
    assert await harness.client().fetch(7) is None


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (500, {}, None),
        (503, {"Retry-After": "7"}, 7.0),
        (429, {"Retry-After": "1.5"}, 1.5),
        (429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        (429, {"Retry-After": "inf"}, None),
        (401, {}, None),
        (400, {}, None),
    ],
)
async def test_fetch_failure_statuses_are_transient(
    harness: Harness, status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    harness.fake.reply = web.Response(status=status, text="<html>oops</html>", headers=headers)
    with pytest.raises(TransientError) as info:
        await harness.client().fetch(1)
    assert (info.value.status, info.value.retry_after) == (status, retry_after)


@pytest.mark.parametrize(
    "reply",
    [
        web.Response(status=200, text="not json"),
        web.json_response({"schemaType": "AVRO"}),
        web.json_response({"schema": {"type": "string"}}),
        web.json_response(["schema"]),
        web.Response(status=200, body=b"\xff\xfe"),
    ],
)
async def test_fetch_with_an_unusable_reply_is_transient(
    harness: Harness, reply: web.Response
) -> None:
    harness.fake.reply = reply
    with pytest.raises(TransientError, match="schema ID 1"):
        await harness.client().fetch(1)


async def test_unreachable_registry_is_transient_and_the_message_hides_credentials(
    harness: Harness,
) -> None:
    client = harness.client(userinfo="user:s3cret")
    await harness.server.close()
    with pytest.raises(TransientError) as info:
        await client.fetch(1)
    assert "unreachable" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_timeout_is_transient(harness: Harness) -> None:
    harness.fake.hanging = True
    with pytest.raises(TransientError, match="unreachable"):
        await harness.client(timeout_seconds=0.05).fetch(1)


async def test_credentials_in_the_url_are_sent_as_basic_auth(harness: Harness) -> None:
    await harness.client(userinfo="user:s3cret").fetch(1)
    _, _, headers, _ = harness.fake.requests[0]
    assert headers["Authorization"].startswith("Basic ")


# --- register -------------------------------------------------------------------------------------


async def test_register_posts_the_schema_and_returns_its_id(harness: Harness) -> None:
    schema_id = await harness.client().register("topic/a-value", SCHEMA)
    assert schema_id == 42
    method, path, headers, body = harness.fake.requests[0]
    assert (method, path) == ("POST", "/base/subjects/topic%2Fa-value/versions")
    assert headers["Content-Type"] == REGISTRY_CONTENT_TYPE
    assert json.loads(body) == {"schema": SCHEMA}


@pytest.mark.parametrize("status", [401, 403, 409, 422])
async def test_register_refused_by_the_registry_is_fatal(harness: Harness, status: int) -> None:
    harness.fake.reply = web.json_response(
        {"error_code": status * 100 + 1, "message": "Schema being registered is incompatible"},
        status=status,
    )
    with pytest.raises(FatalError, match=f"HTTP {status}: Schema being registered"):
        await harness.client().register("s", SCHEMA)


@pytest.mark.parametrize(
    "reply",
    [
        web.Response(status=503),
        web.Response(status=429, headers={"Retry-After": "2"}),
        web.json_response({"id": "42"}),
        web.json_response({}),
    ],
)
async def test_register_failures_worth_retrying_are_transient(
    harness: Harness, reply: web.Response
) -> None:
    harness.fake.reply = reply
    with pytest.raises(TransientError, match="registering subject 's'"):
        await harness.client().register("s", SCHEMA)
