"""Network faults between repoint and the members, made with network namespaces (scripts/labkit/netns.py):
each member lives in its own namespace behind a veth pair with a private 10.231.N.0/30; repoint and the clients
stay in the root namespace. Partition = the member's link down, refusal = nft reject with a TCP reset,
a member that accepts and never answers = a silent socket server at a member address. Redis for every
fault; the writer's partition with Postgres and MariaDB too."""
import os
import socket
import subprocess
import time

import pytest
import redis

from conftest import Repoint, free_port, wait_for
from labkit.netns import NetNS

SILENT = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('%s',6379));s.listen(64);c=[]\nwhile True: c.append(s.accept()[0])\n")


@pytest.fixture
def netns(tmp_path):
    made = []

    def make(index):
        ns = NetNS(index)
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in made:
            ns.close()


@pytest.fixture
def repoint_on(tmp_path):
    started = []

    def start(members, protocol="redis", member_port=6379, **over):
        os.chmod(tmp_path, 0o755)
        admin, port = free_port(), free_port()
        kv = {"protocol": protocol, "listen": "127.0.0.1:%d" % port, "route": "writer",
              "members": ", ".join("%s:%d" % (m, member_port) for m in members), "probe_interval": "100ms",
              "probe_timeout": "500ms", "hold_timeout": "15s", "drain": "graceful", "drain_timeout": "2s"}
        if protocol == "postgres":
            kv.update(probe_user="postgres", probe_database="postgres")
        if protocol == "mysql":
            kv.update(probe_user="test", probe_password="test", probe_database="test")
        kv.update(over)
        cfg = str(tmp_path / ("repoint-%d.ini" % len(started)))
        with open(cfg, "w") as f:
            f.write("[repoint]\nadmin = 127.0.0.1:%d\nlog_level = info\n\n[service %s]\n" % (admin, protocol))
            f.write("".join("%s = %s\n" % kv_ for kv_ in kv.items()))
        rp = Repoint(cfg, admin, {protocol: port})
        started.append(rp)
        wait_for(lambda: rp.status(), 10, what="repoint's admin API")
        return rp

    try:
        yield start
    finally:
        for rp in started:
            rp.stop()


def client(rp, timeout=10):
    return redis.Redis("127.0.0.1", rp.ports["redis"], socket_timeout=timeout, decode_responses=True)


def direct(ns):
    return redis.Redis(ns.addr, 6379, socket_timeout=3, decode_responses=True)


def member(rp, addr):
    for m in rp.service("redis")["members"]:
        if m["address"].startswith(addr + ":"):
            return m
    raise KeyError(addr)


def test_writer_partitioned_fails_over_and_old_writer_gets_nothing(netns, repoint_on, tmp_path):
    a, b = netns(0), netns(1)
    a.redis(str(tmp_path))
    b.redis(str(tmp_path), replicaof=(a.addr, 6379))  # no route between namespaces: a replica in name only
    rp = repoint_on([a.addr, b.addr])
    rp.wait_writer("redis", "%s:6379" % a.addr)
    c = client(rp)
    assert c.set("before", "1")
    a.link_down()
    wait_for(lambda: rp.service("redis")["writer_ready"] is False, 10, what="repoint to declare the writer lost")
    t0 = time.monotonic()
    held = {}

    def late_client():
        held["v"] = client(rp).set("after", "held")

    import threading
    th = threading.Thread(target=late_client)
    th.start()
    direct(b).execute_command("REPLICAOF", "NO", "ONE")
    rp.wait_writer("redis", "%s:6379" % b.addr, timeout=15)
    th.join(20)
    assert held.get("v") is True, "a client arriving during the outage was held then served"
    for i in range(20):
        assert client(rp).set("k%d" % i, i)
    assert direct(b).get("after") == "held" and direct(b).get("k19") == "19"
    a.heal()
    wait_for(lambda: direct(a).ping(), 10, what="the old writer reachable again")
    assert direct(a).get("before") == "1"
    assert direct(a).get("after") is None and direct(a).keys("k*") == [], "no write reached the old writer"
    assert time.monotonic() - t0 < 30


