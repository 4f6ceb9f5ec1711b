"""What a service refuses at start: placeholder secrets, and an API open to the network
without keys.

``.env.example`` ships ``change-me`` for every secret; compose's ``${VAR:?}`` only checks that
a value is set, so a copied example file would start a stack whose database password and
Flower login are public. The API without keys (the default, fine on loopback) would serve
every collection to anyone who can reach a public address. Both are refused here, with the
fix in the message; ``--insecure`` (or ``EMBEDQ_INSECURE=true``) allows the open API knowingly,
with a warning in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from sqlalchemy.engine import make_url

from embedq.tasks.settings import Settings

log = logging.getLogger(__name__)

PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me", "placeholder", "secret"})
"""Secret values that only an example file would hold."""

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def placeholder_secrets(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """The settings whose secret is still a placeholder, named for the message."""
    found = []
    password = make_url(settings.db_url).password
    if password is not None and password.lower() in PLACEHOLDERS:
        found.append("the database password (POSTGRES_PASSWORD / EMBEDQ_DATABASE_URL)")
    basic = environ.get("FLOWER_BASIC_AUTH", "")
    if any(pair.partition(":")[2].lower() in PLACEHOLDERS for pair in basic.split(",")):
        found.append("Flower's password (FLOWER_BASIC_AUTH)")
    return found


def start_problem(
    service: str,
    host: str | None,
    settings: Settings,
    *,
    insecure: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """Why ``service`` ("api", "flower", "worker") must not start as configured, or None."""
    placeholders = placeholder_secrets(settings, environ)
    if placeholders:
        return (
            f"{' and '.join(placeholders)} still hold the example's placeholder: "
            "set real secrets (in .env for docker compose) before starting"
        )
    if host is None or host in LOOPBACK:
        return None
    insecure = insecure or settings.insecure
    if service == "api" and not settings.api_keys:
        if insecure:
            log.warning(
                "SERVING THE API ON %s WITHOUT API KEYS: anyone who can reach this address "
                "can read, change and delete every collection",
                host,
            )
            return None
        return (
            f"refusing to serve the API on {host} without API keys: set EMBEDQ_API_KEYS=true "
            "and create a key with 'embedq keys create NAME', or pass --insecure"
        )
    if service == "flower" and not environ.get("FLOWER_BASIC_AUTH") and not insecure:
        return (
            f"refusing to serve Flower on {host} without a login: set FLOWER_BASIC_AUTH="
            "user:password, or pass --insecure"
        )
    return None
