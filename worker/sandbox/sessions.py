"""Accounts and sessions of the simulated InMobi API (CONTRACT section 5), as pure state.

A session is generated from an account's ``userName`` and ``secretKey`` and then travels with every
other call as ``sessionId``, next to the ``accountId`` and ``secretKey`` it was issued for. A session
stops being live in three ways, each with its own 401 message:

- it *expires* ``ttl_seconds`` after it was generated (the TTL in force at generation);
- it is *revoked* because the key generated more than ``max_live_per_key`` live sessions (the
  oldest goes), because an operator revoked all sessions, or by periodic revocation;
- periodic revocation is decided lazily: with ``revoke_every_seconds`` set, time from
  ``revoke_origin`` is cut into epochs of that length, and a session dies when the epoch of ``now``
  is later than the epoch it was generated in (sessions older than the origin count as epoch 0).

Time is always an argument (``now``); nothing here reads a clock. Secrets are compared in constant
time, kept as `SecretStr`, and never put in an error message.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import SecretStr

__all__ = [
    "Account",
    "CredentialsError",
    "Session",
    "SessionPolicy",
    "SessionRejectedError",
    "SessionStore",
]


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    account_id: str
    secret_key: SecretStr = field(repr=False)


@dataclass(slots=True)
class Session:
    session_id: str
    username: str
    account_id: str
    created_at: float
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    ttl_seconds: float = 86400.0
    max_live_per_key: int = 5
    revoke_every_seconds: float | None = None
    revoke_origin: float = 0.0

    def epoch(self, t: float) -> int:
        if self.revoke_every_seconds is None:
            return 0
        return max(0, math.floor((t - self.revoke_origin) / self.revoke_every_seconds))


class CredentialsError(Exception):
    """Session generation refused; answered as HTTP 200 with ``"error": true``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionRejectedError(Exception):
    """A call's session headers are not acceptable; answered as HTTP 401."""


_MAX_KEPT = 10_000


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8"))


class SessionStore:
    """Every session ever generated since the last reset, live or not."""

    def __init__(self, accounts: Iterable[Account], new_id: Callable[[], str]) -> None:
        self._accounts = {a.username: a for a in accounts}
        self._new_id = new_id
        self._sessions: dict[str, Session] = {}
        self.generated = 0

    def generate(
        self,
        *,
        username: str | None,
        secret_key: str | None,
        account_id: str | None,
        now: float,
        policy: SessionPolicy,
    ) -> Session:
        """A new live session, or `CredentialsError`; may revoke the key's oldest session."""
        account = self._authenticate(username, secret_key, account_id)
        self.sweep(now, policy)
        session = Session(self._new_id(), account.username, account.account_id, now, 0.0)
        session.expires_at = now + policy.ttl_seconds
        live = [s for s in self._sessions.values() if s.username == account.username]
        live = [s for s in live if self._is_live(s, now)]
        for oldest in live[: max(0, len(live) + 1 - policy.max_live_per_key)]:
            oldest.revoked = True
        self._sessions[session.session_id] = session
        self.generated += 1
        self._prune(now)
        return session

    def check(
        self,
        *,
        session_id: str | None,
        account_id: str | None,
        secret_key: str | None,
        now: float,
        policy: SessionPolicy,
    ) -> Session:
        """The live session these headers name, or `SessionRejectedError` saying why not."""
        if not session_id:
            raise SessionRejectedError("sessionId header missing")
        self.sweep(now, policy)
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionRejectedError("unknown session")
        if session.revoked:
            raise SessionRejectedError("session revoked")
        if now >= session.expires_at:
            raise SessionRejectedError("session expired")
        account = self._accounts[session.username]
        if account_id != account.account_id or not _same(
            secret_key or "", account.secret_key.get_secret_value()
        ):
            raise SessionRejectedError("accountId or secretKey does not match the session")
        return session

    def sweep(self, now: float, policy: SessionPolicy) -> None:
        """Apply periodic revocation: revoke sessions generated in an earlier epoch."""
        if policy.revoke_every_seconds is None:
            return
        current = policy.epoch(now)
        for session in self._sessions.values():
            if not session.revoked and policy.epoch(session.created_at) < current:
                session.revoked = True

    def revoke_all(self) -> int:
        """Revoke every session; returns how many were not yet revoked."""
        fresh = [s for s in self._sessions.values() if not s.revoked]
        for session in fresh:
            session.revoked = True
        return len(fresh)

    def live_count(self, now: float, policy: SessionPolicy) -> int:
        self.sweep(now, policy)
        return sum(1 for s in self._sessions.values() if self._is_live(s, now))

    def reset(self) -> None:
        self._sessions.clear()
        self.generated = 0

    def _authenticate(
        self, username: str | None, secret_key: str | None, account_id: str | None
    ) -> Account:
        if not username or not secret_key:
            raise CredentialsError(1001, "userName and secretKey headers are required")
        account = self._accounts.get(username)
        valid = account is not None and _same(secret_key, account.secret_key.get_secret_value())
        if account is None or not valid:
            raise CredentialsError(1002, "invalid userName or secretKey")
        if account_id is not None and account_id != account.account_id:
            raise CredentialsError(1003, "accountId does not belong to this key")
        return account

    def _prune(self, now: float) -> None:
        # Bounded memory: forget the oldest dead sessions (they then answer "unknown session").
        excess = len(self._sessions) - _MAX_KEPT
        if excess <= 0:
            return
        dead = [k for k, s in self._sessions.items() if not self._is_live(s, now)][:excess]
        for key in dead:
            del self._sessions[key]

    @staticmethod
    def _is_live(session: Session, now: float) -> bool:
        return not session.revoked and now < session.expires_at
