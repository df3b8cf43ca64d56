"""A lean path for the two Redis calls every relayed line makes: the publisher's transaction
and the reader's ``XREAD`` (issue 28).

redis-py's command machinery (argument encoding, the pipeline object, retries, response
callbacks) costs more CPU than the round trip it wraps: measured on this machine, a MULTI of
XADD + RPUSH + LTRIM + EXEC takes 135 us of the calling thread's CPU through
``pipeline().execute()`` and 62 us as one pre-packed write and its replies read back on the
same kind of connection; an ``XREAD`` 98 us against 54 us. At a paced load every batch is a
line or two, so that difference was a third of a node's CPU per relayed line.

So a :class:`Lane` keeps redis-py for everything that is hard (the connection itself: TCP or
a Unix socket, TLS, AUTH with a password or an ACL user, the hiredis reply parser), takes one
connection of its own from the client's pool settings, and only writes the commands itself
(:func:`pack`: RESP is an array of bulk strings). One thread owns each lane (the publisher
its own, the reader its own), so a connection is never shared. A failure of any kind drops
the connection (a half-read reply would leave the next one out of step) and raises; the
caller's retry opens a new one.
"""

from __future__ import annotations


def pack(*args: bytes) -> bytes:
    """One command as RESP: ``*N``, then each argument as a bulk string."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def transaction(commands: list[bytes]) -> tuple[bytes, int]:
    """``MULTI``, the packed ``commands``, ``EXEC``: the bytes and how many replies come back
    (``+OK``, a ``+QUEUED`` per command, then ``EXEC``'s array of results)."""
    return b"".join([MULTI, *commands, EXEC]), len(commands) + 2


MULTI = pack(b"MULTI")
EXEC = pack(b"EXEC")


class Lane:
    """One connection to Redis, used by one thread, for pre-packed commands."""

    def __init__(self, client) -> None:
        self._pool = client.connection_pool
        self._conn = None

    def call(self, packed: bytes, replies: int = 1) -> list:
        """Send ``packed`` and read ``replies`` replies, in order (an error reply at the top
        level raises redis-py's ResponseError; one inside ``EXEC``'s array is returned in
        it, as a pipeline with ``raise_on_error=False`` returns it)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._pool.make_connection()
        try:
            conn.send_packed_command([packed], check_health=False)
            return [conn.read_response(disable_decoding=True) for _ in range(replies)]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.disconnect()
