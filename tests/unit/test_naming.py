"""CDP segment name → InMobi segment name (CONTRACT section 1)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import ValidationError
from worker.naming import MAX_SEGMENT_NAME_LENGTH, inmobi_segment_name


@pytest.mark.parametrize(
    ("cdp_name", "inmobi_name"),
    [
        ("high_value users", "HIGH_VALUE_USERS"),
        ("HIGH_VALUE_USERS", "HIGH_VALUE_USERS"),
        ("Lapsed Buyers", "LAPSED_BUYERS"),
        ("newsletter-subscribers", "NEWSLETTER_SUBSCRIBERS"),
        ("sports.fans", "SPORTS_FANS"),
        ("lookalike 1%", "LOOKALIKE_1_"),
        ("gamers_2024", "GAMERS_2024"),
        ("  ", "__"),
        ("café", "CAF_"),  # É is upper case, but not A-Z
        ("straße", "STRASSE"),  # upper-casing 'ß' gives 'SS'
        ("a\tb\nc", "A_B_C"),
    ],
)
def test_maps_by_upper_casing_and_replacing_everything_outside_a_z_0_9_underscore(
    cdp_name: str, inmobi_name: str
) -> None:
    assert inmobi_segment_name(cdp_name) == inmobi_name


def test_empty_name_is_invalid() -> None:
    with pytest.raises(ValidationError, match="empty"):
        inmobi_segment_name("")


def test_name_of_exactly_200_characters_is_valid_and_201_is_not() -> None:
    assert inmobi_segment_name("a" * 200) == "A" * 200
    with pytest.raises(ValidationError, match="201 characters"):
        inmobi_segment_name("a" * 201)


def test_length_is_checked_after_mapping() -> None:
    # 100 'ß' are 100 characters, but their InMobi name 'SS' * 100 is 200: still valid.
    assert inmobi_segment_name("ß" * 100) == "SS" * 100
    # 101 'ß' map to 202 characters: too long, although the CDP name has only 101.
    with pytest.raises(ValidationError):
        inmobi_segment_name("ß" * 101)


def test_error_message_does_not_repeat_a_huge_name() -> None:
    with pytest.raises(ValidationError) as info:
        inmobi_segment_name("x" * 10_000)
    assert len(str(info.value)) < 200


@given(st.text(max_size=250))
def test_any_name_maps_to_an_allowed_alphabet_or_is_rejected(cdp_name: str) -> None:
    try:
        mapped = inmobi_segment_name(cdp_name)
    except ValidationError:
        assert cdp_name == "" or len(cdp_name.upper()) > MAX_SEGMENT_NAME_LENGTH
    else:
        assert re.fullmatch(r"[A-Z0-9_]{1,200}", mapped)
        assert len(mapped) == len(cdp_name.upper())
        assert inmobi_segment_name(mapped) == mapped  # idempotent
