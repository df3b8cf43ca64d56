"""The admin protocol (docs/protocol.md §6), shared by chatd and chatctl: framing, commands, error codes.

Standard library only, and no I/O beyond what its callers pass in, so chatctl can import it
without pulling in the daemon, and every rule here can be tested (and fuzzed) alone.

One JSON object per line, several requests per connection::

    {"id": 1, "cmd": "kick", "args": {"target": "alice", "reason": "spam"}}
    {"id": 1, "ok": true, "result": ...}
    {"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}

``id`` is optional (any JSON scalar, echoed back); ``args`` is optional (default ``{}``).
Every line written is strict JSON (RFC 8259): a number that is not finite (``1e999``
overflows to infinity in Python, ``NaN`` is not JSON at all) is refused as an id or an
argument, and :func:`encode` would rather fail than write ``Infinity``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

#: A request line longer than this is refused with ``line_too_long`` (and skipped).
MAX_REQUEST_BYTES = 64 * 1024
#: How long chatd's ``reload`` waits for its main thread (a reload reads one small file);
#: chatctl waits that long and a little more for the answer, whatever its ``--timeout``.
RELOAD_WAIT_SECONDS = 30.0

#: Stable error codes: scripts may rely on these names.
ERRORS = {
    "bad_json": "the request line is not valid JSON",
    "bad_request": "the request is not an object with a string 'cmd'",
    "line_too_long": f"the request line is longer than {MAX_REQUEST_BYTES} bytes",
    "unknown_command": "no such command",
    "bad_args": "missing, unknown or wrongly typed arguments",
    "not_found": "no such client, room or ban",
    "invalid_address": "not an IP address or network",
    "permission_denied": "not allowed to use this socket",
    "reload_failed": "the new configuration is invalid; the old one stays in force",
    "not_saved": "the change is in force but could not be saved",
    "busy": "too many admin connections, try again later",
    "timeout": "the daemon did not finish the command in time",
    "upgrading": "an upgrade is under way, try again in a moment",
    "upgrade_failed": "the new chatd could not take over; this one serves on",
    "internal_error": "the daemon failed to carry out the command",
    "history_off": "room history is off (history_lines = 0)",
    "cluster_unavailable": "the other nodes cannot be reached (the link to Redis is down)",
    "accounts_off": "accounts are not available here",
    "exists": "an account of that name exists already",
    "bad_password": "the password does not meet the rules",
    "accounts_unavailable": "the accounts store cannot be read or written; nothing was changed",
    "refused": "the room refused the change (the message says why)",
}

_TARGET = (int, str)
_NUMBER = (int, float)
_BOOL = (bool,)

#: command -> {argument: (accepted types, required)}
COMMANDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "status": {},
    "list": {"room": ((str,), False), "local": (_BOOL, False)},
    "nodes": {},
    "kick": {"target": (_TARGET, True), "reason": ((str,), False)},
    "broadcast": {"text": ((str,), True), "room": ((str,), False)},
    "rooms": {},
    "ban": {"address": ((str,), True), "duration": (_NUMBER, False), "reason": ((str,), False),
            "force": (_BOOL, False)},
    "unban": {"address": ((str,), True)},
    "bans": {},
    "mute": {"target": (_TARGET, True)},
    "unmute": {"target": (_TARGET, True)},
    "reload": {},
    "shutdown": {},
    "upgrade": {"timeout": (_NUMBER, False)},
    # under systemd: freeze and leave everything in the fd store, then exit (a restart job
    # is under way: chatctl systemd-stop, from ExecStop=)
    "handover": {"timeout": (_NUMBER, False)},
    "history": {"room": ((str,), True), "lines": ((int,), False)},
    "purge": {"room": ((str,), True)},
    # a subscription: the reply, then {"event": {...}} lines until the connection ends (§11)
    "watch": {"room": ((str,), False)},
    # accounts (SPEC §12); ``password`` is never logged (commands.Spec.secret_args)
    "account_add": {"name": ((str,), True), "password": ((str,), True)},
    "account_passwd": {"name": ((str,), True), "password": ((str,), True)},
    "account_disable": {"name": ((str,), True)},
    "account_enable": {"name": ((str,), True)},
    "account_delete": {"name": ((str,), True)},
    "accounts": {},
    "account": {"name": ((str,), True)},
    # rooms that belong to someone (SPEC §13): an operator's override of any room's state
    "room_show": {"room": ((str,), True)},
    "room_op": {"room": ((str,), True), "nick": ((str,), True)},
    "room_deop": {"room": ((str,), True), "nick": ((str,), True)},
    "room_topic": {"room": ((str,), True), "text": ((str,), True)},
    "room_mode": {"room": ((str,), True), "change": ((str,), True), "key": ((str,), False)},
    "room_delete": {"room": ((str,), True)},
}


class AdminError(Exception):
    """An error reply: ``code`` is one of :data:`ERRORS`, ``message`` says what happened."""

    def __init__(self, code: str, message: str | None = None, request_id=None) -> None:
        self.code = code
        self.message = message or ERRORS.get(code, code)
        self.request_id = request_id
        super().__init__(f"{self.code}: {self.message}")


class MalformedReply(AdminError):
    """The daemon's reply line is not a reply at all (a client-side finding, not an answer)."""

    def __init__(self) -> None:
        super().__init__("bad_json", "the daemon sent a malformed reply")


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict = field(default_factory=dict)
    id: object = None


