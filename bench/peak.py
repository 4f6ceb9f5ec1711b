"""``python -m bench.peak MODULE [ARGS]``: run MODULE as ``__main__`` and print this process's
peak resident set (VmHWM) to stderr at exit.

Asked of the child itself because ``wait4``'s ``ru_maxrss`` also counts the moments between
fork and exec, when the child still maps all of the parent's memory.
"""

from __future__ import annotations

import atexit
import runpy
import sys

from bench.common import peak_rss

MARK = "embedq-peak-rss-bytes"


def _report() -> None:
    print(f"{MARK} {peak_rss()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    atexit.register(_report)
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
