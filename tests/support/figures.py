"""The figures for the closing note: inputs per fuzz target, faults injected, soak before/after;
printed at the end of the pytest run and written as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest

from support.procfs import Figures


class FigureBook:
    """Collects rows ``(table, fields)`` during the run; prints them at the end of the session
    and writes them as JSON (``$CHATD_FIGURES`` or ``.pytest_cache/chatd-figures.json``).

    It registers itself as a pytest plugin on first use, so no conftest hook is needed.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict]] = []
        self._config = None

    def attach(self, config) -> FigureBook:
        if self._config is None:
            self._config = config
            config.pluginmanager.register(self, "chatd-figures")
        return self

    def add(self, table: str, **fields) -> None:
        self.rows.append((table, {k: (asdict(v) if isinstance(v, Figures) else v)
                                  for k, v in fields.items()}))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("chatd figures (fuzz inputs, faults injected, soak)")
        for table, fields in self.rows:
            tr.write_line(f"{table}: " + ", ".join(f"{k}={_show(v)}" for k, v in fields.items()))
        path = os.environ.get("CHATD_FIGURES") or str(self._config.rootpath / ".pytest_cache"
                                                      / "chatd-figures.json")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                json.dump([{"table": t, **f} for t, f in self.rows], fh, indent=1)
            tr.write_line(f"(written to {path})")
        except OSError as exc:
            tr.write_line(f"(could not write {path}: {exc})")


def _show(value) -> str:
    if isinstance(value, dict) and set(value) == {"threads", "fds", "rss_kb"}:
        return str(Figures(**value))
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


BOOK = FigureBook()


@pytest.fixture
def book(request) -> FigureBook:
    """The run's :class:`FigureBook` (loaded for every test through tests/conftest.py)."""
    return BOOK.attach(request.config)


def faults(book, fault: str, injected: int, **extra) -> None:
    """One row of the "faults" table: how many faults of a kind a test injected."""
    book.add("faults", fault=fault, injected=injected, **extra)
