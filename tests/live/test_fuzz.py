"""Fuzzing (hypothesis): hostile bytes against the framer, the sanitiser, the admin parser, and
a live chatd.

Targets, and what each must hold whatever the input:

1. ``LineFramer`` + ``decode`` + ``parse`` (pure): any bytes in any segmentation give the same
   lines as a reference model, never raise, never buffer more than one line's worth, and every
   line comes out as valid UTF-8 with no control character (TAB aside), no longer than the limit.
2. ``adminproto.parse_request`` (pure): any bytes give a ``Request`` that satisfies the schema,
   or an ``AdminError`` whose code is one of ``adminproto.ERRORS``; never another exception.
3. The live admin socket: any request line gets one well-formed reply, never ``internal_error``,
   and the connection goes on.
4. A live chatd fed random byte streams by several clients at once, randomly segmented and
   ended (FIN, RST, /quit, half-close): it keeps answering a well-behaved client, everything it
   sends anyone is display-safe, and its threads and descriptors return to baseline.

Budgets: ``make test`` runs the bounded numbers below (deterministic: conftest's "chatd"
profile derandomizes); ``make fuzz`` sets ``CHATD_FUZZ=long`` for the long, randomised run.
The number of inputs each target tried is printed at the end of the run (FigureBook).
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from support.admin import Admin
from support.client import ConnectionClosed
from support.display import CONTROL, check_line
from support.procfs import proc_figures, settle
from support.sockets import rst_close
from support.traffic import run_in_threads

from chatd.admin import protocol as adminproto
from chatd.admin.protocol import AdminError, Request, parse_request
from chatd.line.framing import LINE_TOO_LONG, LineFramer
from chatd.line.parse import Command, Message, parse
from chatd.text import decode, sanitize

LONG = os.environ.get("CHATD_FUZZ") == "long"

# The long run explores new inputs each time, and keeps what fails in .hypothesis/ so that the
# next `make fuzz` tries it first. (HYPOTHESIS_PROFILE=fuzz cannot select it: conftest loads
# that variable's profile before this module has registered "fuzz".)
settings.register_profile("fuzz", parent=settings.get_profile("chatd"), derandomize=False,
                          database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
if LONG:
    settings.load_profile("fuzz")


def budget(short: int, long: int) -> int:
    return long if LONG else short


#: Inputs tried per target (every call of a test body, explicit examples and shrinking included).
TRIED: collections.Counter = collections.Counter()

@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    from support.figures import BOOK

    BOOK.attach(request.config)
    for target, count in TRIED.items():
        BOOK.add("fuzz", target=target, inputs=count, profile="long" if LONG else "short")


# -- 1. framer, decode, parse ------------------------------------------------------------------

SPECIALS = [
    b"\n", b"\r\n", b"\r", b"\t", b"\x00", b"\x07", b"\x08", b"\x1b[2J\x1b[H", b"\x1b]0;pwned\x07",
    b"\x7f", b"\xc2\x85", b"\xc2\x9b31m", b"\xe2\x80\xae", b"\xe2\x80\xa8", b"\xef\xbb\xbf",
    b"\xff", b"\xfe", b"\xc3", b"\xa9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
    b"\xf0\x9f\x92\xa9", "é".encode(), b"/", b"//", b"/nick ", b"/join #", b"/msg ", b"/me ",
]
RUNS = [b"x", b"\xe9", b"\r", b"\x1b", b"\n", b" "]

piece = st.one_of(
    st.binary(max_size=48),
    st.sampled_from(SPECIALS),
    st.text(max_size=24).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda b, n: b * n, st.sampled_from(RUNS), st.integers(0, 600)),
)
stream = st.lists(piece, max_size=30).map(b"".join)


@st.composite
def segmented(draw, data=stream):
    """A byte stream and a random segmentation of it (as TCP may deliver it)."""
    whole = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=12)))
    bounds = [0, *cuts, len(whole)]
    return whole, [whole[a:b] for a, b in zip(bounds, bounds[1:])]


def reference_lines(whole: bytes, limit: int) -> list:
    """docs/protocol.md §1 framing, written the obvious way over the whole stream at once."""
    *lines, partial = whole.split(b"\n")
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(LINE_TOO_LONG if len(line) > limit else line)
    if len(partial) > limit + 1:  # reported as soon as it cannot fit any more (+1: a CR)
        out.append(LINE_TOO_LONG)
    return out


def check_text(text: str, limit: int) -> None:
    bad = [c for c in text if c in CONTROL]
    assert not bad, f"control characters {bad!r} survived in {text!r}"
    text.encode("utf-8")  # strict: raises on a lone surrogate
    assert len(text) <= limit, f"{len(text)} characters from a line of at most {limit} bytes"


@settings(max_examples=budget(300, 20_000))
@given(segmented(), st.one_of(st.integers(1, 80), st.sampled_from([64, 1024]), st.integers(64, 2048)))
@example((b"a" * 70 + b"\r\n", [b"a" * 70, b"\r", b"\n"]), 70)
@example((b"b" * 72 + b"\nok\n", [b"b" * 72, b"\nok\n"]), 70)
@example((b"\x1b[31mred\x9b\xc2\x9bX\r\n", [b"\x1b[31mred\x9b\xc2", b"\x9bX\r\n"]), 64)
def test_framer_and_sanitiser_any_bytes_any_segmentation(segments, limit):
    TRIED["framer+decode+parse"] += 1
    whole, chunks = segments
    framer = LineFramer(limit)
    framed = []
    for chunk in chunks:
        framer.feed(chunk)
        while (line := framer.next_line()) is not None:
            framed.append(line)
        # the recvq never holds more than one unfinished line (+ CR): memory is bounded
        assert framer.pending_bytes <= limit + 1
    assert framed == reference_lines(whole, limit)
    for raw in framed:
        if raw is LINE_TOO_LONG:
            continue
        assert len(raw) <= limit and b"\n" not in raw
        text = decode(raw)
        check_text(text, limit)
        parsed = parse(text)
        assert parsed is None or isinstance(parsed, (Message, Command))
        if isinstance(parsed, Command):
            check_text(parsed.args, limit)


@settings(max_examples=budget(200, 20_000))
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=["Cs"])))
def test_sanitize_any_text(text):
    TRIED["sanitize(text)"] += 1
    clean = sanitize(text)
    assert not [c for c in clean if c in CONTROL]
    assert sanitize(clean) == clean
    assert clean == "".join(c for c in text if c not in CONTROL)  # removes exactly those


# -- 2. the admin request parser ---------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=16))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@st.composite
def admin_object(draw, value=json_value, scalar=json_scalar, text=st.text(max_size=40),
                 floats=st.floats(), integers=st.integers(), addresses=None,
                 commands=sorted(adminproto.COMMANDS)):
    """A request-shaped JSON object: mostly a real command with mostly-right arguments, so
    that most inputs get past the parser into the handlers (where the bugs live)."""

    def chance(percent: int) -> bool:
        return draw(st.integers(0, 99)) < percent

    cmd = draw(st.sampled_from(commands)) if chance(85) else draw(value)
    obj = {}
    if chance(60):
        obj["id"] = draw(scalar) if chance(90) else draw(value)
    if chance(95):
        obj["cmd"] = cmd
    schema = adminproto.COMMANDS.get(cmd, {}) if isinstance(cmd, str) else {}
    args = {}
    for name, (types, required) in schema.items():
        if (required and chance(95)) or chance(50):
            if chance(80):
                if addresses is not None and name == "address":
                    args[name] = draw(addresses)
                else:
                    args[name] = draw(_of_types(types, scalar, text, floats, integers))
            else:  # the wrong type: bool is an int in Python, but not an argument here
                args[name] = draw(st.booleans() if chance(50) else value)
    if chance(10):
        args[draw(st.text(max_size=8))] = draw(value)
    if chance(90):
        obj["args"] = args
    elif chance(50):
        obj["args"] = draw(value)
    return obj


def _of_types(types, scalar, text, floats, integers):
    options = []
    if str in types:
        options.append(text)
    if int in types:
        options.append(integers)
    if float in types:
        options.append(floats)
    return st.one_of(options) if options else scalar


@st.composite
def admin_line(draw):
    """Bytes of a request line: random bytes, or a request-shaped object, possibly mangled."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(admin_object()), ensure_ascii=draw(st.booleans()))
    line = text.encode("utf-8", "surrogatepass")
    how = draw(st.integers(0, 5))
    if how == 0 and line:
        line = line[: draw(st.integers(0, len(line) - 1))]
    elif how == 1:
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.binary(min_size=1, max_size=4)) + line[at:]
    return line


