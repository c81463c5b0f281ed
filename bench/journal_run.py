#!/usr/bin/env python3
"""The timed part of bench/journal.sh: (a) journalctl alone and (b) the daemon end to end on the
same journal directory, interleaved, RUNS times per variant; then the report.

Variants: "all" is a [[journal]] source without a match (every entry of the directory goes
through the daemon), "unit" one with matches = ["_SYSTEMD_UNIT=ssh.service"] (journalctl filters;
the sshd entries only), "fewhits" the source of "all" on a second directory (--fewhits-dir)
written with journal_export.py --hit-every: the same reading and matching with almost no hits,
so the store is nearly idle (its difference to "all" is the cost of storing the hits).

(a) runs journalctl with the flags the source gives it (--output=json --output-fields=F --all
--merge --no-pager --directory=D --no-tail -- MATCHES, SYSTEMD_COLORS=0, stdin /dev/null) minus
--follow, its output to a file; wall time around the process, CPU from wait4.
(b) starts `csirt --config C daemon` on a fresh SQLite store with one [[journal]] source (name
"auth.log", directory D, start_at "beginning") and the repository's playbooks, and takes the time
from the spawn until journal_cursors holds the cursor of the journal's last entry (sqlite3
module, read-only, every 10 ms); the daemon's CPU (all threads, and by thread name), its context
switches by thread name and the CPU of its journalctl child are read from /proc at that moment.
Then per-address hit counts must equal the generator's truth, still equal 1 s later, and the
journalctl argv the daemon ran must be (a)'s plus --follow.
"""
import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")
PLAYBOOK = "ssh-bruteforce"
SOURCE = "auth.log"
MATCHES = {"all": [], "unit": ["_SYSTEMD_UNIT=ssh.service"], "fewhits": []}


def proc_cpu(pid):
    """(user, system) seconds of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TCK, int(fields[12]) / TCK
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pid):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            name = head.split("(", 1)[1]
            # tokio-runtime-worker, sqlx-sqlite-worker-N: one name per kind.
            name = name.rstrip("0123456789").rstrip("-") or name
            fields = rest.split()
            out[name] = round(out.get(name, 0) + (int(fields[11]) + int(fields[12])) / TCK, 2)
        except (OSError, IndexError, ValueError):
            continue
    return out


def ctx_switches(pid):
    """Context switches (voluntary + involuntary) per thread name: the SQLite worker's count is
    about one per statement (sqlx hands each statement to its thread and waits)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            name = name.rstrip("0123456789").rstrip("-") or name
            n = 0
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    n += int(line.split()[1])
            out[name] = out.get(name, 0) + n
        except (OSError, ValueError):
            continue
    return out


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return None


def journalctl_argv(directory, fields, matches):
    return (["journalctl", "--output=json", f"--output-fields={fields}", "--all", "--merge",
             "--no-pager", f"--directory={directory}", "--no-tail", "--"] + matches)


