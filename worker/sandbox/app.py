"""The sandbox's aiohttp application: the InMobi API, the admin routes and the schema registry.

Routes (all at the root, so ``INMOBI_BASE_URL`` and ``INMOBI_SESSION_URL`` both point here):

- InMobi (`worker.sandbox.api`): ``GET /v1.0/generatesession/generate``, ``POST /tpce/v1/segment``,
  ``POST /tpce/v1/segment/{segmentId}/users``
- admin (`worker.sandbox.admin`): ``/_sandbox/…`` and ``GET /``
- Schema Registry (`worker.sandbox.registry`): ``/registry/…``
- OpenRTB 2.5 bidder (`worker.openrtb.routes`): ``POST /openrtb2/bid``. It bids for a device that
  is a member of a segment a campaign targets. Without configured campaigns every segment of the
  sandbox gets one demo campaign, created as segments appear.

One middleware does what every route shares: it turns a raised `HttpError` (or aiohttp's own
``HTTPException``, e.g. an unknown path or a wrong method) into a JSON error of the right shape,
counts API and registry requests by route name and status, and logs one ``sandbox_request`` event
per counted request (never a header, so never a secret). On shutdown, requests the sandbox keeps
waiting on purpose (hangs, held uploads) are cancelled so that stopping is immediate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import overload

import structlog
from aiohttp import web

from worker.openrtb.campaigns import Campaign, demo_campaigns
from worker.openrtb.routes import mount_bidder
from worker.sandbox.admin import admin_routes
from worker.sandbox.api import api_routes
from worker.sandbox.config import SandboxConfig
from worker.sandbox.context import SANDBOX, SandboxContext
from worker.sandbox.registry import REGISTRY, registry_routes
from worker.sandbox.responses import ApiError, HttpError, RegistryError

__all__ = ["REGISTRY_PREFIX", "SANDBOX", "create_app"]

REGISTRY_PREFIX = "/registry"
_COUNTED = frozenset({"session", "segment", "upload", "registry"})

_log = structlog.get_logger("worker.sandbox")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_group(request: web.Request) -> str | None:
    """``session``, ``segment``, ``upload``, ``registry``, ``admin``, or None (no route)."""
    name = request.match_info.route.name
    return name.split(".")[0] if name else None


def _translate(request: web.Request, exc: web.HTTPException) -> HttpError:
    if request.path.startswith(REGISTRY_PREFIX + "/"):
        return RegistryError(exc.status, exc.reason)
    allow = exc.headers.get("Allow")  # kept on 405 Method Not Allowed
    return ApiError(exc.status, exc.reason, headers={"Allow": allow} if allow else None)


@web.middleware
async def _errors_and_counts(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except HttpError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        response = _translate(request, exc).response()
    group = _route_group(request)
    if group in _COUNTED:
        request.app[SANDBOX].state.count_request(group, response.status)
        _log.info(
            "sandbox_request",
            route=group,
            method=request.method,
            path=request.path,
            status=response.status,
        )
    return response


async def _cancel_waiting(app: web.Application) -> None:
    app[SANDBOX].parking.cancel_all()


class _CampaignPerSegment(Sequence[Campaign]):
    """One demo campaign for each segment the sandbox holds, read afresh on every bid request."""

    def __init__(self, context: SandboxContext) -> None:
        self._context = context

    def _current(self) -> list[Campaign]:
        return demo_campaigns(sorted({s.name for s in self._context.state.segments.values()}))

    def __iter__(self) -> Iterator[Campaign]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    @overload
    def __getitem__(self, index: int) -> Campaign: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Campaign]: ...
    def __getitem__(self, index: int | slice) -> Campaign | Sequence[Campaign]:
        return self._current()[index]


def create_app(config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """A new sandbox with empty state; ``clock`` gives epoch seconds (tests pass a fake)."""
    app = web.Application(middlewares=[_errors_and_counts])
    context = SandboxContext(config, clock)
    app[SANDBOX] = context
    app[REGISTRY] = context.registry
    app.add_routes(api_routes())
    app.add_routes(admin_routes())
    app.add_routes(registry_routes(REGISTRY_PREFIX))
    campaigns = config.campaigns if config.campaigns is not None else _CampaignPerSegment(context)
    mount_bidder(app, context.state.segment_names_of, campaigns)
    app.on_shutdown.append(_cancel_waiting)
    return app
