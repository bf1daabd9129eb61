"""``inmobi-sync verify``: would InMobi's exchange find this device in a synced audience?

The loop this closes: a CDP event reaches the worker, the worker uploads the device to an InMobi
segment, and a bidder targeting that segment bids when the device shows up in a bid request.

1. `build_request` writes the bid request InMobi would send for one banner impression in an app on
   that device (seed 001): ``app`` with a bundle and store URL, ``device`` with ``ifa``, ``os``,
   ``ua``, ``ip``, ``lmt``, an ``imp`` with ``tagid``, ``bidfloor`` and a banner size, an
   ``schain``, and ``regs``. An IDFA goes in an iOS context (upper-case, as iOS reports it, with
   ``atts`` and a SKAdNetwork extension), a GAID in an Android one (lower-case).
2. `verify` sends it gzip-compressed, asking for a gzip answer, to the sandbox bidder.
3. The answer is read against the request (`worker.openrtb.checks`): the device is *targeted*
   when the bidder bid and the bid is one InMobi would accept. `format_result` says so in a line.

aiohttp errors and HTTP failures become `VerifyError`; nothing else leaves this module.
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass
from typing import Literal

import aiohttp
from pydantic import ValidationError as PydanticValidationError

from worker.openrtb.checks import response_problems
from worker.openrtb.models import (
    App,
    Banner,
    BidRequest,
    BidResponse,
    Device,
    DeviceExt,
    Format,
    Geo,
    Imp,
    ImpExt,
    NoBidReason,
    Regs,
    RegsExt,
    Skadn,
    Source,
    SourceExt,
    SupplyChain,
    SupplyChainNode,
    error_reasons,
    to_json,
)

__all__ = [
    "DEFAULT_BID_URL",
    "IdType",
    "Platform",
    "VerifyError",
    "VerifyResult",
    "build_request",
    "format_result",
    "verify",
]

IdType = Literal["IDFA", "GAID"]
Platform = Literal["ios", "android"]

DEFAULT_BID_URL = "http://127.0.0.1:8080/openrtb2/bid"
DEFAULT_PLACEMENT_ID = "1500000000001"
_PLATFORM_OF: dict[str, Platform] = {"IDFA": "ios", "GAID": "android"}
_IOS_BUNDLE = "1234567890"
_IOS_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
_ANDROID_BUNDLE = "com.example.sandbox.game"
_ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.122 Mobile Safari/537.36"
)


class VerifyError(Exception):
    """The bidder could not be asked, or its answer could not be read."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What the bidder said about one device."""

    device_id: str
    os: str
    targeted: bool
    segment: str | None
    campaign: str | None
    seat: str | None
    price: float | None
    nbr: int | None
    problems: tuple[str, ...]
    response: BidResponse
    raw: str


def _device_uuid(device_id: str, id_type: IdType) -> uuid.UUID:
    try:
        return uuid.UUID(device_id.strip())
    except ValueError:
        raise ValueError(f"{id_type} must be a UUID, got {device_id!r}") from None


def _app(platform: Platform) -> App:
    if platform == "ios":
        return App(bundle=_IOS_BUNDLE, storeurl=f"https://apps.apple.com/app/id{_IOS_BUNDLE}")
    return App(
        bundle=_ANDROID_BUNDLE,
        storeurl=f"https://play.google.com/store/apps/details?id={_ANDROID_BUNDLE}",
    )


def _device(ifa: uuid.UUID, platform: Platform, lmt: bool) -> Device:
    ios = platform == "ios"
    return Device(
        ua=_IOS_UA if ios else _ANDROID_UA,
        ifa=str(ifa).upper() if ios else str(ifa),
        lmt=int(lmt),
        ip="203.0.113.10",
        os="iOS" if ios else "Android",
        osv="17.5" if ios else "14",
        make="Apple" if ios else "Google",
        model="iPhone15,2" if ios else "Pixel 8",
        devicetype=4,
        connectiontype=2,
        geo=Geo(country="USA"),
        ext=DeviceExt(atts=2 if lmt else 3) if ios else None,
    )


def _imp(platform: Platform, tagid: str, bidfloor: float, w: int, h: int) -> Imp:
    skadn = None
    if platform == "ios":
        skadn = Skadn(
            version="4.0",
            versions=["2.0", "2.1", "2.2", "3.0", "4.0"],
            sourceapp=_IOS_BUNDLE,
            skadnetids=["cdkw7geqsh.skadnetwork", "qyjfv329m4.skadnetwork"],
        )
    banner = Banner(w=w, h=h, format=[Format(w=w, h=h)], pos=1, api=[7])
    ext = ImpExt(skadn=skadn) if skadn else None
    return Imp(id="1", tagid=tagid, bidfloor=bidfloor, secure=1, instl=0, banner=banner, ext=ext)


