"""Settings for sealpool, from the environment (``SEALPOOL_*``) and a TOML file.

The precedence is: explicit arguments, then ``SEALPOOL_*`` environment variables, then the
TOML file named by ``--config`` or ``SEALPOOL_CONFIG``, then the defaults below
(:func:`setting_sources` tells which gave each setting). A worker profile comes before all of
them, for the fields it names (see sealpool.worker_profiles.effective).
"""

from __future__ import annotations

import json
import os
import re
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sealpool import sentinel
from sealpool.errors import ConfigError
from sealpool.secrets import shown_setting

CONFIG_ENV = "SEALPOOL_CONFIG"
EPOCH_SECONDS = 30.0
# Typical phase durations of a 32 GiB sector, in seconds (see docs/REFERENCE facts).
DEFAULT_PHASE_SECONDS: dict[str, float] = {
    "AddPiece": 300.0,
    "PreCommit1": 3 * 3600.0,
    "PreCommit2": 15 * 60.0,
    "PreCommitting": 60.0,
    "Commit1": 30.0,
    "Commit2": 20 * 60.0,
    "Committing": 60.0,
    "Finalize": 300.0,
}
_config_file: ContextVar[Path | None] = ContextVar("sealpool_config_file", default=None)


MINER_ID = r"^[ft]0\d{1,19}$"


