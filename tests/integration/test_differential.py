"""The differential suite: the same client program runs directly against the lab's writer and
through repoint in every mode there is (plain; multiplex = on for Redis), and what the client saw
must be the same -- replies byte for byte, errors, timing classes (immediate or blocked), whether a
connection closed. New modes (TLS, cluster) join by adding to MODES.

Differences inherent to a proxy are left out of the transcripts on purpose, each for a reason:
"""
import os
import socket
import threading
import time

import psycopg2
import pymysql
import pytest

from conftest import wait_for

INHERENT = {
    "client address": "the server sees repoint's address (CLIENT LIST addr, inet_client_addr())",
    "connection ids": "two connections have two ids (CLIENT ID, pg_backend_pid(), CONNECTION_ID()): "
                      "compared within one connection only (does it change?), never across targets",
    "server-side connection count": "with multiplex = on the server sees shared connections "
                                    "(CLIENT LIST, INFO clients)",
}

MODES = {"plain": {}, "multiplex": {"redis": {"multiplex": "on"}}}


def timing(seconds):
    return "blocked" if seconds >= 0.5 else "immediate"


class Raw:
    """A raw RESP connection: send bytes, read exactly what a reply needs (no client library)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        """One reply, as its raw bytes (every RESP2/RESP3 type)."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in b"$=!" and rest != b"-1":
            return line + b"\r\n" + self._exact(int(rest)) + b"\r\n"
        if t in b"*~>%|" and rest != b"-1":
            n = int(rest) * (2 if t in b"%|" else 1)
            return line + b"\r\n" + b"".join(self.reply() for _ in range(n))
        return line + b"\r\n"

    def call(self, *args):
        self.send(*args)
        return self.reply()

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


# ---- Redis scenarios: fn(port, key) -> transcript --------------------------------------------------

def rd_basics(port, k):
    c = Raw(port)
    t = [c.call("SET", k, "v"), c.call("GET", k), c.call("INCR", k), c.call("GET", k + ":none"),
         c.call("MGET", k, k + ":none"), c.call("LPUSH", k, "x"), c.call("NOSUCHCOMMAND"),
         c.call("DEL", k), c.call("EXISTS", k), c.call("PING"), c.call("ECHO", b"\x00\xff bin")]
    c.close()
    return t


def rd_pipeline(port, k):
    c = Raw(port)
    for i in range(100):
        c.send("RPUSH", k, i) if i % 2 else c.send("LRANGE", k, 0, -1)
    t = [c.reply() for _ in range(100)]
    t.append(c.call("DEL", k))
    c.close()
    return t


def rd_transaction(port, k):
    c, other = Raw(port), Raw(port)
    t = [c.call("MULTI"), c.call("SET", k, 1), c.call("INCR", k), c.call("EXEC"),
         c.call("WATCH", k), other.call("SET", k, 9), c.call("MULTI"), c.call("INCR", k), c.call("EXEC"),
         c.call("DEL", k)]
    c.close()
    other.close()
    return t


def rd_pubsub(port, k):
    sub, pub = Raw(port), Raw(port)
    t = [sub.call("SUBSCRIBE", k)]
    wait_for(lambda: pub.call("PUBSUB", "NUMSUB", k).endswith(b":1\r\n"), 5, what="the subscription")
    t += [pub.call("PUBLISH", k, "hello"), sub.reply(), sub.call("UNSUBSCRIBE", k)]
    sub.close()
    pub.close()
    return t


def rd_resp3_tracking(port, k):
    c, other = Raw(port), Raw(port)
    hello = c.call("HELLO", 3)
    t = [hello[:1], c.call("HSET", k, "a", 1), c.call("HGETALL", k), c.call("GET", k + ":none"),
         c.call("CLIENT", "TRACKING", "on"), c.call("HGET", k, "a"), other.call("HSET", k, "a", 2), c.reply(),
         c.call("DEL", k)]
    c.close()
    other.close()
    return t


