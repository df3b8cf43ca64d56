"""Where the checkout is, and what a crash looks like in any output: constants many tests share."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last)"
#: Every password a test gives chatd contains this (any case), so that every chatd the suite
#: starts can be checked at teardown for a password in its log (support/daemon.py): SPEC §12,
#: no password is logged at any level.
SECRET_MARK = "horse"
