"""What a bad setting raises: one error type the CLI, reload and chatctl all print as one line."""

from __future__ import annotations

__all__ = ["ConfigError", "Invalid"]


class ConfigError(Exception):
    """A configuration problem. `key` is the dotted key (`limits.rate`) or the file path;
    `str(err)` is one line, `"<key>: <message>"`, fit to print after `chatd: error: `."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        # One line whatever the cause: the CLI prints it as-is.
        self.message = " ".join(message.split("\n"))
        super().__init__(key, self.message)

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class Invalid(ValueError):
    """Raised by a value check with the rule the value broke ("must be …"); the loader turns
    it into a ConfigError naming the key, so a check need not know where its value came from."""