def rd_blocking(port, k):
    c, other = Raw(port), Raw(port)
    t0 = time.time()
    t = [c.call("BLPOP", k, 1), timing(time.time() - t0)]
    c.send("BLPOP", k, 5)
    wait_for(lambda: b"cmd=blpop" in other.call("CLIENT", "LIST"), 5, what="the blocked pop")
    t0 = time.time()
    t += [other.call("RPUSH", k, "x"), c.reply(), timing(time.time() - t0)]
    c.close()
    other.close()
    return t


def rd_inline_and_errors(port, k):
    c = Raw(port)
    c.s.sendall(b"PING\r\nSET " + k.encode() + b" inline\r\nGET " + k.encode() + b"\r\n")
    t = [c.reply(), c.reply(), c.reply(), c.call("DEL", k)]
    c.s.sendall(b"*1\r\n$4\r\nPING\r\n")
    c.s.shutdown(socket.SHUT_WR)
    t += [c.reply(), c.closed()]
    c.close()
    return t


def rd_client_kill(port, k):
    c, other = Raw(port), Raw(port)
    ids = [c.call("CLIENT", "ID"), c.call("CLIENT", "ID")]
    t = [ids[0] == ids[1]]                     # the id does not change within a connection
    cid = ids[0][1:-2]
    t.append(other.call("CLIENT", "KILL", "ID", cid))
    t.append(c.closed())
    other.close()
    return t


REDIS = [rd_basics, rd_pipeline, rd_transaction, rd_pubsub, rd_resp3_tracking, rd_blocking,
         rd_inline_and_errors, rd_client_kill]


@pytest.fixture(scope="module")
def proxies(lab, tmp_path_factory):
    """One repoint per mode, for the whole module."""
    from conftest import Repoint, free_port
    started = {}
    for mode, overrides in MODES.items():
        d = tmp_path_factory.mktemp(mode)
        cfg = str(d / "repoint.ini")
        admin = free_port()
        ports = lab.write_config(cfg, admin=f"127.0.0.1:{admin}", **overrides)
        ports.pop("admin", None)
        rp = Repoint(cfg, admin, ports)
        wait_for(lambda: rp.status(), 10, what="admin API")
        for name in ports:
            rp.wait_writer(name)
        started[mode] = rp
    yield started
    for rp in started.values():
        rp.stop()


def same(direct, proxied, what):
    assert proxied == direct, ("%s: what a client saw differs\n  direct:  %r\n  proxied: %r" % (what, direct, proxied))


@pytest.mark.parametrize("scenario", REDIS, ids=[f.__name__ for f in REDIS])
@pytest.mark.parametrize("mode", MODES)
def test_redis(lab, proxies, mode, scenario):
    key = f"diff:{scenario.__name__}:{mode}:{os.getpid()}"
    direct = scenario(lab.primary("redis").port, key)
    proxied = scenario(proxies[mode].ports["redis"], key)
    same(direct, proxied, f"{scenario.__name__} through repoint ({mode})")


# ---- Postgres scenarios: fn(port, table) -> transcript --------------------------------------------

def pg_connect(port):
    c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10)
    c.autocommit = True
    return c


