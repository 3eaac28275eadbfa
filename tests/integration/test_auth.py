"""auth = repoint (Postgres): repoint answers the client's start itself, logs in to members on the
client's behalf, and so can move an idle session to the new writer at a failover: the application's
connections survive a switchover with no error and no reconnect."""
import socket
import threading
import time

import psycopg2
import pytest

from labkit.clients import ENGINES, WriterLoop
from conftest import OwnPostgres, wait_for

AUTH = {"postgres": {"auth": "repoint", "client_auth": "trust"}}


def backend_pid(c):
    with c.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), inet_server_port()")
        return cur.fetchone()


def test_repoint_answers_the_start_and_logs_in(lab, start_repoint):
    rp = start_repoint(**AUTH)
    port = rp.ports["postgres"]
    c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10,
                         application_name="auth-test", options="-c statement_timeout=12345")
    c.autocommit = True
    with c.cursor() as cur:
        # The startup parameters reached the member unchanged.
        cur.execute("SELECT current_setting('application_name'), current_setting('statement_timeout'), "
                    "inet_server_port()")
        assert cur.fetchone() == ("auth-test", "12345ms", lab.primary("postgres").port)
    # The client got the member's parameters (server_version, encoding, ...) and a cancel key of
    # repoint's; a cancel reaches the member's backend all the same.
    assert c.server_version >= 150000 and c.encoding == "UTF8"
    threading.Timer(0.5, c.cancel).start()
    t = time.time()
    with pytest.raises(psycopg2.errors.QueryCanceled):
        with c.cursor() as cur:
            cur.execute("SELECT pg_sleep(20)")
    assert time.time() - t < 10
    with c.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    c.close()
    # A start without a user name: the server's own refusal, from repoint, and counted.
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        body = b"\x00\x03\x00\x00" + b"database\x00postgres\x00\x00"
        s.sendall(len(body + b"1234").to_bytes(4, "big") + body)
        s.settimeout(5)
        reply = s.recv(1000)
        assert reply[:1] == b"E" and b"C28000\x00" in reply and b"no PostgreSQL user name" in reply
    assert 'repoint_client_auth_failures_total{service="postgres"} 1' in rp.metrics()


def test_a_session_idle_in_a_transaction_survives_a_switchover(lab, start_repoint):
    """A session idle inside a transaction when its server shuts down (the lab's switchover: 57P01, then the
    close) lost nothing that had committed: repoint runs the transaction's queries again on the new writer, one
    at a time, each answer compared with the one the client had; all the same, the client goes on in its
    transaction there and commits. One whose answers come out otherwise (clock_timestamp()) gets the old
    server's last words and its session ends: nothing of it committed anywhere, nothing ran twice."""
    rp = start_repoint(**AUTH)
    port = rp.ports["postgres"]
    c = ENGINES["postgres"].connect(port)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tx_r (k text PRIMARY KEY, n int)")
        cur.execute("DELETE FROM tx_r")
        cur.execute("INSERT INTO tx_r VALUES ('seen', 1)")
    c.close()

    def connect():   # psycopg2's default: every first query opens a transaction (BEGIN)
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10)

    same, differs = connect(), connect()
    with same.cursor() as cur:
        cur.execute("INSERT INTO tx_r VALUES ('same', 1)")
        cur.execute("SELECT k, n FROM tx_r ORDER BY k")
        assert cur.fetchall() == [("same", 1), ("seen", 1)]
    with differs.cursor() as cur:
        cur.execute("INSERT INTO tx_r VALUES ('differs', 1)")
        cur.execute("SELECT clock_timestamp()")
    old = lab.primary("postgres")
    lab.switchover("postgres")
    new = lab.primary("postgres")
    rp.wait_writer("postgres", f"127.0.0.1:{new.port}")
    with same.cursor() as cur:
        cur.execute("UPDATE tx_r SET n = n + 1 WHERE k = 'same' RETURNING n, inet_server_port()")
        assert cur.fetchone() == (2, new.port)
    same.commit()
    with pytest.raises(psycopg2.OperationalError):
        with differs.cursor() as cur:
            cur.execute("SELECT 1")
    same.close()
    direct = ENGINES["postgres"].connect(new.port)
    with direct.cursor() as cur:
        cur.execute("SELECT k, n FROM tx_r ORDER BY k")
        assert cur.fetchall() == [("same", 2), ("seen", 1)]
    direct.close()
    assert new.port != old.port
    assert 'repoint_transactions_replayed_total{service="postgres"} 1' in rp.metrics()


