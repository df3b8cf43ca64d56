"""What an IRC command names, and how the hub's refusals read as IRC numerics.

Shared by the command modules (channels.py, people.py, commands.py): a ``#room`` is the line
protocol's ``room``, a command names at most :data:`MAX_TARGETS` targets, and a refusal the
hub words for the line protocol ("you are banned from dev") becomes the numeric an IRC
client acts on (474), by :data:`REFUSALS`.
"""

from __future__ import annotations

import re

from chatd.core.events import Error
from chatd.text import fold, is_valid_name

CLUSTER_UNAVAILABLE = "cluster unavailable, try again"
#: How a hub refusal reads as a numeric: (words in the text, numeric), first match wins.
REFUSALS = (("banned from", "474"), ("is invite-only", "473"), ("wrong key", "475"),
            ("too many rooms", "405"), ("not an operator", "482"), ("you are not in", "442"),
            ("no such nick", "401"), ("is not in", "441"), (" is in ", "443"),
            ("usage: /mode +k", "525"), ("usage: /mode +l", "696"), ("is full", "471"),
            ("registered", "433"), ("in use", "433"))
#: The most targets one JOIN, PART or PRIVMSG names (005 MAXTARGETS); more are ignored.
MAX_TARGETS = 4
NUMBER = re.compile(r"-?[0-9]{1,9}")  # (str.isdigit takes "²", which int() refuses)
ACTION = "\x01ACTION "  # CTCP ACTION: /me


def refused(reader, problem: str, *about: str) -> None:
    """A hub refusal as the numeric an IRC client expects (:data:`REFUSALS`), else a notice."""
    for words, number in REFUSALS:
        if words in problem:
            reader.reply(number, *about, problem)
            return
    reader.hub.send_to(reader.client, Error(problem))


def room_name(target: str) -> str | None:
    """The room a ``#channel`` names, or None if it is not one chatd could have."""
    name = target[1:] if target.startswith("#") else None
    return name if name and is_valid_name(name) else None


def targets(text: str) -> list[str]:
    return [t for t in text.split(",") if t][:MAX_TARGETS]


def member_room(reader, name: str):
    """The client's Room named ``name``, or None."""
    key = fold(name)
    for room in reader.client.rooms:
        if fold(room.name) == key:
            return room
    return None


def my_room(reader, target: str):
    """The client's Room that ``target`` (``#room``) names, or None after telling it 442."""
    name = room_name(target)
    room = member_room(reader, name) if name else None
    if room is None and name is not None and reader.hub.members_of(name)[1]:
        reader.reply("442", target[:30], "You're not on that channel")
    elif room is None:
        reader.reply("403", target[:30], "No such channel")
    return room
