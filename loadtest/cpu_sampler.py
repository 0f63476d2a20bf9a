#!/usr/bin/env python3
"""Samples CPU time while a benchmark step runs, for bench.sh.

Usage: cpu_sampler.py OUT ROOT_PID SERVER_PID [INTERVAL_S]

Every INTERVAL_S (default 0.5) it appends `t root_tree_ticks server_ticks` to OUT: seconds
since it started (monotonic), the user + system clock ticks of ROOT_PID and all its
descendants (the generator under `time`, `taskset` and `timeout`), and of SERVER_PID. It
stops when ROOT_PID is gone. The first line is `# ticks_per_second N`.

Why: switchyard-loadtest reports the server's CPU over the whole run, ramp included, and
not its own at all; these samples give both over the measurement window alone, so a
generator saturated during the window is seen, and the server's figures compare with the
UDP floor's (window only). Python 3 standard library only; a /proc scan costs well under
a millisecond.
"""

import os
import sys
import time


def stat(pid):
    """(ppid, utime + stime) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_ticks(root):
    """CPU ticks of root and every descendant alive now."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s:
                procs[int(name)] = s
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            total += procs[pid][1]
        todo.extend(children.get(pid, []))
    return total


def main():
    out, root, server = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    start = time.monotonic()
    with open(out, "w", encoding="ascii") as f:
        f.write(f"# ticks_per_second {os.sysconf('SC_CLK_TCK')}\n")
        while stat(root) is not None:
            srv = stat(server)
            f.write(f"{time.monotonic() - start:.3f} {tree_ticks(root)} "
                    f"{srv[1] if srv else -1}\n")
            f.flush()
            time.sleep(interval)


if __name__ == "__main__":
    main()