class TxPostgres:
    """psycopg2's default mode for WriterLoop: the first statement opens a transaction (BEGIN, a query of its
    own), commit() ends it."""
    def connect(self, port):
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10)

    def close(self, conn):
        ENGINES["postgres"].close(conn)

    def write(self, conn, key, value):
        ENGINES["postgres"].write(conn, key, value)
        conn.commit()


class Psycopg3:
    """psycopg 3 for WriterLoop: the extended protocol, a named prepared statement once a query ran
    prepare_threshold times; autocommit, or its default mode (BEGIN, the statements, COMMIT)."""
    def __init__(self, autocommit):
        self.autocommit = autocommit

    def connect(self, port):
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10,
                               autocommit=self.autocommit, prepare_threshold=2)

    def close(self, conn):
        ENGINES["postgres"].close(conn)

    def write(self, conn, key, value):
        conn.execute("INSERT INTO repoint_t VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (key, value))
        if not self.autocommit:
            conn.commit()


# The writers of the switchover test, and whether each writes outside a transaction.
WRITERS = {"psycopg2": (lambda: ENGINES["postgres"], True), "psycopg2-transactions": (TxPostgres, False),
           "psycopg3": (lambda: Psycopg3(True), True), "psycopg3-transactions": (lambda: Psycopg3(False), False)}


# ... and with the completion transport (io = uring) under the sessions: the same, whatever moves the bytes.
@pytest.mark.parametrize("writer,io", [(w, "epoll") for w in WRITERS] +
                         [("psycopg2", "uring"), ("psycopg3-transactions", "uring")])
def test_a_switchover_costs_persistent_connections_nothing(lab, start_repoint, writer, io):
    """4 writers on persistent connections through the lab's switchover, which turns the old primary
    read-only first (libpq's own read-write test, which repoint's probe reads too): 0 errors, no reconnect,
    every acknowledged write on the new writer, an idle session moved. A write refused then (25006) did not
    run: held, and sent to the new writer once it is promoted -- alone (autocommit), or after its
    transaction ran again there with every answer as the client had it (psycopg2's BEGIN as a simple
    Query; psycopg 3's extended protocol, named prepared statements after two runs).
    Probes run every 5 s here, and the switchover starts right after one: the writers' refusals, not a
    probe, tell repoint first (each asks the member's own word), so writes certainly reach the old
    primary after it turned read-only. With 100 ms probes a probe could see it first and hold every
    writer at its idle point: nothing refused, the path this test is about not taken."""
    engine = ENGINES["postgres"]
    make, autocommit = WRITERS[writer]
    rp = start_repoint(postgres=dict(AUTH["postgres"], probe_interval="5s", io=io))
    port = rp.ports["postgres"]
    c = engine.connect(port)
    engine.setup(c)
    engine.close(c)
    old = lab.primary("postgres")
    idle = engine.connect(port)
    before = backend_pid(idle)
    assert before[1] == old.port
    loops = [WriterLoop(make(), port, name=f"auth-w{i}-{time.time_ns()}") for i in range(4)]
    for w in loops:
        w.start()
    wait_for(lambda: all(len(w.successes()) >= 3 for w in loops), 20, what="writers to start")
    accepted = rp.service("postgres")["counters"]["accepted"]

    def probes_of_old():
        return next(m for m in rp.service("postgres")["members"] if m["address"] == f"127.0.0.1:{old.port}")["probe"]["count"]

    seen = probes_of_old()
    wait_for(lambda: probes_of_old() > seen, 10, interval=0.002, what="a probe of the writer")
    t0 = time.time()
    lab.switchover("postgres")
    new = lab.primary("postgres")
    rp.wait_writer("postgres", f"127.0.0.1:{new.port}")
    wait_for(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60,
             what="every writer to write again")
    for w in loops:
        w.stop()
    errors = [e for w in loops for e in w.errors()]
    assert errors == [], errors
    svc = rp.service("postgres")
    assert svc["counters"]["retried"] >= 1 if autocommit else svc["counters"]["transactions_replayed"] >= 1, svc
    assert 'repoint_requests_outcome_unknown_total{service="postgres"} 0' in rp.metrics()
    # No client connection was closed under its application: the same sockets, now on the new writer's
    # backends.
    assert svc["counters"]["accepted"] == accepted
    after = backend_pid(idle)
    assert after[1] == new.port and after[0] != before[0]
    direct = engine.connect(new.port)
    for w in loops:
        assert engine.read(direct, w.tag) == str(w.seq)  # every acknowledged write is on the new writer
    engine.close(direct)
    engine.close(idle)


def test_psycopg3_prepared_statements_move_with_the_session(lab, start_repoint):
    """psycopg 3 prepares a query on the server after it ran a few times (named statements, extended
    protocol, inside its transactions): repoint keeps their Parse messages, creates them again on the new
    writer after a switchover, and the session goes on using them -- same socket, no error."""
    import psycopg
    rp = start_repoint(**AUTH)
    port = rp.ports["postgres"]
    old = lab.primary("postgres")
    # (CREATE TABLE in a session of its own: its tag leaves a session unmovable, as a temporary table would.)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS ps_move (k int PRIMARY KEY, v int)")
    c = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", prepare_threshold=1,
                        connect_timeout=10)

    def run(n):
        for i in range(n):
            c.execute("INSERT INTO ps_move VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (i, n))
            assert c.execute("SELECT v FROM ps_move WHERE k = %s", (i,)).fetchone() == (n,)
        c.commit()
    run(5)
    with c.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
        names = [r[0] for r in cur.fetchall()]
    c.commit()
    assert any(n.startswith("_pg3_") for n in names), names
    pid = c.info.backend_pid
    lab.switchover("postgres")
    new = lab.primary("postgres")
    rp.wait_writer("postgres", f"127.0.0.1:{new.port}")
    wait_for(lambda: rp.service("postgres")["counters"]["migrated"] >= 1, 20,
             what="the session to move: %s" % rp.service("postgres")["counters"])
    run(7)   # the prepared statements, used again: on the new writer
    assert c.execute("SELECT pg_backend_pid(), inet_server_port()").fetchone()[1] == new.port
    assert c.info.backend_pid == pid  # the client still holds repoint's key; the server's pid changed
    with c.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
        assert set(names) <= {r[0] for r in cur.fetchall()}  # created again (and the new ones since)
    c.commit()
    c.close()
    assert rp.service("postgres")["counters"]["unmovable"] == {}


def show(c, name):
    with c.cursor() as cur:
        cur.execute("SELECT current_setting(%s)", (name,))
        return cur.fetchone()[0]


def test_settings_move_and_other_state_closes_at_idle(lab, start_repoint):
    """A lone SET at an idle point is set again on the new writer (the session moves, its settings with it);
    a SET inside a transaction or a prepared statement lives in the old backend only: such sessions end at
    their idle point as before."""
    engine = ENGINES["postgres"]
    rp = start_repoint(drain_timeout="2s", **AUTH)
    port = rp.ports["postgres"]
    settled = engine.connect(port)
    with settled.cursor() as cur:
        cur.execute("SET work_mem = '7MB'")
        cur.execute("SET search_path TO pg_catalog, public")
        cur.execute("RESET statement_timeout")
    in_tx = engine.connect(port)
    in_tx.autocommit = False
    with in_tx.cursor() as cur:
        cur.execute("SET work_mem = '9MB'")
    in_tx.commit()
    prepared = engine.connect(port)
    with prepared.cursor() as cur:
        cur.execute("PREPARE p AS SELECT 1")
    old_pid = backend_pid(settled)[0]
    lab.switchover("postgres")
    new = lab.primary("postgres")
    rp.wait_writer("postgres", f"127.0.0.1:{new.port}")
    pid, port_now = backend_pid(settled)
    assert port_now == new.port and pid != old_pid
    assert show(settled, "work_mem") == "7MB" and show(settled, "search_path") == "pg_catalog, public"
    for c in (in_tx, prepared):
        with pytest.raises(psycopg2.OperationalError):
            backend_pid(c)
    # ... and are counted, by reason.
    counted = rp.service("postgres")["counters"]["unmovable"]
    assert counted == {"set_not_alone": 1, "prepare": 1}, counted
    m = rp.metrics()
    assert 'repoint_sessions_unmovable_total{service="postgres",reason="prepare"} 1' in m, m
    for c in (settled, in_tx, prepared):
        engine.close(c)


def test_idle_sessions_survive_a_crash_and_a_terminated_backend_is_the_clients(lab, start_repoint):
    """A crash: the idle sessions move once the member's own probe says it is gone. A backend terminated
    while its member stays the writer (pg_terminate_backend): that was for the client, who gets it."""
    engine = ENGINES["postgres"]
    rp = start_repoint(hold_timeout="60s", **AUTH)
    port = rp.ports["postgres"]
    old = lab.primary("postgres")
    target = next(n for n in lab.nodes("postgres") if n.name != old.name and n.alive())
    idle = [engine.connect(port) for _ in range(3)]
    victim = engine.connect(port)
    pid = backend_pid(victim)[0]
    direct = engine.connect(old.port)
    with direct.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    engine.close(direct)
    migrated = rp.service("postgres")["counters"]["migrated"]
    with pytest.raises(psycopg2.OperationalError):   # as directly: libpq says "server closed the connection"
        backend_pid(victim)
    assert victim.closed
    assert rp.service("postgres")["counters"]["migrated"] == migrated  # not moved: the close was the client's
    lab.crash("postgres", old.name)
    lab.promote("postgres", target.name)
    lab.repoint("postgres", primary=target.name)
    rp.wait_writer("postgres", f"127.0.0.1:{target.port}")
    for c in idle:
        assert backend_pid(c)[1] == target.port
        engine.close(c)
    lab.restart("postgres", old.name, as_replica=True)
    wait_for(lambda: any(m["address"] == f"127.0.0.1:{old.port}" and m["role"] == "reader"
                         for m in rp.service("postgres")["members"]), 60, what="the old writer back as a reader")


def test_a_postgres_drill_costs_the_application_nothing(lab, tmp_path):
    """`repoint drill` (static pg_promote) with auth = repoint: the long-lived clients' sessions move to the
    new writer; the report shows no error and no reconnect."""
    import json
    import os
    import subprocess
    from conftest import REPOINT_BIN, free_port
    from test_drill import a_replica, addr, repair
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "drill.ini")
    lab.write_config(cfg, admin=f"127.0.0.1:{free_port()}", postgres=AUTH["postgres"])
    target = a_replica(lab, "postgres")
    out = str(tmp_path / "report.json")
    p = subprocess.run([REPOINT_BIN, "drill", "-c", cfg, "--service", "postgres", "--target", addr(target), "--yes",
                        "--json", out, "--warmup", "2s", "--duration-after", "3s"],
                       capture_output=True, text=True, timeout=180)
    try:
        run = json.load(open(out))["runs"][0]
        assert run["status"] == "completed", (run.get("error"), p.stdout[-3000:], p.stderr[-3000:])
        assert run["errors"]["total"] == 0, run["errors"]
        assert run["requests"]["ok"] > 100
        long_clients = [c for c in run["outage"]["per_client"] if c["mode"] == "long"]
        assert long_clients and all(c["reconnects"] == 0 for c in long_clients), long_clients
        assert "migrated" in p.stdout and run["failover"]["new_writer"] == addr(target)
    finally:
        repair(lab, "postgres", target.name)


