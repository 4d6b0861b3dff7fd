"""A profile over the settings: what it names replaces the settings of the same names, what
it leaves out does not (a profile without ``backend`` keeps ``SEALPOOL_BACKEND=external``).

Precedence, highest first: the profile (only the fields it names; ``host`` and ``storage``
it always names), command-line options, ``SEALPOOL_*`` variables, the config file, defaults.
"""

from __future__ import annotations

from pathlib import Path

from sealpool.config import Settings
from sealpool.errors import ConfigError
from sealpool.worker_profiles.model import Profile

# The settings a profile can set, in the order `sealpool profile check` shows them.
PROFILE_SETTINGS = ("host", "backend", "processor", "sector_size", "temp_dirs", "sealed_dirs")
# Profile fields with a default: they replace a setting only when the file names them.
_OPTIONAL = ("backend", "processor", "sector_size")


def profile_settings(profile: Profile) -> dict[str, object]:
    """The settings ``profile`` sets: its host and storage, and the optional fields it names."""
    named = {name: getattr(profile, name) for name in _OPTIONAL if name in profile.model_fields_set}
    return {
        "host": profile.host,
        **named,
        "temp_dirs": [entry.path for entry in profile.storage.temp],
        "sealed_dirs": [entry.path for entry in profile.storage.sealed],
    }


def apply_profile(settings: Settings, profile: Profile, source: Path) -> tuple[Settings, Profile]:
    """``settings`` with what ``profile`` (read from ``source``) sets, and ``profile`` with
    the effective backend, processor and sector size; ConfigError for an external backend
    without a processor."""
    timeouts = settings.processor_timeout_s | profile.processor_timeouts()  # per phase
    settings = settings.model_copy(
        update={**profile_settings(profile), "processor_timeout_s": timeouts}
    )
    if settings.backend == "external" and not settings.processor:
        raise ConfigError(
            f"{source}: processor: backend 'external' needs processor = [argv...] "
            "(in the profile, or SEALPOOL_PROCESSOR)"
        )
    effective = profile.model_copy(update={name: getattr(settings, name) for name in _OPTIONAL})
    return settings, effective


def profile_sources(profile: Profile, sources: dict[str, str]) -> dict[str, str]:
    """Where each of :data:`PROFILE_SETTINGS` comes from: ``profile``, or its source in
    ``sources`` (:func:`sealpool.config.setting_sources`)."""
    named = profile_settings(profile)
    return {name: "profile" if name in named else sources[name] for name in PROFILE_SETTINGS}
