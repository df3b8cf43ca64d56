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
The number of inputs each target tried is printed at the end of the run (FigureBook). The
strategies (what the hostile inputs look like) are in tests/support/fuzzing.py.
"""

from __future__ import annotations

import collections
import json
import os
import socket

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from support.admin import Admin
from support.client import ConnectionClosed
from support.display import CONTROL, check_line
from support.fuzzing import admin_line, fuzz_client, live_request, segmented
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