def test_silent_member_never_becomes_writer(netns, repoint_on, tmp_path):
    a, s = netns(2), netns(3)
    a.redis(str(tmp_path))
    s.spawn(["/usr/bin/python3", "-c", SILENT % s.addr], str(tmp_path / "silent.log"))
    wait_for(lambda: socket.create_connection((s.addr, 6379), 1).close() or True, 10, what="the silent server")
    rp = repoint_on([s.addr, a.addr])
    rp.wait_writer("redis", "%s:6379" % a.addr)
    for _ in range(3):  # several probe rounds against the silent member
        for i in range(10):
            assert client(rp).set("s%d" % i, i)
        assert rp.writer("redis") == "%s:6379" % a.addr
        time.sleep(0.5)  # let probes to the silent member time out (probe_timeout 500ms)
    m = member(rp, s.addr)
    assert m.get("role") not in ("writer", "primary", "master"), m


def test_refused_replica_does_not_disturb_writer_routing(netns, repoint_on, tmp_path):
    a, b = netns(4), netns(5)
    a.redis(str(tmp_path))
    b.redis(str(tmp_path), replicaof=(a.addr, 6379))
    rp = repoint_on([a.addr, b.addr])
    rp.wait_writer("redis", "%s:6379" % a.addr)
    b.reject()
    with pytest.raises(redis.ConnectionError):
        direct(b).ping()
    for i in range(50):
        assert client(rp).set("r%d" % i, i)
    assert rp.service("redis")["writer_ready"] and rp.writer("redis") == "%s:6379" % a.addr
    assert direct(a).get("r49") == "49"


def test_writer_black_holing_after_accept_sessions_drained(netns, repoint_on, tmp_path):
    a, b = netns(6), netns(7)
    a.redis(str(tmp_path))
    b.redis(str(tmp_path), replicaof=(a.addr, 6379))
    rp = repoint_on([a.addr, b.addr], drain_timeout="2s")
    rp.wait_writer("redis", "%s:6379" % a.addr)
    stuck = socket.create_connection(("127.0.0.1", rp.ports["redis"]), 5)
    stuck.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n")
    assert stuck.recv(100) == b"+OK\r\n"  # a session on the writer
    a.drop()  # from here on the writer answers nothing, established connections included
    stuck.sendall(b"*3\r\n$3\r\nSET\r\n$5\r\nstuck\r\n$1\r\n1\r\n")  # in flight into the black hole
    wait_for(lambda: rp.service("redis")["writer_ready"] is False, 10, what="repoint to declare the writer lost")
    direct(b).execute_command("REPLICAOF", "NO", "ONE")
    rp.wait_writer("redis", "%s:6379" % b.addr, timeout=15)
    t0 = time.monotonic()
    stuck.settimeout(20)
    try:
        got = stuck.recv(200)
    except ConnectionResetError:
        got = b""
    waited = time.monotonic() - t0
    assert got == b"" or got.startswith(b"-"), got  # closed (or told an error), never a made-up +OK
    assert waited < 10, "the stuck session was ended by drain_timeout (2s), not left to the client (%.1fs)" % waited
    for i in range(10):
        assert client(rp).set("n%d" % i, i)
    assert direct(b).get("n9") == "9"
    assert direct(b).get("stuck") is None, "the request in the black hole was not sent again to the new writer"


