"""Logging setup and the operations HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).

Logs are structlog events with bound context, JSON in production and a readable console format
for people. Secret values never reach a log: settings hold them as `SecretStr`, and the redaction
processor below blanks any field whose name says it is a secret, as a second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from worker.metrics import Metrics

__all__ = ["Readiness", "bound_port", "configure_logging", "start_http"]

_SECRET_WORDS = ("secret", "password", "api_key", "apikey", "token", "sessionid", "session_id")


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(w in key.lower() for w in _SECRET_WORDS):
            event[key] = "[redacted]"
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


@dataclass(frozen=True, slots=True)
class Readiness:
    ok: bool
    reasons: dict[str, Any]


def _json(ok: bool, body: dict[str, Any]) -> web.Response:
    return web.json_response({"ok": ok, **body}, status=200 if ok else 503)


async def start_http(
    port: int,
    metrics: Metrics,
    live: Callable[[], Readiness],
    ready: Callable[[], Readiness],
    host: str = "0.0.0.0",
) -> web.AppRunner:
    async def metrics_view(_r: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    async def healthz(_r: web.Request) -> web.Response:
        r = live()
        return _json(r.ok, r.reasons)

    async def readyz(_r: web.Request) -> web.Response:
        r = ready()
        return _json(r.ok, r.reasons)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the operations endpoint listens on (HTTP_PORT=0 picks a free one)."""
    return int(runner.addresses[0][1])
