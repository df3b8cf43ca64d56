"""Telnet negotiation (RFC 854/855) taken out of a client's input, and answered minimally.

A telnet client is a fine chat client until it sends a command: Ctrl-C sends ``IAC IP`` and
``IAC DO TIMING-MARK``, and then discards everything the server sends until the server answers
the TIMING-MARK. Relayed as text, those bytes reached the room as ``����`` and the telnet user
went deaf for the rest of the session. So every ``IAC`` sequence is removed here, before
framing, and answered the way a server that supports no options must:

- ``DO opt`` -> ``WONT opt``, except ``DO TIMING-MARK`` -> ``WILL TIMING-MARK`` (RFC 860: it
  tells the client that everything before it has been processed, which ends its output flush);
- ``WILL opt`` -> ``DONT opt``;
- ``WONT``/``DONT`` need no answer (every option already is off), which also means two peers
  refusing each other can never loop;
- ``IAC IAC`` is a literal 0xFF byte (invalid UTF-8: it becomes U+FFFD like any other), and
  so is an 0xFF followed by a byte that is no telnet command (below 240): a client that is not
  telnet and sends stray bytes sees them replaced as before, not eaten;
- subnegotiations (``IAC SB … IAC SE``) and the one-byte commands (IP, AO, AYT, BRK, EC, EL,
  GA, NOP, DM) are dropped.

0xFF never occurs in valid UTF-8, so a client that is not telnet loses nothing it could have
meant as text (at most a stray 0xFF and the command byte after it). Pure and incremental: a sequence may be split across reads. Runs on the
client's session thread; the session creates one only when a 0xFF byte first arrives.
"""

from __future__ import annotations

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
TIMING_MARK = 6

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


class TelnetFilter:
    __slots__ = ("_state", "_verb")

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0

    def state(self) -> tuple[int, int]:
        """Where a command split across reads stands (for an upgrade: upgrade.py)."""
        return self._state, self._verb

    def restore(self, state: int, verb: int) -> None:
        self._state, self._verb = state, verb

    @property
    def pending(self) -> bool:
        """A sequence is open: the next bytes must come through :meth:`feed` too."""
        return self._state != _DATA

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes received -> (the text bytes in them, the answer to send back, maybe b"")."""
        text = bytearray()
        answer = bytearray()
        pos, end = 0, len(data)
        while pos < end:
            if self._state == _DATA:
                iac = data.find(b"\xff", pos)
                if iac < 0:
                    text += data[pos:]
                    break
                text += data[pos:iac]
                self._state = _COMMAND
                pos = iac + 1
                continue
            self._step(data[pos], text, answer)
            pos += 1
        return bytes(text), bytes(answer)

    def _step(self, byte: int, text: bytearray, answer: bytearray) -> None:
        """One byte of an IAC sequence."""
        state = self._state
        if state == _COMMAND:
            if byte == IAC:
                text.append(IAC)
                self._state = _DATA
            elif byte in (DO, DONT, WILL, WONT):
                self._verb = byte
                self._state = _OPTION
            elif byte == SB:
                self._state = _SUB
            elif byte < SE:  # not a telnet command: a stray 0xFF in someone's bytes, kept
                text += bytes((IAC, byte))
                self._state = _DATA
            else:  # IP, AO, AYT, BRK, EC, EL, GA, NOP, DM, a stray SE: nothing to do
                self._state = _DATA
        elif state == _OPTION:
            answer += _answer(self._verb, byte)
            self._state = _DATA
        elif state == _SUB:
            if byte == IAC:
                self._state = _SUB_IAC
        else:  # _SUB_IAC: IAC SE ends the subnegotiation; IAC IAC is data inside it
            self._state = _DATA if byte == SE else _SUB


def _answer(verb: int, option: int) -> bytes:
    if verb == DO:
        return bytes((IAC, WILL if option == TIMING_MARK else WONT, option))
    if verb == WILL:
        return bytes((IAC, DONT, option))
    return b""
