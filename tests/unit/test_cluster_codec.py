"""The cluster's trust boundary as pure functions (chatd/cluster/codec.py, secret.py): tables,
and hypothesis for "whatever Redis holds, the answer is a value or Rejected, never a crash".
The live attacks are in test_cluster_trust.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.cluster import secret, wire
from chatd.cluster.checks import Validator
from chatd.cluster.codec import CLOCK_SKEW, Rejected, Replays, Seal
from chatd.cluster.orders import rows
from chatd.core import events as ev

SEAL = Seal(b"k" * 32)
OTHER = Seal(b"o" * 32)


def raw(entry: dict) -> dict:
    """An entry's fields as Redis gives them back: bytes."""
    return {k.encode(): v.encode() for k, v in entry.items()}


def test_a_sealed_value_opens_only_with_the_secret_and_at_its_place():
    value = SEAL.seal("chatd:nicks/alice", "node1|5").encode()
    assert SEAL.open("chatd:nicks/alice", value) == "node1|5"
    for seal, context, data in ((OTHER, "chatd:nicks/alice", value),  # another secret
                                (SEAL, "chatd:nicks/bob", value),  # moved to another field
                                (SEAL, "chatd:nicks/alice", value[:-1] + b"6"),  # altered
                                (SEAL, "chatd:nicks/alice", b"node1|5"), (SEAL, "x", b"")):
        with pytest.raises(Rejected):
            seal.open(context, data)


def test_the_tag_is_hmac_sha256():
    """The precomputed pads of Seal.tag make exactly RFC 2104's HMAC (hmac.digest), cut to
    128 bits."""
    import hashlib
    import hmac

    key = hashlib.sha256(b"chatd cluster\n" + b"k" * 32).digest()
    for context, payload in ((b"chatd:nicks/a", b"node1|5"), (b"", b""), (b"x" * 100, b"y" * 9000)):
        assert SEAL.tag(context, payload) == \
            hmac.digest(key, context + b"\n" + payload, "sha256")[:16].hex()


def test_hidden_values_need_the_secret_and_their_context():
    hidden = SEAL.seal_hidden("chatd:members/n|1", "10.0.0.1:5")
    assert "10.0.0.1" not in hidden
    assert SEAL.open_hidden("chatd:members/n|1", hidden.encode()) == "10.0.0.1:5"
    with pytest.raises(Rejected):
        SEAL.reveal("chatd:members/n|2", hidden[32:])
    with pytest.raises(Rejected):
        OTHER.reveal("chatd:members/n|1", hidden[32:])


def test_an_entry_opens_with_its_fields_bound():
    entry = raw(SEAL.entry("node1", 123, '[["r","lobby","Said","a","hi"]]'))
    assert SEAL.open_entry(entry) == ("node1", "", 123, [["r", "lobby", "Said", "a", "hi"]])
    head = entry[b"h"]
    tag = head.rsplit(b" ", 1)[1]
    for field, value in ((b"h", b"node2  123 " + tag), (b"h", b"node1  124 " + tag),
                         (b"h", b"node1 node1 123 " + tag), (b"c", b"[]")):
        with pytest.raises(Rejected, match="bad tag"):
            SEAL.open_entry({**entry, field: value})
    for head in (b"node1 123 " + tag, b"", b"a b c d e"):
        with pytest.raises(Rejected, match="bad head"):
            SEAL.open_entry({**entry, b"h": head})
    with pytest.raises(Rejected, match="no field"):
        SEAL.open_entry({b"h": entry[b"h"]})


def test_an_entry_is_bound_to_the_stream_it_was_written_in():
    """A node's batches go in its own stream: copied into the shared one or another node's,
    an entry fails its tag (a reader's replay check is per stream)."""
    body = '[["r","lobby","Said","a","hi"]]'
    own = raw(SEAL.entry("node1", 123, body, stream=b"chatd:events:node1"))
    assert SEAL.open_entry(own, b"chatd:events:node1")[2] == 123
    for stream in (b"stream", b"chatd:events:node2"):
        with pytest.raises(Rejected, match="bad tag"):
            SEAL.open_entry(own, stream)
    with pytest.raises(Rejected, match="bad tag"):
        SEAL.open_entry(raw(SEAL.entry("node1", 123, body)), b"chatd:events:node1")


