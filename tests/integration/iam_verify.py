"""Checking IAM auth tokens with code repoint did not write: botocore (Debian's python3-botocore,
through tests/unit/data/presign/make_vectors.py in a process of its own, so that its signer can
be chosen) and the lab emulator's SigV4 verifier (scripts/labkit/awsemu/sigv4.py, hmac/hashlib)."""
import calendar
import os
import subprocess
import time
import urllib.parse

from conftest import TOP
from labkit.awsemu import sigv4

MAKE_VECTORS = os.path.join(TOP, "tests", "unit", "data", "presign", "make_vectors.py")
PYTHON = "/usr/bin/python3"


def botocore_token(kind, *args, crt=False):
    """botocore's token; kind "rds" (HOST PORT USER REGION AKID SECRET TOKEN NOW) or
    "elasticache"/"memorydb" (NAME USER SERVERLESS REGION AKID SECRET TOKEN NOW); TOKEN "-": none.
    crt: with awscrt's signer (as Debian's botocore and aws CLI sign), else botocore's own."""
    cmd = [PYTHON, MAKE_VECTORS] + (["--crt"] if crt else []) + ["--token", kind] + [str(a) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def split(token):
    """'host:port/?a=b&c=d' -> ('host:port', [(a, b), (c, d)]) with values decoded."""
    head, sep, query = token.partition("/?")
    assert sep, "no '/?' in the token"
    return head, urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)


def amz_time(token):
    """The token's X-Amz-Date as seconds since the epoch."""
    d = dict(split(token)[1])["X-Amz-Date"]
    return calendar.timegm(time.strptime(d, "%Y%m%dT%H%M%SZ"))


def awsemu_verify(token, credentials, now=None):
    """The emulator's verifier on a token: raises sigv4.AuthError when it is refused, else returns
    Auth (access_key, region, service...). credentials: {akid: {"secret": S, "token": T or None}}."""
    head, _, query = token.partition("/?")
    return sigv4.verify("GET", "/", query, [("host", head.lower())], b"", credentials, now=now)
