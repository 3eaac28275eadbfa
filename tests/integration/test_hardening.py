"""Hostile or unusual input through repoint: nothing a client sends counts as evidence about a
member, a request is sent again only when it provably did not run, and what a client sees is what
it would see directly (cancel requests, a server's close, its last reply, a half-close)."""
import os
import socket
import threading
import time

import psycopg2
import psycopg2.errors
import pytest
import redis

from conftest import Repoint, free_port, rss_kb, wait_for

# Redis multiplexes by default: "plain" says off, so that both paths are tried.
MODES = {"plain": {"redis": {"multiplex": "off"}}, "multiplex": {"redis": {"multiplex": "on"}}}


def svc(rp, name):
    return rp.service(name)


def rd(port, **kw):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, **kw)


@pytest.mark.parametrize("mode", MODES)
def test_a_script_answering_readonly_on_the_writer_runs_once(start_repoint, lab, mode):
    """A reply that merely reads like a replica's refusal is the primary's own: passed on, never
    sent again, never taken as the member's demotion."""
    rp = start_repoint(**MODES[mode])
    r = rd(rp.ports["redis"])
    key = f"hard:ro:{mode}:{os.getpid()}"
    r.delete(key)
    before = svc(rp, "redis")
    script = "redis.call('incr', KEYS[1]); return redis.error_reply(\"READONLY You can't write against a read only replica.\")"
    for _ in range(50):
        with pytest.raises(redis.exceptions.ReadOnlyError):
            r.eval(script, 1, key)
    assert int(rd(lab.primary("redis").port).get(key)) == 50
    after = svc(rp, "redis")
    assert after["failovers"] == before["failovers"]
    assert after["counters"]["retried"] == before["counters"]["retried"]
    assert after["counters"]["migrated"] == before["counters"]["migrated"]
    assert after["writer"] == before["writer"]


