"""CPU seconds spent by the processes of a distributed stack while a command runs, by role,
read from ``/proc`` (Linux): where the cores went, beside the wall time."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

ROLES = (
    ("worker -Q embed", "embed worker"),
    ("worker -Q index", "index writer"),
    ("postgres", "postgresql"),
    ("redis-server", "redis"),
)
"""What a process's command line holds, and the role it is counted under (first match)."""


@dataclass(frozen=True, slots=True)
class Sample:
    by_process: dict[int, tuple[str, float]]  # pid: (role, CPU seconds so far)
    children: float  # CPU seconds of this process's waited-for children (the commands)


def role(cmdline: str) -> str | None:
    return next((name for pattern, name in ROLES if pattern in cmdline), None)


def sample() -> Sample:
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = role((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if name is not None:
            fields = stat.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Sample(found, usage.ru_utime + usage.ru_stime)


def spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds by role between two samples; ``command`` for the children waited for."""
    out = {"command": after.children - before.children}
    for pid, (name, seconds) in after.by_process.items():
        then = before.by_process.get(pid, (name, 0.0))[1]
        out[name] = out.get(name, 0.0) + seconds - then
    return out


def line(seconds: dict[str, float], wall: float) -> str:
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{name} {value:.2f}" for name, value in seconds.items() if value >= 0.005)
    return f"CPU seconds meanwhile: {parts} (of {wall * cores:.2f} on {cores} cores)"
