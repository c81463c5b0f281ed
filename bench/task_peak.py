#!/usr/bin/env python3
"""Samples a daemon's tasks and memory as systemd's TasksMax= and MemoryMax= count them, for
deploy/csirt.service's limits (issue #17): every 10 ms, the threads of PID plus those of its
children (journalctl for [[journal]] sources; they share the unit's cgroup), and the sum of
their resident memory; the daemon's own VmHWM at the end. Runs until PID exits or SIGTERM, then
prints one JSON line to OUT (or stdout).

    python3 bench/task_peak.py PID [OUT] &
"""
import json
import os
import signal
import sys
import time

pid = int(sys.argv[1])
out = sys.argv[2] if len(sys.argv) > 2 else None
peak = {"tasks": 0, "rss_kb": 0, "hwm_kb": 0, "samples": 0}
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)


def status(p):
    fields = {}
    try:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else ""
    except OSError:
        return None
    return fields


def children(p):
    try:
        with open(f"/proc/{p}/task/{p}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


while running:
    own = status(pid)
    if own is None:
        break
    tasks, rss = int(own.get("Threads", 0)), int(own.get("VmRSS", 0))
    for child in children(pid):
        s = status(child)
        if s:
            tasks += int(s.get("Threads", 0))
            rss += int(s.get("VmRSS", 0))
    peak["tasks"] = max(peak["tasks"], tasks)
    peak["rss_kb"] = max(peak["rss_kb"], rss)
    peak["hwm_kb"] = max(peak["hwm_kb"], int(own.get("VmHWM", 0)))
    peak["samples"] += 1
    time.sleep(0.01)

text = json.dumps(peak)
if out:
    with open(out, "w") as f:
        f.write(text + "\n")
else:
    print(text)
