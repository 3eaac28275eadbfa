"""Redis with IAM authentication (ElastiCache, MemoryDB): repoint logs in to the members itself
(`auth = repoint`, `member_password = iam`), on every server connection it opens -- sessions,
multiplexed shared connections -- and on its probes, and logs in again on long-lived connections
before the service would cut them (`reauth_interval`).

The lab's IAM front (scripts/labkit/iamfront.py) checks the tokens with the emulator's SigV4
verifier, which shares no code with repoint's signer, and stands in front of a real redis-server
whose default user is off: nothing gets in without a token it accepted. No secret is in repoint's
configuration: the AWS credentials come from its environment."""
import os
import subprocess
import tempfile
import time

import pytest
import redis

from conftest import OwnServer, free_port, start_custom, wait_for
from labkit.iamfront import IamFront
from labkit.pki import make_ca, make_cert

AKID = "AKIALABIAMFRONT00001"
SECRET = "iam-front-secret-key"
REGION = "us-east-1"
BACKEND_PW = "front-to-server-only"


class AclRedis(OwnServer):
    """A plaintext redis-server on loopback whose default user is off; `app` (and `probe`) log in with
    BACKEND_PW, which only the front knows."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="repoint-iam-redis-")
        self.port = free_port()
        self._spawn(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                     "no", "--dir", self.dir])
        wait_for(lambda: self._ping(), 20, what="redis-server")
        c = redis.Redis(port=self.port)
        for user in ("app", "probe"):
            c.execute_command("ACL", "SETUSER", user, "on", ">" + BACKEND_PW, "~*", "&*", "+@all")
        c.execute_command("ACL", "SETUSER", "default", "off")
        c.close()

    def _ping(self):
        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="repoint-iam-pki-")
    ca = make_ca(d, "ca")
    cert, key = make_cert(d, "ca", "front", "IP:127.0.0.1,DNS:localhost")
    yield {"ca": ca, "cert": cert, "key": key}
    subprocess.run(["rm", "-rf", d], check=False)


@pytest.fixture
def backend():
    r = AclRedis()
    yield r
    r.stop()


def front_for(backend, pki, resource="elasticache:lab-iam", region=REGION, clock_skew=0.0):
    return IamFront(free_port(), pki["cert"], pki["key"], ("127.0.0.1", backend.port), resource,
                    {"app": BACKEND_PW, "probe": BACKEND_PW}, {AKID: {"secret": SECRET, "token": None}}, region,
                    clock_skew=clock_skew)


def aws_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    env.update(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_EC2_METADATA_DISABLED="true",
               HOME=home, AWS_CONFIG_FILE=os.path.join(home, "none"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "none"))
    return env


def service(front, pki, extra=""):
    return ("protocol = redis\nmembers = 127.0.0.1:%d\ntls = verify-full\ntls_ca_file = %s\n"
            "iam_resource = elasticache:lab-iam\nauth = repoint\nmember_user = app\nmember_password = iam\n"
            "probe_user = probe\nprobe_password = iam\nprobe_interval = 200ms\nhold_timeout = 3s\n%s"
            % (front.port, pki["ca"], extra))


def start(tmp_path, front, pki, extra="", region=REGION):
    return start_custom(tmp_path, {"c": service(front, pki, extra)}, env=aws_env(str(tmp_path)),
                        tail="[aws]\nregion = %s\n" % region)


def test_members_served_through_iam_tokens(tmp_path, backend, pki):
    """Probes, sessions and multiplexed shared connections log in with IAM tokens the front accepts; the
    client sends no AUTH and no password is in the configuration."""
    front = front_for(backend, pki)
    rp = start(tmp_path, front, pki, extra="")
    rpm = None
    try:
        rp.wait_writer("c")
        assert front.count("login") >= 1, front.events  # the probe's
        c = redis.Redis(port=rp.ports["c"], socket_timeout=5)
        for i in range(50):
            c.set("k%d" % i, i)
        assert [int(c.get("k%d" % i)) for i in range(50)] == list(range(50))
        # Behind the front the server saw user app, not the default user (which is off).
        assert c.execute_command("ACL", "WHOAMI") == b"app"
        c.close()
        st = rp.service("c")
        assert st["member_password"]["kind"] == "iam" and st["member_password"]["tokens_made"] >= 1
        assert st["counters"]["member_logins"] >= 1 and st["counters"]["member_login_failures"] == 0
        assert front.refusals() == []
        text = (tmp_path / "custom.ini").read_text()
        assert SECRET not in text and BACKEND_PW not in text
        rp.stop()
        rp = None
        # The same through multiplexed shared connections.
        rpm = start(tmp_path, front, pki, extra="multiplex = on\n")
        rpm.wait_writer("c")
        clients = [redis.Redis(port=rpm.ports["c"], socket_timeout=5) for _ in range(4)]
        for n, cl in enumerate(clients):
            cl.set("m%d" % n, n)
        assert [int(cl.get("m%d" % n)) for n, cl in enumerate(clients)] == [0, 1, 2, 3]
        assert rpm.service("c")["shared_connections"] >= 1
        for cl in clients:
            cl.close()
        assert front.refusals() == []
        assert SECRET not in rpm.logtext() and "X-Amz-Signature" not in rpm.logtext()
    finally:
        for r in (rp, rpm):
            if r is not None:
                r.stop()
        front.stop()


@pytest.mark.parametrize("multiplex", ["off", "on"])
def test_long_lived_connections_log_in_again_invisibly(tmp_path, backend, pki, multiplex):
    """reauth_interval = 1s: a client on one persistent connection writing every 20 ms for 4 s sees no error,
    while the front takes repoint's new logins on the same server connections."""
    front = front_for(backend, pki)
    rp = start(tmp_path, front, pki, extra="reauth_interval = 1s\nmultiplex = %s\n" % multiplex)
    try:
        rp.wait_writer("c")
        c = redis.Redis(port=rp.ports["c"], socket_timeout=5)
        errors, n, t_end = [], 0, time.time() + 4
        while time.time() < t_end:
            try:
                c.set("persist", n)
                assert int(c.get("persist")) == n
            except redis.RedisError as e:
                errors.append(repr(e))
            n += 1
            time.sleep(0.02)
        c.close()
        assert errors == []
        wait_for(lambda: front.count("relogin") >= 2, 10, what="logins again on a live connection")
        assert rp.service("c")["counters"]["relogins"] >= 2
        assert front.refusals() == []
    finally:
        rp.stop()
        front.stop()