@settings(max_examples=budget(300, 20_000))
@given(admin_line())
@example(b"[" * 100_000)  # nesting past the recursion limit
@example(b'{"cmd": "ban", "args": {"address": "1.2.3.4", "duration": 1' + b"0" * 5000 + b"}}")
@example(b'{"cmd": "status", "id": NaN}')
@example(b'\xff\xfe{\x00"\x00')  # a UTF-16 BOM: json.loads tries UTF-16
def test_admin_parser_any_bytes(line):
    TRIED["adminproto.parse_request"] += 1
    try:
        request = parse_request(line)
    except AdminError as exc:
        assert exc.code in adminproto.ERRORS, exc.code
        assert isinstance(exc.message, str) and exc.message
        assert not isinstance(exc.request_id, (dict, list))
        return
    assert isinstance(request, Request) and request.cmd in adminproto.COMMANDS
    assert isinstance(request.args, dict) and not isinstance(request.id, (dict, list))
    schema = adminproto.COMMANDS[request.cmd]
    assert set(request.args) <= set(schema)
    for name, (types, required) in schema.items():
        if required:
            assert name in request.args
        if name in request.args:
            value = request.args[name]
            assert isinstance(value, types) and (bool in types or not isinstance(value, bool))


# -- 3. the live admin socket ------------------------------------------------------------------