# ---- client_auth = scram-sha-256 and SCRAM logins to members -------------------------------------------------

class ScramPostgres(OwnPostgres):
    """A PostgreSQL 15 that takes TCP logins by scram-sha-256 only, with a role `app` (password `s3cret`)."""

    def __init__(self):
        super().__init__("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n", prefix="repoint-scram-pg-")
        wait_for(lambda: self.local().close() or True, 30, what="the scram postgres")
        c = self.local()
        with c.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute("CREATE ROLE app LOGIN PASSWORD 's3cret'")
            cur.execute("CREATE ROLE other LOGIN PASSWORD 'other-secret'")
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
            self.verifier = cur.fetchone()[0]
        c.close()


@pytest.fixture(scope="module")
def scram_pg():
    pg = ScramPostgres()
    yield pg
    pg.stop()


def verifier(password, salt, iterations=4096):
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802's keys), computed here with hashlib."""
    import base64
    import hashlib
    import hmac
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(hashlib.sha256(client_key).digest()),
                                          b64(server_key))


def scram_service(pg, auth_file, client_auth="scram-sha-256"):
    return ("protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\nprobe_user = app\n"
            "probe_password = s3cret\nauth = repoint\nclient_auth = %s\nauth_file = %s\nhold_timeout = 2s\n"
            % (pg.port, client_auth, auth_file))


