"""Secrets at the edge: probe_password and admin_token from env:, file: (rotated without a
restart), secretsmanager: (the lab emulator's Secrets Manager, rotated with PutSecretValue) and
iam (an RDS IAM token for each probe connection, checked by verifiers repoint did not write);
the configuration's refusals and `repoint -t`'s warning; and no secret value in any log line (debug
included), /status, /metrics, /clients, `-t` output or error message.

Redis members log the probes in as ACL users made here (ACL users are per server: made on every
node); MariaDB members as a user made here on every node (sql_log_bin off). A rotation changes the
server side, then the secret, then kills the probes' connections, so that the next probe logs in
again and has to find the new value."""
import json
import os
import secrets as pysecrets
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import REPOINT_BIN, free_port, start_custom, wait_for
from iam_verify import amz_time, awsemu_verify, botocore_token, split
from labkit.awsemu import DEFAULT_CREDENTIALS
from test_tls import make_ca, make_cert

ACL = ("~*", "&*", "+@all")
TEMP = ("ASIALABLABLABLAB5678", "lab-session-secret", "lab-session-token")


def token(prefix):
    return "%s-%s" % (prefix, pysecrets.token_hex(8))


# ---- the servers' side ------------------------------------------------------------------------------
def redis_members(lab):
    return ", ".join(n.addr for n in lab.nodes("redis"))


def acl_set(lab, user, password):
    for n in lab.nodes("redis"):
        lab.connect("redis", n.name).execute_command("ACL", "SETUSER", user, "reset", "on", ">" + password, *ACL)


def acl_kill(lab, user):
    """Close every connection logged in as user: the probes log in again at their next check."""
    for n in lab.nodes("redis"):
        try:
            lab.connect("redis", n.name).execute_command("CLIENT", "KILL", "USER", user)
        except Exception:  # noqa: BLE001 - no such connection is fine
            pass


def acl_del(lab, user):
    for n in lab.nodes("redis"):
        lab.connect("redis", n.name).execute_command("ACL", "DELUSER", user)


def mysql_user(lab, user, password):
    """The user on every MariaDB node, not replicated (each node gets the same statement)."""
    eng = lab._engine("mysql")
    for n in lab.nodes("mysql"):
        conn = eng.admin(n)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("CREATE OR REPLACE USER '%s'@'%%' IDENTIFIED BY %s" % (user, conn.escape(password)))
                cur.execute("GRANT SELECT ON test.* TO '%s'@'%%'" % user)
        finally:
            conn.close()


def mysql_members(lab):
    return ", ".join(n.addr for n in lab.nodes("mysql"))


def write_atomically(path, text):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, str(path))


def probes_ok(rp, name):
    s = rp.service(name)
    return s["writer_ready"] and all(m["probe"]["ok"] for m in s["members"])


def env_for(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


# ---- env: and file: ------------------------------------------------------------------------------
def test_file_password_rotated_without_a_restart(lab, tmp_path):
    user, p1, p2 = "rp_file", token("file-one"), token("file-two")
    acl_set(lab, user, p1)
    f = tmp_path / "redis-password"
    write_atomically(f, p1 + "\n")       # `echo` style: the line break is not part of it
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_user = %s\nprobe_password = file:%s\n"
                                          "probe_interval = 100ms\n" % (redis_members(lab), user, f)})
    try:
        wait_for(lambda: probes_ok(rp, "cache"), 15, what="probes logged in with the file's password")
        pid = rp.proc.pid
        st = rp.service("cache")["probe_password"]
        assert st["kind"] == "file" and st["ref"] == "file:%s" % f and st["fetches"] == 1, st
        # rotation: the servers first, then the file, then the probes must log in again
        acl_set(lab, user, p2)
        write_atomically(f, p2 + "\n")
        acl_kill(lab, user)
        wait_for(lambda: rp.service("cache")["probe_password"]["fetches"] == 2 and probes_ok(rp, "cache"), 15,
                 what="the probes to log in with the new password")
        for _ in range(5):  # and they stay in
            time.sleep(0.2)
            assert probes_ok(rp, "cache"), rp.service("cache")
        assert rp.proc.poll() is None and rp.proc.pid == pid
        assert "the file changed: read again" in rp.logtext()
    finally:
        rp.stop()
        acl_del(lab, user)
    text = rp.logtext()
    assert p1 not in text and p2 not in text


