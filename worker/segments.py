"""Per-segment settings from SEGMENTS_FILE (CONTRACT section 3), and the mode rule.

The YAML document has two maps::

    defaults:
      mode: mirror              # mirror | add | remove
      membership_ttl_days: 30
    segments:
      high_value users:         # CDP name or InMobi name: both are mapped to the InMobi name
        inmobi_segment_id: 5f0c...   # optional: reuse an existing InMobi segment
        mode: add
        membership_ttl_days: 90

A segment absent from `segments:` takes the defaults and is created on first use. Pure: parsing
takes the already-loaded document.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ConfigError
from worker.model import Op

__all__ = ["Mode", "SegmentCatalog", "SegmentConfig", "parse_segments_document"]

DEFAULT_TTL_DAYS = 30
_KEYS = {"inmobi_segment_id", "mode", "membership_ttl_days"}


class Mode(enum.StrEnum):
    MIRROR = "mirror"
    ADD = "add"
    REMOVE = "remove"

    def accepts(self, op: Op) -> bool:
        """Whether a change of kind `op` is synced in this mode (the others are ignored)."""
        if self is Mode.MIRROR:
            return True
        return (op is Op.ADD) == (self is Mode.ADD)


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    mode: Mode = Mode.MIRROR
    membership_ttl_days: int = DEFAULT_TTL_DAYS
    inmobi_segment_id: str | None = None


@dataclass(frozen=True, slots=True)
class SegmentCatalog:
    """Lookup of a segment's settings by InMobi segment name."""

    defaults: SegmentConfig = SegmentConfig()
    segments: dict[str, SegmentConfig] = field(default_factory=dict)

    @classmethod
    def default(cls) -> SegmentCatalog:
        return cls()

    def get(self, inmobi_name: str) -> SegmentConfig:
        return self.segments.get(inmobi_name, self.defaults)

    def all_mirror(self) -> bool:
        """True when no segment ignores any change (the hot path then skips the mode check)."""
        configs = [self.defaults, *self.segments.values()]
        return all(c.mode is Mode.MIRROR for c in configs)


def _entry(where: str, raw: Any, base: SegmentConfig, problems: list[str]) -> SegmentConfig:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        problems.append(f"SEGMENTS_FILE: {where} must be a map")
        return base
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(f"SEGMENTS_FILE: {where}: unknown keys {sorted(unknown)}")
    mode = raw.get("mode", base.mode)
    try:
        mode = Mode(str(mode).lower())
    except ValueError:
        problems.append(f"SEGMENTS_FILE: {where}.mode must be mirror, add or remove, not {mode!r}")
        mode = base.mode
    ttl = raw.get("membership_ttl_days", base.membership_ttl_days)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 3650:
        problems.append(f"SEGMENTS_FILE: {where}.membership_ttl_days must be an integer 1-3650")
        ttl = base.membership_ttl_days
    seg_id = raw.get("inmobi_segment_id")
    if seg_id is not None and (not isinstance(seg_id, str | int) or not str(seg_id).strip()):
        problems.append(f"SEGMENTS_FILE: {where}.inmobi_segment_id must be a non-empty string")
        seg_id = None
    return SegmentConfig(mode, ttl, str(seg_id) if seg_id is not None else None)


def parse_segments_document(document: Any) -> SegmentCatalog:
    """Validate a loaded SEGMENTS_FILE document; raise ConfigError with one line per problem."""
    from worker.naming import inmobi_segment_name  # naming is pure; late import avoids a cycle

    problems: list[str] = []
    if document is None:
        document = {}
    if not isinstance(document, dict) or set(document) - {"defaults", "segments"}:
        raise ConfigError(
            ["SEGMENTS_FILE: top level must be a map with `defaults:` and `segments:`"]
        )
    defaults = _entry("defaults", document.get("defaults"), SegmentConfig(), problems)
    if defaults.inmobi_segment_id is not None:
        problems.append("SEGMENTS_FILE: defaults cannot set inmobi_segment_id")
    raw_segments = document.get("segments") or {}
    segments: dict[str, SegmentConfig] = {}
    if not isinstance(raw_segments, dict):
        problems.append("SEGMENTS_FILE: segments must be a map of segment name to settings")
        raw_segments = {}
    for name, raw in raw_segments.items():
        try:
            key = inmobi_segment_name(str(name))
        except Exception as exc:
            problems.append(f"SEGMENTS_FILE: segments.{name}: {exc}")
            continue
        if key in segments:
            problems.append(f"SEGMENTS_FILE: segments.{name} maps to {key}, which is listed twice")
        segments[key] = _entry(f"segments.{name}", raw, defaults, problems)
    if problems:
        raise ConfigError(problems)
    return SegmentCatalog(defaults, segments)
