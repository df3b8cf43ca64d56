"""A received line as a terminal shows it: local time, colour, nothing that drives the
terminal (pure; tested as a table).

chatd already removes control and bidi characters from what users send, but a client
should not trust the server it happens to talk to with its user's terminal, so they are
removed here again. Colour follows the line's shape (docs/protocol.md §1): ``<NICK> TEXT``,
``* NICK TEXT``, ``*NICK* TEXT`` colour the nick, one colour per nick so a conversation can
be followed; ``*** `` server notices have one colour and ``*** error:`` lines another.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
NOTICE = "\x1b[36m"  # cyan
ERROR = "\x1b[31m"  # red: kept out of the nick palette
#: Nick colours: green, yellow, blue, magenta and their bright forms (never red: errors).
PALETTE = ("\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m",
           "\x1b[92m", "\x1b[93m", "\x1b[94m", "\x1b[95m")

# C0 but TAB, DEL, C1, and the bidi/format characters that reorder or fake lines.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ufeff]")
_SAID = re.compile(r"<([^>\s]+)> (.*)", re.DOTALL)
_ACTED = re.compile(r"\* (\S+) (.*)", re.DOTALL)
_PRIVATE = re.compile(r"\*([^*\s]+)\* (.*)", re.DOTALL)


def printable(text: str) -> str:
    """``text`` without characters that would act on the terminal instead of showing."""
    return _UNPRINTABLE.sub("", text)


def nick_colour(nick: str) -> str:
    """The same colour for a nick every time, in every run (crc32, not the salted hash())."""
    return PALETTE[zlib.crc32(nick.lower().encode("utf-8")) % len(PALETTE)]


def colourise(text: str) -> str:
    """ANSI colour for one printable line, by its shape."""
    if text.startswith("*** error: "):
        return f"{ERROR}{text}{RESET}"
    if text.startswith("*** "):
        return f"{NOTICE}{text}{RESET}"
    if m := _SAID.fullmatch(text):
        return f"<{nick_colour(m[1])}{m[1]}{RESET}> {m[2]}"
    if m := _PRIVATE.fullmatch(text):
        return f"{BOLD}*{nick_colour(m[1])}{m[1]}{RESET}{BOLD}*{RESET} {m[2]}"
    if m := _ACTED.fullmatch(text):
        return f"* {nick_colour(m[1])}{m[1]}{RESET} {m[2]}"
    return text


def render(line: str, when: datetime, colour: bool) -> str:
    """``HH:MM line`` (local time of arrival), coloured when ``colour``."""
    stamp, text = when.strftime("%H:%M"), printable(line)
    if not colour:
        return f"{stamp} {text}"
    return f"{DIM}{stamp}{RESET} {colourise(text)}"


def use_colour(stdout_is_tty: bool, environ) -> bool:
    """Colour only on a terminal, and not when ``NO_COLOR`` is set to anything but the empty
    string (no-color.org)."""
    return stdout_is_tty and not environ.get("NO_COLOR")
