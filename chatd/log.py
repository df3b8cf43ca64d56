"""structlog setup for chatd: one event per line, from any thread, to stderr or a file.

Named `log.py`, not `logging.py`, so it never shadows the standard library module.

Why it is more than a `structlog.configure()` call:
- Many session threads log at once. Every line is written by one `_Sink.write()` under one lock,
  so lines never interleave, and `reopen()` (SIGHUP, after logrotate) cannot race a write.
- SIGHUP may change the level. structlog's filtering loggers fix the level when their class is
  made, and session threads keep loggers bound long before a reload. So every chatd logger is an
  instance of one class, `_BoundLogger`, and `set_level()` swaps that class's methods for those
  of structlog's `make_filtering_bound_logger(level)`: a filtered-out call stays a bare
  `return None`, and already-bound loggers follow the new level.
- Loggers are not cached on first use, so `structlog.testing.capture_logs()` sees every event.
- `chatctl watch` (watch.py) takes a copy of events through a tap: `add_tap(fn)` makes `fn(event_dict)`
  run in the chain, on the logging thread, for every event at info or above, even when the log
  level is higher (the level is lowered to info while a tap is attached, and `_tap` drops the
  events below the configured level after the taps saw them). With no tap the chain pays one
  test of an empty tuple. A tap must not block or log; one that raises is ignored.
- A log file chatd creates is 0640 in a directory it creates 0750 (files.py), whatever the
  umask; an existing file keeps its mode.

Callers use `configure()` once in the main thread before starting threads, `get_logger()`
anywhere, and `set_level()`, `reopen()`, `fileno()` from the service thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import structlog

from chatd import files

__all__ = ["configure", "get_logger", "set_level", "reopen", "fileno", "add_tap", "remove_tap", "LEVELS"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Sink:
    """The one output stream. `path` None means sys.stderr, looked up at each write so that
    a test's or python-daemon's replacement of sys.stderr is honoured.

    A log file is written unbuffered, one ``os.write`` per event, so every event reaches the
    file when it is logged, and a write that fails part-way (disk full) is cut back off: the
    file only ever holds whole lines, and logging resumes cleanly once there is room again.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.path: str | None = None
        self.fd: int | None = None

    def write(self, line: str) -> None:
        with self.lock:
            try:
                if self.fd is None:
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()
                else:
                    _append_whole(self.fd, (line + "\n").encode("utf-8", "backslashreplace"))
            except (OSError, ValueError):
                # A full disk or a closed stderr must not kill the session thread that logged.
                pass

    def open(self, path: str | None) -> None:
        """Switch to `path` (None = stderr). Opens the new file before closing the old one,
        so a failure (OSError) leaves logging as it was."""
        new = _open_append(path) if path is not None else None
        with self.lock:
            old, self.fd, self.path = self.fd, new, path
        if old is not None:
            os.close(old)


def _open_append(path: str) -> int:
    """Open ``path`` for appending, creating a missing directory (0750) and file (0640) with
    those modes whatever the umask: logs hold client addresses, and with ``log_messages``
    chat, so they are never world-readable. Raises OSError (its ``filename`` says which)."""
    files.makedirs(os.path.dirname(path) or ".", files.LOG_DIR_MODE)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, files.LOG_FILE_MODE)


def _append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` completely or not at all (the caller holds the sink lock)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        try:
            os.ftruncate(fd, start)  # no half line left behind
        except OSError:
            pass
        raise


class _LineLogger:
    """The end of structlog's chain: receives the rendered line, whatever the level method."""

    __slots__ = ()

    def msg(self, message: str) -> None:
        _SINK.write(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


class _BoundLogger(structlog.make_filtering_bound_logger(logging.DEBUG)):  # type: ignore[misc]
    """The class of every chatd logger; `set_level()` rewrites its methods."""


_SINK = _Sink()
_LINE_LOGGER = _LineLogger()
#: The configured level, and the taps (replaced whole under _TAPS_LOCK; read without it).
_level = "info"
_TAPS: tuple = ()
_TAPS_LOCK = threading.Lock()
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
                  "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


def _apply_level(level: str) -> None:
    global _level
    _level = level
    number = LEVELS[level]
    if _TAPS:  # the taps see info and above whatever the log keeps (see _tap)
        number = min(number, logging.INFO)
    template = structlog.make_filtering_bound_logger(number)
    for name, method in vars(template).items():
        if not name.startswith("__"):
            setattr(_BoundLogger, name, method)


def add_tap(tap) -> None:
    """Have ``tap(event_dict)`` called for every event at info or above (see the docstring)."""
    global _TAPS
    with _TAPS_LOCK:
        _TAPS = (*_TAPS, tap)
        _apply_level(_level)


def remove_tap(tap) -> None:
    global _TAPS
    with _TAPS_LOCK:
        _TAPS = tuple(t for t in _TAPS if t != tap)
        _apply_level(_level)


def _tap(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    taps = _TAPS
    if taps:
        for tap in taps:
            try:
                tap(event_dict)
            except Exception:  # noqa: BLE001 - a watcher must never break a log call
                pass
        if _METHOD_LEVELS.get(method, logging.INFO) < LEVELS[_level]:
            raise structlog.DropEvent  # below the log level: only the taps wanted it
    return event_dict


def _event_first(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Put timestamp, level, event first in each JSON line, for people reading raw logs."""
    head = {key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict}
    head.update(event_dict)
    return head


def _use_json(fmt: str | None, path: str | None) -> bool:
    if fmt is not None:
        return fmt == "json"
    # Auto: JSON unless a person is watching; a file is never a terminal.
    if path is not None:
        return True
    return not (sys.stderr is not None and sys.stderr.isatty())


def _processors(json_lines: bool) -> list[Any]:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _tap,
        structlog.processors.StackInfoRenderer(),
    ]
    if json_lines:
        # format_exc_info turns exc_info into an `exception` string; JSON escapes its newlines,
        # so a traceback stays inside its one line.
        return [*shared, structlog.processors.format_exc_info, _event_first,
                structlog.processors.JSONRenderer()]
    colors = sys.stderr is not None and sys.stderr.isatty()
    return [*shared, structlog.dev.ConsoleRenderer(colors=colors)]


def configure(fmt: str | None, level: str, path: str | None) -> None:
    """Set up logging. `fmt` "json", "console" or None (auto: JSON unless writing to a terminal);
    `level` one of LEVELS; `path` a file to append to, or None for stderr.
    Raises OSError when the file cannot be opened, ValueError for an unknown level or format."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in (None, "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    _SINK.open(path)
    _apply_level(level)
    structlog.configure(
        processors=_processors(_use_json(fmt, path)),
        wrapper_class=_BoundLogger,
        logger_factory=lambda *args: _LINE_LOGGER,
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    """Change the minimum level of every logger, including already-bound ones (reload)."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    with _TAPS_LOCK:  # a watcher attaching meanwhile must not undo the new level
        _apply_level(level)


def reopen() -> None:
    """Reopen the log file at the same path (after logrotate moved it); no-op on stderr.
    Raises OSError and keeps the old file when the path cannot be opened."""
    if _SINK.path is not None:
        _SINK.open(_SINK.path)


def fileno() -> int | None:
    """The log file's descriptor (for python-daemon's files_preserve), or None on stderr."""
    return _SINK.fd


def get_logger(**initial_values: Any) -> Any:
    """A structlog logger with `initial_values` bound, e.g. get_logger(client_id=7, peer=...)."""
    return structlog.get_logger(**initial_values)
