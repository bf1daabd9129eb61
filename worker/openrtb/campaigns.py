"""Sandbox campaigns: what the local bidder buys, for whom, at what price.

A campaign targets one InMobi segment by *name* (the name the worker created it under, e.g.
``HIGH_VALUE_USERS``; matched exactly) and serves one banner creative of one size for one seat.

Pricing: a campaign bids ``price_cpm``, raised to the impression's ``bidfloor`` when the floor is
higher, but never above ``max_cpm`` (which defaults to ``price_cpm``, so a plain campaign never
raises its price). An impression whose floor is above ``max_cpm`` gets no bid from the campaign;
a returned price is therefore never below the floor.

Campaigns come from `demo_campaigns` (one per segment, for demos and tests) or from a JSON or YAML
document (`load_campaigns`), either a list of campaigns or ``{"campaigns": [...]}``::

    - name: vip-retargeting
      segment: HIGH_VALUE_USERS
      price_cpm: 2.5
      max_cpm: 4.0
      adm: '<a href="https://shop.example"><img src="https://cdn.example/320x50.png"></a>'
      w: 320
      h: 50
      crid: vip-320x50
      adomain: [shop.example]
      cat: [IAB22]

Pure code: parsing takes text; reading the file is the caller's job.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic import ValidationError as PydanticValidationError

from worker.errors import ConfigError
from worker.openrtb.models import error_reasons

__all__ = ["DEFAULT_BURL", "Campaign", "demo_campaigns", "load_campaigns", "parse_campaigns"]

# `.invalid` never resolves: a billing notice from the sandbox cannot reach anyone.
DEFAULT_BURL = (
    "https://sandbox.invalid/openrtb2/billing"
    "?auction=${AUCTION_ID}&imp=${AUCTION_IMP_ID}&price=${AUCTION_PRICE}"
)


class Campaign(BaseModel):
    """One sandbox campaign; unknown keys are an error, so a typo cannot go unnoticed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    segment: str = Field(min_length=1)
    price_cpm: float = Field(gt=0)
    max_cpm: float | None = Field(None, gt=0)
    adm: str = Field(min_length=1)
    w: int = Field(gt=0)
    h: int = Field(gt=0)
    seat: str = Field("sandbox-seat", min_length=1)
    crid: str = Field(min_length=1, max_length=64)
    adomain: list[str] = Field(min_length=1)
    cat: list[str] = Field(min_length=1)
    burl: str = DEFAULT_BURL

    @model_validator(mode="after")
    def _ceiling_covers_price(self) -> Self:
        if self.max_cpm is not None and self.max_cpm < self.price_cpm:
            raise ValueError("max_cpm must be at least price_cpm")
        return self

    def price_for(self, bidfloor: float) -> float | None:
        """The bid for an impression with this floor, or None when the floor is out of reach."""
        price = max(self.price_cpm, bidfloor)
        ceiling = self.price_cpm if self.max_cpm is None else self.max_cpm
        return price if price <= ceiling else None


def demo_campaigns(
    segment_names: Iterable[str],
    *,
    price_cpm: float = 1.5,
    w: int = 320,
    h: int = 50,
    seat: str = "sandbox-seat",
) -> list[Campaign]:
    """One banner campaign per distinct segment name, named ``demo-<segment>``."""
    return [
        Campaign(
            name=f"demo-{segment}",
            segment=segment,
            price_cpm=price_cpm,
            adm=_demo_markup(segment, w, h),
            w=w,
            h=h,
            seat=seat,
            crid=f"demo-{segment}"[:64],
            adomain=["example.com"],
            cat=["IAB22"],
        )
        for segment in dict.fromkeys(segment_names)
    ]


def _demo_markup(segment: str, w: int, h: int) -> str:
    label = html.escape(segment)
    return (
        f'<a href="https://example.com/?segment={label}">'
        f'<img src="https://sandbox.invalid/creative/{w}x{h}.png" width="{w}" height="{h}" '
        f'alt="Sandbox ad for {label}"></a>'
    )


_CAMPAIGN_LIST = TypeAdapter(list[Campaign])


def parse_campaigns(document: Any) -> list[Campaign]:
    """Validate a loaded campaigns document; raise ConfigError with one line per problem."""
    if isinstance(document, dict) and set(document) == {"campaigns"}:
        document = document["campaigns"]
    if not isinstance(document, list):
        raise ConfigError(["campaigns: expected a list of campaigns or {campaigns: [...]}"])
    try:
        campaigns = _CAMPAIGN_LIST.validate_python(document)
    except PydanticValidationError as exc:
        raise ConfigError([f"campaigns{line}" for line in error_reasons(exc)]) from exc
    names = [campaign.name for campaign in campaigns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError([f"campaigns: names must be unique, repeated: {duplicates}"])
    return campaigns


def load_campaigns(text: str) -> list[Campaign]:
    """Parse campaigns from JSON or YAML text (YAML is a superset of JSON)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"campaigns: not valid JSON or YAML: {exc}"]) from exc
    return parse_campaigns(document)
