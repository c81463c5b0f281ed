#!/usr/bin/env python3
"""Writes a benchmark mix of intake mail into a directory, one message per file:

    intake_corpus.py --out DIR --count N [--seed S]
    intake_corpus.py --big FILE --size BYTES     (one message with an attachment near BYTES)

The mix: 70% Japanese text mails of about 10 KB (UTF-8, ISO-2022-JP, Shift_JIS/CP932 in turn,
written as Japanese clients write them), 30% forwarded reports (message/rfc822) of one of 20
campaigns, each carrying a 40 KB attachment. Every message has its own Message-ID.
"""

import argparse
import base64
import os
import random
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email import policy

DATE = "Wed, 25 Nov 2026 09:30:00 +0900"
LINE = "北上市の業務システムについてのご連絡です。詳細は担当課までお問い合わせください。"
CHARSETS = [("UTF-8", "utf-8"), ("ISO-2022-JP", "iso2022_jp"), ("Shift_JIS", "cp932")]


def text_mail(n, rnd):
    charset, codec = CHARSETS[n % len(CHARSETS)]
    subject = "業務連絡 第%d号 (%s)" % (n, rnd.choice(["総務課", "市民課", "税務課", "福祉課"]))
    body = "\n".join("%04d %s" % (i, LINE) for i in range(int(10_000 / (len(LINE.encode(codec)) + 6)))) + "\n"
    word = "=?%s?B?%s?=" % (charset, base64.b64encode(subject.encode(codec)).decode())
    head = ("From: staff%d@city.kitakami.example.jp\r\nTo: csirt@city.kitakami.example.jp\r\n"
            "Subject: %s\r\nDate: %s\r\nMessage-ID: <bench-text-%d@city.kitakami.example.jp>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"%s\"\r\n"
            "Content-Transfer-Encoding: %s\r\n\r\n") % (
        n % 300, word, DATE, n, charset, "7bit" if charset == "ISO-2022-JP" else "8bit")
    return head.encode() + body.replace("\n", "\r\n").encode(codec)


def report(n, rnd, attachment_bytes=40_000):
    campaign = n % 20
    inner = MIMEMultipart("mixed", boundary="inner-%d" % campaign)
    inner["Received"] = "from mail%d.attacker.example (mail.attacker.example [198.51.100.%d]) by mx; %s" % (campaign, campaign + 1, DATE)
    inner["From"] = "billing%d@attacker.example" % campaign
    inner["To"] = "staff%d@city.kitakami.example.jp" % (n % 300)
    inner["Subject"] = Header("請求書のご確認 (キャンペーン%d)" % campaign, "utf-8").encode()
    inner["Date"] = DATE
    inner["Message-ID"] = "<campaign-%d@attacker.example>" % campaign
    inner.attach(MIMEText("請求書をご確認ください https://invoice%d.attacker.example/dl\n" % campaign, "plain", "utf-8"))
    rng = random.Random(campaign)
    inner.attach(MIMEApplication(bytes(rng.getrandbits(8) for _ in range(attachment_bytes)), "zip", Name="請求書.zip"))
    outer = MIMEMultipart("mixed", boundary="outer-%d" % n)
    outer["From"] = "staff%d@city.kitakami.example.jp" % (n % 300)
    outer["To"] = "csirt@city.kitakami.example.jp"
    outer["Subject"] = Header("転送: 不審なメール", "utf-8").encode()
    outer["Date"] = DATE
    outer["Message-ID"] = "<bench-report-%d@city.kitakami.example.jp>" % n
    outer.attach(MIMEText("不審なメールを転送します。\n", "plain", "utf-8"))
    outer.attach(MIMEMessage(inner))
    return outer.as_bytes(policy=policy.compat32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--big")
    ap.add_argument("--size", type=int, default=25 * 1024 * 1024 - 64 * 1024)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    if a.big:
        # base64 grows by 4/3 plus line ends: size the attachment so the message lands near --size.
        raw = report(0, rnd, attachment_bytes=int(a.size * 0.74))
        with open(a.big, "wb") as f:
            f.write(raw)
        print(len(raw))
        return
    os.makedirs(a.out, exist_ok=True)
    total = 0
    for n in range(a.count):
        raw = report(n, rnd) if n % 10 < 3 else text_mail(n, rnd)
        total += len(raw)
        with open(os.path.join(a.out, "%010d.M%dP1.bench" % (1764030000 + n, n)), "wb") as f:
            f.write(raw)
    print(total)


if __name__ == "__main__":
    main()
