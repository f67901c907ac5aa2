"""Every knob of the gateway, read once from `OPENCSP_*` variables (or `.env`).

Settings are parsed and checked here so that a bad value stops start-up with one line that names it,
instead of failing later inside a request.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.auth.permissions import PolicyError, parse_policy
from services.auth.tokens import ASYMMETRIC_ALGORITHMS
from services.catalog import DEFAULT_FLAVORS, DEFAULT_IMAGES, Flavor, Image

DEV_DIR = Path(".opencsp")


class Settings(BaseSettings):
    """The gateway's configuration; field `x` is the variable `OPENCSP_X`."""

    model_config = SettingsConfigDict(
        env_prefix="OPENCSP_", env_file=".env", extra="ignore", frozen=True, validate_default=True
    )

    # Where the gateway listens and what it stores.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = f"sqlite+aiosqlite:///{DEV_DIR}/gateway.db"
    database_pool_size: int = Field(default=10, ge=1)
    dev_mode: bool = False

    # Limits that keep one request from costing the whole process.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_query_bytes: int = Field(default=65_536, ge=256)
    max_query_depth: int = Field(default=12, ge=2)
    max_aliases: int = Field(default=30, ge=1)
    max_tokens: int = Field(default=4_000, ge=100)
    max_selections: int = Field(default=500, ge=1)  # fields (through fragments) and same-name pairs
    max_directives: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=100, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    graphiql: bool = True
    # Trusted documents and demand control (docs/SECURITY.md "Trusted documents", "Demand control").
    trusted_documents: Path | None = None  # the front end's manifest: {"<sha256 hex>": "<document>"}
    documents_mode: Literal["open", "enforce"] = "open"
    max_operation_cost: int = Field(default=5_000, ge=1)
    cost_per_minute: int = Field(default=0, ge=0)  # per user (token sub); 0: no budget
    redis_url: str | None = None  # the budget shared by every replica; unset: each process its own
    # The operations dashboard at / and /dashboard (gateway/dashboard.py); None: on in dev mode only.
    dashboard: bool | None = None

    # Authentication: ZITADEL (or the local issuer of dev mode). See docs/SECURITY.md.
    oidc_issuer: str = ""
    oidc_project_id: str = ""
    oidc_audience: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_jwks_url: str | None = None
    oidc_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
    )
    oidc_admin_org_id: str | None = None
    oidc_dashboard_client_id: str = ""  # a PKCE "User Agent" app in ZITADEL: the dashboard's sign-in
    oidc_leeway_seconds: int = Field(default=60, ge=0, le=300)
    oidc_max_token_bytes: int = Field(default=8192, ge=1024)
    oidc_token_cache_size: int = Field(default=10_000, ge=0)
    oidc_jwks_min_refresh_seconds: float = Field(default=30.0, ge=1)
    rbac_policy: Annotated[dict[str, frozenset[str]] | None, NoDecode] = None
    # Sign-out (docs/SECURITY.md "Sessions"): back-channel logout for these client ids (the console app's),
    # access tokens of these client ids only (empty: any app of the project), revocations kept this long.
    oidc_logout_client_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_client_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_max_token_lifetime_seconds: int = Field(default=43_200, ge=60, le=30 * 86_400)
    # RFC 7662 introspection before every write (off unless all three are set): see docs/SECURITY.md.
    oidc_introspection_url: str | None = None
    oidc_introspection_client_id: str | None = None
    oidc_introspection_client_secret: SecretStr | None = None
    public_introspection: bool = False
    max_subscriptions_per_connection: int = Field(default=20, ge=1)
    subscription_backlog_limit: int = Field(default=256, ge=1)
    share_subscriptions: bool = True
    # Validated query documents run from a compiled plan (schema/compiled); off: graphql-core runs all.
    compiled_execution: bool = True
    websocket_keep_alive_seconds: float = Field(default=15.0, gt=0)
    websocket_implementation: Literal["websockets", "websockets-sansio", "wsproto"] = "websockets-sansio"
    # With websockets-sansio: shared subscriptions' frames are written pre-framed (gateway.wsprotocol).
    websocket_preframed: bool = True
    websocket_init_timeout_seconds: float = Field(default=10.0, gt=0)

    # The cluster: where instances' Terraform objects live and what they build from.
    kubeconfig: str | None = None
    terraform_namespace: str = "opencsp-instances"
    terraform_source_kind: Literal["GitRepository", "OCIRepository"] = "GitRepository"
    terraform_source_name: str = "opencsp-modules"
    terraform_source_namespace: str = "flux-system"
    terraform_vars_secret: str = "proxmox-credentials"  # noqa: S105 (a Secret's name)
    terraform_interval: str = Field(default="10m", pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    # Where VMs' addresses lie (comma-separated CIDRs); an outputs Secret naming another is refused.
    instance_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = Field(
        default_factory=list
    )

    # Semaphore: the post-provisioning task and its webhook hint.
    semaphore_url: str | None = None
    semaphore_token: SecretStr | None = None
    semaphore_project_id: int | None = Field(default=None, ge=1)
    semaphore_template_id: int | None = Field(default=None, ge=1)
    # Day-2 actions (deploy/modules/ansible/actions.yml): without it, rebootInstance is NOT_CONFIGURED.
    semaphore_actions_template_id: int | None = Field(default=None, ge=1)
    webhook_secret: SecretStr | None = None
    configuration_timeout_seconds: float = Field(default=1800.0, gt=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)

    # Quotas, per user and per org, over instances that are not DELETED.
    quota_user_instances: int = Field(default=10, ge=0)
    quota_user_cpu: int = Field(default=32, ge=0)
    quota_user_memory_mib: int = Field(default=65_536, ge=0)
    quota_org_instances: int = Field(default=50, ge=0)
    quota_org_cpu: int = Field(default=128, ge=0)
    quota_org_memory_mib: int = Field(default=262_144, ge=0)

    # Dev mode's simulated backends.
    dev_step_seconds: float = Field(default=1.0, ge=0)
    dev_fail_provisioning_prefix: str = "fail-prov"
    dev_fail_configuring_prefix: str = "fail-conf"

    # Observability: Prometheus at /metrics on a port of its own (unauthenticated, so never the public
    # one), logs, OTLP/HTTP traces when an endpoint is set.
    metrics: bool = True
    metrics_port: int = Field(default=9464, ge=1, le=65535)
    log_format: Literal["json", "text"] | None = None  # None: text in dev mode, json otherwise
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    otlp_endpoint: str | None = None  # the collector's base URL, e.g. http://otel-collector:4318

    # The catalog users choose from; JSON lists in the environment.
    flavors: Annotated[list[Flavor], NoDecode] = Field(default_factory=lambda: list(DEFAULT_FLAVORS))
    images: Annotated[list[Image], NoDecode] = Field(default_factory=lambda: list(DEFAULT_IMAGES))

    @field_validator("flavors", "images", "oidc_audience", "oidc_algorithms", mode="before")
    @classmethod
    def _parse_json_list(cls, value: object) -> object:
        if isinstance(value, str | bytes):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        return value

    @field_validator("oidc_logout_client_ids", "oidc_client_ids", mode="before")
    @classmethod
    def _parse_id_list(cls, value: object) -> object:
        """A JSON list, or comma-separated ids."""
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return cls._parse_json_list(value)

    @field_validator("instance_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        networks = []
        for part in filter(None, (item.strip() for item in value.split(","))):
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a network in CIDR notation ({exc})") from None
        return networks

    @field_validator("rbac_policy", mode="before")
    @classmethod
    def _parse_policy(cls, value: object) -> object:
        if value is None or value == "":
            return None
        try:
            return dict(parse_policy(value))  # type: ignore[arg-type]
        except PolicyError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - ASYMMETRIC_ALGORITHMS)
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} not allowed; choose from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
            )
        if not value:
            raise ValueError("must name at least one algorithm")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        if self.metrics and self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from port: /metrics is never on the public port")
        for label, items in (("flavors", self.flavors), ("images", self.images)):
            names = [item.name for item in items]
            if not names:
                raise ValueError(f"{label} must not be empty")
            if len(set(names)) != len(names):
                raise ValueError(f"{label} has duplicate names")
        return self

    @model_validator(mode="after")
    def _introspection_complete(self) -> Settings:
        parts = (
            self.oidc_introspection_url,
            self.oidc_introspection_client_id,
            self.oidc_introspection_client_secret,
        )
        if any(parts) and not all(parts):
            raise ValueError(
                "OPENCSP_OIDC_INTROSPECTION_URL, _CLIENT_ID and _CLIENT_SECRET are set together or not at all"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def logs_as(self) -> Literal["json", "text"]:
        return self.log_format or ("text" if self.dev_mode else "json")

    @property
    def dashboard_on(self) -> bool:
        return self.dev_mode if self.dashboard is None else self.dashboard

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def audiences(self) -> list[str]:
        return self.oidc_audience or ([self.oidc_project_id] if self.oidc_project_id else [])

    def missing_for_serve(self) -> list[str]:
        """Settings `serve` cannot run without (dev mode brings its own)."""
        required = {
            "OPENCSP_OIDC_ISSUER": self.oidc_issuer,
            "OPENCSP_OIDC_PROJECT_ID": self.oidc_project_id,
            "OPENCSP_SEMAPHORE_URL": self.semaphore_url,
            "OPENCSP_SEMAPHORE_TOKEN": self.semaphore_token,
            "OPENCSP_SEMAPHORE_PROJECT_ID": self.semaphore_project_id,
            "OPENCSP_SEMAPHORE_TEMPLATE_ID": self.semaphore_template_id,
            "OPENCSP_WEBHOOK_SECRET": self.webhook_secret,
        }
        return [name for name, value in required.items() if not value]


class SettingsError(Exception):
    """A setting is missing or wrong; the message is one line naming it."""


def describe(error: ValidationError) -> str:
    """One line per bad setting, named as the operator writes it."""
    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        name = f"OPENCSP_{location[0].upper()}" if location else "settings"
        detail = ".".join(location[1:])
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}{'[' + detail + ']' if detail else ''}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