def build_request(
    device_id: str,
    id_type: IdType,
    platform: Platform | None = None,
    *,
    request_id: str | None = None,
    tagid: str = DEFAULT_PLACEMENT_ID,
    bidfloor: float = 0.0,
    w: int = 320,
    h: int = 50,
    lmt: bool = False,
) -> BidRequest:
    """A seed-001 bid request for one banner impression shown to this device."""
    expected = _PLATFORM_OF[id_type]
    if platform is not None and platform != expected:
        raise ValueError(f"{id_type} identifies {expected} devices, not {platform}")
    ifa = _device_uuid(device_id, id_type)
    schain = SupplyChain(
        complete=1, ver="1.0", nodes=[SupplyChainNode(asi="inmobi.com", sid="sandbox", hp=1)]
    )
    return BidRequest(
        id=request_id or uuid.uuid4().hex,
        imp=[_imp(expected, tagid, bidfloor, w, h)],
        app=_app(expected),
        device=_device(ifa, expected, lmt),
        tmax=300,
        source=Source(ext=SourceExt(schain=schain)),
        regs=Regs(coppa=0, ext=RegsExt(gdpr=0)),
    )


async def _post(
    session: aiohttp.ClientSession, url: str, request: BidRequest, timeout: float
) -> tuple[int, bytes]:
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Accept-Encoding": "gzip",
        "x-openrtb-version": "2.5",
    }
    body = gzip.compress(to_json(request), mtime=0)
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return response.status, await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise VerifyError(f"cannot reach the bidder at {url}: {exc!r}") from exc


def _read_response(request: BidRequest, status: int, body: bytes) -> BidResponse:
    if status == 204:
        return BidResponse(id=request.id, seatbid=[])
    if status == 400:
        raise VerifyError(f"the bidder rejected the bid request: {_reasons(body)}")
    if status != 200:
        raise VerifyError(f"the bidder answered HTTP {status}: {body[:200]!r}")
    try:
        return BidResponse.model_validate_json(body)
    except PydanticValidationError as exc:
        raise VerifyError(f"invalid bid response: {'; '.join(error_reasons(exc))}") from exc


def _reasons(body: bytes) -> str:
    try:
        reasons = json.loads(body).get("reasons")
    except (ValueError, AttributeError):
        reasons = None
    return "; ".join(map(str, reasons)) if isinstance(reasons, list) else repr(body[:200])


def _result(request: BidRequest, response: BidResponse, raw: str) -> VerifyResult:
    problems = tuple(response_problems(request, response))
    bids = response.bids()
    seat, bid = bids[0] if bids else (None, None)
    return VerifyResult(
        device_id=request.device.ifa,
        os=request.device.os or "unknown OS",
        targeted=bid is not None and not problems,
        segment=bid.ext.segment if bid is not None and bid.ext is not None else None,
        campaign=bid.cid if bid is not None else None,
        seat=seat,
        price=bid.price if bid is not None else None,
        nbr=response.nbr,
        problems=problems,
        response=response,
        raw=raw,
    )


async def verify(
    url: str,
    device_id: str,
    id_type: IdType,
    session: aiohttp.ClientSession,
    *,
    platform: Platform | None = None,
    bidfloor: float = 0.0,
    lmt: bool = False,
    timeout: float = 5.0,
) -> VerifyResult:
    """Ask the bidder at `url` whether it would bid on this device; raise `VerifyError` if unsure."""
    request = build_request(device_id, id_type, platform, bidfloor=bidfloor, lmt=lmt)
    status, body = await _post(session, url, request, timeout)
    if body.startswith(b"\x1f\x8b"):  # a session made with auto_decompress=False
        body = gzip.decompress(body)
    response = _read_response(request, status, body)
    return _result(request, response, body.decode("utf-8", errors="replace"))


def _no_bid_text(nbr: int | None) -> str:
    if nbr is None:
        return "no bid (no reason given)"
    try:
        label = NoBidReason(nbr).name.replace("_", " ").lower()
    except ValueError:
        label = "unknown code"
    return f"no bid (nbr {nbr}: {label})"


def format_result(result: VerifyResult) -> str:
    """One line for people: targeted or not, and by what."""
    who = f"device {result.device_id} ({result.os})"
    if result.targeted:
        return (
            f"TARGETED: {who} is in segment {result.segment}; campaign {result.campaign} "
            f"(seat {result.seat}) bids {result.price:.2f} CPM"
        )
    if result.problems:
        return f"NOT TARGETED: {who}: the bid breaks seed 002: {'; '.join(result.problems)}"
    return f"NOT TARGETED: {who}: {_no_bid_text(result.nbr)}"
