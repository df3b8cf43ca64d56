"""The admin command table (chatd/admin/commands.py) against the protocol's schema: every
command the protocol accepts has a handler, and each handler takes exactly the arguments the
schema allows, so a request that parses always reaches a handler that can take it."""

from __future__ import annotations

import inspect

from chatd.admin import protocol as adminproto
from chatd.admin.commands import TABLE


def test_every_protocol_command_has_a_handler_and_no_more():
    assert set(TABLE) == set(adminproto.COMMANDS)


def test_each_handler_takes_the_context_then_exactly_the_schema_arguments():
    for name, spec in TABLE.items():
        params = list(inspect.signature(spec.handler).parameters.values())
        assert params[0].name == "ctx", name
        taken = {p.name: p.default is inspect.Parameter.empty for p in params[1:]}
        schema = {arg: required for arg, (_, required) in adminproto.COMMANDS[name].items()}
        assert taken == schema, name


def test_only_the_upgrades_record_who_asks_and_only_broadcast_text_is_chat():
    assert {name for name, spec in TABLE.items() if spec.asks} == {"upgrade", "handover"}
    assert {name: spec.chat_args for name, spec in TABLE.items() if spec.chat_args} == \
        {"broadcast": ("text",)}
