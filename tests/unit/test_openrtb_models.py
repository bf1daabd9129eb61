"""The OpenRTB models hold InMobi's seed tables: required fields, "either of" rules, extras kept."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from worker.openrtb.models import (
    BidResponse,
    InvalidBidRequestError,
    parse_bid_request,
    to_json,
)

DELETE = object()

BANNER = {"w": 320, "h": 50, "pos": 1, "api": [7], "battr": [1, 3]}
VIDEO = {
    "mimes": ["video/mp4"],
    "w": 640,
    "h": 360,
    "minduration": 5,
    "maxduration": 30,
    "protocols": [2, 3, 7],
    "ext": {"rewarded": 1},
}
IFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"


def base_request() -> dict[str, Any]:
    """A banner request with every object of seed 001 that is not "not supported"."""
    return {
        "id": "req-1",
        "imp": [{"id": "1", "tagid": "1500000000001", "bidfloor": 0.5, "banner": dict(BANNER)}],
        "app": {
            "bundle": "com.example.game",
            "storeurl": "https://play.google.com/store/apps/details?id=com.example.game",
            "cat": ["IAB9"],
            "content": {"title": "Level 1", "producer": {"name": "Example"}},
        },
        "device": {
            "ua": "Mozilla/5.0 (Linux; Android 14)",
            "lmt": 0,
            "ip": "203.0.113.10",
            "ifa": IFA,
            "os": "Android",
            "geo": {"lat": 52.5, "lon": 13.4, "type": 2, "country": "DEU"},
            "ext": {"ifv": "0A1B2C3D-0000-0000-0000-000000000000", "atts": 3},
        },
        "user": {
            "id": "u-1",
            "yob": 1990,
            "ext": {
                "consent": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
                "eids": [{"source": "liveramp.com", "uids": [{"i": "XY1000", "atype": 3}]}],
            },
        },
        "tmax": 300,
        "bcat": ["IAB25"],
        "badv": ["blocked.example"],
        "source": {
            "pchain": "abc:def",
            "ext": {
                "omidpn": "Inmobi",
                "schain": {
                    "complete": 1,
                    "ver": "1.0",
                    "nodes": [{"asi": "inmobi.com", "sid": "123", "hp": 1}],
                },
            },
        },
        "regs": {"coppa": 0, "ext": {"gdpr": 1}},
    }


def with_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The base request with dotted paths set (``imp.0.tagid``) or deleted (`DELETE`)."""
    document = copy.deepcopy(base_request())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return document


VALID = {
    "banner with w and h": {},
    "banner with format only": {"imp.0.banner": {"format": [{"w": 300, "h": 250}]}},
    "banner with ratio format and an exact one": {
        "imp.0.banner": {"format": [{"wratio": 16, "hratio": 9}, {"w": 320, "h": 480}]}
    },
    "video": {"imp.0.banner": DELETE, "imp.0.video": VIDEO},
    "banner and video": {"imp.0.video": VIDEO},
    "placementid instead of tagid": {"imp.0.tagid": DELETE, "imp.0.ext": {"placementid": 15}},
    "ipv6 only": {"device.ip": DELETE, "device.ipv6": "2001:db8::1"},
    "minimal objects": {"user": DELETE, "source": DELETE, "regs": DELETE, "app": {}},
    "skadn": {
        "imp.0.ext": {
            "skadn": {
                "version": "4.0",
                "versions": ["2.0", "4.0"],
                "sourceapp": "1234567890",
                "skadnetids": ["cdkw7geqsh.skadnetwork"],
                "productpage": 1,
            }
        }
    },
    "two impressions": {
        "imp": [
            {"id": "1", "tagid": "a", "banner": BANNER},
            {"id": "2", "tagid": "b", "video": VIDEO},
        ]
    },
}


@pytest.mark.parametrize("changes", VALID.values(), ids=VALID.keys())
def test_seed_compliant_requests_are_accepted(changes: dict[str, Any]) -> None:
    request = parse_bid_request(json.dumps(with_changes(changes)))
    assert request.imp[0].banner is not None or request.imp[0].video is not None


