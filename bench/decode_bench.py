"""Micro-benchmark of `worker.decoding.Decoder`: µs per record for each decoding path.

    .venv/bin/python bench/decode_bench.py [--records 200000] [--repeat 3]

Prints figures only (best of ``--repeat`` runs); it asserts nothing about time. Inputs come from
`worker.generator` and are built before timing; each run decodes every record once and drops the
result, so the figures are decoding cost alone (no garbage-collector pressure from kept results).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from worker.avro_fast import BUNDLED_SCHEMA, BUNDLED_SCHEMA_JSON
from worker.decoding import Decoder
from worker.generator import ENCODINGS, GeneratedRecord, GeneratorSpec, generate
from worker.model import IdType, SourceMessage

BUNDLED_ID, EVOLVED_ID = 1, 2
UUIDS_ONLY = ((IdType.IDFA, 0.5), (IdType.GAID, 0.5))

# A compatible writer schema with another layout (an extra field): resolved by fastavro.
_EVOLVED = json.loads(BUNDLED_SCHEMA_JSON)
_EVOLVED["fields"].insert(0, {"name": "source", "type": "string"})
EVOLVED_JSON = json.dumps(_EVOLVED)
_EVOLVED_PARSED = parse_schema(json.loads(EVOLVED_JSON), named_schemas={})


def _decoder(fast_path: bool = True) -> Decoder:
    d = Decoder(fast_path=fast_path)
    d.add_writer_schema(BUNDLED_ID, BUNDLED_SCHEMA_JSON)
    d.add_writer_schema(EVOLVED_ID, EVOLVED_JSON)
    return d


def _messages(records: Sequence[GeneratedRecord]) -> list[SourceMessage]:
    return [SourceMessage("t", 0, i, r.key, r.value, 0) for i, r in enumerate(records)]


def _evolved(records: Sequence[GeneratedRecord]) -> list[SourceMessage]:
    """Re-encode plain-Avro records with the evolved writer schema, framed."""
    out = []
    for i, r in enumerate(records):
        rec = schemaless_reader(io.BytesIO(r.value), BUNDLED_SCHEMA, None)
        buf = io.BytesIO()
        schemaless_writer(buf, _EVOLVED_PARSED, {"source": "cdp", **rec})
        value = b"\x00" + EVOLVED_ID.to_bytes(4, "big") + buf.getvalue()
        out.append(SourceMessage("t", 0, i, r.key, value, 0))
    return out


def _time(
    decode: Callable[[SourceMessage], object], msgs: list[SourceMessage], repeat: int
) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for m in msgs:
            decode(m)
        best = min(best, time.perf_counter() - start)
    return best / len(msgs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.records

    def spec(encoding: str, **overrides: Any) -> GeneratorSpec:
        fields = {"encodings": (encoding,), **overrides}
        return GeneratorSpec(count=n, devices=50_000, schema_id=BUNDLED_ID, **fields)

    started = time.perf_counter()
    plain = list(generate(spec("avro", id_types=UUIDS_ONLY, uppercase_share=0.2)))
    generated = time.perf_counter() - started
    print(
        f"generator: {n} plain-Avro records in {generated:.2f} s ({generated / n * 1e6:.2f} µs/record)"
    )

    cases: list[tuple[str, Decoder, list[SourceMessage]]] = [
        ("plain Avro, fast path (IDFA/GAID)", _decoder(), _messages(plain)),
        (
            "plain Avro, fast path (DEVICE_ID)",
            _decoder(),
            _messages(list(generate(spec("avro", id_types=((IdType.DEVICE_ID, 1.0),))))),
        ),
        ("plain Avro, fastavro fallback", _decoder(fast_path=False), _messages(plain)),
        (
            "framed, bundled layout (fast path)",
            _decoder(),
            _messages(list(generate(spec("framed", id_types=UUIDS_ONLY)))),
        ),
        ("framed, evolved writer (fastavro resolution)", _decoder(), _evolved(plain)),
        ("JSON", _decoder(), _messages(list(generate(spec("json", id_types=UUIDS_ONLY))))),
        (
            "default mix (3 encodings, 10% DEVICE_ID, 1% bad)",
            _decoder(),
            _messages(list(generate(spec("avro", encodings=ENCODINGS, bad_share=0.01)))),
        ),
    ]
    print(f"decode, best of {args.repeat} over {n} records:")
    for name, decoder, msgs in cases:
        print(f"  {name:<50} {_time(decoder.decode, msgs, args.repeat):6.2f} µs/record")


if __name__ == "__main__":
    main()
