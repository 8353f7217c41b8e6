"""All configuration in one place (DESIGN §4 "Configuration")."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "onefamily-cases"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    api_host: str = Field("127.0.0.1", validation_alias="ONEFAMILY_API_HOST")
    api_port: int = Field(8000, validation_alias="ONEFAMILY_API_PORT")
    data_dir: Path = Field(Path(".data"), validation_alias="ONEFAMILY_DATA_DIR")
    temporal_port: int = Field(7233, validation_alias="ONEFAMILY_TEMPORAL_PORT")
    temporal_ui_port: int = Field(8233, validation_alias="ONEFAMILY_TEMPORAL_UI_PORT")
    temporal_address: str | None = Field(None, validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    country: str = Field("DK", validation_alias="ONEFAMILY_COUNTRY")
    task_queue: str = Field(TASK_QUEUE, validation_alias="ONEFAMILY_TASK_QUEUE")
    policy_file: str | None = Field(None, validation_alias="ONEFAMILY_POLICY_FILE")
    committee_id: str = Field("main", validation_alias="ONEFAMILY_COMMITTEE_ID")
    # An explicit cache so one worker can hold many open cases (DESIGN §7).
    max_cached_workflows: int = Field(10_000, validation_alias="ONEFAMILY_MAX_CACHED_WORKFLOWS")
    # The documents worker's CPU priority (nice increment, 0-19): a PDF takes ~0.1 s of CPU
    # (0.3-0.9 s of wall), a command ~20 ms; on shared cores a coordinator's click goes first
    # and the document, asynchronous anyway, follows (docs/performance.md, sixth pass).
    document_worker_nice: int = Field(10, ge=0, le=19, validation_alias="ONEFAMILY_DOCUMENT_WORKER_NICE")
    # Encrypt Temporal payloads (health data) at rest; keys: workflows/codec.py.
    encrypt_payloads: bool = Field(True, validation_alias="ONEFAMILY_ENCRYPT_PAYLOADS")

    # How long the API's start waits for Temporal before answering (it keeps trying after).
    temporal_connect_wait: float = Field(10, ge=0, validation_alias="ONEFAMILY_TEMPORAL_CONNECT_WAIT")
    # Every command's deadline (docs/operations.md): no answer from the case engine within this
    # many seconds (no worker, a wedged case, a busy engine) -> 503 with a sentence, not a hang.
    command_timeout: float = Field(10, gt=0, le=300, validation_alias="ONEFAMILY_COMMAND_TIMEOUT")
    # The start backlog (api/backlog.py, docs/operations.md): past this many new cases whose
    # workflow has not run yet, POST /cases answers 503 with Retry-After (0: no limit) ...
    start_backlog_limit: int = Field(200, ge=0, validation_alias="ONEFAMILY_START_BACKLOG_LIMIT")
    # ... and a case whose workflow has not run this many seconds after creation is stuck
    # (`workflow_not_started`), counted in /metrics and /readyz.
    not_started_seconds: float = Field(60, gt=0, validation_alias="ONEFAMILY_NOT_STARTED_SECONDS")

    # Identity (DESIGN §9): how staff prove who they are.
    auth: Literal["local", "oidc", "trusted-header"] = Field("local", validation_alias="ONEFAMILY_AUTH")
    trusted_header: str = Field("X-User", validation_alias="ONEFAMILY_TRUSTED_HEADER")
    # Peers whose trusted header is believed (IPs or CIDRs, comma separated).
    trusted_proxies: str = Field("127.0.0.1,::1", validation_alias="ONEFAMILY_TRUSTED_PROXIES")
    admin_password: str | None = Field(None, validation_alias="ONEFAMILY_ADMIN_PASSWORD")
    session_idle_minutes: int = Field(30, ge=1, validation_alias="ONEFAMILY_SESSION_IDLE_MINUTES")
    session_absolute_hours: int = Field(12, ge=1, validation_alias="ONEFAMILY_SESSION_ABSOLUTE_HOURS")
    # Host names the API answers to, besides loopback (comma separated); DNS rebinding defence.
    allowed_hosts: str = Field("", validation_alias="ONEFAMILY_ALLOWED_HOSTS")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="ONEFAMILY_MAX_BODY_BYTES")
    public_url: str | None = Field(None, validation_alias="ONEFAMILY_PUBLIC_URL")
    # OpenID Connect (ONEFAMILY_AUTH=oidc).
    oidc_issuer: str | None = Field(None, validation_alias="ONEFAMILY_OIDC_ISSUER")
    oidc_client_id: str | None = Field(None, validation_alias="ONEFAMILY_OIDC_CLIENT_ID")
    oidc_client_secret: str | None = Field(None, validation_alias="ONEFAMILY_OIDC_CLIENT_SECRET")
    # The `aud` bearer tokens must carry (default: the client id).
    oidc_audience: str | None = Field(None, validation_alias="ONEFAMILY_OIDC_AUDIENCE")
    oidc_staff_claim: str = Field("preferred_username", validation_alias="ONEFAMILY_OIDC_STAFF_CLAIM")
    oidc_scopes: str = Field("openid profile", validation_alias="ONEFAMILY_OIDC_SCOPES")

    # The family's way in (DESIGN §11, docs/family.md): one-time links and codes, and national
    # eID (MitID / BankID) through an OpenID Connect broker, independent of ONEFAMILY_AUTH.
    family_link_hours: int = Field(72, ge=1, le=24 * 30, validation_alias="ONEFAMILY_FAMILY_LINK_HOURS")
    family_code_minutes: int = Field(10, ge=1, le=60, validation_alias="ONEFAMILY_FAMILY_CODE_MINUTES")
    family_code_tries: int = Field(5, ge=1, le=20, validation_alias="ONEFAMILY_FAMILY_CODE_TRIES")
    # Unset issuer = no eID sign-in for families.
    family_oidc_issuer: str | None = Field(None, validation_alias="ONEFAMILY_FAMILY_OIDC_ISSUER")
    family_oidc_client_id: str | None = Field(None, validation_alias="ONEFAMILY_FAMILY_OIDC_CLIENT_ID")
    family_oidc_client_secret: str | None = Field(None,
                                                  validation_alias="ONEFAMILY_FAMILY_OIDC_CLIENT_SECRET")
    family_oidc_scopes: str = Field("openid", validation_alias="ONEFAMILY_FAMILY_OIDC_SCOPES")
    # The ID token's claim that identifies the person (verified by the broker), e.g. `sub` or a
    # national id claim; stored only as a keyed hash.
    family_oidc_identifier_claim: str = Field("sub",
                                              validation_alias="ONEFAMILY_FAMILY_OIDC_IDENTIFIER_CLAIM")

    @property
    def family_oidc_enabled(self) -> bool:
        return bool(self.family_oidc_issuer and self.family_oidc_client_id)

    @property
    def document_task_queue(self) -> str:
        return f"{self.task_queue}-documents"

    @property
    def secure_cookies(self) -> bool:
        return bool(self.public_url and self.public_url.startswith("https://"))

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'onefamily.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
