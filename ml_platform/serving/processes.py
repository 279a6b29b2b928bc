"""The process table from /proc, and ending processes we started, by their ids.

Standard library only: the serving benchmark's parent process imports it and must stay small.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    ppid: int
    sid: int
    start: str  # start time since boot: with the pid, names the process
    ticks: int  # CPU time used (user + system), in clock ticks
    zombie: bool


def proc(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return Proc(
        int(fields[1]), int(fields[3]), fields[19], int(fields[11]) + int(fields[12]), fields[0] == "Z"
    )


def processes() -> dict[int, Proc]:
    """Every process of the machine, by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := proc(int(entry.name))) is not None:
            table[int(entry.name)] = found
    return table


def descendants(root: int, table: dict[int, Proc]) -> dict[int, Proc]:
    """The live descendants of ``root`` in ``table``."""
    found: dict[int, Proc] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, p in table.items():
            if p.ppid == parent and pid not in found and not p.zombie:
                found[pid] = p
                frontier.append(pid)
    return found


def kill_all(select: Callable[[int, Proc], bool], rounds: int = 10) -> list[int]:
    """SIGKILL the live processes ``select`` picks until none is left (a process may start another
    while dying); returns those still alive after ``rounds`` tries."""
    alive: list[int] = []
    for _ in range(rounds):
        alive = [pid for pid, p in processes().items() if not p.zombie and select(pid, p)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    return alive