# Chat clients stay connected from 127.0.0.1: the addresses the fuzzer may ban avoid it (a ban
# of 127.0.0.1 would end the test's own clients, which is a ban working, not a finding).
fuzz_address = st.one_of(
    st.ip_addresses(network="192.0.2.0/24").map(str),
    st.ip_addresses(network="2001:db8::/64").map(str),
    st.builds("192.0.2.{}/{}".format, st.integers(0, 255), st.integers(24, 32)),
    st.text(max_size=20),
    st.sampled_from(["", " ", "::", "fe80::1%eth0", "10.0.0.0/33", "1.2.3.4/-1", "0x7f000001"]),
)


def _sane_number(kind):
    # "huge-duration": bans past the year 9999, inf or nan broke `bans` (fixed; regression test below)
    edges = [0, -1, 1, 0.5, 1e-300, 86400 * 365, math.inf, -math.inf, math.nan, 1e300, 3e11, 2**64]
    if kind is st.integers:
        edges = [e for e in edges if isinstance(e, int)]
    return st.one_of(kind(), st.sampled_from(edges))


def _safe_text(max_size=40):
    # "lone-surrogate": JSON can carry "\ud800", which replies could not encode (fixed; see below)
    text = st.text(max_size=max_size)  # hypothesis text() never holds a lone surrogate
    lone = st.sampled_from(["\ud800", "\udfff", "\udc00"])
    return st.one_of(text, st.builds(lambda a, s, b: a + s + b, text, lone, text))


live_scalar = st.one_of(st.none(), st.booleans(), _sane_number(st.integers),
                        _sane_number(st.floats), _safe_text(16))
