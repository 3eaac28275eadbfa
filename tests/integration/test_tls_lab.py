"""The failover scenarios of test_failover.py, unchanged, on a lab whose servers serve TLS only (`scripts/lab up
--tls`: Redis with its plaintext port off and TLS replication, Postgres with hostssl only, MariaDB with
require_secure_transport and TLS replication), repoint reaching them with tls = verify-full against the lab's CA
and the applications talking plaintext to repoint on loopback. The same bounds as on the plaintext lab."""
import json
import tempfile
import time
import urllib.request

import psycopg2
import pymysql
import pytest
import redis

from labkit import Lab
from labkit.clients import ENGINES
from test_auth import test_a_switchover_costs_persistent_connections_nothing  # noqa: F401 - auth = repoint, over TLS
from test_failover import (ENGINE_NAMES, test_crash_of_the_writer_holds_new_clients_then_recovers,  # noqa: F401
                           test_sessions_on_the_old_writer_are_drained, test_switchover_keeps_writes_flowing,
                           test_two_writers_never_both_receive_writes)


@pytest.fixture(scope="module")
def lab():
    """This module's lab (it overrides the plaintext one for the tests above)."""
    lab = Lab(tempfile.mkdtemp(prefix="repoint-tlslab-"), tls=True)
    try:
        lab.up(ENGINE_NAMES)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_member_connection_is_tls(lab, start_repoint, name):
    """The probes found each writer over TLS, and a client's session reaches it over TLS too."""
    rp = start_repoint()
    assert rp.writer(name) == "127.0.0.1:%d" % lab.primary(name).port
    engine = ENGINES[name]
    c = engine.connect(rp.ports[name])
    engine.echo(c, "over tls")
    with urllib.request.urlopen("http://127.0.0.1:%d/clients" % rp.admin_port, timeout=5) as r:
        seen = [x for x in json.load(r)["clients"] if x["service"] == name]
    engine.close(c)
    assert seen and all(x.get("member_tls", "").startswith("TLSv1.") for x in seen), seen


def plaintext(name, port):
    """A client that does not try TLS (libpq's default, sslmode=prefer, would)."""
    if name == "postgres":
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", sslmode="disable",
                                connect_timeout=5)
    return ENGINES[name].connect(port, timeout=5)


def refused(name, exc):
    """How each server turns a plaintext client away (MariaDB 10.11 answers require_secure_transport with
    'Access denied', where MySQL says 'Connections using insecure transport are prohibited')."""
    if name == "postgres":
        return isinstance(exc, psycopg2.OperationalError) and "no encryption" in str(exc)
    if name == "mysql":
        return isinstance(exc, pymysql.err.OperationalError) and exc.args[0] in (1045, 3159)
    return isinstance(exc, redis.ConnectionError)   # a TLS port only: the plaintext hello ends the connection


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_a_node_refuses_plaintext_and_takes_the_same_client_over_tls(lab, name):
    engine = ENGINES[name]
    for node in lab.nodes(name):
        with pytest.raises(Exception) as exc:
            plaintext(name, node.port)
        assert refused(name, exc.value), (node.name, repr(exc.value))
        c = engine.connect_node(node)
        assert engine.server_port(c) == node.port
        engine.close(c)


# ---- RDS IAM authentication: tokens checked by the lab (pam_exec + labkit/iamcheck.py) ----------------------
IAM_KEYS = ("AKIALABLABLABLAB1234", "lab-secret-key")


def iam_env(tmp_path, akid=IAM_KEYS[0], secret=IAM_KEYS[1]):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    env.update(AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret, AWS_EC2_METADATA_DISABLED="true",
               HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    return env


def iam_service(lab, extra=""):
    # probe_timeout: the lab's token checker starts a Python with botocore for each login (PAM), about
    # half a second alone on a small machine; three members' probes at once take longer than 1 s.
    return ("protocol = postgres\nmembers = %s\ntls = verify-full\ntls_ca_file = %s\nprobe_interval = 100ms\n"
            "probe_timeout = 5s\n"
            "probe_user = iam_probe\nprobe_password = iam\nprobe_database = test\nhold_timeout = 20s\n%s"
            % (", ".join(n.addr for n in lab.nodes("postgres")), lab.tls["ca"], extra))


def iam_refusals(log):
    """The lab checker's refusals of the IAM roles' logins. (CI once logged a refusal of `test`, a
    password user, "not a presigned URL", 28 s before the IAM test began, during an earlier test of
    the module: not a token repoint made -- the IAM roles' logins are what these tests are about.)"""
    return [l for l in log.splitlines() if " refused iam_" in l]


def iam_connect(port, **kw):
    return psycopg2.connect(host="127.0.0.1", port=port, user="iam_app", dbname="test", connect_timeout=10, **kw)


def writes_through_a_switchover(lab, rp, connect, table, writers=2):
    """`writers` clients on persistent connections (connect()) insert into `table` every 10 ms through a
    Postgres switchover of the lab; returns the errors they saw (the loops stopped, joined)."""
    import threading
    import time
    from conftest import wait_for
    stop, errors, done = threading.Event(), [], []

    def writer(w):
        conn = connect()
        conn.autocommit = True
        n = 0
        while not stop.is_set():
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO %s VALUES (%%s, %%s)" % table, (w, n))
                done.append((w, n))
            except psycopg2.Error as e:
                errors.append(str(e))
            n += 1
            time.sleep(0.01)
        conn.close()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(done) > 50, 20, what="writes before the switchover")
        lab.switchover("postgres")
        rp.wait_writer("pg", "127.0.0.1:%d" % lab.primary("postgres").port)
        before = len(done)
        wait_for(lambda: len(done) > before + 50, 30, what="writes after the switchover")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return errors


