"""One connected chat client: the record that the hub, the session and the admin side share.

Field ownership (who writes; everyone may read a plain attribute, which is atomic in CPython):

- ``nick``, ``room`` and ``rooms``: the client's own session thread, always while holding the
  hub lock, so code holding the hub lock sees them consistent with the hub's maps. ``rooms``
  (a tuple of Room, replaced whole) is every room the client is a member of; ``room`` is the
  one its plain chat lines go to (the line protocol's current room, its only one). One
  exception, also under the hub lock: in cluster mode the bus may give the client a guest
  nick when its nick was taken elsewhere while this node was cut off (Hub.revoke_nick); a
  line the session is posting at that very moment still carries the old nick.
- ``muted``: admin threads (a bool flag the session reads before delivering a message).
- ``last_active``, ``bytes_in``, ``lines_in``: the session thread only (counters for
  ``idle_timeout`` and the admin ``list``); ``room_messages``, ``private_messages``: the
  session thread too (Hub.say, /msg), for the metrics (metrics.py reads them at a scrape).
- ``account``: the account the client is logged in to, or None (a guest); written by its
  session thread under the hub lock, carried by an upgrade and in the cluster's member records.
- ``seen_from`` (hub lock): the index (history.Tail) of the first history line of its current
  room it was replayed or read live (Room.attach), which a login's catch-up stops before
  (§12); ``positions`` (hub lock, once): at its departure, (room, where it stood in the
  room's history: position.Position) for each room it was in: what its account remembers
  (identity.py).
- ``away`` (``/away``'s text or None) and ``ignores`` (the nicks it ignores, as typed; the
  folded set the deliverers read is ``outbox.ignoring``): its session thread (presence.py).
- ``username``, ``realname``: IRC's USER (chatd/irc/), written once by its session thread
  before it registers; "" for a line client.
- ``outbox``: created here, then owned by the flusher thread (see flusher.py); it carries the
  client's protocol (core/protocol.py), which renders every event the client is told.
- the rest is set once by the accept thread before the session starts.
"""

from __future__ import annotations

import socket
import time

from chatd.core.outbox import Outbox


class Client:
    __slots__ = (
        "id",
        "sock",
        "peer",
        "ip",
        "nick",
        "room",
        "rooms",
        "account",
        "connected_at",
        "last_active",
        "bytes_in",
        "lines_in",
        "room_messages",
        "private_messages",
        "muted",
        "outbox",
        "seen_from",
        "positions",
        "away",
        "ignores",
        "username",
        "realname",
        "user_modes",
    )

    def __init__(self, client_id: int, sock: socket.socket, addr: tuple, protocol) -> None:
        self.id = client_id
        self.sock = sock
        self.ip = addr[0]
        self.peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        self.nick = ""
        self.room = None
        self.rooms: dict = {}
        self.account: str | None = None
        self.connected_at = time.time()
        self.last_active = time.monotonic()
        self.bytes_in = 0
        self.lines_in = 0
        self.room_messages = 0  # lines and /me actions said to its room
        self.private_messages = 0  # /msg sent
        self.muted = False
        self.outbox = Outbox(sock, protocol)
        self.seen_from = 0
        self.positions: list | None = None
        self.away: str | None = None
        self.ignores: tuple[str, ...] = ()
        #: What IRC's USER said (the user name and the real name), for WHO, WHOIS and
        #: WHOWAS; "" for a line client (its nick stands for both). Set once, by its session
        #: thread, before it is registered.
        self.username = ""
        self.realname = ""
        #: IRC's user modes (``i`` invisible, ``w`` wallops, ``o`` operator): replaced whole
        #: by its session thread, read by others (WHO, WHOIS, WALLOPS).
        self.user_modes: frozenset = frozenset()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Client {self.id} {self.nick or '?'} {self.peer}>"
