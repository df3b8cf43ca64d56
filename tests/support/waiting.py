"""Waiting for a condition with a deadline: the suite's only polling loops, so that no test
sleeps to synchronise and a loaded machine only makes a wait longer, never a test flaky."""

from __future__ import annotations

import time

import pytest


def wait_until(condition, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Poll ``condition()`` until it returns something true (returned); fail after ``timeout``.

    The interval is how often a condition is looked at, not a guess at how long something
    takes. ``what`` may be a callable, called on timeout, to describe the state the wait
    ended in.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def wait_gone(pid: int, timeout: float) -> bool:
    """Until process ``pid`` has exited (gone, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                gone = stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            gone = True
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.02)

