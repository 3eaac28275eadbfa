"""auth = repoint (MySQL/MariaDB): repoint greets the client itself, checks its mysql_native_password answer
against the hash in auth_file, logs in to members on the client's behalf, and so moves an idle session to the
new writer at a failover: the application's connections survive a switchover with no error and no reconnect."""
import socket
import subprocess
import struct
import time

import pymysql
import pytest

from labkit.clients import ENGINES, WriterLoop
from conftest import wait_for
from test_drill import promote_user  # noqa: F401 (a fixture)


@pytest.fixture
def auth(lab, tmp_path):
    """The service options for auth = repoint with the lab's hash-only auth_file."""
    path = lab.mysql_auth_file(str(tmp_path / "users.txt"))
    with open(path) as f:
        assert '"test" "*' in f.read()   # the hash, no password
    return {"mysql": {"auth": "repoint", "auth_file": path}}


def conn_id(c):
    with c.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID(), @@port")
        return cur.fetchone()


def test_repoint_greets_checks_the_password_and_logs_in(lab, start_repoint, auth):
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    c = pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                        connect_timeout=10, autocommit=True, program_name="auth-test")
    cid, member_port = conn_id(c)
    assert member_port == lab.primary("mysql").port
    with c.cursor() as cur:
        # The client's attributes and database reached the member.
        cur.execute("SELECT DATABASE(), ATTR_VALUE FROM performance_schema.session_connect_attrs "
                    "WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program_name'")
        row = cur.fetchone()
        assert row is None or row == ("test", "auth-test")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("test",)
    # The greeting is repoint's (its own challenge and connection id) with the member's version.
    assert "MariaDB" in c.get_server_info() and c.thread_id() != cid and c.thread_id() >= 1 << 30
    c.close()
    # A wrong password, an unknown user: MySQL's own refusal, from repoint, and counted; nothing reached a member.
    for user, pw in (("test", "wrong"), ("nobody", "test"), ("test", "")):
        with pytest.raises(pymysql.err.OperationalError) as e:
            pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw, connect_timeout=10)
        assert e.value.args[0] == 1045 and "Access denied for user '%s'" % user in e.value.args[1], e.value.args
    assert 'repoint_client_auth_failures_total{service="mysql"} 3' in rp.metrics()
    # The mysql CLI (MariaDB Connector/C) too.
    out = subprocess.run(["mysql", "--no-defaults", "-h127.0.0.1", "-P%d" % port, "-utest", "-ptest", "test", "-N",
                          "-e", "SELECT @@port"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == str(lab.primary("mysql").port), out.stderr


def test_a_switchover_costs_persistent_connections_nothing(lab, start_repoint, auth):
    engine = ENGINES["mysql"]
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    c = engine.connect(port)
    engine.setup(c)
    engine.close(c)
    old = lab.primary("mysql")
    idle = engine.connect(port)
    before = conn_id(idle)
    assert before[1] == old.port
    # Session state that moves with the session: a setting, a user variable set alone, the database.
    with idle.cursor() as cur:
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
        cur.execute("SET @who = 'me'")
        cur.execute("CREATE DATABASE IF NOT EXISTS other")
    idle.select_db("other")
    loops = [WriterLoop(engine, port, name=f"myauth-w{i}-{time.time_ns()}") for i in range(4)]
    for w in loops:
        w.start()
    wait_for(lambda: all(w.successes() for w in loops), 20, what="writers to start")
    accepted = rp.service("mysql")["counters"]["accepted"]
    t0 = time.time()
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    wait_for(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60,
             what="every writer to write again")
    for w in loops:
        w.stop()
    errors = [e for w in loops for e in w.errors()]
    assert errors == []
    # No client connection was closed under its application: the same sockets, on the new writer's connections.
    assert rp.service("mysql")["counters"]["accepted"] == accepted
    after = conn_id(idle)
    assert after[1] == new.port
    with idle.cursor() as cur:
        cur.execute("SELECT @@sql_mode, @who, DATABASE()")
        assert cur.fetchone() == ("ANSI_QUOTES", "me", "other")
    assert rp.service("mysql")["counters"]["migrated"] >= 5
    direct = engine.connect_node(new)
    for w in loops:
        assert engine.read(direct, w.tag) == str(w.seq)  # every acknowledged write is on the new writer
    engine.close(direct)
    engine.close(idle)


def test_state_repoint_cannot_carry_closes_at_idle_and_is_counted(lab, start_repoint, auth):
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    engine = ENGINES["mysql"]
    temp = engine.connect(port)
    with temp.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE t1 (a INT)")
    var = engine.connect(port)
    with var.cursor() as cur:
        cur.execute("SELECT @x := 1")
    plain = engine.connect(port)
    conn_id(plain)
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    # The plain session moved; the two others were closed at their idle point, as with auth = passthrough.
    assert conn_id(plain)[1] == new.port
    for c in (temp, var):
        with pytest.raises(pymysql.err.OperationalError):
            conn_id(c)
    m = rp.metrics()
    assert 'repoint_sessions_unmovable_total{service="mysql",reason="temporary_table"} 1' in m, m
    assert 'repoint_sessions_unmovable_total{service="mysql",reason="user_variable"} 1' in m, m
    for c in (temp, var, plain):
        engine.close(c)


def test_idle_sessions_survive_a_crash_and_a_killed_connection_is_the_clients(lab, start_repoint, auth):
    """A crash: the idle sessions move once the member's own probe says it is gone (one with a prepared
    statement open, prepared again there), and one idle inside a transaction runs it again there (nothing of
    it had committed) and goes on. A connection killed while its
    member stays the writer (KILL): that was for the client, who gets it."""
    engine = ENGINES["mysql"]
    rp = start_repoint(hold_timeout="60s", **auth)
    port = rp.ports["mysql"]
    old = lab.primary("mysql")
    target = next(n for n in lab.nodes("mysql") if n.name != old.name and n.alive())
    idle = [engine.connect(port) for _ in range(3)]
    engine.setup(idle[0])
    for c in idle:
        assert conn_id(c)[1] == old.port
    with idle[0].cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tx_c (k VARCHAR(32) PRIMARY KEY, n INT)")
        cur.execute("DELETE FROM tx_c")
    on_target = engine.connect_node(target)
    wait_for(lambda: on_target.cursor().execute("SELECT COUNT(*) FROM tx_c") == 1, 20,
             what="tx_c on the replica")   # (raises until the table is there)
    engine.close(on_target)
    in_tx = pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                            connect_timeout=10, read_timeout=30)   # autocommit off
    with in_tx.cursor() as cur:
        cur.execute("INSERT INTO tx_c VALUES ('crash', 1)")
        cur.execute("SELECT 6 * 7")
    ps = PsClient(port)   # a Connector/C client with a statement kept open: it moves with it
    assert ps.do("keep") == "ok kept" and ps.do("exec") == "ok 42"
    victim = engine.connect(port)
    vid = conn_id(victim)[0]
    direct = engine.connect_node(old)
    with direct.cursor() as cur:
        cur.execute("KILL %d" % vid)
    engine.close(direct)
    migrated = rp.service("mysql")["counters"]["migrated"]
    with pytest.raises(pymysql.err.OperationalError):   # as directly: "Lost connection to MySQL server"
        conn_id(victim)
    assert rp.service("mysql")["counters"]["migrated"] == migrated  # not moved: the close was the client's
    loops = [WriterLoop(engine, port, name=f"mycrash-w{i}-{time.time_ns()}") for i in range(4)]
    for w in loops:
        w.start()
    wait_for(lambda: all(w.successes() for w in loops), 20, what="writers to start")
    accepted = rp.service("mysql")["counters"]["accepted"]
    t0 = time.time()
    lab.crash("mysql", old.name)
    lab.promote("mysql", target.name)
    lab.repoint("mysql", primary=target.name)
    rp.wait_writer("mysql", f"127.0.0.1:{target.port}")
    wait_for(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60,
             what="every writer to write again")
    for w in loops:
        w.stop()
    for c in idle:
        assert conn_id(c)[1] == target.port   # the same client sockets, on the new writer
        engine.close(c)
    assert ps.do("exec") == "ok 42" and ps.do("id").split()[2] == str(target.port)
    ps.close()
    with in_tx.cursor() as cur:               # its transaction, run again on the new writer, goes on
        cur.execute("UPDATE tx_c SET n = n + 1 WHERE k = 'crash'")
        cur.execute("SELECT n, @@port FROM tx_c WHERE k = 'crash'")
        assert cur.fetchone() == (2, target.port)
    in_tx.commit()
    in_tx.close()
    assert 'repoint_transactions_replayed_total{service="mysql"} 1' in rp.metrics()
    # A write in flight when the writer died is answered "outcome unknown" (2013, as a lost connection: it may
    # have committed, so it is never sent again), and its session goes on; no client connection was closed.
    errors = [e for w in loops for t, e in w.errors()]
    assert all("may or may not have run" in e and "2013" in e for e in errors), errors
    assert all(len(w.errors()) <= 1 for w in loops), errors
    assert 'repoint_requests_outcome_unknown_total{service="mysql"} %d' % len(errors) in rp.metrics()
    # (an error makes the loop reconnect, as a pool would: that is the loop's choice, not repoint's)
    assert rp.service("mysql")["counters"]["accepted"] - accepted <= len(errors)
    lab.restart("mysql", old.name, as_replica=True)


def test_a_greeting_for_a_client_that_asks_for_tls_is_refused_natively(lab, start_repoint, auth):
    rp = start_repoint(**auth)
    with socket.create_connection(("127.0.0.1", rp.ports["mysql"]), 5) as s:
        s.settimeout(5)
        hdr = s.recv(4)
        greeting = s.recv(struct.unpack("<I", hdr[:3] + b"\0")[0])
        assert greeting[0] == 10 and b"mysql_native_password" in greeting
        caps = struct.unpack("<H", greeting[greeting.index(b"\0", 1) + 14:][:2])[0]
        assert not caps & 0x800  # no TLS offered
        req = struct.pack("<IIB23x", 0x800 | 0x200 | 0x8000, 1 << 24, 33)
        s.sendall(struct.pack("<I", len(req))[:3] + b"\x01" + req)
        reply = s.recv(1000)
        assert reply[4] == 0xFF and struct.unpack("<H", reply[5:7])[0] == 1043


def test_a_mariadb_drill_costs_the_application_nothing(lab, tmp_path, auth, promote_user):
    """`repoint drill` (a self-managed promotion) with auth = repoint: the long-lived clients' sessions move to
    the new writer; the report shows no error and no reconnect."""
    import json
    import os
    from conftest import free_port
    from test_drill import a_replica, addr, drill_args, drill_env, repair
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "drill.ini")
    lab.write_config(cfg, admin=f"127.0.0.1:{free_port()}", **auth)
    target = a_replica(lab, "mysql")
    out = str(tmp_path / "report.json")
    p = subprocess.run(drill_args(cfg, "mysql", "--target", addr(target), "--yes", "--json", out, "--warmup", "2s",
                                  "--duration-after", "3s"),
                       capture_output=True, text=True, timeout=180, env=drill_env())
    try:
        run = json.load(open(out))["runs"][0]
        assert run["status"] == "completed", (run.get("error"), p.stdout[-3000:], p.stderr[-3000:])
        assert run["errors"]["total"] == 0, run["errors"]
        assert run["requests"]["ok"] > 100
        long_clients = [c for c in run["outage"]["per_client"] if c["mode"] == "long"]
        assert long_clients and all(c["reconnects"] == 0 for c in long_clients), long_clients
        assert "migrated" in p.stdout and run["failover"]["new_writer"] == addr(target)
    finally:
        repair(lab, "mysql", target.name)


