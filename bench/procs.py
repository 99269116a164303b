#!/usr/bin/env python3
"""Process trees and CPU time from /proc, for the benchmark scripts (one walk per call).

  procs.py tree pids|pgs PID      PID and its descendants (space-separated), or their
                                  process groups (comma-separated)
  procs.py groups PGS PGS         CPU seconds (user+system) of the processes in each set of
                                  process groups (comma-separated ids), then the whole
                                  machine's busy seconds
  procs.py trees ALONE TREE TREE  CPU seconds (user+system, including reaped children) of
                                  process ALONE by itself and of each TREE's processes, the
                                  machine's busy seconds, then the same three in system time
"""
import os
import sys

TCK = os.sysconf("SC_CLK_TCK")


def procs():
    """pid -> (ppid, pgid, utime, stime, cutime, cstime), in clock ticks."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        out[int(d)] = (int(f[1]), int(f[2]), int(f[11]), int(f[12]), int(f[13]), int(f[14]))
    return out


def descendants(ps, root):
    kids = {}
    for pid, p in ps.items():
        kids.setdefault(p[0], []).append(pid)
    todo, seen = [root], set()
    while todo:
        p = todo.pop()
        if p in seen or p not in ps:
            continue
        seen.add(p)
        todo += kids.get(p, [])
    return sorted(seen)


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user, nice, system: process time (softirq work is not in any process's)
    return v[0] + v[1] + v[2]


def main(cmd, *args):
    ps = procs()
    if cmd == "tree":
        tree = descendants(ps, int(args[1]))
        if args[0] == "pgs":
            print(",".join(str(g) for g in sorted({ps[p][1] for p in tree})))
        else:
            print(" ".join(map(str, tree)))
    elif cmd == "groups":
        sets = [{int(g) for g in a.split(",") if g} for a in args]
        tot = [sum(p[2] + p[3] for p in ps.values() if p[1] in g) for g in sets]
        print(" ".join(f"{t / TCK:.2f}" for t in tot + [machine_busy()]))
    elif cmd == "trees":
        alone, *roots = (int(a) for a in args)
        everything = lambda p: p[2] + p[3] + p[4] + p[5]  # noqa: E731
        system = lambda p: p[3] + p[5]  # noqa: E731

        def cpu(of):
            # The first process alone (its children are trees of their own), then the trees.
            first = of(ps[alone]) if alone in ps else 0
            return [first] + [sum(of(ps[p]) for p in descendants(ps, r)) for r in roots]

        total, sys_ = cpu(everything), cpu(system)
        print(" ".join(f"{t / TCK:.2f}" for t in total + [machine_busy()] + sys_))
    else:
        sys.exit(f"procs.py: unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main(*sys.argv[1:])
