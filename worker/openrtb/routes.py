"""The sandbox bidder over HTTP: ``POST /openrtb2/bid`` as an aiohttp sub-application.

`create_bidder_app` returns a sub-application whose one route is ``POST /bid``; mounted under
`MOUNT_PREFIX` (``parent.add_subapp("/openrtb2", app)``, or `mount_bidder`) it serves `BID_PATH`.
aiohttp cannot mount a sub-application at ``/``, hence the split.

One request, as seed 001 describes the transport:

1. Read the body. A gzip body (``Content-Encoding: gzip``) is usually inflated by aiohttp already;
   a body that still starts with the gzip magic is inflated here, bounded by ``max_body_bytes``
   (a gzip bomb gets 413).
2. Parse and validate it (`worker.openrtb.models`). Invalid: 400 with the seed's no-bid form plus
   the reasons, ``{"id": …, "seatbid": [], "nbr": 2, "reasons": ["imp[0]: …"]}``, so a client
   that only reads ``nbr`` still sees "invalid request".
3. `worker.openrtb.bidder.decide`. Bids and no-bids both answer 200 with a JSON body, because the
   no-bid forms InMobi reads (seed 002) are bodies; 204 is never sent.
4. The answer is gzip-compressed when ``Accept-Encoding`` accepts gzip.

``campaigns`` is read on every request, so a sandbox may change the list in place at run time.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence

import structlog
from aiohttp import web

from worker.openrtb.bidder import Campaign, SegmentsOf, decide
from worker.openrtb.models import InvalidBidRequestError, NoBidReason, parse_bid_request, to_json

__all__ = [
    "BID_PATH",
    "DEFAULT_MAX_BODY_BYTES",
    "MOUNT_PREFIX",
    "BodyTooLargeError",
    "accepts_gzip",
    "create_bidder_app",
    "inflate_body",
    "mount_bidder",
]

MOUNT_PREFIX = "/openrtb2"
BID_PATH = f"{MOUNT_PREFIX}/bid"
DEFAULT_MAX_BODY_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"

log = structlog.get_logger(__name__)


class BodyTooLargeError(ValueError):
    """The inflated body is larger than the bidder accepts."""


def inflate_body(body: bytes, limit: int) -> bytes:
    """The body as JSON bytes: inflated when it is gzip, never more than `limit` bytes of it."""
    if not body.startswith(_GZIP_MAGIC):
        return body
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidBidRequestError([f"body: not valid gzip ({exc})"]) from exc
    if len(data) > limit:
        raise BodyTooLargeError(f"inflated body is larger than {limit} bytes")
    if not inflater.eof:
        raise InvalidBidRequestError(["body: truncated gzip stream"])
    return data


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _reply(request: web.Request, payload: bytes, status: int) -> web.Response:
    headers = {"Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        payload = gzip.compress(payload, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(
        body=payload, status=status, content_type="application/json", headers=headers
    )


def _request_id(body: bytes) -> str:
    """The ``id`` of an invalid request when it has a readable one, for the 400 body."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    found = document.get("id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else ""


def _invalid(body: bytes, reasons: list[str]) -> bytes:
    nbr = int(NoBidReason.INVALID_REQUEST)
    answer = {"id": _request_id(body), "seatbid": [], "nbr": nbr, "reasons": reasons}
    return json.dumps(answer, separators=(",", ":")).encode()


class _BidHandler:
    def __init__(
        self, segments_of: SegmentsOf, campaigns: Sequence[Campaign], max_body_bytes: int
    ) -> None:
        self._segments_of = segments_of
        self._campaigns = campaigns
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = inflate_body(raw, self._max_body_bytes)
        except BodyTooLargeError as exc:
            return _reply(request, _invalid(b"", [str(exc)]), 413)
        except InvalidBidRequestError as exc:
            return _rejected(request, b"", exc.reasons)
        try:
            bid_request = parse_bid_request(body)
        except InvalidBidRequestError as exc:
            return _rejected(request, body, exc.reasons)
        answer = decide(bid_request, self._segments_of, self._campaigns)
        bids = answer.bids()
        log.info("bid_decided", request_id=bid_request.id, bids=len(bids), nbr=answer.nbr)
        return _reply(request, to_json(answer), 200)


def _rejected(request: web.Request, body: bytes, reasons: list[str]) -> web.Response:
    log.info("bid_request_rejected", reasons=reasons)
    return _reply(request, _invalid(body, reasons), 400)


def create_bidder_app(
    segments_of: SegmentsOf,
    campaigns: Sequence[Campaign],
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """The bidder sub-application: ``POST /bid``, to be mounted under `MOUNT_PREFIX`."""
    app = web.Application()
    handler = _BidHandler(segments_of, campaigns, max_body_bytes)
    app.router.add_post("/bid", handler.handle)
    return app


def mount_bidder(
    parent: web.Application, segments_of: SegmentsOf, campaigns: Sequence[Campaign]
) -> None:
    """Serve the bidder at `BID_PATH` of `parent`."""
    parent.add_subapp(MOUNT_PREFIX, create_bidder_app(segments_of, campaigns))
