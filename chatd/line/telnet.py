"""Telnet negotiation (RFC 854/855) taken out of a client's input, and answered minimally.

A telnet client is a fine chat client until it sends a command: Ctrl-C sends ``IAC IP`` and
``IAC DO TIMING-MARK``, and then discards everything the server sends until the server answers
the TIMING-MARK. Relayed as text, those bytes reached the room as ``����`` and the telnet user
went deaf for the rest of the session. So every ``IAC`` sequence is removed here, before
framing, and answered the way a server that supports no options must:

- ``DO opt`` -> ``WONT opt``, except ``DO TIMING-MARK`` -> ``WILL TIMING-MARK`` (RFC 860: it
  tells the client that everything before it has been processed, which ends its output flush);
- ``WILL opt`` -> ``DONT opt``;
- but BINARY (RFC 856) is accepted both ways (``DO BINARY`` -> ``WILL``, ``WILL BINARY`` ->
  ``DO``, once per change of state, RFC 1143, so two peers never loop): telnet's own cure for
  the next point, ``toggle binary``, must not be refused;
- ``WONT``/``DONT`` need no answer (every option already is off), which also means two peers
  refusing each other can never loop;
- ``IAC IAC`` is a literal 0xFF byte (invalid UTF-8: it becomes U+FFFD like any other), and
  so is an 0xFF followed by a byte that is no telnet command (below 236): a client that is not
  telnet and sends stray bytes sees them replaced as before, not eaten;
- subnegotiations (``IAC SB … IAC SE``) and the one-byte commands (IP, AO, AYT, BRK, EC, EL,
  GA, NOP, DM, and RFC 1184's EOF, SUSP, ABORT) are dropped, but for the next point.

Debian's telnet, not in binary mode, strips the eighth bit of what is typed and sends the
control characters that gives as commands: inside a UTF-8 character, 0x83 becomes ``IAC IP``
(with ``IAC DO TIMING-MARK``), 0x8F ``IAC AO``, 0x9A ``IAC SUSP``, 0x9C ``IAC BRK`` (seen with
the real binary: ``у``, ``я``, ``ă``, ``✓`` arrived as ``�``). A user cannot type those commands
in the middle of a character, so one that comes where a UTF-8 character is unfinished is put
back as the byte it was (:data:`RESTORED`). (0x85 it drops without a trace: lost.)

0xFF never occurs in valid UTF-8, so a client that is not telnet loses nothing it could have
meant as text (at most a stray 0xFF and the command byte after it). Pure and incremental: a sequence may be split across reads. Runs on the
client's session thread; the session creates one only when a 0xFF byte first arrives.
"""

from __future__ import annotations

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
BINARY, TIMING_MARK = 0, 6
EOF = 236  # the lowest one-byte command (RFC 1184: EOF, SUSP, ABORT; then SE at 240)
#: One-byte command -> the byte telnet made it from, when it comes inside a UTF-8 character.
RESTORED = {244: 0x83, 245: 0x8F, 237: 0x9A, 243: 0x9C}  # IP, AO, SUSP, BRK

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


class TelnetFilter:
    __slots__ = ("_binary", "_state", "_tail", "_verb")

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0
        self._tail = b""  # the last text bytes let through (at most 3): an unfinished character?
        self._binary = [False, False]  # BINARY in force: [we send it, they send it]

    def state(self) -> tuple:
        """Where a command split across reads stands, the last text bytes and the BINARY
        options (for an upgrade: upgrade.py; JSON-ready)."""
        return self._state, self._verb, list(self._tail), list(self._binary)

    def restore(self, state: int, verb: int, tail=(), binary=(False, False)) -> None:
        self._state, self._verb = state, verb
        self._tail, self._binary = bytes(tail), list(binary)

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
        if text:
            self._tail = (self._tail + text)[-3:]
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
            elif byte < EOF:  # not a telnet command: a stray 0xFF in someone's bytes, kept
                text += bytes((IAC, byte))
                self._state = _DATA
            else:  # IP, AO, AYT, BRK, EC, EL, GA, NOP, DM, EOF, SUSP, ABORT, SE: nothing to do,
                if byte in RESTORED and _unfinished(self._tail + text):  # but a byte mangled
                    text.append(RESTORED[byte])
                self._state = _DATA
        elif state == _OPTION:
            answer += self._answer(self._verb, byte)
            self._state = _DATA
        elif state == _SUB:
            if byte == IAC:
                self._state = _SUB_IAC
        else:  # _SUB_IAC: IAC SE ends the subnegotiation; IAC IAC is data inside it
            self._state = _DATA if byte == SE else _SUB


    def _answer(self, verb: int, option: int) -> bytes:
        if option == BINARY:  # accepted; answered only when it changes (RFC 1143)
            side, on = (0, verb == DO) if verb in (DO, DONT) else (1, verb == WILL)
            if self._binary[side] == on:
                return b""
            self._binary[side] = on
            reply = (WILL if on else WONT) if side == 0 else (DO if on else DONT)
            return bytes((IAC, reply, BINARY))
        if verb == DO:
            return bytes((IAC, WILL if option == TIMING_MARK else WONT, option))
        if verb == WILL:
            return bytes((IAC, DONT, option))
        return b""


def _unfinished(tail: bytes) -> bool:
    """Whether ``tail`` ends inside a UTF-8 character (a lead byte still owed continuations)."""
    for back in range(1, min(4, len(tail) + 1)):
        byte = tail[-back]
        if byte & 0xC0 == 0x80:  # a continuation: look further back for its lead
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
            4 if byte & 0xF8 == 0xF0 else 1
        return back < need
    return False