def connect_app(port, password, user="app"):
    return psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                            connect_timeout=10)


def test_scram_with_only_the_verifier(scram_pg, tmp_path):
    """auth_file holds the verifier the member stores, no password: the client's SCRAM proof gives repoint the
    key that logs it in to the member; a wrong password, an unknown user and a member whose verifier differs are
    refused with the server's own errors."""
    from conftest import start_custom
    users = tmp_path / "users.txt"
    users.write_text('; comment\n"app" "%s"\n"nobody" "SCRAM-SHA-256$4096:%s$%s:%s"\n"other" "%s"\n'
                     % (scram_pg.verifier, "c2FsdHNhbHRzYWx0c2FsdA==", "A" * 43 + "=", "B" * 43 + "=",
                        verifier("other-secret", b"another salt....")))
    rp = start_custom(tmp_path, {"pg": scram_service(scram_pg, users)})
    try:
        rp.wait_writer("pg")
        c = connect_app(rp.ports["pg"], "s3cret")
        with c.cursor() as cur:
            cur.execute("SELECT current_user, inet_server_port()")
            assert cur.fetchone() == ("app", scram_pg.port)
        c.close()
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "app"'):
            connect_app(rp.ports["pg"], "wrong")
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "ghost"'):
            connect_app(rp.ports["pg"], "s3cret", user="ghost")
        # "nobody" has a verifier in auth_file whose password nobody knows.
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "nobody"'):
            connect_app(rp.ports["pg"], "whatever", user="nobody")
        # "other": the client proves the password of auth_file's verifier, but the member stores another one
        # (another salt): repoint cannot log in with that key, and says so.
        with pytest.raises(psycopg2.OperationalError, match="verifier differs from auth_file's"):
            connect_app(rp.ports["pg"], "other-secret", user="other")
        m = rp.metrics()
        assert 'repoint_client_auth_failures_total{service="pg"} 3' in m, m
        # The secret never reaches the log.
        assert "s3cret" not in rp.logtext() and scram_pg.verifier.split("$")[2] not in rp.logtext()
    finally:
        rp.stop()