live_value = st.recursive(live_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_safe_text(8), inner, max_size=3)), max_leaves=8)
#: Not shutdown and upgrade (they would end or replace the target), nor watch (it turns the
#: connection into an endless stream of events: test_watch.py).
SAFE_COMMANDS = sorted(set(adminproto.COMMANDS) - {"shutdown", "upgrade", "watch"})
#: Commands that take arguments come up three times as often: that is where handlers can fail.
WEIGHTED_COMMANDS = sorted(c for c in SAFE_COMMANDS for _ in range(3 if adminproto.COMMANDS[c] else 1))


@st.composite
def live_request(draw):
    obj = draw(admin_object(value=live_value, scalar=live_scalar, text=_safe_text(),
                            floats=_sane_number(st.floats), integers=_sane_number(st.integers),
                            addresses=fuzz_address, commands=WEIGHTED_COMMANDS))
    if obj.get("cmd") in ("shutdown", "upgrade", "watch"):  # only reachable as a junk value, but be sure
        obj["cmd"] = "status"
    return obj


def test_admin_socket_answers_every_request(chatd, book):
    srv = chatd(limits={"max_clients_per_ip": 64})
    admin = Admin(srv.admin_socket)
    chat = srv.connect_many(2)
    chat[0].set_nick("alice")
    chat[1].join("dev")

    @settings(max_examples=budget(300, 5_000), suppress_health_check=list(HealthCheck))
    @given(st.lists(live_request(), min_size=1, max_size=8))
    def one(batch):
        for obj in batch:
            TRIED["live admin socket (requests)"] += 1
            admin.send(json.dumps(obj).encode() + b"\n")
            raw = admin.read_raw()
            reply = json.loads(raw)
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), raw
            if not reply["ok"]:
                code = reply["error"]["code"]
                assert code in adminproto.ERRORS and code != "internal_error", (obj, reply)
            if not isinstance(obj.get("id"), (dict, list, float)):  # float: NaN != NaN
                assert reply["id"] == obj.get("id"), (obj, reply)
        # undo bans so the next example starts clean (and the disk does not fill up)
        for ban in admin.result("bans"):
            admin.result("unban", address=ban["address"])

    one()
    assert admin.result("status")["pid"] == srv.proc.pid
    fresh = srv.connect()  # chat still served after it all
    fresh.send_line("/rooms")
    fresh.wait_for(lambda line: line.startswith("*** lobby ("))
    for client in chat:  # whatever admin notices reached them were display-safe
        try:
            while True:
                check_line(client.read_line(timeout=0.2), repr(client))
        except (AssertionError, ConnectionClosed) as exc:
            if "control characters" in str(exc):
                raise
    assert not srv.find_events("admin_command", outcome="internal_error")
    assert not srv.find_events("admin_connection_failed")


# Bugs fuzzing found (now fixed), minimal, as regression tests.


@pytest.mark.parametrize("duration", ["1e300", "Infinity", "NaN", "3e11"])
def test_huge_ban_duration_is_refused_or_accepted_cleanly(server, duration):
    admin = Admin(server.admin_socket)
    admin.send(b'{"id": 1, "cmd": "ban", "args": {"address": "192.0.2.9", "duration": '
               + duration.encode() + b"}}\n")
    reply = admin.read()
    assert reply["ok"] or reply["error"]["code"] == "bad_args", reply
    assert admin.ask({"id": 2, "cmd": "bans"})["ok"]  # the list still works afterwards


@pytest.mark.parametrize("request_line", [
    b'{"id": "\\ud800", "cmd": "status"}',
    b'{"id": 1, "cmd": "kick", "args": {"target": "\\ud800"}}',
    b'{"id": 1, "cmd": "broadcast", "args": {"text": "hi \\udfff"}}',
    b'{"id": 1, "cmd": "ban", "args": {"address": "192.0.2.8", "reason": "\\ud800"}}',
], ids=["id", "kick-target", "broadcast-text", "ban-reason"])
def test_lone_surrogates_get_a_reply(server, request_line):
    admin = Admin(server.admin_socket, timeout=5)
    admin.send(request_line + b"\n")
    reply = admin.read()
    assert reply["ok"] or reply["error"]["code"] in ("bad_args", "not_found"), reply
    assert admin.ask({"id": 2, "cmd": "status"})["ok"]


