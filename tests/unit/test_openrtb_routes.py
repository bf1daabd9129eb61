"""``POST /openrtb2/bid`` over HTTP: JSON and gzip both ways, 400 with reasons, no-bid bodies."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from worker.openrtb.bidder import Campaign, demo_campaigns
from worker.openrtb.models import NoBidReason, to_json
from worker.openrtb.routes import (
    BID_PATH,
    BodyTooLargeError,
    accepts_gzip,
    inflate_body,
    mount_bidder,
)
from worker.openrtb.verify import build_request

GAID = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
MEMBERS = {GAID: ["HIGH_VALUE_USERS"]}
BODY = to_json(build_request(GAID, "GAID", request_id="r-1"))
PLAIN = {"Accept-Encoding": "identity"}  # aiohttp's client asks for gzip unless told otherwise


def segments_of(ifa: str) -> list[str]:
    return MEMBERS.get(ifa, [])


@pytest.fixture
def campaigns() -> list[Campaign]:
    return demo_campaigns(["HIGH_VALUE_USERS"])


@pytest.fixture
async def client(
    campaigns: list[Campaign],
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    mount_bidder(app, segments_of, campaigns)
    async with TestClient(TestServer(app), auto_decompress=False) as test_client:
        yield test_client


async def test_a_member_gets_a_json_bid(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.post(BID_PATH, data=BODY, headers=PLAIN)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert "Content-Encoding" not in response.headers
    answer = json.loads(await response.read())
    assert answer["id"] == "r-1"
    assert answer["seatbid"][0]["bid"][0]["ext"]["segment"] == "HIGH_VALUE_USERS"


async def test_a_gzip_request_is_read(client: TestClient[web.Request, web.Application]) -> None:
    headers = {"Content-Encoding": "gzip", **PLAIN}
    response = await client.post(BID_PATH, data=gzip.compress(BODY), headers=headers)
    assert response.status == 200
    assert json.loads(await response.read())["seatbid"]


async def test_a_gzip_body_without_its_header_is_still_read(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(BID_PATH, data=gzip.compress(BODY), headers=PLAIN)
    assert response.status == 200


async def test_a_client_accepting_gzip_gets_gzip(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(BID_PATH, data=BODY, headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(await response.read()))["id"] == "r-1"


async def test_a_non_member_gets_a_200_no_bid_with_nbr(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = to_json(build_request("0f8fad5b-d9cb-469f-a165-70867728950e", "GAID", request_id="r-2"))
    response = await client.post(BID_PATH, data=body, headers=PLAIN)
    assert response.status == 200
    assert json.loads(await response.read()) == {
        "id": "r-2",
        "seatbid": [],
        "nbr": NoBidReason.UNMATCHED_USER,
    }


async def test_an_invalid_request_gets_400_with_reasons(
    client: TestClient[web.Request, web.Application],
) -> None:
    document = json.loads(BODY)
    del document["imp"][0]["tagid"], document["device"]
    response = await client.post(BID_PATH, data=json.dumps(document), headers=PLAIN)
    assert response.status == 400
    answer = json.loads(await response.read())
    assert (answer["id"], answer["seatbid"], answer["nbr"]) == ("r-1", [], 2)
    assert answer["reasons"] == [
        "imp[0]: imp needs a placement: imp.tagid or imp.ext.placementid",
        "device: Field required",
    ]


@pytest.mark.parametrize("body", [b"{", b"\x1f\x8bnot gzip at all"])
async def test_an_unreadable_body_gets_400(
    client: TestClient[web.Request, web.Application], body: bytes
) -> None:
    response = await client.post(BID_PATH, data=body, headers=PLAIN)
    assert response.status == 400
    assert json.loads(await response.read())["reasons"]


async def test_campaigns_changed_in_place_apply_to_the_next_request(
    client: TestClient[web.Request, web.Application], campaigns: list[Campaign]
) -> None:
    campaigns.clear()
    response = await client.post(BID_PATH, data=BODY, headers=PLAIN)
    assert json.loads(await response.read())["seatbid"] == []


async def test_only_post_is_served(client: TestClient[web.Request, web.Application]) -> None:
    assert (await client.get(BID_PATH)).status == 405


def test_inflate_body_passes_plain_json_through() -> None:
    assert inflate_body(BODY, 10) is BODY


def test_inflate_body_refuses_a_gzip_bomb() -> None:
    with pytest.raises(BodyTooLargeError):
        inflate_body(gzip.compress(b" " * 10_000), 1000)


def test_inflate_body_refuses_a_truncated_stream() -> None:
    with pytest.raises(ValueError, match="truncated"):
        inflate_body(gzip.compress(BODY)[:-12], 1 << 20)


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("identity", False),
        ("", False),
        ("br, deflate", False),
    ],
)
def test_accepts_gzip_reads_quality_values(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok
