"""What a benchmark client says and expects, per server: registration, chat lines, and how a
delivered line looks.

Every chat message carries a fixed 64-byte payload (:func:`payload`) that names its sender,
its sequence number and its send time, plus a checksum, so that a receiver can check each line
it gets against the exact bytes the server should have relayed. An adapter knows:

- ``concurrency``: clients registering at once, ``backlog``: of which the server has not yet
  answered (kept under the server's listen backlog, or refused SYNs cost a 1 s retry);
- ``hello(conn)``: bytes to send once connected; ``setup_line(conn, line)``: handle one line
  received before the client is ready, returning ``(reply, ready)``; raises
  :class:`Refused` when the server turns the client away;
- ``frame(payload)``: the line a client sends; ``prefix(conn)``: what the server puts before the
  payload when it relays that client's line to others; ``eol``: what is left at the end of a
  received line once it is split on LF (``b"\\r"`` for CRLF servers);
- ``silent``: the server says nothing to a new client (connected = registered);
  ``join_marker``: the bytes that announce one more member to a client that is already in the
  room, or None when the clients do not share a room (see ``settle`` in crowd.py);
- ``broadcast(marker)``: what client 0 sends so that every client receives ``marker``
  (``hears_own``: client 0 gets it too); None for a crowd that nothing the server offers
  reaches at once, and then ``echo(marker)``: what each client sends to have ``marker`` sent
  back to it alone (chatd-irc's roomless crowd, see :class:`ChatdIrcCrowd`);
- ``pings``: the server may PING idle clients, so the load generator answers PING with PONG
  while they idle (an IRC server drops a client that does not answer);
- ``control(line)``: a server notice, not a chat line; ``departure(line)``: ``(nick, reason)``
  of a leave notice, else None.

Pure functions and small classes; used by the load generator's thread.
"""

from __future__ import annotations

import re
import zlib

PAYLOAD_BYTES = 64
_FILL = b"abcdefghijklmnopqrstuv"
_HEAD = re.compile(rb"@@\d{3}\.\d{7}\.")


def payload(sender: int, seq: int, ts_ns: int) -> bytes:
    """The 64-byte message body: ``@@SSS.QQQQQQQ.<19-digit ns timestamp>.<crc32><fill>``."""
    head = b"@@%03d.%07d.%019d." % (sender, seq, ts_ns)
    return head + b"%08x" % zlib.crc32(head) + _FILL


def parse_payload(body: bytes) -> tuple[int, int, int] | None:
    """``(sender, seq, ts_ns)`` of a 64-byte body, or None if it is not one of ours."""
    if len(body) != PAYLOAD_BYTES or body[:2] != b"@@":
        return None
    try:
        return int(body[2:5]), int(body[6:13]), int(body[14:33])
    except ValueError:
        return None


def looks_like_payload(line: bytes) -> bool:
    return _HEAD.search(line) is not None


class Refused(Exception):
    """The server turned a client away (server full, banned, nick in use...)."""


class Chatd:
    name = "chatd"
    eol = b"\r"
    silent = False
    pings = False
    join_marker = b" joined lobby\r\n"
    hears_own = False
    concurrency = 256  # clients registering at once
    backlog = 256  # of which not yet answered (chatd greets on accept; it listens with 1024)
    _LEFT = re.compile(rb"\*\*\* (\S+) left \S* ?\((.*)\)\r?$")

    def hello(self, conn) -> bytes:
        return b""

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        if line.startswith(b"*** you are "):
            conn.nick = line[12:].rstrip(b"\r")
            return b"", True
        if line.startswith(b"*** error: "):
            raise Refused(line.decode(errors="replace"))
        return b"", False

    def frame(self, body: bytes) -> bytes:
        return body + b"\n"

    def broadcast(self, marker: bytes) -> bytes:
        return self.frame(marker)

    def prefix(self, conn) -> bytes:
        return b"<" + conn.nick + b"> "

    def control(self, line: bytes) -> bool:
        return line.startswith(b"*** ")

    def departure(self, line: bytes):
        match = self._LEFT.match(line)
        return (match.group(1), match.group(2).decode(errors="replace")) if match else None


class Ngircd:
    name = "ngircd"
    eol = b"\r"
    silent = False
    pings = True
    join_marker = b" JOIN :#bench\r\n"
    hears_own = False
    concurrency = 256  # clients registering at once
    backlog = 8  # of which not yet answered: ngircd listens with a backlog of 10
    _QUIT = re.compile(rb":([^!\s]+)!\S+ QUIT :?(.*?)\r?$")

    def hello(self, conn) -> bytes:
        conn.nick = b"b%05d" % conn.idx
        return b"NICK %s\r\nUSER b 0 * :bench\r\n" % conn.nick

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        line = line.rstrip(b"\r")
        if line.startswith(b"PING "):
            return b"PONG " + line[5:] + b"\r\n", False
        if line.startswith(b"ERROR"):
            raise Refused(line.decode(errors="replace"))
        parts = line.split(b" ", 3)
        if len(parts) >= 2 and parts[1] == b"001":
            return b"JOIN #bench\r\n", False
        if len(parts) >= 2 and parts[1] in (b"432", b"433", b"451", b"471", b"405"):
            raise Refused(line.decode(errors="replace"))
        if len(parts) >= 3 and parts[1] == b"JOIN" and parts[0].startswith(b":" + conn.nick + b"!"):
            conn.mask = parts[0]
        if len(parts) >= 2 and parts[1] == b"366":
            return b"", True
        return b"", False

    def frame(self, body: bytes) -> bytes:
        return b"PRIVMSG #bench :" + body + b"\r\n"

    def broadcast(self, marker: bytes) -> bytes:
        return self.frame(marker)

    def prefix(self, conn) -> bytes:
        return conn.mask + b" PRIVMSG #bench :"

    def control(self, line: bytes) -> bool:
        return (line.startswith(b":") and b" PRIVMSG " not in line) or line.startswith(b"PING ")

    def departure(self, line: bytes):
        match = self._QUIT.match(line)
        return (match.group(1), match.group(2).decode(errors="replace")) if match else None