def test_iam_probes_and_sessions_through_a_switchover(lab, tmp_path):
    """No secret in repoint's configuration: the probes (iam_probe) and, with auth = repoint, every login
    to a member (iam_app) use RDS IAM tokens the lab checks with code of its own; 2 clients writing every
    10 ms on persistent connections go through a switchover with no error (the writes the old primary
    refused read-only go to the new one), and the logins on the new writer are with tokens made for it."""
    from conftest import start_custom
    rp = start_custom(tmp_path, {"pg": iam_service(lab, "auth = repoint\nclient_auth = trust\nmember_password = iam\n")},
                      env=iam_env(tmp_path), tail="[aws]\nregion = us-east-1\n")
    try:
        old = lab.primary("postgres")
        rp.wait_writer("pg", "127.0.0.1:%d" % old.port)
        c = iam_connect(rp.ports["pg"])
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == ("iam_app", True)
            cur.execute("CREATE TABLE IF NOT EXISTS iam_w (w int, n int, PRIMARY KEY (w, n))")
        c.close()

        errors = writes_through_a_switchover(lab, rp, lambda: iam_connect(rp.ports["pg"]), "iam_w")
        new = lab.primary("postgres")
        assert errors == [], errors   # the old primary refused writes (read-only) before it shut down
        assert rp.service("pg")["counters"]["migrated"] >= 2
        log = lab.iam_log()
        assert "accepted iam_app port=%d" % new.port in log and "accepted iam_probe port=%d" % new.port in log, log
        assert iam_refusals(log) == [], log
        text = (tmp_path / "custom.ini").read_text()
        assert IAM_KEYS[1] not in text and "password" not in text.replace("probe_password = iam", "").replace(
            "member_password = iam", "")
    finally:
        rp.stop()


def test_iam_probes_as_every_server_sees_them_and_passthrough_clients(lab, tmp_path):
    """Each member (the replicas too: pg_hba.conf is per node) has repoint's probe logged in as iam_probe
    over TLS, accepted by the checker for that member's port; the applications' own logins (the lab's
    postgres user, auth = passthrough) go through repoint to the writer meanwhile."""
    from conftest import start_custom, wait_for
    from labkit.clients import ENGINES
    rp = start_custom(tmp_path, {"pg": iam_service(lab)}, env=iam_env(tmp_path), tail="[aws]\nregion = us-east-1\n")
    try:
        rp.wait_writer("pg", "127.0.0.1:%d" % lab.primary("postgres").port)
        engine = ENGINES["postgres"]
        for node in lab.nodes("postgres"):
            def probes():
                c = engine.connect_node(node)
                try:
                    with c.cursor() as cur:
                        cur.execute("SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                                    "WHERE a.application_name = 'repoint-probe'")
                        return cur.fetchall()
                finally:
                    c.close()
            assert wait_for(probes, 20, what="the probe on %s" % node.name) == [("iam_probe", True)]
            assert "accepted iam_probe port=%d" % node.port in lab.iam_log()
        c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="test", connect_timeout=10)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT current_user, ssl, pg_is_in_recovery() FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == ("postgres", True, False)
            cur.execute("CREATE TEMP TABLE t (x int)")
            cur.execute("INSERT INTO t VALUES (1)")
        c.close()
        assert iam_refusals(lab.iam_log()) == [], lab.iam_log()
        assert IAM_KEYS[1] not in (tmp_path / "custom.ini").read_text()
    finally:
        rp.stop()


