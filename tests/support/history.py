"""Room history as a client sees it: a history block read off the wire, an entry without its
timestamp, the size ``/history`` shows, and the limits the history tests run with; for the
test_history*.py files."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from support.client import ChatClient

STAMP = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] "
FAST = {"rate": 1000, "burst": 1000}
ON = {"history_lines": 1000, "history_on_join": 10}  # the defaults


def read_block(client: ChatClient, room: str, timeout: float = 5.0) -> list[str]:
    """The next lines must be one history block of ``room``; returns its entries."""
    header = client.read_line(timeout)
    m = re.fullmatch(rf"\*\*\* history of {room} \((\d+) lines?\)", header)
    assert m, header
    entries = [client.read_line(timeout) for _ in range(int(m.group(1)))]
    assert client.read_line(timeout) == "*** end of history"
    return entries


def bare(entry: str) -> str:
    """An entry without its timestamp (checked to be one, and UTC, within a minute of now)."""
    m = re.match(STAMP, entry)
    assert m, entry
    when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(time.time() - when.timestamp()) < 60, entry
    return entry[m.end():]


def _history_size(client: ChatClient, room: str) -> int:
    """How many lines ``/history`` shows (room notices that arrive first are passed over)."""
    client.send_line("/history")
    header = client.wait_for(lambda line: line.startswith(f"*** history of {room} ("))
    count = int(header.rpartition("(")[2].split()[0])
    assert [client.read_line() for _ in range(count + 1)][-1] == "*** end of history"
    return count