class Naive:
    name = "naive"
    eol = b""
    silent = True
    pings = False
    join_marker = None
    hears_own = False
    concurrency = 256  # clients connecting at once
    backlog = 256  # of which not yet accepted (counted by the server's threads, see crowd.py)

    def hello(self, conn) -> bytes:
        return b""

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        return b"", True  # never called: the naive server says nothing, so connected = ready

    def frame(self, body: bytes) -> bytes:
        return body + b"\n"

    def broadcast(self, marker: bytes) -> bytes:
        return self.frame(marker)

    def prefix(self, conn) -> bytes:
        return b""

    def control(self, line: bytes) -> bool:
        return False

    def departure(self, line: bytes):
        return None


def _code(line: bytes) -> bytes:
    """A server line's numeric or command (its second word), b"" if it has none."""
    parts = line.rstrip(b"\r").split(b" ", 2)
    return parts[1] if len(parts) >= 2 else b""


class NgircdServerWide(Ngircd):
    """ngircd for the connect and admin crowds: clients register but join no channel, and
    client 0, an IRC operator (bench/ngircd.conf), broadcasts with a server-mask NOTICE that
    every user gets, like ``chatctl broadcast``. (With 10,000 clients in one channel, the
    JOIN storm alone takes ngircd a quarter of an hour: it takes 100 epoll events per loop and
    accepts one client per listener event, while every JOIN is written to every member.)"""

    join_marker = None
    hears_own = True

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        code = _code(line)
        if code in (b"376", b"422"):  # end of MOTD: registered
            if conn.idx == 0:
                return b"OPER bench bench\r\n", False
            return b"", True
        if code == b"381":  # you are now an IRC operator
            return b"", True
        if code == b"001" or code == b"491":
            if code == b"491":
                raise Refused(line.decode(errors="replace"))
            return b"", False
        return super().setup_line(conn, line)

    def broadcast(self, marker: bytes) -> bytes:
        return b"NOTICE $bench.irc :" + marker + b"\r\n"


class ChatdIrc(Ngircd):
    """chatd's IRC listener (docs/protocol.md §14), driven by ngircd's clients: NICK and USER,
    ``JOIN #bench`` at 001, ready at the end of NAMES (366), ``PRIVMSG #bench``, PING answered.
    So the same load generator measures chatd's IRC path beside its line protocol and beside
    ngircd. What differs is what chatd writes: a JOIN names the channel as a middle parameter
    (``:nick!nick@chatd JOIN #bench``, ngircd: ``JOIN :#bench``), and it listens with a
    backlog of 1024, as for line clients."""

    name = "chatd-irc"
    join_marker = b" JOIN #bench\r\n"
    backlog = 256  # of which not yet answered (chatd listens with 1024)


class ChatdIrcCrowd(ChatdIrc):
    """chatd-irc for the connect crowd: IRC clients that register (ready at the end of the
    MOTD) and join nothing, like ngircd's crowd, so what is measured is an idle IRC session.
    Each step checks every session with a round trip of its own rather than a broadcast:
    each client sends ``PING :<marker>`` and chatd's PONG carries the marker back, which
    shows every session still served at N (``echo_ms``)."""

    join_marker = None
    broadcast = None

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        code = _code(line)
        if code in (b"376", b"422"):  # end of MOTD: registered
            return b"", True
        if code == b"001":
            return b"", False  # no JOIN
        return super().setup_line(conn, line)

    def echo(self, marker: bytes) -> bytes:
        return b"PING :" + marker + b"\r\n"


PROTOCOLS = {"chatd": Chatd, "ngircd": Ngircd, "naive": Naive,
             "chatd-irc": ChatdIrc,  # chatd with IRC clients on its IRC listener
             # multi-node servers (bench/clusters.py) speak what their nodes speak
             "ngircd2": Ngircd, "ngircd3": Ngircd, "chatd-cluster": Chatd, "chatd-cluster3": Chatd,
             "chatd-cluster-nohistory": Chatd,
             "chatd-nohistory": Chatd,
             "chatd-metrics": Chatd}  # chatd with its Prometheus endpoint on (metrics workload)
#: The connect and admin workloads' clients.
CROWD_PROTOCOLS = {"chatd": Chatd, "ngircd": NgircdServerWide, "naive": Naive,
                   "chatd-irc": ChatdIrcCrowd}
