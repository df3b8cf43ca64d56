"""An IRC connection before it is registered: CAP negotiation, PASS, NICK and USER (pure).

What the clients of issue 27 do, and what this answers:

- irssi 1.4 sends ``CAP LS 302`` and a bogus ``JOIN :`` and waits for either a CAP reply or
  451 before it sends NICK and USER: every command that needs registration gets 451 here.
- weechat 3.8 sends ``CAP LS 302``, NICK and USER at once: registration waits for ``CAP
  END`` (a client that opened the negotiation closes it).
- ii and sic send NICK and USER only: registered as soon as both are in.

The reader (to come) feeds each parsed message to :meth:`Registration.handle`, sends the
replies it returns and, once :attr:`Registration.ready`, asks the hub for the nick (433 if it
is taken, and the client stays here for another NICK). Nicks follow the line protocol's rule
(chatd.text: 432 otherwise), so every IRC nick is one a line client can name.
"""

from __future__ import annotations

from chatd.irc.message import Message
from chatd.text import is_valid_name

#: Replies (RFC 2812 §5 and the IRCv3 capability negotiation).
ERR_NONICKNAMEGIVEN, ERR_ERRONEUSNICKNAME, ERR_NOTREGISTERED = "431", "432", "451"
ERR_NEEDMOREPARAMS, ERR_INVALIDCAPCMD = "461", "410"
#: The longest CAP LS line's capability list before it is continued (``CAP * LS * :...``).
CAP_LS_BYTES = 400


class Registration:
    """One connection's registration; the session thread's alone."""

    def __init__(self, server: str, offered: dict[str, str | None]) -> None:
        self.server = server
        #: The capabilities this listener offers: name -> value (``sasl`` -> ``PLAIN``) or None.
        self.offered = offered
        self.enabled: set[str] = set()
        self.nick: str | None = None
        self.user: str | None = None
        self.realname = ""
        self.password: str | None = None
        self.negotiating = False  # CAP LS or REQ seen, CAP END not yet
        self.cap_version = 0  # 302: values in LS, and cap-notify implied
        self.quit: str | None = None  # QUIT's reason, once the client said it

    @property
    def ready(self) -> bool:
        """NICK and USER are in and no CAP negotiation is open: ask the hub for the nick."""
        return self.nick is not None and self.user is not None and not self.negotiating

    def handle(self, message: Message) -> list[Message]:
        """The replies to one message sent before registration."""
        handler = _HANDLERS.get(message.command)
        if handler is None:
            return [self._reply(ERR_NOTREGISTERED, "You have not registered")]
        return handler(self, message.params)

    def _reply(self, numeric: str, *params: str) -> Message:
        return Message(numeric, (self.nick or "*", *params), self.server)

    def _cap(self, params: tuple) -> list[Message]:
        if not params:
            return [self._reply(ERR_NEEDMOREPARAMS, "CAP", "Not enough parameters")]
        sub = params[0].upper()
        if sub == "LS":
            self.negotiating = True
            if params[1:2] and params[1].isascii() and params[1].isdigit() \
                    and len(params[1]) < 6:
                self.cap_version = max(self.cap_version, int(params[1]))
            return self._cap_ls()
        if sub == "REQ":
            self.negotiating = True
            wanted = (params[1] if len(params) > 1 else "").split()
            names = [w[1:] if w.startswith("-") else w for w in wanted]
            if not wanted or any(n not in self.offered for n in names):
                return [self._cap_line("NAK", " ".join(wanted))]
            for word, name in zip(wanted, names):
                (self.enabled.discard if word.startswith("-") else self.enabled.add)(name)
            return [self._cap_line("ACK", " ".join(wanted))]
        if sub == "END":
            self.negotiating = False
            return []
        if sub == "LIST":
            return [self._cap_line("LIST", " ".join(sorted(self.enabled)))]
        return [self._reply(ERR_INVALIDCAPCMD, params[0][:20], "Invalid CAP command")]

    def _cap_ls(self) -> list[Message]:
        words = [name if value is None or self.cap_version < 302 else f"{name}={value}"
                 for name, value in self.offered.items()]
        lines, current = [], []
        for word in words:  # continued lines (302) carry "*" before the list
            if current and len(" ".join([*current, word])) > CAP_LS_BYTES:
                lines.append(current)
                current = []
            current.append(word)
        lines.append(current)
        if self.cap_version < 302:
            return [self._cap_line("LS", " ".join(w for line in lines for w in line))]
        return [Message("CAP", (self.nick or "*", "LS", *(["*"] if i < len(lines) - 1 else []),
                                " ".join(line)), self.server)
                for i, line in enumerate(lines)]

    def _cap_line(self, sub: str, text: str) -> Message:
        return Message("CAP", (self.nick or "*", sub, text), self.server)

    def _pass(self, params: tuple) -> list[Message]:
        if not params:
            return [self._reply(ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")]
        self.password = params[0]
        return []

    def _nick(self, params: tuple) -> list[Message]:
        if not params or not params[0]:
            return [self._reply(ERR_NONICKNAMEGIVEN, "No nickname given")]
        if not is_valid_name(params[0]):
            return [self._reply(ERR_ERRONEUSNICKNAME, params[0][:30], "Erroneous nickname")]
        self.nick = params[0]
        return []

    def _user(self, params: tuple) -> list[Message]:
        if len(params) < 4 or not params[0] or not params[3]:
            return [self._reply(ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")]
        self.user, self.realname = params[0][:24], params[3][:100]
        return []

    def _ping(self, params: tuple) -> list[Message]:
        if not params:
            return [self._reply(ERR_NEEDMOREPARAMS, "PING", "Not enough parameters")]
        return [Message("PONG", (self.server, params[0]), self.server)]

    def _quit(self, params: tuple) -> list[Message]:
        self.quit = params[0] if params else "Client Quit"
        return []


#: What a client may send before it is registered (anything else: 451).
_HANDLERS = {"CAP": Registration._cap, "PASS": Registration._pass, "NICK": Registration._nick,
             "USER": Registration._user, "PING": Registration._ping, "QUIT": Registration._quit,
             "PONG": lambda self, params: []}
