"""``inmobi-sync verify``: seed-compliant requests, and the verdict read from a real HTTP bidder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker.openrtb.bidder import demo_campaigns
from worker.openrtb.models import parse_bid_request, to_json
from worker.openrtb.routes import BID_PATH, mount_bidder
from worker.openrtb.verify import (
    IdType,
    Platform,
    VerifyError,
    build_request,
    format_result,
    verify,
)

IDFA = "AEBE52E7-03EE-455A-B3C4-E57283966239"
GAID = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
STRANGER = "0f8fad5b-d9cb-469f-a165-70867728950e"
MEMBERS = {IDFA.lower(): ["HIGH_VALUE_USERS"], GAID: ["CART_ABANDONERS"]}


def segments_of(ifa: str) -> list[str]:
    return MEMBERS.get(ifa, [])


@pytest.fixture
async def bid_url() -> AsyncIterator[str]:
    app = web.Application()
    mount_bidder(app, segments_of, demo_campaigns(["HIGH_VALUE_USERS", "CART_ABANDONERS"]))
    async with TestServer(app) as server:
        yield str(server.make_url(BID_PATH))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def serve(handler_status: int, body: bytes) -> TestServer:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=handler_status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post(BID_PATH, handler)
    server = TestServer(app)
    await server.start_server()
    return server


def test_an_idfa_request_is_an_ios_app_request_inmobi_accepts() -> None:
    request = build_request(IDFA.lower(), "IDFA", request_id="r-1")
    assert parse_bid_request(to_json(request)) == request  # survives the seed's validation
    device, imp = request.device, request.imp[0]
    assert (device.ifa, device.os, device.lmt) == (IDFA, "iOS", 0)
    assert device.ext is not None
    assert device.ext.atts == 3
    assert imp.ext is not None
    assert imp.ext.skadn is not None
    assert request.app.bundle == imp.ext.skadn.sourceapp
    assert imp.tagid
    assert imp.banner is not None
    assert imp.banner.sizes() == [(320, 50), (320, 50)]


def test_a_gaid_request_is_an_android_app_request() -> None:
    request = build_request(GAID.upper(), "GAID", bidfloor=0.8, lmt=True)
    assert (request.device.ifa, request.device.os, request.device.lmt) == (GAID, "Android", 1)
    assert request.imp[0].bidfloor == 0.8
    assert request.imp[0].ext is None
    assert parse_bid_request(to_json(request)) == request


@pytest.mark.parametrize(
    ("device_id", "id_type", "platform", "message"),
    [
        (IDFA, "IDFA", "android", "IDFA identifies ios devices, not android"),
        (GAID, "GAID", "ios", "GAID identifies android devices, not ios"),
        ("not-a-uuid", "GAID", None, "GAID must be a UUID"),
    ],
)
def test_build_request_refuses_ids_that_cannot_be_what_they_claim(
    device_id: str, id_type: IdType, platform: Platform | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_request(device_id, id_type, platform)


async def test_a_synced_idfa_is_targeted(bid_url: str, session: aiohttp.ClientSession) -> None:
    result = await verify(bid_url, IDFA, "IDFA", session)
    assert result.targeted
    assert (result.segment, result.campaign, result.price) == (
        "HIGH_VALUE_USERS",
        "demo-HIGH_VALUE_USERS",
        1.5,
    )
    assert json.loads(result.raw)["id"] == result.response.id
    assert format_result(result) == (
        f"TARGETED: device {IDFA} (iOS) is in segment HIGH_VALUE_USERS; "
        "campaign demo-HIGH_VALUE_USERS (seat sandbox-seat) bids 1.50 CPM"
    )


async def test_a_stranger_is_not_targeted(bid_url: str, session: aiohttp.ClientSession) -> None:
    result = await verify(bid_url, STRANGER, "GAID", session)
    assert (result.targeted, result.segment, result.nbr) == (False, None, 8)
    assert format_result(result) == (
        f"NOT TARGETED: device {STRANGER} (Android): no bid (nbr 8: unmatched user)"
    )


async def test_a_floor_out_of_reach_is_a_plain_no_bid(
    bid_url: str, session: aiohttp.ClientSession
) -> None:
    result = await verify(bid_url, GAID, "GAID", session, bidfloor=9.0)
    assert not result.targeted
    assert format_result(result).endswith("no bid (no reason given)")


async def test_limit_ad_tracking_is_never_targeted(
    bid_url: str, session: aiohttp.ClientSession
) -> None:
    result = await verify(bid_url, GAID, "GAID", session, lmt=True)
    assert (result.targeted, result.nbr) == (False, 8)


async def test_an_uncompressing_session_still_reads_the_answer(bid_url: str) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as raw_session:
        result = await verify(bid_url, GAID, "GAID", raw_session)
    assert result.segment == "CART_ABANDONERS"


async def test_a_bid_inmobi_would_drop_does_not_count_as_targeted(
    session: aiohttp.ClientSession,
) -> None:
    bid = {"id": "b", "impid": "7", "price": 1, "burl": "https://b", "adm": "<a/>", "cat": ["X"]}
    body = json.dumps({"id": "r", "seatbid": [{"seat": "s", "bid": [bid]}]}).encode()
    server = await serve(200, body)
    try:
        result = await verify(str(server.make_url(BID_PATH)), GAID, "GAID", session)
    finally:
        await server.close()
    assert not result.targeted
    assert "impid '7' is not an imp" in format_result(result)


async def test_a_204_answer_is_a_no_bid(session: aiohttp.ClientSession) -> None:
    server = await serve(204, b"")
    try:
        result = await verify(str(server.make_url(BID_PATH)), GAID, "GAID", session)
    finally:
        await server.close()
    assert (result.targeted, result.nbr, result.response.seatbid) == (False, None, [])


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, b'{"reasons": ["device: Field required"]}', "rejected the bid request: device"),
        (500, b"oops", "answered HTTP 500"),
        (200, b'{"seatbid": []}', "invalid bid response: id: Field required"),
    ],
)
async def test_a_failing_bidder_raises_verify_error(
    session: aiohttp.ClientSession, status: int, body: bytes, message: str
) -> None:
    server = await serve(status, body)
    try:
        with pytest.raises(VerifyError, match=message):
            await verify(str(server.make_url(BID_PATH)), GAID, "GAID", session)
    finally:
        await server.close()


async def test_an_unreachable_bidder_raises_verify_error(session: aiohttp.ClientSession) -> None:
    server = await serve(200, b"{}")
    url = str(server.make_url(BID_PATH))
    await server.close()
    with pytest.raises(VerifyError, match="cannot reach the bidder"):
        await verify(url, GAID, "GAID", session)
