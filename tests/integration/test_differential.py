"""Differential suite (issue 16): the same client program runs directly against the lab's writer and
through repoint in every mode that exists, and what the client saw must be the same: replies, errors
(type and text), timing classes, whether a client id changes within one connection.

Each scenario is a small function `scenario(target) -> transcript` (a list of (step, observation)).
`target.port` is where the client connects, `target.connect()` opens a client of the engine's usual
library. Modes: "plain" and "uring" (io = uring, the completion transport) for every engine, "multiplex"
for Redis. TLS and cluster modes are added by
extending MODES (a mode is a set of config overrides per engine).

Differences inherent to a proxy are normalized, and only these (INHERENT, with the reason):
"""
import difflib
import os
import socket
import subprocess
import tempfile
import threading
import time

import psycopg2
import pymysql
import pytest
import redis

from conftest import Repoint, free_port, wait_for

INHERENT = [
    ("client address", "the server sees repoint's address and port as the client's; scenarios never "
                       "record addr/laddr/host fields of CLIENT LIST, pg_stat_activity or PROCESSLIST"),
    ("connection / client / backend ids", "two separate connections (direct, proxied) get different ids "
                                          "from the server; ids are recorded as '<id>' and only whether "
                                          "an id changes within one connection is compared"),
    ("exact durations", "only timing classes are compared: immediate (< 0.5 s: generous, the test "
                        "machine is shared) vs blocked (>= 1 s); anything between is 'unclear'"),
    ("reset vs orderly close", "a server that closes with unread request bytes makes its kernel send a "
                               "reset; repoint closes its client side in order. Both are recorded as 'closed' "
                               "(what the client saw before the close is compared byte for byte)"),
    ("key / channel / table names", "each run uses its own names so the direct and the proxied run "
                                    "cannot see each other's data; names are not part of transcripts"),
]

MODES = {
    # Redis multiplexes by default: "plain" says off, so that both of its paths are compared.
    "plain": {"redis": {"multiplex": "off"}},
    "multiplex": {"redis": {"multiplex": "on"}},
    # The completion transport (io = uring): the same bytes, whatever moves them.
    "uring": {"redis": {"multiplex": "off", "io": "uring"}, "postgres": {"io": "uring"}, "mysql": {"io": "uring"}},
    # later: "tls": {...}, "cluster": {...}
}


def timing(seconds):
    if seconds < 0.5:
        return "immediate"
    if seconds >= 1.0:
        return "blocked"
    return "unclear"


def timed(fn, *a, **kw):
    """(result-or-error, timing class) of one call."""
    t = time.monotonic()
    try:
        r = fn(*a, **kw)
    except Exception as e:  # the error is part of what the client saw
        r = err(e)
    return r, timing(time.monotonic() - t)


def err(e):
    return f"{type(e).__module__}.{type(e).__name__}: {str(e).strip()}"


