#!/usr/bin/env python3
"""Executions per instruction of one function, from a callgrind run with
`--dump-instr=yes --dump-line=no`, as `address count` lines to match
against `objdump -d -l` of the same binary (addresses are the runtime
ones; for a PIE binary under valgrind they equal the file's).

usage: callgrind_per_instr.py callgrind.out "BatchBuilder::push" > costs
"""
import collections
import re
import sys


def main():
    path, target = sys.argv[1], sys.argv[2]
    names = {}
    current = None
    addr = 0
    after_calls = False
    costs = collections.Counter()

    def resolve(token):
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1))

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            current = resolve(line[3:])
            continue
        if line.startswith("cfn="):
            resolve(line[4:])
            continue
        if line.startswith(("cfi=", "cfl=")):
            continue
        if line.startswith("calls="):
            after_calls = True
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        parts = line.split()
        pos = parts[0]
        if pos.startswith("0x"):
            addr = int(pos, 16)
        elif pos.startswith("+"):
            addr += int(pos[1:], 0)
        elif pos.startswith("-"):
            addr -= int(pos[1:], 0)
        if after_calls:  # the line after `calls=` is the call's inclusive cost
            after_calls = False
            continue
        if current and target in current and len(parts) > 1:
            costs[addr] += int(parts[1])
    for a in sorted(costs):
        print(hex(a), costs[a])


if __name__ == "__main__":
    main()
