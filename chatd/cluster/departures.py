"""Who held a nick before, on any node (IRC's WHOWAS, docs/protocol.md §14): one shared list.

A node that sees its client leave queues a departure (:func:`departure`) with the publisher,
which writes it in the batch's transaction: ``LPUSH chatd:whowas`` then ``LTRIM`` to
MAX_DEPARTURES, so Redis holds the cluster's last departures, newest first, bounded however
many nodes write. Each element is ``FOLDED-NICK SEALED``: the folded nick in clear (nick
claims show it already) lets a WHOWAS open only the elements of the nick asked about; the rest
is sealed and encrypted (codec.Seal.seal_hidden) for the key and that nick, so an element
whose clear nick was changed does not open. The payload is ``[NODE, RUN, NICK, USER NAME,
REAL NAME, WHEN]``: RUN is the writing run's start time (link.started_at), or 0 for the
clients of a lost node, which the node that reaps it files (leases.py). Someone with Redis
write access can still copy or drop elements (a repeated or missing answer), never make up
one.

Reading (:func:`read`, on the asking client's session thread): one LRANGE of at most
MAX_DEPARTURES elements; every element that does not check out is left out and logged as
rejected. This run's own departures are left out too: the hub remembers those itself
(core/census.py), also while Redis is away; an earlier run's under the same node name are
not.
"""

from __future__ import annotations

import json
import time

from chatd.cluster.checks import name, node_name, number, real_name, user_name
from chatd.cluster.codec import Rejected
from chatd.cluster.keys import WHOWAS
from chatd.core.bus import ClusterUnavailable
from chatd.text import fold

#: Departures the cluster remembers (docs/protocol.md §3): about 250 bytes each in Redis.
MAX_DEPARTURES = 1000


def of(link, client) -> tuple[str, str]:
    """The departure of ``client``, this run's, leaving now (bus.gone)."""
    return departure(link.node, link.started_at, client.nick,
                     (client.username, client.realname), time.time())


def departure(node: str, run: float, nick: str, names: tuple[str, str],
              at: float) -> tuple[str, str]:
    """(folded nick, payload) of a client of ``node``'s run ``run`` that left at ``at``:
    for the publisher, which seals the payload (:func:`element`) on its own thread."""
    return fold(nick), json.dumps([node, run, nick, names[0], names[1], round(at, 3)])


def element(seal, key: str, payload: str) -> str:
    """The list element of a departure (:func:`departure`)."""
    return f"{key} {seal.seal_hidden(f'{WHOWAS}/{key}', payload)}"


def read(link, nick: str) -> list[tuple[str, str, str, float]]:
    """The departures of ``nick`` filed in Redis, newest first, but this run's own: (nick,
    user name, real name, when), the nick standing in for a line client's names, as WHOWAS
    shows them. Raises ClusterUnavailable when Redis cannot be asked (at once if the link
    is known to be down: no socket timeout's wait)."""
    if not link.up:
        raise ClusterUnavailable("the link to Redis is down")
    try:
        values = link.redis.lrange(WHOWAS, 0, MAX_DEPARTURES - 1)
    except Exception as exc:  # the redis client's errors (imported only in cluster mode)
        raise ClusterUnavailable(str(exc)) from None
    key = fold(nick)
    prefix = key.encode() + b" "
    found = []
    for value in values:
        if not value.startswith(prefix):
            continue
        try:
            entry = _checked(json.loads(link.seal.open_hidden(f"{WHOWAS}/{key}",
                                                              value[len(prefix):])))
        except (Rejected, ValueError, TypeError) as exc:
            link.rejected("whowas", str(exc) or "not a departure")
            continue
        node, run, held, user, real, when = entry
        if fold(held) != key:
            link.rejected("whowas", "the nick is not the one it is filed under")
        elif node != link.node or run != link.started_at:
            found.append((held, user or held, real or held, when))
    return found


def _checked(entry) -> tuple[str, float, str, str, str, float]:
    node, run, held, user, real, when = entry
    return (node_name(node), number(run), name(held), user_name(user), real_name(real),
            number(when))
