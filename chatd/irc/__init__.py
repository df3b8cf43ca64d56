"""The IRC protocol (docs/protocol.md §14): what irssi, weechat, ii and sic speak, onto the
same rooms, nicks and accounts as the line protocol (issue 27).

Built as the line protocol is (chatd/line/): pure parts first. So far: message.py, an IRC
message's wire form (tags, source, command, parameters) parsed and written, with the limits
of the Modern IRC documents; registration.py, a connection before it is registered (CAP,
PASS, NICK, USER). The listener, the protocol object and the command table come next
(docs/protocol.md §14 says what they will do); nothing here is wired to a port yet.
"""
