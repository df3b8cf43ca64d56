"""An IRC client for the tests: a real TCP socket speaking IRC as ii or sic do, with a
PING/PONG round trip as its barrier (what the irctest suite synchronises with)."""

from __future__ import annotations

import itertools

from support.client import ChatClient

_COOKIES = itertools.count(1)


class IrcClient(ChatClient):
    """:class:`ChatClient`'s line reading, IRC's registration and barrier."""

    def register(self, port: int, nick: str, caps=(), password: str | None = None,
                 timeout: float = 5.0, realname: str | None = None) -> IrcClient:
        """Connect, negotiate ``caps`` (CAP LS 302, REQ, END), send PASS/NICK/USER (the real
        name ``NICK the tester`` unless given) and read up to the end of the MOTD (376 or
        422)."""
        self.connect(port, greet=False, timeout=timeout)
        if caps:
            self.send_line("CAP LS 302")
        if password is not None:
            self.send_line(f"PASS {password}")
        self.send_line(f"NICK {nick}")
        self.send_line(f"USER {nick} 0 * :{realname or nick + ' the tester'}")
        if caps:
            self.send_line(f"CAP REQ :{' '.join(caps)}")
            self.wait_for(lambda line: " CAP " in line and " ACK " in line, timeout)
            self.send_line("CAP END")
        self.wait_for(lambda line: line.split()[1:2] == ["001"], timeout)
        self.nick = nick
        self.wait_for(lambda line: line.split()[1:2] in (["376"], ["422"]), timeout)
        return self

    def sync(self, timeout: float = 5.0) -> list[str]:
        """Round-trip barrier: PING with a cookie; every line before its PONG is returned."""
        cookie = f"sync-{next(_COOKIES)}"
        self.send_line(f"PING :{cookie}")
        self.wait_for(lambda line: " PONG " in line and line.endswith(cookie), timeout)
        return list(self.skipped)

    def numeric(self, number: str, timeout: float = 5.0) -> str:
        """The next line with numeric ``number`` (lines before it are skipped)."""
        return self.wait_for(lambda line: line.split()[1:2] == [number], timeout)