def test_env_password(lab, tmp_path):
    user, pw = "rp_env", token("env")
    acl_set(lab, user, pw)
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_user = %s\n"
                                          "probe_password = env:REPOINT_TEST_PROBE_PW\n" % (redis_members(lab), user)},
                      env=env_for({"REPOINT_TEST_PROBE_PW": pw}))
    try:
        wait_for(lambda: probes_ok(rp, "cache"), 15, what="probes logged in with the environment's password")
        assert rp.service("cache")["probe_password"] == {"kind": "env", "ref": "env:REPOINT_TEST_PROBE_PW"}
    finally:
        rp.stop()
        acl_del(lab, user)
    assert pw not in rp.logtext()


def test_drill_handed_over_with_secrets(lab, tmp_path):
    """repoint drill reads admin_token as the running repoint does (env: here) to hand it the drill;
    the drill logs in to the members with the probes' password (file: here)."""
    user, pw, adm = "rp_drill", token("drill-pw"), token("drill-admin")
    acl_set(lab, user, pw)
    f = tmp_path / "pw"
    write_atomically(f, pw)
    env = env_for({"REPOINT_T_ADMIN": adm})
    rp = start_custom(tmp_path, {"redis": "protocol = redis\nmembers = %s\nprobe_user = %s\nprobe_password = file:%s\n"
                                          % (redis_members(lab), user, f)},
                      extra="admin_token = env:REPOINT_T_ADMIN\n", env=env)
    outs = []
    try:
        wait_for(lambda: probes_ok(rp, "redis"), 15, what="probes logged in")
        before = lab.roles("redis")
        p = subprocess.run([REPOINT_BIN, "drill", "-c", rp.config_path, "--service", "redis", "--dry-run"], env=env,
                           capture_output=True, text=True, timeout=120)
        outs.append(p.stdout + p.stderr)
        assert p.returncode == 0, outs[-1]
        assert "drill handed to the repoint" in p.stderr and "dry run: nothing was changed" in p.stdout
        assert "REPLICAOF NO ONE" in p.stdout and lab.roles("redis") == before
        p = subprocess.run([REPOINT_BIN, "drill", "-c", rp.config_path, "--service", "redis", "--dry-run"],
                           env=env_for({}), capture_output=True, text=True, timeout=60)
        outs.append(p.stdout + p.stderr)
        assert p.returncode == 2 and "admin_token: env:REPOINT_T_ADMIN is not set" in p.stderr, outs[-1]
    finally:
        rp.stop()
        acl_del(lab, user)
    outs.append(rp.logtext())
    assert pw not in "".join(outs) and adm not in "".join(outs)