INVALID = {
    "no id": ({"id": DELETE}, "id: Field required"),
    "no imp": ({"imp": DELETE}, "imp: Field required"),
    "empty imp": ({"imp": []}, "imp: List should have at least 1 item"),
    "no tagid or placementid": ({"imp.0.tagid": DELETE}, "imp[0]: imp needs a placement"),
    "empty tagid": ({"imp.0.tagid": ""}, "imp[0]: imp needs a placement"),
    "neither banner nor video": ({"imp.0.banner": DELETE}, "imp[0]: imp needs a banner, a video"),
    "banner without a size": ({"imp.0.banner": {"pos": 1}}, "imp[0].banner: banner needs a size"),
    "banner with w only": ({"imp.0.banner": {"w": 320}}, "imp[0].banner: banner needs a size"),
    "banner with ratio format only": (
        {"imp.0.banner": {"format": [{"wratio": 16, "hratio": 9}]}},
        "imp[0].banner: banner needs a size",
    ),
    "video without mimes": (
        {"imp.0.banner": DELETE, "imp.0.video": {"w": 640, "h": 360}},
        "imp[0].video.mimes: Field required",
    ),
    "video without h": (
        {"imp.0.video": {"mimes": ["video/mp4"], "w": 640}},
        "imp[0].video.h: Field required",
    ),
    "negative floor": ({"imp.0.bidfloor": -1}, "imp[0].bidfloor"),
    "duplicate imp ids": (
        {"imp": [{"id": "1", "tagid": "a", "banner": BANNER}] * 2},
        "request: imp ids must be unique",
    ),
    "no app": ({"app": DELETE}, "app: Field required"),
    "no device": ({"device": DELETE}, "device: Field required"),
    "device without ifa": ({"device.ifa": DELETE}, "device.ifa: Field required"),
    "device without lmt": ({"device.lmt": DELETE}, "device.lmt: Field required"),
    "device without ua": ({"device.ua": DELETE}, "device.ua: Field required"),
    "device without an address": ({"device.ip": DELETE}, "device: device needs an address"),
    "lmt out of range": ({"device.lmt": 2}, "device.lmt"),
    "atts out of range": ({"device.ext.atts": 4}, "device.ext.atts"),
    "latitude out of range": ({"device.geo.lat": 91}, "device.geo.lat"),
    "skadn without sourceapp": (
        {"imp.0.ext": {"skadn": {"skadnetids": ["x.skadnetwork"]}}},
        "imp[0].ext.skadn.sourceapp: Field required",
    ),
    "schain without nodes": (
        {"source.ext.schain.nodes": DELETE},
        "source.ext.schain.nodes: Field required",
    ),
    "schain node without asi": (
        {"source.ext.schain.nodes": [{"sid": "1", "hp": 1}]},
        "source.ext.schain.nodes[0].asi: Field required",
    ),
    "coppa not a flag": ({"regs.coppa": 3}, "regs.coppa"),
}


@pytest.mark.parametrize(("changes", "reason"), INVALID.values(), ids=INVALID.keys())
def test_invalid_requests_are_rejected_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidBidRequestError) as caught:
        parse_bid_request(json.dumps(with_changes(changes)))
    assert any(line.startswith(reason) for line in caught.value.reasons), caught.value.reasons


def test_every_problem_is_reported_not_just_the_first() -> None:
    changes = {"device": DELETE, "app": DELETE, "imp.0.banner": {}}
    with pytest.raises(InvalidBidRequestError) as caught:
        parse_bid_request(json.dumps(with_changes(changes)))
    assert len(caught.value.reasons) == 3


@pytest.mark.parametrize("body", [b"not json", b"[]", b""])
def test_a_body_that_is_no_json_object_is_rejected(body: bytes) -> None:
    with pytest.raises(InvalidBidRequestError) as caught:
        parse_bid_request(body)
    assert caught.value.reasons[0].startswith("request: ")


