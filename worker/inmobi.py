"""The InMobi client (CONTRACT section 5): sessions, segment creation, gzip CSV uploads.

The only module that uses aiohttp as a client for InMobi. Every HTTP outcome is translated here
into the `worker.errors` tree:

| outcome                                   | raised                         |
|-------------------------------------------|--------------------------------|
| 2xx                                       | (returns)                      |
| 401; session body with `"error": true`    | AuthError                      |
| 400, 413                                  | FileRejectedError(status)      |
| 404                                       | UnknownSegmentError            |
| 429 (with Retry-After), 5xx, other 4xx    | TransientError(retry_after)    |
| timeout, connection reset, bad JSON       | TransientError                 |

Sessions: one cached session, refreshed ahead of its expiry; refreshes are serialised by a lock, so
concurrent callers share one generation. A 401 invalidates the session it was sent with (not a newer
one) and the request is sent once more with a fresh session. Generations are budgeted
(`max_sessions_per_hour`): past the budget a caller gets a TransientError with the wait as
Retry-After instead of a new session, so an API that keeps answering 401 is not hammered and the
key's few live sessions are not churned. Credentials refused `fatal_after` times in a row raise
FatalError: bad credentials that stay bad stop the worker. Every request (session, segment,
upload) first takes a token from one bucket (`requests_per_second`). The API key is sent only in
headers and never appears in an error message or a log event.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from pydantic import SecretStr

from worker.errors import (
    AuthError,
    FatalError,
    FileRejectedError,
    TransientError,
    UnknownSegmentError,
)
from worker.ratelimit import SlidingWindow, TokenBucket

__all__ = ["InMobiClient", "InMobiConfig", "RequestGate", "SessionManager"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InMobiConfig:
    base_url: str
    session_url: str
    username: str
    account_id: str
    api_key: SecretStr
    property_id: str
    session_path: str = "/v1.0/generatesession/generate"
    segment_path: str = "/tpce/v1/segment"
    upload_path: str = "/tpce/v1/segment/{segment_id}/users"
    upload_field: str = "file"
    upload_filename: str = "users.csv.gz"
    upload_content_type: str = "application/gzip"
    session_ttl_seconds: float = 86400.0
    refresh_ahead_seconds: float = 3600.0
    timeout_seconds: float = 60.0
    requests_per_second: float = 20.0
    max_sessions_per_hour: int = 60
    auth_fatal_after: int = 5

    @classmethod
    def from_settings(cls, s: Any) -> InMobiConfig:
        return cls(
            base_url=s.inmobi_base_url.rstrip("/"),
            session_url=s.inmobi_session_url.rstrip("/"),
            username=s.inmobi_username or "",
            account_id=s.inmobi_account_id or "",
            api_key=s.inmobi_api_key or SecretStr(""),
            property_id=s.inmobi_property_id or "",
            session_path=s.inmobi_session_path,
            segment_path=s.inmobi_segment_path,
            upload_path=s.inmobi_upload_path,
            upload_field=s.inmobi_upload_field,
            upload_filename=s.inmobi_upload_filename,
            upload_content_type=s.inmobi_upload_content_type,
            session_ttl_seconds=s.inmobi_session_ttl_seconds,
            refresh_ahead_seconds=s.inmobi_session_refresh_ahead_seconds,
            timeout_seconds=s.inmobi_request_timeout_seconds,
            requests_per_second=s.inmobi_requests_per_second,
            max_sessions_per_hour=s.inmobi_max_sessions_per_hour,
            auth_fatal_after=s.inmobi_auth_fatal_after,
        )


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _message(body: Any, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:500]
    return fallback


def raise_for_status(status: int, body: Any, headers: Any, what: str) -> None:
    """Translate an HTTP answer into the error tree (no-op for 2xx)."""
    if 200 <= status < 300:
        return
    msg = f"{what}: HTTP {status}: {_message(body, 'no message')}"
    if status == 401:
        raise AuthError(msg)
    if status in (400, 413):
        raise FileRejectedError(msg, status=status)
    if status == 404:
        raise UnknownSegmentError(msg)
    raise TransientError(msg, status=status, retry_after=_retry_after(headers))


class SessionManager:
    """One live InMobi session at a time, generated lazily and refreshed ahead of expiry."""

    def __init__(
        self,
        config: InMobiConfig,
        http: aiohttp.ClientSession,
        clock: Callable[[], float],
        on_refresh: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._on_refresh = on_refresh
        self._lock = asyncio.Lock()
        self._session_id: str | None = None
        self._expires_at = 0.0
        self._budget = SlidingWindow(config.max_sessions_per_hour, 3600.0)
        self._refusals = 0
        self.generated = 0

    @property
    def valid(self) -> bool:
        return self._session_id is not None and self._clock() < self._expires_at

    def _fresh(self) -> bool:
        ahead = min(self._config.refresh_ahead_seconds, self._config.session_ttl_seconds / 2)
        return self._session_id is not None and self._clock() < self._expires_at - ahead

    async def get(self) -> str:
        if self._fresh():
            return self._session_id  # type: ignore[return-value]
        async with self._lock:  # one generation at a time; waiters reuse its result
            if not self._fresh():
                await self._generate()
            return self._session_id  # type: ignore[return-value]

    def invalidate(self, session_id: str) -> None:
        if session_id == self._session_id:
            self._session_id = None

    async def _generate(self) -> None:
        c = self._config
        wait = self._budget.wait(self._clock())
        if wait > 0:
            raise TransientError(
                f"session: budget of {c.max_sessions_per_hour} sessions an hour used up",
                retry_after=wait,
            )
        self._budget.record(self._clock())
        self.generated += 1
        headers = {
            "userName": c.username,
            "secretKey": c.api_key.get_secret_value(),
            "accountId": c.account_id,
        }
        started = self._clock()
        body = await _request_json(
            self._http,
            "GET",
            c.session_url + c.session_path,
            headers=headers,
            timeout=c.timeout_seconds,
            what="session",
        )
        if not isinstance(body, dict) or body.get("error") or not body.get("respList"):
            self._on_refresh(False)
            self._refusals += 1
            errors = body.get("errorList") if isinstance(body, dict) else None
            message = f"session: InMobi refused the credentials: {errors or 'no session'}"
            if self._refusals >= c.auth_fatal_after:
                raise FatalError(f"{message} ({self._refusals} times in a row)")
            raise AuthError(message)
        self._refusals = 0
        self._session_id = str(body["respList"][0]["sessionId"])
        self._expires_at = started + c.session_ttl_seconds
        self._on_refresh(True)
        log.info("session_generated", expires_in_seconds=c.session_ttl_seconds)


async def _request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    **kwargs: Any,
) -> Any:
    try:
        async with http.request(
            method, url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
        ) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            raise_for_status(resp.status, body, resp.headers, what)
            if body is None:
                raise TransientError(f"{what}: HTTP {resp.status} with a body that is not JSON")
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None


def multipart_file(
    field: str, filename: str, content_type: str, payload: bytes
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one file part, and its Content-Type header.

    Built as one bytes object (the same bytes aiohttp's FormData writes: names percent-quoted,
    a random hex boundary) so the request goes out with a Content-Length in one write, and
    costs no multipart writer per request.
    """
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        f'Content-Disposition: form-data; name="{quote(field, "")}"; '
        f'filename="{quote(filename, "")}"\r\n\r\n'
    )
    body = b"".join((head.encode(), payload, f"\r\n--{boundary}--\r\n".encode()))
    return body, f"multipart/form-data; boundary={boundary}"


