"""What a name and a line of text may be, for every protocol: the name rule, case folding,
and the cleaning that keeps one client's bytes from driving other people's terminals.

Pure functions (no sockets, no clock). Core (hub, rooms, history, bans), the cluster's checks
and admin use them, as every protocol package does (chatd/line/ today), so they live beside
core rather than inside one protocol.
"""

from __future__ import annotations

import re

#: C0 controls except TAB, DEL, and C1 controls. They would let one client drive other people's
#: terminals (ANSI escapes, bells, cursor moves), so they never leave the sender's session.
#: With them go the invisible format characters that rewrite how *other* text looks: the bidi
#: embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E,
#: U+200F, U+061C), which can make "<bob> hi" render as someone else's line; the line and
#: paragraph separators (U+2028, U+2029), which some terminals treat as newlines; and U+FEFF
#: (a BOM some clients put at the start of what they send). Joiners (U+200C, U+200D) stay:
#: emoji sequences need them.
_CONTROL_CHARS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff]")
#: Lone surrogates cannot be encoded as UTF-8. Decoded bytes never contain them, but text that
#: arrives as JSON (admin commands: "\ud800") can.
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Nicks and room names share one rule (docs/protocol.md §1).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,23}")
NAME_RULE = "1-24 characters of A-Z a-z 0-9 _ -, not starting with - or a digit"

def decode(raw: bytes) -> str:
    """Raw line bytes to display-safe text: invalid UTF-8 replaced, controls removed."""
    return sanitize(raw.decode("utf-8", "replace"))


def sanitize(text: str) -> str:
    """``text`` without control and bidi/format characters (TAB kept), safe to show on others'
    terminals. (Every character removed is non-printable to Python, so the fast path holds.)"""
    if text.isprintable():
        return text
    return _SURROGATES.sub("\ufffd", _CONTROL_CHARS.sub("", text))


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def fold(name: str) -> str:
    """The case-insensitive key under which a nick or room name is unique."""
    return name.casefold()
