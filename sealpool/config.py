"""Settings for sealpool, from the environment (``SEALPOOL_*``) and a TOML file.

The precedence is: explicit arguments, then ``SEALPOOL_*`` environment variables, then the
TOML file named by ``--config`` or ``SEALPOOL_CONFIG``, then the defaults below.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sealpool.errors import ConfigError

CONFIG_ENV = "SEALPOOL_CONFIG"
_config_file: ContextVar[Path | None] = ContextVar("sealpool_config_file", default=None)


class Settings(BaseSettings):
    """Everything a sealpool process needs to find its pool."""

    model_config = SettingsConfigDict(env_prefix="SEALPOOL_", extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="URL of the Redis server holding the pool (redis:// or rediss://). "
        "Unset: sealpool starts and reuses an embedded server in data_dir.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("sealpool")),
        description="Directory of the embedded Redis server (AOF files, pid, port).",
    )
    key_prefix: str = Field(
        default="sealpool",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key, so several pools can share one server.",
    )
    miner: str = Field(
        default="f01000",
        pattern=r"^[ft]0\d{1,19}$",
        description="Miner actor id that new sectors belong to, e.g. f01000.",
    )
    lease_s: float = Field(
        default=60.0, gt=0, description="Seconds a claimed phase stays owned without a renewal."
    )
    request_id_ttl_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long a sector-creation request id is remembered for deduplication.",
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url {url!r} must start with redis://, rediss:// or unix://")
        return url or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        config_file = _config_file.get()
        if config_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)),)
        return sources


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build the settings, naming the file, field and value of the first bad entry."""
    config_file = config_file or _env_config_file()
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"{config_file}: config file not found")
    source = str(config_file or "environment")
    given = {key: value for key, value in overrides.items() if value is not None}
    reset = _config_file.set(config_file)
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        raise ConfigError(
            f"{source}: {field}: {error['msg']} (got {error.get('input')!r})"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    finally:
        _config_file.reset(reset)


def _env_config_file() -> Path | None:
    name = os.environ.get(CONFIG_ENV)
    return Path(name) if name else None