@pytest.mark.parametrize("case", ["wrong-region", "expired", "wrong-user"])
def test_refused_tokens_are_said_and_nothing_gets_in(tmp_path, backend, pki, case):
    """A token the front refuses: the client is held, then refused in Redis's words; repoint says which
    member refused its login and why, counts it, and never takes it for the member's health."""
    front = front_for(backend, pki, clock_skew=1200 if case == "expired" else 0.0)
    region = "eu-west-1" if case == "wrong-region" else REGION
    text = service(front, pki)
    if case == "wrong-user":
        text = text.replace("member_user = app\n", "member_user = nobody\n")
    rp = start_custom(tmp_path, {"c": text}, env=aws_env(str(tmp_path)), tail="[aws]\nregion = %s\n" % region)
    try:
        c = redis.Redis(port=rp.ports["c"], socket_timeout=10)
        with pytest.raises(redis.RedisError):
            c.set("k", "v")
        c.close()
        want = {"wrong-region": "signed for region eu-west-1", "expired": "expired",
                "wrong-user": "no IAM-enabled user 'nobody'"}[case]
        assert any(want in r for r in front.refusals()), front.refusals()
        if case == "wrong-user":
            # The probes (user probe) get in: the writer is known, the sessions' login is refused.
            assert rp.service("c")["writer"] is not None
            wait_for(lambda: "refused repoint's login as nobody" in rp.logtext(), 10, what="the refusal in the log")
            assert "WRONGPASS" in rp.logtext()
            assert rp.service("c")["counters"]["member_login_failures"] >= 1
        else:
            # Every token is refused, the probes' too: the member's role is unknown, no client gets through.
            wait_for(lambda: "WRONGPASS" in (rp.service("c")["members"][0]["probe"]["detail"] or ""), 10,
                     what="the probe's refusal")
            assert not rp.service("c")["writer_ready"]
    finally:
        rp.stop()
        front.stop()


def test_the_front_refuses_tampered_and_foreign_tokens(tmp_path, backend, pki):
    """The verifier itself: a token from `repoint iam-token` gets in directly; the same token with one
    signature character changed, or made for another cache, does not."""
    from conftest import REPOINT_BIN
    front = front_for(backend, pki)
    try:
        def token(name):
            p = subprocess.run([REPOINT_BIN, "iam-token", "--engine", "redis", "--cache-name", name, "--user", "app",
                                "--region", REGION], env=aws_env(str(tmp_path)), capture_output=True, text=True,
                               timeout=30)
            assert p.returncode == 0, p.stderr
            return p.stdout.strip()

        def login(tok):
            c = redis.Redis(port=front.port, ssl=True, ssl_ca_certs=pki["ca"], username="app", password=tok,
                            socket_timeout=5)
            try:
                return c.ping()
            finally:
                c.close()

        good = token("lab-iam")
        assert login(good)
        sig = good.rindex("X-Amz-Signature=") + len("X-Amz-Signature=")
        bad = good[:sig] + ("0" if good[sig] != "0" else "1") + good[sig + 1:]
        with pytest.raises(redis.RedisError, match="WRONGPASS"):
            login(bad)
        with pytest.raises(redis.RedisError, match="WRONGPASS"):
            login(token("another-cache"))
        refusals = front.refusals()
        assert any("SignatureDoesNotMatch" in r for r in refusals), refusals
        assert any("not 'lab-iam'" in r for r in refusals), refusals
    finally:
        front.stop()