# -- 4. a live chatd under random byte streams -------------------------------------------------

CHAT_PIECES = [
    b"\n", b"\r\n", b"/nick ", b"/join ", b"/join #", b"/msg ", b"/msg watcher ", b"/me ",
    b"/who\n", b"/rooms\n", b"/help\n", b"/quit", b"//", b"/", b"/NICK x\n", b"/join fuzz\n",
    b"\x1b[2J", b"\x00", b"\xff\xfe", b"\xc2\x9b", b"\xe2\x80\xae", b"\t", b"\r",
]
chat_piece = st.one_of(
    st.binary(max_size=32),
    st.sampled_from(CHAT_PIECES),
    st.text(max_size=16).map(str.encode),
    st.builds(lambda b, n: b * n, st.sampled_from([b"y", b"\n", b"\x1b"]), st.integers(0, 400)),
)
ENDINGS = ["close", "reset", "quit", "abandon"]
fuzz_client = st.tuples(
    segmented(st.lists(chat_piece, max_size=20).map(b"".join)).map(lambda s: s[1]),
    st.sampled_from(ENDINGS),
)


def _drain_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass  # reset (e.g. it sent more after /quit): what arrived before still counts
    return data


def _check_stream(data: bytes, who: str) -> None:
    """Everything chatd sends is CRLF-terminated UTF-8 lines without control characters."""
    *lines, tail = data.split(b"\n")
    assert tail == b"", f"{who}: partial line at the end: {tail[:100]!r}"
    for raw in lines:
        assert raw.endswith(b"\r"), f"{who}: line without CR: {raw[:100]!r}"
        check_line(raw[:-1].decode("utf-8"), who)


def _run_fuzz_client(port: int, chunks: list[bytes], ending: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for chunk in chunks:
            sock.sendall(chunk)
        if ending == "quit":
            sock.sendall(b"\n/quit fuzzed\n")
    except OSError:  # chatd may end a hostile client (quit, flood): its right
        ending = "abandon"
    if ending == "reset":
        rst_close(sock)
    elif ending == "abandon":  # close with whatever is unread: FIN or RST, as the kernel likes
        sock.close()
    else:  # close, quit: half-close, read everything up to chatd's close, check it
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = _drain_all(sock)
        sock.close()
        _check_stream(data, f"fuzz client ({ending})")


def test_live_chatd_under_random_streams(chatd, book):
    srv = chatd(limits={"rate": 500.0, "burst": 100, "max_line_bytes": 200, "recvq_bytes": 8192,
                        "max_clients_per_ip": 64})
    watcher = srv.connect()
    watcher.set_nick("watcher")
    baseline = proc_figures(srv.proc.pid)
    probes = iter(range(10**9))
    connections = []

    @settings(max_examples=budget(50, 1_000), suppress_health_check=list(HealthCheck))
    @given(st.lists(fuzz_client, min_size=1, max_size=5))
    def one(clients):
        TRIED["live chatd (streams)"] += 1
        connections.append(len(clients))
        run_in_threads(lambda c: _run_fuzz_client(srv.port, *c), clients, timeout=60)
        # a well-behaved client still gets a round trip, and the watcher saw only safe lines
        n = next(probes)
        probe = srv.connect()
        probe.send_line(f"probe {n}")
        watcher.wait_for(f"<{probe.nick}> probe {n}", timeout=15)
        for line in watcher.received:
            check_line(line, "watcher")
        watcher.received.clear()
        probe.close()
        settle(srv.proc.pid, baseline, timeout=20, what="chatd after the fuzz clients left")

    one()
    for line in watcher.sync(timeout=15):  # the last probe's notices, at most
        check_line(line, "watcher")
    book.add("fuzz", target="live chatd (connections)", inputs=sum(connections),
             note="fuzz clients over all examples")
    assert not srv.find_events("session_failed")
