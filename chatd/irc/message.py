"""One IRC message's wire form: ``[@TAGS ][:SOURCE ]COMMAND[ PARAM...][ :TRAILING]``.

Pure (no socket): :func:`parse` takes one line as received (the CR LF already cut off by the
framer) and :func:`encode` makes the bytes to send. The rules are the Modern IRC documents'
(modern.ircdocs.horse) and the IRCv3 message-tags specification:

- a line is at most 512 bytes with its CR LF, not counting its tags; the tags part (``@``
  up to the space after it) at most 4096 bytes from a client (:data:`MAX_TAG_BYTES`, issue
  27): :func:`parse` raises :class:`TooLong` past either, which the reader answers with 417;
- tag values are escaped (``\\:`` ``;``, ``\\s`` space, ``\\\\`` backslash, ``\\r``, ``\\n``);
  a tag without a value, or with an empty one, is ``""``;
- parameters are separated by one or more spaces; the last may start with ``:`` and then
  holds spaces (the "trailing"); at most 15 parameters, as RFC 1459 says, the rest joined
  into the 15th;
- the command is letters (folded to upper case) or a three-digit numeric.

Text is UTF-8; bytes that are not are replaced (U+FFFD), as the line protocol does: chatd
speaks UTF-8 only, and a client's broken byte must not end its connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatd.core.tagging import KEY

#: The longest line without its tags, CR LF included (RFC 1459 §2.3).
MAX_LINE_BYTES = 512
#: The longest tags part a client may send (IRCv3 message-tags: 4094 plus ``@`` and space).
MAX_TAG_BYTES = 4096
#: Parameters a message carries at most (RFC 1459 §2.3.1).
MAX_PARAMS = 15

_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_UNESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}


class BadMessage(ValueError):
    """A line that is no IRC message (no command, a command of neither letters nor digits)."""


class TooLong(BadMessage):
    """A line over :data:`MAX_LINE_BYTES`, or tags over :data:`MAX_TAG_BYTES` (417)."""


@dataclass(frozen=True)
class Message:
    """One message as data: what the reader hands the command table and what replies are
    built as, so neither ever sees the wire form (tags are compared, never hashed)."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=True, hash=False)


def parse(line: bytes) -> Message:
    """One received line (without CR LF) as a :class:`Message`; BadMessage or TooLong."""
    tags: dict[str, str] = {}
    if line.startswith(b"@"):
        end = line.find(b" ")
        if end < 0:
            raise BadMessage("no command")
        if end + 1 > MAX_TAG_BYTES:
            raise TooLong("tags too long")
        tags = _tags(line[1:end].decode("utf-8", "replace"))
        line = line[end + 1:].lstrip(b" ")
    if len(line) + 2 > MAX_LINE_BYTES:
        raise TooLong("line too long")
    text = line.decode("utf-8", "replace")
    source = None
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
        if not source:
            raise BadMessage("empty source")
    if text.startswith(":"):
        raise BadMessage("no command")
    head, colon, trailing = text.partition(" :")
    words = [word for word in head.split(" ") if word]  # (spaces only: a tab is a character)
    if not words:
        raise BadMessage("no command")
    command, params = words[0], words[1:]
    if colon:
        params.append(trailing)
    if not (command.isascii() and (command.isalpha() or (command.isdigit() and len(command) == 3))):
        raise BadMessage(f"bad command {command[:20]!r}")
    if len(params) > MAX_PARAMS:
        params = params[:MAX_PARAMS - 1] + [" ".join(params[MAX_PARAMS - 1:])]
    return Message(command.upper(), tuple(params), source, tags)


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key:
            tags[key] = _unescape(value)
    return tags


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_ESCAPES.get(nxt, nxt))  # an unknown escape is the character itself
        else:
            out.append(char)
    return "".join(out)


def escape(value: str) -> str:
    """A tag value as it goes on the wire."""
    return "".join(_UNESCAPES.get(c, c) for c in value)


def client_tags(tags: dict[str, str]) -> str:
    """The client-only tags (``+name``) of a received message in their escaped wire form,
    to be relayed (core/tagging.py): others are the server's to set, and dropped, as are a
    key of characters a tag name cannot hold and a value with a control character."""
    return ";".join([key if value == "" else f"{key}={escape(value)}"
                     for key, value in tags.items()
                     if key.startswith("+") and KEY.fullmatch(key) and value.isprintable()])


def encode(message: Message) -> bytes:
    """The bytes of ``message``, CR LF included. The last parameter gets a ``:`` when it
    needs one (empty, a space in it, or a ``:`` first); one before it that would need one
    cannot be sent (ValueError: a bug, not input). A line past 512 bytes is cut, at a
    character boundary, so that its CR LF still ends it."""
    parts = []
    if message.tags:
        parts.append("@" + ";".join(k if v == "" else f"{k}={escape(v)}"
                                    for k, v in message.tags.items()))
    body = [f":{message.source}"] if message.source else []
    body.append(message.command)
    params = message.params
    for param in params[:-1]:
        if not param or " " in param or param.startswith(":"):
            raise ValueError(f"middle parameter {param!r}")
        body.append(param)
    if params:
        last = params[-1]
        body.append(":" + last if not last or " " in last or last.startswith(":") else last)
    line = " ".join(body).encode("utf-8")
    if len(line) + 2 > MAX_LINE_BYTES:
        line = line[:MAX_LINE_BYTES - 2].decode("utf-8", "ignore").encode("utf-8")
    tags = (parts[0] + " ").encode("utf-8") if parts else b""
    return tags + line + b"\r\n"
