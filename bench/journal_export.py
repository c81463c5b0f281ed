#!/usr/bin/env python3
"""Writes N journal entries of a busy Debian server under SSH attack, in the journal export
format, to stdout, for bench/journal.sh; deterministic for a seed.

The mix (about; --truth reports the exact counts):
  - sshd (_SYSTEMD_UNIT=ssh.service) connections from ADDRESSES attackers (IPv4 from the three
    documentation /24s and a few IPv6 in 2001:db8::/32), heavy-tailed: a few do most of the
    work. Root guessing ("Failed password for root ... ssh2", 1-3 per connection), invalid users
    ("Invalid user NAME from ..." then "Failed password for invalid user NAME ..."), some with
    the PAM lines around them; scanners ("Connection closed by IP port P [preauth]",
    "Received disconnect ...: 11: Bye Bye [preauth]", "Disconnected from ..."); about 60 % of all
    entries are failures the SSH playbook counts;
  - legitimate logins from 10.0.0.0/8 ("Accepted publickey ...", pam_unix session opened and
    closed, "Received disconnect ...: 11: disconnected by user", "Disconnected from user ...");
  - other units (about 15 %): cron (CMD and its pam_unix session lines), systemd and
    systemd-logind (sessions started and removed), the kernel's "[UFW BLOCK]" lines (no unit, no
    pid), postfix/smtpd; and two kinds of decoy, rare: a cron entry whose MESSAGE is an sshd
    failure (never counted: its identifier is cron), and a `logger -t sshd` forgery from
    user@1000.service (SYSLOG_IDENTIFIER=sshd: counted by a source without a match, not by one
    matching _SYSTEMD_UNIT=ssh.service).
  - "low and slow" addresses with 1-4 failures in all (below the threshold: pending events).
The last entry is always a counted sshd failure, so a source's last batch carries hits and its
cursor is committed at once (a batch without hits moves the stored cursor at most once a second).

Each entry carries the fields journald gives such a message (host, identifier, pid, comm, exe,
cmdline, unit, cgroup, uid, gid, boot and machine id, transport, priority, facility,
SYSLOG_TIMESTAMP...): what journalctl has to read, not only what the source asks for.
Realtime starts at START (microseconds) and advances STEP_MS on average (exponential gaps).

--hit-every K (K > 1) keeps only every K-th failure (and the last entry) as a failure and writes
the others as "Disconnected from authenticating user root IP port 22 [preauth]" (read by the
playbook's rules, counted by none): the same reading and matching with almost no store work.

Usage: journal_export.py N [--seed S] [--addresses A] [--step-ms MS] [--start-us US]
                         [--hit-every K] [--truth FILE] | systemd-journal-remote --output=DIR/bench.journal -
--truth FILE gets JSON: entries, counted failures by address for a source matching
_SYSTEMD_UNIT=ssh.service ("failures_by_ip") and for a source without a match
("failures_by_ip_unmatched"), the number of entries of ssh.service, and the composition.
"""
import argparse
import ipaddress
import json
import random
import sys
import time

HOST = "kitakami-web1"
BOOT = "3f2a0c5e9b1d4e7f8a6b5c4d3e2f1a0b"
MACHINE = "9c1b7e2d4a6f48b0a3e5d7c9b1f3e5a7"
USERS = ["root", "admin", "test", "user", "ubuntu", "oracle", "postgres", "git", "ftpuser",
         "pi", "guest", "support", "deploy", "jenkins", "hadoop", "mysql", "www", "info"]
STAFF = ["sato", "suzuki", "takahashi", "tanaka", "ito"]


