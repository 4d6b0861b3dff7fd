"""Sealing phases as Celery tasks: dispatch, the phase runner and each phase's step."""

from sealpool.sealing_tasks.dispatch import dispatch, start

__all__ = ["dispatch", "start"]
