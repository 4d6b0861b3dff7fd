"""Bulk reads of many records: pipelined on one connection, parsed by hiredis, no models.

A whole-state listing reads tens of thousands of hashes. Going through redis-py's pipeline
costs more per command (packing, callbacks) than the server spends on it, so the commands
are packed here as bytes and their replies read straight off the connection, a chunk at a
time: the caller handles one chunk while nothing else is held.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis

_HGETALL = b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n"


def read_hashes(
    client: redis.Redis, keys: Sequence[str], chunk: int
) -> Iterator[list[dict[str, str]]]:
    """The hash at each of ``keys``, in order, ``chunk`` at a time (an empty dict for a key
    that is gone). The client must decode responses."""
    connection = client.connection_pool.get_connection()
    clean = False
    try:
        for start in range(0, len(keys), chunk):
            batch = [key.encode() for key in keys[start : start + chunk]]
            connection.send_packed_command([b"".join(_HGETALL % (len(k), k) for k in batch)])
            yield [_mapping(connection.read_response()) for _ in batch]
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
