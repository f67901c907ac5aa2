"""Every knob of the gateway, read once from `OPENCSP_*` variables (or `.env`).

Settings are parsed and checked here so that a bad value stops start-up with one line that names it,
instead of failing later inside a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    max_page_size: int = Field(default=100, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    graphiql: bool = True

    # The catalog users choose from; JSON lists in the environment.
    flavors: Annotated[list[Flavor], NoDecode] = Field(default_factory=lambda: list(DEFAULT_FLAVORS))
    images: Annotated[list[Image], NoDecode] = Field(default_factory=lambda: list(DEFAULT_IMAGES))

    @field_validator("flavors", "images", mode="before")
    @classmethod
    def _parse_json_list(cls, value: object) -> object:
        if isinstance(value, str | bytes):
            import orjson

            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
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
        for label, items in (("flavors", self.flavors), ("images", self.images)):
            names = [item.name for item in items]
            if not names:
                raise ValueError(f"{label} must not be empty")
            if len(set(names)) != len(names):
                raise ValueError(f"{label} has duplicate names")
        return self

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


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


Mode = Literal["serve", "dev"]