class StallingRelay:
    """An HTTP relay in front of the lab's AWS emulator. While `stall` is set it answers each request with the
    status line, the headers (full Content-Length) and half the body, then goes silent until cleared."""

    def __init__(self, upstream):
        import http.client
        import http.server
        import threading
        import urllib.parse
        up = urllib.parse.urlparse(upstream)
        self.stall, self.release = threading.Event(), threading.Event()
        relay = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                c = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                out = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if relay.stall.is_set():
                    self.wfile.write(out[:len(out) // 2])
                    self.wfile.flush()
                    relay.release.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(out)

            do_GET = do_POST = _any

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def test_control_plane_hanging_mid_response_keeps_last_topology(lab, tmp_path):
    """Each API attempt times out after [aws] request_timeout and is tried max_attempts times (10 s and 5 by
    default: about a minute); here 1 s and 2, so the hung control plane shows in /status within seconds.
    Routing goes on with probes meanwhile."""
    from test_sources import start_sources
    url = lab.aws_up(delays={"promote": 0.3, "settle": 0.3})
    saved = dict(os.environ)
    os.environ.update(lab.aws_env())
    os.environ.pop("AWS_PROFILE", None)
    relay = StallingRelay(url)
    rp = None
    try:
        rp = start_sources(tmp_path, relay.url, {"ec": "protocol = redis\nsource = elasticache:lab-redis\n"},
                           poll="200ms", aws_extra="request_timeout = 1s\nmax_attempts = 2\n")
        writer = rp.wait_writer("ec")
        relay.stall.set()
        t0 = time.time()
        wait_for(lambda: rp.service("ec")["source"]["last_error"] is not None, 30,
                 what="the hung poll reported as the source error")
        assert time.time() - t0 < 15, "2 attempts of 1 s (and a backoff) took %.1f s" % (time.time() - t0)
        assert rp.writer("ec") == writer and rp.service("ec")["writer_ready"], "kept the last topology"
        c = redis.Redis("127.0.0.1", rp.ports["ec"], socket_timeout=10)
        for i in range(10):
            assert c.set("cp%d" % i, i)
        c.close()
        before = rp.service("ec")["source"]["last_poll_at"]  # set by successful polls only; last_error stays
        relay.stall.clear()
        relay.release.set()
        wait_for(lambda: rp.service("ec")["source"]["last_poll_at"] != before, 45, what="a successful poll again")
        assert rp.writer("ec") == writer
    finally:
        relay.close()
        if rp is not None:
            rp.stop()
        lab.aws_down()
        os.environ.clear()
        os.environ.update(saved)


def pg_client(rp, timeout=10):
    import psycopg2
    c = psycopg2.connect(host="127.0.0.1", port=rp.ports["postgres"], user="postgres", dbname="postgres",
                         connect_timeout=timeout)
    c.autocommit = True
    return c


def pg_direct(ns):
    import psycopg2
    c = psycopg2.connect(host=ns.addr, port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    c.autocommit = True
    return c


def pg_rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else None


def test_postgres_writer_partitioned_fails_over_and_old_writer_gets_nothing(netns, repoint_on, tmp_path):
    """The same partition with Postgres: a writer whose link goes down, a standby promoted. A client that
    arrives during the outage is held and served by the new writer; the session left on the old writer is
    closed (not left hanging on a dead link); nothing reaches the old writer."""
    import psycopg2
    a, b = netns(8), netns(9)
    a.postgres(str(tmp_path))
    b.postgres(str(tmp_path), standby=True)  # in recovery: a standby in name only (no route between namespaces)
    rp = repoint_on([a.addr, b.addr], protocol="postgres", member_port=5432)
    rp.wait_writer("postgres", "%s:5432" % a.addr)
    old = pg_client(rp)
    pg_rows(old, "CREATE TABLE t (v text)")
    pg_rows(old, "INSERT INTO t VALUES ('before')")
    a.link_down()
    wait_for(lambda: rp.service("postgres")["writer_ready"] is False, 10, what="repoint to declare the writer lost")
    t0 = time.monotonic()
    held = {}

    def late_client():
        try:
            c = pg_client(rp, timeout=30)
            pg_rows(c, "CREATE TABLE IF NOT EXISTS t (v text); INSERT INTO t VALUES ('after')")
            held["v"] = True
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            held["v"] = e

    import threading
    th = threading.Thread(target=late_client)
    th.start()
    pg_rows(pg_direct(b), "SELECT pg_promote()")
    rp.wait_writer("postgres", "%s:5432" % b.addr, timeout=15)
    th.join(30)
    assert held.get("v") is True, "a client arriving during the outage was held then served: %r" % held.get("v")
    # The session left on the old writer is closed by repoint, not left to TCP's timeouts.
    late = {}

    def late_query():
        try:
            pg_rows(old, "INSERT INTO t VALUES ('late')")
            late["v"] = "answered"
        except psycopg2.Error as e:
            late["v"] = e
    th = threading.Thread(target=late_query, daemon=True)
    th.start()
    th.join(10)
    assert isinstance(late.get("v"), psycopg2.Error), "the old session: %r (still waiting if None)" % late.get("v")
    for i in range(20):
        c = pg_client(rp)
        pg_rows(c, "INSERT INTO t VALUES ('k%d')" % i)
        c.close()
    assert sorted(r[0] for r in pg_rows(pg_direct(b), "SELECT v FROM t")) == sorted(["after"] + ["k%d" % i for i in range(20)])
    a.heal()
    wait_for(lambda: pg_direct(a), 10, what="the old writer reachable again")
    assert [r[0] for r in pg_rows(pg_direct(a), "SELECT v FROM t")] == ["before"], "no write reached the old writer"
    assert time.monotonic() - t0 < 40


def my_client(rp, timeout=10, **kw):
    import pymysql
    return pymysql.connect(host="127.0.0.1", port=rp.ports["mysql"], user="test", password="test", database="test",
                           connect_timeout=timeout, autocommit=True, **kw)


def my_direct(ns):
    import pymysql
    return pymysql.connect(host=ns.addr, port=3306, user="test", password="test", database="test",
                           connect_timeout=3, autocommit=True)


def my_rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_mariadb_writer_partitioned_fails_over_and_old_writer_gets_nothing(netns, repoint_on, tmp_path):
    """And with MariaDB: the writer's link goes down, a read-only server is made writable."""
    import pymysql
    import threading
    a, b = netns(10), netns(11)
    a.mariadb(str(tmp_path))
    b.mariadb(str(tmp_path), read_only=True)
    my_rows(my_direct(a), "CREATE TABLE t (v VARCHAR(16))")  # b gets it when it is the writer
    rp = repoint_on([a.addr, b.addr], protocol="mysql", member_port=3306)
    rp.wait_writer("mysql", "%s:3306" % a.addr)
    old = my_client(rp, read_timeout=30)
    my_rows(old, "INSERT INTO t VALUES ('before')")
    a.link_down()
    wait_for(lambda: rp.service("mysql")["writer_ready"] is False, 10, what="repoint to declare the writer lost")
    t0 = time.monotonic()
    held = {}

    def late_client():
        try:
            c = my_client(rp, timeout=30)
            my_rows(c, "CREATE TABLE IF NOT EXISTS t (v VARCHAR(16))")
            my_rows(c, "INSERT INTO t VALUES ('after')")
            held["v"] = True
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            held["v"] = e

    th = threading.Thread(target=late_client)
    th.start()
    b.mariadb_root("SET GLOBAL read_only = 0")
    rp.wait_writer("mysql", "%s:3306" % b.addr, timeout=15)
    th.join(30)
    assert held.get("v") is True, "a client arriving during the outage was held then served: %r" % held.get("v")
    late = {}

    def late_query():
        try:
            my_rows(old, "INSERT INTO t VALUES ('late')")
            late["v"] = "answered"
        except pymysql.MySQLError as e:
            late["v"] = e
    th = threading.Thread(target=late_query, daemon=True)
    th.start()
    th.join(10)
    assert isinstance(late.get("v"), pymysql.MySQLError), "the old session: %r (still waiting if None)" % late.get("v")
    for i in range(20):
        c = my_client(rp)
        my_rows(c, "INSERT INTO t VALUES ('k%d')" % i)
        c.close()
    assert sorted(r[0] for r in my_rows(my_direct(b), "SELECT v FROM t")) == sorted(["after"] + ["k%d" % i for i in range(20)])
    a.heal()
    wait_for(lambda: my_direct(a), 10, what="the old writer reachable again")
    assert [r[0] for r in my_rows(my_direct(a), "SELECT v FROM t")] == ["before"], "no write reached the old writer"
    assert time.monotonic() - t0 < 40