class PsClient:
    """tests/integration/ps_client.pl: MariaDB Connector/C with server-side prepared statements."""

    def __init__(self, port):
        import os
        self.p = subprocess.Popen(["perl", os.path.join(os.path.dirname(__file__), "ps_client.pl"), str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ok connected"

    def do(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def test_prepared_statements_move_with_their_ids(lab, start_repoint, auth):
    """COM_STMT_PREPARE through repoint's login (a real Connector/C client): a session whose statements are all
    closed again (Go's driver prepares, executes and closes each query) moves at a switchover, and so does one
    that keeps statements open: the new writer's login prepares them again, and the client's ids are mapped
    to the ones the new writer gave. Here the new writer starts a fresh thread (no thread cache), so it
    numbers the statement 1 where the client holds 4 (a cached thread would go on counting: the ids differ
    either way). The statements the client prepares there after the move get the new writer's 2, 3, then 4,
    which the client knows as its kept statement's: that one comes back to the client as 1. A session that
    prepared and closed 1,100 statements before keeping one moves the same way (its id is just a number).
    The clients execute them all as before, each the statement it means."""
    engine = ENGINES["mysql"]
    target = lab.node("mysql", lab.replicas("mysql")[0])
    direct = engine.connect_node(target)
    with direct.cursor() as cur:
        cur.execute("SELECT @@thread_cache_size")
        cache = cur.fetchone()[0]
        cur.execute("SET GLOBAL thread_cache_size = 0")
    engine.close(direct)
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    closed, kept, high = PsClient(port), PsClient(port), PsClient(port)
    try:
        assert closed.do("once") == "ok 42"
        for _ in range(3):
            assert kept.do("once") == "ok 42"      # ids 1-3 taken and closed: the kept one is 4
        assert kept.do("keep") == "ok kept" and kept.do("exec") == "ok 42"
        for _ in range(1100):                      # a long-lived session's count: its kept one above 1100
            assert high.do("once") == "ok 42"
        assert high.do("keep") == "ok kept" and high.do("exec") == "ok 42"
        before = [c.do("id").split() for c in (closed, kept, high)]
        lab.switchover("mysql", target.name)
        new = lab.primary("mysql")
        assert new.name == target.name
        rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
        for c, b in zip((closed, kept, high), before):
            after = c.do("id").split()
            assert after[0] == "ok" and after[2] == str(new.port) and after[1] != b[1], (b, after)
        assert closed.do("once") == "ok 42"     # and prepares again on the new writer
        assert kept.do("exec") == "ok 42"       # the statement prepared again, its id mapped
        assert high.do("exec") == "ok 42" and high.do("once") == "ok 42" and high.do("exec") == "ok 42"
        for _ in range(4):                      # the new writer's 2, 3, 4 (the client's 1), 5
            assert kept.do("once") == "ok 42" and kept.do("exec") == "ok 42"
        m = rp.metrics()
        assert 'reason="prepared_statement"' not in m and "login_failed" not in m, m
        assert rp.service("mysql")["counters"]["migrated"] >= 3, rp.service("mysql")["counters"]
        assert "ids mapped (client -> member): 4 -> 1" in rp.logtext(), rp.logtext()[-3000:]
    finally:
        closed.close()
        kept.close()
        high.close()
        direct = engine.connect_node(target)
        with direct.cursor() as cur:
            cur.execute("SET GLOBAL thread_cache_size = %d" % int(cache))
        engine.close(direct)


def test_prepared_writes_through_a_switchover_cost_nothing(lab, start_repoint, auth):
    """A Connector/C client inserting with a prepared statement, one execution after another as fast as it
    can: a switchover costs it nothing. An execution the old writer refused read-only (1290: the lab's
    switchover sets read_only first) did not run; once the member's probe says it is no longer the writer,
    the session moves (its statement prepared again under its id) and the execution goes to the new writer
    as it came, its parameters' types with it. Every acknowledged insert is on the new writer."""
    import threading
    engine = ENGINES["mysql"]
    direct = engine.connect_node(lab.primary("mysql"))
    with direct.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS ps_w (n int PRIMARY KEY)")
        cur.execute("DELETE FROM ps_w")
    engine.close(direct)
    lab.verify("mysql")
    rp = start_repoint(**auth)
    c = PsClient(rp.ports["mysql"])
    acked, errors = [], []
    done = threading.Event()

    def writes():
        n = 0
        while not done.is_set():
            n += 1
            r = c.do("ins %d" % n)
            if r == "ok":
                acked.append(n)
            else:
                errors.append(r)
    th = threading.Thread(target=writes)
    th.start()
    try:
        wait_for(lambda: len(acked) >= 20, 10, what="the first writes")
        lab.switchover("mysql")
        new = lab.primary("mysql")
        rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
        n0 = len(acked)
        wait_for(lambda: len(acked) >= n0 + 20 or errors, 10, what="writes on the new writer")
    finally:
        done.set()
        th.join(30)
        c.close()
    assert errors == [], errors[:3]
    direct = engine.connect_node(new)
    with direct.cursor() as cur:
        cur.execute("SELECT n FROM ps_w")
        on_new = {r[0] for r in cur.fetchall()}
    engine.close(direct)
    assert set(acked) <= on_new, sorted(set(acked) - on_new)[:5]
    counters = rp.service("mysql")["counters"]
    assert counters["migrated"] >= 1, counters


def test_a_statement_executed_without_its_types_keeps_the_session_where_it_is(lab, start_repoint, auth):
    """COM_STMT_EXECUTE may leave out its parameters' types (Connector/J does after the first execution): the
    server uses those it was sent before, which a statement prepared again on another server does not have
    (MariaDB then refuses the execution, 1210). Such a session is not moved: at a switchover it is closed at
    its idle point and counted, as before statements could move at all. (The packets are written here as
    such a client writes them, on a pymysql connection.)"""
    rp = start_repoint(**auth)
    c = pymysql.connect(host="127.0.0.1", port=rp.ports["mysql"], user="test", password="test", database="test",
                        autocommit=True, connect_timeout=10)

    def command(payload):
        c._next_seq_id = 0
        c._write_bytes(struct.pack("<I", len(payload))[:3] + b"\x00" + payload)
        c._next_seq_id = 1
        return c._read_packet()

    def rows(first):
        # A binary result set: column count, definitions, EOF, rows, EOF (CLIENT_DEPRECATE_EOF is pymysql's off).
        got, p = [], first
        ncols = p.read_length_encoded_integer()
        for _ in range(ncols + 1):
            c._read_packet()
        while True:
            p = c._read_packet()
            if p.is_eof_packet():
                return got
            got.append(p.get_all_data())
    ok = command(b"\x16SELECT ? + 1").get_all_data()
    sid, ncols, nparams = struct.unpack("<IHH", ok[1:9])
    for _ in range(ncols + nparams + (ncols > 0) + (nparams > 0)):
        c._read_packet()
    assert nparams == 1
    head = b"\x17" + struct.pack("<I", sid) + b"\x00" + struct.pack("<I", 1) + b"\x00"
    with_types = head + b"\x01" + b"\x08\x00" + struct.pack("<q", 41)   # LONGLONG 41
    without = head + b"\x00" + struct.pack("<q", 41)
    assert len(rows(command(with_types))) == 1
    assert len(rows(command(without))) == 1          # the server remembers LONGLONG
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    with pytest.raises(pymysql.err.Error):
        rows(command(without))
    c.close()
    m = rp.metrics()
    assert 'repoint_sessions_unmovable_total{service="mysql",reason="prepared_statement"} 1' in m, m


def test_kill_query_by_the_greetings_id_reaches_the_session_wherever_it_moved(lab, start_repoint, auth):
    """Clients cancel with KILL QUERY <the id the greeting gave them> on another connection (the mysql CLI's
    Ctrl-C, Connector/J's query timeouts). That id is repoint's, so it names the session after a move too:
    repoint sends the member the session's connection id there. Without the mapping a stale id could name
    another session on the new writer."""
    import threading
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    engine = ENGINES["mysql"]
    victim, killer = engine.connect(port), engine.connect(port)

    def cancelled_after_kill():
        box = {}

        def run():
            t = time.time()
            try:
                with victim.cursor() as cur:
                    cur.execute("SELECT SLEEP(20)")
                    box["value"] = cur.fetchone()[0]
            except pymysql.err.OperationalError as e:
                box["error"] = e.args[0]
            box["took"] = time.time() - t
        th = threading.Thread(target=run)
        th.start()
        wait_for(lambda: any("SLEEP(20)" in (r[7] or "") for r in processlist()), 10, what="the query to run")
        with killer.cursor() as cur:
            cur.execute("KILL QUERY %d" % victim.thread_id())
        th.join(30)
        return box

    def processlist():
        direct = engine.connect_node(lab.primary("mysql"))
        try:
            with direct.cursor() as cur:
                cur.execute("SHOW FULL PROCESSLIST")
                return cur.fetchall()
        finally:
            engine.close(direct)

    box = cancelled_after_kill()
    # MariaDB answers an interrupted SLEEP with 1 (or error 1317); either way, at once.
    assert box["took"] < 10 and (box.get("value") == 1 or box.get("error") == 1317), box
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    assert conn_id(victim)[1] == new.port and conn_id(killer)[1] == new.port
    box = cancelled_after_kill()
    assert box["took"] < 10 and (box.get("value") == 1 or box.get("error") == 1317), box
    # An id that is not repoint's goes to the member as it is: the server's own answer.
    with pytest.raises(pymysql.err.OperationalError) as e:
        with killer.cursor() as cur:
            cur.execute("KILL QUERY 999999")
    assert e.value.args[0] == 1094
    engine.close(victim)
    engine.close(killer)


def test_sessions_with_autocommit_off_move_between_transactions(lab, start_repoint, auth):
    """pymysql's default (autocommit off: it sends SET AUTOCOMMIT = 0, which moves with the session), writing in
    explicit transactions (INSERT, COMMIT) through a switchover: no error, every committed write on the new writer."""
    import threading
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    engine = ENGINES["mysql"]
    c = engine.connect(port)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tx_w (w INT, n INT, PRIMARY KEY (w, n))")
        cur.execute("DELETE FROM tx_w")
    engine.close(c)
    stop, errors, done = threading.Event(), [], []

    def writer(w):
        conn = pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                               connect_timeout=10)   # autocommit off
        n = 0
        while not stop.is_set():
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO tx_w VALUES (%s, %s)", (w, n))
                conn.commit()
                done.append((w, n))
            except pymysql.Error as e:
                errors.append(str(e))
                try:
                    conn.rollback()
                except pymysql.Error:
                    pass
            n += 1
            time.sleep(0.005)
        with conn.cursor() as cur:
            cur.execute("SELECT @@autocommit")
            assert cur.fetchone()[0] == 0
        conn.close()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(done) > 40, 20, what="writes before the switchover")
        lab.switchover("mysql")
        new = lab.primary("mysql")
        rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
        before = len(done)
        wait_for(lambda: len(done) > before + 80, 30, what="writes after the switchover")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    direct = engine.connect_node(new)
    with direct.cursor() as cur:
        cur.execute("SELECT w, n FROM tx_w")
        rows = set(cur.fetchall())
    engine.close(direct)
    assert set(done) <= rows


def test_a_transaction_refused_part_way_runs_again_on_the_new_writer(lab, start_repoint, auth):
    """A transaction that wrote on the old writer before it turned read-only has its COMMIT refused there
    (1290: nothing of it committed). repoint runs it again on the new writer, one statement at a time, each
    answer compared with the one the client had; all the same, the COMMIT is sent there and the client sees
    nothing. One whose answers come out otherwise (NOW(6) differs) gets the old writer's refusal and its
    session ends: nothing of it is committed anywhere, and nothing runs twice."""
    rp = start_repoint(**auth)
    port = rp.ports["mysql"]
    engine = ENGINES["mysql"]
    c = engine.connect(port)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tx_r (k VARCHAR(32) PRIMARY KEY, n INT)")
        cur.execute("DELETE FROM tx_r")
        cur.execute("INSERT INTO tx_r VALUES ('seen', 1)")
    engine.close(c)

    def connect():
        return pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                               connect_timeout=10, read_timeout=20)   # autocommit off

    same = connect()          # answers that come out the same on the new writer
    differs = connect()       # one that does not
    explicit = connect()      # BEGIN ... COMMIT with autocommit on
    explicit.autocommit(True)
    with same.cursor() as cur:
        cur.execute("INSERT INTO tx_r VALUES ('same', 1)")
        cur.execute("SELECT k, n FROM tx_r ORDER BY k")
        assert cur.fetchall() == (("same", 1), ("seen", 1))
        cur.execute("UPDATE tx_r SET n = n + 1 WHERE k = 'same'")
    with differs.cursor() as cur:
        cur.execute("INSERT INTO tx_r VALUES ('differs', 1)")
        cur.execute("SELECT NOW(6)")
    with explicit.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO tx_r VALUES ('explicit', 1)")
    old = lab.primary("mysql")
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    same.commit()
    with explicit.cursor() as cur:
        cur.execute("COMMIT")
    with pytest.raises(pymysql.err.OperationalError) as e:
        differs.commit()
    assert e.value.args[0] == 1290, e.value.args
    for cn in (same, explicit):
        # The session goes on, on the new writer, with its setting.
        with cn.cursor() as cur:
            cur.execute("SELECT @@port, @@autocommit, @@in_transaction")
            assert cur.fetchone() == (new.port, 1 if cn is explicit else 0, 0)
        cn.close()
    with pytest.raises(pymysql.err.Error):
        with differs.cursor() as cur:
            cur.execute("SELECT 1")
    direct = engine.connect_node(new)
    with direct.cursor() as cur:
        cur.execute("SELECT k, n FROM tx_r ORDER BY k")
        assert cur.fetchall() == (("explicit", 1), ("same", 2), ("seen", 1))
    engine.close(direct)
    assert new.port != old.port
    assert 'repoint_transactions_replayed_total{service="mysql"} 2' in rp.metrics()