@pytest.mark.parametrize("case", ["expired", "wrong-region", "wrong-key"])
def test_iam_tokens_the_lab_refuses(lab, tmp_path, case):
    """An expired token (the checker's clock 20 minutes ahead), one signed for another region, or with
    credentials the lab does not know: the probes are refused, repoint shows why it got no role, the
    checker logs its reason, repoint logs once per member that its probe's login was refused; once the
    cause is gone the next probe's fresh token gets in."""
    from conftest import start_custom, wait_for
    if case == "expired":
        lab.iam_configure(skew_s=1200)
    env = iam_env(tmp_path, secret="not-the-lab-secret") if case == "wrong-key" else iam_env(tmp_path)
    region = "eu-west-1" if case == "wrong-region" else "us-east-1"
    mark = len(lab.iam_log())
    rp = start_custom(tmp_path, {"pg": iam_service(lab)}, env=env, tail="[aws]\nregion = %s\n" % region)
    try:
        wait_for(lambda: any("PAM authentication failed" in (m["probe"]["detail"] or "")
                             for m in rp.service("pg")["members"]), 20, what="the refused probes")
        assert not rp.service("pg")["writer_ready"]
        want = {"expired": "expired", "wrong-region": "signed for region eu-west-1",
                "wrong-key": "SignatureDoesNotMatch"}[case]
        assert want in lab.iam_log()[mark:], lab.iam_log()[mark:]
        for node in lab.nodes("postgres"):
            line = "127.0.0.1:%d refused the probe's login as iam_probe (probe_password iam): " % node.port
            wait_for(lambda: line in rp.logtext(), 10, what="repoint's log of the refusal by %s" % node.name)
        log = rp.logtext()
        assert log.count("refused the probe's login") == len(lab.nodes("postgres")), log   # once, not per probe
        assert "PAM authentication failed" in log, log
        if case == "expired":
            lab.iam_configure(skew_s=0)
            rp.wait_writer("pg", "127.0.0.1:%d" % lab.primary("postgres").port)
            wait_for(lambda: "127.0.0.1:%d takes the probe's login again" % lab.primary("postgres").port
                     in rp.logtext(), 10, what="repoint's log of the login taken again")
    finally:
        lab.iam_configure(skew_s=0)
        rp.stop()


