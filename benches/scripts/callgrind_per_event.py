#!/usr/bin/env python3
"""Instructions per event, per function, from two callgrind runs of
`dispatch_count` with different event counts: everything that does not
scale with the count (start, compile, flush) cancels.

usage: callgrind_per_event.py cg.20000 cg.80000 60000 [top]

JIT-compiled plugin code shows as bare addresses, which may differ between
the two runs; the total is right either way.
"""
import re
import subprocess
import sys


def load(path):
    """Exclusive instruction counts per function name."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    counts = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = m.group(2)
        name = name.split(":", 1)[1] if ":" in name else name
        name = re.sub(r"\s*\[.*\]$", "", name)
        counts[name] = counts.get(name, 0) + int(m.group(1).replace(",", ""))
    return counts


def main():
    a, b = load(sys.argv[1]), load(sys.argv[2])
    events = float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    diff = {k: (b.get(k, 0) - a.get(k, 0)) / events for k in set(a) | set(b)}
    print(f"total {sum(diff.values()):.0f} per event")
    for name, per in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{per:8.1f}  {name[:150]}")


if __name__ == "__main__":
    main()
