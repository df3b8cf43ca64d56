"""One IRC connection's input: framing at IRC's limits, registration, then the command table.

The session (core/session.py) drives it as it drives the line protocol's reader: it feeds
what it received, takes lines one flood token at a time and hands each to :meth:`handle`.
Before registration a line goes to :class:`~chatd.irc.registration.Registration`; once NICK
and USER are in (and any CAP negotiation ended) :meth:`IrcReader.register` asks the hub
for the nick and sends the welcome; after that each line goes through commands.py.

Replies are bytes this reader builds (numerics name the client), sent through the hub
(``send_data``) so that they follow every room line posted before them. Runs on the
client's session thread only.
"""

from __future__ import annotations

from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.irc import commands, people, welcome
from chatd.irc.message import MAX_LINE_BYTES, MAX_TAG_BYTES, BadMessage, TooLong, encode, parse
from chatd.irc.registration import Registration
from chatd.irc.render import mask, wire
from chatd.line.framing import LINE_TOO_LONG, LineFramer
from chatd.text import is_valid_name, sanitize

#: The capabilities offered (registration.py): those chatd does what they promise for.
CAPABILITIES = {"multi-prefix": None, "userhost-in-names": None, "server-time": None,
                "echo-message": None, "message-tags": None, "away-notify": None,
                "account-tag": None}
SASL = {"sasl": "PLAIN"}


