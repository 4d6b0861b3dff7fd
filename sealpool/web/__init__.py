"""``sealpool web``: a read-only dashboard of the pool, server-rendered and refreshed by htmx.

Every figure on it comes from :mod:`sealpool.views`, the functions the CLI's ``--json``
prints, so the page and ``sealpool pool stats --json`` / ``sealpool workers --json`` agree.
"""

from sealpool.web.app import create_app, is_loopback

__all__ = ["create_app", "is_loopback"]
