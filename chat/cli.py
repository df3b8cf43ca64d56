"""The ``chat`` command (click): options, which face to show (terminal or pipe), exit
statuses. Runs in the main thread.

Exit statuses (docs/protocol.md §15):

    0  the user left: /quit, Ctrl-D, Ctrl-C, EOF on stdin
    1  the first connection could not be made (``chat: cannot connect to HOST:PORT: WHY``
       on stderr), or the server put us out (kicked, banned)
    2  usage error (click's own message)

No traceback reaches the user: anything unexpected is one ``chat: internal error`` line.
"""

from __future__ import annotations

import os
import ssl
import sys

import click

from chat.protocol import Identity
from chat.render import use_colour
from chat.supervisor import Outcome, Supervisor, Target

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555
DEFAULT_TLS_PORT = 5556  # chatd's tls_port default (docs/protocol.md §4)


def tls_context(insecure: bool) -> ssl.SSLContext:
    """The system's trusted CAs and hostname check, or with ``--insecure`` no checks."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def exit_status(outcome: Outcome | None) -> int:
    if outcome is not None and outcome.kind == "error":
        click.echo(f"chat: internal error: {outcome.reason}", err=True)
    return 0 if outcome is None or outcome.kind == "quit" else 1


def password_for(account: str) -> str:
    """``--login``'s password: ``CHAT_PASSWORD``, or asked on the terminal without echo."""
    password = os.environ.get("CHAT_PASSWORD")
    if password:
        return password
    if not sys.stdin.isatty():
        raise click.UsageError("--login needs CHAT_PASSWORD when stdin is not a terminal")
    return click.prompt(f"password for {account}", hide_input=True, err=True)


def _chat(host: str, port: int, context: ssl.SSLContext | None, nick: str | None,
          room: str | None, login: tuple[str, str] | None = None) -> int:
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if terminal:
        from chat import terminal as face  # prompt_toolkit only where it is used
        display = face.TerminalDisplay(use_colour(True, os.environ))
    else:
        from chat import pipe as face
        display = face.PipeDisplay()
    sup = Supervisor(Target(host, port, context), display,
                     Identity(wanted_nick=nick, wanted_room=room, login=login))
    sup.start()
    try:
        if not sup.wait_connected():
            if sup.outcome.kind == "failed":
                click.echo(f"chat: cannot connect to {host}:{port}: {sup.outcome.reason}",
                           err=True)
            return exit_status(sup.outcome)
        if terminal:
            face.run(sup)
        else:
            face.run(sup, display)
    except KeyboardInterrupt:  # Ctrl-C outside the prompt (pipe mode, or while leaving)
        sup.quit()
        sup.wait(2.0)
        return 0
    return exit_status(sup.outcome)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host", default=DEFAULT_HOST, required=False)
@click.argument("port", type=click.IntRange(1, 65535), required=False)
@click.option("--tls", is_flag=True, help="Use TLS (the port defaults to 5556, chatd's TLS port).")
@click.option("--insecure", is_flag=True,
              help="With --tls: do not check the server's certificate (a test server).")
@click.option("--nick", metavar="NAME", help="Take this nick once connected.")
@click.option("--room", metavar="ROOM", help="Join this room once connected.")
@click.option("--login", metavar="NAME",
              help="Log in to account NAME on every connection (the password is asked for "
                   "without echo, or read from CHAT_PASSWORD).")
def main(host: str, port: int | None, tls: bool, insecure: bool, nick: str | None,
         room: str | None, login: str | None) -> None:
    """Chat with a chatd server at HOST PORT (default 127.0.0.1 5555).

    On a terminal: a prompt with line editing and history, each line with its time. Otherwise
    stdin's lines are sent and the server's lines printed as received; EOF sends /quit.
    /quit, Ctrl-D and Ctrl-C leave. A dropped connection is made again, with the same nick,
    login and room.
    """
    if insecure and not tls:
        raise click.UsageError("--insecure needs --tls")
    if port is None:
        port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    context = tls_context(insecure) if tls else None
    if insecure:
        click.echo("chat: warning: --insecure: the server's certificate is not checked; "
                   "anyone on the way can read and change this chat", err=True)
    credentials = (login, password_for(login)) if login else None
    try:
        status = _chat(host, port, context, nick, room, credentials)
    except KeyboardInterrupt:
        status = 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        click.echo(f"chat: internal error: {type(exc).__name__}: {exc}", err=True)
        status = 1
    sys.exit(status)
