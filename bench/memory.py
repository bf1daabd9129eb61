"""RSS per buffered ID, in a process of its own: ``python -m bench.memory --ids N --segments S``.

Builds a `BufferSet` whose limits never flush, reads VmRSS from /proc/self/status, adds N changes
(random version-4 UUIDs, IDFA and GAID alternately, spread round-robin over S segments and 12
partitions), collects garbage, reads VmRSS again and prints one JSON object: the difference per
buffered ID. ``--dict`` measures the naive layout instead (one dict per segment keyed by the
UUID string, the op as value) for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import uuid
from pathlib import Path

from worker.buffering import BufferLimits, BufferSet
from worker.model import IdType, MembershipChange, Op
from worker.offsets import OffsetTracker

_CHUNK = 10_000


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _uuids(count: int) -> list[str]:
    raw = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, len(raw), 16)]


def fill_buffers(ids: int, segments: int) -> int:
    tracker = OffsetTracker()
    for p in range(12):
        tracker.assign(p)
    buffers = BufferSet(BufferLimits(1 << 40, 1 << 50, 1e12), tracker)
    names = [f"SEGMENT_{i:03d}" for i in range(segments)]
    id_types = (IdType.IDFA, IdType.GAID)
    add, new = buffers.add, tuple.__new__
    before = vm_rss()
    done = 0
    while done < ids:
        for device in _uuids(min(_CHUNK, ids - done)):
            change = new(
                MembershipChange,
                (
                    names[done % segments],
                    Op.ADD,
                    id_types[done & 1],
                    device,
                    "",
                    0,
                    done % 12,
                    done,
                ),
            )
            add(change, 0.0)
            done += 1
    gc.collect()
    grown = vm_rss() - before
    assert buffers.buffered == ids
    return grown


def fill_dicts(ids: int, segments: int) -> int:
    dicts: list[dict[str, int]] = [{} for _ in range(segments)]
    before = vm_rss()
    done = 0
    while done < ids:
        for device in _uuids(min(_CHUNK, ids - done)):
            dicts[done % segments][device] = done & 1
            done += 1
    gc.collect()
    return vm_rss() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--dict", action="store_true", help="measure a dict per segment instead")
    args = parser.parse_args()
    grown = (fill_dicts if args.dict else fill_buffers)(args.ids, args.segments)
    print(
        json.dumps(
            {
                "layout": "dict[str, op] per segment" if args.dict else "BufferSet (compact lanes)",
                "ids": args.ids,
                "segments": args.segments,
                "rss_growth_mb": round(grown / 2**20, 1),
                "bytes_per_id": round(grown / args.ids, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
