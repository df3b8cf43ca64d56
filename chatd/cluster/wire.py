"""Events (events.py) as compact JSON, to cross from one node to another over the cluster bus.

``["Said", "bob", "hi"]``: the class name, then the fields in order. Only the events that
other nodes' clients may see are accepted back (:data:`SHARED`), each field must be a string,
an int or a list of strings as the class declares, and anything else is a
:class:`WireError`: a bad entry in Redis is logged and skipped by its reader, never delivered
half-understood. Pure functions.
"""

from __future__ import annotations

import dataclasses
import json

from chatd.core import events as ev

#: What one node tells another's clients: room lines, departures, operator lines, private lines.
SHARED = {cls.__name__: cls for cls in (
    ev.Said, ev.Acted, ev.Noticed, ev.Joined, ev.Left, ev.Quit, ev.Kicked, ev.Renamed,
    ev.Announcement, ev.PrivateMessage, ev.IsAway, ev.Tagged, ev.PrivateTagged,
    # a room's owners and modes (SPEC §13: core/stewardship.py)
    ev.TopicSet, ev.RoomKicked, ev.Granted, ev.Revoked, ev.BanSet, ev.BanLifted, ev.ModeSet,
    ev.RoomRegistered, ev.InvitedTo,
)}
#: class name -> (class, fields required, fields in all): worked out once, not per line.
_SHAPES = {name: (cls, sum(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)),
                  len(dataclasses.fields(cls))) for name, cls in SHARED.items()}


class WireError(ValueError):
    """An entry that is not an event this node understands."""


#: One encoder, built once (``json.dumps`` with arguments builds a new one per call).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


#: A string as a JSON string (the C function json.dumps itself ends in).
_STRING = json.encoder.encode_basestring


#: Events whose last fields are left out while they hold their defaults (class -> the
#: defaults of its fields, None for a field always sent): core/once.py's ``before``, a chat
#: line's client-only tags (tagging.py), and the speaker's account a line carries, which
#: are often absent, and which a node from before them would refuse as a field too many.
_TRIMMED = {cls: tuple(None if f.default is dataclasses.MISSING or f.name == "msgid"
                       else (f.default,) for f in dataclasses.fields(cls))
            for cls in (ev.Quit, ev.Kicked, ev.Renamed, ev.Said, ev.Acted, ev.Noticed,
                        ev.PrivateMessage, ev.Tagged, ev.PrivateTagged, ev.Joined, ev.Left,
                        ev.TopicSet, ev.InvitedTo)}


def dumps(event) -> str:
    """What ``compact([class name, *fields])`` gives, built by hand from the strings' own
    encodings: every relayed line is encoded here, on its sender's session thread, and the
    encoder object's machinery cost more than the text (4.4 against 1.6 us a line)."""
    cls = event.__class__
    values = [getattr(event, name) for name in cls.__slots__]
    defaults = _TRIMMED.get(cls)
    if defaults is not None:
        while (default := defaults[len(values) - 1]) is not None and values[-1] == default[0]:
            del values[-1]
    return '["' + cls.__name__ + '",' + ",".join([  # (class names need no escaping)
        _STRING(value) if value.__class__ is str else _ENCODE(value) for value in values]) + "]"


def compact(value) -> str:
    """Any JSON value as compact text (the cluster bus builds its entries from these)."""
    return _ENCODE(value)


def loads(text: str | bytes):
    try:
        decoded = json.loads(text)
    except (ValueError, TypeError):
        raise WireError(f"not an event: {str(text)[:80]!r}") from None
    return from_list(decoded)


def from_list(decoded):
    """An event from its decoded form ``[class name, field, ...]`` (a list inside a larger
    JSON document that was decoded once, as the cluster bus's batches are)."""
    try:
        name, *values = decoded
        cls, required, total = _SHAPES[name]
    except (ValueError, TypeError, KeyError):
        raise WireError(f"not an event: {str(decoded)[:80]!r}") from None
    if not required <= len(values) <= total:
        raise WireError(f"{name}: {len(values)} fields")
    for value in values:
        if value is not None and not isinstance(value, str):
            raise WireError(f"{name}: field {value!r} is not text")
    return cls(*values)