def pg_protocol_corners(port, tbl):
    c = pg_connect(port)
    cur = c.cursor()
    t = []
    cur.execute(f"DROP TABLE IF EXISTS {tbl}")
    cur.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v text, b bytea)")
    cur.execute(f"INSERT INTO {tbl} VALUES (%s, %s, %s)", (1, "o'ne", psycopg2.Binary(b"\x00\x01" * 1000)))
    cur.execute(f"SELECT id, v, length(b) FROM {tbl} WHERE id = %s", (1,))
    t.append(cur.fetchall())
    import io
    cur.copy_expert(f"COPY {tbl} (id, v) FROM STDIN", io.StringIO("".join(f"{i}\tv{i}\n" for i in range(2, 20002))))
    out = io.StringIO()
    cur.copy_expert(f"COPY (SELECT id, v FROM {tbl} ORDER BY id) TO STDOUT", out)
    t.append(len(out.getvalue()))
    c.notices.clear()
    cur.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
    t.append([n.strip() for n in c.notices])
    cur.execute("SET application_name = 'diff'")
    cur.execute("SHOW application_name")
    t.append(cur.fetchone())
    c.autocommit = False
    try:
        cur.execute("SELECT 1/0")
    except psycopg2.Error as e:
        t.append(e.pgcode)
    c.rollback()
    cur.execute("SELECT repeat('x', 1 << 20)")
    t.append(len(cur.fetchone()[0]))
    c.rollback()
    c.autocommit = True
    cur.execute("SELECT pg_backend_pid()")
    pid1 = cur.fetchone()
    cur.execute("SELECT pg_backend_pid()")
    t.append(pid1 == cur.fetchone())
    cur.execute(f"DROP TABLE {tbl}")
    c.close()
    return t


def pg_listen_notify(port, tbl):
    a, b = pg_connect(port), pg_connect(port)
    a.cursor().execute(f"LISTEN {tbl}")
    b.cursor().execute(f"NOTIFY {tbl}, 'payload'")
    wait_for(lambda: a.poll() or a.notifies, 5, what="the notification")
    t = [(n.channel == tbl, n.payload) for n in a.notifies]
    a.close()
    b.close()
    return t


def pg_cancel(port, tbl):
    c = pg_connect(port)
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    watcher = pg_connect(port)
    result = {}

    def run():
        t0 = time.time()
        try:
            c.cursor().execute("SELECT pg_sleep(10)")
            result["r"] = "finished"
        except psycopg2.Error as e:
            result["r"] = e.pgcode
        result["t"] = timing(time.time() - t0 - 0.2)

    th = threading.Thread(target=run)
    th.start()

    def active():
        with watcher.cursor() as w:
            w.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (pid,))
            return w.fetchone()[0] == 1
    # The proxied session's pid is on the member it runs on, which the watcher may not be on
    # (route = writer: it is).
    wait_for(active, 10, what="the query to run")
    c.cancel()
    th.join(15)
    t = [result.get("r"), result.get("t")]
    cur.execute("SELECT 1")
    t.append(cur.fetchone())
    c.close()
    watcher.close()
    return t


POSTGRES = [pg_protocol_corners, pg_listen_notify, pg_cancel]


@pytest.mark.parametrize("scenario", POSTGRES, ids=[f.__name__ for f in POSTGRES])
def test_postgres(lab, proxies, scenario):
    direct = scenario(lab.primary("postgres").port, f"diff_{scenario.__name__}_d_{os.getpid()}")
    proxied = scenario(proxies["plain"].ports["postgres"], f"diff_{scenario.__name__}_p_{os.getpid()}")
    same(direct, proxied, f"{scenario.__name__} through repoint")


# ---- MySQL scenarios ------------------------------------------------------------------------------

def my_connect(port, **kw):
    return pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                           connect_timeout=10, autocommit=True, **kw)


