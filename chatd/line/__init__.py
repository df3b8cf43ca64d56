"""The line protocol (docs/protocol.md §1): what netcat, telnet, socat and ``chat`` speak.

It owns the bytes of one kind of client: framing (framing.py), telnet negotiation taken out of
the input (telnet.py), classifying a line (parse.py), the chat command table (commands.py) and
rendering events as the exact text sent (render.py). All but the command table are pure.
reader.py puts the input side together for one connection and protocol.py is the object core
sees (core/protocol.py): the session (one thread per client) drives the reader without knowing
the protocol; core (hub, rooms, flusher) speaks events, and the rendered bytes of a room line
are made once and shared by every member.
"""
