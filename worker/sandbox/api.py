"""The simulated InMobi API: session, segment creation and batch upload (CONTRACT section 5).

Each handler runs the same steps, and the first that fails answers:

1. fault injection (`worker.sandbox.faults`): delay, hang, or an injected status;
2. session check for every call but session generation: 401 when ``sessionId`` is missing, unknown,
   expired or revoked, or ``accountId``/``secretKey`` are not those of the session's key;
3. query parameters (400), then the segment (404);
4. for uploads: the multipart body and the file (`worker.sandbox.csvfile`: 400 or 413);
5. for uploads: the hold gate (`worker.sandbox.holds`), then the change is applied and answered.

Errors are raised as `ApiError` and shaped by the app's middleware. Every upload request that
is written to the upload log, accepted or not (for a refused one, ``compressed_bytes`` is the
size of the whole request body).
"""

from __future__ import annotations

import asyncio
import re
from typing import cast

from aiohttp import BodyPartReader, web

from worker.sandbox.context import SANDBOX, SandboxContext
from worker.sandbox.csvfile import UploadRejectedError, parse_upload
from worker.sandbox.faults import Route
from worker.sandbox.responses import ApiError, reason_of
from worker.sandbox.sessions import CredentialsError, SessionRejectedError
from worker.sandbox.state import Action, UploadRecord

__all__ = ["api_routes"]

_SEGMENT_NAME = re.compile(r"[A-Z0-9_]{1,200}")
_TTL = re.compile(r"[0-9]{1,4}")
_GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip"})
_CHECK_INLINE_BELOW = 64 * 1024  # compressed bytes (~3k UUID rows, about a millisecond to check)


async def _inject_fault(sandbox: SandboxContext, route: Route, segment_name: str | None) -> None:
    action = sandbox.faults.decide(route, segment_name)
    if action is None:
        return
    if action.latency_ms:
        await sandbox.parking.wait(asyncio.sleep(action.latency_ms / 1000))
    if action.hang:
        await sandbox.parking.hang()  # cancelled on shutdown; 504 only after HANG_SECONDS
        raise ApiError(504, "hang fault gave up")
    if action.status is not None:
        headers = {} if action.retry_after is None else {"Retry-After": str(action.retry_after)}
        message = action.message or f"{reason_of(action.status)} (injected fault)"
        raise ApiError(action.status, message, headers=headers)


def _refuse_rejected_ids(ids: tuple[str, ...], rejected: tuple[str, ...]) -> None:
    if not rejected:
        return
    refused = {r.lower() for r in rejected}
    for number, device_id in enumerate(ids, start=1):
        if device_id.lower() in refused:
            raise ApiError(400, f"row {number}: device ID refused by InMobi")


def _authorize(sandbox: SandboxContext, request: web.Request) -> None:
    headers = request.headers
    try:
        sandbox.state.check_session(
            session_id=headers.get("sessionId"),
            account_id=headers.get("accountId"),
            secret_key=headers.get("secretKey"),
            now=sandbox.now(),
            policy=sandbox.policy(),
        )
    except SessionRejectedError as exc:
        raise ApiError(401, str(exc)) from exc


def _check_property(sandbox: SandboxContext, request: web.Request) -> str:
    property_id = request.query.get("propertyId")
    if property_id != sandbox.config.property_id:
        raise ApiError(400, "propertyId missing or not a property of this account")
    return property_id


async def generate_session(request: web.Request) -> web.Response:
    sandbox, headers = request.app[SANDBOX], request.headers
    await _inject_fault(sandbox, "session", None)
    try:
        session = sandbox.state.generate_session(
            username=headers.get("userName"),
            secret_key=headers.get("secretKey"),
            account_id=headers.get("accountId"),
            now=sandbox.now(),
            policy=sandbox.policy(),
        )
    except CredentialsError as exc:
        error = {"code": exc.code, "message": exc.message}
        return web.json_response({"respList": [], "error": True, "errorList": [error]})
    resp = {"sessionId": session.session_id, "accountId": session.account_id}
    return web.json_response({"respList": [resp], "error": False, "errorList": []})


def _segment_name(raw: str | None) -> str:
    if raw is None or not _SEGMENT_NAME.fullmatch(raw):
        raise ApiError(400, "segmentName must be 1-200 characters of A-Z, 0-9 and _")
    return raw


def _membership_ttl(raw: str | None) -> int:
    if raw is None or not _TTL.fullmatch(raw) or not 1 <= int(raw) <= 3650:
        raise ApiError(400, "membershipTtl must be a whole number of days from 1 to 3650")
    return int(raw)