# ---- the configuration: -t's warning, iam's refusal ------------------------------------------------------
def run_t(path, env=None):
    p = subprocess.run([REPOINT_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30, env=env)
    return p.returncode, p.stdout + p.stderr


def test_t_warns_about_a_literal_and_names_the_line(tmp_path):
    lit, tok = token("literal"), token("admintok")
    path = tmp_path / "lit.ini"
    path.write_text("[repoint]\nadmin = 127.0.0.1:%d\nadmin_token = %s\n\n[service db]\nprotocol = mysql\n"
                    "listen = 127.0.0.1:%d\nmembers = 127.0.0.1:%d\nprobe_password = %s\n"
                    % (free_port(), tok, free_port(), free_port(), lit))
    rc, out = run_t(path)
    assert rc == 0, out
    assert "repoint: warning: %s:3: admin_token: the token is written in the file; prefer env:NAME" % path in out
    assert "repoint: warning: %s:9: probe_password of service db: the password is written in the file" % path in out
    assert lit not in out and tok not in out
    # written as references: no warning
    path.write_text(path.read_text().replace(tok, "env:REPOINT_T_TOKEN").replace(lit, "env:REPOINT_T_PW"))
    rc, out = run_t(path, env=env_for({"REPOINT_T_TOKEN": tok, "REPOINT_T_PW": lit}))
    assert rc == 0 and "warning" not in out, out
    rc, out = run_t(path, env=env_for({"REPOINT_T_TOKEN": tok}))
    assert rc == 2 and "%s:9: probe_password: env:REPOINT_T_PW is not set" % path in out, out


def test_iam_refused_without_verify_full(tmp_path):
    path = tmp_path / "iam.ini"
    body = ("[service aurora]\nprotocol = postgres\nlisten = 127.0.0.1:%d\nmembers = localhost:5432\n"
            "probe_user = app\nprobe_password = iam\n" % free_port())
    path.write_text(body)
    rc, out = run_t(path)
    assert rc == 2, out
    assert out.strip() == ("%s:6: probe_password: iam sends an IAM token, a password valid for 15 minutes, in the "
                           "clear: it needs tls = verify-full (this service has tls = off, the default)" % path)
    path.write_text(body + "tls = require\n")
    rc, out = run_t(path)
    assert rc == 2 and "%s:6: probe_password: iam" % path in out and "(this service has tls = require)" in out, out
    path.write_text(body + "tls = verify-full\n")
    rc, out = run_t(path)
    assert rc == 0 and "warning" not in out, out
    path.write_text(body.replace("postgres", "redis") + "tls = verify-full\n")
    rc, out = run_t(path)
    assert rc == 2 and "iam on redis signs an ElastiCache or MemoryDB token" in out, out


# ---- iam: a token per probe connection, checked by someone else --------------------------------------------
class FakeRdsPostgres:
    """A Postgres member as RDS with IAM database authentication shows itself to a client: TLS only
    (SSLRequest answered 'S'; anything else is closed), a cleartext password request, and a password
    that must be an RDS IAM token for this host:port and user, in this region, valid now, by the lab
    emulator's SigV4 verifier (hmac/hashlib: not repoint's code). Then it answers one query as a
    primary on timeline 1 and closes the connection, so that every probe logs in anew."""

    def __init__(self, cert, key, host, user, region):
        self.host, self.user, self.region = host, user, region
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tokens, self.refused, self.plaintext = [], [], 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stopping = True
        self.sock.close()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _recv(s, n):
        b = b""
        while len(b) < n:
            chunk = s.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b

    @staticmethod
    def _msg(t, body):
        return t + struct.pack("!i", len(body) + 4) + body

    def _serve(self, c):
        try:
            ln, code = struct.unpack("!ii", self._recv(c, 8))
            if code != 80877103:            # no SSLRequest: RDS with rds.force_ssl refuses
                self.plaintext += 1
                return
            c.sendall(b"S")
            s = self.ctx.wrap_socket(c, server_side=True)
            ln, proto = struct.unpack("!ii", self._recv(s, 8))
            kv = self._recv(s, ln - 8).split(b"\0")
            params = dict(zip(kv[0::2], kv[1::2]))
            s.sendall(self._msg(b"R", struct.pack("!i", 3)))              # AuthenticationCleartextPassword
            t, ln = s.recv(1), struct.unpack("!i", self._recv(s, 4))[0]
            password = self._recv(s, ln - 4).rstrip(b"\0").decode()
            why = self._check(password, params.get(b"user", b"").decode())
            if why:
                self.refused.append(why)
                err = b"SFATAL\0VFATAL\0C28P01\0M" + ('PAM authentication failed for user "%s"' % self.user).encode()
                s.sendall(self._msg(b"E", err + b"\0\0"))
                return
            self.tokens.append(password)
            out = self._msg(b"R", struct.pack("!i", 0))
            for k, v in ((b"server_version", b"15.4"), (b"client_encoding", b"UTF8"),
                         (b"standard_conforming_strings", b"on"), (b"integer_datetimes", b"on")):
                out += self._msg(b"S", k + b"\0" + v + b"\0")
            out += self._msg(b"K", struct.pack("!ii", 4242, 99)) + self._msg(b"Z", b"I")
            s.sendall(out)
            while True:
                t = self._recv(s, 1)
                ln = struct.unpack("!i", self._recv(s, 4))[0]
                self._recv(s, ln - 4)
                if t == b"X":
                    return
                if t == b"Q":
                    # The probe's row: in recovery, timeline, new transactions read-only.
                    cols = b"".join(name + b"\0" + struct.pack("!ihihih", 0, 0, oid, size, -1, 0)
                                    for name, oid, size in ((b"rec", 16, 1), (b"tli", 20, 8), (b"ro", 16, 1)))
                    row = struct.pack("!h", 3) + b"".join(struct.pack("!i", 1) + v for v in (b"f", b"1", b"f"))
                    s.sendall(self._msg(b"T", struct.pack("!h", 3) + cols) + self._msg(b"D", row) +
                              self._msg(b"C", b"SELECT 1\0") + self._msg(b"Z", b"I"))
                    return
        except (EOFError, OSError, ssl.SSLError, struct.error):
            pass
        finally:
            c.close()

    def _check(self, password, user):
        try:
            head, params = split(password)
            q = dict(params)
            if head != "%s:%d" % (self.host, self.port) or q.get("DBUser") != user or user != self.user:
                return "token for %s as %s" % (head, q.get("DBUser"))
            auth = awsemu_verify(password, DEFAULT_CREDENTIALS)
            if auth.service != "rds-db" or auth.region != self.region:
                return "signed for %s in %s" % (auth.service, auth.region)
        except Exception as exc:  # noqa: BLE001 - any refusal is a refusal
            return "refused: %s" % exc
        return None


def test_iam_probe_token_accepted_by_other_verifiers(tmp_path):
    d = str(tmp_path)
    ca = make_ca(d, "ca")
    cert, key = make_cert(d, "ca", "rds", "DNS:localhost")
    fake = FakeRdsPostgres(cert, key, "localhost", "iam_probe", "eu-west-1")
    env = env_for({"AWS_ACCESS_KEY_ID": TEMP[0], "AWS_SECRET_ACCESS_KEY": TEMP[1], "AWS_SESSION_TOKEN": TEMP[2],
                   "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.path.join(d, "none"),
                   "AWS_SHARED_CREDENTIALS_FILE": os.path.join(d, "none")})
    rp = start_custom(tmp_path, {"aurora": "protocol = postgres\nmembers = localhost:%d\nprobe_user = iam_probe\n"
                                           "probe_password = iam\ntls = verify-full\ntls_ca_file = %s\n"
                                           "probe_interval = 100ms\n" % (fake.port, ca)},
                      extra="log_level = debug\n", tail="[aws]\nregion = eu-west-1\n", env=env)
    try:
        rp.wait_writer("aurora", "localhost:%d" % fake.port, timeout=20)
        assert probes_ok(rp, "aurora") and fake.refused == [] and fake.plaintext == 0, (fake.refused, rp.logtext())
        st = rp.service("aurora")["probe_password"]
        assert st["tokens_made"] >= 1 and {k: v for k, v in st.items() if k != "tokens_made"} == {
            "kind": "iam", "credentials": "environment", "credentials_error": None}
        # every probe connection logs in with a token made for it (the member closes after each)
        wait_for(lambda: len(fake.tokens) >= 5, 10, what="five probe logins")
        status = json.dumps(rp.status())
    finally:
        rp.stop()
        fake.close()
    assert fake.refused == [], fake.refused
    tok = fake.tokens[-1]
    # botocore, for the same second, computes the same token byte for byte
    assert tok == botocore_token("rds", "localhost", fake.port, "iam_probe", "eu-west-1", TEMP[0], TEMP[1], TEMP[2],
                                 amz_time(tok))
    assert abs(amz_time(tok) - time.time()) < 120
    log = rp.logtext()
    for t in fake.tokens:
        assert t not in status and t not in log
        assert dict(split(t)[1])["X-Amz-Signature"] not in log


# ---- secretsmanager: with the lab emulator ----------------------------------------------------------------
@pytest.fixture(scope="module")
def emu(lab):
    lab.aws_up(delays={"promote": 0.3, "settle": 0.2})
    try:
        yield lab
    finally:
        lab.aws_down()


def sm_client(emu):
    import boto3
    e = emu.aws_env()
    return boto3.session.Session().client("secretsmanager", endpoint_url=e["AWS_ENDPOINT_URL"],
                                          region_name=e["AWS_DEFAULT_REGION"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                                          aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])


def sm_env(emu):
    e = emu.aws_env(temporary=True)
    return env_for(e), "[aws]\nendpoint_url = %s\nregion = %s\n" % (e["AWS_ENDPOINT_URL"], e["AWS_DEFAULT_REGION"])


def get_calls(emu, since):
    return [c for c in emu.aws_calls(service="secretsmanager", since=since) if c["action"] == "GetSecretValue"]


def test_secretsmanager_rotation_is_followed_on_a_failed_login(emu, tmp_path):
    """An RDS-managed secret's shape ({"username", "password"}): the probes log in as its username
    (probe_user is not set) with its password; the rotation (server, then PutSecretValue) shows as
    a refused login, which fetches the secret again at once, long before secret_refresh."""
    sm, user, s1, s2 = sm_client(emu), "rp_sm", token("sm-one"), token("sm-two")
    name = "repoint/test-%s" % pysecrets.token_hex(4)
    v1 = sm.create_secret(Name=name, SecretString=json.dumps({"username": user, "password": s1, "engine": "redis"}))
    acl_set(emu, user, s1)
    env, aws = sm_env(emu)
    seq = emu.aws_calls_clear()
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_password = secretsmanager:%s\n"
                                          "probe_interval = 100ms\n" % (redis_members(emu), name)},
                      extra="secret_refresh = 1h\n", tail=aws, env=env)
    try:
        wait_for(lambda: probes_ok(rp, "cache"), 20, what="probes logged in with the secret's username and password")
        st = rp.service("cache")["probe_password"]
        assert st["kind"] == "secretsmanager" and st["ref"] == "secretsmanager:" + name, st
        assert st["version"] == v1["VersionId"] and st["last_error"] is None and st["credentials"] == "environment"
        first = get_calls(emu, seq)
        assert len(first) == 1 and first[0]["params"] == {"SecretId": name} and first[0]["session_token"], first
        acl_set(emu, user, s2)
        v2 = sm.put_secret_value(SecretId=name, SecretString=json.dumps({"username": user, "password": s2}))
        acl_kill(emu, user)
        t0 = time.time()
        wait_for(lambda: rp.service("cache")["probe_password"]["version"] == v2["VersionId"] and probes_ok(rp, "cache"),
                 20, what="the rotated secret to be fetched and used")
        took = time.time() - t0
        assert took < 10, took
        calls = get_calls(emu, seq)
        assert 2 <= len(calls) <= 4, calls   # the first fetch, then one (or a few) after refused logins
        log = rp.logtext()
        assert "a login with it was refused: fetching it again" in log and "a new version is in use" in log
    finally:
        rp.stop()
        acl_del(emu, user)
    log = rp.logtext()
    assert s1 not in log and s2 not in log


