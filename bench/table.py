"""The markdown table of a benchmark run (what goes into the README)."""

from __future__ import annotations

from typing import Any


def _rate(x: Any) -> str:
    return f"{x:,.0f} events/s" if isinstance(x, int | float) else str(x)


def _runs(run: dict[str, Any]) -> str:
    rates = run.get("runs_per_s", [])
    if len(rates) < 2:
        return ""
    return f"median of {len(rates)} runs: " + ", ".join(f"{x / 1000:,.0f}k" for x in rates)


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    raw, worker, quix, st = r["raw_consume"], r["worker"], r["quix"], r["stages"]
    ratio = worker["events_per_s"] / raw["events_per_s"]
    rows = [
        ("raw consume, `Consumer.consume()` (ceiling)", _rate(raw["events_per_s"]), _runs(raw)),
        ("`KafkaSource.poll_batch` (adapter)", _rate(r["adapter_consume"]["events_per_s"]), ""),
        (
            "worker end to end, after first assignment",
            _rate(worker["events_per_s"]),
            f"{worker['seconds_after_assignment']} s for {worker['events']:,} events"
            + (f"; {_runs(worker)}" if "runs_per_s" in worker else ""),
        ),
        (
            "worker consumed every event (metrics), after assignment",
            _rate(worker["consumed_per_s"]),
            "consume + decode + buffer; flushes and uploads run alongside",
        ),
        (
            "worker end to end, from process start",
            _rate(worker["events_per_s_total"]),
            f"assignment took {worker['seconds_to_assignment']} s",
        ),
        (
            "worker / raw consume",
            f"{ratio:.3f}",
            f"{worker['mode']}; target >= 0.25"
            + (
                f"; run by run {', '.join(f'{x:.3f}' for x in r['ratios'])}"
                if r.get("ratios")
                else ""
            ),
        ),
    ]
    streaming = r.get("worker_streaming")
    if streaming:
        rows += [
            (
                "worker end to end, streaming (FLUSH_MAX_AGE_SECONDS 2)",
                _rate(streaming["events_per_s"]),
                f"{streaming['seconds_after_assignment']} s, up to 2 s of it the last age wait;"
                f" consumed at {_rate(streaming['consumed_per_s'])}",
            ),
            (
                "streaming worker / raw consume",
                f"{streaming['events_per_s'] / raw['events_per_s']:.3f}",
                "",
            ),
        ]
    if "events_per_s" in quix:
        rows += [
            ("quixstreams equivalent", _rate(quix["events_per_s"]), "after its first record"),
            (
                "worker / quixstreams",
                f"{worker['events_per_s'] / quix['events_per_s']:.2f}x",
                "target >= 5x"
                + (
                    f"; streaming run {streaming['events_per_s'] / quix['events_per_s']:.2f}x"
                    if streaming
                    else ""
                ),
            ),
        ]
    else:
        rows.append(("quixstreams equivalent", "not run", str(quix.get("skipped"))))
    rows += [
        (
            "batch ingest (match + buffer, the worker's path)",
            f"{st['ingest_batch_us']:.2f} µs/event",
            "1000-record slices",
        ),
        ("decode, fast path", f"{st['decode_fast_us']:.2f} µs/event", "record by record"),
        ("decode, fastavro fallback", f"{st['decode_fastavro_us']:.2f} µs/event", ""),
        (
            "fastavro with logical types (reference)",
            f"{st['fastavro_logical_types_us']:.2f} µs/event",
            "",
        ),
        ("buffer add", f"{st['buffer_add_us']:.2f} µs/event", "record by record"),
        ("cut + dedupe", f"{st['cut_dedupe_us']:.2f} µs/event", ""),
        (
            "gzip CSV, ISA-L level 1",
            f"{st['encode_isal_ms_per_100k']:.1f} ms per 100k rows",
            f"{st['gzip_bytes_per_row']} bytes/row",
        ),
        (
            "gzip CSV, stdlib level 6 (reference)",
            f"{st['encode_stdlib6_ms_per_100k']:.1f} ms per 100k rows",
            "",
        ),
    ]
    if "memory" in r:
        m = r["memory"]
        rows.append(
            (
                "RSS per buffered ID",
                f"{m['bytes_per_id']} bytes",
                f"{m['ids']:,} IDs, {m['segments']} segments; target <= 40",
            )
        )
    up = worker["uploads"]
    if up.get("files"):
        rows.append(
            (
                "uploads (worker run, last 1000 files)",
                f"{up['rows_mean']:,} rows, {up['bytes_mean']:,} bytes mean",
                f"{up['bytes_per_row']} bytes/row; largest {up['bytes_max']:,} bytes",
            )
        )
    if "latency" in r:
        lat = r["latency"]
        rows.append(
            (
                "production → acknowledgement p50 / p99",
                f"{lat['p50_s']} s / {lat['p99_s']} s",
                f"at {lat['achieved_rate']:,} events/s, FLUSH_MAX_AGE_SECONDS={lat['flush_max_age_seconds']}; target p99 <= {lat['bound_s']} s",
            )
        )
    cpu = worker.get("cpu_seconds", {})
    rows.append(
        ("CPU seconds in the worker run", ", ".join(f"{k} {v}" for k, v in sorted(cpu.items())), "")
    )
    return rows


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"`{r['command']}` — {r['data']['events']:,} events of {r['data']['mean_value_bytes']} bytes, "
        f"{r['machine']['cpus']} CPUs, Python {r['machine']['python']}, {r['started']}",
        "",
        "| measure | figure | notes |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(r)]
    return "\n".join(lines)