def test_scram_with_a_password_and_file_rotation(scram_pg, tmp_path):
    """A plaintext password in auth_file logs in to the member by SCRAM with the member's own salt; auth_file
    is read again when it changes (a new user works without a restart)."""
    import os
    import time as _time
    from conftest import start_custom
    users = tmp_path / "users.txt"
    users.write_text('"app" "s3cret"\n')
    rp = start_custom(tmp_path, {"pg": scram_service(scram_pg, users)})
    try:
        rp.wait_writer("pg")
        c = connect_app(rp.ports["pg"], "s3cret")
        c.close()
        with pytest.raises(psycopg2.OperationalError):
            connect_app(rp.ports["pg"], "other-secret", user="other")
        users.write_text('"app" "s3cret"\n"other" "other-secret"\n')
        future = _time.time() + 2
        os.utime(users, (future, future))
        wait_for(lambda: connect_app(rp.ports["pg"], "other-secret", user="other").close() or True, 10,
                 what="the new user to log in")
        assert "auth_file" in rp.logtext()
    finally:
        rp.stop()


def test_member_password_from_a_file_instead_of_auth_file(scram_pg, tmp_path):
    """member_password: the members' logins use a secret of their own (here file:, read again when it
    changes; iam makes an RDS token per member and user) instead of auth_file's; clients are trusted on
    loopback. A refused login is said about member_password and the client gets the member's error."""
    import os
    import time as _time
    from conftest import start_custom
    pw = tmp_path / "member-pw"
    pw.write_text("s3cret\n")
    body = ("protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\nprobe_user = app\n"
            "probe_password = s3cret\nauth = repoint\nclient_auth = trust\nmember_password = file:%s\n"
            "hold_timeout = 2s\npool_size = 0\n" % (scram_pg.port, pw))  # every client logs in anew
    rp = start_custom(tmp_path, {"pg": body})
    try:
        rp.wait_writer("pg")
        c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="app", dbname="postgres", connect_timeout=10)
        with c.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("app",)
        c.close()
        pw.write_text("not-the-password\n")
        future = _time.time() + 2
        os.utime(pw, (future, future))

        def refused():
            # The file is looked at at most once a second: logins go on with what it said until then.
            try:
                psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="app", dbname="postgres",
                                 connect_timeout=10).close()
                return False
            except psycopg2.OperationalError as e:
                assert 'password authentication failed for user "app"' in str(e), str(e)
                return True
        wait_for(refused, 10, what="the new file content to be used")
        wait_for(lambda: "refused repoint's login as the client's user (member_password file)" in rp.logtext(), 10,
                 what="the refusal said about member_password")
        assert rp.service("pg")["counters"]["member_login_failures"] >= 1
        assert "s3cret" not in rp.logtext() and "not-the-password" not in rp.logtext()
    finally:
        rp.stop()


