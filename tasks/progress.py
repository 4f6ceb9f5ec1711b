"""The terminal progress bar of an index job: documents settled out of the job's documents.

The bar counts what the job counts (``done + failed`` of ``total``; unchanged documents are
done at once). Its total is estimated up front from the inputs where that is cheap (lines of
a file, files of a folder), corrected as records are counted, and exact once the job is
sealed; the last update shows the finished job, so a finished bar ends at ``N/N``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from tqdm import tqdm

from embedq.storage.models import Job

# Counting lines reads the file once more; above this size the bar waits for the real count.
ESTIMATE_MAX_BYTES = 1 << 30
_TEXT_SUFFIXES = (".txt", ".md")


def estimate_records(paths: Sequence[str], fmt: str | None) -> int | None:
    """Roughly how many records ``paths`` hold, or None when unknown (stdin, huge files)."""
    total = 0
    for path in paths:
        if path == "-":
            return None
        if os.path.isdir(path):
            total += sum(
                1
                for _root, dirs, files in os.walk(path)
                for name in files
                if name.lower().endswith(_TEXT_SUFFIXES) and not name.startswith(".")
            )
            continue
        kind = fmt or os.path.splitext(path)[1].lower().lstrip(".")
        if kind in ("txt", "md", "text"):
            total += 1
            continue
        count = _lines(path)
        if count is None:
            return None
        total += max(0, count - 1) if kind in ("csv", "tsv") else count
    return total


def _lines(path: str) -> int | None:
    try:
        if os.path.getsize(path) > ESTIMATE_MAX_BYTES:
            return None
        count, last = 0, b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
        return count + (last != b"\n")
    except OSError:
        return None


class JobBar:
    """A tqdm bar on stderr that follows a job row."""

    def __init__(self, desc: str, *, enabled: bool, estimate: int | None = None) -> None:
        self.estimate = estimate
        self.bar = tqdm(
            desc=desc,
            total=estimate,
            unit="doc",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def show(self, job: Job) -> None:
        settled = job.done + job.failed
        if job.sealed or job.status.finished or self.estimate is None:
            total = job.total
        else:
            total = max(self.estimate, job.total)
        self.bar.total = total
        self.bar.n = min(settled, total) if total else settled
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
