"""`repoint iam-token` against botocore, the aws CLI and the lab emulator's SigV4 verifier.

The unit test (tests/unit/test_presign.c) compares repoint's presigner with botocore vectors
checked into tests/unit/data/presign/vectors.tsv; the first test here proves that file is still
what botocore computes. The others run the command itself: credentials from the environment and
from a shared credentials file, with REPOINT_TEST_TIME pinning the clock so that the token can be
compared byte for byte."""
import os
import subprocess
import tempfile

import pytest

from conftest import REPOINT_BIN, TOP
from iam_verify import MAKE_VECTORS, PYTHON, amz_time, awsemu_verify, botocore_token, split
from labkit.awsemu import DEFAULT_CREDENTIALS

AWS_CLI = "/usr/bin/aws"
# The lab emulator's temporary credentials (with a session token), and its long-term ones.
TEMP = ("ASIALABLABLABLAB5678", "lab-session-secret", "lab-session-token")
LONG = ("AKIALABLABLABLAB1234", "lab-secret-key", None)
T0 = 1733368500  # 2024-12-05 03:15:00 UTC


def clean_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    env.update(HOME=home, AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.path.join(home, "none"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "none"))
    return env


def env_with(keys, region="us-east-1", now=T0):
    env = clean_env(tempfile.mkdtemp(prefix="iamtok-"))
    env.update(AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1], AWS_REGION=region)
    if keys[2]:
        env["AWS_SESSION_TOKEN"] = keys[2]
    if now is not None:
        env["REPOINT_TEST_TIME"] = str(now)
    return env


def iam_token(env, *args):
    p = subprocess.run([REPOINT_BIN, "iam-token"] + list(args), env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout.strip(), p.stderr


def test_checked_in_vectors_are_botocores():
    p = subprocess.run([PYTHON, MAKE_VECTORS], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))})
    assert p.returncode == 0, p.stderr
    with open(os.path.join(TOP, "tests", "unit", "data", "presign", "vectors.tsv")) as f:
        assert p.stdout == f.read(), "botocore now computes other tokens than tests/unit/data/presign/vectors.tsv"


@pytest.mark.parametrize("keys", [LONG, TEMP], ids=["long-term", "session"])
@pytest.mark.parametrize("engine,host,port,user", [
    ("postgres", "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com", 5432, "app_iam"),
    ("mysql", "Orders-Instance-2.c9akciq32.eu-central-1.rds.amazonaws.com", 3306, "iam user+1"),
    ("postgres", "10.1.2.3", 6432, "probe"),
])
def test_rds_token_is_botocores(keys, engine, host, port, user):
    rc, tok, err = iam_token(env_with(keys, "eu-central-1"), "--engine", engine, "--host", host, "--port", str(port),
                             "--user", user)
    assert rc == 0, err
    want = botocore_token("rds", host, port, user, "eu-central-1", keys[0], keys[1], keys[2] or "-", T0)
    assert tok == want
    # awscrt's signer (Debian's botocore and aws CLI use it) orders two parameters differently:
    # the same parameters, the same signature
    crt = botocore_token("rds", host, port, user, "eu-central-1", keys[0], keys[1], keys[2] or "-", T0, crt=True)
    assert split(tok)[0] == split(crt)[0] and sorted(split(tok)[1]) == sorted(split(crt)[1])
    # and an independent verifier (the emulator's) takes it
    auth = awsemu_verify(tok, DEFAULT_CREDENTIALS, now=T0 + 60)
    assert (auth.access_key, auth.region, auth.service, auth.presigned) == (keys[0], "eu-central-1", "rds-db", True)


def test_rds_token_default_port_and_explicit_region():
    rc, tok, err = iam_token(env_with(LONG, "us-east-1"), "--engine", "mysql", "--host", "db.example", "--user", "u",
                             "--region", "ap-northeast-1")
    assert rc == 0, err
    assert tok == botocore_token("rds", "db.example", 3306, "u", "ap-northeast-1", LONG[0], LONG[1], "-", T0)


@pytest.mark.parametrize("keys", [LONG, TEMP], ids=["long-term", "session"])
@pytest.mark.parametrize("flag,name,kind,serverless", [
    ("--cache-name", "orders-redis", "elasticache", False),
    ("--cache-name", "orders-serverless", "elasticache", True),
    ("--cluster-name", "orders-memorydb", "memorydb", False),
])
def test_cache_tokens_are_botocores(keys, flag, name, kind, serverless):
    args = ["--engine", "redis", flag, name, "--user", "iam-user-01"] + (["--serverless"] if serverless else [])
    rc, tok, err = iam_token(env_with(keys, "us-west-2"), *args)
    assert rc == 0, err
    assert tok == botocore_token(kind, name, "iam-user-01", "1" if serverless else "0", "us-west-2", keys[0], keys[1],
                                 keys[2] or "-", T0)
    head, params = split(tok)
    assert head == name and params[:2] == [("Action", "connect"), ("User", "iam-user-01")]
    assert (("ResourceType", "ServerlessCache") in params) == serverless
    assert awsemu_verify(tok, DEFAULT_CREDENTIALS, now=T0).service == kind