@pytest.mark.parametrize("io", ["epoll", "uring"])
def test_pool_keeps_server_connections_for_the_next_client(lab, start_repoint, auth, io):
    """A client that says goodbye (COM_QUIT) at an idle point, having set nothing, leaves its logged-in server
    connection to the next client of the same start: that client is greeted from the kept connection's greeting
    and told it is in without a login to the member (its own password checked by repoint as always). A session
    that set something is reset first (COM_RESET_CONNECTION, its start's database and character set again); one
    whose start named no database is not kept. With io = uring the kept connection leaves the ring first."""
    rp = start_repoint(mysql=dict(auth["mysql"], io=io))
    port = rp.ports["mysql"]
    engine = ENGINES["mysql"]
    ids = set()
    for i in range(10):
        c = engine.connect(port)
        ids.add(conn_id(c)[0])
        engine.close(c)
        if io == "uring":
            # A completion is seen a turn of the loop after readiness: the next client's connect can be taken
            # before the goodbye, and get a connection of its own. Here the goodbye is awaited.
            wait_for(lambda: rp.service("mysql")["counters"]["pooled"] >= i + 1, 10, what="the goodbye taken")
    assert len(ids) == 1, ids                      # one member connection served all ten clients
    counters = rp.service("mysql")["counters"]
    assert counters["pool_reused"] >= 9 and counters["pooled"] >= 10, counters
    # A wrong password on a kept connection's greeting: refused by repoint, the connection still kept.
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host="127.0.0.1", port=port, user="test", password="wrong", connect_timeout=10)
    assert e.value.args[0] == 1045
    # Another start (another database) gets a connection of its own; a KILL by the greeting's id reaches it.
    other = pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="mysql",
                            autocommit=True, connect_timeout=10)
    assert conn_id(other)[0] not in ids
    engine.close(other)
    # A session that set something is reset before it is kept: COM_RESET_CONNECTION, then its start's database
    # and character set again. pymysql's default (autocommit off) alone sets something (SET AUTOCOMMIT = 0).
    def client(**kw):
        return pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", charset="latin1",
                               connect_timeout=10, **kw)

    def taken(cid, **kw):
        # The first client whose connection is cid (its reset done); the others stay open meanwhile, so that
        # the pool hands out nothing but the connection being reset.
        others = []
        try:
            def one():
                c = client(**kw)
                if conn_id(c)[0] == cid:
                    return c
                others.append(c)
            return wait_for(one, 10, what="the reset connection to be taken again")
        finally:
            for o in others:
                o.close()
    c = client(database="test")
    first = conn_id(c)[0]
    with c.cursor() as cur:
        cur.execute("SET sql_mode = 'ANSI_QUOTES'")
        cur.execute("SET NAMES utf8mb4")
        cur.execute("SET @v = 1")
        cur.execute("CREATE TEMPORARY TABLE pool_tmp (a int)")
        cur.execute("SELECT GET_LOCK('pool_lock', 0)")
        cur.execute("USE mysql")
        cur.execute("SELECT @@character_set_client, DATABASE(), @@autocommit")
        assert cur.fetchone() == ("utf8mb4", "mysql", 0)
    c.close()
    c = taken(first, database="test", autocommit=True)
    with c.cursor() as cur:
        cur.execute("SELECT @@sql_mode, @@character_set_client, @@character_set_results, @@collation_connection, "
                    "DATABASE(), @v, @@autocommit, IS_USED_LOCK('pool_lock')")
        row = cur.fetchone()
        assert "ANSI_QUOTES" not in row[0] and row[1:] == ("latin1", "latin1", "latin1_swedish_ci", "test", None, 1,
                                                             None), row
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM pool_tmp")
        cur.execute("CREATE TABLE IF NOT EXISTS pool_tx (a int) ENGINE=InnoDB")
    c.close()
    # A client that leaves inside a transaction (pymysql's default, autocommit off: its first write began one)
    # is kept too: the reset rolls it back.
    c = client(database="test")
    left = conn_id(c)[0]
    with c.cursor() as cur:
        cur.execute("INSERT INTO pool_tx VALUES (1)")
        cur.execute("SELECT @@in_transaction")
        assert cur.fetchone() == (1,)
    c.close()
    c = taken(left, database="test", autocommit=True)
    with c.cursor() as cur:
        cur.execute("SELECT @@in_transaction, (SELECT count(*) FROM pool_tx)")
        assert cur.fetchone() == (0, 0)
        cur.execute("DROP TABLE pool_tx")
    c.close()
    # A start without a database: none cannot be chosen again after a USE, so such a session is not kept.
    c = client()
    alone = conn_id(c)[0]
    with c.cursor() as cur:
        cur.execute("USE test")
    c.close()
    c = client()
    assert conn_id(c)[0] != alone
    with c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
    c.close()
    # At a failover the old writer's kept connections are dropped: the next client is on the new writer.
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    c = engine.connect(port)
    assert conn_id(c)[1] == new.port
    engine.close(c)


