"""The Redis keys of a cluster and the Lua scripts that change several at once (all under
``chatd:``; docs/cluster.md describes each). Values a node trusts are sealed (codec.py)."""

PREFIX = "chatd:"
STREAM, MEMBERS, NICKS, GUESTS, NODES, ID_BLOCKS, BANS = (
    PREFIX + k for k in ("events", "members", "nicks", "guests", "nodes", "id-blocks", "bans"))
#: Each node's own stream (``chatd:events:NODE``): its batches, which every other node reads
#: and it never does (reader.py). STREAM is the shared one: node hellos, reaps, reasserts.
NODE_STREAM = PREFIX + "events:"
HISTORY = PREFIX + "history:"
ANSWERS = PREFIX + "answers:"
LEASE = PREFIX + "node:"
REAPING = PREFIX + "reaping:"
#: Accounts (cluster/accounts.py): one value per account, where it was when it left, and
#: the set of every account's folded name.
ACCOUNT, ACCOUNT_ROOMS, ACCOUNTS = PREFIX + "account:", PREFIX + "account-rooms:", PREFIX + "accounts"
ACCOUNT_IGNORES = PREFIX + "account-ignores:"
#: Every room's state but the blank one (cluster/roomstates.py).
ROOMS = PREFIX + "rooms"
#: The cluster's last departures, newest first (cluster/departures.py: IRC's WHOWAS).
WHOWAS = PREFIX + "whowas"
#: Where the rooms of a node's accounts stand, kept as it goes (cluster/standing.py).
SEEN = PREFIX + "seen:"
#: Entries kept in the stream: what a node that lost its link can still catch up on. At 1,000
#: lines/s over the cluster that is 100 s, more than the 60 s outage docs/cluster.md promises.
STREAM_LENGTH = 100_000
#: A node's stream outlives its last write by this long (a node gone for good leaves none).
NODE_STREAM_TTL_MS = 24 * 3600 * 1000
ID_BLOCK = 1_000_000


def node_stream(node: str) -> str:
    return NODE_STREAM + node

#: The type each shared key must have (anything else was not written by a node: bus.py
#: deletes it at start, with a warning).
TYPES = {STREAM: "stream", MEMBERS: "hash", NICKS: "hash", BANS: "hash", NODES: "set",
         GUESTS: "string", ID_BLOCKS: "string", ACCOUNTS: "set", ROOMS: "hash",
         WHOWAS: "list"}

#: Release a nick only if we still hold it (another node may have claimed it since).
RELEASE = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end
return 0
"""

#: Replace a nick claim that failed its check (someone without the secret wrote it) only if it
#: is still that value.
REPLACE = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

#: Forget a lost node's members (ARGV[5...]: member key, folded nick, sealed claim, ...),
#: release their nicks if still theirs, append the departures (a sealed entry's head and
#: body, ARGV[3..4], made by the reaping node: none if ARGV[3] is empty) and drop the node,
#: all at once.
REAP = """
for i = 5, #ARGV, 3 do
  redis.call('hdel', KEYS[1], ARGV[i])
  if ARGV[i + 1] ~= '' and redis.call('hget', KEYS[2], ARGV[i + 1]) == ARGV[i + 2] then
    redis.call('hdel', KEYS[2], ARGV[i + 1])
  end
end
if ARGV[3] ~= '' then
  redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'h', ARGV[3], 'c', ARGV[4])
end
redis.call('srem', KEYS[4], ARGV[1])
return (#ARGV - 4) / 3
"""