def test_unknown_fields_are_tolerated_and_kept_on_the_wire() -> None:
    changes = {"ext.exchange": {"x": 1}, "imp.0.banner.vcm": 1, "device.ext.custom": "y", "at": 1}
    request = parse_bid_request(json.dumps(with_changes(changes)))
    echoed = json.loads(to_json(request))
    assert echoed["at"] == 1
    assert echoed["imp"][0]["banner"]["vcm"] == 1
    assert echoed["device"]["ext"]["custom"] == "y"


def test_the_seed_uid_key_i_is_read_as_id() -> None:
    request = parse_bid_request(json.dumps(base_request()))
    assert request.user is not None
    assert request.user.ext is not None
    assert request.user.ext.eids is not None
    assert request.user.ext.eids[0].uids is not None
    assert request.user.ext.eids[0].uids[0].id == "XY1000"


def test_banner_sizes_list_exact_sizes_in_order() -> None:
    banner = {"w": 320, "h": 50, "format": [{"w": 300, "h": 250}, {"wratio": 1, "hratio": 1}]}
    request = parse_bid_request(json.dumps(with_changes({"imp.0.banner": banner})))
    assert request.imp[0].banner is not None
    assert request.imp[0].banner.sizes() == [(320, 50), (300, 250)]


# --- Bid responses (seed 002) -------------------------------------------------------------------

FULL_BID = {
    "id": "bid-1",
    "impid": "1",
    "price": 1.5,
    "burl": "https://dsp.example/billing?p=${AUCTION_PRICE}",
    "adm": "<div>ad</div>",
    "adomain": ["shop.example"],
    "cat": ["IAB22"],
    "crid": "cr-1",
    "cid": "camp-1",
    "w": 320,
    "h": 50,
    "ext": {
        "dspId": "dsp-9",
        "advId": "adv-1",
        "advName": "Shop",
        "clicktrackers": ["https://dsp.example/click"],
        "viewabilityvendors": ["moat.com"],
        "skoverlay": {"position": 1, "dismissable": 1, "video_delay": 3},
        "vendorx": True,
    },
}


@pytest.mark.parametrize(
    "body",
    [
        {"id": "1234567890", "seatbid": []},
        {"id": "1234567890", "seatbid": [], "nbr": 2},
        {"id": "1", "cur": "USD", "seatbid": [{"seat": "s", "bid": [FULL_BID]}]},
    ],
    ids=["no-bid", "no-bid with nbr", "bid with InMobi extensions"],
)
def test_seed_response_forms_are_read(body: dict[str, Any]) -> None:
    response = BidResponse.model_validate_json(json.dumps(body))
    assert json.loads(to_json(response)) == body


def test_bid_extension_keys_keep_their_inmobi_spelling() -> None:
    response = BidResponse.model_validate(
        {"id": "1", "seatbid": [{"seat": "s", "bid": [FULL_BID]}]}
    )
    _seat, bid = response.bids()[0]
    assert bid.ext is not None
    assert bid.ext.dsp_id == "dsp-9"
    assert '"dspId":"dsp-9"' in to_json(response).decode()


BAD_RESPONSES = {
    "no seatbid": ({"id": "1"}, "seatbid"),
    "seat without bids": ({"id": "1", "seatbid": [{"seat": "s", "bid": []}]}, "seatbid.0.bid"),
    "seat without name": ({"id": "1", "seatbid": [{"bid": [FULL_BID]}]}, "seatbid.0.seat"),
    "bid without burl": (
        {"id": "1", "seatbid": [{"seat": "s", "bid": [{**FULL_BID, "burl": None}]}]},
        "seatbid.0.bid.0.burl",
    ),
    "bid without cat": (
        {"id": "1", "seatbid": [{"seat": "s", "bid": [{**FULL_BID, "cat": None}]}]},
        "seatbid.0.bid.0.cat",
    ),
    "negative price": (
        {"id": "1", "seatbid": [{"seat": "s", "bid": [{**FULL_BID, "price": -1}]}]},
        "seatbid.0.bid.0.price",
    ),
}


@pytest.mark.parametrize(("body", "where"), BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
def test_responses_missing_required_fields_are_rejected(body: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        BidResponse.model_validate(body)