def test_change_user_is_checked_by_repoint_and_moves_as_the_new_user(lab, start_repoint, tmp_path):
    """COM_CHANGE_USER (mysqlclient's change_user, Connector/C underneath; PHP's persistent connections use
    it): the client's proof is for repoint's challenge, so repoint checks it against auth_file and writes
    the request again for the member; the session then moves as the new user. A wrong password is refused
    natively and the session ends."""
    import MySQLdb
    import MySQLdb.connections  # noqa: F401
    eng = lab._engine("mysql")
    eng.q(lab.primary("mysql"), "CREATE USER IF NOT EXISTS 'other'@'%' IDENTIFIED BY 'other-pw'",
          "GRANT ALL PRIVILEGES ON test.* TO 'other'@'%'")
    lab.verify("mysql")
    users = lab.mysql_auth_file(str(tmp_path / "users.txt"))
    h = eng.q(lab.primary("mysql"), "SELECT authentication_string AS h FROM mysql.user WHERE user = 'other'")[0]["h"]
    with open(users, "a") as f:
        f.write('"other" "%s"\n' % h)
    rp = start_repoint(mysql={"auth": "repoint", "auth_file": users})
    port = rp.ports["mysql"]
    c = MySQLdb.connect(host="127.0.0.1", port=port, user="test", password="test", database="test")
    c.autocommit(True)

    def who():
        cur = c.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @@port")
        return cur.fetchone()
    assert who()[0] == "test@%"
    c.change_user("other", "other-pw", "test")
    assert who()[:2] == ("other@%", "test")
    lab.switchover("mysql")
    new = lab.primary("mysql")
    rp.wait_writer("mysql", f"127.0.0.1:{new.port}")
    assert who() == ("other@%", "test", new.port)   # moved, logged in as the new user
    with pytest.raises(MySQLdb.OperationalError) as e:
        c.change_user("other", "wrong", "test")
    assert e.value.args[0] == 1045
    c.close()


