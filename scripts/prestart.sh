#!/bin/sh
# Run once before the API and the workers start (the compose `migrate` service): wait until the
# database accepts connections, then bring its schema to the newest revision.
# EMBEDQ_DB_WAIT_SECONDS (default 60) bounds the wait.
set -eu

python - <<'PY'
import os
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from embedq.tasks.settings import get_settings

url = get_settings().db_url
# A host that drops packets would otherwise hang one attempt for minutes.
connect_args = {"connect_timeout": 5} if make_url(url).get_backend_name() == "postgresql" else {}
engine = create_engine(url, connect_args=connect_args)
deadline = time.monotonic() + float(os.environ.get("EMBEDQ_DB_WAIT_SECONDS", "60"))
while True:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        break
    except OperationalError as exc:
        if time.monotonic() >= deadline:
            print(f"prestart: the database is not reachable: {exc.orig}", file=sys.stderr)
            sys.exit(1)
        print("prestart: waiting for the database", file=sys.stderr)
        time.sleep(1)
engine.dispose()
PY

exec embedq db upgrade
