"""chat: the terminal client for people without netcat (docs/protocol.md §15, SPEC §15).

The teaching client chatd grew from, done right: a socket, a thread that owns it, an input
loop. It speaks only the line protocol of docs/protocol.md §1 and imports nothing of the
daemon, so it stays a client any chatd (or any server with the same lines) can serve.

Two threads:
    main        the input loop: :mod:`chat.terminal` (prompt_toolkit, on a terminal) or
                :mod:`chat.pipe` (stdin to the server, the server to stdout); it only
                queues lines for the link and waits for it to end.
    chat-link   :class:`chat.supervisor.Supervisor`: connects, owns the socket
                (:mod:`chat.link` reads and writes it; nobody else touches it), hands each
                received line to the display, and reconnects with :mod:`chat.backoff` when
                the connection drops, taking back nick and room (:mod:`chat.protocol`).

Pure modules, tested as tables: :mod:`chat.protocol` (what the server's lines mean to a
client), :mod:`chat.render` (a line on a terminal: time, colour, no control characters),
:mod:`chat.backoff` (when to try again).
"""