class MinerConfig(BaseModel):
    """One miner the pool seals for: an entry of the ``miners`` setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=MINER_ID, description="Miner actor id, e.g. f01000.")
    share: float = Field(default=1.0, gt=0, description="Share of new sectors among peers.")
    priority: int = Field(default=0, ge=0, description="Lower: served before the others.")
    max_sealing: int | None = Field(
        default=None, ge=1, description="Most of its sectors in the pool, not yet sealed."
    )
    cc_fill: bool | None = Field(default=None, description="cc_fill for this miner.")
    first_number: int = Field(default=1, ge=0, description="Lowest sector number to give.")
    last_number: int | None = Field(default=None, ge=0, description="Highest one to give.")


class Settings(BaseSettings):
    """Everything a sealpool process needs to find its pool."""

    model_config = SettingsConfigDict(env_prefix="SEALPOOL_", extra="forbid")

    redis_url: str | None = Field(
        default=None,
        repr=False,
        description="URL of the Redis server holding the pool (redis:// or rediss://), or "
        "of its sentinels, as Celery's broker_url names them: "
        "sentinel://[:password@]host:port[/db];sentinel://host:port… (the password and db "
        "are the primary's). Unset: the embedded server in data_dir (one-shot commands "
        "start it; `sealpool worker`, `supervisor` and `exporter` need it running).",
    )
    redis_sentinel_master: str = Field(
        default="mymaster",
        min_length=1,
        description="With a sentinel:// redis_url: the name the sentinels monitor the "
        "primary under (Celery's master_name transport option).",
    )
    redis_wait_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas that must acknowledge each claim, renewal and end of a lease, "
        "each move of a sector and each new sector before the caller goes on (Redis WAIT), "
        "so a failover loses none of them. Unset: 1 with a sentinel:// redis_url, else 0.",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000,
        gt=0,
        description="Most milliseconds a WAIT blocks; past it the write stands on the primary "
        "alone, and a warning is logged.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("sealpool")),
        description="Directory of the embedded Redis server: AOF files, pid, and server.json "
        "(its address, port and password, kept for every later start).",
    )
    key_prefix: str = Field(
        default="sealpool",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key, so several pools can share one server.",
    )
    miner: str = Field(
        default="f01000",
        pattern=MINER_ID,
        description="Miner actor id that new sectors belong to, e.g. f01000 (the one-miner "
        "shorthand of `miners`; ignored when `miners` is set).",
    )
    miners: list[MinerConfig] = Field(
        default_factory=list,
        description="Several miners served by one pool (TOML `[[miners]]`, or JSON): each "
        "`{id, share, priority, max_sealing, cc_fill, first_number, last_number}`. New "
        "sectors go to the miners of the lowest `priority` below their `max_sealing`, in "
        "proportion to `share`; a miner's sector numbers stay in `[first_number, "
        "last_number]`, above those allocated on chain. The first miner takes deal sectors "
        "and `sectors add` without `--miner`. Empty: one miner, `miner`.",
    )
    lease_s: float = Field(
        default=60.0, gt=0, description="Seconds a claimed phase stays owned without a renewal."
    )
    request_id_ttl_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long a sector-creation request id is remembered for deduplication.",
    )
    history_archive: Literal["archive", "drop", "keep"] = Field(
        default="archive",
        description="What becomes of a sector's history stream once it is Proving or "
        "Aborted: `archive` (one entry of the pool's shared archive stream, kept "
        "`history_archive_days`), `drop`, or `keep` (its own stream, ~4 KB a sector). The "
        "record keeps each phase's last run either way (for `ratio` and `sectors show`).",
    )
    history_archive_days: float = Field(
        default=7.0,
        ge=0,
        description="Days an archived history is kept; later `sectors show` gives the "
        "summary of runs.",
    )

    host: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Name of this machine in queue names (<phase>@<host>) and history.",
    )
    temp_dirs: list[Path] = Field(
        default_factory=list,
        description="Scratch directories for sectors' temp files (empty: <data_dir>/temp).",
    )
    sealed_dirs: list[Path] = Field(
        default_factory=list,
        description="Long-term directories for sealed files (empty: <data_dir>/sealed).",
    )
    backend: Literal["sim", "external"] = Field(
        default="sim", description="What computes the phases: simulated, or a processor."
    )
    processor: list[str] = Field(
        default_factory=list,
        description="argv of the external processor (JSON request on stdin, result on stdout).",
    )
    processor_env: list[str] = Field(
        default_factory=list,
        description="Names of variables of our environment passed on to the external "
        "processor (e.g. FIL_PROOFS_PARAMETER_CACHE, RUST_LOG), beside PATH, HOME, LANG, "
        "LC_ALL, TMPDIR, USER and the slot's env; nothing else passes (SEALPOOL_REDIS_URL "
        "and the chain token never do unless named here).",
    )
    processor_timeout_s: dict[str, float] = Field(
        default_factory=dict,
        description="Timeout of the external processor per phase (AddPiece, PreCommit1, …); "
        "phases not named get 24 h.",
    )
    time_scale: float = Field(
        default=1.0, gt=0, description="Farm time runs this many times faster than wall time."
    )
    phase_seconds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PHASE_SECONDS),
        description="Typical duration of each phase in farm seconds (32 GiB sector); the sim "
        "backend takes this long (divided by time_scale), the ticket check plans with it.",
    )
    sim_spread: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Sim backend: each phase takes its time times a factor drawn uniformly "
        "from 1 ± this (0.3: ±30 %), the same for a sector's phase on every host.",
    )
    sim_seed: int = Field(default=0, description="Sim backend: seed of the sim_spread draws.")
    sim_host_factor: dict[str, float] = Field(
        default_factory=dict,
        description="Sim backend: phase times on these hosts are multiplied by the factor "
        '(`{"pc1-b": 1.5}`: a slower machine).',
    )
    sector_size: Literal["2KiB", "8MiB", "512MiB", "32GiB", "64GiB"] = Field(
        default="32GiB",
        description="Size of the sectors sealed; sizes the scratch each one reserves.",
    )
    chain: Literal["sim", "rpc"] = Field(default="sim", description="Where epochs come from.")
    chain_rpc_url: str | None = Field(
        default=None,
        repr=False,
        description="Filecoin JSON-RPC endpoint (http://host:1234/rpc/v1).",
    )
    chain_rpc_token: str | None = Field(
        default=None, repr=False, description="JWT of the node's API."
    )
    sim_start_epoch: int = Field(default=100_000, ge=0, description="Sim chain's first epoch.")
    ticket_confidence: int = Field(
        default=900, ge=0, description="The ticket is taken this many epochs below the head."
    )
    max_ticket_age: int = Field(
        default=3780, gt=0, description="MaxPreCommitRandomnessLookback in epochs."
    )
    precommit_challenge_delay: int = Field(
        default=150, ge=0, description="Epochs from precommit landing to the seed epoch."
    )
    seed_confidence: int = Field(
        default=6, ge=0, description="Epochs to wait past the seed epoch before using it."
    )
    expired_ticket: Literal["reticket", "abort"] = Field(
        default="reticket",
        description="When a sector's ticket can't last through PC2 and precommit: take a "
        "fresh ticket and redo PC1, or abort the sector.",
    )
    max_precommit_batch: int = Field(
        default=256, ge=1, le=600, description="Most sectors in one PreCommitSectorBatch2."
    )
    precommit_batch_wait_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Farm seconds a precommit batch waits for more sectors after its first.",
    )
    precommit_batch_slack_s: float = Field(
        default=3 * 3600.0,
        ge=0,
        description="A precommit batch is sent this many farm seconds before its earliest "
        "ticket expiry at the latest.",
    )
    min_commit_batch: int = Field(
        default=4,
        ge=4,
        le=819,
        description="Prove-commits of this many sectors or more carry one aggregate proof "
        "(SnarkPackV2); fewer, their own proofs.",
    )
    max_commit_batch: int = Field(
        default=819, ge=1, le=819, description="Most sectors in one aggregated prove-commit."
    )
    aggregate_proofs: bool = Field(
        default=True,
        description="Aggregate the proofs of a prove-commit batch of min_commit_batch or more "
        "sectors with the backend (the processor's Aggregate request); off: each sector's own "
        "proof, at most 30 a message.",
    )
    commit_batch_wait_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Farm seconds a prove-commit batch waits for more sectors after its first.",
    )
    commit_batch_slack_s: float = Field(
        default=3600.0,
        ge=0,
        description="A prove-commit batch is sent this many farm seconds before its earliest "
        "prove-commit deadline at the latest.",
    )
    max_message_fee: int = Field(
        default=0,
        ge=0,
        description="Most attoFIL of gas one batch message may burn (MaxFee; 0: the node's "
        "default, 0.07 FIL).",
    )
    message_confidence: int = Field(
        default=5,
        ge=0,
        le=900,
        description="Epochs a message's receipt must be buried under before it counts.",
    )
    cc_lifetime_days: int = Field(
        default=540,
        ge=180,
        le=1278,
        description="Lifetime of a CC sector (its Expiration), within the actor's bounds.",
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Tries of a phase before the sector is Failed."
    )
    retry_backoff_s: float = Field(
        default=60.0, ge=0, description="First retry delay in farm seconds; doubles each try."
    )

    lookahead: int = Field(
        default=2,
        ge=0,
        description="Sectors kept queued beyond the free PC1 slots; an arriving deal starts "
        "at once unless this many deal sectors wait beyond them.",
    )
    cc_fill: bool = Field(
        default=False, description="Create CC sectors when no deals wait and PC1 slots idle."
    )
    create_interval_s: float = Field(
        default=15.0, ge=0, description="Farm seconds between two sector starts (staggering)."
    )
    tick_s: float = Field(default=10.0, gt=0, description="Wall seconds between supervisor ticks.")
    leader_lease_s: float = Field(
        default=30.0, gt=0, description="Wall seconds a supervisor leads without renewing."
    )
    risk_margin_epochs: int = Field(
        default=120,
        ge=0,
        description="A deadline closer than the remaining work plus this "
        "many epochs puts the sector at the top of its queue.",
    )
    lost_message_s: float = Field(
        default=60.0,
        gt=0,
        description="Wall seconds after a phase message was due (sent, not claimed) before "
        "the supervisor looks for it in the broker and, if it is nowhere, sends a new one.",
    )
    outbox_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="Wall seconds a message may wait in the outbox (its sender crashed, or "
        "the broker was away) before the supervisor sends it.",
    )
    host_lost_grace_s: float = Field(
        default=600.0,
        gt=0,
        description="Wall seconds every phase process of a host must be silent before the "
        "host counts as lost and its sectors' temp data as gone (curio waits 10 min).",
    )
    host_binding: bool = Field(
        default=True,
        description="Send phases that touch temp files to the sector's host and refuse them "
        "elsewhere. Turned off only by benchmarks/farm_bench.py, to measure what it saves.",
    )
    profile: Path | None = Field(
        default=None,
        description="Worker profile (TOML) of this machine; its host, storage and slots, and "
        "the backend, processor and sector_size it names, override the settings above. Set by "
        "`sealpool worker --profile`.",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, description="Seconds between slot heartbeats; 3 missed = lost."
    )
    log_each_task: bool = Field(
        default=False,
        description="Keep Celery's two INFO lines per task ('received', 'succeeded') in worker "
        "logs; off, as the sector history records every phase already.",
    )
    worker_phase: str | None = Field(
        default=None,
        description="The one phase a Celery process of `sealpool worker` runs (set by it).",
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url and sentinel.is_sentinel(url):
            sentinel.parse(url)
        elif url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
        return url or None

    @field_validator("miners")
    @classmethod
    def _distinct_miners(cls, miners: list[MinerConfig]) -> list[MinerConfig]:
        ids = [miner.id for miner in miners]
        if len(set(ids)) != len(ids):
            raise ValueError(f"miner ids must be distinct, got {ids}")
        for miner in miners:
            if miner.last_number is not None and miner.last_number < miner.first_number:
                raise ValueError(f"{miner.id}: last_number is below first_number")
        return miners

    @field_validator("processor_env")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names

    @property
    def scratch_dirs(self) -> list[Path]:
        """Temp directories in use: the configured ones or one under the data directory."""
        return self.temp_dirs or [self.data_dir / "temp"]

    @property
    def store_dirs(self) -> list[Path]:
        """Sealed-file directories in use: the configured ones or one under the data dir."""
        return self.sealed_dirs or [self.data_dir / "sealed"]

    @property
    def wait_replicas(self) -> int:
        """Replicas a sector's writes wait for: ``redis_wait_replicas`` if set."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return int(bool(self.redis_url) and sentinel.is_sentinel(self.redis_url))

    def wall_seconds(self, farm_seconds: float) -> float:
        """Wall-clock seconds that ``farm_seconds`` of farm time take at this time scale."""
        return farm_seconds / self.time_scale

    @property
    def wall_phase_seconds(self) -> dict[str, float]:
        """``phase_seconds`` in wall seconds, comparable with measured phase times."""
        return {phase: self.wall_seconds(s) for phase, s in self.phase_seconds.items()}

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
        loc = [str(part) for part in error["loc"]]
        got = f" (got {shown_setting(loc[0], error.get('input'))})" if loc else ""
        if loc and loc[0] in given:  # a command-line option: name the option alone
            raise ConfigError(f"--{loc[0].replace('_', '-')}: {error['msg']}{got}") from None
        raise ConfigError(f"{source}: {'.'.join(loc) or 'settings'}: {error['msg']}{got}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    finally:
        _config_file.reset(reset)


def _env_config_file() -> Path | None:
    name = os.environ.get(CONFIG_ENV)
    return Path(name) if name else None


def setting_sources(config_file: Path | None = None, **overrides: object) -> dict[str, str]:
    """Where :func:`load_settings`, given the same arguments, takes each setting from:
    ``option`` (an override), ``env`` (``SEALPOOL_*``), ``config file`` or ``default``."""
    config_file = config_file or _env_config_file()
    from_env = EnvSettingsSource(Settings)()
    from_file = TomlConfigSettingsSource(Settings, toml_file=config_file)() if config_file else {}
    sources = {}
    for name in Settings.model_fields:
        if overrides.get(name) is not None:
            sources[name] = "option"
        elif name in from_env:
            sources[name] = "env"
        elif name in from_file:
            sources[name] = "config file"
        else:
            sources[name] = "default"
    return sources


# Defaults that depend on the machine, shown in words.
_SHOWN_DEFAULTS = {
    "data_dir": "`~/.local/share/sealpool`",
    "host": "the hostname",
    "phase_seconds": "typical 32 GiB times",
}


def settings_markdown() -> str:
    """The settings table of docs/configuration.md: each field, its variable, default and
    description (``python -m sealpool.config`` prints it)."""
    rows = ["| setting (env `SEALPOOL_…`) | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _SHOWN_DEFAULTS.get(name) or _shown(field.get_default(call_default_factory=True))
        text = (field.description or "").replace("|", "\\|").replace("<", "\\<")
        rows.append(f"| `{name}` (`SEALPOOL_{name.upper()}`) | {default} | {text} |")
    return "\n".join(rows)


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    return f"`{json.dumps(value) if isinstance(value, (bool, list, dict)) else value}`"


if __name__ == "__main__":
    print(settings_markdown())