def test_secretsmanager_rotation_under_load_costs_no_client_error(emu, tmp_path):
    """auth = repoint on Redis with member_password = secretsmanager:: the password is rotated the hard way
    (the server's first, then PutSecretValue 0.5 s later: logins are refused meanwhile) while clients
    write -- 4 on persistent connections, 4 opening a connection per request. New server connections are
    held while repoint fetches the secret again and retries; nobody sees an error, every write lands."""
    import redis
    sm, user, s1, s2 = sm_client(emu), "rp_rot", token("rot-one"), token("rot-two")
    name = "repoint/rot-%s" % pysecrets.token_hex(4)
    v1 = sm.create_secret(Name=name, SecretString=s1)
    acl_set(emu, user, s1)
    env, aws = sm_env(emu)
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_interval = 100ms\nhold_timeout = 20s\n"
                                          "auth = repoint\nmember_user = %s\nmember_password = secretsmanager:%s\n"
                                          % (redis_members(emu), user, name)},
                      extra="secret_refresh = 1h\n", tail=aws, env=env)
    stop, errors, done = threading.Event(), [], []

    def persistent(i):
        c = redis.Redis(port=rp.ports["cache"], socket_timeout=30)
        n = 0
        while not stop.is_set():
            try:
                c.set("rot:p%d:%d" % (i, n), n)
                done.append(("rot:p%d:%d" % (i, n), n))
            except redis.RedisError as e:
                errors.append(repr(e))
            n += 1
            time.sleep(0.01)
        c.close()

    def per_request(i):
        n = 0
        while not stop.is_set():
            c = redis.Redis(port=rp.ports["cache"], socket_timeout=30)
            try:
                c.set("rot:c%d:%d" % (i, n), n)
                done.append(("rot:c%d:%d" % (i, n), n))
                assert c.execute_command("ACL", "WHOAMI") == user.encode()
            except redis.RedisError as e:
                errors.append(repr(e))
            finally:
                c.close()
            n += 1
    threads = [threading.Thread(target=persistent, args=(i,)) for i in range(4)] + \
              [threading.Thread(target=per_request, args=(i,)) for i in range(4)]
    try:
        rp.wait_writer("cache")
        for t in threads:
            t.start()
        wait_for(lambda: len(done) > 200, 20, what="load before the rotation")
        acl_set(emu, user, s2)           # the server first: logins with s1 are refused from now on
        time.sleep(0.5)                  # the rotation's window, on purpose (no condition to await)
        v2 = sm.put_secret_value(SecretId=name, SecretString=s2)
        before = len(done)
        wait_for(lambda: rp.service("cache")["member_password"]["version"] == v2["VersionId"], 20,
                 what="the rotated secret in use")
        wait_for(lambda: len(done) > before + 200, 20, what="load after the rotation")
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == []
        st = rp.service("cache")
        assert st["counters"]["member_login_failures"] >= 1 and st["member_password"]["version"] != v1["VersionId"]
        w = emu.connect("redis", emu.primary("redis").name)
        assert all(int(w.get(k)) == v for k, v in done[-100:])
        log = rp.logtext()
        assert "refused repoint's login as %s (member_password secretsmanager)" % user in log
        assert s1 not in log and s2 not in log
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(60)
        rp.stop()
        acl_del(emu, user)


