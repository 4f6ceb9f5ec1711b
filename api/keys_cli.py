"""``embedq keys``: create, list and revoke the API's keys (in the database, no HTTP)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from api.commands import UserError, ready_runtime
from storage.keys import UnknownKey, create_key, list_keys, revoke_key


def _out(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def keys(args: argparse.Namespace) -> int:
    rt = ready_runtime()
    if args.action == "create":
        try:
            with rt.sessions.begin() as session:
                key_id, key = create_key(session, args.name)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
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
            raise UserError(str(exc)) from exc
        print(f"API key {key_id} ({prefix}) {'revoked' if now else 'was already revoked'}")
        return 0
    with rt.sessions() as session:
        rows = list_keys(session)
    if args.json:
        _out(rows)
        return 0
    for item in rows:
        state = f"revoked {item['revoked_at']}" if item["revoked_at"] else "active"
        used = item["last_used_at"] or "never used"
        print(f"{item['id']:>4}  {item['prefix']}  {item['name']:<20} {state:<10} {used}")
    if not rows:
        print("no API keys (embedq keys create NAME)")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key; it is printed only once")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("ref", metavar="ID_OR_PREFIX", help="the key's id or prefix")
    p.set_defaults(func=keys)
