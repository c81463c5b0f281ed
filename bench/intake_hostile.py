#!/usr/bin/env python3
"""Hostile intake messages for bench/intake_hostile.sh, each just under the 25 MiB max_size.

    python3 bench/intake_hostile.py DIR      writes DIR/<shape>.eml, prints one name a line
"""
import base64
import os
import sys

LIMIT = 25 * 1024 * 1024
HEAD = (
    b"From: staff@city.kitakami.example.jp\r\n"
    b"To: csirt@city.kitakami.example.jp\r\n"
    b"Message-ID: <hostile-%s@city.kitakami.example.jp>\r\n"
    b"Date: Tue, 25 Nov 2025 10:00:00 +0900\r\n"
)


def head(name, subject=b"hostile"):
    return HEAD % name.encode() + b"Subject: " + subject + b"\r\n"


def fill(prefix, unit, suffix=b""):
    n = (LIMIT - 1024 - len(prefix) - len(suffix)) // len(unit)
    return prefix + unit * n + suffix


def forward(name, inner):
    return (
        head(name, b"Fwd: suspicious")
        + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
        + b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease check.\r\n"
        + b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
        + inner
        + b"\r\n--outer--\r\n"
    )


def shapes():
    # 5.2 million empty parts: the 925 MB case.
    yield "empty_parts", fill(
        head("empty_parts") + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n", b"--b\n\n", b"--b--\n"
    )
    # Multipart inside multipart, each level its own boundary, as deep as the size allows.
    levels = []
    size = 0
    i = 0
    while size < LIMIT - 4096:
        level = b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        levels.append(level)
        size += len(level)
        i += 1
    yield "deep_multipart", head("deep_multipart") + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(levels)
    # message/rfc822 inside message/rfc822.
    yield "deep_rfc822", fill(head("deep_rfc822") + b"Content-Type: message/rfc822\r\n\r\n", b"Content-Type: message/rfc822\r\n\r\n", b"From: x@example.jp\r\n\r\nbody\r\n")
    # A forward carrying 300,000 Received headers.
    received = b"".join(
        b"Received: from h%d.example ([198.51.%d.%d]); 25 Nov 2025\r\n"
        % (n, n // 256 % 256, n % 256)
        for n in range(300_000)
    )
    inner = received + b"From: phish@attacker.example\r\nSubject: verify\r\nMessage-ID: <p300k@attacker.example>\r\n\r\nhttps://attacker.example/login\r\n"
    yield "headers_300k", forward("headers_300k", inner)
    # One header of nearly 25 MiB (a folded Subject).
    yield "huge_header", fill(head("huge_header", b"x") + b"X-Huge: ", b"a" * 76 + b"\r\n ", b"\r\n\r\nbody\r\n")
    # A base64 text body that decodes to 18 MiB, in a forward (every text part is read).
    text = base64.encodebytes(b"https://attacker.example/a " * ((LIMIT - 8192) * 3 // 4 * 76 // 78 // 27))
    inner = b"From: phish@attacker.example\r\nSubject: bomb\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + text
    yield "base64_bomb", forward("base64_bomb", inner)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, raw in shapes():
        assert len(raw) <= LIMIT, (name, len(raw))
        with open(os.path.join(out, name + ".eml"), "wb") as f:
            f.write(raw)
        print(name)


if __name__ == "__main__":
    main()