def test_secretsmanager_refreshed_every_secret_refresh(emu, tmp_path):
    """A JSON key (#pw) of a secret named by its ARN; the new version is picked up by the periodic
    fetch, before any login needs it."""
    sm, user, s1, s2 = sm_client(emu), "rp_sm2", token("sm2-one"), token("sm2-two")
    v1 = sm.create_secret(Name="repoint/key-%s" % pysecrets.token_hex(4), SecretString=json.dumps({"pw": s1}))
    acl_set(emu, user, s1)
    env, aws = sm_env(emu)
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_user = %s\n"
                                          "probe_password = secretsmanager:%s#pw\n" % (redis_members(emu), user, v1["ARN"])},
                      extra="secret_refresh = 1s\n", tail=aws, env=env)
    try:
        wait_for(lambda: probes_ok(rp, "cache"), 20, what="probes logged in with the secret's pw")
        v2 = sm.put_secret_value(SecretId=v1["ARN"], SecretString=json.dumps({"pw": s2}))
        wait_for(lambda: rp.service("cache")["probe_password"]["version"] == v2["VersionId"], 10,
                 what="the periodic fetch to see the new version")
        acl_set(emu, user, s2)
        acl_kill(emu, user)
        wait_for(lambda: probes_ok(rp, "cache"), 10, what="the probes to log in with the new value")
        assert "a login with it was refused" not in rp.logtext()
    finally:
        rp.stop()
        acl_del(emu, user)
    log = rp.logtext()
    assert s1 not in log and s2 not in log
    # a secret that does not exist: the probes fail and say why, repoint keeps running
    sm_missing = "repoint/missing-%s" % pysecrets.token_hex(4)
    rp = start_custom(tmp_path, {"cache": "protocol = redis\nmembers = %s\nprobe_user = x\n"
                                          "probe_password = secretsmanager:%s\n" % (redis_members(emu), sm_missing)},
                      tail=aws, env=env)
    try:
        wait_for(lambda: "ResourceNotFoundException" in (rp.service("cache")["probe_password"]["last_error"] or ""), 15,
                 what="the error in /status")
        want = "probe_password: secretsmanager:%s: ResourceNotFoundException" % sm_missing
        wait_for(lambda: want in rp.service("cache")["members"][0]["probe"]["detail"], 5, what="the probes to say why")
    finally:
        rp.stop()


