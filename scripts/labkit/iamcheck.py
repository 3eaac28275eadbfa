#!/usr/bin/python3
"""The TLS lab's RDS IAM token checker: run by pam_exec (expose_authtok) for the PostgreSQL roles
that log in with IAM (pg_hba.conf `pam pamservice=...`), as RDS checks a token, with code that
shares nothing with repoint's signer: botocore (Debian's python3-botocore) signs the token's request
again and must come to the same parameters and signature, and the emulator's SigV4 verifier
(labkit/awsemu/sigv4.py, hmac/hashlib) must accept it too.

    iamcheck.py CONFIG      the token on stdin (NUL-terminated), the role in PAM_USER

CONFIG (JSON, the lab writes it): {"region", "credentials": {akid: {"secret", "token"}}, "log",
"skew_s"}. A token is accepted when it is `HOST:PORT/?Action=connect&DBUser=ROLE&X-Amz-...` for
this very server (the port of the postmaster whose backend runs this check), DBUser is the role
logging in, it is signed for service rds-db in the lab's region by known credentials, and it is
not expired (X-Amz-Expires at most 900 s from X-Amz-Date) nor dated more than 5 minutes ahead
(skew_s moves the checker's clock, for tests). Each decision is a line in the log, with the reason
for a refusal; the token itself never is (a short hash). Exit 0 accepts, 1 refuses.
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
MAX_AHEAD = 300


def server_port():
    """The port of the server whose process forked this check: the postmaster (its argv keeps `-p PORT`),
    or mariadbd above its auth_pam_tool (`--port=PORT`)."""
    pid = os.getppid()
    for _ in range(4):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if b"-p" in argv:                        # postgres -p PORT
                return int(argv[argv.index(b"-p") + 1])
            for a in argv:                           # mariadbd --port=PORT
                if a.startswith(b"--port="):
                    return int(a[7:])
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def botocore_check(head, pairs, akid, cred, region, amz_date, expires):
    """botocore's SigV4QueryAuth signs GET https://HEAD/?<the token's own parameters> for rds-db in
    region with the token's X-Amz-Date as its clock (as generate_db_auth_token does at that time):
    None when it comes to the token's X-Amz-* parameters and signature, else what differs."""
    import datetime
    import hmac
    from unittest import mock
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    class Clock(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    own = [(k, v) for k, v in pairs if not k.startswith("X-Amz-")]
    request = AWSRequest(method="GET", url="https://%s/?%s" % (head, urllib.parse.urlencode(own)))
    with mock.patch("botocore.auth.datetime.datetime", Clock):
        SigV4QueryAuth(Credentials(akid, cred["secret"], cred.get("token")), "rds-db", region,
                       expires=expires).add_auth(request)
    theirs = dict(pairs)
    ours = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query, keep_blank_values=True))
    for k in sorted(set(ours) | set(theirs)):
        if k == "X-Amz-Signature" or not k.startswith("X-Amz-"):
            continue
        if k not in theirs:
            return "no %s (botocore signs with one)" % k
        if k not in ours:
            return "%s, which botocore does not sign with" % k
        if ours[k] != theirs[k] and k != "X-Amz-Security-Token":   # checked before, and not logged
            return "%s is %r, botocore's is %r" % (k, theirs[k], ours[k])
    if not hmac.compare_digest(ours.get("X-Amz-Signature", ""), theirs.get("X-Amz-Signature", "")):
        return "SignatureDoesNotMatch: botocore computes another X-Amz-Signature"
    return None


def check(token, role, cfg, port, now):
    head, sep, query = token.partition("/?")
    if not sep:
        return "not a presigned URL"
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    q = dict(pairs)
    if len(q) != len(pairs):
        return "a query parameter appears twice"
    host, _, tport = head.rpartition(":")
    if port is None:
        return "cannot tell this server's port (no postmaster with -p above this process)"
    if tport != str(port):
        return "the token is for port %s, this server listens on %s" % (tport, port)
    if host not in ("127.0.0.1", "localhost"):
        return "the token is for host %s" % host
    if q.get("Action") != "connect":
        return "Action is %r, not connect" % q.get("Action")
    if q.get("DBUser") != role:
        return "the token is for DBUser %r, not %r" % (q.get("DBUser"), role)
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return "X-Amz-Algorithm is %r" % q.get("X-Amz-Algorithm")
    scope = q.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return "no valid X-Amz-Credential"
    akid, day, region, service = scope[:4]
    if service != "rds-db":
        return "signed for service %s, not rds-db" % service
    if region != cfg["region"]:
        return "signed for region %s, not %s" % (region, cfg["region"])
    cred = cfg["credentials"].get(akid)
    if cred is None:
        return "InvalidClientTokenId: unknown access key %s" % akid
    if (cred.get("token") or None) != (q.get("X-Amz-Security-Token") or None):
        return "X-Amz-Security-Token is not the session token of %s" % akid
    try:
        expires = int(q.get("X-Amz-Expires", ""))
        signed_at = calendar.timegm(time.strptime(q.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "no valid X-Amz-Expires/X-Amz-Date"
    if day != q["X-Amz-Date"][:8]:
        return "the credential's date %s is not X-Amz-Date's" % day
    if not 0 < expires <= MAX_EXPIRES:
        return "X-Amz-Expires %d is not within 1..%d" % (expires, MAX_EXPIRES)
    if now > signed_at + expires:
        return "expired %d s ago" % (now - signed_at - expires)
    if signed_at > now + MAX_AHEAD:
        return "signed in the future (%d s ahead)" % (signed_at - now)
    if q.get("X-Amz-SignedHeaders") != "host":
        return "X-Amz-SignedHeaders is %r, not host" % q.get("X-Amz-SignedHeaders")
    why = botocore_check(head, pairs, akid, cred, region, q["X-Amz-Date"], expires)
    if why is not None:
        return why
    # A second opinion, written apart from botocore: the emulator's verifier.
    creds = {k: {"secret": v["secret"], "token": v.get("token")} for k, v in cfg["credentials"].items()}
    try:
        sigv4.verify("GET", "/", query, [("host", head.lower())], b"", creds, now=now, max_skew=expires + MAX_AHEAD)
    except sigv4.AuthError as e:
        return "the emulator's verifier: %s: %s" % (e.code, e.message)
    return None


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    token = sys.stdin.buffer.read().split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    role = os.environ.get("PAM_USER", "")
    port = server_port()
    try:
        why = check(token, role, cfg, port, time.time() + float(cfg.get("skew_s", 0)))
    except Exception as e:  # noqa: BLE001 - refused, and the log says the checker broke (the type: no token in it)
        why = "the checker failed: %s" % type(e).__name__
    tag = hashlib.sha256(token.encode()).hexdigest()[:8]
    line = "%s %s %s port=%s token=%s%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "accepted" if why is None else "refused", role, port, tag,
                                              "" if why is None else ": " + why)
    with open(cfg["log"], "a") as f:
        f.write(line)
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
