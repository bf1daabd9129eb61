"""Inspection and control routes under ``/_sandbox/``, for tests, the demo and people.

=======  ===================================  ==========================================
method   path                                 answer
=======  ===================================  ==========================================
GET      /_sandbox/state                      segments, uploads, sessions, requests, faults, holds
GET      /_sandbox/segments/{id}/members      ``{"id", "name", "members": {column: [ids]}}``
POST     /_sandbox/reset[?registry=true]      ``{"status": "OK"}``: state, faults and holds reset
GET      /_sandbox/faults                     the current `FaultConfig`
PUT      /_sandbox/faults                     replace it (400 with the reason if invalid)
POST     /_sandbox/hold                       ``{"segment_name": "X"}`` -> ``{"held_segments"}``
POST     /_sandbox/release                    ``{"segment_name": "X"}`` or ``{}`` for all
POST     /_sandbox/sessions/revoke            revoke every session -> ``{"revoked": n}``
GET      /                                    a small HTML page of the segments
=======  ===================================  ==========================================

These routes need no session and are not counted in ``requests``. Errors use the InMobi shape.
"""

from __future__ import annotations

import html
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.sandbox.context import SANDBOX
from worker.sandbox.faults import FaultConfig
from worker.sandbox.responses import ApiError

__all__ = ["admin_routes"]

M = TypeVar("M", bound=BaseModel)


class _SegmentNameBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    segment_name: str | None = None


def _explain(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()]
    return "; ".join(parts)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "the body is not valid JSON") from exc


async def _parse(request: web.Request, model: type[M]) -> M:
    body = await _json_body(request)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, _explain(exc)) from exc


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].snapshot())


async def _members(request: web.Request) -> web.Response:
    segment_id = request.match_info["segment_id"]
    try:
        return web.json_response(request.app[SANDBOX].state.members_of(segment_id))
    except KeyError:
        raise ApiError(404, f"segment {segment_id} not found") from None


async def _reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset(registry=request.query.get("registry") == "true")
    return web.json_response({"status": "OK"})


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].fault_config.model_dump(mode="json"))


async def _put_faults(request: web.Request) -> web.Response:
    config = await _parse(request, FaultConfig)
    request.app[SANDBOX].set_faults(config)
    return web.json_response(config.model_dump(mode="json"))


async def _hold(request: web.Request) -> web.Response:
    body = await _parse(request, _SegmentNameBody)
    if not body.segment_name:
        raise ApiError(400, "segment_name is required")
    holds = request.app[SANDBOX].holds
    holds.hold(body.segment_name)
    return web.json_response({"held_segments": holds.held_segments})


async def _release(request: web.Request) -> web.Response:
    body = await _parse(request, _SegmentNameBody)
    holds = request.app[SANDBOX].holds
    released = holds.release(body.segment_name)
    return web.json_response({"released": released, "held_segments": holds.held_segments})


async def _revoke_sessions(request: web.Request) -> web.Response:
    return web.json_response({"revoked": request.app[SANDBOX].state.sessions.revoke_all()})


def _row(cells: list[object]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


async def _index(request: web.Request) -> web.Response:
    snapshot = request.app[SANDBOX].snapshot()
    head = ["id", "name", "members", "adds", "removes", "uploads"]
    rows = [_row([s[k] for k in head]) for s in snapshot["segments"]]
    page = (
        "<!doctype html><html><head><title>InMobi sandbox</title></head><body>"
        "<h1>InMobi sandbox</h1>"
        f"<p>live sessions: {snapshot['live_sessions']}, held uploads: {snapshot['held']}</p>"
        f"<table border=1><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>"
        '<p>JSON: <a href="/_sandbox/state">/_sandbox/state</a></p></body></html>'
    )
    return web.Response(text=page, content_type="text/html")


def admin_routes(prefix: str = "/_sandbox") -> list[web.RouteDef]:
    """The admin routes, named ``admin.*`` (not counted as API requests)."""
    return [
        web.get(f"{prefix}/state", _state, name="admin.state"),
        web.get(f"{prefix}/segments/{{segment_id}}/members", _members, name="admin.members"),
        web.post(f"{prefix}/reset", _reset, name="admin.reset"),
        web.get(f"{prefix}/faults", _get_faults, name="admin.faults"),
        web.put(f"{prefix}/faults", _put_faults, name="admin.faults_put"),
        web.post(f"{prefix}/hold", _hold, name="admin.hold"),
        web.post(f"{prefix}/release", _release, name="admin.release"),
        web.post(f"{prefix}/sessions/revoke", _revoke_sessions, name="admin.revoke"),
        web.get("/", _index, name="admin.index"),
    ]
