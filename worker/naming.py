"""CDP segment name → InMobi segment name (CONTRACT section 1).

The rule, applied to the whole name: upper-case it with `str.upper`, then replace every character
outside ``A-Z``, ``0-9`` and ``_`` with ``_`` (``high_value users`` → ``HIGH_VALUE_USERS``).

Length is checked **after** mapping, on the InMobi name: that is the string InMobi stores, and the
two lengths differ only where upper-casing changes the length (``straße`` → ``STRASSE``; ``ﬁ`` →
``FI``). A name is invalid when it is empty or its mapped form is longer than 200 characters.

Names repeat millions of times on the hot path, so valid results are cached (bounded LRU).
Invalid names are not cached: they raise every time, which is the rare path.
"""

from __future__ import annotations

import functools
import re

from worker.errors import ValidationError

__all__ = ["MAX_SEGMENT_NAME_LENGTH", "inmobi_segment_name"]

MAX_SEGMENT_NAME_LENGTH = 200

# Everything that is not an upper-case ASCII letter, an ASCII digit or an underscore.
_OUTSIDE = re.compile(r"[^A-Z0-9_]")

_CACHE_SIZE = 65_536


@functools.lru_cache(maxsize=_CACHE_SIZE)
def inmobi_segment_name(cdp_name: str) -> str:
    """Map a CDP segment name to its InMobi name; raise `ValidationError` if it is invalid."""
    if not cdp_name:
        raise ValidationError("segment name is empty")
    mapped = _OUTSIDE.sub("_", cdp_name.upper())
    if len(mapped) > MAX_SEGMENT_NAME_LENGTH:
        raise ValidationError(
            f"segment name is {len(mapped)} characters once mapped; "
            f"at most {MAX_SEGMENT_NAME_LENGTH} are allowed ({_preview(cdp_name)})"
        )
    return mapped


def _preview(name: str) -> str:
    """A short, printable excerpt of a name for error messages."""
    return repr(name[:40] + "…") if len(name) > 40 else repr(name)