def attackers(n, rng):
    """n attacker addresses (about 5 % IPv6) with heavy-tailed weights."""
    nets = [ipaddress.ip_network(x) for x in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    v4 = [str(ip) for net in nets for ip in list(net.hosts())]
    rng.shuffle(v4)
    n6 = max(1, n // 20)
    out = v4[: n - n6]
    out += [f"2001:db8:{rng.randrange(1, 0xffff):x}::{rng.randrange(1, 0xffff):x}" for _ in range(n6)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(out))]
    return out, weights


class Writer:
    def __init__(self, out, start_us, step_ms, rng):
        self.out = out
        self.t = start_us
        self.mono = 5_000_000_000
        self.step_us = step_ms * 1000.0
        self.rng = rng
        self.chunk = []
        self.entries = 0
        self.by_kind = {}

    def entry(self, kind, message, fields):
        gap = max(1, int(self.rng.expovariate(1.0 / self.step_us)))
        self.t += gap
        self.mono += gap
        stamp = time.strftime("%b %e %H:%M:%S", time.gmtime(self.t // 1_000_000))
        lines = [
            f"__REALTIME_TIMESTAMP={self.t}",
            f"__MONOTONIC_TIMESTAMP={self.mono}",
            f"_BOOT_ID={BOOT}",
            f"_MACHINE_ID={MACHINE}",
            f"_HOSTNAME={HOST}",
        ]
        lines += [f"{k}={v}" for k, v in fields]
        if any(k == "_TRANSPORT" and v == "syslog" for k, v in fields):
            lines.append(f"SYSLOG_TIMESTAMP={stamp} ")
        lines.append(f"MESSAGE={message}")
        self.chunk.append(("\n".join(lines) + "\n\n").encode())
        self.entries += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.chunk) >= 5000:
            self.flush()

    def flush(self):
        self.out.write(b"".join(self.chunk))
        self.chunk = []


def sshd_fields(pid, cmdline, facility=4, priority=6):
    return [
        ("_TRANSPORT", "syslog"), ("PRIORITY", str(priority)), ("SYSLOG_FACILITY", str(facility)),
        ("SYSLOG_IDENTIFIER", "sshd"), ("SYSLOG_PID", str(pid)), ("_PID", str(pid)),
        ("_UID", "0"), ("_GID", "0"), ("_COMM", "sshd"), ("_EXE", "/usr/sbin/sshd"),
        ("_CMDLINE", cmdline), ("_CAP_EFFECTIVE", "1ffffffffff"),
        ("_SYSTEMD_CGROUP", "/system.slice/ssh.service"),
        ("_SYSTEMD_UNIT", "ssh.service"), ("_SYSTEMD_SLICE", "system.slice"),
        ("_SYSTEMD_INVOCATION_ID", "6b0f2b7e1c3d4a5f8e9d0c1b2a394857"),
    ]


def unit_fields(ident, pid, comm, exe, cmdline, unit, facility=3, priority=6, transport="syslog"):
    f = [("_TRANSPORT", transport), ("PRIORITY", str(priority)), ("SYSLOG_FACILITY", str(facility)),
         ("SYSLOG_IDENTIFIER", ident), ("SYSLOG_PID", str(pid)), ("_PID", str(pid)), ("_UID", "0"),
         ("_GID", "0"), ("_COMM", comm), ("_EXE", exe), ("_CMDLINE", cmdline),
         ("_CAP_EFFECTIVE", "1ffffffffff"), ("_SYSTEMD_CGROUP", f"/system.slice/{unit}"),
         ("_SYSTEMD_UNIT", unit), ("_SYSTEMD_SLICE", "system.slice")]
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--addresses", type=int, default=300)
    ap.add_argument("--step-ms", type=float, default=10.0)
    ap.add_argument("--start-us", type=int, default=1_763_000_000_000_000)
    ap.add_argument("--hit-every", type=int, default=1)
    ap.add_argument("--truth")
    a = ap.parse_args()
    if a.n < 1:
        sys.exit("N must be positive")
    rng = random.Random(a.seed)
    w = Writer(sys.stdout.buffer, a.start_us, a.step_ms, rng)
    addrs, weights = attackers(a.addresses, rng)
    slow = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(max(1, a.addresses // 3))]
    counted = {}            # counted by a source matching _SYSTEMD_UNIT=ssh.service
    forged = {}             # counted only by a source without a match
    ssh_entries = 0
    next_pid = [20000]

    def pid():
        next_pid[0] = next_pid[0] + rng.randrange(1, 7)
        if next_pid[0] > 4_000_000:
            next_pid[0] = 20000
        return next_pid[0]

    demoted = [0]

    def ssh(kind, msg, p, ip=None, cmd="sshd: unknown [priv]", facility=4, priority=6, last=False):
        nonlocal ssh_entries
        if kind == "failure" and a.hit_every > 1 and not last:
            demoted[0] += 1
            if demoted[0] % a.hit_every:
                # --hit-every: this failure becomes a line the playbook reads but does not count.
                kind, msg, ip = "demoted-failure", f"Disconnected from authenticating user root {ip} port 22 [preauth]", None
        w.entry(kind, msg, sshd_fields(p, cmd, facility, priority))
        ssh_entries += 1
        if ip is not None:
            counted[ip] = counted.get(ip, 0) + 1

    def port():
        return rng.randrange(1024, 65536)

    def root_guess(ip, budget):
        p, pt = pid(), port()
        k = min(budget, rng.choice((1, 1, 2, 3)))
        if rng.random() < 0.3:
            ssh("other-sshd", f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                f"tty=ssh ruser= rhost={ip}  user=root", p, facility=10, priority=5)
        for _ in range(k):
            ssh("failure", f"Failed password for root from {ip} port {pt} ssh2", p, ip)
        if rng.random() < 0.5:
            ssh("other-sshd", f"Connection closed by authenticating user root {ip} port {pt} [preauth]", p)
        return k

    def invalid_user(ip, budget):
        p, pt, user = pid(), port(), rng.choice(USERS[1:])
        ssh("failure", f"Invalid user {user} from {ip} port {pt}", p, ip)
        k = 1
        if budget >= 2 and rng.random() < 0.7:
            if rng.random() < 0.2:
                ssh("other-sshd", "pam_unix(sshd:auth): check pass; user unknown", p, facility=10, priority=5)
            ssh("failure", f"Failed password for invalid user {user} from {ip} port {pt} ssh2", p, ip)
            k = 2
        if rng.random() < 0.4:
            ssh("other-sshd", f"Connection closed by invalid user {user} {ip} port {pt} [preauth]", p)
        return k

    def scanner(ip):
        p, pt = pid(), port()
        r = rng.random()
        if r < 0.5:
            ssh("other-sshd", f"Connection closed by {ip} port {pt} [preauth]", p)
        elif r < 0.8:
            ssh("other-sshd", f"Received disconnect from {ip} port {pt}:11: Bye Bye [preauth]", p)
            ssh("other-sshd", f"Disconnected from {ip} port {pt} [preauth]", p)
        else:
            ssh("other-sshd", f"error: kex_exchange_identification: Connection closed by remote host", p, priority=3)
            ssh("other-sshd", f"Connection closed by {ip} port {pt}", p)

    def login():
        p, pt, user = pid(), port(), rng.choice(STAFF)
        ip = f"10.{rng.randrange(1, 4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        ssh("other-sshd", f"Accepted publickey for {user} from {ip} port {pt} ssh2: ED25519 "
            f"SHA256:{rng.getrandbits(128):032x}", p, cmd=f"sshd: {user} [priv]")
        ssh("other-sshd", f"pam_unix(sshd:session): session opened for user {user}(uid=1001) by (uid=0)",
            p, cmd=f"sshd: {user} [priv]", facility=10)
        sid = rng.randrange(100, 99999)
        w.entry("other-unit", f"New session {sid} of user {user}.",
                unit_fields("systemd-logind", 612, "systemd-logind", "/lib/systemd/systemd-logind",
                            "/lib/systemd/systemd-logind", "systemd-logind.service", 4, 6, "journal"))
        w.entry("other-unit", f"Started session-{sid}.scope - Session {sid} of User {user}.",
                unit_fields("systemd", 1, "systemd", "/lib/systemd/systemd", "/sbin/init",
                            "init.scope", 3, 6, "journal"))
        ssh("other-sshd", f"Received disconnect from {ip} port {pt}:11: disconnected by user", p,
            cmd=f"sshd: {user} [priv]")
        ssh("other-sshd", f"Disconnected from user {user} {ip} port {pt}", p, cmd=f"sshd: {user} [priv]")
        ssh("other-sshd", f"pam_unix(sshd:session): session closed for user {user}", p,
            cmd=f"sshd: {user} [priv]", facility=10)

    def other():
        r = rng.random()
        if r < 0.35:
            p = pid()
            cron = unit_fields("CRON", p, "cron", "/usr/sbin/cron", "/usr/sbin/CRON -f", "cron.service", 10)
            w.entry("other-unit", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", cron)
            w.entry("other-unit", "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
                    unit_fields("CRON", p, "cron", "/usr/sbin/cron", "/usr/sbin/CRON -f", "cron.service", 9))
            w.entry("other-unit", "pam_unix(cron:session): session closed for user root", cron)
        elif r < 0.7:
            src = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            w.entry("other-unit", f"[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
                    f"SRC={src} DST=192.0.2.10 LEN=44 TOS=0x00 PREC=0x00 TTL=243 ID=54321 PROTO=TCP "
                    f"SPT={port()} DPT={rng.choice((23, 3389, 445, 8080, 5900))} WINDOW=1024 RES=0x00 SYN URGP=0",
                    [("_TRANSPORT", "kernel"), ("PRIORITY", "4"), ("SYSLOG_FACILITY", "0"),
                     ("SYSLOG_IDENTIFIER", "kernel"), ("_SOURCE_MONOTONIC_TIMESTAMP", str(w.mono))])
        elif r < 0.9:
            p = pid()
            src = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            smtpd = unit_fields("postfix/smtpd", p, "smtpd", "/usr/lib/postfix/sbin/smtpd",
                                "smtpd -n smtp -t inet -u -c -o stress=", "postfix@-.service", 2)
            w.entry("other-unit", f"connect from unknown[{src}]", smtpd)
            w.entry("other-unit", f"disconnect from unknown[{src}] ehlo=1 auth=0/1 quit=1 commands=2/3", smtpd)
        elif r < 0.995:
            u = rng.choice(("logrotate.service", "apt-daily.service", "man-db.service", "phpsessionclean.service"))
            w.entry("other-unit", f"{u}: Deactivated successfully.",
                    unit_fields("systemd", 1, "systemd", "/lib/systemd/systemd", "/sbin/init", "init.scope", 3, 6, "journal"))
        elif r < 0.9975:
            # Decoy: an sshd failure line in a cron job's output. Its identifier is CRON: never counted.
            p = pid()
            w.entry("decoy-cron", "Failed password for root from 198.51.100.254 port 22 ssh2",
                    unit_fields("CRON", p, "cron", "/usr/sbin/cron", "/usr/sbin/CRON -f", "cron.service", 9))
        else:
            # Decoy: `logger -t sshd` by a local user. SYSLOG_IDENTIFIER=sshd but _SYSTEMD_UNIT is the
            # user's: counted without a match only.
            p = pid()
            f = unit_fields("sshd", p, "logger", "/usr/bin/logger", "logger -t sshd", "user@1000.service", 1)
            f = [(k, "1000" if k in ("_UID", "_GID") else v) for k, v in f]
            w.entry("decoy-logger", "Failed password for root from 198.51.100.253 port 22 ssh2", f)
            forged["198.51.100.253"] = forged.get("198.51.100.253", 0) + 1

    # Reserve room for the final failure entry.
    while w.entries < a.n - 1:
        left = a.n - 1 - w.entries
        r = rng.random()
        if left < 10:
            # The tail: only single-entry events, so the count comes out exactly.
            if r < 0.5:
                ip = rng.choices(addrs, weights)[0]
                ssh("failure", f"Failed password for root from {ip} port {port()} ssh2", pid(), ip)
            else:
                ssh("other-sshd", f"Connection closed by {rng.choice(addrs)} port {port()} [preauth]", pid())
            continue
        budget = 3
        if r < 0.44:
            root_guess(rng.choices(addrs, weights)[0], budget)
        elif r < 0.79:
            invalid_user(rng.choices(addrs, weights)[0], budget)
        elif r < 0.82:
            ip = rng.choice(slow)
            if counted.get(ip, 0) < 4:
                ssh("failure", f"Failed password for root from {ip} port {port()} ssh2", pid(), ip)
        elif r < 0.86:
            scanner(rng.choices(addrs, weights)[0])
        elif r < 0.875:
            login()
        else:
            other()
    last_ip = addrs[0]
    ssh("failure", f"Failed password for root from {last_ip} port {port()} ssh2", pid(), last_ip, last=True)
    w.flush()

    if a.truth:
        unmatched = dict(counted)
        for ip, n in forged.items():
            unmatched[ip] = unmatched.get(ip, 0) + n
        json.dump({
            "entries": w.entries,
            "ssh_entries": ssh_entries,
            "by_kind": w.by_kind,
            "failures": sum(counted.values()),
            "failures_by_ip": {f"ip={k}": v for k, v in sorted(counted.items())},
            "failures_by_ip_unmatched": {f"ip={k}": v for k, v in sorted(unmatched.items())},
            "addresses": len(counted),
            "seed": a.seed,
            "hit_every": a.hit_every,
            "step_ms": a.step_ms,
            "first_us": a.start_us,
            "last_us": w.t,
        }, open(a.truth, "w"), indent=1)


if __name__ == "__main__":
    main()