def my_corners(port, tbl):
    c = my_connect(port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    cur = c.cursor()
    t = []
    cur.execute(f"DROP TABLE IF EXISTS {tbl}; CREATE TABLE {tbl} (id INT PRIMARY KEY, v LONGTEXT); "
                f"INSERT INTO {tbl} VALUES (1, 'a'), (2, 'b'); SELECT COUNT(*) FROM {tbl}")
    while cur.nextset():
        pass
    cur.execute(f"SELECT id, v FROM {tbl} ORDER BY id")
    t.append(cur.fetchall())
    cur.execute(f"INSERT INTO {tbl} VALUES (3, REPEAT('x', 4 << 20))")
    cur.execute(f"SELECT LENGTH(v) FROM {tbl} WHERE id = 3")
    t.append(cur.fetchall())
    try:
        cur.execute(f"INSERT INTO {tbl} VALUES (1, 'dup')")
    except pymysql.err.IntegrityError as e:
        t.append(e.args[0])
    cur.execute("SELECT CONNECTION_ID()")
    cid = cur.fetchone()
    cur.execute("SELECT CONNECTION_ID()")
    t.append(cid == cur.fetchone())
    ss = my_connect(port, cursorclass=pymysql.cursors.SSCursor)
    with ss.cursor() as sc:
        sc.execute("SELECT seq FROM seq_1_to_50000")
        t.append(sum(1 for _ in sc))
    ss.close()
    cur.execute(f"DROP TABLE {tbl}")
    c.close()
    return t


def my_kill_query(port, tbl):
    c, other = my_connect(port), my_connect(port)
    cur = c.cursor()
    cur.execute("SELECT CONNECTION_ID()")
    cid = cur.fetchone()[0]
    result = {}

    def run():
        t0 = time.time()
        try:
            c.cursor().execute("SELECT SLEEP(10)")
            result["r"] = c.cursor().fetchall() if False else "finished"
        except pymysql.err.OperationalError as e:
            result["r"] = e.args[0]
        result["t"] = timing(time.time() - t0 - 0.2)

    th = threading.Thread(target=run)
    th.start()
    oc = other.cursor()

    def running():
        oc.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s AND INFO LIKE 'SELECT SLEEP%%'",
                   (cid,))
        return oc.fetchone()[0] == 1
    wait_for(running, 10, what="the query to run")
    oc.execute(f"KILL QUERY {cid}")
    th.join(15)
    t = [result.get("r"), result.get("t")]
    cur.execute("SELECT 1")
    t.append(cur.fetchall())
    c.close()
    other.close()
    return t


MYSQL = [my_corners, my_kill_query]


@pytest.mark.parametrize("scenario", MYSQL, ids=[f.__name__ for f in MYSQL])
def test_mysql(lab, proxies, scenario):
    direct = scenario(lab.primary("mysql").port, f"diff_{scenario.__name__}_d_{os.getpid()}")
    proxied = scenario(proxies["plain"].ports["mysql"], f"diff_{scenario.__name__}_p_{os.getpid()}")
    same(direct, proxied, f"{scenario.__name__} through repoint")


# ---- more corners: scripts, pauses, WAIT (Redis); pipeline mode (psycopg 3); LOAD DATA LOCAL and
# compression (MariaDB) ------------------------------------------------------------------------------

def rd_script_kill(port, k):
    """A long script: other clients get -BUSY, SCRIPT KILL ends it, everything goes on."""
    c, other = Raw(port), Raw(port)
    t = [other.call("CONFIG", "SET", "busy-reply-threshold", 100)]
    try:
        c.send("EVAL", "local t = redis.call('time')[1] while redis.call('time')[1] - t < 8 do end return 1", 0)
        wait_for(lambda: other.call("PING").startswith(b"-BUSY"), 10, what="the script to run")
        t += [other.call("PING")[:5], other.call("SCRIPT", "KILL"), c.reply()[:14], c.call("PING"),
              other.call("PING")]
    finally:
        other.call("CONFIG", "SET", "busy-reply-threshold", 5000)
    c.close()
    other.close()
    return t


def rd_pause_write(port, k):
    """CLIENT PAUSE WRITE: a write waits for it, another client's reads do not."""
    admin, w, r = Raw(port), Raw(port), Raw(port)
    t = [r.call("SET", k, "v"), admin.call("CLIENT", "PAUSE", 1000, "WRITE")]
    w.send("SET", k, "w")
    t0 = time.time()
    t += [r.call("GET", k), timing(time.time() - t0)]
    t0 = time.time()
    t += [w.reply(), timing(time.time() - t0 + 0.5), r.call("GET", k), r.call("DEL", k)]
    for c in (admin, w, r):
        c.close()
    return t