def run_alone(argv, out_path, expect):
    """(a): journalctl to a file. Returns wall, user, sys, lines, last cursor, bytes."""
    env = {**os.environ, "SYSTEMD_COLORS": "0"}
    with open(out_path, "wb") as out, open(os.devnull, "rb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=null, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
    if p.returncode != 0:
        sys.exit(f"journalctl exited {p.returncode}: {err[:500]}")
    lines, last = 0, b""
    with open(out_path, "rb") as f:
        for line in f:
            lines += 1
            last = line
    if lines != expect:
        sys.exit(f"journalctl alone wrote {lines} entries, not {expect}")
    return {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "maxrss_kb": ru.ru_maxrss,
            "entries": lines, "bytes": os.path.getsize(out_path),
            "last_cursor": json.loads(last)["__CURSOR"]}


def write_config(d, root, journal_dir, matches):
    os.makedirs(d, exist_ok=True)
    m = ", ".join(json.dumps(x) for x in matches)
    cfg = os.path.join(d, "csirt.toml")
    with open(cfg, "w") as f:
        f.write(f'''timezone = "Asia/Tokyo"
playbooks = "{root}/playbooks"
log_level = "info"

[store]
url = "sqlite://{d}/csirt.db"

[[journal]]
name = "{SOURCE}"
matches = [{m}]
directory = "{journal_dir}"
start_at = "beginning"

[notify]
to = ["duty"]
from = "csirt@city.kitakami.example.jp"
transport = "file"
dir = "{d}/outbox"
update_interval = "15m"

[contacts]
duty = ["csirt-duty@city.kitakami.example.jp"]
lead = ["johoseisaku-lead@city.kitakami.example.jp"]
tokatsu = ["tokatsu@city.kitakami.example.jp"]
ciso = ["ciso@city.kitakami.example.jp"]
''')
    return cfg


def ro(db):
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def hit_counts(db):
    c = ro(db)
    try:
        return {k: v for k, v in c.execute(
            "SELECT dedupe_key, hits FROM hit_counts WHERE playbook = ?", (PLAYBOOK,))}
    finally:
        c.close()


def run_daemon(binary, root, d, journal_dir, matches, last_cursor, truth, alone_argv, timeout):
    """(b): the daemon from spawn until the last cursor is committed."""
    cfg = write_config(d, root, journal_dir, matches)
    db = os.path.join(d, "csirt.db")
    log = open(os.path.join(d, "daemon.log"), "wb")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "--config", cfg, "daemon"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log)
    conn = None
    jpid, jargv, first_commit, t1 = None, None, None, None
    cursor = None
    try:
        while True:
            now = time.perf_counter()
            if now - t0 > timeout:
                sys.exit(f"no last cursor within {timeout} s (stored: {cursor}); see {d}/daemon.log")
            if p.poll() is not None:
                sys.exit(f"the daemon exited with {p.returncode}; see {d}/daemon.log")
            if jpid is None:
                for c in children(p.pid):
                    argv = cmdline(c)
                    if argv and os.path.basename(argv[0]) == "journalctl":
                        jpid, jargv = c, argv
            if conn is None and os.path.exists(db):
                try:
                    conn = ro(db)
                except sqlite3.Error:
                    conn = None
            if conn is not None:
                try:
                    row = conn.execute("SELECT cursor FROM journal_cursors WHERE source = ?",
                                       (SOURCE,)).fetchone()
                except sqlite3.Error:
                    row = None  # not migrated yet
                if row is not None:
                    cursor = row[0]
                    if first_commit is None:
                        first_commit = now - t0
                    if cursor == last_cursor:
                        t1 = time.perf_counter()
                        break
            time.sleep(0.01)
        d_cpu = proc_cpu(p.pid)
        threads = thread_cpu(p.pid)
        switches = ctx_switches(p.pid)
        hwm = vm_hwm_kb(p.pid)
        j_cpu = proc_cpu(jpid) if jpid else None
        if conn is not None:
            conn.close()
        counts = hit_counts(db)
        time.sleep(1.0)
        counts_later = hit_counts(db)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
    text = open(os.path.join(d, "daemon.log"), errors="replace").read().splitlines()
    # The flood digest (hundreds of incidents opened within seconds) is expected here.
    bad = [l for l in text if (" WARN " in l or " ERROR " in l) and "flood allows" not in l]
    expected_argv = alone_argv[:]
    expected_argv.insert(expected_argv.index("--no-pager"), "--follow")
    diff = sorted(set(expected_argv) ^ set(jargv or []))
    return {
        "wall": t1 - t0,
        "first_commit": first_commit,
        "daemon_user": d_cpu[0], "daemon_sys": d_cpu[1],
        "daemon_threads": threads,
        "daemon_ctx_switches": switches,
        "daemon_hwm_kb": hwm,
        "journalctl_user": j_cpu[0] if j_cpu else None,
        "journalctl_sys": j_cpu[1] if j_cpu else None,
        "journalctl_argv": jargv,
        "argv_same_as_alone_plus_follow": not diff,
        "argv_diff": diff,
        "counts_ok": counts == truth,
        "counts_stable": counts_later == counts,
        "hits": sum(counts.values()),
        "addresses": len(counts),
        "count_diff": {k: [counts.get(k), truth.get(k)] for k in set(counts) | set(truth)
                       if counts.get(k) != truth.get(k)} if counts != truth else {},
        "warn_error_lines": len(bad),
        "warn_error_examples": bad[:3],
    }


