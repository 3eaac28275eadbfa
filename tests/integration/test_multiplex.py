"""Redis multiplexing (`multiplex = on`): stateless commands of many clients share one connection to
the writer; the first stateful, blocking, inline, malformed or oversized command pins the session to
a connection of its own. Real clients (redis-py), raw sockets for what redis-py never sends."""
import os
import socket
import subprocess
import threading
import time

import pytest
import redis

from labkit.clients import ENGINES, WriterLoop, Redis as RedisEngine
from conftest import REPOINT_BIN, record_outage, wait_for

MUX = {"redis": {"multiplex": "on"}}
SHARE_MAX = 32 * 1024   # README: a larger command pins its session; smaller ones share


def client(port, **kw):
    """A redis-py client holding exactly one connection to repoint (used from one thread at a time)."""
    kw.setdefault("socket_timeout", 30)
    r = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=10, max_connections=1, **kw)
    assert r.ping()
    return r


def bye(*rs):
    """Really close redis-py clients (Redis.close() leaves pooled connections open)."""
    for r in rs:
        r.connection_pool.disconnect()


def direct(lab, **kw):
    """A client straight to the current Redis primary (not through repoint)."""
    return lab.primary("redis").connect(**kw)


def app_clients(conn):
    """Client connections the server of `conn` has open, other than replication links, probes and `conn`."""
    me = conn.client_id()
    return [c for c in conn.client_list() if not set(c["flags"]) & {"S", "M"}
            and c["name"] != "repoint-probe" and int(c["id"]) != me]


def svc(rp):
    return rp.service("redis")


def counters(rp):
    return svc(rp)["counters"]


def metric(rp, name):
    for line in rp.metrics().splitlines():
        if line.startswith(f'{name}{{service="redis"}} '):
            return int(line.split()[-1])
    raise AssertionError(f"{name} for service redis not in /metrics")


def raw(port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_exactly(s, expected):
    """Read len(expected) bytes and compare (a mismatch shows what came instead)."""
    got = b""
    while len(got) < len(expected):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == expected


def read_to_eof(s, timeout=10):
    """Everything until the peer closes; fails if it stays open past `timeout`."""
    got, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return got
        except socket.timeout:
            continue
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"connection still open after {timeout}s (received {got[:200]!r})")


def check_roundtrips(r, tag, n=20):
    """SET/GET of values unique to `tag`; every reply must be this client's own."""
    for i in range(n):
        v = f"{tag}-{i}-{os.urandom(4).hex()}".encode()
        assert r.set(f"mux:{tag}", v) is True
        assert r.get(f"mux:{tag}") == v


def messages(sub, n, timeout=10):
    """The next n messages of a redis-py PubSub."""
    got = []
    wait_for(lambda: got.append(sub.get_message(timeout=0.2)) or len([m for m in got if m]) >= n, timeout,
             what=f"{n} pub/sub message(s)")
    return [m for m in got if m]


def run_threads(fn, n):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append((i, repr(e)[:2000]))

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not any(t.is_alive() for t in ts), "client threads still running after 300 s"
    assert errors == [], errors


