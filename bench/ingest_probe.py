#!/usr/bin/env python3
"""Helpers for bench/ingest.sh (stdlib only): watch a csirt store while the daemon ingests.

    ingest_probe.py ingest  --db URL --src FILE --dst FILE --mode rename|append --expect N [--delta] --out JSON
    ingest_probe.py verify  --db URL --truth TRUTH.json [--dry DRY.json] --out JSON
    ingest_probe.py spray   --out LOG --addresses N --seed S --meta JSON
    ingest_probe.py spray-check --db URL --out JSON
    ingest_probe.py spray-distinct --out LOG --addresses N --span S --meta JSON
    ingest_probe.py latency --db URL --log FILE --ip ADDR --n N --rate R --out JSON
    ingest_probe.py report  --dir TMP

The store is read, never written: SQLite through python3's sqlite3 with a read-only URI
(`file:PATH?mode=ro`; the daemon keeps the database in WAL mode, so every poll sees the last
commit), PostgreSQL through one long-lived `psql` child fed one statement at a time (no driver
in the standard library; a round trip is ~0.5 ms, so polling costs the same as with SQLite).
"""

import argparse
import datetime
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time

PLAYBOOK = "ssh-bruteforce"
MON = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# csirt reads RFC 3164 stamps in the config's timezone (Asia/Tokyo, no DST); lines we write
# carry that local time.
JST = datetime.timezone(datetime.timedelta(hours=9))


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


class SqliteStore:
    def __init__(self, path):
        self.c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        self.c.execute("PRAGMA busy_timeout=5000")

    def rows(self, sql):
        return [tuple(r) for r in self.c.execute(sql).fetchall()]

    def close(self):
        self.c.close()


