"""Reading a bid response against its request catches every bid InMobi would drop."""

from __future__ import annotations

from typing import Any

import pytest

from worker.openrtb.checks import response_problems
from worker.openrtb.models import Bid, BidRequest, BidResponse, SeatBid, Video
from worker.openrtb.verify import build_request

REQUEST = build_request(
    "6d92078a-8246-4ba4-ae5b-76104861e7dc", "GAID", request_id="r-1", bidfloor=1
)


def answer(request_id: str = "r-1", nbr: int | None = None, **bid_changes: Any) -> BidResponse:
    fields: dict[str, Any] = {
        "id": "b-1",
        "impid": "1",
        "price": 1.0,
        "burl": "https://dsp.example/b",
        "adm": "<div/>",
        "cat": ["IAB22"],
        "crid": "c-1",
        "w": 320,
        "h": 50,
    }
    bid = Bid(**(fields | bid_changes))
    return BidResponse(id=request_id, seatbid=[SeatBid(seat="s", bid=[bid])], nbr=nbr)


def test_a_sound_bid_has_no_problems() -> None:
    assert response_problems(REQUEST, answer()) == []


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (answer(request_id="other"), "response id 'other' does not echo"),
        (answer(impid="9"), "bid 'b-1': impid '9' is not an imp"),
        (answer(price=0.99), "price 0.99 is below the floor 1.0"),
        (answer(adm=None), "adm is required"),
        (answer(w=None), "w and h are required for banner ads"),
        (answer(w=300, h=250), "size 300x250 is not one the banner accepts"),
        (answer(crid="c" * 65), "crid is longer than 64 characters"),
        (BidResponse(id="r-1", seatbid=[], nbr=42), "nbr 42 is not a no-bid reason"),
    ],
    ids=["id", "impid", "floor", "adm", "size missing", "size", "crid", "nbr"],
)
def test_each_broken_rule_is_named(response: BidResponse, problem: str) -> None:
    (only,) = response_problems(REQUEST, response)
    assert problem in only


def test_a_bid_on_a_banner_and_video_imp_needs_no_size() -> None:
    video = Video(mimes=["video/mp4"], w=640, h=360)
    request: BidRequest = REQUEST.model_copy(
        update={"imp": [REQUEST.imp[0].model_copy(update={"video": video})]}
    )
    assert response_problems(request, answer(w=None, h=None)) == []