def test_concurrent_pipelines_share_one_connection_without_cross_talk(lab, start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    s = svc(rp)
    assert s["multiplex"] is True and "shared_connections" in s
    assert rp.service("postgres")["multiplex"] is False
    before = counters(rp)["shared_commands"]
    nclients, rounds = 20, 25
    clients = [client(port) for _ in range(nclients)]
    sent = [1] * nclients   # the PING of client()

    def work(i):
        r, k = clients[i], f"mux:c{i}:{time.time_ns()}"
        big = os.urandom(SHARE_MAX - 1024)   # as large as a shared command gets
        binary = b"\r\n*3\r\n$3\r\nSET\r\n\x00\xff" + f"{i}".encode() + b"\r\n"
        fields = {}
        for n in range(rounds):
            value = [big, b"", binary, f"v{i}-{n}".encode()][n % 4]
            hv = binary + str(n).encode()
            fields[f"f{n}".encode()] = hv
            p = r.pipeline(transaction=False)
            p.set(k + ":s", value)
            p.get(k + ":s")
            p.incr(k + ":n")
            p.lpush(k + ":l", f"{i}-{n}")
            p.lrange(k + ":l", 0, 2)
            p.hset(k + ":h", f"f{n}", hv)
            p.hgetall(k + ":h")
            p.mget(k + ":s", k + ":n", k + ":missing")
            p.get(k + ":missing")
            got = p.execute()
            sent[i] += len(got)
            assert got == [True, value, n + 1, n + 1,
                           [f"{i}-{m}".encode() for m in range(n, max(-1, n - 3), -1)],
                           1, fields, [value, str(n + 1).encode(), None], None], (i, n)

    run_threads(work, nclients)
    total = sum(sent)
    wait_for(lambda: counters(rp)["shared_commands"] - before >= total, 10,
             what=f"shared_commands to grow by at least {total}")
    assert metric(rp, "repoint_shared_commands_total") >= before + total
    s = svc(rp)
    assert s["shared_connections"] in (1, 2), s  # one for reads, one for writes
    assert s["counters"]["pinned"] == 0, s["counters"]
    assert metric(rp, "repoint_pinned_total") == 0
    # The server itself sees a handful of connections for 20 busy clients.
    d = direct(lab)
    conns = app_clients(d)
    assert len(conns) <= 3, conns
    bye(d, *clients)


def test_pinned_sessions_keep_their_connection_state(lab, start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    before = counters(rp)["pinned"]
    k = f"mux:pin:{time.time_ns()}"
    r, other = client(port), client(port)
    # Shared commands before the pin get their replies first, in order; SELECT applies after them.
    p = r.pipeline(transaction=False)
    p.set(k, "db0")
    p.get(k)
    p.execute_command("SELECT", 2)
    p.get(k)
    assert p.execute() == [True, b"db0", True, None]
    assert r.set(k, "v") is True
    assert r.get(k) == b"v"
    assert other.get(k) == b"db0"                  # db 0, through the shared connection
    assert r.execute_command("CLIENT", "SETNAME", "mux-pinned") in (True, b"OK")
    assert r.execute_command("CLIENT", "GETNAME") == b"mux-pinned"
    t = r.pipeline(transaction=True)
    t.incr(k + ":n")
    t.incr(k + ":n")
    t.get(k)
    assert t.execute() == [1, 2, b"v"]
    wait_for(lambda: counters(rp)["pinned"] == before + 1, 5, what="pinned to count the session once")
    assert metric(rp, "repoint_pinned_total") == before + 1
    # The server sees that session on a connection of its own, with its db and name.
    d = direct(lab)
    mine = [c for c in app_clients(d) if c["name"] == "mux-pinned"]
    assert len(mine) == 1 and mine[0]["db"] == "2", mine
    d.execute_command("SELECT", 2)
    assert d.get(k) == "v"
    bye(d)
    # A command over SHARE_MAX (here ~200 KB) pins too and still round-trips.
    big = os.urandom(200 * 1024)
    assert other.set(k + ":big", big) is True
    assert other.get(k + ":big") == big
    wait_for(lambda: counters(rp)["pinned"] == before + 2, 5, what="the oversized command to pin its session")
    check_roundtrips(client(port), "after-pins")
    assert svc(rp)["shared_connections"] in (1, 2)  # one for reads, one for writes
    bye(r)
    bye(other)


def test_blocking_command_does_not_block_the_others(lab, start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    key = f"mux:queue:{time.time_ns()}"
    blocker, others = client(port), [client(port) for _ in range(4)]
    result = {}

    def pop():
        t = time.time()
        result["value"] = blocker.blpop([key], timeout=5)
        result["took"] = time.time() - t

    th = threading.Thread(target=pop)
    th.start()
    d = direct(lab)
    wait_for(lambda: any(c["cmd"] == "blpop" for c in d.client_list()), 5, what="the BLPOP to reach the server")

    def work(i):
        for n in range(20):
            t = time.time()
            others[i].set(f"{key}:{i}", n)
            assert others[i].get(f"{key}:{i}") == str(n).encode()
            assert time.time() - t < 1.0, f"SET+GET took {time.time() - t:.2f}s while a BLPOP waits"

    run_threads(work, len(others))
    assert th.is_alive(), "BLPOP returned before anything was pushed"
    assert others[0].lpush(key, "payload") == 1
    th.join(10)
    assert result.get("value") == (key.encode(), b"payload"), result
    assert result["took"] < 5
    assert counters(rp)["pinned"] >= 1
    bye(d, blocker, *others)


def test_pubsub_through_multiplexed_service(start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    chan = f"mux:chan:{time.time_ns()}"
    sub = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10).pubsub()
    sub.subscribe(chan)
    sub.psubscribe(chan + ":*")
    assert [m["type"] for m in messages(sub, 2)] == ["subscribe", "psubscribe"]
    pub = client(port)
    assert pub.publish(chan, b"hello\r\nworld") == 1
    assert pub.publish(chan + ":x", b"via pattern") == 1
    msgs = messages(sub, 2)
    assert (msgs[0]["type"], msgs[0]["channel"], msgs[0]["data"]) == ("message", chan.encode(), b"hello\r\nworld")
    assert (msgs[1]["type"], msgs[1]["data"]) == ("pmessage", b"via pattern")
    check_roundtrips(pub, "publisher")
    assert counters(rp)["pinned"] >= 1
    sub.close()
    bye(pub)


def test_client_gone_with_replies_in_flight_does_not_disturb_others(start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    key = f"mux:gone:{time.time_ns()}"
    setup = client(port)
    setup.set(key + ":big", os.urandom(100 * 1024))
    bye(setup)
    incr = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key.encode())
    getbig = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s:big\r\n" % (len(key) + 4, key.encode())
    done = []

    def work(i):
        if i == 0:     # a well-behaved client, busy while the others vanish
            r = client(port)
            while len(done) < 12:
                check_roundtrips(r, "checker", 5)
            check_roundtrips(r, "checker")
            bye(r)
            return
        try:
            s = raw(port)
            s.sendall(incr * 2000 + getbig * 50)
            if i % 2:
                s.recv(100)        # half of them read the start of their replies first
            s.close()
        finally:
            done.append(i)

    run_threads(work, 13)
    assert rp.proc.poll() is None, rp.logtext()[-3000:]
    wait_for(lambda: svc(rp)["clients"] == 0, 10, what="the abandoned sessions to be closed")
    after = client(port)
    check_roundtrips(after, "after")
    p = after.pipeline(transaction=False)
    for n in range(100):
        p.echo(f"e{n}")
    assert p.execute() == [f"e{n}".encode() for n in range(100)]
    assert svc(rp)["shared_connections"] in (1, 2)  # one for reads, one for writes
    bye(after)


def test_inline_and_malformed_input(start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    before = counters(rp)["pinned"]
    good = client(port)
    check_roundtrips(good, "good")
    s = raw(port)
    s.sendall(b"PING\r\n")
    read_exactly(s, b"+PONG\r\n")
    s.sendall(b"SET mux:inline v\r\n*2\r\n$3\r\nGET\r\n$10\r\nmux:inline\r\n")
    read_exactly(s, b"+OK\r\n$1\r\nv\r\n")
    s.close()
    # Garbage, alone or after a shared command (whose reply comes first): an error or a close.
    for garbage, first in ((b"*3\r\n$3\r\nSET\r\n$9\r\nmux:bad:k\r\n$1\r\n1\r\n*abc\r\n", b"+OK\r\n"),
                           (b"*abc\r\n", b"")):
        s = raw(port)
        s.sendall(garbage)
        got = read_to_eof(s)
        s.close()
        assert got.startswith(first) and (got == first or got[len(first):].startswith(b"-ERR")), got
    check_roundtrips(good, "good-after")
    check_roundtrips(client(port), "fresh-after")
    wait_for(lambda: counters(rp)["pinned"] >= before + 3, 5, what="inline and malformed sessions to pin")
    st = svc(rp)
    assert st["shared_connections"] >= 1 and rp.proc.poll() is None, st
    bye(good)


class ListWriter(RedisEngine):
    """Each write is an LPUSH of its sequence number, so every acknowledged write can be found."""

    def write(self, conn, key, value):
        conn.lpush(key, value)


def start_writers(port, n=4):
    loops = [WriterLoop(ListWriter(), port, name=f"mux:w{i}:{time.time_ns()}") for i in range(n)]
    for w in loops:
        w.start()
    wait_for(lambda: all(w.successes() for w in loops), 20, what="writers to start")
    return loops


def acked(w):
    return [str(w.seq - n) for n, (_, ok, _) in enumerate(reversed(w.records)) if ok]


def test_switchover_with_multiplex_costs_no_error(lab, start_repoint):
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    old = lab.primary("redis")
    before = counters(rp)
    loops = start_writers(port)
    t0 = time.time()
    lab.switchover("redis")
    new = lab.primary("redis")
    assert new.name != old.name
    rp.wait_writer("redis", new.addr)
    wait_for(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60,
             what="every writer to succeed 20 times after the switchover")
    for w in loops:
        w.stop()
    errors = [e for w in loops for e in w.errors()]
    outage = max(w.outage(after=t0)[0] for w in loops)
    record_outage("redis", "switch-mux", outage, len(errors), f"{old.name}->{new.name}")
    assert errors == [], errors
    d = new.connect(decode_responses=True)
    for w in loops:
        assert len(w.records) == w.seq
        assert d.lrange(w.tag, 0, -1) == acked(w), w.tag
    after = counters(rp)
    assert after["pinned"] == before["pinned"]
    assert after["shared_commands"] - before["shared_commands"] >= sum(w.seq for w in loops)
    wait_for(lambda: svc(rp)["shared_connections"] in (1, 2), 10,
             what="the shared connections (reads, writes) to the new writer only")
    o = old.connect()
    wait_for(lambda: app_clients(o) == [], 10, what="no repoint connection left on the old writer")
    bye(o)
    assert len(app_clients(d)) <= 3
    bye(d)
    c = ENGINES["redis"].connect(port)
    assert ENGINES["redis"].server_port(c) == new.port
    bye(c)


def test_crash_of_the_writer_with_multiplex(lab, start_repoint):
    rp = start_repoint(hold_timeout="60s", **MUX)
    port = rp.ports["redis"]
    old = lab.primary("redis")
    target = [n for n in lab.nodes("redis") if n.name != old.name and n.alive()][0]
    loops = start_writers(port)
    t0 = time.time()
    lab.crash("redis", old.name)
    wait_for(lambda: not svc(rp)["writer_ready"], 20, what="repoint to notice the crash")
    lab.promote("redis", target.name)
    lab.repoint("redis", primary=target.name)
    rp.wait_writer("redis", target.addr)
    t1 = time.time()
    wait_for(lambda: all(len([t for t in w.successes() if t > t1]) >= 20 for w in loops), 60,
             what="every writer to succeed 20 times on the new writer")
    for w in loops:
        w.stop()
    outage = max(w.outage(after=t0)[0] for w in loops)
    per_writer = [len(w.errors()) for w in loops]
    record_outage("redis", "crash-mux", outage, sum(per_writer), f"{old.name}->{target.name}")
    assert all(n <= 1 for n in per_writer), [w.errors() for w in loops]
    # Everything acknowledged after the promotion is on the new writer; new clients land there.
    d = target.connect(decode_responses=True)
    for w in loops:
        late = [str(w.seq - n) for n, (t, ok, _) in enumerate(reversed(w.records)) if ok and t > t1]
        assert late and d.lrange(w.tag, 0, len(late) - 1) == late, w.tag
    bye(d)
    c = ENGINES["redis"].connect(port)
    assert ENGINES["redis"].server_port(c) == target.port
    check_roundtrips(c, "after-crash")
    bye(c)
    wait_for(lambda: svc(rp)["shared_connections"] in (1, 2), 10,
             what="the shared connections (reads, writes) to the new writer only")
    lab.restart("redis", old.name, as_replica=True)
    wait_for(lambda: any(m["address"] == old.addr and m["role"] == "reader" for m in svc(rp)["members"]),
             30, what="the old writer to come back as a reader")
    assert rp.writer("redis") == target.addr


BASE = "[repoint]\nadmin = 127.0.0.1:9901\n\n[service s]\nprotocol = {proto}\nlisten = 127.0.0.1:6432\n" \
       "members = 127.0.0.1:25432\nmultiplex = {value}\n"


@pytest.mark.parametrize("proto,value,ok", [
    ("redis", "on", True), ("redis", "off", True),
    ("postgres", "on", False), ("mysql", "on", False), ("redis", "maybe", False),
])
def test_multiplex_config_contract(tmp_path, proto, value, ok):
    path = tmp_path / "mux.ini"
    path.write_text(BASE.format(proto=proto, value=value))
    r = subprocess.run([REPOINT_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert f"{path}:8:" in r.stderr and "multiplex" in r.stderr, r.stderr


def test_connection_handshakes_that_change_nothing_keep_the_session_shared(lab, start_repoint):
    """What client libraries send on connecting -- CLIENT SETINFO (redis-py 5, Jedis 5), SELECT 0,
    HELLO 2 -- leaves the session shared, answered in order."""
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    pinned = counters(rp)["pinned"]
    r = client(port)
    try:
        assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "repoint-test") in (b"OK", "OK", True)
        assert r.execute_command("SELECT", "0") in (b"OK", "OK", True)
        hello = r.execute_command("HELLO", "2")
        assert b"proto" in hello and hello[hello.index(b"proto") + 1] == 2
        # Between shared commands in one pipeline: the local answer comes in its place.
        p = r.pipeline(transaction=False)
        p.set("mux:hs", "1")
        p.execute_command("CLIENT", "SETINFO", "LIB-VER", "9.9")
        p.get("mux:hs")
        p.execute_command("CLIENT", "SETINFO", "LIB-VER", "9.8")
        assert p.execute() == [True, b"OK", b"1", b"OK"]
        check_roundtrips(r, "handshake")
        assert counters(rp)["pinned"] == pinned
    finally:
        bye(r)


class Resp3Reader:
    """A minimal RESP2/RESP3 reader over a raw socket: enough to tell a map from an array."""

    def __init__(self, sock):
        self.f = sock.makefile("rb")

    def line(self):
        return self.f.readline()[:-2]

    def read(self):
        line = self.line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-", b":", b",", b"(", b"#", b"_"):
            return (t, rest)
        if t in (b"$", b"=", b"!"):
            n = int(rest)
            return (t, None if n < 0 else self.f.read(n + 2)[:-2])
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return (t, None if n < 0 else [self.read() for _ in range(n)])
        if t == b"%":
            return (t, [(self.read(), self.read()) for _ in range(int(rest))])
        raise AssertionError("not RESP: %r" % line)


def cmd(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_resp3_sessions_share_a_resp3_connection(lab, start_repoint):
    """HELLO 3 (the default of go-redis 9 and Lettuce) moves a session to the member's RESP3 shared
    connection: replies come in RESP3 (a map for HGETALL), RESP2 sessions keep arrays, nobody pins;
    HELLO 2 from a RESP3 session pins it (its protocol changes under it)."""
    rp = start_repoint(**MUX)
    port = rp.ports["redis"]
    pinned = counters(rp)["pinned"]
    r2 = client(port)
    r2.hset("mux:r3", mapping={"a": "1", "b": "2"})
    socks = []
    try:
        readers = []
        for _ in range(3):
            s = raw(port)
            socks.append(s)
            rd = Resp3Reader(s)
            s.sendall(cmd(b"HELLO", b"3"))
            t, fields = rd.read()
            assert t == b"%" and ((b"$", b"proto"), (b":", b"3")) in fields
            readers.append((s, rd))
        for i, (s, rd) in enumerate(readers):
            # pipelined, interleaved with a RESP2 client's commands
            s.sendall(cmd(b"SET", b"mux:r3:%d" % i, b"v%d" % i) + cmd(b"GET", b"mux:r3:%d" % i) + cmd(b"HGETALL", b"mux:r3")
                      + cmd(b"CLIENT", b"SETINFO", b"LIB-NAME", b"go-redis"))
            assert r2.hgetall("mux:r3") == {b"a": b"1", b"b": b"2"}
            assert rd.read() == (b"+", b"OK")
            assert rd.read() == (b"$", b"v%d" % i)
            t, pairs = rd.read()
            assert t == b"%" and sorted(pairs) == [((b"$", b"a"), (b"$", b"1")), ((b"$", b"b"), (b"$", b"2"))]
            assert rd.read() == (b"+", b"OK")
        raw2 = raw(port)
        socks.append(raw2)
        raw2.sendall(cmd(b"HGETALL", b"mux:r3"))
        assert Resp3Reader(raw2).read()[0] == b"*"   # still RESP2 for sessions that did not ask
        wait_for(lambda: 2 <= svc(rp)["shared_connections"] <= 4, 10,
                 what="RESP2 and RESP3 shared connections (each for reads and for writes)")
        assert counters(rp)["pinned"] == pinned
        # Back to RESP2 from a RESP3 session: it gets a connection of its own.
        s, rd = readers[0]
        s.sendall(cmd(b"HELLO", b"2"))
        assert rd.read()[0] == b"*"
        wait_for(lambda: counters(rp)["pinned"] == pinned + 1, 10, what="HELLO 2 to pin a RESP3 session")
        s.sendall(cmd(b"GET", b"mux:r3:0"))
        assert rd.read() == (b"$", b"v0")
    finally:
        for s in socks:
            s.close()
        bye(r2)
