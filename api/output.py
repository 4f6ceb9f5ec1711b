"""What the CLI prints: tables with headers, JSON lines, and quiet ends on a closed pipe."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# What a shell reports for a process ended by SIGPIPE (128 + 13): `embedq jobs | head` is
# not an error worth a message, but a script can still tell the output was cut short.
CLOSED_PIPE_STATUS = 141


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns under a header row; numbers are right-aligned."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line([h.upper() for h in headers]))
    for row in cells:
        print(line(row))


def quiet_on_closed_pipe(run: Callable[[], int]) -> int:
    """Run a command; when its reader goes away (``| head``), stop without a traceback.

    Python's advice: point stdout at /dev/null so that the flush at exit cannot fail again.
    """
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE_STATUS
