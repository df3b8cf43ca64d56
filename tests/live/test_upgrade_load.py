"""An upgrade while every session is busy with input in hand (issue 22 §3, chatd/core/gate.py).

A session with lines buffered and a flood token for each handled them one after another and
checked the upgrade gate only where it read next: with many such sessions the upgrade waited
for them in vain (issue 22: rate 200, 248 clients, ``the sessions did not stop within 10 s``)
while newcomers waited in the kernel. Here a real chatd with ``rate = 200`` and a burst of
10,000 serves 80 clients in rooms of 5; each pastes 10,000 lines at once and then sends on at
the rate, from one non-blocking driver thread. ``chatctl upgrade --wait 4`` must succeed
meanwhile (before the fix: ``the sessions did not stop within 4 s``: the sessions were still
working through their pastes), a newcomer must be served, and every line must reach every
other member of its room once, in order.
"""

from __future__ import annotations

import selectors
import threading
import time

import pytest
from support.client import ChatClient
from support.waiting import wait_until
from test_upgrade import upgrade

ROOMS, MEMBERS = 16, 5
RATE = 200  # lines per second a session may handle ([limits] rate) ...
BURST = 10_000  # ... after a burst this big, which a paste of PASTE lines uses up
PASTE = 10_000
SEND_RATE = RATE  # after the paste: paced lines, as many as the rate lets through
WAIT = "4"  # chatctl upgrade --wait: the paste takes the old code longer than that to parse
LIMITS = {"rate": RATE, "burst": BURST, "max_clients_per_ip": ROOMS * MEMBERS + 10,
          "sendq_bytes": 64_000_000, "recvq_bytes": 4_000_000}


class RoomTraffic:
    """One thread drives every client: each sends ``N\\n`` lines, counting up: PASTE at
    once, then SEND_RATE a second (whatever the kernel does not take waits in ``_out``), and
    everything that arrives is kept. ``stop()`` ends the sending; the thread reads on until
    ``close()``."""

    def __init__(self, clients: list[ChatClient]) -> None:
        self.clients = clients
        self.data = [bytearray(client._buf) for client in clients]  # what the helpers left
        self.made = [0] * len(clients)  # lines generated (sent, or waiting in _out)
        self._out = [bytearray() for _ in clients]
        self._sending = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for client in self.clients:
            client.sock.setblocking(False)
        self._sending.set()
        self._thread.start()

    def stop(self) -> list[int]:
        """Stop making lines; returns how many each client made (all are sent eventually)."""
        self._sending.clear()
        with self._lock:
            return list(self.made)

    def unsent(self) -> int:
        with self._lock:
            return sum(len(out) for out in self._out)

    def received(self, i: int) -> bytes:
        with self._lock:
            return bytes(self.data[i])

    def close(self) -> None:
        self._closing.set()
        self._thread.join(10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for i, client in enumerate(self.clients):
            selector.register(client.sock, selectors.EVENT_READ, i)
        began = time.monotonic()
        while not self._closing.is_set():
            with self._lock:
                self._send(time.monotonic() - began)
            for key, _ in selector.select(0.005):
                try:
                    chunk = self.clients[key.data].sock.recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                if not chunk:  # closed: the test will find the lines missing
                    selector.unregister(key.fileobj)
                    continue
                with self._lock:
                    self.data[key.data] += chunk
        selector.close()

    def _send(self, elapsed: float) -> None:
        for i, client in enumerate(self.clients):
            if self._sending.is_set():
                due = PASTE + int(elapsed * SEND_RATE)
                if due > self.made[i]:
                    self._out[i] += b"".join(b"%d\n" % k for k in range(self.made[i], due))
                    self.made[i] = due
            if self._out[i]:
                try:
                    sent = client.sock.send(self._out[i])
                except (BlockingIOError, InterruptedError):
                    continue
                del self._out[i][:sent]


def count_from(data: bytes, nick: str) -> int:
    return data.count(f"\n<{nick}> ".encode()) + data.startswith(f"<{nick}> ".encode())


def numbers_from(data: bytes, nick: str) -> list[int]:
    prefix = f"<{nick}> ".encode()
    return [int(line[len(prefix):]) for line in data.split(b"\r\n") if line.startswith(prefix)]


@pytest.mark.slow
def test_an_upgrade_stops_sessions_that_always_have_paced_input_in_hand(chatd):
    server = chatd(limits=LIMITS)
    clients, rooms = [], []
    for k in range(ROOMS):  # rooms of their own: each line goes to MEMBERS - 1 others
        members = []
        for _ in range(MEMBERS):
            client = server.connect()
            client.join(f"r{k}")
            for earlier in members:
                earlier.wait_for(f"*** {client.nick} joined r{k}")
            members.append(client)
        rooms.append(list(range(len(clients), len(clients) + MEMBERS)))
        clients += members
    room_of = {i: room for room in rooms for i in room}
    pairs = [(i, j) for i in range(len(clients)) for j in room_of[i] if j != i]  # (to, from)
    traffic = RoomTraffic(clients)
    traffic.start()

    def counts() -> dict:
        data = [traffic.received(i) for i in range(len(clients))]
        return {(i, j): count_from(data[i], clients[j].nick) for i, j in pairs}

    try:
        wait_until(lambda: min(counts().values()) > 0, 60,
                   "every client receiving the others' lines", interval=0.2)
        newcomer: dict = {}

        def arrive():
            server.wait_event("upgrade_started", timeout=30)
            newcomer["client"] = ChatClient().connect(server.port, timeout=10)  # greeted

        arriving = threading.Thread(target=arrive, daemon=True)
        arriving.start()
        old_pid = server.pid
        m = upgrade(server, "--wait", WAIT)
        arriving.join(30)
        assert "client" in newcomer, "the newcomer was not greeted within 10 s"
        server.clients.append(newcomer["client"])
        made = traffic.stop()
        wait_until(lambda: traffic.unsent() == 0, 60, "every line handed to the kernel",
                   interval=0.2)

        def missing() -> list[str]:
            return [f"{clients[i].nick}<-{clients[j].nick} {n}/{made[j]}"
                    for (i, j), n in counts().items() if n < made[j]]

        wait_until(lambda: not missing(), 100,
                   lambda: "every line delivered; short: " + ", ".join(missing())[:2000],
                   interval=0.5)
    finally:
        traffic.close()
    for i, j in pairs:  # none lost, none twice, in order
        got = numbers_from(traffic.received(i), clients[j].nick)
        assert got == list(range(made[j])), (clients[i], clients[j], len(got), made[j])
    assert server.pid == old_pid and int(m[5]) >= len(clients), m[0]  # in place (reexec.py)
    newcomer["client"].send_line("/who")
    newcomer["client"].wait_for(lambda line: line.startswith("*** in lobby: "))
