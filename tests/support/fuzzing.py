"""Hypothesis strategies for the fuzz targets of tests/live/test_fuzz.py: what hostile input
looks like (byte streams with their segmentation, admin request lines, requests for a live admin
socket, chat clients' byte streams and endings). The targets, what each must hold, and the
budgets are in test_fuzz.py; ``make fuzz`` runs that file."""

# Hypothesis strategies as a composite's defaults are the library's idiom, built once on purpose
# (pyproject.toml ignores B008 in test_fuzz.py, where these were, for the same reason).
# ruff: noqa: B008

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

from chatd.admin import protocol as adminproto

# -- 1. framer, decode, parse: byte streams ----------------------------------------------------

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


# -- 2. the admin request parser: request lines ------------------------------------------------

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


# -- 3. the live admin socket: requests --------------------------------------------------------

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
    # "huge-duration": bans past the year 9999, inf or nan broke `bans` (fixed; test_fuzz.py)
    edges = [0, -1, 1, 0.5, 1e-300, 86400 * 365, math.inf, -math.inf, math.nan, 1e300, 3e11, 2**64]
    if kind is st.integers:
        edges = [e for e in edges if isinstance(e, int)]
    return st.one_of(kind(), st.sampled_from(edges))


def _safe_text(max_size=40):
    # "lone-surrogate": JSON can carry "\ud800", replies could not encode it (fixed; test_fuzz.py)
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


# -- 4. a live chatd: clients' byte streams and endings ----------------------------------------

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
