"""The Celery app: ``celery -A sealpool.app worker`` runs sealpool's phase tasks.

Why these settings (see docs/architecture.md):

* JSON only, in and out: a message can never carry pickled code.
* Phases run for hours, and the Redis broker redelivers a message that stays unacknowledged
  past ``visibility_timeout`` — so tasks are acknowledged on receipt (``acks_late`` off) and
  the store's heartbeat-renewed lease is what recovers a phase whose worker died.
* One message per worker process at a time (prefetch 1, prefetch disabled on Redis), so a
  worker never sits on messages that an idle worker could start, and priorities hold.
* Priorities: ten Redis priority steps, served lowest number first across all the queues a
  worker consumes.

The broker URL comes from sealpool's settings when the app is first configured, not at
import: ``redis_url``, else the embedded server running in ``data_dir`` (a Celery process
never starts one); a ``sentinel://`` URL gets kombu's ``master_name`` transport option.
``celery -A sealpool.app beat`` sends the supervisor tick (``sealpool.supervise``) to
``<pool>.supervisor`` every ``tick_s``; run a worker with ``-Q <pool>.supervisor`` to
execute it (or run ``sealpool supervisor`` instead). Several beats or supervisors are safe:
one leads.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from sealpool import routing
from sealpool.config import load_settings
from sealpool.connection import redis_url
from sealpool.sentinel import is_sentinel

PRIORITY_STEPS = range(10)
PRIORITY_SEP = ":"
TRANSPORT_OPTIONS = {
    "priority_steps": list(PRIORITY_STEPS),
    "sep": PRIORITY_SEP,
    "queue_order_strategy": "priority",
    "visibility_timeout": 3600,
}


def _pool_settings() -> dict[str, Any]:
    settings = load_settings()
    pool = settings.key_prefix
    url = redis_url(settings)
    sentinel_options = {"master_name": settings.redis_sentinel_master} if is_sentinel(url) else {}
    return {
        "broker_url": url,
        "broker_transport_options": {**TRANSPORT_OPTIONS, **sentinel_options},
        "beat_schedule": {
            "supervise": {
                "task": "sealpool.supervise",
                "schedule": settings.tick_s,
                "kwargs": {"pool": pool},
                "options": {"queue": f"{pool}.supervisor", "expires": settings.tick_s},
            }
        },
    }


app = Celery(
    "sealpool",
    include=[
        "sealpool.sealing_tasks.tasks",
        "sealpool.supervisor.tasks",
        "sealpool.worker_control",
    ],
)
app.add_defaults(_pool_settings)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_ignore_result=True,
    task_acks_late=False,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    worker_pool="sealpool.worker_pool:ThreadPool",
    worker_disable_prefetch=True,
    task_default_queue="sealpool.default",
    task_create_missing_queues=True,
    task_routes=(routing.route_task,),
    broker_connection_retry_on_startup=True,
)