def test_replays_and_entries_from_before_our_start_are_refused():
    replays = Replays(started_at=1000.0)
    floor = int((1000.0 - CLOCK_SKEW) * 1_000_000)
    with pytest.raises(Rejected):
        replays.check("node1", floor)  # older than our start, from a node not heard yet
    replays.check("node1", floor + 5)
    for seq in (floor + 5, floor + 4):
        with pytest.raises(Rejected, match="replayed"):
            replays.check("node1", seq)
    replays.check("node1", floor + 6)
    replays.check("node2", floor + 1)  # each writer has its own sequence
    replays.check("node1", floor + 3, b"chatd:events:node1")  # and in each stream
    with pytest.raises(Rejected, match="replayed"):
        replays.check("node1", floor + 3, b"chatd:events:node1")


@pytest.mark.parametrize("decoded, expected", [
    (["Said", "alice", "hi"], ev.Said("alice", "hi")),
    (["Acted", "alice", "waves\x1b[2J"], ev.Acted("alice", "waves[2J")),
    (["Said", "alice", "a\u202eb\x07"], ev.Said("alice", "ab")),
    (["Left", "bob", "lobby", None], ev.Left("bob", "lobby", None)),
    (["Left", "bob", "lobby", "quit: \x1b]0;x\x07bye"], ev.Left("bob", "lobby", "quit: ]0;xbye")),
    (["Renamed", "guest-1", "alice"], ev.Renamed("guest-1", "alice")),
    (["PrivateMessage", "alice", "psst"], ev.PrivateMessage("alice", "psst")),
])
def test_events_are_cleaned_as_client_input(decoded, expected):
    assert Validator(1024).event(decoded) == expected


@pytest.mark.parametrize("decoded", [
    ["Said", "ro ot", "hi"], ["Said", "-x", "hi"], ["Said", "a" * 25, "hi"], ["Said", 5, "hi"],
    ["Said", "alice", "x" * 1025], ["Said", "alice", "é" * 600], ["Said", "alice"],
    ["Joined", "alice", "no room"], ["Motd", "x"], [], "Said", None,
])
def test_what_no_client_could_send_is_rejected(decoded):
    with pytest.raises(Rejected):
        Validator(1024).event(decoded)


def test_gathered_rows_keep_known_scalar_fields_only():
    assert rows([{"id": 1, "nick": "a\x1bb", "extra": [1], "muted": False}]) == \
        [{"id": 1, "nick": "ab", "muted": False}]
    for bad in ({"x": 1}, [1], [{"id": [1]}]):
        with pytest.raises(Rejected):
            rows(bad)


@given(st.dictionaries(st.sampled_from([b"h", b"c", b"x"]), st.binary()))
def test_any_entry_opens_or_is_rejected(fields):
    try:
        SEAL.open_entry(fields)
    except Rejected:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=20))
def test_any_json_value_is_an_event_or_rejected(value):
    validator = Validator(1024)
    for decoded in (value, ["Said", value, value], ["Left", value, value, value]):
        try:
            validator.event(decoded)
            validator.member(json.dumps(decoded))
        except Rejected:
            pass


#: Events whose last field is left out when it holds this: core/once.py's ``before`` and
#: core/tagging.py's client-only tags.
LEFT_OUT = {"Quit": None, "Kicked": None, "Renamed": None, "Said": "", "Acted": "", "Noticed": "",
            "PrivateMessage": "",  # (with four fields given: their account, None, is left out too)
            "Joined": None, "InvitedTo": None}  # (their speaker's account)


@given(st.sampled_from(sorted(wire.SHARED)), st.lists(st.text() | st.none(), min_size=4,
                                                      max_size=4))
def test_an_event_is_encoded_as_the_json_encoder_would_and_decodes_back(name, values):
    """wire.dumps builds the text by hand (a line's cost): it must be what the JSON encoder
    makes of ``[name, *fields]``, for any text, and decode to the same event."""
    cls = wire.SHARED[name]
    fields = [value if value is not None or i == 2 else "" for i, value in
              enumerate(values[:len(cls.__slots__)])]
    event = cls(*fields)
    text = wire.dumps(event)
    if fields[-1] == LEFT_OUT.get(name, ...):
        del fields[-1]  # (older nodes refuse a field too many)
    assert text == json.dumps([name, *fields], ensure_ascii=False, separators=(",", ":"))
    assert wire.loads(text) == event


