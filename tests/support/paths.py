"""Where the checkout is, and what a crash looks like in any output: constants many tests share."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last)"