def rd_wait(port, k):
    c = Raw(port)
    t = [c.call("SET", k, "v"), c.call("WAIT", 2, 2000), c.call("DEL", k)]
    c.close()
    return t


REDIS_MORE = [rd_script_kill, rd_pause_write, rd_wait]


@pytest.mark.parametrize("scenario", REDIS_MORE, ids=[f.__name__ for f in REDIS_MORE])
@pytest.mark.parametrize("mode", MODES)
def test_redis_more(lab, proxies, mode, scenario):
    key = f"diff:{scenario.__name__}:{mode}:{os.getpid()}"
    direct = scenario(lab.primary("redis").port, key)
    proxied = scenario(proxies[mode].ports["redis"], key)
    same(direct, proxied, f"{scenario.__name__} through repoint ({mode})")


def pg3_pipeline(port, tbl):
    import psycopg
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {tbl}")
        c.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY)")
        with c.pipeline():
            for i in range(200):
                c.execute(f"INSERT INTO {tbl} VALUES (%s)", (i,))
            cur = c.execute(f"SELECT count(*), sum(id) FROM {tbl}")
        t = [cur.fetchone()]
        c.execute(f"PREPARE q AS SELECT id FROM {tbl} WHERE id = $1")
        t.append(c.execute("EXECUTE q(7)").fetchone())
        t.append(c.execute(f"SELECT id FROM {tbl} WHERE id = %s", (8,), prepare=True).fetchone())
        t.append(c.execute(f"SELECT id FROM {tbl} WHERE id = %s", (8,), binary=True).fetchone())
        c.execute(f"DROP TABLE {tbl}")
    return t


@pytest.mark.parametrize("scenario", [pg3_pipeline], ids=["pg3_pipeline"])
def test_postgres_psycopg3(lab, proxies, scenario):
    direct = scenario(lab.primary("postgres").port, f"diff_pg3_d_{os.getpid()}")
    proxied = scenario(proxies["plain"].ports["postgres"], f"diff_pg3_p_{os.getpid()}")
    same(direct, proxied, "psycopg 3 pipeline, prepared and binary through repoint")


def my_load_data_local(port, tbl, tmpdir):
    path = os.path.join(tmpdir, f"{tbl}.tsv")
    with open(path, "w") as f:
        f.writelines(f"{i}\tv{i}\n" for i in range(5000))
    c = my_connect(port, local_infile=True)
    cur = c.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {tbl}")
    cur.execute(f"CREATE TABLE {tbl} (id INT PRIMARY KEY, v TEXT)")
    cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {tbl}")
    cur.execute(f"SELECT COUNT(*), SUM(id) FROM {tbl}")
    t = [cur.fetchall()]
    cur.execute(f"DROP TABLE {tbl}")
    c.close()
    return t


def my_compressed_cli(port, tbl, tmpdir):
    import subprocess
    out = subprocess.run(["mysql", "--compress", "-h127.0.0.1", f"-P{port}", "-utest", "-ptest", "test", "-N", "-e",
                          "SELECT REPEAT('ab', 100000) = REPEAT('ab', 100000), 1+1; "
                          "PREPARE s FROM 'SELECT ? * 2'; SET @a = 21; EXECUTE s USING @a;"],
                         capture_output=True, text=True, timeout=30)
    return [out.returncode, out.stdout, out.stderr]


@pytest.mark.parametrize("scenario", [my_load_data_local, my_compressed_cli], ids=["load_data_local", "compressed_cli"])
def test_mysql_more(lab, proxies, scenario, tmp_path):
    direct = scenario(lab.primary("mysql").port, f"diff_{scenario.__name__}_d_{os.getpid()}", str(tmp_path))
    proxied = scenario(proxies["plain"].ports["mysql"], f"diff_{scenario.__name__}_p_{os.getpid()}", str(tmp_path))
    same(direct, proxied, f"{scenario.__name__} through repoint")
