"""Bulk reads of many keys: pipelined on one connection, parsed by hiredis, no models.

A whole-state listing reads tens of thousands of keys. Going through redis-py's pipeline
costs more per command (packing, callbacks) than the server spends on it, so the commands
are packed here as bytes and their replies read straight off the connection, a chunk at a
time: the caller handles one chunk while nothing else is held.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.connection import AbstractConnection

_HGETALL = b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n"
_ARGUMENT = b"$%d\r\n%s\r\n"


def read_hashes(
    client: redis.Redis, keys: Sequence[str], chunk: int
) -> Iterator[list[dict[str, str]]]:
    """The hash at each of ``keys``, in order, ``chunk`` at a time (an empty dict for a key
    that is gone). The client must decode responses."""
    with _borrowed(client) as connection:
        for start in range(0, len(keys), chunk):
            batch = [key.encode() for key in keys[start : start + chunk]]
            connection.send_packed_command([b"".join(_HGETALL % (len(k), k) for k in batch)])
            yield [_mapping(connection.read_response()) for _ in batch]


def read_strings(
    client: redis.Redis, keys: Sequence[str], chunk: int
) -> Iterator[list[bytes | None]]:
    """The bytes of the string at each of ``keys``, in order, ``chunk`` at a time (None
    for a key that is absent): one MGET per chunk, its reply not decoded. The next chunk
    is asked for before this one is handed over, so the server reads while the caller
    writes."""
    starts = range(0, len(keys), chunk)
    with _borrowed(client) as connection:
        for sent, start in enumerate(starts):
            if sent == 0:
                connection.send_packed_command([_mget(keys[start : start + chunk])])
            if sent + 1 < len(starts):
                ahead = starts[sent + 1]
                connection.send_packed_command([_mget(keys[ahead : ahead + chunk])])
            yield connection.read_response(disable_decoding=True)


def _mget(keys: Sequence[str]) -> bytes:
    """An MGET of ``keys``, packed as one buffer (one write to the socket)."""
    arguments = b"".join(_ARGUMENT % (len(k), k) for k in (key.encode() for key in keys))
    return b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1) + arguments


@contextmanager
def _borrowed(client: redis.Redis) -> Iterator[AbstractConnection]:
    """A connection of the client's pool, closed rather than reused when the caller stops
    before reading every reply."""
    connection = client.connection_pool.get_connection()
    clean = False
    try:
        yield connection
        clean = True
    finally:
        if not clean:  # replies may be left unread: the connection can't be reused
            connection.disconnect()
        client.connection_pool.release(connection)


def _mapping(reply: dict[str, str] | list[str]) -> dict[str, str]:
    """A HGETALL reply as a dict (RESP3 gives one, RESP2 a flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))