class PsqlStore:
    """One `psql` child; each statement is followed by an \\echo marker that ends its output."""

    MARK = "__csirt_bench_end__"

    def __init__(self, url):
        self.p = subprocess.Popen(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=0", url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def rows(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self.MARK + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                sys.exit("psql exited while polling the store")
            line = line.rstrip("\n")
            if line == self.MARK:
                return [tuple(None if v == "" else v for v in r.split("|")) for r in out]
            out.append(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def open_store(url):
    if url.startswith("sqlite://"):
        return SqliteStore(url[len("sqlite://"):])
    if url.startswith("postgres://") or url.startswith("postgresql://"):
        return PsqlStore(url)
    sys.exit(f"unsupported store url {url}")


def total_hits(store):
    v = store.rows(f"SELECT COALESCE(SUM(hits), 0) FROM hit_counts WHERE playbook = {lit(PLAYBOOK)}")[0][0]
    return int(v)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pid):
    """CPU seconds per thread name (comm) of a process: where the daemon's time goes."""
    out, tck = {}, os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            name = head.split("(", 1)[1]
            fields = rest.split()
            out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            continue
    return out


def status_kb(pid):
    """VmRSS, RssAnon, RssFile, VmHWM (kB) of a process."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
def cmd_ingest(a):
    """Makes the lines appear (rename a complete file into place, or append a file's bytes in one
    write) and times until SUM(hits) reaches --expect, polling every --poll seconds.

    With --until-size the poll reads the file's committed checkpoint offset instead (one row;
    the checkpoint commits with the hits of the same lines) and SUM(hits) only once the whole
    file is covered: SUM over 100,000 hit_counts rows every 20 ms would load the machine it
    measures. With --idle S it first measures the daemon's CPU over S seconds with nothing to read.
    With --pid it records the daemon's CPU per thread and samples its RSS."""
    store = open_store(a.db)
    idle = None
    if a.idle and a.pid:
        c0, th0, t = cpu_seconds(a.pid), thread_cpu(a.pid), time.perf_counter()
        time.sleep(a.idle)
        c1, th1, dt = cpu_seconds(a.pid), thread_cpu(a.pid), time.perf_counter() - t
        idle = {"seconds": dt, "cpu_seconds": c1 - c0,
                "threads": {k: round(v - th0.get(k, 0), 3) for k, v in th1.items() if v - th0.get(k, 0) > 0}}
    base = total_hits(store)
    if a.delta:
        a.expect += base
    data = None
    if a.mode == "append":
        with open(a.src, "rb") as f:
            data = f.read()
    cpu0 = cpu_seconds(a.pid) if a.pid else None
    th0 = thread_cpu(a.pid) if a.pid else {}
    size = a.until_size
    if a.mode == "rename":
        os.rename(a.src, a.dst)
    else:
        fd = os.open(a.dst, os.O_WRONLY | os.O_APPEND)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.close(fd)
    t0 = time.perf_counter()
    last, progress, polls, first_hit = base, [(0.0, base)], 0, None
    rss_trace, rss_peak, next_rss = [], None, 0.0
    covered = False
    q_offset = "SELECT COALESCE(MAX(\"offset\"), 0) FROM log_checkpoints"
    status = "timeout"
    while True:
        now = time.perf_counter() - t0
        off = None
        if size and not covered:
            off = int(store.rows(q_offset)[0][0])
            covered = off >= size
            s = total_hits(store) if covered else last
        else:
            s = total_hits(store)
        if a.pid:
            st = status_kb(a.pid)
            if st and (rss_peak is None or st.get("VmRSS", 0) > rss_peak["VmRSS"]):
                rss_peak = dict(st, t=round(now, 3), hits=s,
                                committed_bytes=None if off is None else off - a.size_base)
            if off is not None and now >= next_rss:
                rss_trace.append((round(now, 2), off - a.size_base, st.get("VmRSS"), st.get("RssAnon")))
                next_rss = now + 1.0
        polls += 1
        if s != last:
            if not size:
                progress.append((round(now, 4), s))
                if first_hit is None:
                    first_hit = now
            last = s
        if s == a.expect:
            status = "ok"
            break
        if s > a.expect:
            status = "overshoot"
            break
        if now > a.timeout:
            break
        if a.pid and not os.path.exists(f"/proc/{a.pid}"):
            status = "daemon-died"
            break
        time.sleep(a.poll)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(a.pid) if a.pid else None
    th1 = thread_cpu(a.pid) if a.pid else {}
    store.close()
    dump({"status": status, "seconds": elapsed, "first_hit_seconds": first_hit, "base": base,
          "expect": a.expect, "final": last, "polls": polls, "poll_interval": a.poll,
          "progress": progress, "idle": idle, "rss_peak": rss_peak, "rss_trace": rss_trace,
          "daemon_cpu_seconds": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
          "daemon_threads_cpu": {k: round(v - th0.get(k, 0), 3) for k, v in th1.items() if v - th0.get(k, 0) > 0}},
         a.out)
    if status != "ok":
        print(f"ingest: {status} after {elapsed:.1f} s: SUM(hits) {last}, expected {a.expect}", file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
def cmd_verify(a):
    """Per-address hits against the truth, incidents against the sliding-window banned set, and
    (with --dry) the store's incidents against the dry run's."""
    truth = json.load(open(a.truth))
    store = open_store(a.db)
    hits = {k: int(v) for k, v in store.rows(
        f"SELECT dedupe_key, hits FROM hit_counts WHERE playbook = {lit(PLAYBOOK)}")}
    incidents = {k: int(n) for k, n in store.rows(
        f"SELECT dedupe_key, event_count FROM incidents WHERE playbook = {lit(PLAYBOOK)}")}
    counts = store.rows("SELECT (SELECT COUNT(*) FROM incidents), (SELECT COUNT(*) FROM events), "
                        "(SELECT COUNT(*) FROM events WHERE incident_id IS NULL), (SELECT COUNT(*) FROM hit_counts)")[0]
    store.close()
    want_hits = {f"ip={ip}": n for ip, n in truth["failures_by_ip"].items() if n > 0}
    keys = sorted(set(hits) | set(want_hits))
    hit_diff = [(k, want_hits.get(k, 0), hits.get(k, 0)) for k in keys if want_hits.get(k, 0) != hits.get(k, 0)]
    want_inc = {f"ip={ip}" for ip in truth["banned_sliding_600s"]}
    got_inc = set(incidents)
    res = {
        "addresses_expected": len(want_hits), "addresses_stored": len(hits),
        "hits_expected": sum(want_hits.values()), "hits_stored": sum(hits.values()),
        "hit_mismatches": len(hit_diff), "hit_mismatch_examples": hit_diff[:10],
        "incidents_expected": len(want_inc), "incidents_stored": len(got_inc),
        "incidents_missing": sorted(want_inc - got_inc)[:10], "incidents_extra": sorted(got_inc - want_inc)[:10],
        "incidents_missing_count": len(want_inc - got_inc), "incidents_extra_count": len(got_inc - want_inc),
        "rows": {"incidents": int(counts[0]), "events": int(counts[1]), "pending_events": int(counts[2]),
                 "hit_counts": int(counts[3])},
    }
    res["ok"] = not hit_diff and want_inc == got_inc
    if a.dry:
        dry = json.load(open(a.dry))
        dry_inc = {i["dedupe_key"]: int(i["event_count"]) for i in dry["incidents"]}
        diff = [(k, dry_inc.get(k), incidents.get(k)) for k in sorted(set(dry_inc) | set(incidents))
                if dry_inc.get(k) != incidents.get(k)]
        res["dry_run_incidents"] = len(dry_inc)
        res["dry_run_event_count_mismatches"] = len(diff)
        res["dry_run_event_count_mismatch_examples"] = diff[:10]
    dump(res, a.out)


# ---------------------------------------------------------------------------------------------
def syslog_stamp(t):
    return "%s %2d %02d:%02d:%02d" % (MON[t.month - 1], t.day, t.hour, t.minute, t.second)


def spray_address(i):
    # 10.128.0.0/15 and up: far from the generator's addresses (public ones, 10.20.x.x staff).
    return "10.%d.%d.%d" % (128 + (i >> 16), (i >> 8) & 255, i & 255)


def cmd_spray(a):
    """N distinct addresses, each 1-4 `Failed password` lines within a few minutes, all inside
    one 10-minute span that ended a minute ago (below the playbook's 5 in 10 minutes)."""
    rng = random.Random(a.seed)
    span_start = datetime.datetime.now(JST).replace(microsecond=0) - datetime.timedelta(minutes=11)
    events = []
    per = {1: 0, 2: 0, 3: 0, 4: 0}
    for i in range(a.addresses):
        k = rng.randint(1, 4)
        per[k] += 1
        first = rng.uniform(0, 600 - 240)
        ts = sorted([first] + [first + rng.uniform(0, 240) for _ in range(k - 1)])
        ip = spray_address(i)
        for t in ts:
            events.append((t, ip))
    events.sort()
    host, pid = "ktk-gw01", 40000
    lines = []
    for n, (t, ip) in enumerate(events):
        if n % 3 == 0:
            pid += rng.randint(1, 9)
        stamp = syslog_stamp(span_start + datetime.timedelta(seconds=int(t)))
        lines.append(f"{stamp} {host} sshd[{pid}]: Failed password for root from {ip} port {rng.randint(1024, 65535)} ssh2\n")
    data = "".join(lines).encode()
    with open(a.out, "wb") as f:
        f.write(data)
    dump({"addresses": a.addresses, "lines": len(lines), "bytes": len(data), "failures_per_address": per,
          "first": syslog_stamp(span_start + datetime.timedelta(seconds=int(events[0][0]))),
          "last": syslog_stamp(span_start + datetime.timedelta(seconds=int(events[-1][0]))),
          "range": f"{spray_address(0)} .. {spray_address(a.addresses - 1)}"}, a.meta)


def cmd_spray_distinct(a):
    """N distinct addresses, one `Failed password` line each, spread evenly over --span seconds
    that end now: every address below any threshold, every window open at once."""
    rng = random.Random(a.seed)
    end = datetime.datetime.now(JST).replace(microsecond=0)
    start = end - datetime.timedelta(seconds=a.span)
    host, pid, lines = "ktk-gw02", 50000, []
    for i in range(a.addresses):
        if i % 3 == 0:
            pid += rng.randint(1, 9)
        stamp = syslog_stamp(start + datetime.timedelta(seconds=a.span * i // a.addresses))
        lines.append(f"{stamp} {host} sshd[{pid}]: Failed password for root from {spray_address(i)} "
                     f"port {rng.randint(1024, 65535)} ssh2\n")
    data = "".join(lines).encode()
    with open(a.out, "wb") as f:
        f.write(data)
    dump({"addresses": a.addresses, "lines": len(lines), "bytes": len(data), "first": syslog_stamp(start),
          "last": syslog_stamp(end), "last_epoch": end.timestamp(),
          "range": f"{spray_address(0)} .. {spray_address(a.addresses - 1)}"}, a.meta)


def spray_check(a):
    """After the spray: one hit_counts row per sprayed address, no incident for any of them."""
    store = open_store(a.db)
    rows, hits = store.rows(f"SELECT COUNT(*), COALESCE(SUM(hits), 0) FROM hit_counts WHERE playbook = {lit(PLAYBOOK)} "
                            "AND dedupe_key LIKE 'ip=10.12_.%'")[0]
    inc = store.rows(f"SELECT COUNT(*) FROM incidents WHERE dedupe_key LIKE 'ip=10.12_.%'")[0][0]
    pending = store.rows("SELECT COUNT(*) FROM events WHERE incident_id IS NULL AND dedupe_key LIKE 'ip=10.12_.%'")[0][0]
    store.close()
    dump({"addresses_stored": int(rows), "hits_stored": int(hits), "incidents": int(inc), "pending_events": int(pending)}, a.out)


# ---------------------------------------------------------------------------------------------
def cmd_latency(a):
    """Appends one `Failed password` line for an address with an open incident every 1/rate s
    and times each until the incident's event_count grows (and hit_counts.hits with it)."""
    store = open_store(a.db)
    key = f"ip={a.ip}"
    q_inc = (f"SELECT id, event_count FROM incidents WHERE playbook = {lit(PLAYBOOK)} AND dedupe_key = {lit(key)} "
             "AND status <> 'closed'")
    q_hits = f"SELECT hits FROM hit_counts WHERE playbook = {lit(PLAYBOOK)} AND dedupe_key = {lit(key)}"
    rows = store.rows(q_inc)
    if not rows:
        sys.exit(f"no open incident for {key}")
    inc_id, count0 = int(rows[0][0]), int(rows[0][1])
    hits0 = int(store.rows(q_hits)[0][0])
    q_count = f"SELECT event_count FROM incidents WHERE id = {inc_id}"
    fd = os.open(a.log, os.O_WRONLY | os.O_APPEND)
    lat, timeouts, polls = [], 0, 0
    count = count0
    start = time.perf_counter()
    for i in range(a.n):
        stamp = syslog_stamp(datetime.datetime.now(JST))
        line = f"{stamp} ktk-gw01 sshd[{50000 + i}]: Failed password for root from {a.ip} port {20000 + i} ssh2\n"
        os.write(fd, line.encode())  # one write(2) on an O_APPEND fd: the line is in the file
        t0 = time.perf_counter()
        while True:
            c = int(store.rows(q_count)[0][0])
            polls += 1
            if c > count:
                lat.append((time.perf_counter() - t0) * 1000)
                count = c
                break
            if time.perf_counter() - t0 > a.timeout:
                timeouts += 1
                break
            time.sleep(a.poll)
        wait = start + (i + 1) / a.rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    os.close(fd)
    # Let any line that timed out land, then check nothing was lost or doubled.
    deadline = time.perf_counter() + 5
    while int(store.rows(q_count)[0][0]) < count0 + a.n and time.perf_counter() < deadline:
        time.sleep(0.05)
    count_end = int(store.rows(q_count)[0][0])
    hits_end = int(store.rows(q_hits)[0][0])
    store.close()
    dump({"incident": inc_id, "key": key, "n": a.n, "rate": a.rate, "poll_interval": a.poll,
          "latencies_ms": lat, "timeouts": timeouts, "polls": polls, "wall_seconds": time.perf_counter() - start,
          "event_count_before": count0, "event_count_after": count_end, "hits_before": hits0, "hits_after": hits_end},
         a.out)


# ---------------------------------------------------------------------------------------------
def pct(xs, q):
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def cpu_line(r):
    if r.get("daemon_cpu_seconds") is None:
        return "daemon CPU ?"
    th = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.get("daemon_threads_cpu", {}).items(), key=lambda kv: -kv[1]))
    return f"daemon CPU {r['daemon_cpu_seconds']:.2f} s ({th})"


def cmd_report(a):
    d = a.dir
    env = load(d, "env.json")
    truth = json.load(open(os.path.join(d, "gen", "auth.truth.json")))
    lines = truth["log"]["lines"]
    failures = truth["totals"]["failures"]
    base = load(d, "baselines.json")
    runs = [load(d, f"ingest-sqlite-{i}.json") for i in range(1, env["pipeline_runs"] + 1)]
    runs = [r for r in runs if r]
    verify = [load(d, f"verify-sqlite-{i}.json") for i in range(1, env["pipeline_runs"] + 1)]
    verify = [v for v in verify if v]
    lat = load(d, "latency-sqlite.json")
    spray_meta, spray, spray_chk, mem = load(d, "spray.json"), load(d, "ingest-spray.json"), load(d, "spray-check.json"), load(d, "memory.json")
    pg = load(d, "ingest-pg.json")
    pg_verify, pg_lat = load(d, "verify-pg.json"), load(d, "latency-pg.json")
    errs = load(d, "daemon-log.json") or {}

    out = []
    p = out.append
    ok_all = []

    def target(label, met, detail):
        ok_all.append(met)
        p(f"  target  {label}: {'MET' if met else 'NOT MET'} ({detail})")

    p(f"csirt log ingest benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %z}")
    p(f"binary   {env['version']} (release), {env['bin']}, source {env['git']}")
    p(f"host     {env['host']}, {env['cpus']} CPUs, Linux {env['kernel']}; SQLite {sqlite3.sqlite_version} (python), "
      f"{env['f2b_version']}, {env['grep_version']}")
    p(f"load     {env['load']} (1/5/15-minute load average; a shared VM, other work shows here)")
    p(f"log      {truth['log']['lines']} lines, {truth['log']['bytes'] / 1048576:.1f} MiB, {truth['log']['first']} .. "
      f"{truth['log']['last']}; failures (Failed password + Invalid user) {failures} from "
      f"{sum(1 for v in truth['failures_by_ip'].values() if v)} addresses; banned (5 in 600 s) "
      f"{len(truth['banned_sliding_600s'])}")
    p("         (page cache warm: the file was just written; every timing below reads it from memory)")
    p("")

    # 1 + 2: throughput
    p("1+2. Throughput on the same file (lines/s = file lines / wall time)")
    f2b = base["fail2ban"]
    f2b_lps = lines / f2b["seconds"]
    secs = [r["seconds"] for r in runs]
    med = statistics.median(secs) if secs else float("nan")
    pipe_lps = lines / med
    grep_med = statistics.median(base["grep"]["seconds"])
    dry_med = statistics.median(base["dry"]["seconds"])
    p(f"  {'':52} {'wall s':>8} {'lines/s':>12} {'vs fail2ban':>12}")
    p(f"  {'csirt daemon, whole pipeline (median of %d)' % len(secs):52} {med:8.3f} {pipe_lps:12,.0f} {pipe_lps / f2b_lps:11.1f}x")
    for i, r in enumerate(runs, 1):
        p(f"    run {i}: {r['seconds']:.3f} s ({lines / r['seconds']:,.0f} lines/s), first hit stored after "
          f"{(r['first_hit_seconds'] or 0) * 1000:.0f} ms, {len(r['progress']) - 1} commits seen; {cpu_line(r)}")
    p(f"  {'fail2ban-regex, sshd filter (1 run, /usr/bin/time)':52} {f2b['seconds']:8.2f} {f2b_lps:12,.0f} {1:11.1f}x"
      f"   (user+sys {f2b['cpu']:.1f} s, max RSS {f2b['maxrss_kb'] / 1024:.0f} MiB)")
    p(f"  {'csirt playbooks test (dry run, median of %d)' % len(base['dry']['seconds']):52} {dry_med:8.3f} "
      f"{lines / dry_med:12,.0f} {lines / dry_med / f2b_lps:11.1f}x   (min {min(base['dry']['seconds']):.3f} s)")
    p(f"  {'grep -cE, the two rules (median of %d)' % len(base['grep']['seconds']):52} {grep_med:8.3f} "
      f"{lines / grep_med:12,.0f} {lines / grep_med / f2b_lps:11.1f}x   (min {min(base['grep']['seconds']):.3f} s)")
    p(f"  {'csirt playbooks test --json (1 run)':52} {base['dry_json']['seconds']:8.3f} {lines / base['dry_json']['seconds']:12,.0f}")
    cpus = [r["daemon_cpu_seconds"] for r in runs if r.get("daemon_cpu_seconds")]
    if cpus:
        p(f"  CPU time instead of wall time (less sensitive to a busy machine): fail2ban-regex user+sys {f2b['cpu']:.2f} s, "
          f"daemon {statistics.median(cpus):.2f} s (median): {f2b['cpu'] / statistics.median(cpus):.1f}x")
    target("whole pipeline >= 30x fail2ban-regex lines/s", pipe_lps >= 30 * f2b_lps,
           f"{pipe_lps / f2b_lps:.1f}x; 30x would be {30 * f2b_lps:,.0f} lines/s = {lines / (30 * f2b_lps):.3f} s")
    target("dry run within 3x of grep's time", dry_med <= 3 * grep_med,
           f"medians {dry_med / grep_med:.2f}x grep; minimums {min(base['dry']['seconds']) / min(base['grep']['seconds']):.2f}x")
    p("  correctness")
    exp = truth["expected_fail2ban_regex"]
    p(f"    fail2ban-regex  Lines: {f2b['summary']}  (truth: {exp['ignored']} ignored, {exp['matched']} matched, "
      f"{exp['missed']} missed): {'OK' if f2b['summary_ok'] else 'MISMATCH'}")
    p(f"    grep -c         {base['grep']['count']} (truth failures {failures}): {'OK' if base['grep']['count'] == failures else 'MISMATCH'}")
    p(f"    dry run --json  matched {base['dry_json']['matched']}, incidents {base['dry_json']['incidents']} "
      f"(truth {failures}, {len(truth['banned_sliding_600s'])}): "
      f"{'OK' if base['dry_json']['matched'] == failures and base['dry_json']['incidents_ok'] else 'MISMATCH'}")
    for i, v in enumerate(verify, 1):
        p(f"    daemon run {i}    hits {v['hits_stored']} over {v['addresses_stored']} addresses, per-address "
          f"mismatches {v['hit_mismatches']}; incidents {v['incidents_stored']} (missing {v['incidents_missing_count']}, "
          f"extra {v['incidents_extra_count']}); event_count vs dry run: {v.get('dry_run_event_count_mismatches', '-')} "
          f"mismatches: {'OK' if v['ok'] and not v.get('dry_run_event_count_mismatches') else 'MISMATCH'}")
        for k in ("hit_mismatch_examples", "incidents_missing", "incidents_extra", "dry_run_event_count_mismatch_examples"):
            if v.get(k):
                p(f"      {k}: {v[k]}")
    if pg:
        p("  PostgreSQL (same file, same playbooks, fresh database, second daemon)")
        p(f"    whole pipeline  {pg['seconds']:.3f} s, {lines / pg['seconds']:,.0f} lines/s, "
          f"{lines / pg['seconds'] / f2b_lps:.1f}x fail2ban-regex; {cpu_line(pg)}")
        if pg_verify:
            v = pg_verify
            p(f"    correctness     hits {v['hits_stored']}, per-address mismatches {v['hit_mismatches']}; incidents "
              f"{v['incidents_stored']} (missing {v['incidents_missing_count']}, extra {v['incidents_extra_count']}); "
              f"event_count vs dry run: {v.get('dry_run_event_count_mismatches', '-')} mismatches: "
              f"{'OK' if v['ok'] and not v.get('dry_run_event_count_mismatches') else 'MISMATCH'}")
    elif env.get("pg_note"):
        p(f"  PostgreSQL: {env['pg_note']}")
    p("")

    # 3: memory
    p(f"3. Daemon memory with {spray_meta['addresses']:,} addresses in open threshold windows")
    p(f"  spray    {spray_meta['lines']:,} Failed password lines ({spray_meta['range']}; failures per address "
      f"{spray_meta['failures_per_address']}), {spray_meta['first']} .. {spray_meta['last']}, appended in one write")
    p(f"  ingest   {spray['seconds']:.2f} s until all stored ({spray_meta['lines'] / spray['seconds']:,.0f} hits/s, "
      f"every hit below threshold); {cpu_line(spray)}")
    pk = spray.get("rss_peak")
    if pk:
        p(f"  RSS      highest sample {pk['VmRSS'] / 1024:.1f} MiB (RssAnon {pk.get('RssAnon', 0) / 1024:.1f} MiB) at "
          f"{pk['t']:.1f} s, when {(pk.get('committed_bytes') or 0) / 1048576:.1f} of the spray's "
          f"{spray_meta['bytes'] / 1048576:.1f} MiB were committed")
        tr = spray["rss_trace"]
        p(f"           samples (time, spray MiB committed of {spray_meta['bytes'] / 1048576:.1f}, VmRSS MiB): "
          + ", ".join(f"{t:g}s {b / 1048576:.1f} {r / 1024:.0f}" for t, b, r, _ in tr[:10]) + (" ..." if len(tr) > 10 else ""))
    p(f"  store    {spray_chk['addresses_stored']:,} addresses, {spray_chk['hits_stored']:,} hits, "
      f"{spray_chk['pending_events']:,} pending events, {spray_chk['incidents']} incidents for them")
    hwm = mem["hwm_phase_kb"]
    p(f"  VmHWM    {hwm / 1024:.1f} MiB during the spray (peak reset with /proc/PID/clear_refs before it: "
      f"{'yes' if mem['reset'] else 'NO, lifetime peak'}); VmRSS before the spray {mem['rss_before_kb'] / 1024:.1f} MiB, "
      f"at the end {mem['rss_end_kb'] / 1024:.1f} MiB; lifetime peak {max(mem['hwm_before_kb'], hwm) / 1024:.1f} MiB")
    target("peak RSS under 64 MiB", hwm < 64 * 1024, f"{hwm / 1024:.1f} MiB")
    p("")

    # 4: latency
    def lat_lines(lt, label):
        xs = lt["latencies_ms"]
        p(f"4. {label}: line appended -> incident event_count committed, N={lt['n']} at {lt['rate']:g}/s, "
          f"poll every {lt['poll_interval'] * 1000:g} ms")
        if xs:
            p(f"  p50 {pct(xs, .50):.1f} ms   p95 {pct(xs, .95):.1f} ms   p99 {pct(xs, .99):.1f} ms   max {max(xs):.1f} ms   "
              f"min {min(xs):.1f} ms   (timeouts {lt['timeouts']})")
        p(f"  incident {lt['incident']} ({lt['key']}): event_count {lt['event_count_before']} -> {lt['event_count_after']}, "
          f"hits {lt['hits_before']} -> {lt['hits_after']} (expected +{lt['n']} each)")
        return xs
    xs = lat_lines(lat, "Latency, SQLite")
    target("p99 under 200 ms", bool(xs) and lat["timeouts"] == 0 and pct(xs, .99) < 200,
           f"p99 {pct(xs, .99):.1f} ms, timeouts {lat['timeouts']}")
    if pg_lat:
        lat_lines(pg_lat, "Latency, PostgreSQL")
    p("")

    idles = [(f"sqlite run {i}", r["idle"]) for i, r in enumerate(runs, 1) if r.get("idle")]
    if pg and pg.get("idle"):
        idles.append(("PostgreSQL", pg["idle"]))
    if idles:
        p("Idle daemon (2 s with nothing to read, before each rename): CPU, share of one core")
        for label, idle in idles:
            share = idle["cpu_seconds"] / idle["seconds"]
            th = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(idle["threads"].items(), key=lambda kv: -kv[1]))
            p(f"  {label:14} {idle['cpu_seconds']:.2f} s in {idle['seconds']:.1f} s = {100 * share:.0f}% of a core"
              f"{' (SUSPICIOUS: an idle daemon should be near 0%)' if share > 0.05 else ''}; {th}")
        p("")

    p("daemon logs")
    for name, info in sorted(errs.items()):
        p(f"  {name}: {info['lines']} lines, {info['warn']} WARN, {info['error']} ERROR")
        for l in info["examples"]:
            p(f"    {l}")
    p("")
    p("commands")
    for c in env["commands"]:
        p(f"  {c}")
    p("")
    p(f"summary  {sum(ok_all)}/{len(ok_all)} targets met")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ingest")
    s.add_argument("--db", required=True)
    s.add_argument("--src", required=True)
    s.add_argument("--dst", required=True)
    s.add_argument("--mode", choices=("rename", "append"), required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--delta", action="store_true", help="--expect counts hits on top of those already stored")
    s.add_argument("--poll", type=float, default=0.02)
    s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--pid", type=int)
    s.add_argument("--idle", type=float, default=0)
    s.add_argument("--until-size", type=int, help="poll the checkpoint offset until it reaches this")
    s.add_argument("--size-base", type=int, default=0, help="offset where the appended bytes start (for the trace)")
    s.add_argument("--out", required=True)
    s = sub.add_parser("verify")
    s.add_argument("--db", required=True)
    s.add_argument("--truth", required=True)
    s.add_argument("--dry")
    s.add_argument("--out", required=True)
    s = sub.add_parser("spray")
    s.add_argument("--out", required=True)
    s.add_argument("--addresses", type=int, default=100000)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--meta", required=True)
    s = sub.add_parser("spray-distinct")
    s.add_argument("--out", required=True)
    s.add_argument("--addresses", type=int, default=1000000)
    s.add_argument("--span", type=int, default=60)
    s.add_argument("--seed", type=int, default=11)
    s.add_argument("--meta", required=True)
    s = sub.add_parser("spray-check")
    s.add_argument("--db", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("latency")
    s.add_argument("--db", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--ip", required=True)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--rate", type=float, default=10)
    s.add_argument("--poll", type=float, default=0.002)
    s.add_argument("--timeout", type=float, default=10)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    a = ap.parse_args()
    {"ingest": cmd_ingest, "verify": cmd_verify, "spray": cmd_spray, "spray-check": spray_check,
     "spray-distinct": cmd_spray_distinct,
     "latency": cmd_latency, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
