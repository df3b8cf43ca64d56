"""The "naive" baseline: the classic teaching chat server that chatd grew out of.

One thread per client; each thread ``recv(1024)``s and ``send``s the raw chunk to every other
client, in the reading thread, with blocking sockets. There is no framing (a chunk may hold
half a line, or the halves of two), no output queue (a client that stops reading blocks the
sender's thread inside ``send``) and no Nagle tuning. That is the point: it is the design the
benchmark measures chatd against, so keep it naive. The only concessions to the benchmark are a
listen backlog as large as chatd's and a lock around the client list, without which the list
is mutated while other threads iterate over it.

Run by the benchmark (``bench/servers.py``) as::

    python bench/naive_server.py --port PORT
"""

from __future__ import annotations

import argparse
import socket
import threading

clients: list[socket.socket] = []
clients_lock = threading.Lock()


def handle(conn: socket.socket) -> None:
    try:
        while True:
            data = conn.recv(1024)
            if not data:
                break
            with clients_lock:
                others = [c for c in clients if c is not conn]
            for other in others:
                try:
                    other.send(data)
                except OSError:
                    pass
    except OSError:
        pass
    finally:
        with clients_lock:
            if conn in clients:
                clients.remove(conn)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(1024)
    while True:
        conn, _ = server.accept()
        with clients_lock:
            clients.append(conn)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
