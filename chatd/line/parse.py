"""A decoded line of the line protocol classified: chat text, a ``/command``, or nothing.

Pure; the command table that acts on a :class:`Command` is commands.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A line that goes to the sender's room as chat text."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A ``/word args`` line; ``name`` is lower-cased, ``args`` has its outer spaces removed."""

    name: str
    args: str


def parse(text: str) -> Message | Command | None:
    """Classify one decoded line. Empty (or all-blank) lines give ``None`` and are ignored."""
    if not text.strip():
        return None
    if not text.startswith("/"):
        return Message(text)
    if text.startswith("//"):
        return Message(text[1:])
    word, args = split_word(text[1:])
    return Command(word.lower(), args)


_WORD = re.compile(r"[^ \t]*")


def split_word(text: str) -> tuple[str, str]:
    """``"bob  hi there"`` -> ``("bob", "hi there")``: the first word (ended by a space or a
    TAB: telnet users and pasted text use both) and the rest without its outer whitespace."""
    word = _WORD.match(text).group()
    return word, text[len(word):].strip()
