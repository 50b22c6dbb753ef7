"""Shared by the harness, the fake upstream and the load client: the reply text, /proc readers,
percentiles. Standard library only (the fake and the client must not import Django)."""

from __future__ import annotations

import glob
import math
import os
import re
import struct

# A message starting with this asks the fake upstream for a reply of K tokens instead of the
# default (used for the set-up probe: one token, no delays).
OVERRIDE = re.compile(r"^\[\[bench tokens=(\d+)\]\]")

_PROSE = (
    "the relay keeps every stream moving while the server stays calm under load and each "
    "reply reaches its reader in order with nothing lost between the upstream and the page"
)
_WORDS = _PROSE.split(" ")


def reply_tokens(n: int) -> list[str]:
    """The deterministic reply the fake upstream streams: prose with a paragraph break every
    40 tokens and some inline markdown, so the streaming renderer freezes blocks as in real use."""
    tokens = []
    for i in range(n):
        word = _WORDS[i % len(_WORDS)]
        if i % 40 == 39:
            tokens.append(f" {word}.\n\n")
        elif i % 40 == 0:
            tokens.append(f"**{word.capitalize()}**")
        elif i % 13 == 7:
            tokens.append(f" `{word}`")
        else:
            tokens.append(f" {word}")
    return tokens


def reply_text(n: int) -> str:
    return "".join(reply_tokens(n))


# --- /proc --------------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_stat_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat (all threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_sched_seconds(pid: int) -> float:
    """On-CPU time of a process's live threads from /proc/<pid>/task/*/schedstat (nanosecond
    resolution: /proc/<pid>/stat counts 10 ms ticks, too coarse for one stream)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


def cpu_both(pids: list[int]) -> tuple[float, float]:
    stat = sched = 0.0
    for pid in pids:
        stat += cpu_stat_seconds(pid)
        sched += cpu_sched_seconds(pid)
    return stat, sched


def system_busy_seconds() -> float:
    """CPU time all processes on the machine spent busy (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A kB field (VmHWM, VmRSS) of /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# --- statistics -----------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- the SQL counter of bench/app.py (a small memory-mapped file per app process) ---------------
COUNTER_FIELDS = (
    "queries",
    "message_insert_user",
    "message_insert_assistant",
    "message_update_flush",
    "message_update_final",
    "message_update_heartbeat",
    "message_update_other",
    "other_writes",
)
COUNTER_SLOT = struct.Struct("<Q")
COUNTER_SIZE = 8 * 16


def read_counters(path: str) -> dict[str, int]:
    """The counters in `path` (any process)."""
    with open(path, "rb") as f:
        data = f.read(COUNTER_SIZE)
    return {name: COUNTER_SLOT.unpack_from(data, 8 * i)[0] for i, name in enumerate(COUNTER_FIELDS)}
