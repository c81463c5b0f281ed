#!/usr/bin/env python3
"""Seed a migrated csirt SQLite store with a large, realistic incident history.

Used by bench/incidents_cli.sh. Standard library only. The schema must already exist
(`csirt db migrate`): this script only inserts rows, so every CHECK, trigger and index of
the real migration applies while seeding.

The mix (for the default 1,000,000 incidents):
  * ids ascend with time; opened_at is spread over one year ending --end;
  * about 2% not closed (open or acknowledged): about 1% of the older 95% of ids and about
    21% of the newest 5% (old incidents are mostly closed), the rest closed with a
    resolution (the table's CHECK: closed <=> resolution IS NOT NULL);
  * playbooks ssh-bruteforce (70%) and phishing-report (30%), severities mixed;
  * dedupe_key unique among not-closed incidents of a playbook (the partial unique index
    incidents_open_dedupe), repeating freely among closed ones;
  * fields a JSON text object; times RFC 3339 UTC text with microseconds, as sqlx writes them;
  * incident --show-id (closed or not, whatever the mix gave it) gets --events events and
    --timeline timeline rows;
  * with --first-events, every other incident gets its first evidence row too (a log line from
    /var/log/auth.log, 1 in 5 of them from the journal, or the reported mail), as the daemon
    stores it: what `csirt report` reads to say where each incident came from;
  * on a store with the incident's `origin` (migration 0020), each incident's channel as the
    daemon writes it when it opens one (the same as its first evidence's); on an older store
    (a baseline binary's) nothing, and migration 0020 fills it in from the evidence.

Prints one line: the seeding time and the counts, for the caller to show.
"""

import argparse
import datetime as dt
import json
import random
import sqlite3
import sys
import time

SEVERITIES_SSH = ["high"] * 70 + ["critical"] * 10 + ["medium"] * 15 + ["low"] * 5
SEVERITIES_MAIL = ["medium"] * 60 + ["high"] * 20 + ["low"] * 15 + ["critical"] * 5
RESOLUTIONS = ["resolved"] * 70 + ["false-positive"] * 22 + ["duplicate"] * 8
ASSIGNEES = ["sato", "suzuki", "takahashi", "tanaka", "ito", None, None]
USERS = ["root", "admin", "oracle", "test", "ubuntu", "postgres", "git", "pi", "user"]
SUBJECTS = [
    "【重要】アカウントの確認をお願いします",
    "請求書送付のご案内",
    "パスワードの有効期限が切れます",
    "Microsoft 365 サインインの異常",
    "宅配便の不在通知",
    "【至急】振込先口座変更のお知らせ",
    "共有ファイルが届いています",
    "メールボックスの容量が上限に達しました",
]
SENDERS = ["no-reply@secure-login.example", "billing@invoice.example", "admin@mail-support.example",
           "info@delivery.example", "noreply@account-verify.example"]


def rfc3339(t: dt.datetime) -> str:
    # chrono's to_rfc3339 for DateTime<Utc> truncated to microseconds, as sqlx stores it.
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def ip_for(rng: random.Random) -> str:
    # Documentation ranges first (most of the noise), then a wide spread of other addresses.
    r = rng.random()
    if r < 0.3:
        return "203.0.113.%d" % rng.randrange(1, 255)
    if r < 0.5:
        return "198.51.100.%d" % rng.randrange(1, 255)
    return "%d.%d.%d.%d" % (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))


