"""Typed OpenRTB 2.5 objects as InMobi supports them (seeds 001, bid request, and 002, response).

Every object tolerates fields it does not name (``extra="allow"``): exchanges add extensions freely,
and an unknown field must never turn a bid request into an error. The fields the seeds *do* name are
typed, and their rules are enforced with a message that says what to send instead:

- request: ``id``, ``imp`` (at least one), ``app`` (in-app inventory only) and ``device`` required;
  imp ``id`` unique within the request;
- imp: a placement, either ``imp.tagid`` or ``imp.ext.placementid``; a ``banner``, a ``video`` or
  both (the three impression shapes InMobi supports);
- banner: a size, either ``w`` and ``h`` or a ``format`` entry with ``w`` and ``h``;
- video: ``mimes``, ``w`` and ``h``;
- device: ``ua``, ``lmt`` and ``ifa``, and an address: ``ip`` or ``ipv6``. The seed marks both
  addresses required, but a device has one or the other, so one suffices;
- skadn: ``sourceapp`` and ``skadnetids``; schain: ``complete``, ``nodes``, ``ver``; node ``asi``,
  ``sid``, ``hp``;
- response: ``id`` and ``seatbid`` (empty for a no-bid); seatbid ``bid`` (1+) and ``seat``; bid
  ``id``, ``impid``, ``price``, ``burl`` and ``cat``. Rules that need the request (``impid`` known,
  price at or above the floor, ``adm``, banner ``w``/``h``) are in `worker.openrtb.checks`.

Values are frozen. Serialise with `to_json`, which drops unset fields and keeps unknown ones.
The seed spells two keys oddly (``User.Yob``, ``User.Geo``, and ``i`` for a UID's ``id``); the
standard spellings are the field names and ``i`` is accepted as an alias.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

__all__ = [
    "App",
    "Banner",
    "Bid",
    "BidExt",
    "BidRequest",
    "BidResponse",
    "BidVideoExt",
    "Content",
    "Device",
    "DeviceExt",
    "Eid",
    "Format",
    "Geo",
    "Imp",
    "ImpExt",
    "InvalidBidRequestError",
    "NoBidReason",
    "Producer",
    "Regs",
    "RegsExt",
    "SeatBid",
    "SkOverlay",
    "Skadn",
    "Source",
    "SourceExt",
    "SupplyChain",
    "SupplyChainNode",
    "Uid",
    "User",
    "UserExt",
    "Video",
    "VideoExt",
    "error_reasons",
    "parse_bid_request",
    "to_json",
]

Flag = Annotated[int, Field(ge=0, le=1)]
Size = Annotated[int, Field(ge=0)]


class NoBidReason(enum.IntEnum):
    """OpenRTB 2.5 list 5.24, the values of ``BidResponse.nbr``."""

    UNKNOWN_ERROR = 0
    TECHNICAL_ERROR = 1
    INVALID_REQUEST = 2
    KNOWN_WEB_SPIDER = 3
    SUSPECTED_NON_HUMAN_TRAFFIC = 4
    CLOUD_DATA_CENTER_OR_PROXY_IP = 5
    UNSUPPORTED_DEVICE = 6
    BLOCKED_PUBLISHER_OR_SITE = 7
    UNMATCHED_USER = 8
    DAILY_READER_CAP_MET = 9
    DAILY_DOMAIN_CAP_MET = 10


class _Object(BaseModel):
    """Base of every OpenRTB object: frozen, unknown fields kept, JSON names on the wire."""

    model_config = ConfigDict(
        extra="allow", frozen=True, validate_by_name=True, serialize_by_alias=True
    )


# --- Bid request: source and regulations ------------------------------------------------------


class SupplyChainNode(_Object):
    asi: str
    sid: str
    hp: Flag
    domain: str | None = None


class SupplyChain(_Object):
    complete: Flag
    nodes: list[SupplyChainNode]
    ver: str


class SourceExt(_Object):
    omidpn: str | None = None
    omidpv: str | None = None
    schain: SupplyChain | None = None


class Source(_Object):
    pchain: str | None = None
    ext: SourceExt | None = None


class RegsExt(_Object):
    gdpr: Flag | None = None


class Regs(_Object):
    coppa: Flag | None = None
    ext: RegsExt | None = None


# --- Bid request: the impression --------------------------------------------------------------


class Format(_Object):
    w: Size | None = None
    h: Size | None = None
    wratio: Size | None = None
    hratio: Size | None = None
    wmin: Size | None = None


class Banner(_Object):
    w: Size | None = None
    h: Size | None = None
    format: list[Format] | None = None
    id: str | None = None
    battr: list[int] | None = None
    pos: int | None = None
    mimes: list[str] | None = None
    topframe: Flag | None = None
    api: list[int] | None = None

    @model_validator(mode="after")
    def _has_size(self) -> Banner:
        if not self.sizes():
            raise ValueError("banner needs a size: banner.w and banner.h, or banner.format[].w/h")
        return self

    def sizes(self) -> list[tuple[int, int]]:
        """Every exact size this banner accepts: ``w``×``h`` first, then the formats."""
        found = [(self.w, self.h)] + [(f.w, f.h) for f in self.format or []]
        return [(w, h) for w, h in found if w and h]


class VideoExt(_Object):
    rewarded: Flag | None = None


class Video(_Object):
    mimes: list[str] = Field(min_length=1)
    w: Size
    h: Size
    minduration: int | None = None
    maxduration: int | None = None
    protocols: list[int] | None = None
    startdelay: int | None = None
    linearity: int | None = None
    skip: Flag | None = None
    skipmin: int | None = None
    battr: list[int] | None = None
    companionad: list[Banner] | None = None
    api: list[int] | None = None
    companiontype: list[int] | None = None
    ext: VideoExt | None = None


class Skadn(_Object):
    sourceapp: str
    skadnetids: list[str]
    version: str | None = None
    versions: list[str] | None = None
    skadnetlist: dict[str, Any] | None = None
    productpage: Flag | None = None


class ImpExt(_Object):
    placementid: int | None = None
    skadn: Skadn | None = None


class Imp(_Object):
    id: str = Field(min_length=1)
    banner: Banner | None = None
    video: Video | None = None
    displaymanager: str | None = None
    displaymanagerver: str | None = None
    instl: Flag | None = None
    tagid: str | None = None
    bidfloor: float = Field(0.0, ge=0)
    secure: Flag | None = None
    exp: int | None = None
    ext: ImpExt | None = None

    @model_validator(mode="after")
    def _is_supported(self) -> Imp:
        if not self.tagid and (self.ext is None or self.ext.placementid is None):
            raise ValueError("imp needs a placement: imp.tagid or imp.ext.placementid")
        if self.banner is None and self.video is None:
            raise ValueError("imp needs a banner, a video, or both (what InMobi supports)")
        return self


# --- Bid request: app, device, user -----------------------------------------------------------


class Producer(_Object):
    id: str | None = None
    name: str | None = None
    cat: list[str] | None = None
    domain: str | None = None


class Content(_Object):
    id: str | None = None
    episode: int | None = None
    title: str | None = None
    series: str | None = None
    season: str | None = None
    artist: str | None = None
    genre: str | None = None
    album: str | None = None
    isrc: str | None = None
    producer: Producer | None = None
    url: str | None = None
    cat: list[str] | None = None
    prodq: int | None = None
    videoquality: int | None = None
    context: int | str | None = None
    contentrating: str | None = None
    userrating: str | None = None
    qagmediarating: int | None = None
    keywords: str | None = None
    livestream: Flag | None = None
    sourcerelationship: Flag | None = None
    len: int | None = None
    language: str | None = None
    embeddable: Flag | None = None


class App(_Object):
    bundle: str | None = None
    domain: str | None = None
    storeurl: str | None = None
    cat: list[str] | None = None
    content: Content | None = None


class Geo(_Object):
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    type: int | None = None
    country: str | None = None
    city: str | None = None
    zip: str | None = None


class DeviceExt(_Object):
    ifv: str | None = None
    atts: int | None = Field(None, ge=0, le=3)


class Device(_Object):
    ua: str
    lmt: Flag
    ifa: str
    ip: str | None = None
    ipv6: str | None = None
    geo: Geo | None = None
    dnt: Flag | None = None
    devicetype: int | None = None
    make: str | None = None
    model: str | None = None
    os: str | None = None
    osv: str | None = None
    hwv: str | None = None
    pxratio: float | None = None
    connectiontype: int | None = None
    ext: DeviceExt | None = None

    @model_validator(mode="after")
    def _has_address(self) -> Device:
        if not self.ip and not self.ipv6:
            raise ValueError("device needs an address: device.ip or device.ipv6")
        return self


class Uid(_Object):
    id: str | None = Field(None, validation_alias=AliasChoices("id", "i"))
    atype: int | None = None


class Eid(_Object):
    source: str | None = None
    uids: list[Uid] | None = None


class UserExt(_Object):
    eids: list[Eid] | None = None
    consent: str | None = None


class User(_Object):
    id: str | None = None
    buyeruid: str | None = None
    yob: int | None = None
    gender: str | None = None
    keywords: str | None = None
    geo: Geo | None = None
    ext: UserExt | None = None


class BidRequest(_Object):
    id: str = Field(min_length=1)
    imp: list[Imp] = Field(min_length=1)
    app: App
    device: Device
    user: User | None = None
    tmax: int | None = Field(None, ge=0)
    bcat: list[str] | None = None
    badv: list[str] | None = None
    source: Source | None = None
    regs: Regs | None = None
    ext: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unique_imp_ids(self) -> BidRequest:
        ids = [imp.id for imp in self.imp]
        if len(set(ids)) != len(ids):
            raise ValueError("imp ids must be unique within the request")
        return self


# --- Bid response ------------------------------------------------------------------------------


class SkOverlay(_Object):
    """SKOverlay controls; the seed names the fields but not the ``ext`` key (assumed)."""

    position: int | None = None
    dismissable: Flag | None = None
    video_delay: int | None = None
    companion_delay: int | None = None


class BidVideoExt(_Object):
    experience: int | None = None


class BidExt(_Object):
    dsp_id: str | None = Field(None, alias="dspId")
    adv_id: str | None = Field(None, alias="advId")
    adv_name: str | None = Field(None, alias="advName")
    video: BidVideoExt | None = None
    imptrackers: list[str] | None = None  # the seed's table leaves this row's name blank
    clicktrackers: list[str] | None = None
    engagetracker: str | None = None
    landingurl: str | None = None
    deeplink: str | None = None
    campaigntype: int | None = None
    viewabilityvendors: list[str] | None = None
    skoverlay: SkOverlay | None = None
    # Sandbox extension, not InMobi's: the segment the bid targeted, for `inmobi-sync verify`.
    segment: str | None = None


class Bid(_Object):
    id: str = Field(min_length=1)
    impid: str = Field(min_length=1)
    price: float = Field(ge=0)
    burl: str = Field(min_length=1)
    cat: list[str]
    nurl: str | None = None
    lurl: str | None = None
    adm: str | None = None
    admobject: dict[str, Any] | None = None
    adid: str | None = None
    adomain: list[str] | None = None
    iurl: str | None = None
    cid: str | None = None
    crid: str | None = None
    attr: list[int] | None = None
    api: int | None = None
    dealid: str | None = None
    w: Size | None = None
    h: Size | None = None
    ext: BidExt | None = None


class SeatBid(_Object):
    bid: list[Bid] = Field(min_length=1)
    seat: str = Field(min_length=1)


class BidResponse(_Object):
    id: str
    seatbid: list[SeatBid]
    bidid: str | None = None
    cur: str | None = None  # absent means USD
    nbr: int | None = None

    def bids(self) -> list[tuple[str, Bid]]:
        """Every bid with the seat it was made for, in response order."""
        return [(seat.seat, bid) for seat in self.seatbid for bid in seat.bid]


# --- Parsing and serialising -------------------------------------------------------------------


class InvalidBidRequestError(ValueError):
    """A bid request that breaks a rule of the seed; `reasons` holds one line per problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _location(loc: tuple[int | str, ...]) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".") or "request"


def error_reasons(exc: PydanticValidationError) -> list[str]:
    """One ``where: what`` line per validation error, e.g. ``imp[0]: imp needs a placement…``."""
    return [
        f"{_location(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors(include_url=False)
    ]


def parse_bid_request(body: bytes | str) -> BidRequest:
    """Parse JSON text into a `BidRequest`, or raise `InvalidBidRequestError` with the reasons."""
    try:
        return BidRequest.model_validate_json(body)
    except PydanticValidationError as exc:
        raise InvalidBidRequestError(error_reasons(exc)) from exc


def to_json(model: BaseModel) -> bytes:
    """Compact wire JSON: unset fields dropped, unknown fields kept."""
    return model.model_dump_json(exclude_none=True).encode()
