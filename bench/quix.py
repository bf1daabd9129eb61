"""Run `bench/quix_pipeline.py` in its own virtual environment and time it like the worker.

quixstreams (3.28) pins confluent-kafka < 2.13 while the worker needs >= 2.16, so it cannot share
the project's .venv; it gets one of its own, made once with::

    python3.11 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install quixstreams fastavro

The clock is the worker's: from process start until the group's committed offsets reach the end
offsets; the time to the first record processed (the process prints it) is subtracted.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.e2e import upload_stats
from bench.env import CommitWatcher, CpuMeter, Env, reached, rss_peak_bytes

QUIX_PYTHON = Path(__file__).parent / ".venv-quix" / "bin" / "python"
SCRIPT = Path(__file__).parent / "quix_pipeline.py"


def available(python: Path = QUIX_PYTHON) -> str | None:
    """None when usable, else why not."""
    if not python.exists():
        return (
            f"{python} not found; make it with: python3.11 -m venv bench/.venv-quix && "
            "bench/.venv-quix/bin/pip install quixstreams fastavro"
        )
    probe = subprocess.run(
        [str(python), "-c", "import quixstreams, fastavro, requests"],
        capture_output=True,
        check=False,
    )
    return None if probe.returncode == 0 else "quixstreams is not importable in " + str(python)


def run(
    env: Env, topic: str, ends: Mapping[int, int], log_dir: Path, python: Path = QUIX_PYTHON
) -> dict[str, Any]:
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    env.sandbox.reset()  # every run starts from an empty sandbox
    watcher = CommitWatcher(env.bootstrap, group, topic, sorted(ends))
    meter = CpuMeter(env.pids())
    log_path = log_dir / f"quix-{group}.log"
    started = time.time()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(python),
                str(SCRIPT),
                "--bootstrap",
                env.bootstrap,
                "--topic",
                topic,
                "--group",
                group,
                "--sandbox",
                env.sandbox.url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    meter.add("quix", proc.pid)
    try:
        deadline = time.monotonic() + 1800
        while not reached(watcher.committed(), ends):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"quixstreams pipeline failed or stalled; see {log_path}")
            time.sleep(0.1)
        done_at = time.time()
        cpu = meter.sample()
        peak = rss_peak_bytes(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        watcher.close()
    first = next(
        (
            float(line.split()[1])
            for line in log_path.read_text(errors="replace").splitlines()
            if line.startswith("FIRST ")
        ),
        started,
    )
    events = sum(ends.values())
    return {
        "events": events,
        "seconds_total": round(done_at - started, 3),
        "seconds_to_first_record": round(first - started, 3),
        "seconds_after_first_record": round(done_at - first, 3),
        "events_per_s": round(events / (done_at - first)),
        "cpu_seconds": cpu,
        "peak_rss_mb": round(peak / 2**20, 1),
        "uploads": upload_stats(env.sandbox.state()["uploads"], started),
        "log": str(log_path),
    }
