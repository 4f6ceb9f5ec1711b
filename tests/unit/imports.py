"""What a fresh interpreter has imported after running some code."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable


def loaded_after(code: str, modules: Iterable[str]) -> list[str]:
    """Which of ``modules`` a new Python process holds once ``code`` has run, sorted."""
    probe = f"{code}\nimport sys\nprint(sorted({set(modules)!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(out.stdout.strip()))
