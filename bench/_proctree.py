"""CPU time of a process and all its descendants, read from /proc (Linux).

A bench that starts ``flotilla run`` reads the tree before and after a phase;
the difference, divided by the work done, is CPU per operation summed over
every process, steady on a busy machine where wall time is not.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of ``pid``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _name(pid: int) -> str:
    """A short name: ``flotilla serve shop.orders:Orders`` -> ``orders``; else the command."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [arg.decode(errors="replace") for arg in argv if arg]
    if "serve" in words and words.index("serve") + 1 < len(words):
        target = words[words.index("serve") + 1]
        return target.split(":")[0].rsplit(".", 1)[-1]
    if "flotilla" in words:  # the supervisor (run), the gateway...
        return " ".join(words[words.index("flotilla") + 1 :][:1]) or "flotilla"
    return " ".join(words[:3])


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """``{pid: (name, cpu seconds)}`` of ``root`` and every descendant alive now."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents[int(entry)], cpu[int(entry)] = found
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: (_name(pid), cpu[pid]) for pid in tree if pid in cpu}


def spent(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each process used between two readings, by name (a process born
    in between counts from zero; one that died is left out)."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        used[name] = used.get(name, 0.0) + seconds - start
    return used