async def create_segment(request: web.Request) -> web.Response:
    sandbox, query = request.app[SANDBOX], request.query
    await _inject_fault(sandbox, "segment", query.get("segmentName"))
    _authorize(sandbox, request)
    name = _segment_name(query.get("segmentName"))
    property_id = _check_property(sandbox, request)
    ttl = _membership_ttl(query.get("membershipTtl"))
    segment = sandbox.state.create_segment(
        name=name, property_id=property_id, membership_ttl_days=ttl, now=sandbox.now()
    )
    return web.json_response(
        {"status": "OK", "message": "success", "code": 200, "segmentId": segment.id}
    )


def _action(raw: str | None) -> Action:
    if raw not in ("add", "remove"):
        raise ApiError(400, "action must be add or remove")
    return cast(Action, raw)


async def _read_part(part: BodyPartReader, max_bytes: int) -> bytes:
    # Past the limit keep draining (so the client reads our 413) but stop storing.
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
    if size > max_bytes:
        raise ApiError(413, f"file is more than {max_bytes} bytes compressed")
    return b"".join(chunks)


def _media_type(header: str) -> str:
    """The media type of a Content-Type header, parameters dropped, lower case."""
    return header.split(";", 1)[0].strip().lower()


async def _file_part(request: web.Request, max_bytes: int) -> bytes:
    # The header is split by hand: aiohttp's `content_type` runs the email package's parser,
    # a tenth of the sandbox's time per upload.
    if _media_type(request.headers.get("Content-Type", "")) != "multipart/form-data":
        raise ApiError(400, "the body must be multipart/form-data with one part named 'file'")
    data: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name != "file" or data is not None:
                raise ApiError(400, "the body must hold exactly one part, named 'file'")
            if _media_type(part.headers.get("Content-Type", "")) not in _GZIP_TYPES:
                raise ApiError(400, "part 'file' must have Content-Type application/gzip")
            data = await _read_part(part, max_bytes)
    except (ValueError, AssertionError) as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from exc
    if data is None:
        raise ApiError(400, "multipart part 'file' is missing")
    return data


async def upload_users(request: web.Request) -> web.Response:
    sandbox, segment_id = request.app[SANDBOX], request.match_info["segment_id"]
    segment = sandbox.state.segments.get(segment_id)
    name = segment.name if segment else None
    try:
        await _inject_fault(sandbox, "upload", name)
        return await _accept_upload(sandbox, request, segment_id)
    except ApiError as exc:
        sandbox.state.record_upload(
            UploadRecord(
                time=sandbox.now(),
                segment_id=segment_id,
                segment_name=name,
                action=request.query.get("action", ""),
                column=None,
                rows=0,
                compressed_bytes=request.content_length or 0,  # the whole body, when refused
                status=exc.status,
                message=exc.message,
            )
        )
        raise


async def _accept_upload(
    sandbox: SandboxContext, request: web.Request, segment_id: str
) -> web.Response:
    _authorize(sandbox, request)
    action = _action(request.query.get("action"))
    _check_property(sandbox, request)
    segment = sandbox.state.segments.get(segment_id)
    if segment is None:
        raise ApiError(404, f"segment {segment_id} not found")
    limits = sandbox.fault_config
    data = await _file_part(request, limits.max_bytes)
    try:
        if len(data) < _CHECK_INLINE_BELOW:  # a thread hand-off costs more than checking it
            parsed = parse_upload(data, max_rows=limits.max_rows, max_bytes=limits.max_bytes)
        else:  # off the loop: admin routes stay responsive while a large file is checked
            parsed = await asyncio.to_thread(
                parse_upload, data, max_rows=limits.max_rows, max_bytes=limits.max_bytes
            )
    except UploadRejectedError as exc:
        raise ApiError(exc.status, exc.message) from exc
    _refuse_rejected_ids(parsed.ids, limits.reject_ids)
    await sandbox.parking.wait(sandbox.holds.pass_through(segment.name))
    if segment_id not in sandbox.state.segments:  # a reset while the upload was held
        raise ApiError(404, f"segment {segment_id} not found")
    record = sandbox.state.apply_upload(
        segment_id,
        action=action,
        column=parsed.column,
        ids=parsed.ids,
        compressed_bytes=len(data),
        now=sandbox.now(),
    )
    return web.json_response(
        {"status": "OK", "code": 200, "message": "accepted", "rows": record.rows}
    )


def api_routes() -> list[web.RouteDef]:
    """The InMobi routes at their CONTRACT default paths, named by fault route."""
    return [
        web.get("/v1.0/generatesession/generate", generate_session, name="session"),
        web.post("/tpce/v1/segment", create_segment, name="segment"),
        web.post("/tpce/v1/segment/{segment_id}/users", upload_users, name="upload"),
    ]
