"""The admin command table (chatd/admin/commands.py) against the protocol's schema: every
command the protocol accepts has a handler, and each handler takes exactly the arguments the
schema allows, so a request that parses always reaches a handler that can take it; and what
the ``admin_command`` event may show of the arguments (never a password)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from chatd.admin import protocol as adminproto
from chatd.admin.commands import TABLE, AdminCommands, AdminContext


def test_every_protocol_command_has_a_handler_and_no_more():
    assert set(TABLE) == set(adminproto.COMMANDS)


def test_each_handler_takes_the_context_then_exactly_the_schema_arguments():
    for name, spec in TABLE.items():
        params = list(inspect.signature(spec.handler).parameters.values())
        assert params[0].name == "ctx", name
        taken = {p.name: p.default is inspect.Parameter.empty for p in params[1:]}
        schema = {arg: required for arg, (_, required) in adminproto.COMMANDS[name].items()}
        assert taken == schema, name


def test_only_the_upgrades_record_who_asks_and_only_broadcast_and_topic_text_is_chat():
    assert {name for name, spec in TABLE.items() if spec.asks} == {"upgrade", "handover"}
    assert {name: spec.chat_args for name, spec in TABLE.items() if spec.chat_args} == \
        {"broadcast": ("text",), "room_topic": ("text",)}


def test_every_password_argument_and_room_key_is_a_secret():
    with_password = {name for name, schema in adminproto.COMMANDS.items() if "password" in schema}
    assert with_password == {"account_add", "account_passwd"}
    assert {name: spec.secret_args for name, spec in TABLE.items() if spec.secret_args} == \
        {**dict.fromkeys(with_password, ("password",)), "room_mode": ("key",)}


@pytest.mark.parametrize("log_messages", [False, True])
def test_a_secret_is_never_loggable_chat_only_with_log_messages(log_messages):
    commands = AdminCommands(_context(log_messages=log_messages))
    assert commands.loggable("account_add", {"name": "al", "password": "hunter2-x"}) == \
        {"name": "al"}
    assert commands.loggable("account_passwd", {"name": "al", "password": "hunter2-x"}) == \
        {"name": "al"}
    shown = commands.loggable("broadcast", {"text": "hi", "room": "dev"})
    assert shown == ({"text": "hi", "room": "dev"} if log_messages else {"room": "dev"})


def test_account_commands_without_accounts_answer_accounts_off():
    """A hub run without accounts (AdminContext.accounts is None) says so."""
    commands = AdminCommands(_context())
    for name, schema in adminproto.COMMANDS.items():
        if TABLE[name].handler.__module__ != "chatd.admin.accounts":
            continue
        args = {arg: "x" for arg in schema}
        with pytest.raises(adminproto.AdminError) as caught:
            commands.run(name, args)
        assert caught.value.code == "accounts_off", name
        assert caught.value.message == "accounts are not available here"


def _context(log_messages: bool = False) -> AdminContext:
    config = SimpleNamespace(log_messages=log_messages)
    return AdminContext(hub=None, flusher=None, bans=None, config=lambda: config, reload=None,
                        request_shutdown=None, facts=None, bus=None)