def report(res, truths, runs, variants):
    truth = truths.get("all") or truths.get("unit") or truths["fewhits"]
    n_all = truth["entries"]
    print(f"journal: {n_all} entries ({truth['ssh_entries']} of ssh.service, {truth['failures']} "
          f"counted failures from {truth['addresses']} addresses), {res['journal_files']} files, "
          f"{res['journal_mib']} MiB; {runs} runs, (a) then (b) each, variants in turn")
    print(f"machine: {os.cpu_count()} CPUs; load {res['load_start']} at the start, {res['load_end']} at the end")
    for v in variants:
        rows = [r for r in res["runs"] if r["variant"] == v]
        n = rows[0]["a"]["entries"]
        label = {"all": "no match", "unit": "matches = [\"_SYSTEMD_UNIT=ssh.service\"]",
                 "fewhits": f"no match, the second journal: {truths[v]['failures']} failures left "
                            f"(every {truths[v].get('hit_every', '?')}th), the others not counted"}[v]
        print(f"\n[{v}] {label}: {n:,} of the {n_all:,} entries reach the source")
        print("run  (a) journalctl alone              (b) daemon end to end, last cursor committed"
              "                              ratio (b)/(a)   check")
        for r in rows:
            a, b = r["a"], r["b"]
            a_rate, b_rate = n / a["wall"], n / b["wall"]
            jc = (b["journalctl_user"] or 0) + (b["journalctl_sys"] or 0)
            dc = b["daemon_user"] + b["daemon_sys"]
            ok = b["counts_ok"] and b["counts_stable"] and b["argv_same_as_alone_plus_follow"]
            print(f"{r['run']:>3}  {a['wall']:6.3f} s {a_rate:8,.0f}/s CPU {a['user'] + a['sys']:5.2f} s"
                  f"   {b['wall']:6.3f} s {b_rate:8,.0f}/s CPU daemon {dc:5.2f} s + journalctl {jc:5.2f} s"
                  f" (1st commit {b['first_commit']:.3f} s)"
                  f"   {b_rate / a_rate:5.2f}x rate {(dc + jc) / (a['user'] + a['sys']):4.2f}x CPU"
                  f"   {'ok' if ok else 'FAIL'} {b['hits']} hits/{b['addresses']} addr")
        med = lambda xs: statistics.median(xs)
        a_rate = med([n / r["a"]["wall"] for r in rows])
        b_rate = med([n / r["b"]["wall"] for r in rows])
        ratios = [r["a"]["wall"] / r["b"]["wall"] for r in rows]
        print(f"median: (a) {a_rate:,.0f} entries/s, (b) {b_rate:,.0f} entries/s, ratio (b)/(a) "
              f"{med(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}); target (b) >= 50,000/s: "
              f"{'met' if b_rate >= 50_000 else 'NOT met'}")
        dcpu = med([r["b"]["daemon_user"] + r["b"]["daemon_sys"] for r in rows])
        jcpu = med([(r["b"]["journalctl_user"] or 0) + (r["b"]["journalctl_sys"] or 0) for r in rows])
        acpu = med([r["a"]["user"] + r["a"]["sys"] for r in rows])
        print(f"CPU per entry (median): journalctl alone {acpu / n * 1e6:.1f} us; in (b) journalctl "
              f"--follow {jcpu / n * 1e6:.1f} us + daemon {dcpu / n * 1e6:.1f} us")
        last = rows[-1]["b"]
        print(f"daemon CPU by thread (last run): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(last["daemon_threads"].items(), key=lambda kv: -kv[1]))
              + "; context switches: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(last["daemon_ctx_switches"].items(), key=lambda kv: -kv[1]) if v > 1000)
              + f"; peak RSS {last['daemon_hwm_kb'] / 1024:.1f} MiB")
        ncpu = os.cpu_count()
        print(f"CPU-bound ceilings from the medians: journalctl alone on a free core {n / acpu:,.0f}/s; "
              f"(b) if its {dcpu + jcpu:.2f} CPU s were spread over {ncpu} free CPUs {n / ((dcpu + jcpu) / ncpu):,.0f}/s")
        bad = [r for r in rows if not (r["b"]["counts_ok"] and r["b"]["counts_stable"])]
        print(f"correctness: per-address hit counts {'equal the truth in every run, unchanged 1 s later' if not bad else 'WRONG in runs ' + str([r['run'] for r in bad])}"
              f"; daemon WARN/ERROR lines other than the flood digest: {sum(r['b']['warn_error_lines'] for r in rows)}")
        if any(not r["b"]["argv_same_as_alone_plus_follow"] for r in rows):
            print(f"journalctl argv differs from (a)+--follow: {rows[0]['b']['argv_diff']}")
    print(f"\njournalctl argv in (b): {' '.join(res['runs'][-1]['b']['journalctl_argv'] or ['?'])}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--dir", required=True, help="journal directory")
    ap.add_argument("--truth", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--fields", required=True)
    ap.add_argument("--fewhits-dir")
    ap.add_argument("--fewhits-truth")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", default="all,unit")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    truth = json.load(open(a.truth))
    variants = a.variants.split(",")
    for v in variants:
        if v not in MATCHES:
            sys.exit(f"unknown variant {v} (all, unit, fewhits)")
    dirs = {"all": a.dir, "unit": a.dir}
    expect = {"all": truth["entries"], "unit": truth["ssh_entries"]}
    want = {"all": truth["failures_by_ip_unmatched"], "unit": truth["failures_by_ip"]}
    truths = {"all": truth, "unit": truth}
    if "fewhits" in variants:
        if not (a.fewhits_dir and a.fewhits_truth):
            sys.exit("the fewhits variant needs --fewhits-dir and --fewhits-truth")
        ft = json.load(open(a.fewhits_truth))
        dirs["fewhits"], expect["fewhits"], truths["fewhits"] = a.fewhits_dir, ft["entries"], ft
        want["fewhits"] = ft["failures_by_ip_unmatched"]
    files = os.listdir(a.dir)
    res = {"journal_files": len(files),
           "journal_mib": round(sum(os.path.getsize(os.path.join(a.dir, f)) for f in files) / 2**20),
           "load_start": open("/proc/loadavg").read().split()[:3], "runs": []}
    out_json = os.path.join(a.tmp, "alone.json")
    # Warm-up: page cache, binaries.
    for v in variants:
        run_alone(journalctl_argv(dirs[v], a.fields, MATCHES[v]), out_json, expect[v])
    for run in range(1, a.runs + 1):
        for v in variants:
            argv = journalctl_argv(dirs[v], a.fields, MATCHES[v])
            print(f"== run {run}/{a.runs} [{v}]: (a) journalctl alone", file=sys.stderr)
            ra = run_alone(argv, out_json, expect[v])
            print(f"== run {run}/{a.runs} [{v}]: (b) daemon", file=sys.stderr)
            rb = run_daemon(a.bin, a.root, os.path.join(a.tmp, f"{v}-{run}"), dirs[v], MATCHES[v],
                            ra["last_cursor"], want[v], argv, a.timeout)
            res["runs"].append({"run": run, "variant": v, "a": ra, "b": rb})
            print(f"   (a) {ra['wall']:.3f} s, (b) {rb['wall']:.3f} s, counts "
                  f"{'ok' if rb['counts_ok'] and rb['counts_stable'] else 'WRONG'}", file=sys.stderr)
    res["load_end"] = open("/proc/loadavg").read().split()[:3]
    json.dump(res, open(os.path.join(a.tmp, "results.json"), "w"), indent=1)
    report(res, truths, a.runs, variants)
    if any(not (r["b"]["counts_ok"] and r["b"]["counts_stable"]) for r in res["runs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
