"""The IRC protocol (docs/protocol.md §14): what irssi, weechat, ii and sic speak, onto the
same rooms, nicks and accounts as the line protocol (issue 27), on ``irc_port``.

Built as the line protocol is (chatd/line/): pure parts (message.py: the wire form;
registration.py: CAP, PASS, NICK, USER; render.py: events as IRC lines), the input side of
one connection (reader.py), the command tables (commands.py, channels.py, people.py,
operators.py, with targets.py between them) and the object core sees (protocol.py).
"""
