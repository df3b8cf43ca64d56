"""Directories and files chatd creates, with modes that do not depend on the umask it inherits.

Why: chatd is started from shells, init scripts, containers and systemd, with whatever umask
they have (000 is not rare). A bans file or a log that comes out world-readable leaks client
addresses (and chat, with ``log_messages``); a world-writable directory lets anyone swap the
files chatd opens next. So chatd states the mode of everything it creates. The umask can only
take bits away from the mode given to ``open``/``mkdir``, never add any, so the result is at
most that mode whatever the umask. Files and directories that already exist are left alone:
their modes are the operator's choice.

No state, no threads of its own: called from the main thread (log file at start), the service
thread (log reopen on reload) and admin threads (saving bans).
"""

from __future__ import annotations

import errno
import os

__all__ = ["makedirs", "LOG_DIR_MODE", "LOG_FILE_MODE", "STATE_DIR_MODE", "STATE_FILE_MODE"]

#: A missing log directory: the owner writes, its group (e.g. adm) may read, others nothing.
LOG_DIR_MODE = 0o750
#: A new log file, the same way (what logrotate's ``create 0640`` and the unit's UMask=0027 give).
LOG_FILE_MODE = 0o640
#: The state directory and the files in it (bans): only chatd reads them; admins use chatctl.
STATE_DIR_MODE = 0o700
STATE_FILE_MODE = 0o600


def makedirs(path: str, mode: int) -> None:
    """Create directory ``path`` and every missing parent, each with ``mode``.

    ``os.makedirs`` applies its mode only to the last directory; the parents get
    ``0777 & ~umask``, which under umask 000 is world-writable. Raises OSError naming the
    directory that could not be created (ENOTDIR when a regular file is in the way).
    """
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if os.path.isdir(directory):
                continue  # another process made it meanwhile: fine
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", directory) from None
