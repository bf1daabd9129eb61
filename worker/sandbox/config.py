"""The sandbox's settings: where it listens, the one account it knows, and its initial faults.

A frozen pydantic model, built once (by the CLI or a test) and passed down. The defaults make a
sandbox that accepts the credentials of the sample ``.env``; the secret key is a `SecretStr` so it
never shows in a repr, a log line or a response body.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker.openrtb.campaigns import Campaign
from worker.sandbox.faults import FaultConfig
from worker.sandbox.sessions import Account

__all__ = ["SandboxConfig"]


class SandboxConfig(BaseModel):
    """Settings of one sandbox instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    username: str = "sandbox-user"
    secret_key: SecretStr = SecretStr("sandbox-secret")
    account_id: str = "sandbox-account"
    property_id: str = "1234567890"
    faults: FaultConfig = FaultConfig()
    seed: int = 0
    # OpenRTB bidder campaigns; None: one demo campaign per segment the sandbox holds
    campaigns: list[Campaign] | None = None

    def account(self) -> Account:
        return Account(self.username, self.account_id, self.secret_key)