class Target:
    def __init__(self, engine, port, tag, direct_port):
        self.engine, self.port, self.tag, self.direct_port = engine, port, tag, direct_port
        self.n = 0
        self.shared = False     # True where clients share one server connection (multiplex)

    def name(self, base):
        """A name of this run's own (inherent: see INHERENT)."""
        self.n += 1
        return f"{base}_{self.tag}_{self.n}"

    def connect(self, **kw):
        if self.engine == "postgres":
            c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=10, **kw)
            c.autocommit = True
            return c
        if self.engine == "mysql":
            kw.setdefault("read_timeout", 30)
            return pymysql.connect(host="127.0.0.1", port=self.port, user="test", password="test",
                                   database="test", connect_timeout=10, autocommit=True, **kw)
        kw.setdefault("socket_timeout", 30)
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=10, max_connections=1, **kw)

    def pg3(self, **kw):
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               connect_timeout=10, autocommit=True, **kw)

    def raw(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


# ---- RESP (2 and 3) reader for raw sockets ------------------------------------------------------------
class Resp:
    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise ConnectionError("closed by peer")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        b, self.buf = self.buf[:n], self.buf[n + 2:]
        return b

    def read(self):
        """One reply as a type-tagged value: ('+', 'OK'), ('-', text), (':', 1), ('$', b'..'),
        ('_',) for RESP3 null, ('$-1',) / ('*-1',) for RESP2 nulls, ('*'|'%'|'~'|'>', [...])."""
        line = self._line()
        t, rest = chr(line[0]), line[1:].decode(errors="replace")
        if t in "+-":
            return (t, rest)
        if t in ":(,#":
            return (t, rest)
        if t == "_":
            return ("_",)
        if t in "$=!":
            n = int(rest)
            return ("$-1",) if n < 0 else (t, self._bytes(n))
        if t in "*~>%|":
            n = int(rest)
            if n < 0:
                return ("*-1",)
            k = n * 2 if t in "%|" else n
            items = [self.read() for _ in range(k)]
            if t == "|":    # attribute: skip it, the reply follows
                return self.read()
            return (t, items)
        return ("?", line)


def resp(target, timeout=10):
    return Resp(target.raw(timeout))


def recv_to_eof(sock, timeout=10):
    """Everything until the peer closes; 'still open' if it does not within timeout."""
    got, deadline = b"", time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            c = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:    # see INHERENT: a reset and an orderly close are both "closed"
            return got, "closed"
        if not c:
            return got, "closed"
        got += c
    return got, "still open"


# ---- Postgres -------------------------------------------------------------------------------------------
def pg_extended_params(t):
    with t.pg3() as c:
        r = c.execute("SELECT %s::int + %s, %s::text || 'x', %s::bytea", (1, 41, "a", b"\x00\xff")).fetchall()
        return [("params", repr(r))]


def pg_pipeline(t):
    out = []
    with t.pg3() as c:
        with c.pipeline():
            curs = [c.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        out.append(("pipeline", [cur.fetchone()[0] for cur in curs]))
        try:
            with c.pipeline():
                c.execute("SELECT 1")
                c.execute("SELECT 1/0")
                c.execute("SELECT 2")
        except Exception as e:
            out.append(("pipeline error", err(e)))
        out.append(("after", c.execute("SELECT 3").fetchone()))
    return out


def pg_prepared(t):
    with t.pg3() as c:
        vals = [c.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()[0] for i in range(8)]
        names = c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        return [("values", vals), ("server-side prepared statements", names > 0)]


def pg_copy(t):
    c = t.connect()
    tab = t.name("copy")
    cur = c.cursor()
    cur.execute(f"CREATE TEMP TABLE {tab} (i int, s text)")
    import io
    data = "".join(f"{i}\t{'v' * 60}{i}\n" for i in range(50000))    # ~3.5 MB
    cur.copy_expert(f"COPY {tab} FROM STDIN", io.StringIO(data))
    out = io.StringIO()
    cur.copy_expert(f"COPY {tab} TO STDOUT", out)
    cur.execute(f"SELECT count(*), sum(i) FROM {tab}")
    res = [("copy in+out equal", out.getvalue() == data), ("count", cur.fetchone())]
    c.close()
    return res


def pg_cancel(t):
    """Items 1 and 2: the cancel is answered at once, cancels the running query and nothing after it."""
    c = t.connect()
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid0 = cur.fetchone()[0]
    result = {}

    def run():
        result["q"] = timed(cur.execute, "SELECT pg_sleep(20)")
        result["end"] = time.monotonic()

    th = threading.Thread(target=run)
    th.start()
    probe = psycopg2.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="postgres", connect_timeout=10)
    probe.autocommit = True
    pc = probe.cursor()

    def sleeping():
        pc.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'")
        return pc.fetchone()[0] > 0
    wait_for(sleeping, 10, what="the pg_sleep to run")
    probe.close()
    cancel_at = time.monotonic()
    cancel = timed(c.cancel)
    th.join(30)
    # the query's time from the cancel on: its time before (the probe's connection, the wait) is
    # the machine's, not the cancel's
    q = result.get("q")
    out = [("cancel call", cancel),
           ("sleeping query", q and (q[0], timing(result["end"] - cancel_at)))]
    for i in range(5):
        out.append((f"next query {i}", timed(lambda: (cur.execute("SELECT %s", (i,)), cur.fetchone())[1])))
    cur.execute("SELECT pg_backend_pid()")
    out.append(("backend pid unchanged", cur.fetchone()[0] == pid0))
    c.close()
    return out


def pg_psql_cancel(t):
    """libpq's own cancel via psql's statement_timeout-free path: PQcancel through a timeout signal."""
    p = subprocess.Popen(["psql", "-X", "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres", "-d", "postgres",
                          "-c", "SELECT pg_sleep(20)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = t.connect()
    pc = probe.cursor()

    def sleeping():
        pc.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'")
        return pc.fetchone()[0] > 0
    wait_for(sleeping, 10, what="psql's pg_sleep to run")
    start = time.monotonic()
    p.send_signal(2)    # SIGINT: psql sends a CancelRequest
    outp, errp = p.communicate(timeout=30)
    cls = timing(time.monotonic() - start)
    probe.close()
    return [("psql exit", p.returncode), ("stderr", errp.strip()), ("cancel took", cls)]


def pg_notices(t):
    c = t.connect()
    cur = c.cursor()
    cur.execute("DO $$BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END$$")
    r = [("notices", [n.strip() for n in c.notices])]
    c.close()
    return r


def pg_listen_notify(t):
    a, b = t.connect(), t.connect()
    ch = t.name("ch")
    a.cursor().execute(f"LISTEN {ch}")
    b.cursor().execute(f"NOTIFY {ch}, 'one'")
    b.cursor().execute(f"SELECT pg_notify('{ch}', 'two')")

    def got():
        a.poll()
        return len(a.notifies) >= 2
    wait_for(got, 10, what="two notifications")
    r = [("payloads", [n.payload for n in a.notifies]), ("from other backend", a.notifies[0].pid != a.get_backend_pid())]
    a.close()
    b.close()
    return r


def pg_set_show(t):
    c = t.connect()
    cur = c.cursor()
    out = []
    for stmt in ("SET application_name = 'difftest'", "SET search_path = pg_catalog, public",
                 "SET TIME ZONE 'Europe/Paris'", "SET statement_timeout = '7s'"):
        cur.execute(stmt)
    for p in ("application_name", "search_path", "TimeZone", "statement_timeout"):
        cur.execute(f"SHOW {p}")
        out.append((p, cur.fetchone()[0]))
    out.append(("status params", {k: c.get_parameter_status(k) for k in ("application_name", "TimeZone")}))
    c.close()
    return out


def pg_large_value(t):
    c = t.connect()
    cur = c.cursor()
    v = os.urandom(16 << 20)
    cur.execute("SELECT length(%s::bytea), md5(%s::bytea)", (psycopg2.Binary(v), psycopg2.Binary(v)))
    r1 = cur.fetchone()
    cur.execute("SELECT decode(repeat('ab', 8388608), 'hex')")
    back = bytes(cur.fetchone()[0])
    c.close()
    import hashlib
    return [("sent", (r1[0], r1[1] == hashlib.md5(v).hexdigest())), ("received", (len(back), back[:4]))]


def pg_tx_error(t):
    c = t.connect()
    c.autocommit = False
    cur = c.cursor()
    out = []
    cur.execute("SELECT 1")
    try:
        cur.execute("SELECT 1/0")
    except Exception as e:
        out.append(("error", err(e)))
    try:
        cur.execute("SELECT 2")
    except Exception as e:
        out.append(("in failed tx", err(e)))
    c.rollback()
    cur.execute("SELECT 3")
    out.append(("after rollback", cur.fetchone()))
    c.close()
    return out


def pg_psql(t):
    p = subprocess.run(["psql", "-X", "-A", "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres", "-d", "postgres",
                        "-c", "SELECT 1 AS a, 'x' AS b", "-c", "SELECT 1/0", "-c", "SHOW server_version_num"],
                       capture_output=True, text=True, timeout=30)
    return [("rc", p.returncode), ("stdout", p.stdout), ("stderr", p.stderr)]


# ---- MySQL / MariaDB ------------------------------------------------------------------------------------
def my_multi(t):
    c = t.connect(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    cur = c.cursor()
    cur.execute("SELECT 1; SELECT 'two', 2; DO 0; SELECT 3")
    sets = [cur.fetchall()]
    while cur.nextset():
        sets.append(cur.fetchall())
    out = [("result sets", repr(sets))]
    try:
        cur.execute("SELECT 1; SELECT nosuchcol FROM dual; SELECT 3")
        while cur.nextset():
            pass
    except Exception as e:
        out.append(("error", err(e)))
    cur.execute("SELECT 4")
    out.append(("after", cur.fetchall()))
    c.close()
    return out


def mysql_cli(t, sql, *extra):
    p = subprocess.run(["mysql", "--no-defaults", "-h", "127.0.0.1", "-P", str(t.port), "-utest", "-ptest", "test",
                        "--batch", *extra, "-e", sql], capture_output=True, text=True, timeout=60)
    return [("rc", p.returncode), ("stdout", p.stdout), ("stderr", p.stderr)]


def my_prepare_sql(t):
    """Prepared statements through the mysql CLI's PREPARE/EXECUTE (text protocol; pymysql has no
    COM_STMT_PREPARE, and the binary protocol is not covered here)."""
    return mysql_cli(t, "PREPARE s FROM 'SELECT ? + 1, CONCAT(?, \"x\")'; SET @a = 41, @b = 'q'; "
                        "EXECUTE s USING @a, @b; EXECUTE s USING @b, @a; DEALLOCATE PREPARE s;")


def my_compress(t):
    return mysql_cli(t, "SELECT REPEAT('z', 100000) = REPEAT('z', 100000), LENGTH(REPEAT('ab', 300000)); "
                        "SELECT 1/0; SELECT nosuch;", "--compress")


def my_sscursor(t):
    c = t.connect(cursorclass=pymysql.cursors.SSCursor)
    cur = c.cursor()
    cur.execute("SELECT seq, REPEAT('r', 100) FROM seq_1_to_20000")
    n, s = 0, 0
    for row in cur:
        n += 1
        s += row[0]
    cur.close()
    cur = c.cursor()
    cur.execute("SELECT 'after'")
    r = [("rows", (n, s)), ("after", cur.fetchall())]
    c.close()
    return r


def my_load_data(t):
    c = t.connect(local_infile=True)
    cur = c.cursor()
    tab = t.name("ld")
    cur.execute(f"CREATE TEMPORARY TABLE {tab} (i int, s varchar(100))")
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for i in range(100000):
            f.write(f"{i}\t{'w' * 20}\n")
    try:
        r = timed(cur.execute, f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE {tab}")
        cur.execute(f"SELECT COUNT(*), SUM(i) FROM {tab}")
        out = [("load", r[0]), ("table", cur.fetchall())]
    finally:
        os.unlink(f.name)
        c.close()
    return out


def my_kill_query(t):
    a, b = t.connect(), t.connect()
    ca = a.cursor()
    ca.execute("SELECT CONNECTION_ID()")
    cid = ca.fetchone()[0]
    res = {}

    def run():
        res["q"] = timed(lambda: (ca.execute("SELECT SLEEP(20)"), ca.fetchall())[1])
    th = threading.Thread(target=run)
    th.start()
    cb = b.cursor()

    def sleeping():
        cb.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s AND INFO LIKE 'SELECT SLEEP%%'", (cid,))
        return cb.fetchone()[0] > 0
    wait_for(sleeping, 10, what="SLEEP to run")
    kill = timed(cb.execute, f"KILL QUERY {cid}")
    th.join(30)
    ca.execute("SELECT CONNECTION_ID() = %s, 5", (cid,))
    out = [("kill", kill[1]), ("sleep", res.get("q")), ("same connection, next query", ca.fetchall())]
    a.close()
    b.close()
    return out


def my_large_packet(t):
    c = t.connect(max_allowed_packet=64 << 20)
    cur = c.cursor()
    v = os.urandom(8 << 20)
    import hashlib
    # Named columns: an unnamed one is called after its expression, random bytes and all, which the
    # client library then fails to decode as UTF-8 (one run in a few), direct or not.
    cur.execute("SELECT LENGTH(%s) AS n, MD5(%s) AS h", (v, v))
    r = cur.fetchone()
    cur.execute("SELECT REPEAT('x', 12000000)")
    back = cur.fetchone()[0]
    c.close()
    return [("sent", (r[0], r[1] == hashlib.md5(v).hexdigest())), ("received", len(back))]


# ---- Redis ----------------------------------------------------------------------------------------------
def rd_resp3(t):
    r = resp(t)
    k = t.name("h")
    r.send("HELLO", "3")
    hello = r.read()
    fields = dict(zip([x[1] for x in hello[1][0::2]], hello[1][1::2]))
    out = [("hello", (hello[0], fields[b"proto"]))]
    for cmd in (("HSET", k, "a", "1"), ("HGETALL", k), ("GET", t.name("missing")), ("SMEMBERS", k + "s"),
                ("ZADD", k + "z", "1.5", "m"), ("ZSCORE", k + "z", "m"), ("CLIENT", "INFO")):
        v = r.read() if r.send(*cmd) is None else None
        if cmd[:2] == ("CLIENT", "INFO"):
            v = [f for f in v[1].decode().split() if f.startswith("resp=")]
        out.append((" ".join(cmd[:1]), v))
    r.s.close()
    return out


def rd_tracking(t):
    """Item 7 (under multiplex): CLIENT TRACKING pins a RESP3 session; it must stay RESP3 and get pushes."""
    r = resp(t)
    k = t.name("tk")
    r.send("HELLO", "3")
    r.read()
    r.send("CLIENT", "TRACKING", "on")
    out = [("tracking", r.read())]
    r.send("GET", k)
    out.append(("get missing", r.read()))
    r.send("CLIENT", "INFO")
    out.append(("client info resp", [f for f in r.read()[1].decode().split() if f.startswith("resp=")]))
    other = t.connect()
    other.set(k, "v")
    other.connection_pool.disconnect()
    r.s.settimeout(5)
    try:
        out.append(("push", r.read()))
    except Exception as e:
        out.append(("push", err(e)))
    r.s.close()
    return out


def rd_pubsub(t):
    a, b = t.connect(), t.connect()
    ch = t.name("ch")
    p = a.pubsub()
    p.subscribe(ch)
    out = [("subscribe", p.get_message(timeout=5)["type"])]
    b.publish(ch, "m1")
    b.publish(ch, "m2")
    msgs = []
    wait_for(lambda: (lambda m: m and msgs.append(m["data"]))(p.get_message(timeout=0.2)) or len(msgs) >= 2, 10,
             what="two messages")
    out.append(("messages", msgs))
    p.close()
    a.connection_pool.disconnect()
    b.connection_pool.disconnect()
    return out


def rd_blpop(t):
    c = t.connect()
    k = t.name("l")
    out = [("blpop timeout", timed(c.blpop, [k], 1))]
    c.rpush(k, "x")
    out.append(("blpop ready", timed(c.blpop, [k], 1)))
    c.connection_pool.disconnect()
    return out


def rd_xread_xadd(t):
    """Item 9: XREAD BLOCK $ sent before another client's XADD must see that entry."""
    out = []
    for i in range(5):
        s = t.name("s")
        a, b = resp(t, 15), resp(t, 15)
        a.send("PING")
        a.read()
        b.send("PING")
        b.read()
        t0 = time.monotonic()
        a.send("XREAD", "BLOCK", "5000", "STREAMS", s, "$")
        if not t.shared:
            # separate connections promise no order across clients: wait until the XREAD blocks. Only a
            # shared stream (multiplex) promises that the XADD sent after it is not run first (item 9).
            wait_for(lambda: blocked_clients(t.direct_port) >= 1, 10, what="the XREAD to block")
        b.send("XADD", s, "*", "f", str(i))
        b.read()
        v = a.read()
        got = "entry" if v[0] == "*" and v[1] else v
        out.append((f"round {i}", (got, timing(time.monotonic() - t0))))
        a.s.close()
        b.s.close()
    return out


def blocked_clients(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Resp(c)
        r.send("INFO", "clients")
        info = r.read()[1].decode()
    return int(info.split("blocked_clients:")[1].split()[0])


def rd_pause_write(t):
    """Item 8: while a write is held by CLIENT PAUSE WRITE, another client's read stays immediate."""
    admin, w, rdr = resp(t, 15), resp(t, 15), resp(t, 15)
    k = t.name("pk")
    for c in (w, rdr):
        c.send("PING")
        c.read()
    admin.send("CLIENT", "PAUSE", "3000", "WRITE")
    out = [("pause", admin.read())]
    t0 = time.monotonic()
    w.send("SET", k, "v")
    rdr.send("GET", k + "other")
    out.append(("other client's GET", (rdr.read(), timing(time.monotonic() - t0))))
    admin.send("CLIENT", "UNPAUSE")
    out.append(("unpause", admin.read()))
    out.append(("held SET", w.read()))
    for c in (admin, w, rdr):
        c.s.close()
    return out


def rd_client_kill(t):
    """Item 4: CLIENT KILL of a client's connection from another connection closes it for the client."""
    a, b = resp(t), resp(t)
    a.send("CLIENT", "ID")
    aid = a.read()[1]
    b.send("CLIENT", "KILL", "ID", aid)
    out = [("kill", b.read())]
    try:
        a.send("CLIENT", "ID")
        v = a.read()
        out.append(("victim's next command", "reply, id " + ("same" if v[1] == aid else "changed")))
    except Exception as e:
        out.append(("victim's next command", "connection closed" if isinstance(e, (ConnectionError, OSError)) else err(e)))
    a.s.close()
    b.s.close()
    return out


def rd_client_id_stable(t):
    c = resp(t)
    ids = set()
    for _ in range(20):
        c.send("CLIENT", "ID")
        ids.add(c.read()[1])
        c.send("SET", t.name("x"), "1")
        c.read()
    c.s.close()
    return [("client id changes", len(ids) != 1)]


def rd_script_kill(t):
    """Item 3: a long script; another connection gets -BUSY, SCRIPT KILL works, the writer stays usable."""
    try:
        return _script_kill(t)
    finally:    # never leave the script running for the scenarios after this one
        k = socket.create_connection(("127.0.0.1", t.direct_port), timeout=10)
        k.sendall(b"SCRIPT KILL\r\n")
        k.recv(1000)
        k.close()


def _script_kill(t):
    a, b = resp(t, 10), resp(t, 10)
    for c in (a, b):
        c.send("PING")
        c.read()
    a.send("EVAL", "local t = redis.call('TIME') while true do end", "0")
    try:
        busy = wait_for(lambda: (b.send("PING"), b.read())[1][0] == "-" and "BUSY", 10, what="the script to run")
    except AssertionError as e:
        return [("busy seen", str(e))]
    # the script keeps running for well over repoint's probe failure threshold (100 ms probes)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        b.send("PING")
        try:
            b.read()
        except Exception as e:
            return [("busy seen", busy), ("PING while the script runs", err(e))]
    b.s.settimeout(10)
    out = [("busy seen", busy), ("script kill", timed(lambda: (b.send("SCRIPT", "KILL"), b.read())[1]))]
    a.s.settimeout(10)
    try:
        v = a.read()
        out.append(("script reply", (v[0], v[1].split(" ")[0] if v[0] == "-" else v)))
    except Exception as e:
        out.append(("script reply", err(e)))
    c = resp(t)
    out.append(("new client ping", timed(lambda: (c.send("PING"), c.read())[1])))
    for x in (a, b, c):
        x.s.close()
    return out


def rd_too_big_inline(t):
    """Item 5: the server's error before it closes must reach the client."""
    s = t.raw()
    try:
        s.sendall(b"a" * (200 * 1024))
    except OSError:
        pass
    got, how = recv_to_eof(s)
    s.close()
    return [("received", got), ("then", how)]


def rd_half_close(t):
    """Item 6: PING then shutdown(SHUT_WR): the owed +PONG still arrives (30 rounds, both forms)."""
    out = []
    for i in range(30):
        s = t.raw()
        s.sendall(b"*1\r\n$4\r\nPING\r\n" if i % 2 == 0 else b"PING\r\n")
        s.shutdown(socket.SHUT_WR)
        got, how = recv_to_eof(s)
        s.close()
        out.append((f"round {i}", (got, how)))
    return out


def rd_wait(t):
    c = t.connect()
    c.set(t.name("w"), "1")
    n, cls = timed(c.execute_command, "WAIT", "1", "2000")
    c.connection_pool.disconnect()
    return [("wait", (n >= 1 if isinstance(n, int) else n, cls))]


def rd_multi_watch(t):
    a, b = t.connect(), t.connect()
    k = t.name("mw")
    out = []
    p = a.pipeline(transaction=True)
    p.set(k, "1").incr(k).get(k)
    out.append(("multi/exec", p.execute()))
    with a.pipeline() as p:
        p.watch(k)
        b.set(k, "other")
        p.multi()
        p.set(k, "mine")
        try:
            out.append(("watched exec", p.execute()))
        except Exception as e:
            out.append(("watched exec", err(e)))
    out.append(("value", a.get(k)))
    r = resp(t)
    for cmd in (("MULTI",), ("SET", k, "2"), ("NOSUCHCMD",), ("EXEC",), ("GET", k)):
        r.send(*cmd)
        v = r.read()
        out.append((cmd[0], v if v[0] != "-" else ("-", v[1].split(",")[0])))
    r.s.close()
    a.connection_pool.disconnect()
    b.connection_pool.disconnect()
    return out


def rd_resp3_pin_mux(t):
    """Item 7: a RESP3 session that pins (SELECT, MULTI) keeps RESP3: nulls are '_', maps are maps."""
    r = resp(t)
    k = t.name("r3")
    r.send("HELLO", "3")
    r.read()
    r.send("HSET", k, "f", "v")
    r.read()
    out = []
    for cmd in (("SELECT", "0"), ("GET", t.name("none")), ("HGETALL", k), ("CLIENT", "INFO")):
        r.send(*cmd)
        v = r.read()
        if cmd[0] == "CLIENT":
            v = [f for f in v[1].decode().split() if f.startswith("resp=")]
        out.append((cmd[0], v))
    r.send("MULTI")
    r.read()
    r.send("GET", t.name("none"))
    r.read()
    r.send("EXEC")
    out.append(("exec", r.read()))
    r.s.close()
    return out


SCENARIOS = {
    "postgres": [pg_extended_params, pg_pipeline, pg_prepared, pg_copy, pg_cancel, pg_psql_cancel, pg_notices,
                 pg_listen_notify, pg_set_show, pg_large_value, pg_tx_error, pg_psql],
    "mysql": [my_multi, my_prepare_sql, my_compress, my_sscursor, my_load_data, my_kill_query, my_large_packet],
    "redis": [rd_resp3, rd_tracking, rd_pubsub, rd_blpop, rd_xread_xadd, rd_pause_write, rd_client_kill,
              rd_client_id_stable, rd_script_kill, rd_too_big_inline, rd_half_close, rd_wait, rd_multi_watch,
              rd_resp3_pin_mux],
}
ENGINE_MODES = {"postgres": ["plain", "uring"], "mysql": ["plain", "uring"], "redis": ["plain", "multiplex", "uring"]}
CASES = [pytest.param(e, m, f, id=f"{e}-{m}-{f.__name__}")
         for e, fs in SCENARIOS.items() for m in ENGINE_MODES[e] for f in fs]


@pytest.fixture(scope="module")
def proxies(lab, tmp_path_factory):
    """One repoint per mode for the whole module (every writer known before the first scenario)."""
    d = tmp_path_factory.mktemp("diff")
    os.chmod(d, 0o755)
    rps = {}
    try:
        for mode, overrides in MODES.items():
            cfg = str(d / f"repoint-{mode}.ini")
            admin = free_port()
            ports = lab.write_config(cfg, admin=f"127.0.0.1:{admin}", **overrides)
            ports.pop("admin", None)
            rp = Repoint(cfg, admin, ports)
            rps[mode] = rp
            wait_for(lambda: rp.status(), 10, what="repoint's admin API")
            for name in ports:
                rp.wait_writer(name)
        yield rps
    finally:
        for rp in rps.values():
            rp.stop()


def normalized(transcript):
    """Run-specific names (tag _d_ / _p_, see INHERENT) made equal; everything else compared as is."""
    return [(k, repr(v).replace("_d_", "_X_").replace("_p_", "_X_")) for k, v in transcript]


def side_by_side(direct, proxied):
    a = [f"{k}: {v}"[:300] for k, v in direct]
    b = [f"{k}: {v}"[:300] for k, v in proxied]
    return "\n".join(difflib.unified_diff(a, b, "direct", "through repoint", lineterm="", n=50))


@pytest.mark.parametrize("engine,mode,scenario", CASES)
def test_same_as_direct(lab, proxies, engine, mode, scenario):
    rp = proxies[mode]
    rp.wait_writer(engine)
    primary = lab.primary(engine)
    direct = normalized(scenario(Target(engine, primary.port, "d", primary.port)))
    through = Target(engine, rp.ports[engine], "p", primary.port)
    through.shared = bool(MODES[mode].get(engine, {}).get("multiplex") == "on")
    proxied = normalized(scenario(through))
    assert direct == proxied, f"{scenario.__name__} ({mode}) differs:\n" + side_by_side(direct, proxied)
