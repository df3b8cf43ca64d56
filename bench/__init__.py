"""chatd's benchmark suite: chatd against ngircd and a naive threaded server, side by side.

Run it with ``make bench`` (or ``make bench-quick``); see bench/README.md.
"""