def pg_startup_garbage(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x10" + os.urandom(12))  # a length, then no known code
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass


def pg_cancel_random(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + os.urandom(8))
        s.settimeout(10)
        t = time.time()
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        return time.time() - t


def test_garbage_and_cancel_requests_cause_no_replay_and_no_failover(start_repoint):
    rp = start_repoint()
    port = rp.ports["postgres"]
    idle = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", connect_timeout=10)
    idle.autocommit = True
    cur = idle.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    before = svc(rp, "postgres")
    waits = []
    for _ in range(30):
        pg_startup_garbage(port)
        waits.append(pg_cancel_random(port))
    after = svc(rp, "postgres")
    assert after["counters"]["restarted"] == before["counters"]["restarted"] == 0
    assert after["failovers"] == before["failovers"]
    assert after["writer"] == before["writer"] and after["writer_ready"]
    assert " lost" not in rp.logtext()
    assert max(waits) < 1.0, waits  # a cancel for no session is closed at once
    cur.execute("SELECT pg_backend_pid()")
    assert cur.fetchone()[0] == pid  # the idle session was never drained


def running(lab_node_port, pid):
    c = psycopg2.connect(host="127.0.0.1", port=lab_node_port, user="postgres", connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                        "AND query LIKE %s", (pid, "%pg_sleep%"))
            return cur.fetchone()[0] == 1
    finally:
        c.close()


@pytest.mark.parametrize("route", ["writer", "any"])
def test_a_cancel_reaches_the_server_of_its_session_once(start_repoint, route):
    rp = start_repoint(postgres={"route": route})
    port = rp.ports["postgres"]
    conns = [psycopg2.connect(host="127.0.0.1", port=port, user="postgres", connect_timeout=10) for _ in range(3)]
    before = svc(rp, "postgres")["counters"]["restarted"]
    for c in conns:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), inet_server_port()")
            pid, server = cur.fetchone()
        result = {}

        def sleeper(c=c):
            t = time.time()
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT pg_sleep(10)")
                result["error"] = None
            except psycopg2.errors.QueryCanceled as e:
                result["error"] = e
            result["took"] = time.time() - t

        th = threading.Thread(target=sleeper)
        th.start()
        wait_for(lambda: running(server, pid), 10, what="the query to run")
        t = time.time()
        c.cancel()
        cancel_took = time.time() - t
        th.join(15)
        assert isinstance(result["error"], psycopg2.errors.QueryCanceled), result
        assert result["took"] < 5, result
        assert cancel_took < 1, cancel_took
        # The session goes on, and its next queries are not cancelled.
        with c.cursor() as cur:
            for _ in range(5):
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
    assert svc(rp, "postgres")["counters"]["restarted"] == before
    for c in conns:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_client_kill_reaches_the_client(start_repoint, lab, mode):
    rp = start_repoint(**MODES[mode])
    with socket.create_connection(("127.0.0.1", rp.ports["redis"]), timeout=10) as s:
        s.sendall(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n")
        line = s.recv(100)
        assert line.startswith(b":"), line
        cid = int(line[1:].strip())
        direct = rd(lab.primary("redis").port)
        assert direct.execute_command("CLIENT", "KILL", "ID", cid) == 1
        s.settimeout(10)
        t = time.time()
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b"", got
        assert time.time() - t < 5
    assert svc(rp, "redis")["writer"] == lab.primary("redis").addr


def inline_too_big(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for _ in range(8):
                s.sendall(b"x" * 65536)
        except OSError:
            pass
        s.settimeout(10)
        got = b""
        try:
            while True:
                b = s.recv(4096)
                if not b:
                    break
                got += b
        except OSError:
            pass
        return got


@pytest.mark.parametrize("mode", MODES)
def test_the_servers_last_reply_before_its_close_is_delivered(start_repoint, lab, mode):
    rp = start_repoint(**MODES[mode])
    direct = inline_too_big(lab.primary("redis").port)
    assert direct.startswith(b"-ERR Protocol error"), direct
    for _ in range(5):
        assert inline_too_big(rp.ports["redis"]) == direct


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("request_bytes", [b"*1\r\n$4\r\nPING\r\n", b"PING\r\n"], ids=["resp", "inline"])
def test_a_half_close_keeps_the_replies_owed(start_repoint, mode, request_bytes):
    rp = start_repoint(**MODES[mode])
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", rp.ports["redis"]), timeout=10) as s:
            s.sendall(request_bytes)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = s.recv(100)
                if not b:
                    break
                got += b
            assert got == b"+PONG\r\n"


@pytest.mark.parametrize("threshold", [100, 2500], ids=["busy-at-once", "busy-after-probe-timeouts"])
@pytest.mark.parametrize("mode", MODES)
def test_a_busy_script_is_not_a_failed_writer(start_repoint, lab, mode, threshold):
    """While a script runs the writer answers ROLE with -BUSY: alive, so no failover, and a client
    through repoint can still send SCRIPT KILL. With Redis's busy-reply-threshold above the probe
    timeout, the first probes time out (the writer may be lost for a moment) until -BUSY comes:
    then it is the writer again, and SCRIPT KILL still gets through."""
    rp = start_repoint(redis={"probe_interval": "50ms", "down_after": "2", "probe_timeout": "500ms",
                              **MODES[mode].get("redis", {})})
    writer = lab.primary("redis")
    d = rd(writer.port)
    d.config_set("busy-reply-threshold", threshold)
    before = svc(rp, "redis")
    done = {}

    def busy():
        try:
            rd(rp.ports["redis"]).eval("while true do end", 0)
        except redis.exceptions.ResponseError as e:
            done["err"] = str(e)

    th = threading.Thread(target=busy)
    th.start()
    try:
        wait_for(lambda: "BUSY" in " ".join(m["probe"]["detail"] for m in svc(rp, "redis")["members"]), 10,
                 what="the probe to see the script")
        probes = next(m for m in svc(rp, "redis")["members"] if m["address"] == writer.addr)["probe"]["count"]
        wait_for(lambda: next(m for m in svc(rp, "redis")["members"] if m["address"] == writer.addr)["probe"]["count"]
                 >= probes + 8, 10, what="several probes during the script")
        s = wait_for(lambda: (lambda s: s if s["writer_ready"] else None)(svc(rp, "redis")), 5,
                     what="the busy writer to be the writer")
        assert s["writer"] == writer.addr, s
        if threshold < 500:
            assert s["failovers"] == before["failovers"]
        assert rd(rp.ports["redis"]).script_kill()
        th.join(10)
        assert "killed" in done.get("err", ""), done
        assert rd(rp.ports["redis"]).ping()
    finally:
        try:
            d.script_kill()
        except redis.exceptions.ResponseError:
            pass
        th.join(10)
        d.config_set("busy-reply-threshold", 5000)


class HugeReplyServer:
    """A 'member' that answers anything with a reply declaring 1 GB (a bulk string; or an array of
    200 million elements), then streams bytes (elements)."""

    def __init__(self, head=b"$1000000000\r\n", chunk=b"x" * 65536):
        self.head, self.chunk = head, chunk
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.sent = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.stream, args=(c,), daemon=True).start()

    def stream(self, c):
        chunk = self.chunk
        try:
            c.recv(4096)
            c.sendall(self.head)
            while not self.stop.is_set() and self.sent < 2 << 30:
                c.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop.set()
        self.sock.close()



def test_a_probe_reply_of_a_huge_declared_length_is_cut_off(tmp_path):
    fake = HugeReplyServer()
    admin, port = free_port(), free_port()
    cfg = tmp_path / "huge.ini"
    cfg.write_text(f"[repoint]\nadmin = 127.0.0.1:{admin}\n[service rd]\nprotocol = redis\n"
                   f"listen = 127.0.0.1:{port}\nmembers = 127.0.0.1:{fake.port}\nprobe_interval = 200ms\n"
                   "probe_timeout = 3s\n")
    rp = Repoint(str(cfg), admin, {"rd": port})
    try:
        wait_for(lambda: rp.status(), 10, what="admin API")
        base = rss_kb(rp.proc.pid)
        wait_for(lambda: "larger than" in rp.service("rd")["members"][0]["probe"]["detail"], 10,
                 what="the probe to give up on the reply")
        wait_for(lambda: rp.service("rd")["members"][0]["probe"]["failures"] >= 3, 10, what="more probes")
        assert rss_kb(rp.proc.pid) - base < 32 * 1024
        assert not rp.service("rd")["writer_ready"]
    finally:
        rp.stop()
        fake.close()


def test_a_probe_reply_declaring_a_huge_array_is_refused_at_its_header(tmp_path):
    """hiredis 0.14 would allocate the 200 million element pointers (1.6 GB) at once: the probes'
    reader refuses an array beyond its budget before anything is allocated."""
    fake = HugeReplyServer(head=b"*200000000\r\n", chunk=b":1\r\n" * 16384)
    admin, port = free_port(), free_port()
    cfg = tmp_path / "huge.ini"
    cfg.write_text(f"[repoint]\nadmin = 127.0.0.1:{admin}\n[service rd]\nprotocol = redis\n"
                   f"listen = 127.0.0.1:{port}\nmembers = 127.0.0.1:{fake.port}\nprobe_interval = 200ms\n"
                   "probe_timeout = 3s\n")
    rp = Repoint(str(cfg), admin, {"rd": port})
    try:
        wait_for(lambda: rp.status(), 10, what="admin API")
        base = rss_kb(rp.proc.pid)
        wait_for(lambda: "more than 65536 array elements" in rp.service("rd")["members"][0]["probe"]["detail"], 10,
                 what="the probe to refuse the array")
        wait_for(lambda: rp.service("rd")["members"][0]["probe"]["failures"] >= 3, 10, what="more probes")
        assert rss_kb(rp.proc.pid) - base < 16 * 1024
        assert not rp.service("rd")["writer_ready"]
    finally:
        rp.stop()
        fake.close()


def test_multiplex_memory_stays_bounded_when_a_client_does_not_read(start_repoint, lab):
    rp = start_repoint(redis={"multiplex": "on"})
    port = rp.ports["redis"]
    rd(lab.primary("redis").port).set("hard:big", b"v" * (1 << 20))
    base = rss_kb(rp.proc.pid)
    greedy = socket.create_connection(("127.0.0.1", port), timeout=10)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    cmd = b"*2\r\n$3\r\nGET\r\n$8\r\nhard:big\r\n"
    greedy.settimeout(10)
    try:
        for _ in range(300):
            greedy.sendall(cmd)
    except OSError:
        pass  # repoint stopped reading it: backpressure
    other = rd(port)
    worst, peak = 0.0, 0
    for i in range(100):
        t = time.time()
        other.set("hard:small", i)
        assert int(other.get("hard:small")) == i
        worst = max(worst, time.time() - t)
        peak = max(peak, rss_kb(rp.proc.pid) - base)
    wait_for(lambda: svc(rp, "redis")["counters"]["shared_commands"] > 200, 10, what="the other client's commands")
    assert peak < 64 * 1024, f"repoint grew by {peak} KiB"
    # The greedy session's replies stop the shared connection for at most SHARED_STALL_MS (1 s) before it
    # is closed; the rest is the machine (ASan on 2 cores took 3.1 s once): far from being held for good.
    assert worst < 5, f"another client waited {worst:.2f}s"
    greedy.close()


def resp_read(s, n_bytes_hint=65536, timeout=5):
    s.settimeout(timeout)
    return s.recv(n_bytes_hint)


def test_a_resp3_session_that_pins_keeps_speaking_resp3(start_repoint, lab):
    rp = start_repoint(redis={"multiplex": "on"})
    with socket.create_connection(("127.0.0.1", rp.ports["redis"]), timeout=10) as s:
        s.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
        hello = resp_read(s)
        assert hello.startswith(b"%"), hello  # a RESP3 map
        # CLIENT INFO pins the session to a connection of its own: still RESP3 there.
        s.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n")
        info = b""
        while not info.endswith(b"\r\n") or info.count(b"\r\n") < 2:
            info += resp_read(s)
        assert b"resp=3" in info, info
        s.sendall(b"*2\r\n$3\r\nGET\r\n$20\r\nhard:no-such-key-xyz\r\n")
        assert resp_read(s) == b"_\r\n"  # RESP3 null, not $-1
        s.sendall(b"*2\r\n$7\r\nHGETALL\r\n$20\r\nhard:no-such-hash-xy\r\n")
        assert resp_read(s) == b"%0\r\n"  # RESP3 map, not *0
    assert svc(rp, "redis")["counters"]["pinned"] >= 1


def test_multiplex_keeps_the_order_of_clients_when_one_pins(start_repoint):
    """XREAD BLOCK ... $ pins its session; an XADD another client sends right after it must not run
    first (the XREAD would then wait for the next entry instead of returning this one)."""
    rp = start_repoint(redis={"multiplex": "on"})
    port = rp.ports["redis"]
    b = socket.create_connection(("127.0.0.1", port), timeout=10)
    b.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert resp_read(b) == b"+PONG\r\n"
    stream = f"hard:order:{os.getpid()}".encode()
    missed = 0
    for i in range(20):
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        a.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert resp_read(a) == b"+PONG\r\n"  # a shared session, like b
        a.sendall(b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$4\r\n3000\r\n$7\r\nSTREAMS\r\n$%d\r\n%s\r\n$1\r\n$\r\n"
                  % (len(stream), stream))
        field = b"n%d" % i
        b.sendall(b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\nf\r\n$%d\r\n%s\r\n"
                  % (len(stream), stream, len(field), field))
        assert resp_read(b).startswith(b"$")  # the entry id
        got = b""
        a.settimeout(5)
        while field not in got and not got.startswith(b"*-1\r\n"):
            chunk = a.recv(65536)
            if not chunk:
                break
            got += chunk
        if field not in got:
            missed += 1
        a.close()
    b.close()
    # Without the barrier 12 of 20 were overtaken. Two sockets that repoint reads in the same turn of its loop
    # (both sent while it was busy: under ASan on two cores) have no order at all, through repoint or directly:
    # CI saw that once in 20.
    assert missed <= 2, f"{missed} of 20 XREADs were overtaken by the XADD sent after them"


def test_multiplex_reads_are_not_held_up_by_a_paused_write(start_repoint, lab):
    """CLIENT PAUSE WRITE (Redis's FAILOVER uses it) holds writes; another client's reads through
    repoint are answered at once, as directly, and the write completes after the pause."""
    rp = start_repoint(redis={"multiplex": "on"})
    port = rp.ports["redis"]
    direct = rd(lab.primary("redis").port)
    reader = rd(port)
    reader.set("hard:pause", "v")
    writer = socket.create_connection(("127.0.0.1", port), timeout=10)
    writer.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert resp_read(writer) == b"+PONG\r\n"
    try:
        direct.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        t0 = time.time()
        writer.sendall(b"*3\r\n$3\r\nSET\r\n$10\r\nhard:pause\r\n$1\r\nw\r\n")
        worst = 0.0
        for _ in range(20):
            t = time.time()
            assert reader.get("hard:pause") == b"v"
            worst = max(worst, time.time() - t)
        assert worst < 0.2, f"a read waited {worst:.2f}s behind the paused write"
        assert resp_read(writer, timeout=5) == b"+OK\r\n"
        assert time.time() - t0 >= 1.0  # the write itself did wait for the pause
        assert reader.get("hard:pause") == b"w"
    finally:
        direct.execute_command("CLIENT", "UNPAUSE")
        writer.close()


@pytest.mark.parametrize("multiplex", ["off", "on"])
def test_a_large_value_cut_short_by_its_client_leaves_nothing_behind(start_repoint, lab, multiplex):
    """Large values pass by splice(2), through pipes repoint keeps for the next session. A client that
    goes away in the middle of one -- sending a SET, or reading a GET -- leaves no command half-sent
    that runs, and no byte in a pipe that another client would get: each next client reads exactly
    its own value, twenty times over."""
    rp = start_repoint(redis={"multiplex": multiplex})
    port = rp.ports["redis"]
    direct = rd(lab.primary("redis").port)
    values = {i: os.urandom((1 << 20) * (2 + i % 3)) for i in range(4)}
    for i, v in values.items():
        direct.set(f"hard:big:{i}", v)
    direct.delete("hard:big:cut")
    idle = svc(rp, "redis")["clients"]
    for round_ in range(20):
        # A SET of a declared 8 MiB of which 1 MiB comes, then the client is gone.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"*3\r\n$3\r\nSET\r\n$12\r\nhard:big:cut\r\n$8388608\r\n" + os.urandom(1 << 20))
        s.close()
        # A GET of 2-4 MiB read for 100 KB, then the client is gone.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"*2\r\n$3\r\nGET\r\n$10\r\nhard:big:%d\r\n" % (round_ % 4))
        got = 0
        while got < 100000:
            b = s.recv(65536)
            assert b
            got += len(b)
        s.close()
        # The next client gets its own value, every byte of it.
        c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        k = (round_ + 1) % 4
        assert c.get(f"hard:big:{k}") == values[k], round_
        c.connection_pool.disconnect()   # (close() leaves the socket to the garbage collector)
    wait_for(lambda: svc(rp, "redis")["clients"] == idle, 10, what="every cut session to be gone")
    assert direct.get("hard:big:cut") is None    # the half-sent SET never ran
    assert svc(rp, "redis")["counters"]["bytes_spliced"] > 10 * (1 << 20)   # the cut SETs at least
    assert rd(port).ping()
    direct.close()