def test_same_token_as_the_aws_cli():
    """`aws rds generate-db-auth-token` signs at its own clock: sign at the time it wrote in its
    token and the two must carry the same parameters and the same signature."""
    if not os.path.exists(AWS_CLI):
        pytest.skip("Debian's awscli is not installed (scripts/install-deps installs it)")
    env = env_with(TEMP, "eu-west-1", now=None)
    p = subprocess.run([AWS_CLI, "rds", "generate-db-auth-token", "--hostname", "db-1.example.eu-west-1.rds.amazonaws.com",
                        "--port", "5432", "--username", "app", "--region", "eu-west-1"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    cli = p.stdout.strip()
    env["REPOINT_TEST_TIME"] = str(amz_time(cli))
    rc, tok, err = iam_token(env, "--engine", "postgres", "--host", "db-1.example.eu-west-1.rds.amazonaws.com",
                             "--port", "5432", "--user", "app", "--region", "eu-west-1")
    assert rc == 0, err
    assert split(tok)[0] == split(cli)[0] == "db-1.example.eu-west-1.rds.amazonaws.com:5432"
    assert [k for k, _ in split(tok)[1]][:2] == [k for k, _ in split(cli)[1]][:2] == ["Action", "DBUser"]
    assert sorted(split(tok)[1]) == sorted(split(cli)[1])
    assert dict(split(tok)[1])["X-Amz-Signature"] == dict(split(cli)[1])["X-Amz-Signature"]


def test_credentials_from_a_profile(tmp_path):
    env = clean_env(str(tmp_path))
    (tmp_path / "credentials").write_text("[lab]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                                          "aws_session_token = %s\n" % TEMP)
    (tmp_path / "config").write_text("[profile lab]\nregion = eu-north-1\n")
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"), AWS_CONFIG_FILE=str(tmp_path / "config"),
               REPOINT_TEST_TIME=str(T0))
    rc, tok, err = iam_token(env, "--engine", "postgres", "--host", "h.example", "--user", "u", "--profile", "lab")
    assert rc == 0, err
    assert tok == botocore_token("rds", "h.example", 5432, "u", "eu-north-1", TEMP[0], TEMP[1], TEMP[2], T0)


@pytest.mark.parametrize("args,msg", [
    ([], "--engine is required"),
    (["--engine", "oracle", "--user", "u"], "--engine: expected postgres, mysql or redis"),
    (["--engine", "postgres", "--user", "u"], "--host is required for postgres"),
    (["--engine", "postgres", "--host", "h"], "--user is required"),
    (["--engine", "redis", "--user", "u"], "redis needs --cache-name"),
    (["--engine", "redis", "--user", "u", "--cache-name", "c", "--host", "h"], "not --host/--port"),
    (["--engine", "redis", "--user", "u", "--cluster-name", "c", "--serverless"], "--serverless goes with --cache-name"),
    (["--engine", "mysql", "--user", "u", "--host", "h", "--port", "0"], "--port: expected 1..65535"),
    (["--engine", "mysql", "--user", "u", "--host", "h", "--cache-name", "c"], "are for redis, not mysql"),
])
def test_usage_errors(args, msg):
    rc, out, err = iam_token(env_with(LONG), *args)
    assert rc == 2 and out == "" and msg in err, err


def test_no_credentials_and_no_region(tmp_path):
    rc, out, err = iam_token(clean_env(str(tmp_path)), "--engine", "postgres", "--host", "h", "--user", "u")
    assert rc == 1 and out == "" and "no AWS credentials" in err, err
    env = env_with(LONG)
    del env["AWS_REGION"]
    rc, out, err = iam_token(env, "--engine", "postgres", "--host", "h", "--user", "u")
    assert rc == 1 and out == "" and "no AWS region" in err, err
    assert LONG[1] not in err


def test_help():
    p = subprocess.run([REPOINT_BIN, "iam-token", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for word in ("--engine", "--host", "--port", "--user", "--region", "--cache-name", "--cluster-name",
                 "--serverless", "--profile", "REPOINT_TEST_TIME"):
        assert word in p.stdout
    p = subprocess.run([REPOINT_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert "repoint iam-token" in p.stdout
