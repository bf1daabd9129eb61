"""The benchmark's events: generated once with `worker.generator`, shared by every stage.

About 110-byte plain-Avro records (the shape the issue measures), 100 segments with a skewed
popularity (a few large audiences, a long tail), 10% DEVICE_ID, 10% upper-case UUIDs, a quarter
removes, and a small share of bad records that go to the DLQ. Devices repeat (a pool of half the
event count), so buffers really de-duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.generator import GeneratedRecord, GeneratorSpec, generate

_KINDS = (
    "high_value users",
    "cart-abandoners",
    "lapsed buyers",
    "newsletter subscribers",
    "sports fans",
    "gamers",
    "travel intenders",
    "auto intenders",
    "new parents",
    "pet owners",
)
_QUALIFIERS = (
    "7d",
    "30d",
    "90d",
    "US",
    "EU",
    "APAC",
    "ios",
    "android",
    "lookalike 1%",
    "top decile",
)
SEGMENTS: tuple[str, ...] = tuple(f"{k} {q}" for k in _KINDS for q in _QUALIFIERS)


def weighted_segments(segments: tuple[str, ...] = SEGMENTS) -> tuple[str, ...]:
    """Each segment repeated by a Zipf-like weight: the generator picks uniformly from this."""
    return tuple(s for rank, s in enumerate(segments) for _ in range(max(1, 12 // (1 + rank // 4))))


@dataclass(frozen=True)
class Dataset:
    keys: list[bytes]
    values: list[bytes]
    bad: int

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean_bytes(self) -> float:
        return sum(map(len, self.values)) / max(1, len(self.values))


def spec(count: int, seed: int = 5) -> GeneratorSpec:
    return GeneratorSpec(
        count=count,
        segments=weighted_segments(),
        devices=max(1, count // 2),
        remove_share=0.25,
        bad_share=0.001,
        encodings=("avro",),
        uppercase_share=0.1,
        seed=seed,
    )


def records(count: int, seed: int = 5) -> list[GeneratedRecord]:
    return list(generate(spec(count, seed)))


def dataset(count: int, seed: int = 5) -> Dataset:
    recs = records(count, seed)
    return Dataset([r.key for r in recs], [r.value for r in recs], sum(r.bad for r in recs))
