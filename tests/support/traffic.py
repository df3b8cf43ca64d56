"""Traffic from several clients at once: one thread per client, and paced senders whose
numbered lines a test reads back to check that nothing was lost, duplicated or reordered."""

from __future__ import annotations

import threading
import time


def run_in_threads(func, items, timeout: float) -> list:
    """Run ``func(item)`` for each item in its own thread; return the results in order.

    Re-raises the first exception; fails if any thread is still running after ``timeout``.
    """
    results = [None] * len(items)
    errors: list[BaseException] = []

    def body(i, item):
        try:
            results[i] = func(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i, it), daemon=True) for i, it in enumerate(items)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{alive} of {len(threads)} threads still running after {timeout}s"
    return results


def send_paced(client, word: str, count: int, gap: float = 0.01, pad: str = "") -> threading.Thread:
    """Start a thread sending ``WORD K PAD`` for K in 0..count-1, ``gap`` apart (pacing only:
    the fault or upgrade lands mid-traffic); :func:`lines_of` reads them back."""

    def body():
        for k in range(count):
            client.send_line(f"{word} {k} {pad}".rstrip())
            time.sleep(gap)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def lines_of(client, sender: str) -> list[int]:
    """The sequence numbers of ``sender``'s lines that ``client`` received, in order."""
    prefix = f"<{sender}> {sender} "
    return [int(line[len(prefix):].split()[0]) for line in client.received
            if line.startswith(prefix)]