def origin_of(row: tuple, a: argparse.Namespace):
    """The channel of the incident's first event (below), as the daemon records it; None
    without evidence."""
    if row[0] == a.show_id:
        if not a.events:
            return None
        return "log" if row[1] == "ssh-bruteforce" else "mail"
    if not a.first_events:
        return None
    if row[1] == "ssh-bruteforce":
        return "journal" if row[0] % 5 == 0 else "log"
    return "mail"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="path of the migrated SQLite database")
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--show-id", type=int, required=True, help="incident given events and a timeline")
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--timeline", type=int, default=5)
    p.add_argument("--end", default="2026-11-25T02:00:00", help="newest opened_at (UTC, naive ISO)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--first-events", action="store_true",
                   help="give every incident its first event (bench/report.sh)")
    a = p.parse_args()
    if not 1 <= a.show_id <= a.count:
        p.error("--show-id must be within 1..--count")

    rng = random.Random(a.seed)
    end = dt.datetime.fromisoformat(a.end)
    span_us = 365 * 24 * 3600 * 10**6
    step_us = span_us / a.count
    start = end - dt.timedelta(microseconds=span_us)
    old_part = int(a.count * 0.95)

    open_keys = {"ssh-bruteforce": set(), "phishing-report": set()}
    rows = []  # a million tuples is about 1.5 GB: fine for a benchmark host
    t0 = time.perf_counter()
    for i in range(1, a.count + 1):
        opened = start + dt.timedelta(microseconds=int(i * step_us) + rng.randrange(max(1, int(step_us))))
        first_seen = opened - dt.timedelta(seconds=rng.randrange(30, 900))
        last_seen = opened + dt.timedelta(seconds=rng.randrange(0, 6 * 3600))
        not_closed = rng.random() < (0.01 if i <= old_part else 0.21)
        if rng.random() < 0.7:
            playbook, category = "ssh-bruteforce", "不正アクセス"
            ip = ip_for(rng)
            key = "ip=" + ip
            if not_closed:
                while key in open_keys[playbook]:
                    ip = ip_for(rng)
                    key = "ip=" + ip
            title = "SSH総当たり攻撃 (%s)" % ip
            severity = rng.choice(SEVERITIES_SSH)
            fields = {"ip": ip, "user": rng.choice(USERS), "host": "web%02d" % rng.randrange(1, 13)}
            event_count = rng.randrange(5, 400)
        else:
            playbook, category = "phishing-report", "標的型攻撃メール"
            subject = "%s #%d" % (rng.choice(SUBJECTS), rng.randrange(1, 100_000))
            key = "subject=" + subject
            if not_closed:
                while key in open_keys[playbook]:
                    subject = "%s #%d" % (rng.choice(SUBJECTS), rng.randrange(1, 100_000))
                    key = "subject=" + subject
            title = "標的型攻撃メールの報告: %s" % subject
            severity = rng.choice(SEVERITIES_MAIL)
            fields = {"subject": subject, "from": rng.choice(SENDERS),
                      "message_id": "<%016x@mail.example>" % rng.getrandbits(64)}
            event_count = rng.randrange(1, 12)
        if not_closed:
            open_keys[playbook].add(key)
            status = "acknowledged" if rng.random() < 0.4 else "open"
            resolution = None
            closed_at = None
            acked = opened + dt.timedelta(seconds=rng.randrange(60, 3600)) if status == "acknowledged" else None
        else:
            status = "closed"
            resolution = rng.choice(RESOLUTIONS)
            acked = opened + dt.timedelta(seconds=rng.randrange(60, 3600)) if rng.random() < 0.8 else None
            closed_at = last_seen + dt.timedelta(seconds=rng.randrange(600, 3 * 86400))
        assignee = rng.choice(ASSIGNEES) if acked else None
        rows.append((
            i, playbook, category, title, severity, status, resolution, key,
            json.dumps(fields, ensure_ascii=False, separators=(",", ":")), event_count,
            rfc3339(first_seen), rfc3339(last_seen), rfc3339(opened),
            rfc3339(acked) if acked else None, rfc3339(closed_at) if closed_at else None,
            assignee, rng.choice([0, 0, 0, 1, 2]),
        ))
    t_gen = time.perf_counter() - t0

    show = rows[a.show_id - 1]
    show_playbook, show_key = show[1], show[7]
    show_opened = dt.datetime.fromisoformat(show[12].replace("+00:00", ""))
    events = []
    for n in range(a.events):
        at = show_opened - dt.timedelta(seconds=(a.events - n) * 7)
        if show_playbook == "ssh-bruteforce":
            ip = json.loads(show[8])["ip"]
            text = "%s web01 sshd[%d]: Failed password for invalid user %s from %s port %d ssh2" % (
                at.strftime("%b %d %H:%M:%S"), 4000 + n, rng.choice(USERS), ip, rng.randrange(30000, 65000))
            ev = ("failed-password", "log", "/var/log/auth.log", "/var/log/auth.log:%d" % (120000 + n),
                  text, json.dumps({"ip": ip}, separators=(",", ":")))
        else:
            subject = json.loads(show[8])["subject"]
            ev = ("forwarded-suspicious-mail", "mail", "maildir:intake", "<report-%d@city.example.jp>" % n,
                  "Fwd: " + subject, json.dumps({"subject": subject}, ensure_ascii=False, separators=(",", ":")))
        rule, kind, source, locator, text, fjson = ev
        events.append((a.show_id, show_playbook, rule, show_key, kind, source, locator,
                       rfc3339(at), rfc3339(at + dt.timedelta(milliseconds=300)), text, fjson))
    actions = [("daemon", "opened", show[3]), ("sato", "acknowledged", ""), ("sato", "assigned", "suzuki"),
               ("suzuki", "note", "送信元IPをファイアウォールで遮断した"),
               ("suzuki", "closed", show[6]) if show[6] else ("suzuki", "note", "経過観察中")]
    timeline = []
    for n in range(a.timeline):
        actor, action, detail = actions[n % len(actions)]
        timeline.append((a.show_id, rfc3339(show_opened + dt.timedelta(minutes=5 * n)), actor, action, detail))

    t1 = time.perf_counter()
    con = sqlite3.connect(a.db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # as the app opens it
    con.execute("PRAGMA foreign_keys=ON")
    (existing,) = con.execute("SELECT COUNT(*) FROM incidents").fetchone()
    has_origin = any(col[1] == "origin" for col in con.execute("PRAGMA table_info(incidents)"))
    if existing:
        print("seed_incidents: %s already holds %d incidents" % (a.db, existing), file=sys.stderr)
        return 1
    con.execute("BEGIN IMMEDIATE")
    columns = ("id, playbook, category, title, severity, status, resolution, dedupe_key, fields, "
               "event_count, first_seen, last_seen, opened_at, acknowledged_at, closed_at, assignee, "
               "escalation_level")
    if has_origin:
        rows = [r + (origin_of(r, a),) for r in rows]
        columns += ", origin"
    con.executemany(
        "INSERT INTO incidents (%s) VALUES (%s)" % (columns, ",".join("?" * len(rows[0]))), rows)
    con.executemany(
        "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, observed_at, "
        "received_at, text, fields) VALUES (?,?,?,?,?,?,?,?,?,?,?)", events)
    con.executemany("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES (?,?,?,?,?)", timeline)
    if a.first_events:
        firsts = []
        for r in rows:
            if r[0] == a.show_id:
                continue
            if r[1] == "ssh-bruteforce":
                kind, source = "log", ("journal:auth.log" if r[0] % 5 == 0 else "/var/log/auth.log")
            else:
                kind, source = "mail", "maildir:intake"
            firsts.append((r[0], r[1], "first", r[7], kind, source, str(r[0]), r[10], r[10], r[3], "{}"))
        con.executemany(
            "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, observed_at, "
            "received_at, text, fields) VALUES (?,?,?,?,?,?,?,?,?,?,?)", firsts)
        events.extend(firsts)
    con.execute("COMMIT")
    t_insert = time.perf_counter() - t1
    # Leave the store as a long-running one would be: the WAL checkpointed into the main file.
    t2 = time.perf_counter()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    t_ckpt = time.perf_counter() - t2
    (not_closed,) = con.execute("SELECT COUNT(*) FROM incidents WHERE status <> 'closed'").fetchone()
    con.close()
    print("seeded %d incidents (%d not closed), %d events and %d timeline rows for #%d in %.1f s "
          "(generate %.1f s, insert+commit %.1f s, checkpoint %.1f s)"
          % (a.count, not_closed, len(events), len(timeline), a.show_id,
             t_gen + t_insert + t_ckpt, t_gen, t_insert, t_ckpt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