def test_iam_tokens_for_another_user_or_tampered_are_refused(lab, tmp_path):
    """The checker itself, with tokens from `repoint iam-token` presented by a client of the server: good
    for iam_probe (over TLS), refused when made for iam_app but presented by iam_probe, for another
    server's port, with one signature character changed, signed 20 minutes ago (expired) or 20 minutes
    ahead, or with an access key the lab does not know; the reasons in the checker's log, never a token."""
    import hashlib
    import subprocess
    import time
    from conftest import REPOINT_BIN
    p = lab.primary("postgres")
    other = next(n for n in lab.nodes("postgres") if n.port != p.port)

    def token(user, port=p.port, **env):
        r = subprocess.run([REPOINT_BIN, "iam-token", "--engine", "postgres", "--host", "127.0.0.1", "--port",
                            str(port), "--user", user, "--region", "us-east-1"], env=dict(iam_env(tmp_path), **env),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def login(tok):
        c = psycopg2.connect(host="127.0.0.1", port=p.port, user="iam_probe", password=tok, dbname="test",
                             sslmode="verify-full", sslrootcert=lab.tls["ca"], connect_timeout=10)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                return cur.fetchone()
        finally:
            c.close()
    mark = len(lab.iam_log())
    good = token("iam_probe")
    assert login(good) == ("iam_probe", True)
    sig = good.rindex("X-Amz-Signature=") + len("X-Amz-Signature=")
    now = int(time.time())
    bad = {"the token is for DBUser 'iam_app', not 'iam_probe'": token("iam_app"),
           "the token is for port %d, this server listens on %d" % (other.port, p.port): token("iam_probe", other.port),
           "SignatureDoesNotMatch: botocore computes another X-Amz-Signature":
               good[:sig] + ("0" if good[sig] != "0" else "1") + good[sig + 1:],
           "expired ": token("iam_probe", REPOINT_TEST_TIME=str(now - 1200)),
           "signed in the future": token("iam_probe", REPOINT_TEST_TIME=str(now + 1200)),
           "unknown access key AKIANOTINTHELAB0000": token("iam_probe", AWS_ACCESS_KEY_ID="AKIANOTINTHELAB0000")}
    for why, tok in bad.items():
        with pytest.raises(psycopg2.OperationalError, match="PAM authentication failed"):
            login(tok)
            pytest.fail("logged in with a token the checker must refuse (%s)\n%s" % (why, lab.iam_log()[mark:]))
    # each token's decision, found by the short hash the checker logs instead of the token
    log = lab.iam_log()[mark:]
    lines = {tok: [x for x in log.splitlines() if " token=%s" % hashlib.sha256(tok.encode()).hexdigest()[:8] in x]
             for tok in [good] + list(bad.values())}
    assert len(lines[good]) == 1 and " accepted iam_probe port=%d " % p.port in lines[good][0], log
    for why, tok in bad.items():
        assert len(lines[tok]) == 1 and " refused iam_probe " in lines[tok][0] and why in lines[tok][0], (why, log)
    for tok in lines:
        assert tok.rsplit("=", 1)[1] not in log


def test_scram_sessions_survive_a_switchover_of_the_replicated_lab(lab, tmp_path):
    """auth = repoint with client_auth = scram-sha-256 and an auth_file holding only the SCRAM verifier the
    lab's Postgres stores (no password anywhere in repoint's files): the client's proof gives repoint the key
    it logs in with, on the old writer and, after a switchover, on the new one (the verifier replicated);
    2 clients writing every 10 ms on persistent connections go through a switchover with no error."""
    from conftest import start_custom
    users = lab.pg_auth_file(str(tmp_path / "users.txt"))
    assert "SCRAM-SHA-256$" in open(users).read() and "lab-scram-password" not in open(users).read()
    body = ("protocol = postgres\nmembers = %s\ntls = verify-full\ntls_ca_file = %s\nprobe_interval = 100ms\n"
            "hold_timeout = 20s\nauth = repoint\nclient_auth = scram-sha-256\nauth_file = %s\n"
            % (", ".join(n.addr for n in lab.nodes("postgres")), lab.tls["ca"], users))
    rp = start_custom(tmp_path, {"pg": body})

    def connect():
        c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="scram_app", password="lab-scram-password",
                             dbname="test", connect_timeout=10)
        c.autocommit = True
        return c
    try:
        rp.wait_writer("pg", "127.0.0.1:%d" % lab.primary("postgres").port)
        with connect() as c, c.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS scram_w (w int, n int, PRIMARY KEY (w, n))")
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "scram_app"'):
            psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="scram_app", password="wrong", dbname="test",
                             connect_timeout=10)

        errors = writes_through_a_switchover(lab, rp, connect, "scram_w")
        assert errors == [], errors   # the old primary refused writes (read-only) before it shut down
        assert rp.service("pg")["counters"]["migrated"] >= 2
        assert "lab-scram-password" not in rp.logtext()
    finally:
        rp.stop()


def test_iam_probes_of_mariadb(lab, tmp_path):
    """MariaDB as RDS MySQL with IAM: user iam_probe is identified via PAM (the same checker), which asks
    for the token in clear (mysql_clear_password, over TLS); repoint's probes log in to every node with a
    token made for it, and a wrong key is refused with the checker's reason."""
    from conftest import start_custom, wait_for
    body = ("protocol = mysql\nmembers = %s\ntls = verify-full\ntls_ca_file = %s\nprobe_interval = 100ms\n"
            "probe_user = iam_probe\nprobe_password = iam\n"
            % (", ".join(n.addr for n in lab.nodes("mysql")), lab.tls["ca"]))
    mark = len(lab.iam_log())
    rp = start_custom(tmp_path, {"my": body}, env=iam_env(tmp_path), tail="[aws]\nregion = us-east-1\n")
    try:
        rp.wait_writer("my", "127.0.0.1:%d" % lab.primary("mysql").port)
        wait_for(lambda: all(m["probe"]["ok"] for m in rp.service("my")["members"]), 20, what="every node probed")
        log = lab.iam_log()[mark:]
        for n in lab.nodes("mysql"):
            assert "accepted iam_probe port=%d" % n.port in log, log
    finally:
        rp.stop()
    mark = len(lab.iam_log())
    rp = start_custom(tmp_path, {"my": body}, env=iam_env(tmp_path, secret="not-the-lab-secret"),
                      tail="[aws]\nregion = us-east-1\n")
    try:
        wait_for(lambda: "SignatureDoesNotMatch" in lab.iam_log()[mark:], 20, what="the refusal in the checker's log")
        assert not rp.service("my")["writer_ready"]
    finally:
        rp.stop()


