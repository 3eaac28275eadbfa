#!/usr/bin/python3
"""The TLS lab's RDS IAM token checker: run by pam_exec (expose_authtok) for the PostgreSQL roles
that log in with IAM (pg_hba.conf `pam pamservice=...`), as RDS checks a token, with code that
shares nothing with repoint's signer (the emulator's SigV4 verifier, labkit/awsemu/sigv4.py).

    iamcheck.py CONFIG      the token on stdin (NUL-terminated), the role in PAM_USER

CONFIG (JSON, the lab writes it): {"region", "credentials": {akid: {"secret", "token"}}, "log",
"skew_s"}. A token is accepted when it is `HOST:PORT/?Action=connect&DBUser=ROLE&X-Amz-...` for
this very server (the port of the postmaster whose backend runs this check), DBUser is the role
logging in, it is signed for service rds-db in the lab's region by known credentials, and it is
not expired (X-Amz-Expires at most 900 s from X-Amz-Date; skew_s moves the checker's clock, for
tests). Each decision is a line in the log, with the reason for a refusal; the token itself never
is (a short hash). Exit 0 accepts, 1 refuses.
"""
import calendar
import hashlib
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from labkit.awsemu import sigv4  # noqa: E402

MAX_EXPIRES = 900


def server_port():
    """The port of the postmaster whose backend forked this check (its argv keeps `-p PORT`)."""
    pid = os.getppid()
    for _ in range(4):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if b"-p" in argv:
                return int(argv[argv.index(b"-p") + 1])
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def check(token, role, cfg, port, now):
    head, sep, query = token.partition("/?")
    if not sep:
        return "not a presigned URL"
    q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    host, _, tport = head.rpartition(":")
    if port is not None and tport != str(port):
        return "the token is for port %s, this server listens on %s" % (tport, port)
    if host not in ("127.0.0.1", "localhost"):
        return "the token is for host %s" % host
    if q.get("Action") != "connect":
        return "Action is %r, not connect" % q.get("Action")
    if q.get("DBUser") != role:
        return "the token is for DBUser %r, not %r" % (q.get("DBUser"), role)
    try:
        expires = int(q.get("X-Amz-Expires", ""))
        signed_at = calendar.timegm(time.strptime(q.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "no valid X-Amz-Expires/X-Amz-Date"
    if expires > MAX_EXPIRES:
        return "X-Amz-Expires %d is more than %d" % (expires, MAX_EXPIRES)
    if now > signed_at + expires:
        return "expired %d s ago" % (now - signed_at - expires)
    if signed_at > now + 300:
        return "signed in the future"
    creds = {k: {"secret": v["secret"], "token": v.get("token")} for k, v in cfg["credentials"].items()}
    try:
        auth = sigv4.verify("GET", "/", query, [("host", head.lower())], b"", creds, now=now, max_skew=expires + 1)
    except sigv4.AuthError as e:
        return "%s: %s" % (e.code, e.message)
    if auth.service != "rds-db":
        return "signed for service %s, not rds-db" % auth.service
    if auth.region != cfg["region"]:
        return "signed for region %s, not %s" % (auth.region, cfg["region"])
    return None


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    token = sys.stdin.buffer.read().split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    role = os.environ.get("PAM_USER", "")
    port = server_port()
    why = check(token, role, cfg, port, time.time() + float(cfg.get("skew_s", 0)))
    tag = hashlib.sha256(token.encode()).hexdigest()[:8]
    line = "%s %s %s port=%s token=%s%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "accepted" if why is None else "refused", role, port, tag,
                                              "" if why is None else ": " + why)
    with open(cfg["log"], "a") as f:
        f.write(line)
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
