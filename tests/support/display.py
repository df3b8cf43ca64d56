"""The display-safety rule every line chatd sends must keep (docs/protocol.md §1)."""

#: Characters that must never reach another client's terminal (docs/protocol.md §1): C0 except
#: TAB, DEL, C1, and the bidi/format characters that change how other text is shown.
CONTROL = frozenset(chr(c) for c in [
    *range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028,
    0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF])


def check_line(line: str, who: str = "") -> str:
    """A line chatd sent (already decoded strictly as UTF-8, CRLF removed) must hold no control
    character (TAB allowed) and no stray CR/LF."""
    bad = sorted({f"U+{ord(c):04X}" for c in line if c in CONTROL})
    assert not bad, f"{who}: control characters {bad} reached a client: {line!r}"
    return line
