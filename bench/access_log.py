#!/usr/bin/env python3
"""Writes N lines of a realistic nginx combined access log for the city's web site (seeded):
mostly ordinary requests from many addresses, with about 0.5% attack traffic (path traversal,
SQL injection, scanners) from a few addresses.

    access_log.py --lines 1000000 --seed 42 --out access.log
"""
import argparse
import random

PAGES = ["/", "/index.html", "/procedures/juminhyo.html", "/kurashi/gomi/calendar.html",
         "/kosodate/hoikuen.html", "/css/site.css", "/js/main.js", "/img/logo.png", "/favicon.ico",
         "/search?q=%E4%BD%8F%E6%B0%91%E7%A5%A8", "/api/v1/status", "/news/2026/11/25.html",
         "/bousai/hinanjo.html", "/contact/send"]
ATTACKS = ["/../../etc/passwd", "/download?file=..%2f..%2fetc%2fshadow", "/item?id=1%27+UNION+SELECT+1,2--",
           "/.env", "/wp-login.php", "/phpmyadmin/index.php", "/.git/config", "/cgi-bin/luci"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
          "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    attackers = ["203.0.113.%d" % i for i in range(1, 9)]
    t = 1764000000
    with open(a.out, "w") as f:
        for _ in range(a.lines):
            t += rnd.random() * 0.5
            s = int(t) % 86400
            stamp = "25/Nov/2026:%02d:%02d:%02d +0900" % (s // 3600, s // 60 % 60, s % 60)
            if rnd.random() < 0.005:
                ip, path, status = rnd.choice(attackers), rnd.choice(ATTACKS), rnd.choice([400, 403, 404])
                agent = "sqlmap/1.7"
            else:
                ip = "%d.%d.%d.%d" % (rnd.randint(1, 223), rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254))
                path, status, agent = rnd.choice(PAGES), rnd.choice([200, 200, 200, 304, 404]), rnd.choice(AGENTS)
            f.write('%s - - [%s] "GET %s HTTP/1.1" %d %d "-" "%s"\n' % (ip, stamp, path, status, rnd.randint(150, 60000), agent))


if __name__ == "__main__":
    main()