class Md5Postgres(OwnPostgres):
    """A PostgreSQL 15 that takes TCP logins by md5 only, with a role `app` whose secret is stored as md5."""

    def __init__(self):
        super().__init__("local all all trust\nhost all all 127.0.0.1/32 md5\n", prefix="repoint-md5-pg-")
        wait_for(lambda: self.local().close() or True, 30, what="the md5 postgres")
        c = self.local()
        with c.cursor() as cur:
            cur.execute("SET password_encryption = 'md5'")
            cur.execute("CREATE ROLE app LOGIN PASSWORD 'md5-s3cret'")
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
            self.secret = cur.fetchone()[0]
        c.close()


def test_client_auth_md5_with_the_md5_secret_only(tmp_path):
    """client_auth = md5 with auth_file holding the member's md5 secret (no password): repoint checks the
    client's md5 answer against it and answers the member's md5 challenge with it; a wrong password and
    an unknown user get the server's own error."""
    from conftest import start_custom
    pg = Md5Postgres()
    try:
        assert pg.secret.startswith("md5") and len(pg.secret) == 35
        users = tmp_path / "users.txt"
        users.write_text('"app" "%s"\n' % pg.secret)
        rp = start_custom(tmp_path, {"pg": "protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\n"
                                           "probe_user = app\nprobe_password = md5-s3cret\nauth = repoint\n"
                                           "client_auth = md5\nauth_file = %s\nhold_timeout = 2s\n" % (pg.port, users)})
        try:
            rp.wait_writer("pg")
            c = connect_app(rp.ports["pg"], "md5-s3cret")
            with c.cursor() as cur:
                cur.execute("SELECT current_user, inet_server_port()")
                assert cur.fetchone() == ("app", pg.port)
            c.close()
            with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "app"'):
                connect_app(rp.ports["pg"], "wrong")
            with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "ghost"'):
                connect_app(rp.ports["pg"], "md5-s3cret", user="ghost")
            assert 'repoint_client_auth_failures_total{service="pg"} 2' in rp.metrics()
            assert "md5-s3cret" not in rp.logtext() and pg.secret not in rp.logtext()
        finally:
            rp.stop()
    finally:
        pg.stop()


