"""``embedq keys``: create, list and revoke the API's keys (in the database, no HTTP)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from embedq.api.clihelp import add_command, json_flag
from embedq.api.commands import ready_runtime
from embedq.api.output import print_table
from embedq.storage.keys import UnknownKey, create_key, list_keys, revoke_key
from embedq.tasks.errors import BadInput


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def keys(args: argparse.Namespace) -> int:
    rt = ready_runtime(read_only=args.action == "list")
    if args.action == "create":
        try:
            with rt.sessions.begin() as session:
                key_id, key = create_key(session, args.name)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        if args.json:
            _out({"id": key_id, "name": args.name.strip(), "key": key})
        else:
            print(key)
            print(
                f"API key {key_id} ({args.name.strip()}) created; it is shown only this once.",
                file=sys.stderr,
            )
        return 0
    if args.action == "revoke":
        try:
            with rt.sessions.begin() as session:
                row, now = revoke_key(session, args.ref)
                key_id, prefix = row.id, row.prefix
        except UnknownKey as exc:
            raise BadInput(str(exc)) from exc
        print(f"API key {key_id} ({prefix}) {'revoked' if now else 'was already revoked'}")
        return 0
    with rt.sessions() as session:
        rows = list_keys(session)
    if args.json:
        _out(rows)
        return 0
    if not rows:
        print("no API keys (embedq keys create NAME)")
        return 0
    print_table(
        ["id", "prefix", "name", "state", "created", "last used", "revoked"],
        [
            [
                item["id"],
                item["prefix"],
                item["name"],
                "revoked" if item["revoked_at"] else "active",
                item["created_at"],
                item["last_used_at"] or "never",
                item["revoked_at"],
            ]
            for item in rows
        ],
    )
    return 0


def add_commands(sub: Any) -> None:
    p = add_command(
        sub,
        "keys",
        "API keys: create, list, revoke",
        ["embedq keys create admin", "embedq keys list", "embedq keys revoke eq_3f2a9c"],
        "Manage the HTTP API's keys, in the database (EMBEDQ_API_KEYS=true turns them on).",
    )
    actions = p.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="create, list or revoke"
    )
    create = add_command(
        actions,
        "create",
        "create a key; it is printed only once",
        ["embedq keys create prometheus", "embedq keys create ci --json"],
    )
    create.add_argument("name", help="who or what the key is for")
    json_flag(create, "the id, name and key")
    listing = add_command(
        actions, "list", "list keys (never their secrets)", ["embedq keys list --json"]
    )
    json_flag(listing, "the keys")
    revoke = add_command(
        actions,
        "revoke",
        "revoke a key at once",
        ["embedq keys revoke 3", "embedq keys revoke eq_3f2a9c"],
    )
    revoke.add_argument("ref", metavar="ID_OR_PREFIX", help="the key's id or prefix")
    p.set_defaults(func=keys)