def test_before_crosses_nodes_checked_and_is_left_out_when_none():
    """core/once.py's ``before`` goes on the wire only when it says something, so a node from
    before it (which refuses a field too many) still reads every rename and quit; read back,
    it is checked as the room names it lists."""
    assert wire.dumps(ev.Renamed("bob", "robert")) == '["Renamed","bob","robert"]'
    assert wire.dumps(ev.Quit("bob", "b", "quit", None)) == '["Quit","bob","b","quit"]'
    validator = Validator(1024)
    renamed = ev.Renamed("bob", "robert", "a dev")
    assert validator.event(json.loads(wire.dumps(renamed))) == renamed
    for bad in ("a  dev", " a", "a\nb", "bad*name", " ".join(["r"] * 65), 7):
        with pytest.raises(Rejected):
            validator.event(["Renamed", "bob", "robert", bad])


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://chatd:pw@h:6379/0", "redis://chatd:***@h:6379/0"),
    ("rediss://u:p%40ss@h/0?ssl_ca_certs=/ca.pem", "rediss://u:***@h/0?ssl_ca_certs=/ca.pem"),
    ("unix:///run/r.sock?password=pw&db=1", "unix:///run/r.sock?password=***&db=1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_urls_are_shown_without_their_password(url, shown):
    assert secret.redact(url) == shown
    assert secret.has_credentials(url) == (url != "redis://h:6379/0")


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8))
def test_the_publishers_times_are_what_the_json_encoder_writes(times):
    """publisher._times writes a batch's history times by hand (a paced batch's cost, issue
    28): the same text as wire.compact for any float, finite or not."""
    from chatd.cluster.publisher import _times

    assert _times(times) == wire.compact(times)


@given(st.lists(st.text(max_size=40), max_size=12), st.integers(min_value=1, max_value=120))
def test_the_publishers_runs_are_its_chunks(texts, limit):
    """publisher._runs takes the one-run case in C; whatever the texts, the runs are
    _chunks's."""
    from chatd.cluster.publisher import _chunks, _runs

    assert [list(run) for run in _runs(texts, limit)] == [list(run) for run in _chunks(texts, limit)]


@pytest.mark.parametrize("change, good", [
    ("+i", True), ("-k", True), ("+l 5", True), ("-int", True), ("+tl 5", True),
    ("-i+lk 12", True), ("+x", False), ("-l 5", False), ("+i 5", False), ("+l", False),
    ("+", False), ("+l 5 6", False), ("+" + "i" * 9, False),
])
def test_a_mode_line_from_another_node_is_one_change_or_several(change, good):
    """An IRC MODE line's changes cross nodes as one ModeSet (``-int``, ``+tl 5``): checked
    as the mode strings roomchanges.joined_modes makes, and nothing else."""
    event = ["ModeSet", "alice", "dev", change]
    if good:
        assert Validator(1024).event(event) == ev.ModeSet("alice", "dev", change)
    else:
        with pytest.raises(Rejected):
            Validator(1024).event(event)


def test_msgid_and_client_tags_cross_nodes_checked():
    """A line's msgid and client-only tags (core/tagging.py) go on the wire, the tags only
    when there are some; read back, both are checked, and an older node's line without a
    msgid is read with none."""
    said = ev.Said("bob", "hi", "c0ffee1")
    assert wire.dumps(said) == '["Said","bob","hi","c0ffee1"]'
    validator = Validator(1024)
    got = validator.event(json.loads(wire.dumps(said)))
    assert (got, got.msgid) == (said, "c0ffee1")
    for event in (ev.Acted("bob", "waves", "c0ffee2", r"+draft/reply=x;+a=b\sc"),
                  ev.PrivateMessage("bob", "psst", "c0ffee3", "+typing=active"),
                  ev.Tagged("bob", "c0ffee4", "+typing=paused"),
                  ev.PrivateTagged("bob", "c0ffee5", "+x")):
        got = validator.event(json.loads(wire.dumps(event)))
        assert (got, got.msgid) == (event, event.msgid)
    old = validator.event(["Said", "bob", "hi"])
    assert (old, old.msgid) == (ev.Said("bob", "hi"), "")
    for bad_id in ("a b", "x" * 65, "é", 7, None):
        with pytest.raises(Rejected):
            validator.event(["Said", "bob", "hi", bad_id])
    for bad_tags in ("+a b", "noplus=1", "+a=b\n", "+a;;+b", "+" + "a" * 4094, 7):
        with pytest.raises(Rejected):
            validator.event(["Tagged", "bob", "c0ffee6", bad_tags])


