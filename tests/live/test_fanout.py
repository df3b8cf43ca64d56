"""Fan-out under load: many talkers at once, and a client that never reads (docs/protocol.md §3 sendq)."""

from __future__ import annotations

import re
import threading
import time

import pytest
from support.traffic import run_in_threads

MESSAGE = re.compile(r"<(guest-\d+)> m (\d+) ")


def test_fifty_clients_chat_at_once(chatd):
    """Every message reaches every other member exactly once, in each sender's order, no echo."""
    n, per_client = 50, 20
    srv = chatd(limits={"max_clients_per_ip": 100, "rate": 1000.0, "burst": 1000})
    clients = srv.connect_many(n)
    start = threading.Barrier(n, timeout=30)

    def talk(client):
        start.wait()
        client.send_raw(b"".join(f"m {i} from {client.nick}\n".encode() for i in range(per_client)))
        seen: dict[str, int] = {}
        for _ in range((n - 1) * per_client):
            line = client.read_line(timeout=30)
            m = MESSAGE.fullmatch(line.rsplit(" from ", 1)[0] + " ")
            assert m, f"{client!r}: unexpected line {line!r}"
            sender, index = m.group(1), int(m.group(2))
            assert sender != client.nick, f"{client!r} got its own message back: {line!r}"
            assert line == f"<{sender}> m {index} from {sender}", line
            assert index == seen.get(sender, -1) + 1, f"{client!r}: {line!r} after #{seen.get(sender)}"
            seen[sender] = index
        assert len(seen) == n - 1 and set(seen.values()) == {per_client - 1}
        client.expect_silence(timeout=30)  # and nothing more: exactly once

    run_in_threads(talk, clients, timeout=90)


def test_client_that_never_reads_does_not_stall_the_room(chatd):
    """20 MB through the room: the reader gets all of it, the silent one is dropped.

    Paced at 5 MB/s (flood control; chatd may hold the whole paste as unread input): unpaced,
    a reader thread starved by a loaded machine for a moment would fall several MB behind and
    be dropped for sendq itself. The same for a moment's stall even paced: what chatd holds
    for a reader is sendq_bytes plus the kernel's capped send buffer (sndbuf_bytes), about
    0.1 s of this stream by default, so the reader gets 4 MiB of sendq (the kernel's autotuned
    buffer gave it that slack before sndbuf_bytes)."""
    srv = chatd(limits={"rate": 5000.0, "burst": 1000, "recvq_bytes": 32 * 1024 * 1024,
                        "sendq_bytes": 4 * 1024 * 1024})
    sender, reader = srv.connect_many(2)
    silent = srv.connect(rcvbuf=4096)  # reads its greeting, then never again
    silent_id = srv.client_id(silent)
    silent.send_line("/who")  # make sure it is in the lobby before the flood
    sender.expect(f"*** {silent.nick} joined lobby")
    reader.expect(f"*** {silent.nick} joined lobby")

    lines, size = 20_000, 1000
    body = "z" * (size - 10)
    payload = b"".join(f"{i:08d} {body}\n".encode() for i in range(lines))
    assert len(payload) >= 20_000_000

    result = {}

    def read_everything():
        notices = []
        for i in range(lines):
            line = reader.read_line(timeout=60)
            while line.startswith("*** "):
                notices.append(line)
                line = reader.read_line(timeout=60)
            assert line == f"<guest-1> {i:08d} {body}", f"message #{i}: {line[:60]!r}"
        result["notices"] = notices

    thread = threading.Thread(target=read_everything, daemon=True)
    thread.start()
    started = time.monotonic()
    sender.send_raw(payload)
    thread.join(120)
    assert not thread.is_alive(), f"reader still reading after {time.monotonic() - started:.1f}s"
    assert "notices" in result, "the reader thread failed (see its exception above)"

    gone = f"*** {silent.nick} left lobby (sendq exceeded)"
    if gone not in result["notices"]:
        reader.wait_for(gone, timeout=10)
    sender.wait_for(gone, timeout=10)
    assert result["notices"] in ([], [gone]), result["notices"]
    event = srv.wait_event("sendq_exceeded", client_id=silent_id)
    assert "peer" in event
    srv.wait_event("client_disconnected", client_id=silent_id, reason="sendq exceeded")
    sender.expect_silence()
    reader.expect_silence()


def test_sendq_exceeded_by_private_messages(chatd):
    """The same limit holds for /msg: a non-reading target is dropped, the sender is not slowed."""
    srv = chatd(limits={"rate": 100000.0, "burst": 100000, "sendq_bytes": 65536})
    sender, witness = srv.connect_many(2)
    silent = srv.connect(rcvbuf=4096)
    silent.set_nick("silent")
    sender.expect("*** guest-3 joined lobby")
    sender.expect("*** guest-3 is now known as silent")
    witness.expect("*** guest-3 joined lobby")
    witness.expect("*** guest-3 is now known as silent")
    text = "p" * 900
    gone = "*** silent left lobby (sendq exceeded)"
    # Enough for the kernel buffers (sndbuf_bytes, doubled by Linux) plus the 64 KiB queue,
    # many times; in batches whose replies (~46 KB) fit the sender's own 64 KiB queue, which
    # counts them from the moment they are queued, however far the flusher is behind.
    for _ in range(400):
        sender.send_raw(b"".join(f"/msg silent {text}\n".encode() for _ in range(50)))
        lines = sender.sync(timeout=30)
        if gone in lines:
            break
    else:
        pytest.fail("the silent client was never disconnected")
    assert all(ln in (f"*** -> silent: {text}", gone) or ln == "*** error: no such nick silent"
               for ln in lines), set(lines)
    witness.wait_for(gone)
    srv.wait_event("sendq_exceeded")