def post(rp, path, tok=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (rp.admin_port, path), data=b"", method="POST",
                                 headers={"Authorization": "Bearer " + tok} if tok else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_admin_token_from_a_file_then_from_secretsmanager(emu, tmp_path):
    t1, t2 = token("adm-file"), token("adm-sm")
    f = tmp_path / "admin-token"
    write_atomically(f, t1)
    sm = sm_client(emu)
    name = "repoint/admin-%s" % pysecrets.token_hex(4)
    sm.create_secret(Name=name, SecretString=json.dumps({"token": t2}))
    env, aws = sm_env(emu)
    svc = {"cache": "protocol = redis\nmembers = %s\n" % redis_members(emu)}
    rp = start_custom(tmp_path, svc, extra="admin_token = file:%s\n" % f, tail=aws, env=env)
    try:
        rp.wait_writer("cache")
        assert post(rp, "/reload", "wrong")[0] == 401
        assert post(rp, "/reload", t1)[0] == 202
        # the file rotated: the new token, at once (within the file check's second)
        write_atomically(f, t2 + "-rotated")
        wait_for(lambda: post(rp, "/reload", t2 + "-rotated")[0] == 202, 5, what="the rotated token")
        assert post(rp, "/reload", t1)[0] == 401
        # reload to a secretsmanager: token
        cfg = open(rp.config_path).read().replace("admin_token = file:%s" % f, "admin_token = secretsmanager:%s#token" % name)
        write_atomically(rp.config_path, cfg)
        assert post(rp, "/reload", t2 + "-rotated")[0] == 202
        wait_for(lambda: post(rp, "/reload", t2)[0] == 202, 10, what="the token from Secrets Manager")
        assert post(rp, "/reload", t2 + "-rotated")[0] == 401
    finally:
        rp.stop()
    log = rp.logtext()
    assert t1 not in log and t2 not in log


# ---- nothing leaks ------------------------------------------------------------------------------------------
def test_no_secret_value_in_logs_status_metrics_or_messages(emu, tmp_path):
    lit, envv, filev, smv, admin = (token("leak-literal"), token("leak-env"), token("leak-file"), token("leak-sm"),
                                    token("leak-admin"))
    values = {"literal": lit, "env": envv, "file": filev, "secretsmanager": smv, "admin_token": admin}
    mysql_user(emu, "rp_lit", lit)
    acl_set(emu, "rp_leak_env", envv)
    acl_set(emu, "rp_leak_sm", smv)
    f = tmp_path / "pg-password"
    write_atomically(f, filev)
    af = tmp_path / "admin-token"
    write_atomically(af, admin)
    sm = sm_client(emu)
    name = "repoint/leak-%s" % pysecrets.token_hex(4)
    sm.create_secret(Name=name, SecretString=json.dumps({"username": "rp_leak_sm", "password": smv}))
    env, aws = sm_env(emu)
    env["REPOINT_LEAK_ENV"] = envv
    pg = ", ".join(n.addr for n in emu.nodes("postgres"))
    services = {
        "my": "protocol = mysql\nmembers = %s\nprobe_user = rp_lit\nprobe_password = %s\nprobe_database = test\n"
              % (mysql_members(emu), lit),
        "renv": "protocol = redis\nmembers = %s\nprobe_user = rp_leak_env\nprobe_password = env:REPOINT_LEAK_ENV\n"
                % redis_members(emu),
        "pg": "protocol = postgres\nmembers = %s\nprobe_password = file:%s\n" % (pg, f),
        "rsm": "protocol = redis\nmembers = %s\nprobe_password = secretsmanager:%s\n" % (redis_members(emu), name),
    }
    rp = start_custom(tmp_path, services, extra="log_level = debug\nadmin_token = %s\nsecret_refresh = 2s\n" % admin,
                      tail=aws, env=env)
    outputs = []
    try:
        for s in services:
            wait_for(lambda: probes_ok(rp, s), 20, what="service %s probed with its secret" % s)
        outputs.append(json.dumps(rp.status()))
        # logins refused: the servers' passwords change under the probes
        mysql_user(emu, "rp_lit", token("other"))
        acl_set(emu, "rp_leak_env", token("other"))
        acl_set(emu, "rp_leak_sm", token("other"))
        for u in ("rp_leak_env", "rp_leak_sm"):
            acl_kill(emu, u)
        for n in emu.nodes("mysql"):
            emu._engine("mysql").q(n, "KILL USER rp_lit")
        wait_for(lambda: not rp.service("renv")["writer_ready"] and not rp.service("rsm")["members"][0]["probe"]["ok"],
                 15, what="refused logins")
        wait_for(lambda: not rp.service("my")["members"][0]["probe"]["ok"], 15, what="MariaDB refusing the probe")
        time.sleep(2.5)  # a periodic fetch or two, and the refetches the refused logins ask for
        for path in ("/status", "/metrics", "/clients", "/ready", "/startup", "/drills"):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (rp.admin_port, path), timeout=10) as r:
                    outputs.append(r.read().decode())
            except urllib.error.HTTPError as e:
                outputs.append(e.read().decode())
        outputs.append(post(rp, "/reload", "not-the-token")[1])
        outputs.append(post(rp, "/drills", "not-the-token")[1])
        # a broken configuration: the reload's messages (400, and the log after SIGHUP)
        good = open(rp.config_path).read()
        bad = good.replace("probe_user = rp_lit\n", "probe_user = rp_lit\n%s\nprobe_passwrd = %s\n" % (lit, lit))
        bad = bad.replace("admin_token = %s" % admin, "admin_token = %s\nadmin_token = %s" % (admin, envv))
        write_atomically(rp.config_path, bad)
        status, body = post(rp, "/reload", admin)
        assert status == 400, body
        outputs.append(body)
        rp.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload of %s refused" % rp.config_path in rp.logtext(), 10, what="the refused reload")
        for cmd_env in (env, env_for({})):
            p = subprocess.run([REPOINT_BIN, "-t", "-c", rp.config_path], capture_output=True, text=True, timeout=30,
                               env=cmd_env)
            assert p.returncode == 2
            outputs.append(p.stdout + p.stderr)
        write_atomically(rp.config_path, good)
        p = subprocess.run([REPOINT_BIN, "-t", "-c", rp.config_path], capture_output=True, text=True, timeout=30,
                           env=env)
        assert p.returncode == 0 and "warning" in p.stdout, p.stdout + p.stderr
        outputs.append(p.stdout + p.stderr)
    finally:
        rp.stop()
        acl_del(emu, "rp_leak_env")
        acl_del(emu, "rp_leak_sm")
    outputs.append(rp.logtext())
    assert " debug " in rp.logtext()
    everything = "\n".join(outputs)
    for kind, v in values.items():
        assert v not in everything, "the %s secret is in an output" % kind
    # and the things that do show, show
    assert "Access denied for user 'rp_lit'" in everything and "WRONGPASS" in everything
    assert "secretsmanager:" + name in everything and "env:REPOINT_LEAK_ENV" in everything
