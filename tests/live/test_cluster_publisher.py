"""The cluster publisher against a real redis-server, one cycle at a time (chatd/cluster/
publisher.py): what happens to a batch whose replies were not yet read when Redis went away.

Its replies are read when the next batch goes, or SETTLE_SECONDS later, so for a moment a batch
is sent and not known to be written. If Redis fails then, the batch must go again *as it was*:
its stream entry with the same sequence, which a reader that already has it drops as a replay
(codec.Replays) and one that has not takes. Re-made with a new sequence, it reached the other
nodes twice: test_cluster.py's Redis restart saw `<alice> before 0` twice once, on a loaded
machine, where the lease renewal that starts a cycle failed before that batch was settled.
"""

from __future__ import annotations

import pytest
from support.redisfix import redis_module

from chatd.cluster.codec import Replays, Seal

pytestmark = pytest.mark.skipif(redis_module() is None, reason="needs redis-py")


def test_a_batch_sent_but_not_settled_goes_again_with_its_sequence(redis_server):
    from chatd.cluster.bus import _connect
    from chatd.cluster.keys import node_stream
    from chatd.cluster.link import Link
    from chatd.cluster.publisher import Publisher

    redis = redis_server()
    seal = Seal(b"a test secret of enough bytes....")
    link = Link(redis.url, "node-a", seal, None)
    link.redis = _connect(redis.url)
    publisher = Publisher(link, history_lines=10)
    publisher.renew_at = float("inf")  # no lease renewal yet
    publisher.line('{"t":"say","r":"lobby","n":"alice","x":"before 0"}')
    assert publisher._cycle()  # sent; its replies wait for the next batch or the settle
    stream = node_stream("node-a").encode()  # its own stream, which the others read
    [(_, fields)] = link.redis.xrange(stream)
    writer, _, sequence, lines = seal.open_entry(fields, stream)
    reader = Replays(link.started_at)
    reader.check(writer, sequence, stream)  # another node's reader took it before Redis went away

    redis.kill()
    publisher.keep_alive = link.redis.ping  # a round trip first, as the lease renewal makes
    publisher.renew_at = 0.0
    assert not publisher._cycle()  # Redis is gone: the batch is not known to be written
    redis.restart()  # empty, as a Redis restarted without persistence
    assert publisher._cycle()  # sent again

    [(_, again)] = link.redis.xrange(stream)
    assert seal.open_entry(again, stream) == (writer, "", sequence, lines)  # the same entry...
    with pytest.raises(ValueError, match="replayed entry"):  # ...which that reader drops
        reader.check(writer, sequence, stream)
