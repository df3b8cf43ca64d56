"""Cluster mode: several chatd nodes, one chat, over Redis (docs/cluster.md).

Redis is a trust boundary here: whoever can write to it may deny service (delete keys) but
must not speak as anyone or act as an operator. So codec.py seals every value a node trusts
with the cluster secret and opens what is read back, and checks.py validates it, before the
rest of chatd sees it.

The service makes a :class:`RedisBus` (bus.py) when ``redis_url`` is set; the hub talks to it
through the interface in chatd/core/bus.py, exactly as to the single node's LocalBus.
"""

from chatd.cluster.bus import RedisBus
from chatd.cluster.link import ClusterStartError

__all__ = ["ClusterStartError", "RedisBus"]
