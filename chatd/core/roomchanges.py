"""What an operator's change does to a room's state (SPEC §13), as pure functions: each takes
the room's name, its state (roomstate.RoomState) and who acts, and returns the new state with
the room line that announces it, or an error text. No locks, no I/O: the hub applies them
under its lock (stewardship.py), and they are tested alone.

A target is given twice: ``entry``, what the room's list holds (a folded account or nick),
and ``shown``, how the room is told of it (the nick as its holder spells it).
"""

from __future__ import annotations

from chatd.core.events import BanLifted, BanSet, Granted, ModeSet, Revoked, TopicSet
from chatd.core.roomstate import MAX_KEY, MAX_LIMIT, MAX_NAMES, MODES, RoomState

#: What each list a room keeps is called in answers and room lines.
LISTS = {"ops": "operator status", "voiced": "voice"}
#: What a Granted or Revoked line may say was given (another node's are checked against it).
GRANTED = frozenset(LISTS.values())

MODE_USAGE = "usage: /mode [+i|-i|+k KEY|-k|+l N|-l|+m|-m|+n|-n|+s|-s|+t|-t]"


def topic(room: str, state: RoomState, actor: str, text: str, account: str | None = None):
    """``account``: the actor's, for IRC's account-tag (None: a guest's or an operator's)."""
    return state.change(topic=text, topic_by=actor), TopicSet(actor, room, text, account)


def grant(room: str, state: RoomState, actor: str, what: str, entry: str, shown: str,
          on: bool):
    """``what`` ("ops" or "voiced") given to (``on``) or taken from a target."""
    names = getattr(state, what)
    if on and len(names) >= MAX_NAMES:
        return f"{room} has too many entries (at most {MAX_NAMES})"
    if (entry in names) == on:
        return f"{shown} has {LISTS[what]} in {room} already" if on \
            else f"{shown} has no {LISTS[what]} in {room}"
    names = names | {entry} if on else names - {entry}
    return state.change(**{what: names}), (Granted if on else Revoked)(actor, room, LISTS[what],
                                                                       shown)


def ban(room: str, state: RoomState, actor: str, entry: str, shown: str, on: bool):
    if on and len(state.bans) >= MAX_NAMES:
        return f"{room} has too many bans (at most {MAX_NAMES})"
    if (entry in state.bans) == on:
        return f"{shown} is banned from {room} already" if on \
            else f"{shown} is not banned from {room}"
    bans = state.bans | {entry} if on else state.bans - {entry}
    return state.change(bans=bans), (BanSet if on else BanLifted)(actor, room, shown)


def modes(room: str, state: RoomState, actor: str, changes: list) -> tuple:
    """Several :func:`mode` changes (``changes``: (change, key) pairs; one IRC ``MODE #room
    -int``), made in order: (the state after those that could be made, one room line naming
    them all (``-int``, ``+il 5``) or None if none could, the refusals of the others)."""
    made, refused = [], []
    for change, key in changes:
        done = mode(room, state, actor, change, key)
        if isinstance(done, str):
            refused.append(done)
        else:
            state = done[0]
            if change == "+l":  # set twice in one line: the last limit is the one that holds
                made = [m for m in made if not m.startswith("+l ")]
            made.append(done[1].change)
    return state, (ModeSet(actor, room, joined_modes(made)) if made else None), refused


def joined_modes(changes: list[str]) -> str:
    """``["-i", "-n", "+l 5"]`` -> ``-in+l 5``: IRC's one mode string, the arguments last."""
    text, sign, arguments = "", "", []
    for change in changes:
        if change[0] != sign:
            sign = change[0]
            text += sign
        text += change[1]
        if len(change) > 3:
            arguments.append(change[3:])
    return " ".join([text, *arguments])


def mode(room: str, state: RoomState, actor: str, change: str, key: str = ""):
    """``change``: one of +i -i +k -k +m -m +t -t (``key`` with +k; the room line does not
    show it)."""
    sign, letter = change[:1], change[1:]
    if sign not in ("+", "-") or len(letter) != 1 or letter not in MODES:
        return MODE_USAGE
    modes = set(state.modes)
    if change == "+l":
        if not (key.isascii() and key.isdigit() and 0 < int(key) <= MAX_LIMIT):
            return f"usage: /mode +l N (a member limit, 1-{MAX_LIMIT})"
        modes.add("l")
        return (state.change(modes="".join(sorted(modes)), limit=int(key)),
                ModeSet(actor, room, f"+l {int(key)}"))
    if change == "+k":
        if not key or len(key) > MAX_KEY or not key.isprintable() or " " in key:
            return f"usage: /mode +k KEY (1-{MAX_KEY} characters, no spaces)"
        modes.add("k")
        return state.change(modes="".join(sorted(modes)), key=key), ModeSet(actor, room, "+k")
    if (letter in modes) == (sign == "+"):
        return f"mode {change} is set on {room} already" if sign == "+" \
            else f"mode {letter} is not set on {room}"
    modes = modes | {letter} if sign == "+" else modes - {letter}
    return (state.change(modes="".join(sorted(modes)), key=state.key if "k" in modes else "",
                         limit=state.limit if "l" in modes else 0),
            ModeSet(actor, room, change))