def test_a_session_the_new_writer_will_not_log_in_is_closed_logged_and_counted(lab, start_repoint, tmp_path):
    """A moved session whose login the new writer refuses (here: the user's password differs there, changed
    outside replication) ends at the move: the operator reads why at warn level, and it counts as unmovable
    (`login_failed`); the other sessions move as ever."""
    engine = ENGINES["mysql"]
    old = lab.primary("mysql")
    target = lab.node("mysql", lab.replicas("mysql")[0])
    direct = engine.connect_node(old)
    with direct.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute("CREATE USER IF NOT EXISTS 'mover'@'%s' IDENTIFIED BY 'mover'" % host)  # (no grants)
    engine.close(direct)
    lab.verify("mysql")
    users = tmp_path / "users.txt"
    users.write_text('"mover" "mover"\n"test" "test"\n')
    try:
        # (as the lab's admin: the replica is read-only)
        lab._engine("mysql").q(target, "SET sql_log_bin = 0",
                               *["ALTER USER 'mover'@'%s' IDENTIFIED BY 'elsewhere'" % h for h in ("%", "localhost")])
        rp = start_repoint(mysql={"auth": "repoint", "auth_file": str(users)})
        port = rp.ports["mysql"]
        mover = pymysql.connect(host="127.0.0.1", port=port, user="mover", password="mover")
        other = engine.connect(port)
        assert conn_id(mover)[1] == old.port and conn_id(other)[1] == old.port
        lab.switchover("mysql", target.name)
        rp.wait_writer("mysql", f"127.0.0.1:{target.port}")
        wait_for(lambda: 'reason="login_failed"' in rp.metrics(), 20, what="the failed move to be counted")
        assert conn_id(other)[1] == target.port                  # moved
        with pytest.raises(pymysql.err.OperationalError):
            conn_id(mover)                                        # closed at the move
        log = rp.logtext()
        assert "could not move" in log and "Access denied for user 'mover'" in log, log[-3000:]
        assert "WARN" in [l for l in log.splitlines() if "could not move" in l][0].upper(), log[-3000:]
        engine.close(other)
    finally:
        direct = engine.connect_node(lab.primary("mysql"))
        with direct.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute("DROP USER IF EXISTS 'mover'@'%s'" % host)
        engine.close(direct)
        lab.verify("mysql")
