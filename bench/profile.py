"""Summarise a py-spy `--format raw` (folded stacks) profile: the functions with the most samples
on top of the stack (self), and the most samples anywhere in the stack (inclusive).

    python -m bench.profile bench/results/profile-embedded-n200-r0.folded [--top 25]
"""

from __future__ import annotations

import argparse
import collections


def summarise(path: str, top: int = 25) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        lines = f.readlines()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        total += n
        self_counts[leaf] += n
        for frame in set(frames[1:]):  # frames[0] is the thread / process
            incl_counts[frame] += n
    out = [f"{path}: {total} samples (record without --idle: busy ones only)", "", "self:"]
    for frame, n in self_counts.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {frame}")
    out += ["", "inclusive:"]
    for frame, n in incl_counts.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {frame}")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.path, args.top))
