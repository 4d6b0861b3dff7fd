"""Exceptions sealpool raises for conditions an operator can act on.

Each carries one line that names what is wrong; the CLI prints it as is.
"""


class SealpoolError(Exception):
    """Base class: a failure explained in one line."""


class ConfigError(SealpoolError):
    """A setting, a file or a value given by the operator is invalid."""


class ServerError(SealpoolError):
    """The Redis server could not be started, stopped or reached."""


class RedisUnavailable(ServerError):
    """The configured Redis server does not answer now (down, restarting, unreachable):
    long-running commands wait for it rather than exit."""


class SectorNotFound(SealpoolError):
    """No sector has the given id."""


class InvalidSectorId(SealpoolError):
    """A sector id is not of the form ``<miner>-<number>``."""


class IllegalTransition(SealpoolError):
    """The sector's state machine does not allow the requested move."""


class ChangedMeanwhile(SealpoolError):
    """The sector changed after the caller read it; the conditional change was not made."""


class StaleToken(SealpoolError):
    """A fencing token no longer owns the sector's lease."""


class ChainError(SealpoolError):
    """The chain node failed or refused a call."""


class PhaseError(SealpoolError):
    """A phase could not be computed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class NotLeader(SealpoolError):
    """A supervisor acted after its leadership passed to another: nothing was changed."""


class DealTaken(SealpoolError):
    """A deal asked for in a new sector is no longer waiting (another sector has it)."""


class NumbersExhausted(SealpoolError):
    """A miner's reserved range of sector numbers has none left to give."""


class SlotsInUse(SealpoolError):
    """Another live process owns the slots a worker process was about to lend."""
