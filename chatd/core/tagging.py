"""What travels with a chat line besides its text: its ``msgid`` and its client-only tags
(IRCv3 message-tags, SPEC §14).

Every room line, notice, action and private message gets a msgid where it is said (the
sender's session thread): this process's random prefix and a counter, so two lines never
share one, on one node or across a cluster (the msgid crosses the bus with the line), and
the sender's echo and every recipient see the same one. Line clients are not shown it; an
IRC client that asked for ``message-tags`` is, and may refer to it (``+draft/reply``).

Client-only tags (``+typing=active``) are what an IRC client attaches for other clients; the
server relays them untouched to those that asked for ``message-tags`` and to nobody else. An
event carries them as they go on the wire (``+a=b;+c``, values escaped: irc/message.py), so a
room renders them without knowing their meaning. :func:`is_client_tags` is the rule a string
from another node must pass (cluster/checks.py); the IRC reader builds only strings that pass
it. Pure, but for the counter.
"""

from __future__ import annotations

import itertools
import re
import secrets

#: The most bytes of client-only tags a line carries: IRCv3's 4094 for a client's tags.
MAX_CLIENT_TAG_BYTES = 4094
#: The longest msgid accepted from another node (ours are 10 + a few hex digits).
MAX_MSGID = 64

_PREFIX = secrets.token_hex(5)
_COUNT = itertools.count(1)  # next() on it is one C call: atomic under the GIL

#: A client-only tag's key: ``+``, an optional vendor (``draft/``, ``example.com/``), a name.
KEY = re.compile(r"\+(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
#: One item of the escaped form: a key, then ``=`` and a value with no space, ``;`` or
#: control character (escaping took them out).
_ITEM = rf"{KEY.pattern}(?:=[^\x00-\x20;\x7f]*)?"
_TAGS = re.compile(rf"{_ITEM}(?:;{_ITEM})*")


def new_msgid() -> str:
    """A msgid no other line has: 10 hex digits of this process, then a counter in hex."""
    return f"{_PREFIX}{next(_COUNT):x}"


def is_msgid(value) -> bool:
    """Whether another node's msgid is one a client may be shown (letters and digits)."""
    return value.__class__ is str and 0 < len(value) <= MAX_MSGID and value.isascii() \
        and value.isalnum()


def is_client_tags(value) -> bool:
    """Whether ``value`` is client-only tags in their escaped wire form ("" is none)."""
    return value.__class__ is str and (value == "" or (
        len(value.encode("utf-8")) <= MAX_CLIENT_TAG_BYTES and _TAGS.fullmatch(value) is not None))
