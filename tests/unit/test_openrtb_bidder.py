"""The sandbox bidder's decisions: members get bids InMobi accepts, everyone else a seed no-bid."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.openrtb.bidder import Campaign, decide, demo_campaigns, load_campaigns, lookup_key
from worker.openrtb.checks import response_problems
from worker.openrtb.models import (
    Banner,
    Bid,
    BidRequest,
    BidResponse,
    DeviceExt,
    Format,
    NoBidReason,
    Regs,
    RegsExt,
    SeatBid,
    User,
    UserExt,
    Video,
)
from worker.openrtb.verify import build_request

GAID = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
IDFA = "AEBE52E7-03EE-455A-B3C4-E57283966239"
VIDEO = Video(mimes=["video/mp4"], w=640, h=360)


class FakeSegments:
    """`segments_of` over a dict, recording every lookup."""

    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members = members
        self.calls: list[str] = []

    def __call__(self, ifa: str) -> list[str]:
        self.calls.append(ifa)
        return self.members.get(ifa, [])


def campaign(**changes: Any) -> Campaign:
    fields: dict[str, Any] = {
        "name": "vip",
        "segment": "HIGH_VALUE_USERS",
        "price_cpm": 2.0,
        "adm": "<div>vip</div>",
        "w": 320,
        "h": 50,
        "crid": "vip-320x50",
        "adomain": ["shop.example"],
        "cat": ["IAB22-4"],
    }
    return Campaign(**(fields | changes))


def gaid_request(bidfloor: float = 0.0) -> BidRequest:
    return build_request(GAID, "GAID", request_id="r-1", bidfloor=bidfloor)


def change(request: BidRequest, **fields: Any) -> BidRequest:
    return request.model_copy(update=fields)


def change_device(request: BidRequest, **fields: Any) -> BidRequest:
    return change(request, device=request.device.model_copy(update=fields))


def only_bid(response: BidResponse) -> tuple[str, Bid]:
    bids = response.bids()
    assert len(bids) == 1, response
    return bids[0]


def test_a_member_gets_a_bid_with_every_field_the_seed_requires() -> None:
    request = gaid_request(bidfloor=0.5)
    response = decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [campaign()])
    seat, bid = only_bid(response)
    assert (seat, bid.impid, bid.price, bid.w, bid.h) == ("sandbox-seat", "1", 2.0, 320, 50)
    assert bid.adm
    assert bid.burl
    assert bid.cat
    assert bid.crid
    assert bid.adomain
    assert (bid.cid, bid.ext and bid.ext.segment) == ("vip", "HIGH_VALUE_USERS")
    assert (response.id, response.cur, response.nbr) == ("r-1", "USD", None)
    assert response_problems(request, response) == []


def test_an_idfa_is_looked_up_in_lower_case() -> None:
    segments = FakeSegments({IDFA.lower(): ["HIGH_VALUE_USERS"]})
    request = build_request(IDFA, "IDFA")
    assert request.device.ifa == IDFA  # iOS reports it upper-case
    only_bid(decide(request, segments, [campaign()]))
    assert segments.calls == [IDFA.lower()]


def test_a_non_member_gets_the_unmatched_user_no_bid() -> None:
    response = decide(gaid_request(), FakeSegments({GAID: ["OTHER"]}), [campaign()])
    assert (response.seatbid, response.nbr) == ([], NoBidReason.UNMATCHED_USER)


def test_no_campaigns_means_no_bid() -> None:
    response = decide(gaid_request(), FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [])
    assert (response.seatbid, response.nbr) == ([], NoBidReason.UNMATCHED_USER)


def _lmt(request: BidRequest) -> BidRequest:
    return change_device(request, lmt=1)


def _coppa(request: BidRequest) -> BidRequest:
    return change(request, regs=Regs(coppa=1))


def _zero_ifa(request: BidRequest) -> BidRequest:
    return change_device(request, ifa="00000000-0000-0000-0000-000000000000")


def _att_denied(request: BidRequest) -> BidRequest:
    return change_device(request, ext=DeviceExt(atts=2))


def _gdpr_without_consent(request: BidRequest) -> BidRequest:
    return change(request, regs=Regs(ext=RegsExt(gdpr=1)))


@pytest.mark.parametrize("restrict", [_lmt, _coppa, _zero_ifa, _att_denied, _gdpr_without_consent])
def test_privacy_signals_prevent_a_segment_bid_and_the_lookup(restrict: Any) -> None:
    segments = FakeSegments({GAID: ["HIGH_VALUE_USERS"]})
    response = decide(restrict(gaid_request()), segments, [campaign()])
    assert (response.seatbid, response.nbr) == ([], NoBidReason.UNMATCHED_USER)
    assert segments.calls == []


def test_gdpr_with_a_consent_string_may_be_targeted() -> None:
    request = change(
        _gdpr_without_consent(gaid_request()), user=User(ext=UserExt(consent="CPXxRfAPXxRfA"))
    )
    only_bid(decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [campaign()]))


def test_a_floor_above_the_campaign_ceiling_gets_the_plain_no_bid() -> None:
    response = decide(
        gaid_request(bidfloor=2.01), FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [campaign()]
    )
    assert (response.seatbid, response.nbr) == ([], None)


def test_a_campaign_with_headroom_bids_exactly_the_floor() -> None:
    response = decide(
        gaid_request(bidfloor=3.0),
        FakeSegments({GAID: ["HIGH_VALUE_USERS"]}),
        [campaign(max_cpm=4.0)],
    )
    assert only_bid(response)[1].price == 3.0


@given(
    floor=st.floats(0, 20, allow_nan=False),
    price=st.floats(0.01, 10, allow_nan=False),
    headroom=st.one_of(st.none(), st.floats(0, 10, allow_nan=False)),
)
def test_a_price_is_never_below_the_floor_nor_above_the_ceiling(
    floor: float, price: float, headroom: float | None
) -> None:
    ceiling = None if headroom is None else price + headroom
    offer = campaign(price_cpm=price, max_cpm=ceiling)
    request = gaid_request(bidfloor=floor)
    response = decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [offer])
    reachable = floor <= (ceiling if ceiling is not None else price)
    assert bool(response.seatbid) == reachable
    for _seat, bid in response.bids():
        assert floor <= bid.price <= (ceiling if ceiling is not None else price)
    assert response_problems(request, response) == []


def test_the_highest_price_wins_and_ties_go_to_the_first_campaign() -> None:
    campaigns = [
        campaign(name="a", price_cpm=1.0),
        campaign(name="b", price_cpm=3.0, segment="CART_ABANDONERS"),
        campaign(name="c", price_cpm=3.0),
    ]
    segments = FakeSegments({GAID: ["HIGH_VALUE_USERS", "CART_ABANDONERS"]})
    assert only_bid(decide(gaid_request(), segments, campaigns))[1].cid == "b"


def _imp_with(request: BidRequest, **fields: Any) -> BidRequest:
    return change(request, imp=[request.imp[0].model_copy(update=fields)])


@pytest.mark.parametrize(
    ("shape", "bids"),
    [
        ({"banner": Banner(w=300, h=250)}, False),
        ({"banner": Banner(w=300, h=250, format=[Format(w=320, h=50)])}, True),
        ({"banner": None, "video": VIDEO}, False),
        ({"video": VIDEO}, True),
    ],
    ids=["other size", "size in format", "video only", "banner and video"],
)
def test_a_campaign_bids_only_where_its_banner_fits(shape: dict[str, Any], bids: bool) -> None:
    request = _imp_with(gaid_request(), **shape)
    response = decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [campaign()])
    assert bool(response.seatbid) == bids
    assert response_problems(request, response) == []


@pytest.mark.parametrize(
    ("blocks", "bids"),
    [
        ({"bcat": ["IAB22"]}, False),
        ({"bcat": ["IAB22-4"]}, False),
        ({"bcat": ["IAB2"]}, True),
        ({"badv": ["shop.example"]}, False),
        ({"badv": ["other.example"]}, True),
    ],
)
def test_blocked_categories_and_advertisers_are_respected(
    blocks: dict[str, list[str]], bids: bool
) -> None:
    request = change(gaid_request(), **blocks)
    response = decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), [campaign()])
    assert bool(response.seatbid) == bids


def test_bids_are_grouped_by_seat_one_per_imp() -> None:
    request = gaid_request()
    second = request.imp[0].model_copy(update={"id": "2", "banner": Banner(w=300, h=250)})
    request = change(request, imp=[request.imp[0], second])
    campaigns = [campaign(seat="s1"), campaign(name="mpu", w=300, h=250, seat="s2")]
    response = decide(request, FakeSegments({GAID: ["HIGH_VALUE_USERS"]}), campaigns)
    assert [(s.seat, [b.impid for b in s.bid]) for s in response.seatbid] == [
        ("s1", ["1"]),
        ("s2", ["2"]),
    ]
    assert isinstance(response.seatbid[0], SeatBid)
    assert response_problems(request, response) == []


@pytest.mark.parametrize(
    ("ifa", "key"),
    [
        (IDFA, IDFA.lower()),
        ("AEBE52E703EE455AB3C4E57283966239", IDFA.lower()),
        ("00000000-0000-0000-0000-000000000000", None),
        ("", None),
        ("  ", None),
        ("roku-device-1", "roku-device-1"),
    ],
)
def test_lookup_key_canonicalises_uuids_and_refuses_unusable_ids(ifa: str, key: str | None) -> None:
    assert lookup_key(ifa) == key


# --- Campaigns ------------------------------------------------------------------------------------


def test_demo_campaigns_make_one_campaign_per_distinct_segment() -> None:
    campaigns = demo_campaigns(["VIP", "CART", "VIP"], price_cpm=2.5)
    assert [(c.name, c.segment, c.price_cpm) for c in campaigns] == [
        ("demo-VIP", "VIP", 2.5),
        ("demo-CART", "CART", 2.5),
    ]


CAMPAIGN_YAML = """
campaigns:
  - name: vip
    segment: HIGH_VALUE_USERS
    price_cpm: 2.5
    max_cpm: 4
    adm: '<div>vip</div>'
    w: 320
    h: 50
    crid: vip-1
    adomain: [shop.example]
    cat: [IAB22]