class RequestGate:
    """Every InMobi request waits here for a token of the one requests-per-second bucket."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._bucket = TokenBucket(rate)
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        delay = self._bucket.reserve(self._clock())
        if delay > 0:
            await self._sleep(delay)


class InMobiClient:
    """Segment creation and uploads, each sent with the current session (re-auth once on 401)."""

    def __init__(
        self,
        config: InMobiConfig,
        http: aiohttp.ClientSession,
        sessions: SessionManager,
        gate: RequestGate | None = None,
    ) -> None:
        self._config = config
        self._http = http
        self.sessions = sessions
        self._gate = gate

    def _headers(self, session_id: str) -> dict[str, str]:
        c = self._config
        return {
            "accountId": c.account_id,
            "secretKey": c.api_key.get_secret_value(),
            "sessionId": session_id,
        }

    async def _with_session(self, call: Callable[[dict[str, str]], Awaitable[Any]]) -> Any:
        for attempt in (1, 2):
            session_id = await self.sessions.get()
            if self._gate is not None:
                await self._gate.wait()
            try:
                return await call(self._headers(session_id))
            except AuthError:
                self.sessions.invalidate(session_id)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def create_segment(self, name: str, ttl_days: int) -> str:
        c = self._config
        params = {"segmentName": name, "propertyId": c.property_id, "membershipTtl": str(ttl_days)}

        async def call(headers: dict[str, str]) -> Any:
            return await _request_json(
                self._http,
                "POST",
                c.base_url + c.segment_path,
                params=params,
                headers=headers,
                timeout=c.timeout_seconds,
                what="create segment",
            )

        body = await self._with_session(call)
        segment_id = body.get("segmentId") if isinstance(body, dict) else None
        if not segment_id:
            raise TransientError(f"create segment: no segmentId in the answer: {body!r:.200}")
        return str(segment_id)

    async def upload(self, segment_id: str, action: str, payload: bytes) -> int:
        """Upload one gzip CSV file; return the rows InMobi accepted."""
        c = self._config
        url = c.base_url + c.upload_path.format(segment_id=segment_id)
        params = {"action": action, "propertyId": c.property_id}

        body, content_type = multipart_file(
            c.upload_field, c.upload_filename, c.upload_content_type, payload
        )

        async def call(headers: dict[str, str]) -> Any:
            return await _request_json(
                self._http,
                "POST",
                url,
                params=params,
                headers={**headers, "Content-Type": content_type},
                data=body,
                timeout=c.timeout_seconds,
                what="upload",
            )

        body = await self._with_session(call)
        rows = body.get("rows") if isinstance(body, dict) else None
        return int(rows) if isinstance(rows, int) else -1
