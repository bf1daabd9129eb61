"""`inmobi-sync`: the command line and composition root.

Every command has `--help`. Configuration comes from the environment and `.env` (CONTRACT
section 3); a bad configuration exits 2 with one line per problem, naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from worker.errors import ConfigError

__all__ = ["main"]

EXIT_CONFIG = 2


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from worker.config import load_settings

    return load_settings(**overrides)


def cmd_run(_args: argparse.Namespace) -> int:
    from worker.config import require_for_run
    from worker.observability import configure_logging
    from worker.runner import run_worker

    # A SIGTERM that arrives while the worker is still starting is remembered, not fatal.
    early_stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: early_stop.set())
    settings = _settings()
    require_for_run(settings)
    configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(run_worker(settings, early_stop=early_stop))
    finally:
        # drained and committed: a late second signal must not turn exit 0 into a kill
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from worker.observability import configure_logging
    from worker.sandbox.server import run_sandbox

    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    configure_logging(level, "console" if sys.stderr.isatty() else "json")
    return run_sandbox(args.host, args.port)


def cmd_produce(args: argparse.Namespace) -> int:
    from worker.generator import GeneratorSpec
    from worker.produce import produce, register_schema

    settings = _settings()
    encodings: tuple[str, ...] = (
        ("avro", "framed", "json") if args.encoding == "mix" else (args.encoding,)
    )
    if "framed" in encodings and not settings.schema_registry_url:
        if args.encoding == "framed":
            raise ConfigError(["SCHEMA_REGISTRY_URL: required to produce framed Avro"])
        encodings = ("avro", "json")
    schema_id = register_schema(settings) if "framed" in encodings else 0
    segments = tuple(x.strip() for x in args.segments.split(",") if x.strip())
    spec = GeneratorSpec(
        count=args.count,
        devices=args.devices,
        remove_share=args.remove_share,
        bad_share=args.bad_share,
        encodings=encodings,
        uppercase_share=args.uppercase_share,
        seed=args.seed,
        schema_id=schema_id,
    )
    if segments:
        spec = dataclasses.replace(spec, segments=segments)
    report = produce(settings, spec, partitions=args.partitions)
    print(
        f"produced {report.sent} events to {settings.kafka_topic} "
        f"({report.bad} bad; {', '.join(f'{k}={v}' for k, v in sorted(report.by_encoding.items()))}); "
        f"failed {report.failed}"
    )
    return 0 if report.failed == 0 else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    from worker.config import require_for_run

    settings = _settings()
    if args.run:
        require_for_run(settings)
    shown = settings.model_dump(mode="json")
    for key in sorted(shown):
        print(f"{key.upper()}={shown[key]}")  # SecretStr fields dump as '**********'
    print("configuration OK")
    if not args.connect:
        return 0
    from worker.ops import check_connect

    problems = check_connect(settings, note=print)
    for line in problems:
        print(f"connection problem: {line}", file=sys.stderr)
    if problems:
        return 1
    print("connections OK")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    from worker.errors import FatalError, TransientError
    from worker.ops import format_status, status

    settings = _settings()
    try:
        report = status(settings)
    except (TransientError, FatalError) as exc:
        print(f"status failed: {exc}", file=sys.stderr)
        return 1
    print(format_status(report))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from worker.errors import FatalError, TransientError
    from worker.ops import format_replay, replay_dlq

    def progress(scanned: int, matched: int) -> None:
        print(f"scanned {scanned} DLQ records, {matched} to replay", file=sys.stderr, flush=True)

    settings = _settings()
    try:
        report = replay_dlq(
            settings,
            stage=args.stage,
            segment=args.segment,
            dry_run=args.dry_run,
            progress=progress,
        )
    except (TransientError, FatalError) as exc:
        print(f"dlq replay failed: {exc}", file=sys.stderr)
        return 1
    print(format_replay(report))
    return 0 if report.failed == 0 else 1


def cmd_verify(args: argparse.Namespace) -> int:
    import aiohttp

    from worker.openrtb.verify import VerifyError, format_result, verify

    async def go() -> int:
        async with aiohttp.ClientSession() as http:
            result = await verify(
                args.url,
                args.device_id,
                args.id_type,
                http,
                platform=args.platform,
                bidfloor=args.bidfloor,
            )
        print(format_result(result))
        return 0 if result.targeted else 3

    try:
        return asyncio.run(go())
    except (VerifyError, ValueError) as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1


def cmd_segments_list(_args: argparse.Namespace) -> int:
    from worker.errors import FatalError, TransientError
    from worker.kafka import producer_config
    from worker.kafka_registry import format_registry, list_registry

    settings = _settings()
    try:
        entries = list_registry(producer_config(settings), settings.segment_registry_topic)
    except (TransientError, FatalError) as exc:
        print(f"segments list failed: {exc}", file=sys.stderr)
        return 1
    print(format_registry(entries))
    return 0


def cmd_segments_retire(args: argparse.Namespace) -> int:
    from worker.errors import FatalError, TransientError, ValidationError
    from worker.kafka import producer_config
    from worker.kafka_registry import retire_registered
    from worker.naming import inmobi_segment_name

    settings = _settings()
    try:
        name = inmobi_segment_name(args.name)
        retired = retire_registered(
            producer_config(settings), settings.segment_registry_topic, name
        )
    except (TransientError, FatalError, ValidationError) as exc:
        print(f"segments retire failed: {exc}", file=sys.stderr)
        return 1
    if retired is None:
        print(f"segments retire: {name} is not in the registry", file=sys.stderr)
        return 1
    print(
        f"retired {name} ({retired}); restart the workers: the next upload of {name} creates a "
        "new InMobi segment (or set its inmobi_segment_id in SEGMENTS_FILE, which always wins)"
    )
    return 0


def cmd_demo(_args: argparse.Namespace) -> int:
    from worker.demo import main as demo_main

    return demo_main()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inmobi-sync",
        description="Sync CDP segment-membership changes from Kafka to InMobi DSP audiences.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the worker (consume, buffer, upload, commit)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sandbox", help="run the local InMobi simulator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("produce", help="publish sample or generated events to KAFKA_TOPIC")
    p.add_argument("--count", type=int, default=1000, help="events to publish (default 1000)")
    p.add_argument("--segments", default="", help="comma-separated CDP segment names")
    p.add_argument("--devices", type=int, default=500, help="size of the device pool")
    p.add_argument("--remove-share", type=float, default=0.2, help="share of REMOVE changes")
    p.add_argument("--bad-share", type=float, default=0.01, help="share of bad records (to DLQ)")
    p.add_argument(
        "--uppercase-share",
        type=float,
        default=0.2,
        help="share of devices whose UUID is written in upper case",
    )
    p.add_argument(
        "--encoding",
        choices=("avro", "framed", "json", "mix"),
        default="mix",
        help="value encoding (framed needs SCHEMA_REGISTRY_URL; default mix)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=12,
        help="partitions when the topic must be created (default 12)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser(
        "check-config", help="validate the configuration and print it (secrets hidden)"
    )
    p.add_argument("--run", action="store_true", help="also require what `run` needs")
    p.add_argument(
        "--connect",
        action="store_true",
        help="also reach Kafka (topics), the schema registry and InMobi (creates one session)",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "status", help="committed offset, end offset and lag per partition of KAFKA_TOPIC"
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("dlq", help="dead-letter topic tools")
    dlq = p.add_subparsers(dest="dlq_command", required=True, metavar="DLQ_COMMAND")
    p = dlq.add_parser(
        "replay",
        help="re-publish KAFKA_DLQ_TOPIC records to KAFKA_TOPIC (original key and value)",
        description="Re-publish dead-lettered records to KAFKA_TOPIC with their original key and "
        "value, without the __connect.errors.* headers and with inmobi_sync.replayed_from. "
        "Reads the DLQ up to its end at start. A replayed change lands after newer changes of "
        "the same device: it wins over them.",
    )
    p.add_argument(
        "--stage",
        type=str.upper,
        choices=("DECODE", "VALIDATE", "UPLOAD"),
        help="only records rejected at this stage",
    )
    p.add_argument(
        "--segment",
        help="only records of this segment (CDP or InMobi name); unreadable values never match",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; write nothing"
    )
    p.set_defaults(func=cmd_dlq_replay)

    p = sub.add_parser("segments", help="the segment registry (name → InMobi segment ID)")
    seg_sub = p.add_subparsers(dest="segments_command", required=True, metavar="ACTION")
    q = seg_sub.add_parser("list", help="show every registered segment")
    q.set_defaults(func=cmd_segments_list)
    q = seg_sub.add_parser(
        "retire", help="mark a segment's InMobi ID dead (InMobi answers 404 for it)"
    )
    q.add_argument("name", help="the CDP or InMobi segment name")
    q.set_defaults(func=cmd_segments_retire)

    p = sub.add_parser(
        "verify", help="send an OpenRTB 2.5 bid request for a device to the sandbox bidder"
    )
    p.add_argument("--device-id", required=True, help="the IDFA or GAID to look up")
    p.add_argument("--id-type", choices=("IDFA", "GAID"), required=True)
    p.add_argument(
        "--platform",
        choices=("ios", "android"),
        default=None,
        help="app context (default: iOS for IDFA, Android for GAID)",
    )
    p.add_argument("--bidfloor", type=float, default=0.0, help="impression floor in CPM")
    p.add_argument(
        "--url",
        default="http://127.0.0.1:8080/openrtb2/bid",
        help="bidder endpoint (default: the local sandbox)",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "demo", help="run broker, sandbox, sample events and the worker locally; print the result"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"configuration error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
