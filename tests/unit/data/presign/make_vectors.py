#!/usr/bin/python3
"""Writes vectors.tsv: IAM auth tokens computed by botocore (Debian's python3-botocore) for fixed
times and credentials. tests/unit/test_presign.c checks repoint's presigner against every line,
byte for byte; tests/integration/test_iam_token.py runs this again and checks that the file is
still what botocore computes.

    /usr/bin/python3 tests/unit/data/presign/make_vectors.py > tests/unit/data/presign/vectors.tsv
    /usr/bin/python3 make_vectors.py [--crt] --token rds HOST PORT USER REGION AKID SECRET TOKEN NOW_S
    /usr/bin/python3 make_vectors.py [--crt] --token elasticache|memorydb NAME USER SERVERLESS REGION AKID
                                     SECRET TOKEN NOW_S          (one token, for the integration tests)

botocore signs presigned URLs with awscrt when python3-awscrt is installed, and then puts
X-Amz-SignedHeaders before X-Amz-Expires (the signature is the same: the canonical query is
sorted). The vectors are botocore's own Python signer's (BOTO_DISABLE_CRT=true), the order
of AWS's documentation; test_iam_token.py checks the awscrt order too, parameter by parameter.

Columns (tab-separated; "-" for no session token):
    rds          HOST PORT USER REGION AKID SECRET TOKEN NOW_S EXPECTED
    elasticache  NAME USER SERVERLESS(0|1) REGION AKID SECRET TOKEN NOW_S EXPECTED   (also memorydb)
"""
import datetime
import os
import sys
from unittest import mock
from urllib.parse import urlencode

if "--crt" not in sys.argv:
    os.environ["BOTO_DISABLE_CRT"] = "true"   # before botocore is imported: botocore's own signer

import botocore.session  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.model import ServiceId  # noqa: E402
from botocore.signers import RequestSigner  # noqa: E402

KEYS = [
    ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None),
    ("ASIAEXAMPLETEMP", "tmp/Secret+Key=", "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+abc/def=="),
]
TIMES = [1704067200, 1722470399, 951782400]   # 2024-01-01 00:00:00, 2024-07-31 23:59:59, 2000-02-29


class _FixedClock(datetime.datetime):
    now_s = 0

    @classmethod
    def utcnow(cls):
        return datetime.datetime.utcfromtimestamp(cls.now_s)


def _at(now_s):
    _FixedClock.now_s = now_s
    return mock.patch("botocore.auth.datetime.datetime", _FixedClock)


def rds_token(host, port, user, region, akid, secret, token, now_s):
    s = botocore.session.Session()
    s.set_credentials(akid, secret, token)
    c = s.create_client("rds", region_name=region)
    with _at(now_s):
        return c.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)


def cache_token(service, name, user, serverless, region, akid, secret, token, now_s):
    """How AWS's own samples build it: a GET of http://NAME/?Action=connect&User=USER presigned for
    900 s with the service's signing name, the scheme cut off."""
    s = botocore.session.Session()
    signer = RequestSigner(ServiceId(service), region, service, "v4", Credentials(akid, secret, token),
                           s.get_component("event_emitter"))
    q = {"Action": "connect", "User": user}
    if serverless:
        q["ResourceType"] = "ServerlessCache"
    url = "http://%s/?%s" % (name, urlencode(q))
    with _at(now_s):
        signed = signer.generate_presigned_url({"method": "GET", "url": url, "body": {}, "headers": {},
                                                "context": {}}, operation_name="connect", expires_in=900,
                                               region_name=region)
    return signed[len("http://"):]


def vectors():
    out = []
    i = 0
    for host, port, user in [("mydb.cluster-abc.us-east-1.rds.amazonaws.com", 5432, "app"),
                             ("MyDB.Instance-1.eu-west-1.rds.amazonaws.com", 3306, "iam_user"),
                             ("db.example.internal", 443, "a user+x/é=&"),
                             ("10.0.0.7", 6432, "probe")]:
        for akid, secret, token in KEYS:
            now = TIMES[i % len(TIMES)]
            region = ["us-east-1", "eu-west-1", "ap-southeast-2"][i % 3]
            i += 1
            out.append(["rds", host, str(port), user, region, akid, secret, token or "-", str(now),
                        rds_token(host, port, user, region, akid, secret, token, now)])
    for service, name, user, serverless in [("elasticache", "my-redis-group", "default", False),
                                            ("elasticache", "my-serverless-cache", "iam-user-01", True),
                                            ("elasticache", "Orders-Cache", "app user/é", False),
                                            ("memorydb", "my-memorydb-cluster", "iam-user", False)]:
        for akid, secret, token in KEYS:
            now = TIMES[i % len(TIMES)]
            region = ["us-east-1", "eu-west-1", "ap-southeast-2"][i % 3]
            i += 1
            out.append([service, name, user, "1" if serverless else "0", region, akid, secret, token or "-",
                        str(now), cache_token(service, name, user, serverless, region, akid, secret, token, now)])
    return out


def one(args):
    kind, rest = args[0], args[1:]
    tok = lambda t: None if t == "-" else t  # noqa: E731
    if kind == "rds":
        host, port, user, region, akid, secret, token, now = rest
        return rds_token(host, int(port), user, region, akid, secret, tok(token), int(now))
    name, user, serverless, region, akid, secret, token, now = rest
    return cache_token(kind, name, user, serverless == "1", region, akid, secret, tok(token), int(now))


def main():
    args = [a for a in sys.argv[1:] if a != "--crt"]
    if args and args[0] == "--token":
        print(one(args[1:]))
        return
    for v in vectors():
        assert not any("\t" in f or "\n" in f for f in v)
        sys.stdout.write("\t".join(v) + "\n")


if __name__ == "__main__":
    main()
