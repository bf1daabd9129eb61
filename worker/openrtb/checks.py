"""The bid-response rules of seed 002 that need the request to check.

A response is read against the request it answers. Each problem is one line naming the bid:

1. ``response.id`` echoes ``request.id``;
2. every ``bid.impid`` names an imp of the request;
3. ``bid.price`` is at or above that imp's ``bidfloor`` (InMobi drops bids below the floor);
4. ``bid.adm`` is present (required for display and video, which is all InMobi's imps carry);
5. a bid on a banner-only imp has ``w`` and ``h``, and that size is one the banner accepts;
6. a no-bid (empty ``seatbid``) carries an ``nbr`` of list 5.24, if any;
7. ``crid`` is at most 64 characters (InMobi would truncate it).

Pure code: `worker.openrtb.verify` uses it to tell a malformed bid from a real one, and the tests use
it to hold the sandbox bidder to the seed.
"""

from __future__ import annotations

from worker.openrtb.models import Bid, BidRequest, BidResponse, Imp, NoBidReason

__all__ = ["response_problems"]

_MAX_CRID = 64


def _bid_problems(bid: Bid, imp: Imp) -> list[str]:
    where = f"bid {bid.id!r} on imp {imp.id!r}"
    problems = []
    if bid.price < imp.bidfloor:
        problems.append(f"{where}: price {bid.price} is below the floor {imp.bidfloor}")
    if not bid.adm:
        problems.append(f"{where}: adm is required for banner and video ads")
    if imp.banner is not None and imp.video is None:
        if bid.w is None or bid.h is None:
            problems.append(f"{where}: w and h are required for banner ads")
        elif (bid.w, bid.h) not in imp.banner.sizes():
            problems.append(f"{where}: size {bid.w}x{bid.h} is not one the banner accepts")
    if bid.crid is not None and len(bid.crid) > _MAX_CRID:
        problems.append(f"{where}: crid is longer than {_MAX_CRID} characters")
    return problems


def response_problems(request: BidRequest, response: BidResponse) -> list[str]:
    """Every way `response` breaks seed 002 as an answer to `request`; empty when it is sound."""
    problems = []
    if response.id != request.id:
        problems.append(f"response id {response.id!r} does not echo request id {request.id!r}")
    if not response.seatbid and response.nbr is not None and response.nbr not in set(NoBidReason):
        problems.append(f"nbr {response.nbr} is not a no-bid reason of OpenRTB 2.5 list 5.24")
    imps = {imp.id: imp for imp in request.imp}
    for _seat, bid in response.bids():
        imp = imps.get(bid.impid)
        if imp is None:
            problems.append(f"bid {bid.id!r}: impid {bid.impid!r} is not an imp of the request")
        else:
            problems.extend(_bid_problems(bid, imp))
    return problems
