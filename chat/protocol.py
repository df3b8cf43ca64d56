"""What chatd's lines mean to a client (docs/protocol.md §1-§3): pure functions and one small
state object, no sockets.

A client must know four things from the server's lines: that it was greeted (and as which
guest nick), who it is and where (to take both back after a reconnect: the server's own
replies are the truth, so a nick refused or changed by the server is never "restored"),
whether the server refused or threw it out (then reconnecting is wrong), and when the
replies to its own restoring commands are in. Only lines starting ``*** `` come from the
server itself; anything a user says starts ``<``, ``*`` or ``* ``, so it cannot pass for
one of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LOBBY = "lobby"
WELCOME = "*** welcome to "
_YOU_ARE = re.compile(r"\*\*\* you are (\S+)")
# "you are now X", and the cluster's "your nick OLD was taken ...; you are now X"
_YOU_ARE_NOW = re.compile(r"\*\*\* (?:you|your nick \S+ was taken .*; you) are now (\S+)(?: \(.*\))?")
_JOINED = re.compile(r"\*\*\* you joined (\S+) \(\d+ members?\)")
_LOGGED_IN = re.compile(r"\*\*\* (?:logged in as|registered) (\S+)")
#: A closed server's greeting has no nick: this line takes the place of ``*** you are NICK``.
NEEDS_ACCOUNT = "*** this server needs an account: "
_ERROR = "*** error: "
_QUIT = re.compile(r"/quit(?:[ \t]|$)", re.IGNORECASE)

#: The client's own lines for these replies; the first reply to each restoring command is one.
_NICK_REPLIES = ("*** you are now ", "*** you are already ", _ERROR)
_JOIN_REPLIES = ("*** you joined ", _ERROR)
_LOGIN_REPLIES = ("*** logged in as ", _ERROR)


def refusal(line: str) -> str | None:
    """The reason in a refusal (``*** error: server full``) sent instead of a greeting."""
    return line[len(_ERROR):] if line.startswith(_ERROR) else None


def final_words(line: str) -> str | None:
    """Why not to reconnect, if ``line`` means the server put us out on purpose: a kick
    (``*** you were kicked: R``) or a ban (``*** error: banned (...)``)."""
    if line.startswith("*** you were kicked: "):
        return "you were kicked"
    if line == "*** error: banned" or line.startswith("*** error: banned ("):
        return "banned"
    return _ENDINGS.get(line)


#: Server lines after which coming back would fight someone (docs/protocol.md §12): the same
#: account logged in on another connection, or an operator disabled it.
_ENDINGS = {"*** logged in elsewhere": "logged in elsewhere",
            "*** your account was disabled": "your account was disabled"}


def is_quit(text: str) -> bool:
    """``/quit`` or ``/quit REASON`` in any case, as the server reads it (not ``//quit``)."""
    return _QUIT.match(text) is not None


def room_name(room: str) -> str:
    """``#dev`` -> ``dev``: the server ignores a leading ``#`` (docs/protocol.md §1.3)."""
    return room.removeprefix("#")


@dataclass
class Identity:
    """Who the server says we are, and who to be again after a reconnect.

    ``wanted_nick`` starts as ``--nick`` and follows every ``*** you are now X``; a guest
    nick the server handed out is not wanted back (it hands out another). ``wanted_room``
    starts as ``--room`` and follows every ``*** you joined R``. Fed every line, in the
    link thread.
    """

    wanted_nick: str | None = None
    wanted_room: str | None = None
    #: ``--login``: (account, password), logged in again on every connection; the password
    #: is only ever sent, never shown.
    login: tuple[str, str] | None = field(default=None, repr=False)
    nick: str | None = None
    room: str = LOBBY
    greeted: bool = False
    _awaiting: list[tuple[str, ...]] = field(default_factory=list)

    def feed(self, line: str) -> str | None:
        """Note what ``line`` says; returns ``"greeted"`` at ``*** you are NICK`` (time to
        :meth:`restore`) and ``"restored"`` at the last reply to the restoring commands."""
        if self._awaiting and line.startswith(self._awaiting[0]):
            self._awaiting.pop(0)
            self._note(line)
            return None if self._awaiting else "restored"
        self._note(line)
        if not self.greeted and (m := _YOU_ARE.fullmatch(line)):
            self.greeted, self.nick, self.room = True, m.group(1), LOBBY
            return "greeted"
        if not self.greeted and line.startswith(NEEDS_ACCOUNT):  # a closed server
            self.greeted = True
            return "greeted"
        return None

    def _note(self, line: str) -> None:
        if m := _LOGGED_IN.fullmatch(line):
            self.nick = m.group(1)
            if self.wanted_nick and self.wanted_nick.lower() == self.nick.lower():
                self.wanted_nick = self.nick
        elif m := _YOU_ARE_NOW.fullmatch(line):
            self.nick = self.wanted_nick = m.group(1)
        elif m := _JOINED.fullmatch(line):
            self.room = self.wanted_room = m.group(1)

    def restore(self) -> list[str]:
        """The commands that take back nick and room on a fresh connection (none if the
        server's greeting already has them), in the order to send them."""
        commands = []
        if self.login is not None:
            name, password = self.login
            commands.append(f"/login {name} {password}")
            self._awaiting.append(_LOGIN_REPLIES)
            self.wanted_nick = self.wanted_nick or name
        if self.wanted_nick and self.wanted_nick != self.nick and (
                self.login is None or self.wanted_nick.lower() != self.login[0].lower()):
            commands.append(f"/nick {self.wanted_nick}")
            self._awaiting.append(_NICK_REPLIES)
        if self.wanted_room and room_name(self.wanted_room).lower() != self.room.lower():
            commands.append(f"/join {self.wanted_room}")
            self._awaiting.append(_JOIN_REPLIES)
        return commands

    def reset(self) -> None:
        """A new connection: not greeted yet, nothing awaited."""
        self.greeted, self.nick, self.room, self._awaiting = False, None, LOBBY, []


#: A line longer than this is passed on in pieces: a server that never sends LF must not
#: make the client hold its output forever (chatd's longest lines, a /who of a crowded
#: room, are far shorter).
MAX_LINE = 4 * 1024 * 1024


class LineSplitter:
    """Bytes from the socket to whole lines (LF-terminated, a CR before the LF dropped), as
    bytes: pipe mode passes them on exactly as received."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._partial = b""
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        while len(self._partial) > self._max:
            lines.append(self._partial[:self._max])
            self._partial = self._partial[self._max:]
        return lines

    def rest(self) -> bytes:
        """A last line the server did not end (the connection closed)."""
        rest, self._partial = self._partial, b""
        return rest[:-1] if rest.endswith(b"\r") else rest
