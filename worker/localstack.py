"""The local stack for the demo, the tests and the benchmarks: worker processes and their settings.

`local_env` builds the settings of a worker against the embedded broker and the sandbox;
`WorkerProcess` runs `inmobi-sync run` as a real process with its JSON log in a file, so callers
wait on the worker's own events; `http_json` talks to the sandbox's admin routes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["WORKER_CMD", "WorkerProcess", "http_json", "local_env"]

WORKER_CMD: tuple[str, ...] = (sys.executable, "-m", "worker.cli", "run")


def local_env(
    bootstrap: str, sandbox_url: str, topic: str, dlq: str, group: str, **extra: object
) -> dict[str, str]:
    """Settings for a worker against the embedded broker and the sandbox."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "INMOBI_", "FLUSH_", "SCHEMA_", "SEGMENT"))
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_DLQ_TOPIC": dlq,
            "KAFKA_GROUP_ID": group,
            # the embedded broker holds JoinGroup for session.timeout.ms / 2: keep it short locally
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_CONSUMER_OVERRIDES": json.dumps(
                {"heartbeat.interval.ms": 1000, "socket.timeout.ms": 30000}
            ),
            "SCHEMA_REGISTRY_URL": f"{sandbox_url}/registry",
            "INMOBI_BASE_URL": sandbox_url,
            "INMOBI_SESSION_URL": sandbox_url,
            "INMOBI_USERNAME": "sandbox-user",
            "INMOBI_API_KEY": "sandbox-secret",
            "INMOBI_ACCOUNT_ID": "sandbox-account",
            "INMOBI_PROPERTY_ID": "1234567890",
            "FLUSH_MAX_AGE_SECONDS": "2",
            "COMMIT_INTERVAL_SECONDS": "0.5",
            "HTTP_PORT": "0",
        }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read()
    return json.loads(text) if text else None


class WorkerProcess:
    """`inmobi-sync run` as a real process; its JSON log goes to a file."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        name: str = "worker",
        cmd: Sequence[str] = WORKER_CMD,
    ) -> None:
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.started = time.time()
        self.proc = subprocess.Popen(
            list(cmd), env=dict(env), stdout=self._log, stderr=subprocess.STDOUT
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The log events so far (only those called `name` when given)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def assigned_at(self) -> float | None:
        """Epoch seconds of the first assignment, from the log."""
        found = self.events("partitions_assigned")
        if not found:
            return None
        return datetime.fromisoformat(found[0]["timestamp"].replace("Z", "+00:00")).timestamp()

    def wait_assigned(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            at = self.assigned_at()
            if at is not None:
                return at
            time.sleep(0.05)
        raise RuntimeError(f"worker was not assigned within {timeout} s; see {self.log_path}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the drain; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
