"""A lean path for the two Redis calls every relayed line makes: the publisher's transaction
and the reader's ``XREAD`` (issue 28).

redis-py's command machinery (argument encoding, the pipeline object, retries, response
callbacks) costs more CPU than the round trip it wraps: measured on this machine, a MULTI of
XADD + RPUSH + LTRIM + EXEC takes 135 us of the calling thread's CPU through
``pipeline().execute()`` and 62 us as one pre-packed write and its replies read back on the
same kind of connection; an ``XREAD`` 98 us against 54 us. At a paced load every batch is a
line or two, so that difference was a third of a node's CPU per relayed line.

So a :class:`Lane` keeps redis-py for everything that is hard (the connection itself: TCP or
a Unix socket, TLS, AUTH with a password or an ACL user, the protocol handshake), takes one
connection of its own from the client's pool settings, and then writes commands itself
(:func:`pack`: RESP is an array of bulk strings) and reads the replies with hiredis's parser
straight from that connection's socket: redis-py's reply path is three Python layers for each
reply, 28 against 21 us of CPU per ``XREAD`` here (issue 28). One thread owns each
lane (the publisher its own, the reader its own), so a connection is never shared. A failure
of any kind drops the connection (a half-read reply would leave the next one out of step)
and raises; the caller's retry opens a new one.
"""

from __future__ import annotations

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: The most one recv() takes: an XREAD reply of many batches arrives in few calls.
RECV_BYTES = 256 * 1024


def bulk(arg: bytes) -> bytes:
    """One argument as a RESP bulk string (a command prefix can be packed once, ahead)."""
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def pack(*args: bytes) -> bytes:
    """One command as RESP: ``*N``, then each argument as a bulk string."""
    return head(len(args), *args)


def head(count: int, *args: bytes) -> bytes:
    """The start of a command of ``count`` arguments, its first ``args`` packed: a hot
    command is packed once up to its values, which each call adds with :func:`bulk`."""
    return b"*%d\r\n" % count + b"".join([bulk(arg) for arg in args])


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
        self._sock = None
        self._replies = None  # hiredis.Reader: this connection's replies, parsed
        self._buffer = bytearray(RECV_BYTES)

    def call(self, packed: bytes, replies: int = 1) -> list:
        """Send ``packed`` and read ``replies`` replies, in order (an error reply at the top
        level raises redis-py's ResponseError; one inside ``EXEC``'s array is returned in
        it, as a pipeline with ``raise_on_error=False`` returns it)."""
        self.send(packed)
        return self.read(replies)

    def send(self, packed: bytes) -> None:
        """Send ``packed`` without waiting for its replies (:meth:`read` them later)."""
        try:
            if self._sock is None:
                self._open()
            self._sock.sendall(packed)
        except BaseException:
            self.close()
            raise

    def read(self, replies: int) -> list:
        """The next ``replies`` replies, in order."""
        out = []
        try:
            parsed, sock, buffer = self._replies, self._sock, self._buffer
            while len(out) < replies:
                reply = parsed.gets()
                if reply is False:  # (an incomplete reply; a nil one is None)
                    size = sock.recv_into(buffer)
                    if not size:
                        raise RedisConnectionError("Redis closed the connection")
                    parsed.feed(buffer, 0, size)
                elif reply.__class__ is ResponseError:
                    raise reply
                else:
                    out.append(reply)
        except BaseException:
            self.close()
            raise
        return out

    def _open(self) -> None:
        """redis-py connects (TCP or Unix, TLS, AUTH, SELECT, HELLO); the socket is ours."""
        conn = self._pool.make_connection()
        self._conn = conn
        conn.connect()
        self._sock = conn._sock
        self._replies = hiredis.Reader(replyError=ResponseError)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._sock = self._conn, None, None
            conn.disconnect()
