"""The sandbox over HTTP (in-process aiohttp test server): CONTRACT section 5, admin and registry."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from worker.sandbox import ManualClock, SandboxConfig, create_app
from worker.sandbox.context import SANDBOX, SandboxContext

Client = TestClient[web.Request, web.Application]
PROPERTY = "1234567890"
SECRET = "sandbox-secret"
SESSION_PATH = "/v1.0/generatesession/generate"
U1 = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
U2 = "0c6a7a2e-3f1b-4b8e-9d4f-1a2b3c4d5e6f"
U3 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(SandboxConfig(), clock=clock))) as test_client:
        yield test_client


def context(client: Client) -> SandboxContext:
    return client.app[SANDBOX]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def new_session(client: Client) -> dict[str, str]:
    resp = await client.get(SESSION_PATH, headers={"userName": "sandbox-user", "secretKey": SECRET})
    session_id = (await resp.json())["respList"][0]["sessionId"]
    return {"accountId": "sandbox-account", "secretKey": SECRET, "sessionId": session_id}


async def create(client: Client, auth: dict[str, str], name: str = "VIP", **query: str) -> Any:
    params = {"segmentName": name, "propertyId": PROPERTY, "membershipTtl": "30"} | query
    return await client.post("/tpce/v1/segment", params=params, headers=auth)


async def new_segment(client: Client, auth: dict[str, str], name: str = "VIP") -> str:
    resp = await create(client, auth, name)
    assert resp.status == 200
    return str((await resp.json())["segmentId"])


def form(
    data: bytes, *, content_type: str = "application/gzip", name: str = "file"
) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field(name, data, filename="users.csv.gz", content_type=content_type)
    return body


def csv_gz(column: str, *ids: str) -> bytes:
    return gzip.compress(("\n".join([column, *ids]) + "\n").encode())


async def upload(
    client: Client, auth: dict[str, str], segment_id: str, body: Any, action: str = "add"
) -> Any:
    return await client.post(
        f"/tpce/v1/segment/{segment_id}/users",
        params={"action": action, "propertyId": PROPERTY},
        headers=auth,
        data=body,
    )


async def error_of(resp: Any, status: int) -> str:
    body = await resp.json()
    assert (resp.status, body["status"], body["code"]) == (status, "ERROR", status)
    return str(body["message"])


async def put_faults(client: Client, **config: Any) -> None:
    resp = await client.put("/_sandbox/faults", json=config)
    assert resp.status == 200, await resp.text()


# Sessions and authorisation


async def test_session_success_body_is_exactly_the_documented_shape(client: Client):
    resp = await client.get(
        SESSION_PATH,
        headers={"userName": "sandbox-user", "secretKey": SECRET, "accountId": "sandbox-account"},
    )
    body = await resp.json()
    session_id = body["respList"][0]["sessionId"]
    assert resp.status == 200
    assert body == {
        "respList": [{"sessionId": session_id, "accountId": "sandbox-account"}],
        "error": False,
        "errorList": [],
    }


@pytest.mark.parametrize(
    "headers",
    [
        {"userName": "sandbox-user", "secretKey": "wrong"},
        {"userName": "someone", "secretKey": SECRET},
        {"userName": "sandbox-user"},
        {"userName": "sandbox-user", "secretKey": SECRET, "accountId": "other"},
    ],
)
async def test_session_failure_is_http_200_with_an_error_list(
    client: Client, headers: dict[str, str]
):
    resp = await client.get(SESSION_PATH, headers=headers)
    body = await resp.json()
    assert (resp.status, body["respList"], body["error"]) == (200, [], True)
    assert [set(e) for e in body["errorList"]] == [{"code", "message"}]
    assert SECRET not in await resp.text()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sessionId": None}, "sessionId header missing"),
        ({"sessionId": "made-up"}, "unknown session"),
        ({"secretKey": "wrong"}, "does not match"),
        ({"secretKey": None}, "does not match"),
        ({"accountId": "other"}, "does not match"),
    ],
)
async def test_calls_without_a_valid_session_get_401(
    client: Client, change: dict[str, Any], reason: str
):
    auth = await new_session(client)
    headers = {k: v for k, v in (auth | change).items() if v is not None}
    resp = await create(client, headers)
    assert reason in await error_of(resp, 401)
    assert SECRET not in await resp.text()
    assert context(client).state.segments == {}


async def test_sessions_expire_after_the_configured_ttl(client: Client, clock: ManualClock):
    await put_faults(client, session_ttl_seconds=10)
    auth = await new_session(client)
    clock.advance(9.9)
    assert (await create(client, auth)).status == 200
    clock.advance(0.1)
    assert "session expired" in await error_of(await create(client, auth), 401)


async def test_periodic_revocation_revokes_live_sessions(client: Client, clock: ManualClock):
    await put_faults(client, revoke_sessions_every_seconds=60)
    auth = await new_session(client)
    clock.advance(60)
    assert "session revoked" in await error_of(await create(client, auth), 401)
    assert (await create(client, await new_session(client))).status == 200


async def test_a_key_holds_only_a_few_live_sessions(client: Client):
    await put_faults(client, max_live_sessions_per_key=2)
    first, second, third = [await new_session(client) for _ in range(3)]
    assert "session revoked" in await error_of(await create(client, first), 401)
    for auth in (second, third):
        assert (await create(client, auth)).status == 200
    state = await (await client.get("/_sandbox/state")).json()
    assert (state["sessions_generated"], state["live_sessions"]) == (3, 2)


async def test_admin_can_revoke_every_session(client: Client):
    auth = await new_session(client)
    resp = await client.post("/_sandbox/sessions/revoke")
    assert await resp.json() == {"revoked": 1}
    assert "session revoked" in await error_of(await create(client, auth), 401)


# Segments


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"segmentName": "HIGH_VALUE_USERS_2"}, 200),
        ({"segmentName": "A" * 200}, 200),
        ({"segmentName": "A" * 201}, 400),
        ({"segmentName": "high_value"}, 400),
        ({"segmentName": "HIGH VALUE"}, 400),
        ({"segmentName": "HIGH-VALUE"}, 400),
        ({"segmentName": ""}, 400),
        ({"propertyId": "999"}, 400),
        ({"membershipTtl": "1"}, 200),
        ({"membershipTtl": "3650"}, 200),
        ({"membershipTtl": "0"}, 400),
        ({"membershipTtl": "3651"}, 400),
        ({"membershipTtl": "-1"}, 400),
        ({"membershipTtl": "30.5"}, 400),
        ({"membershipTtl": "thirty"}, 400),
    ],
)
async def test_segment_creation_rules(client: Client, query: dict[str, str], status: int):
    resp = await create(client, await new_session(client), **query)
    assert resp.status == status
    assert len(context(client).state.segments) == (1 if status == 200 else 0)


async def test_segment_creation_body_and_duplicates(client: Client):
    auth = await new_session(client)
    resp = await create(client, auth, "VIP")
    body = await resp.json()
    again = await (await create(client, auth, "VIP")).json()
    assert body == {
        "status": "OK",
        "message": "success",
        "code": 200,
        "segmentId": body["segmentId"],
    }
    assert again["segmentId"] != body["segmentId"]
    state = await (await client.get("/_sandbox/state")).json()
    assert [(s["name"], s["membership_ttl_days"]) for s in state["segments"]] == [("VIP", 30)] * 2


async def test_missing_query_parameters_are_400(client: Client):
    resp = await client.post("/tpce/v1/segment", headers=await new_session(client))
    assert "segmentName" in await error_of(resp, 400)


# Uploads


async def test_upload_add_then_remove(client: Client):
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    added = await upload(client, auth, seg, form(csv_gz("ida", U1.upper(), U2, U3)))
    assert await added.json() == {"status": "OK", "code": 200, "message": "accepted", "rows": 3}
    removed = await upload(client, auth, seg, form(csv_gz("ida", U2)), action="remove")
    assert (await removed.json())["rows"] == 1
    members = await (await client.get(f"/_sandbox/segments/{seg}/members")).json()
    assert members == {
        "id": seg,
        "name": "VIP",
        "members": {"ida": sorted([U1, U3]), "gpId": [], "ifa": []},
    }
    state = await (await client.get("/_sandbox/state")).json()
    segment = state["segments"][0]
    assert (segment["members"], segment["adds"], segment["removes"], segment["uploads"]) == (
        2,
        3,
        1,
        2,
    )
    assert [(u["action"], u["column"], u["rows"], u["status"]) for u in state["uploads"]] == [
        ("add", "ida", 3, 200),
        ("remove", "ida", 1, 200),
    ]


@pytest.mark.parametrize(
    ("limits", "ids", "reason"),
    [
        ({"max_rows": 3}, [U1, U2, U3, U1], "4 rows, the limit is 3"),
        ({"max_bytes": 60}, [U1, U2, U3], "more than 60 bytes"),
    ],
)
async def test_too_large_files_get_413(
    client: Client, limits: dict[str, int], ids: list[str], reason: str
):
    await put_faults(client, **limits)
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    resp = await upload(client, auth, seg, form(csv_gz("gpId", *ids)))
    assert reason in await error_of(resp, 413)
    assert context(client).state.segments[seg].uploads == 0


async def test_a_bad_uuid_rejects_the_file_naming_the_row(client: Client):
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    resp = await upload(client, auth, seg, form(csv_gz("ida", U1, U2, "not-a-uuid")))
    assert await error_of(resp, 400) == "row 3: not a UUID"
    assert context(client).state.segments[seg].members["ida"] == set()
    log = context(client).state.upload_log
    assert [(r.status, r.message) for r in log] == [(400, "row 3: not a UUID")]


BAD_UPLOADS = {
    "bad action": (form(csv_gz("ifa", "a")), {"action": "upsert"}, "action must be add or remove"),
    "other property": (form(csv_gz("ifa", "a")), {"propertyId": "9"}, "propertyId"),
    "not gzip": (form(b"plain text"), {}, "not valid gzip"),
    "part type": (form(csv_gz("ifa", "a"), content_type="text/csv"), {}, "application/gzip"),
    "part name": (form(csv_gz("ifa", "a"), name="users"), {}, "exactly one part"),
    "no file part": (
        aiohttp.FormData({"x": "1"}, default_to_multipart=True),
        {},
        "exactly one part",
    ),
    "urlencoded": (aiohttp.FormData({"x": "1"}), {}, "multipart/form-data"),
    "raw body": (csv_gz("ifa", "a"), {}, "multipart/form-data"),
    "header only": (form(gzip.compress(b"ifa\n")), {}, "no device IDs found"),
}


@pytest.mark.parametrize(("body", "query", "reason"), BAD_UPLOADS.values(), ids=BAD_UPLOADS)
async def test_bad_upload_requests_get_400(
    client: Client, body: Any, query: dict[str, str], reason: str
):
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    params = {"action": "add", "propertyId": PROPERTY} | query
    resp = await client.post(
        f"/tpce/v1/segment/{seg}/users", params=params, headers=auth, data=body
    )
    assert reason in await error_of(resp, 400)
    assert context(client).state.segments[seg].uploads == 0


async def test_upload_to_an_unknown_segment_is_404(client: Client):
    auth = await new_session(client)
    resp = await upload(
        client, auth, "00000000-0000-4000-8000-000000000000", form(csv_gz("ifa", "a"))
    )
    assert "not found" in await error_of(resp, 404)


async def test_upload_without_session_is_401_even_for_unknown_segments(client: Client):
    resp = await upload(client, {}, "nope", form(csv_gz("ifa", "a")))
    assert await error_of(resp, 401) == "sessionId header missing"


# Faults and holds


async def test_injected_429_carries_retry_after_and_applies_once(client: Client):
    await put_faults(
        client, rules=[{"match": {"route": "upload"}, "status": 429, "retry_after": 7, "count": 1}]
    )
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    limited = await upload(client, auth, seg, form(csv_gz("ifa", "a")))
    assert limited.headers["Retry-After"] == "7"
    assert "Too Many Requests" in await error_of(limited, 429)
    assert (await upload(client, auth, seg, form(csv_gz("ifa", "a")))).status == 200


async def test_503_with_rate_1_and_count_2_then_success(client: Client):
    await put_faults(
        client,
        rules=[
            {
                "match": {"route": "upload", "segment_name": "VIP"},
                "status": 503,
                "rate": 1,
                "count": 2,
            }
        ],
    )
    auth = await new_session(client)
    seg, other = await new_segment(client, auth, "VIP"), await new_segment(client, auth, "OTHER")
    assert (await upload(client, auth, other, form(csv_gz("ifa", "a")))).status == 200
    statuses = [
        (await upload(client, auth, seg, form(csv_gz("ifa", "a")))).status for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    requests = (await (await client.get("/_sandbox/state")).json())["requests"]["upload"]
    assert requests == {"200": 2, "503": 2}


async def test_session_route_faults(client: Client):
    await put_faults(client, rules=[{"match": {"route": "session"}, "status": 500, "count": 1}])
    resp = await client.get(SESSION_PATH, headers={"userName": "sandbox-user", "secretKey": SECRET})
    await error_of(resp, 500)
    assert context(client).state.sessions.generated == 0


async def test_latency_delays_the_answer(client: Client):
    await put_faults(client, rules=[{"match": {"route": "segment"}, "latency_ms": 150}])
    auth = await new_session(client)
    started = time.monotonic()
    assert (await create(client, auth)).status == 200
    assert time.monotonic() - started >= 0.14


async def test_a_hanging_request_never_answers(client: Client):
    await put_faults(client, rules=[{"match": {"route": "upload"}, "hang": True}])
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            f"/tpce/v1/segment/{seg}/users",
            params={"action": "add", "propertyId": PROPERTY},
            headers=auth,
            data=form(csv_gz("ifa", "a")),
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    assert context(client).state.segments[seg].uploads == 0


async def test_held_uploads_wait_until_released(client: Client):
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    assert (await client.post("/_sandbox/hold", json={"segment_name": "VIP"})).status == 200
    pending = asyncio.create_task(upload(client, auth, seg, form(csv_gz("ifa", "held-1"))))
    await until(lambda: context(client).holds.waiting == 1)
    state = await (await client.get("/_sandbox/state")).json()
    assert (state["held"], state["held_segments"], state["uploads"]) == (1, ["VIP"], [])
    assert not pending.done()
    released = await client.post("/_sandbox/release", json={"segment_name": "VIP"})
    assert await released.json() == {"released": 1, "held_segments": []}
    assert (await pending).status == 200
    assert context(client).state.segments[seg].members["ifa"] == {"held-1"}


async def test_release_without_a_name_releases_everything(client: Client):
    for name in ("A", "B"):
        await client.post("/_sandbox/hold", json={"segment_name": name})
    resp = await client.post("/_sandbox/release")
    assert await resp.json() == {"released": 0, "held_segments": []}


# Admin


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"rules": [{"status": 200}]}, "rules.0.status"),
        ({"max_rows": 0}, "max_rows"),
        ({"rules": [{}]}, "at least one of status"),
        ({"unknown": 1}, "unknown: Extra inputs are not permitted"),
    ],
)
async def test_invalid_fault_config_is_400_with_the_reason(
    client: Client, body: dict[str, Any], reason: str
):
    resp = await client.put("/_sandbox/faults", json=body)
    assert reason in await error_of(resp, 400)
    assert (await (await client.get("/_sandbox/faults")).json())["rules"] == []


async def test_faults_round_trip_and_reset_restores_the_start(client: Client):
    await put_faults(client, rules=[{"status": 503}], max_rows=10)
    faults = await (await client.get("/_sandbox/faults")).json()
    assert (faults["rules"][0]["status"], faults["max_rows"]) == (503, 10)
    await put_faults(client)
    await new_segment(client, await new_session(client))
    assert await (await client.post("/_sandbox/reset")).json() == {"status": "OK"}
    state = await (await client.get("/_sandbox/state")).json()
    assert (state["segments"], state["sessions_generated"], state["requests"]) == ([], 0, {})


async def test_unknown_paths_and_methods_get_json_errors(client: Client):
    assert await error_of(await client.get("/nowhere"), 404) == "Not Found"
    assert await error_of(await client.get("/tpce/v1/segment"), 405) == "Method Not Allowed"
    assert (
        await error_of(await client.get("/_sandbox/segments/x/members"), 404)
        == "segment x not found"
    )


async def test_index_page_lists_segments(client: Client):
    await new_segment(client, await new_session(client), "SHOWN_ON_PAGE")
    resp = await client.get("/")
    assert resp.content_type == "text/html"
    assert "SHOWN_ON_PAGE" in await resp.text()


# Schema registry


async def test_registry_round_trip(client: Client):
    schema = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]})
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}

    async def register(subject: str, text: str) -> Any:
        resp = await client.post(
            f"/registry/subjects/{subject}/versions",
            data=json.dumps({"schema": text}),
            headers=headers,
        )
        return await resp.json()

    assert await register("t-value", schema) == {"id": 1}
    assert await register("t-value", schema) == {"id": 1}
    assert await register("u-value", json.dumps(json.loads(schema), indent=2)) == {"id": 1}
    assert await register("t-value", json.dumps({"type": "string"})) == {"id": 2}
    fetched = await client.get("/registry/schemas/ids/1")
    assert await fetched.json() == {"schema": schema}
    assert await (await client.get("/registry/subjects/t-value/versions")).json() == [1, 2]
    latest = await (await client.get("/registry/subjects/t-value/versions/latest")).json()
    assert (latest["version"], latest["id"]) == (2, 2)


@pytest.mark.parametrize(
    ("request_line", "body", "status", "code"),
    [
        ("GET /registry/schemas/ids/99", None, 404, 40403),
        ("GET /registry/subjects/none/versions", None, 404, 40401),
        ("GET /registry/subjects/none/versions/latest", None, 404, 40401),
        ("POST /registry/subjects/s/versions", {"schema": "{not json"}, 422, 42201),
        ("POST /registry/subjects/s/versions", {"nothing": 1}, 422, 42201),
        ("POST /registry/subjects/s/versions", {"schema": "{}", "schemaType": "JSON"}, 422, 42201),
    ],
)
async def test_registry_errors_use_confluent_codes(
    client: Client, request_line: str, body: Any, status: int, code: int
):
    method, path = request_line.split()
    resp = await client.request(method, path, json=body)
    payload = await resp.json()
    assert (resp.status, payload["error_code"]) == (status, code)


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=zzz"],
    ids=["no boundary", "wrong boundary"],
)
async def test_malformed_multipart_is_400(client: Client, content_type: str):
    auth = await new_session(client)
    seg = await new_segment(client, auth)
    resp = await client.post(
        f"/tpce/v1/segment/{seg}/users",
        params={"action": "add", "propertyId": PROPERTY},
        headers=auth | {"Content-Type": content_type},
        data=b"--abc\r\n\r\nnothing\r\n--abc--\r\n",
    )
    assert "malformed multipart body" in await error_of(resp, 400)


async def test_secrets_never_reach_bodies_or_logs(client: Client):
    with capture_logs() as logs:
        auth = await new_session(client)
        bad = await client.get(SESSION_PATH, headers={"userName": "sandbox-user", "secretKey": "x"})
        seg = await new_segment(client, auth)
        denied = await upload(client, auth | {"accountId": "other"}, seg, form(csv_gz("ifa", "a")))
        bodies = [await bad.text(), await denied.text()]
        bodies.append(await (await client.get("/_sandbox/state")).text())
    assert [e["status"] for e in logs if e["event"] == "sandbox_request"] == [200, 200, 200, 401]
    assert SECRET not in repr(logs) + "".join(bodies)
