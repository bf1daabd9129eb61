"""The settings tree (CONTRACT section 3), built once at start-up and passed down as values.

Precedence, highest first: process environment, then `.env` in the working directory, then the
defaults below. Field names are the variable names (lower-cased); nested groups are flat on purpose
so that every variable of the contract is one field, and an error names the variable an operator
sets. Secrets are `SecretStr`: they never reach logs, errors or metrics.

Assumed parts of the InMobi profile (CONTRACT section 5) are settings too (`INMOBI_*_PATH`,
`INMOBI_UPLOAD_*`, `INMOBI_CSV_COLUMN_*`), so that a real account can be matched without a release.

No other module reads the environment: `load_settings()` is called by the CLI only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError
from worker.model import IdType
from worker.segments import SegmentCatalog, parse_segments_document

__all__ = ["REQUIRED_FOR_RUN", "Settings", "load_settings", "require_for_run"]

REQUIRED_FOR_RUN = ("inmobi_username", "inmobi_account_id", "inmobi_api_key", "inmobi_property_id")


class Settings(BaseSettings):
    """Every setting of the worker, validated; frozen once built."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topic: str = "segment-membership-changes"
    kafka_group_id: str = "inmobi-audience-sync"
    kafka_dlq_topic: str = "segment-membership-changes.dlq"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_session_timeout_ms: int = Field(45000, ge=1000, le=3_600_000)
    kafka_group_instance_id: str | None = None
    kafka_consumer_overrides: dict[str, Any] = Field(default_factory=dict)
    kafka_producer_overrides: dict[str, Any] = Field(default_factory=dict)
    schema_registry_url: str | None = None
    segment_registry_topic: str = "inmobi-segment-registry"
    segment_claim_ttl_seconds: float = Field(300, gt=0)

    # InMobi (documented parts)
    inmobi_base_url: str = "https://advertiser.inmobiapis.com"
    inmobi_session_url: str = "https://api.inmobi.com"
    inmobi_username: str | None = None
    inmobi_account_id: str | None = None
    inmobi_api_key: SecretStr | None = None
    inmobi_property_id: str | None = None
    inmobi_session_path: str = "/v1.0/generatesession/generate"
    inmobi_segment_path: str = "/tpce/v1/segment"
    inmobi_session_ttl_seconds: float = Field(86400, gt=0)
    inmobi_session_refresh_ahead_seconds: float = Field(3600, ge=0)
    # InMobi (assumed parts: CONTRACT section 5 "Batch upload (assumed)")
    inmobi_upload_path: str = "/tpce/v1/segment/{segment_id}/users"
    inmobi_upload_field: str = "file"
    inmobi_upload_filename: str = "users.csv.gz"
    inmobi_upload_content_type: str = "application/gzip"
    inmobi_csv_column_idfa: str = "ida"
    inmobi_csv_column_gaid: str = "gpId"
    inmobi_csv_column_device_id: str = "ifa"
    inmobi_max_rows_per_file: int = Field(100_000, ge=1)
    inmobi_max_bytes_per_file: int = Field(10_485_760, ge=1024)
    inmobi_request_timeout_seconds: float = Field(60, gt=0)
    inmobi_max_concurrent_uploads: int = Field(8, ge=1, le=64)
    inmobi_requests_per_second: float = Field(50, gt=0)
    inmobi_max_sessions_per_hour: int = Field(60, ge=1)
    inmobi_auth_fatal_after: int = Field(5, ge=1)

    # Segments and flushing
    segments_file: Path | None = None
    flush_max_ids: int = Field(100_000, ge=1)
    flush_max_bytes: int = Field(10_485_760, ge=1024)
    flush_max_age_seconds: float = Field(60, gt=0)
    flush_age_spread: float = Field(0.4, ge=0, lt=1)
    max_buffered_ids: int = Field(10_000_000, ge=1)
    gzip_level: int = Field(1, ge=0, le=3)
    commit_interval_seconds: float = Field(1.0, gt=0)
    shutdown_timeout_seconds: float = Field(30, gt=0)
    revoke_timeout_seconds: float = Field(20, gt=0)

    # Operations
    http_port: int = Field(9400, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    progress_log_seconds: float = Field(10, gt=0)

    @field_validator("kafka_consumer_overrides", "kafka_producer_overrides", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            parsed = json.loads(value) if value.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object of librdkafka properties")
            return parsed
        return value

    @field_validator("log_level", "kafka_security_protocol", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required "
                "when KAFKA_SECURITY_PROTOCOL is SASL_*"
            )
        return self

    @property
    def csv_columns(self) -> dict[IdType, str]:
        return {
            IdType.IDFA: self.inmobi_csv_column_idfa,
            IdType.GAID: self.inmobi_csv_column_gaid,
            IdType.DEVICE_ID: self.inmobi_csv_column_device_id,
        }

    def load_segments(self) -> SegmentCatalog:
        """The segment catalogue from SEGMENTS_FILE, or the contract's defaults when unset."""
        if self.segments_file is None:
            return SegmentCatalog.default()
        try:
            document = yaml.safe_load(self.segments_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"SEGMENTS_FILE: cannot read {self.segments_file}: {exc}"]) from exc
        return parse_segments_document(document)


def _problem_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = str(loc[0]).upper() if loc else "SETTINGS"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if loc else message)
    return lines


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (and `.env`); raise ConfigError listing problems."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_problem_lines(exc)) from exc
    settings.load_segments()  # fail at start on a bad SEGMENTS_FILE, not on first use
    return settings


def require_for_run(settings: Settings) -> None:
    """`run` needs InMobi credentials; say every missing one at once."""
    missing = [
        f"{name.upper()}: required for `run`"
        for name in REQUIRED_FOR_RUN
        if getattr(settings, name) in (None, "")
    ]
    if missing:
        raise ConfigError(missing)
