"""Keeping secrets out of messages: URLs are shown without their passwords, secret settings
not at all.

Every error line or log line that may carry a URL (the pool's Redis, the chain node) goes
through :func:`redact_url`; every setting shown back to the operator through
:func:`shown_setting`.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

HIDDEN = "***"
SECRET_WORDS = ("password", "token", "secret")


def is_secret_name(name: str) -> bool:
    """Whether a setting or query parameter of this name holds a secret."""
    return any(word in name.lower() for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and its secret query parameters (such as
    ``password=``) replaced by ``***``; scheme, user, host, port, path (the db) kept. Each
    URL of a kombu-style list (``sentinel://a;sentinel://b``) is redacted."""
    if ";" in url:
        return ";".join(map(redact_url, url.split(";")))
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0]}://{HIDDEN}"
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = f"{user.split(':', 1)[0]}:{HIDDEN}"
    query = "&".join(_redacted_param(param) for param in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}", query=query))


def url_host(url: str) -> str:
    """Only the host (and port) of ``url``, all that an error about a remote call names;
    empty when there is none."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def shown_setting(name: str, value: object) -> str:
    """``value`` of the setting ``name`` as an error line may show it."""
    if is_secret_name(name):
        return HIDDEN
    if isinstance(value, str) and "://" in value:
        return repr(redact_url(value))
    return repr(value)


def _redacted_param(param: str) -> str:
    name, equals, _value = param.partition("=")
    return f"{name}={HIDDEN}" if equals and is_secret_name(unquote(name)) else param