def test_mariadb_sessions_with_repoints_login_over_tls_survive_a_switchover(lab, tmp_path):
    """auth = repoint on a TLS-only MariaDB (require_secure_transport): repoint asks each member for TLS inside
    its login (verified against the lab CA), logs in with the SHA1(password) the client's answer gave it against
    the mysql.user hash, and moves the sessions at a switchover: 4 pymysql clients on persistent connections
    writing every 5 ms see no error."""
    from conftest import start_custom, wait_for
    from labkit.clients import ENGINES, WriterLoop
    import time
    engine = ENGINES["mysql"]
    users = lab.mysql_auth_file(str(tmp_path / "users.txt"))
    body = ("protocol = mysql\nmembers = %s\ntls = verify-full\ntls_ca_file = %s\nprobe_interval = 100ms\n"
            "probe_user = test\nprobe_password = test\nprobe_database = test\nhold_timeout = 20s\n"
            "auth = repoint\nauth_file = %s\n" % (", ".join(n.addr for n in lab.nodes("mysql")), lab.tls["ca"], users))
    rp = start_custom(tmp_path, {"my": body})
    try:
        port = rp.ports["my"]
        rp.wait_writer("my", lab.primary("mysql").addr)
        c = engine.connect(port)   # plaintext on loopback; TLS from repoint to the member
        with c.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1], "the member connection is not TLS"
        engine.setup(c)
        loops = [WriterLoop(engine, port, name=f"tlsmy-w{i}-{time.time_ns()}") for i in range(4)]
        for w in loops:
            w.start()
        wait_for(lambda: all(w.successes() for w in loops), 20, what="writers to start")
        t0 = time.time()
        lab.switchover("mysql")
        rp.wait_writer("my", lab.primary("mysql").addr)
        wait_for(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60,
                 what="every writer to write again")
        for w in loops:
            w.stop()
        assert [e for w in loops for e in w.errors()] == []
        with c.cursor() as cur:
            cur.execute("SELECT @@port")
            assert cur.fetchone()[0] == lab.primary("mysql").port   # the same client socket, moved
            cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1]
        assert rp.service("my")["counters"]["migrated"] >= 5
        engine.close(c)
    finally:
        rp.stop()


def test_mariadb_sessions_log_in_with_iam_tokens_and_survive_a_switchover(lab, tmp_path):
    """auth = repoint, member_password = iam on MariaDB as RDS MySQL with IAM: repoint logs in to each member as
    the client's user (iam_app, identified via PAM by the lab's token checker) with an RDS token made for that
    member, in clear (mysql_clear_password) over verified TLS; 2 clients writing every 10 ms on persistent
    connections go through a switchover with no error, and the logins on the new writer are with its tokens."""
    import threading
    import pymysql
    from conftest import start_custom, wait_for
    body = ("protocol = mysql\nmembers = %s\ntls = verify-full\ntls_ca_file = %s\nprobe_interval = 100ms\n"
            "probe_user = iam_probe\nprobe_password = iam\nhold_timeout = 20s\n"
            "auth = repoint\nclient_auth = trust\nmember_password = iam\n"
            % (", ".join(n.addr for n in lab.nodes("mysql")), lab.tls["ca"]))
    rp = start_custom(tmp_path, {"my": body}, env=iam_env(tmp_path), tail="[aws]\nregion = us-east-1\n")

    def connect():
        return pymysql.connect(host="127.0.0.1", port=rp.ports["my"], user="iam_app", database="test",
                               autocommit=True, connect_timeout=10)
    try:
        rp.wait_writer("my", lab.primary("mysql").addr)
        c = connect()
        with c.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0] == "iam_app@%"
            cur.execute("CREATE TABLE IF NOT EXISTS iam_w (w INT, n INT, PRIMARY KEY (w, n))")
        stop, errors, done = threading.Event(), [], []

        def writer(w):
            conn = connect()
            n = 0
            while not stop.is_set():
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO iam_w VALUES (%s, %s)", (w, n))
                    done.append((w, n))
                except pymysql.Error as e:
                    errors.append(str(e))
                n += 1
                time.sleep(0.01)
            conn.close()
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
        try:
            for t in threads:
                t.start()
            wait_for(lambda: len(done) > 50, 20, what="writes before the switchover")
            lab.switchover("mysql")
            new = lab.primary("mysql")
            rp.wait_writer("my", new.addr)
            before = len(done)
            wait_for(lambda: len(done) > before + 50, 30, what="writes after the switchover")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert errors == []
        assert rp.service("my")["counters"]["migrated"] >= 2
        with c.cursor() as cur:
            cur.execute("SELECT @@port")
            assert cur.fetchone()[0] == new.port
        c.close()
        log = "".join(lab.iam_log())
        assert "accepted iam_app port=%d" % new.port in log, log
        assert "X-Amz-Signature" not in rp.logtext()
    finally:
        rp.stop()