def test_t_warns_about_passwords_written_in_auth_file(tmp_path):
    """repoint -t: a plaintext password in auth_file is said (naming the file and a user, never the
    password); verifiers and references are not."""
    import subprocess
    from conftest import REPOINT_BIN
    users = tmp_path / "users.txt"
    users.write_text('"app" "plain-pw-123"\n"bob" "env:BOB_PW"\n"carol" "%s"\n' % verifier("x", b"salt-salt-salt16"))
    cfg = tmp_path / "a.ini"
    cfg.write_text("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:15432\nmembers = 127.0.0.1:5432\n"
                   "auth = repoint\nauth_file = %s\n" % users)
    r = subprocess.run([REPOINT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert ('%s:6: auth_file of service a: 1 password(s) written in %s (user "app")' % (cfg, users)) in r.stdout, r.stdout
    assert "plain-pw-123" not in r.stdout + r.stderr
    users.write_text('"bob" "env:BOB_PW"\n')
    r = subprocess.run([REPOINT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout


def test_auth_file_passwords_as_references(scram_pg, tmp_path):
    """auth_file's passwords need not be in it: "env:NAME", "file:/PATH" (read again when it changes) and
    "secretsmanager:ID" are read as every other secret; a rotated file is followed without a reload."""
    import os
    import time as _time
    from conftest import start_custom
    pw = tmp_path / "app-pw"
    pw.write_text("s3cret\n")
    users = tmp_path / "users.txt"
    users.write_text('"app" "file:%s"\n"other" "env:REPOINT_TEST_OTHER_PW"\n' % pw)
    env = dict(os.environ, REPOINT_TEST_OTHER_PW="other-secret")
    rp = start_custom(tmp_path, {"pg": scram_service(scram_pg, users)}, env=env)
    try:
        rp.wait_writer("pg")
        connect_app(rp.ports["pg"], "s3cret").close()
        connect_app(rp.ports["pg"], "other-secret", user="other").close()
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "app"'):
            connect_app(rp.ports["pg"], "wrong")
        # Rotation: the server's password, then the file's.
        c = scram_pg.local()
        with c.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute("ALTER ROLE app PASSWORD 's3cret-2'")
        c.close()
        pw.write_text("s3cret-2\n")
        future = _time.time() + 2
        os.utime(pw, (future, future))

        def rotated():
            try:
                connect_app(rp.ports["pg"], "s3cret-2").close()
                return True
            except psycopg2.OperationalError:
                return False   # the file is looked at once a second at most
        wait_for(rotated, 10, what="the rotated password in use")
        log = rp.logtext()
        assert "s3cret" not in log and "other-secret" not in log
    finally:
        rp.stop()
        c = scram_pg.local()
        with c.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute("ALTER ROLE app PASSWORD 's3cret'")
        c.close()


def test_pool_keeps_server_connections_for_the_next_client(scram_pg, tmp_path):
    """pool_size: a client that says goodbye at an idle point leaves its logged-in server connection for the
    next client of the same start, who is told it is in at once (no login to the member); what a client set is
    reset first (DISCARD ALL); a different start (another user) gets its own; the kept ones close after
    server_idle_timeout."""
    from conftest import start_custom
    users = tmp_path / "users.txt"
    users.write_text('"app" "s3cret"\n"other" "other-secret"\n')
    rp = start_custom(tmp_path, {"pg": scram_service(scram_pg, users) + "pool_size = 2\nserver_idle_timeout = 2s\n"})
    try:
        rp.wait_writer("pg")

        def pid(user="app", pw="s3cret", then=None):
            c = connect_app(rp.ports["pg"], pw, user=user)
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                p = cur.fetchone()[0]
                if then:
                    cur.execute(then)
            c.commit()
            c.close()
            return p
        first = pid()
        assert [pid() for _ in range(5)] == [first] * 5       # one server connection for all of them
        st = rp.service("pg")["counters"]
        assert st["pool_reused"] >= 5 and st["pooled"] >= 6, st
        other = pid("other", "other-secret")
        assert other != first and pid("other", "other-secret") == other   # per start (user, database)
        # A session that set something (a SET, a prepared statement) is reset (DISCARD ALL) before it is kept:
        # the next client gets the connection without what the last one set.
        assert pid(then="SET work_mem = '8MB'; PREPARE p AS SELECT 1") == first

        def taken_again(backend, query):
            # What query says on the first client whose server connection is backend (its reset done); the other
            # clients stay open meanwhile, so that the pool hands out nothing but the one being reset.
            others = []

            def one():
                c = connect_app(rp.ports["pg"], "s3cret")
                with c.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid(), " + query)
                    row = cur.fetchone()
                if row[0] != backend:
                    others.append(c)
                    return None
                c.close()
                return row
            try:
                return wait_for(one, 10, what="the reset connection to be taken again")
            finally:
                for o in others:
                    o.close()
        row = taken_again(first, "current_setting('work_mem'), (SELECT count(*) FROM pg_prepared_statements)")
        assert row[1] == "4MB" and row[2] == 0, row
        # A client that leaves inside its transaction (psycopg2's default: its first query began one) is kept as
        # well: ROLLBACK, then DISCARD ALL.
        c = connect_app(rp.ports["pg"], "s3cret")
        with c.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            left = cur.fetchone()[0]
            cur.execute("CREATE TEMP TABLE left_open (a int)")
            cur.execute("SET work_mem = '8MB'")
        c.close()   # Terminate, the transaction open
        row = taken_again(left, "current_setting('work_mem'), to_regclass('pg_temp.left_open') IS NULL")
        assert row[1] == "4MB" and row[2] is True, row
        # A wrong password still fails with a kept connection there.
        with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "app"'):
            connect_app(rp.ports["pg"], "wrong")
        # server_idle_timeout: the kept connections close; the next client logs in anew.
        kept = pid()
        c = scram_pg.local()
        wait_for(lambda: c.cursor().execute("SELECT 1") or not _backend_alive(c, kept), 10,
                 what="the kept connection to close after server_idle_timeout")
        c.close()
        assert pid() != kept
    finally:
        rp.stop()


def _backend_alive(conn, pid):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()[0] == 1
