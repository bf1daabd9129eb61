"""The sandbox bidder's decision: does this bid request's device get an audience-targeted bid?

`decide` answers one validated `BidRequest` in these steps:

1. Privacy first (`privacy_block`): a request with ``regs.coppa = 1``, ``device.lmt = 1``,
   ``device.ext.atts`` restricted (1) or denied (2), ``regs.ext.gdpr = 1`` without a consent
   string (missing, empty or ``"0"``), or an IFA that is empty or the all-zero UUID never gets a
   segment-targeted bid. The segment lookup is not even made. No-bid with ``nbr`` 8 (unmatched
   user): the bidder may not match this user.
2. Membership: ``segments_of(ifa)`` gives the InMobi segment names the device belongs to. A UUID
   IFA is looked up in its canonical lower-case form (how the sandbox stores IDFAs and GAIDs);
   any other IFA as sent. No campaign targets any of them: no-bid with ``nbr`` 8.
3. Per impression, the campaigns of those segments that fit it: a banner whose sizes include the
   campaign's ``w``×``h`` (campaigns are banner creatives, so a video-only imp gets no bid), no
   category in ``bcat`` (an ``IAB1`` block covers ``IAB1-2``), no domain in ``badv``, and a floor
   the campaign can reach (see `worker.openrtb.campaigns` for pricing). The highest price wins;
   ties go to the campaign listed first.
4. No imp got a bid: the plain no-bid ``{"id": …, "seatbid": []}`` (the user matched; there is
   simply nothing to buy). Otherwise one bid per imp, grouped into one seatbid per seat, in USD.

Each bid carries ``impid``, ``price``, ``adm``, ``burl``, ``cat``, ``crid``, ``cid`` (campaign
name), ``adomain``, ``w``/``h``, and the sandbox extension ``ext.segment``. Pure code: the
segment lookup is a function argument, and the same request always gets the same answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from worker.openrtb.campaigns import Campaign, demo_campaigns, load_campaigns
from worker.openrtb.models import (
    Bid,
    BidExt,
    BidRequest,
    BidResponse,
    Imp,
    NoBidReason,
    SeatBid,
)

__all__ = [
    "Campaign",
    "SegmentsOf",
    "decide",
    "demo_campaigns",
    "load_campaigns",
    "lookup_key",
    "privacy_block",
]

SegmentsOf = Callable[[str], list[str]]

_NO_CONSENT = {"", "0"}


def lookup_key(ifa: str) -> str | None:
    """The key to look a device up by: canonical lower-case UUID, or the IFA as sent.

    None when the IFA cannot identify anyone: empty, or the all-zero UUID.
    """
    ifa = ifa.strip()
    try:
        parsed = uuid.UUID(ifa)
    except ValueError:
        return ifa or None
    return str(parsed) if parsed.int else None


def privacy_block(request: BidRequest) -> str | None:
    """Why this request may not be audience-targeted, or None when it may."""
    regs, device, user = request.regs, request.device, request.user
    if regs is not None and regs.coppa == 1:
        return "regs.coppa=1: child-directed, no audience targeting"
    if device.lmt == 1:
        return "device.lmt=1: limit ad tracking"
    if device.ext is not None and device.ext.atts in (1, 2):
        return f"device.ext.atts={device.ext.atts}: app tracking restricted or denied"
    if regs is not None and regs.ext is not None and regs.ext.gdpr == 1:
        consent = user.ext.consent if user is not None and user.ext is not None else None
        if (consent or "").strip() in _NO_CONSENT:
            return "regs.ext.gdpr=1 without user.ext.consent"
    if lookup_key(device.ifa) is None:
        return "device.ifa is empty or zeroed"
    return None


def decide(
    request: BidRequest, segments_of: SegmentsOf, campaigns: Sequence[Campaign]
) -> BidResponse:
    """Bid for each imp this device is targeted on, or answer one of the seed's no-bid forms."""
    key = lookup_key(request.device.ifa)
    if key is None or privacy_block(request) is not None:
        return _no_bid(request, NoBidReason.UNMATCHED_USER)
    member_of = set(segments_of(key))
    targeting = [campaign for campaign in campaigns if campaign.segment in member_of]
    if not targeting:
        return _no_bid(request, NoBidReason.UNMATCHED_USER)
    bids = [bid for imp in request.imp if (bid := _bid(request, imp, targeting)) is not None]
    if not bids:
        return _no_bid(request, None)
    return BidResponse(id=request.id, bidid=request.id, cur="USD", seatbid=_seats(bids))


def _no_bid(request: BidRequest, reason: NoBidReason | None) -> BidResponse:
    return BidResponse(id=request.id, seatbid=[], nbr=reason)


def _fits(request: BidRequest, imp: Imp, campaign: Campaign) -> bool:
    if imp.banner is None or (campaign.w, campaign.h) not in imp.banner.sizes():
        return False
    blocked_cats = request.bcat or []
    if any(cat == b or cat.startswith(f"{b}-") for cat in campaign.cat for b in blocked_cats):
        return False
    return not set(campaign.adomain) & set(request.badv or [])


def _bid(request: BidRequest, imp: Imp, campaigns: list[Campaign]) -> tuple[str, Bid] | None:
    offers = [
        (price, campaign)
        for campaign in campaigns
        if _fits(request, imp, campaign) and (price := campaign.price_for(imp.bidfloor)) is not None
    ]
    if not offers:
        return None
    price, campaign = max(offers, key=lambda offer: offer[0])
    bid = Bid(
        id=f"{request.id}-{imp.id}",
        impid=imp.id,
        price=price,
        adm=campaign.adm,
        burl=campaign.burl,
        cat=campaign.cat,
        crid=campaign.crid,
        cid=campaign.name,
        adomain=campaign.adomain,
        w=campaign.w,
        h=campaign.h,
        ext=BidExt(segment=campaign.segment),
    )
    return campaign.seat, bid


def _seats(bids: list[tuple[str, Bid]]) -> list[SeatBid]:
    by_seat: dict[str, list[Bid]] = {}
    for seat, bid in bids:
        by_seat.setdefault(seat, []).append(bid)
    return [SeatBid(seat=seat, bid=seat_bids) for seat, seat_bids in by_seat.items()]