def test_a_chat_lines_account_crosses_nodes_checked_and_left_out_for_a_guest():
    """A logged-in speaker's account (IRC's account-tag) goes with its chat lines; a guest's
    lines stay four fields; read back, the account is checked as a name."""
    validator = Validator(1024)
    logged_in = ev.Said("bob", "hi", "c0ffee7", "", "bob")
    assert wire.dumps(logged_in) == '["Said","bob","hi","c0ffee7","","bob"]'
    assert validator.event(json.loads(wire.dumps(logged_in))).account == "bob"
    assert wire.dumps(ev.PrivateMessage("bob", "psst", "c0ffee8")) == \
        '["PrivateMessage","bob","psst","c0ffee8"]'
    for bad in ("bad name", "", 7):
        with pytest.raises(Rejected):
            validator.event(["Said", "bob", "hi", "c0ffee9", "", bad])


@pytest.mark.parametrize("event, text", [
    (ev.Joined("bob", "dev", "bob"), '["Joined","bob","dev","bob"]'),
    (ev.Left("bob", "dev", None, "bob"), '["Left","bob","dev",null,"bob"]'),
    (ev.Renamed("guest-1", "bob", None, "bob"), '["Renamed","guest-1","bob",null,"bob"]'),
    (ev.TopicSet("bob", "dev", "plans", "bob"), '["TopicSet","bob","dev","plans","bob"]'),
    (ev.InvitedTo("bob", "dev", "bob"), '["InvitedTo","bob","dev","bob"]'),
])
def test_joins_parts_renames_topics_and_invitations_carry_the_account_checked(event, text):
    """The account of who joins, parts, renames, sets a topic or invites crosses nodes with
    the line (account-tag there); a guest's line is the line it was before; read back, the
    account is checked as a name."""
    validator = Validator(1024)
    assert wire.dumps(event) == text
    assert validator.event(json.loads(text)) == event
    guest = dataclasses.replace(event, account=None)
    assert wire.dumps(guest) == text.rsplit(",", 1)[0].removesuffix(",null") + "]"
    with pytest.raises(Rejected):
        validator.event(json.loads(text.replace('"bob"]', '"no way"]')))


def test_a_member_record_carries_an_irc_clients_names_checked():
    """An IRC client's user name and real name (WHOIS on another node) make a record of
    nine fields; a line client's keeps its shorter form; bad names are refused."""
    from chatd.cluster.leases import member_record

    validator = Validator(1024)
    record = member_record("alice", None, "127.0.0.1:1", 1.5, (), None, None,
                           ("alice", "Alice Liddell"))
    assert len(json.loads(record)) == 9
    member = validator.member(record)
    assert (member.username, member.realname, member.away) == ("alice", "Alice Liddell", None)
    assert len(json.loads(member_record("bob", "dev", "127.0.0.1:2", 1.5, ("dev",)))) == 4
    assert validator.member(member_record("bob", "dev", "p", 1.5, ("dev",), None, "brb")).realname == ""
    for bad in (("a b", "x"), ("a" * 25, "x"), ("a", 7), (None, "x"), ("a", "x" * 101)):
        with pytest.raises(Rejected):
            validator.member(json.dumps(["alice", None, "p", 1.5, [], None, None, *bad]))
    with pytest.raises(Rejected):  # eight fields: neither form
        validator.member(json.dumps(["alice", None, "p", 1.5, [], None, None, "alice"]))
