"""The same job written plainly on quixstreams, for comparison (run by `bench.run`).

consume → decode with fastavro (the schema as written, logical types included) → validate and
map the segment name → a dict per segment keyed by (ID type, device ID), last write wins →
at every checkpoint: stdlib gzip (level 6) CSV per (segment, ID type, action) → HTTP upload to
the sandbox → quixstreams commits once the sink's flush returned (its checkpoint protocol).
Bad records are dropped (no DLQ). Runs in its own virtual environment (quixstreams pins an older
confluent-kafka than the worker); it imports nothing from `worker`.

    python bench/quix_pipeline.py --bootstrap HOST:PORT --topic T --group G --sandbox URL
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests
from fastavro import parse_schema, schemaless_reader
from quixstreams import Application
from quixstreams.sinks import BaseSink

SCHEMA = parse_schema(
    json.loads(
        (Path(__file__).parent.parent / "schemas/segment_membership_change.avsc").read_text()
    )
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OUTSIDE = re.compile(r"[^A-Z0-9_]")
COLUMNS = {"IDFA": "ida", "GAID": "gpId", "DEVICE_ID": "ifa"}
PROPERTY = "1234567890"


def decode(value: bytes) -> dict[str, Any] | None:
    try:
        record = schemaless_reader(io.BytesIO(value), SCHEMA, None)
    except Exception:
        return None
    device, kind = record["device_id"], record["id_type"]
    if kind != "DEVICE_ID":
        device = device.lower()
        if not UUID.fullmatch(device) or device == "00000000-0000-0000-0000-000000000000":
            return None
    elif not (0 < len(device) <= 100 and device.isascii() and device.isprintable()):
        return None
    if not record["segment"]:
        return None
    segment = OUTSIDE.sub("_", record["segment"].upper())
    return {"segment": segment, "op": record["op"], "id_type": kind, "device_id": device}


class InMobiSink(BaseSink):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.http = requests.Session()
        self.buffers: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
        self.segment_ids: dict[str, str] = {}
        self.session = ""
        self.first = 0.0

    def setup(self) -> None:
        answer = self.http.get(
            f"{self.url}/v1.0/generatesession/generate",
            headers={
                "userName": "sandbox-user",
                "secretKey": "sandbox-secret",
                "accountId": "sandbox-account",
            },
            timeout=30,
        ).json()
        self.session = answer["respList"][0]["sessionId"]

    def _headers(self) -> dict[str, str]:
        return {
            "accountId": "sandbox-account",
            "secretKey": "sandbox-secret",
            "sessionId": self.session,
        }

    def add(  # noqa: PLR0917 (the quixstreams sink signature)
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        if not self.first:
            self.first = time.time()
            print(f"FIRST {self.first}", flush=True)
        self.buffers[value["segment"]][value["id_type"], value["device_id"]] = value["op"]

    def _segment_id(self, name: str) -> str:
        if name not in self.segment_ids:
            answer = self.http.post(
                f"{self.url}/tpce/v1/segment",
                params={"segmentName": name, "propertyId": PROPERTY, "membershipTtl": "30"},
                headers=self._headers(),
                timeout=30,
            )
            answer.raise_for_status()
            self.segment_ids[name] = answer.json()["segmentId"]
        return self.segment_ids[name]

    def flush(self) -> None:
        for segment, changes in self.buffers.items():
            files: dict[tuple[str, str], list[str]] = defaultdict(list)
            for (kind, device), op in changes.items():
                files[kind, op].append(device)
            for (kind, op), devices in files.items():
                for start in range(0, len(devices), 100_000):
                    text = "\n".join([COLUMNS[kind], *devices[start : start + 100_000]]) + "\n"
                    body = gzip.compress(text.encode(), 6)
                    answer = self.http.post(
                        f"{self.url}/tpce/v1/segment/{self._segment_id(segment)}/users",
                        params={"action": op.lower(), "propertyId": PROPERTY},
                        headers=self._headers(),
                        files={"file": ("users.csv.gz", body, "application/gzip")},
                        timeout=60,
                    )
                    answer.raise_for_status()  # an error aborts the checkpoint: nothing commits
        self.buffers.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        consumer_extra_config={
            # the same librdkafka tuning the worker runs with (see worker.kafka.consumer_config)
            "fetch.wait.max.ms": 100,
            "fetch.queue.backoff.ms": 10,
            "queued.max.messages.kbytes": 65536,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        },
    )
    topic = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
    sdf = app.dataframe(topic).apply(decode).filter(lambda v: v is not None)
    sdf.sink(InMobiSink(args.sandbox))
    app.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