class IrcReader:
    """What core/protocol.py's ``Reader`` asks, for IRC (docs/protocol.md §14)."""

    __slots__ = ("session", "client", "hub", "settings", "protocol", "framer", "next_line",
                 "registration", "registered", "sasl", "places")

    too_long = LINE_TOO_LONG

    def __init__(self, session, protocol) -> None:
        self.session = session
        self.client = session.client
        self.hub = session.hub
        self.settings = session.settings
        self.protocol = protocol
        self.framer = LineFramer(MAX_TAG_BYTES + MAX_LINE_BYTES)
        self.next_line = self.framer.next_line
        offered = dict(CAPABILITIES)
        if getattr(self.settings, "accounts", None) is not None:
            offered.update(SASL)
        self.registration = Registration(protocol.server, offered)
        self.registered = False
        self.sasl = None  # "PLAIN" while an AUTHENTICATE exchange is under way
        #: folded room -> where its account last stood there (welcome.log_in): the first
        #: JOIN of such a room replays what it missed since (docs/protocol.md §12.3).
        self.places: dict = {}

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.framer.feed(data)

    @property
    def pending_bytes(self) -> int:
        return self.framer.pending_bytes

    def line_too_long(self) -> str:
        return "Input line was too long"

    def partial_timeout(self) -> float | None:
        return None  # an IRC client ends every line

    def take_partial(self) -> bytes | None:
        return None

    def last_partial(self) -> bytes | None:
        return None

    # -- output -------------------------------------------------------------------------------

    @property
    def nick(self) -> str:
        return self.client.nick or self.registration.nick or "*"

    def send(self, *lines: str) -> None:
        """Lines (without CR LF) for this client, after the room lines posted before them."""
        data = b"".join([wire(line) for line in lines if line])
        if data:
            self.hub.send_data(self.client, data, len(lines))

    def send_messages(self, messages: list) -> None:
        """Replies built as message.Message (registration.py's)."""
        data = b"".join([encode(message) for message in messages])
        if data:
            self.hub.send_data(self.client, data, len(messages))

    def numeric(self, number: str, *params: str) -> str:
        """``:server NUMBER nick params... :last`` (the last parameter always trailing)."""
        *middle, last = params
        return " ".join([f":{self.protocol.server}", number, self.nick, *middle, f":{last}"])

    def reply(self, number: str, *params: str) -> None:
        self.send(self.numeric(number, *params))

    @property
    def source(self) -> str:
        """This client as the source of a line it caused (``nick!nick@chatd``)."""
        return mask(self.client.nick)

    # -- one line -----------------------------------------------------------------------------

    def handle(self, raw: bytes) -> None:
        try:
            message = parse(raw)
        except TooLong:
            self.reply("417", "Input line was too long")
            return
        except BadMessage:
            return  # an empty or garbled line: nothing to answer (RFC 2812 §2.3.1)
        self.client.lines_in += 1
        if self.registered:
            commands.dispatch(self, message)
        elif message.command == "AUTHENTICATE":
            commands.authenticate(self, message.params)
        else:
            self._registering(message)

    def _registering(self, message) -> None:
        registration = self.registration
        self.send_messages(registration.handle(message))
        if registration.quit is not None:
            self.quit(registration.quit)
        elif registration.ready:
            self.register()

    def register(self) -> None:
        """NICK and USER are in: log in (PASS), take the nick, and welcome the client; a nick
        in use is answered 433 and the client may send another NICK."""
        registration = self.registration
        nick = registration.nick
        self._identify()  # before a login or a claim writes its member record (cluster)
        if self.client.account is None and not welcome.log_in_first(self, nick):
            return
        if not self.client.nick:
            try:
                problem = welcome.claim(self, nick)
            except ClusterUnavailable:
                self.send(f"ERROR :{self.protocol.cluster_unavailable}")
                self.session.quit(Close("cluster"))
                return
            if problem is not None:
                registration.nick = None
                self.reply("433", nick, problem)
                return
        self.registered = True
        self.use_caps()
        self.protocol.nick = self.client.nick
        welcome.greet(self)
        self.session.log.info("client_registered", nick=self.client.nick,
                              account=self.client.account, protocol="irc")

    def use_caps(self) -> None:
        """The capabilities enabled take effect: what this client is told, and how its
        rooms render their lines for it (``server-time``)."""
        caps = frozenset(self.registration.enabled)
        self.protocol.caps = caps
        self.hub.respeak(self.client, self.protocol.rooms_for(caps))

    def _identify(self) -> None:
        """What USER said, on the client (WHO, WHOIS, WHOWAS), safe to show."""
        registration = self.registration
        self.client.username = sanitize(registration.user or "").replace(" ", "")[:24]
        self.client.realname = sanitize(registration.realname or "")[:100]

    def quit(self, reason: str) -> None:
        self.send(f"ERROR :Closing Link: {self.client.ip} (Quit: {reason})")
        self.session.quit(Close("quit", reason))

    # -- an upgrade (upgrade.py) --------------------------------------------------------------

    def state(self) -> dict:
        unread, discarding = self.framer.state()
        registration = self.registration
        return {"unread": unread, "discarding": discarding, "seen_lf": True, "telnet": None,
                "irc": {"registered": self.registered, "caps": sorted(registration.enabled),
                        "nick": registration.nick, "user": registration.user,
                        "realname": registration.realname,
                        "negotiating": registration.negotiating,
                        "modes": sorted(self.client.user_modes)}}

    def restore(self, state: dict) -> None:
        """Go on from :meth:`state` (an upgrade), or from none (the fd store's restart: a
        client with a nick is registered, with no capabilities). State is input: checked."""
        self.framer.restore(state["unread"], state["discarding"], True)
        irc = state.get("irc")
        irc = irc if isinstance(irc, dict) else {}
        registration = self.registration
        registration.enabled = set(_listed(irc.get("caps"), registration.offered))
        nick, user = irc.get("nick"), irc.get("user")
        registration.nick = nick if isinstance(nick, str) and is_valid_name(nick) else None
        registration.user = user[:24] if isinstance(user, str) and user else None
        realname = irc.get("realname")
        registration.realname = realname[:100] if isinstance(realname, str) else ""
        registration.negotiating = bool(irc.get("negotiating"))
        self.client.user_modes = frozenset(_listed(irc.get("modes"), people.USER_MODES + "o"))
        self.registered = bool(irc.get("registered", self.client.nick))
        self.protocol.nick = self.client.nick
        self.use_caps()
        if self.registered:
            self._identify()


def _listed(value, allowed) -> list[str]:
    """The strings of a state file's list (input) that are in ``allowed``; [] if it is not
    a list."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str) and item in allowed]