def parse_request(line: bytes) -> Request:
    """One request line (without its LF) -> Request, or AdminError with the code to reply."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise AdminError("bad_json") from None
    if not isinstance(obj, dict):
        raise AdminError("bad_request")
    request_id = obj.get("id")
    if isinstance(request_id, (dict, list)):
        raise AdminError("bad_request", "'id' must be a string, number or null")
    if isinstance(request_id, float) and not math.isfinite(request_id):
        raise AdminError("bad_request", "'id' must be a finite number")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise AdminError("bad_request", request_id=request_id)
    if cmd not in COMMANDS:
        raise AdminError("unknown_command", f"unknown command {cmd[:64]!r}", request_id)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise AdminError("bad_args", "'args' must be an object", request_id)
    check_args(cmd, args, request_id)
    return Request(cmd, args, request_id)


def check_args(cmd: str, args: dict, request_id=None) -> None:
    schema = COMMANDS[cmd]
    for name in args:
        if name not in schema:
            raise AdminError("bad_args", f"{cmd}: unknown argument {name[:64]!r}", request_id)
    for name, (types, required) in schema.items():
        if name not in args:
            if required:
                raise AdminError("bad_args", f"{cmd}: missing argument {name!r}", request_id)
            continue
        value = args[name]
        # bool is a subclass of int: only an argument that asks for a bool takes one
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise AdminError("bad_args", f"{cmd}: {name!r} must be {wanted}", request_id)
        if isinstance(value, float) and not math.isfinite(value):
            raise AdminError("bad_args", f"{cmd}: {name!r} must be a finite number", request_id)


def encode(obj: dict) -> bytes:
    # A lone surrogate (from a request's "\ud800") is written back as that same JSON escape,
    # so any id or text echoed from a request can always be encoded. allow_nan=False: a
    # non-finite float raises ValueError here rather than going out as invalid JSON.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def request_line(cmd: str, args: dict | None = None, request_id=None) -> bytes:
    return encode({"id": request_id, "cmd": cmd, "args": args or {}})


def ok_line(request_id, result) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error_line(request_id, code: str, message: str | None = None) -> bytes:
    message = message or ERRORS.get(code, code)
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def parse_reply(line: bytes):
    """A reply line -> its ``result``; an error reply raises AdminError, a line that is not a
    reply at all raises MalformedReply."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise MalformedReply() from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise MalformedReply()
    if obj["ok"]:
        return obj.get("result")
    error = obj.get("error") or {}
    raise AdminError(str(error.get("code", "internal_error")), str(error.get("message", "")),
                     obj.get("id"))


# -- where the socket lives (docs/protocol.md §4) ---------------------------------------------------------

ENV_SOCKET = "CHATD_ADMIN_SOCKET"
#: RuntimeDirectory=chatd, seen from outside the unit. CHATD_TEST_SYSTEMD_SOCKET exists only so
#: that tests can put a root-only "systemd" socket somewhere other than the real /run/chatd,
#: which the machine (and other tests) may be using.
SYSTEMD_SOCKET = os.environ.get("CHATD_TEST_SYSTEMD_SOCKET") or "/run/chatd/admin.sock"


def socket_candidates(env=None, uid: int | None = None) -> list[str]:
    """The default admin socket paths, in docs/protocol.md §4 order (without the CHATD_ADMIN_SOCKET override).

    chatd binds the first; chatctl uses the first that exists (so ``sudo chatctl`` finds a
    chatd run by systemd), falling back to the first for its error message.
    """
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    paths = []
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may pass several, colon-separated; ours is the first
        paths.append(os.path.join(env["RUNTIME_DIRECTORY"].split(":")[0], "admin.sock"))
    if uid == 0:
        paths.append(SYSTEMD_SOCKET)
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "chatd", "admin.sock"))
    paths.append(f"/tmp/chatd-{uid}/admin.sock")
    return paths


def daemon_socket_path(env=None, uid: int | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(ENV_SOCKET) or socket_candidates(env, uid)[0]


def client_socket_path(env=None, uid: int | None = None) -> str:
    env = os.environ if env is None else env
    if env.get(ENV_SOCKET):
        return env[ENV_SOCKET]
    candidates = socket_candidates(env, uid)
    # Beyond docs/protocol.md §4: an operator in admin_group (not root) also finds a systemd-run chatd.
    for path in [*candidates, SYSTEMD_SOCKET]:
        if os.path.exists(path) and (path != SYSTEMD_SOCKET or not out_of_reach(path)):
            return path
    return candidates[0]


def out_of_reach(path: str = SYSTEMD_SOCKET) -> bool:
    """Whether a socket is (probably) there but this user may not connect to it: its directory
    cannot be searched (so we cannot even tell; /run/chatd is 0710 for the admin group), or
    the file is there without write permission for us (connect() needs it)."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return not os.access(path, os.W_OK)
