"""What outlives the process: room history (``history``: SQLite, Redis, or nothing) and the
ban list (``bans``), behind small interfaces the core and admin call.
"""
