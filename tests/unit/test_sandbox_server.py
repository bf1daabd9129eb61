"""Running the sandbox: SandboxThread for tests and demos, serve and run_sandbox for the CLI."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from structlog.testing import capture_logs

from worker.sandbox import SandboxConfig, SandboxThread, run_sandbox, serve
from worker.sandbox.faults import FaultConfig, FaultRule

AUTH = {"userName": "sandbox-user", "secretKey": "sandbox-secret"}
BOUNDARY = "sandbox-test-boundary"


def call(
    method: str, url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def multipart(payload: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="users.csv.gz"\r\n'
        "Content-Type: application/gzip\r\n\r\n"
    )
    return head.encode() + payload + f"\r\n--{BOUNDARY}--\r\n".encode()


def prepare(url: str) -> tuple[dict[str, str], str]:
    _, body = call("GET", url + "/v1.0/generatesession/generate", AUTH)
    auth = {"accountId": "sandbox-account", "secretKey": AUTH["secretKey"]}
    auth["sessionId"] = body["respList"][0]["sessionId"]
    query = "segmentName=HELD&propertyId=1234567890&membershipTtl=30"
    _, created = call("POST", f"{url}/tpce/v1/segment?{query}", auth)
    return auth, created["segmentId"]


def send_upload(url: str, auth: dict[str, str], segment_id: str) -> tuple[int, Any]:
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    data = multipart(gzip.compress(b"ifa\nfrom-thread\n"))
    path = f"/tpce/v1/segment/{segment_id}/users?action=add&propertyId=1234567890"
    return call("POST", url + path, headers, data)


def test_thread_serves_on_a_free_port_and_exposes_its_state():
    with SandboxThread() as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert not sandbox.url.endswith(":0")
        _auth, segment_id = prepare(sandbox.url)
        assert sandbox.state.segments[segment_id].name == "HELD"
        assert sandbox.snapshot()["live_sessions"] == 1
    with pytest.raises(urllib.error.URLError):
        call("GET", sandbox.url + "/_sandbox/state")


def test_a_held_upload_is_answered_only_after_release():
    with SandboxThread() as sandbox, ThreadPoolExecutor(1) as pool:
        auth, segment_id = prepare(sandbox.url)
        sandbox.call(lambda c: c.holds.hold("HELD"))
        pending: Future[tuple[int, Any]] = pool.submit(send_upload, sandbox.url, auth, segment_id)
        sandbox.wait_until(lambda c: c.holds.waiting == 1)
        assert not pending.done()
        assert sandbox.call(lambda c: c.state.segments[segment_id].uploads) == 0
        assert call("POST", sandbox.url + "/_sandbox/release", data=b"{}")[1]["released"] == 1
        assert pending.result(timeout=10) == (
            200,
            {"status": "OK", "code": 200, "message": "accepted", "rows": 1},
        )
        assert sandbox.call(lambda c: sorted(c.state.segments[segment_id].members["ifa"])) == [
            "from-thread"
        ]


def test_stopping_cancels_hanging_requests_at_once():
    hang = FaultConfig(
        rules=(FaultRule.model_validate({"match": {"route": "upload"}, "hang": True}),)
    )
    sandbox = SandboxThread(SandboxConfig(faults=hang))
    with ThreadPoolExecutor(1) as pool:
        with sandbox:
            auth, segment_id = prepare(sandbox.url)
            pending = pool.submit(send_upload, sandbox.url, auth, segment_id)
            sandbox.wait_until(lambda c: c.parking.parked == 1)
            started = time.monotonic()
        assert time.monotonic() - started < 3.0
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            pending.result(timeout=10)


def test_wait_until_gives_up_at_the_deadline():
    with SandboxThread() as sandbox, pytest.raises(TimeoutError):
        sandbox.wait_until(lambda c: c.holds.waiting == 1, timeout=0.05)


def test_run_sandbox_exits_1_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with capture_logs() as logs:
            assert run_sandbox("127.0.0.1", port) == 1
    assert [e["event"] for e in logs] == ["sandbox_failed"]


async def test_serve_logs_its_url_and_stops_when_cancelled():
    with capture_logs() as logs:
        task = asyncio.create_task(serve(SandboxConfig(port=0)))
        deadline = time.monotonic() + 5
        while not logs:
            assert time.monotonic() < deadline
            assert not task.done()
            await asyncio.sleep(0.005)
        url = logs[0]["url"]
        assert logs[0]["event"] == "sandbox_listening"
        status, _ = await asyncio.to_thread(call, "GET", url + "/_sandbox/faults")
        assert status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(call, "GET", url + "/_sandbox/faults")
