"""One running sandbox: its settings, clock, state, faults, holds and schema registry together.

`create_app` builds one `SandboxContext` and stores it in the application under `SANDBOX`; every
handler reaches the sandbox through it. The fault configuration is replaced as a whole
(`set_faults`): that re-seeds the random source, restarts every rule's ``count`` and starts the
periodic-revocation clock at the moment of the change, so a test that sets faults and then sends
requests sees the same outcome on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import FaultConfig, FaultInjector
from worker.sandbox.holds import HoldGate, ParkingLot
from worker.sandbox.registry import SchemaStore
from worker.sandbox.sessions import SessionPolicy
from worker.sandbox.state import SandboxState

__all__ = ["SANDBOX", "SandboxContext"]


class SandboxContext:
    """Everything one sandbox app shares between requests (all used from its event loop)."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.state = SandboxState([config.account()], seed=config.seed)
        self.registry = SchemaStore()
        self.holds = HoldGate()
        self.parking = ParkingLot()
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.faults_since = clock()

    def now(self) -> float:
        return self.clock()

    @property
    def fault_config(self) -> FaultConfig:
        return self.faults.config

    def policy(self) -> SessionPolicy:
        """The session rules in force, from the current fault configuration."""
        faults = self.faults.config
        return SessionPolicy(
            ttl_seconds=faults.session_ttl_seconds,
            max_live_per_key=faults.max_live_sessions_per_key,
            revoke_every_seconds=faults.revoke_sessions_every_seconds,
            revoke_origin=self.faults_since,
        )

    def set_faults(self, config: FaultConfig) -> None:
        self.faults = FaultInjector(config, seed=self.config.seed)
        self.faults_since = self.clock()

    def reset(self, *, registry: bool = False) -> None:
        """Back to the start: held uploads released, state emptied, initial faults restored."""
        self.holds.release()
        self.state.reset()
        self.set_faults(self.config.faults)
        if registry:
            self.registry.reset()

    def snapshot(self) -> dict[str, Any]:
        """``GET /_sandbox/state``: the state plus faults and holds."""
        body = self.state.snapshot(self.now(), self.policy())
        body["faults"] = self.faults.config.model_dump(mode="json")
        body["held"] = self.holds.waiting
        body["held_segments"] = self.holds.held_segments
        return body


SANDBOX = web.AppKey("sandbox", SandboxContext)