"""

CAMPAIGN_JSON = (
    '[{"name": "vip", "segment": "S", "price_cpm": 1, "adm": "<div/>", "w": 320, "h": 50,'
    ' "crid": "c", "adomain": ["a.example"], "cat": ["IAB1"], "seat": "seat-7"}]'
)


def test_campaigns_load_from_yaml_and_json() -> None:
    (from_yaml,) = load_campaigns(CAMPAIGN_YAML)
    (from_json,) = load_campaigns(CAMPAIGN_JSON)
    assert (from_yaml.max_cpm, from_yaml.seat) == (4.0, "sandbox-seat")
    assert (from_json.segment, from_json.seat) == ("S", "seat-7")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{name: x}", "campaigns: expected a list"),
        (CAMPAIGN_YAML.replace("max_cpm: 4", "max_cpm: 1"), "campaigns[0]: max_cpm must be"),
        (
            CAMPAIGN_YAML.replace("crid: vip-1", "crid: vip-1\n    colour: red"),
            "campaigns[0].colour",
        ),
        (CAMPAIGN_YAML.replace("    cat: [IAB22]\n", ""), "campaigns[0].cat: Field required"),
        (CAMPAIGN_JSON[:-1] + "," + CAMPAIGN_JSON[1:], "campaigns: names must be unique"),
        ("[unclosed", "campaigns: not valid JSON or YAML"),
    ],
    ids=["not a list", "ceiling below price", "unknown key", "missing cat", "duplicate", "syntax"],
)
def test_bad_campaign_documents_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_campaigns(text)
    assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems
