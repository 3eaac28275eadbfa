"""What an operator meets on the first morning: a member name that does not resolve, a stop that
refuses new clients instead of accepting and resetting them."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import psycopg2
import pytest
import redis

from conftest import REPOINT_BIN, free_port, rss_kb, start_custom, wait_for




def test_a_member_name_that_does_not_resolve_does_not_stop_the_others(lab, tmp_path):
    writer = lab.primary("redis").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}, no-such-member.invalid:6379\n"
                                "probe_interval = 100ms\n"})
    try:
        rp.wait_writer("rd", writer)
        assert redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=10).ping()
        members = {m["address"]: m for m in rp.service("rd")["members"]}
        bad = members["no-such-member.invalid:6379"]
        wait_for(lambda: "resolve" in {m["address"]: m for m in rp.service("rd")["members"]}["no-such-member.invalid:6379"]["probe"]["detail"].lower(), 10, what="the member to show why")
        assert bad["role"] != "writer"
        assert "trying again at each probe" in rp.logtext()
    finally:
        rp.stop()


def test_a_stopping_proxy_refuses_new_clients_at_once(lab, tmp_path):
    pg = lab.primary("postgres").addr
    rp = start_custom(tmp_path, {"pg": f"protocol = postgres\nmembers = {pg}\nprobe_interval = 100ms\n"})
    rp.wait_writer("pg")
    conn = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", connect_timeout=10)
    cur = conn.cursor()
    cur.execute("SELECT 1")  # a transaction stays open: the drain waits for it
    rp.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping;" in rp.logtext(), 10, what="the stop to begin")
    t = time.time()
    try:
        socket.create_connection(("127.0.0.1", rp.ports["pg"]), timeout=5).close()
        raise AssertionError("a new client was accepted while stopping")
    except ConnectionRefusedError:
        pass
    assert time.time() - t < 1
    assert rp.proc.poll() is None, "the open transaction's session was not waited for"
    conn.rollback()
    conn.close()
    rp.proc.wait(15)
    rp.stop()


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_soon(s, timeout=3):
    """Whether the peer closes the connection within `timeout` (whatever it sends before)."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            s.settimeout(max(0.001, deadline - time.time()))
            if s.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def test_out_of_file_descriptors_refuses_without_spinning(lab, tmp_path):
    writer = lab.primary("redis").addr
    admin = free_port()
    port = free_port()
    cfg = tmp_path / "fds.ini"
    cfg.write_text(f"[repoint]\nadmin = 127.0.0.1:{admin}\n[service rd]\nprotocol = redis\n"
                   f"listen = 127.0.0.1:{port}\nmembers = {writer}\n")
    log = open(str(cfg) + ".log", "wb")
    proc = subprocess.Popen(["prlimit", "--nofile=40:40", REPOINT_BIN, "-c", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)
    socks = []
    try:
        wait_for(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5))
                 ["services"][0]["writer_ready"], 10, what="repoint to know its writer")
        cpu0 = proc_cpu_s(proc.pid)
        t0 = time.time()
        for _ in range(120):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # Past the limit, clients are closed at once rather than left hanging in the backlog.
        wait_for(lambda: sum(closed_soon(s, 0.01) for s in socks[-20:]) >= 10, 10,
                 what="the clients past the fd limit to be refused")
        time.sleep(2)  # a fixed window to measure CPU over: nothing to wait for
        used = proc_cpu_s(proc.pid) - cpu0
        assert used < 0.5 * (time.time() - t0), f"{used:.2f}s of CPU in {time.time() - t0:.1f}s: spinning"
        log.flush()
        lines = open(str(cfg) + ".log", "rb").read().count(b"\n")
        assert lines < 100, f"{lines} log lines"
        assert b"refused so far" in open(str(cfg) + ".log", "rb").read()
        for s in socks:
            s.close()
        socks = []
        wait_for(lambda: redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping(), 10,
                 what="a client to be served again")
        st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5))
        assert st["services"][0]["counters"]["refused_no_fd"] > 0
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(15)
        log.close()


def test_past_max_clients_a_client_is_refused_at_once(lab, tmp_path):
    writer = lab.primary("redis").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\nmax_clients = 5\n"})
    try:
        rp.wait_writer("rd")
        clients = [socket.create_connection(("127.0.0.1", rp.ports["rd"]), timeout=5) for _ in range(5)]
        for c in clients:
            c.sendall(b"PING\r\n")
            assert c.recv(10) == b"+PONG\r\n"
        t = time.time()
        with socket.create_connection(("127.0.0.1", rp.ports["rd"]), timeout=5) as s:
            s.sendall(b"PING\r\n")
            assert closed_soon(s, 5)
        assert time.time() - t < 2
        clients[0].close()
        wait_for(lambda: rp.service("rd")["clients"] < 5, 10, what="a client to leave")
        assert redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5).ping()
        assert rp.service("rd")["counters"]["refused_max_clients"] >= 1
        for c in clients[1:]:
            c.close()
    finally:
        rp.stop()



def test_the_admin_api_bounds_bodies_headers_and_slow_clients(lab, tmp_path):
    writer = lab.primary("redis").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\n"})
    try:
        rp.wait_writer("rd")
        before = rss_kb(rp.proc.pid)
        # A huge body is refused once it passes the cap: repoint stops reading and closes.
        with socket.create_connection(("127.0.0.1", rp.admin_port), timeout=10) as s:
            s.sendall(b"POST /drills HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 536870912\r\n\r\n")
            sent, chunk = 0, b"x" * 65536
            try:
                while sent < 128 << 20:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            assert sent < 64 << 20, f"repoint read {sent} bytes of a body it cannot use"
        assert rss_kb(rp.proc.pid) - before < 32 * 1024
        # Headers without end are cut too.
        with socket.create_connection(("127.0.0.1", rp.admin_port), timeout=10) as s:
            s.sendall(b"GET /status HTTP/1.1\r\n")
            try:
                for _ in range(1000):
                    s.sendall(b"X-Filler: " + b"y" * 1000 + b"\r\n")
            except OSError:
                pass
            assert closed_soon(s, 10)
        # A client that dribbles its request is closed after the admin timeout.
        with socket.create_connection(("127.0.0.1", rp.admin_port), timeout=10) as s:
            s.sendall(b"GET /status HTTP/1.1\r\n")
            t = time.time()
            assert closed_soon(s, 20)
            assert time.time() - t < 15
        assert rp.status()["services"][0]["writer_ready"]
    finally:
        rp.stop()


def test_idle_admin_connections_cannot_take_the_data_paths_fds(lab, tmp_path):
    """Past 32 open admin connections repoint stops accepting more (they wait in the kernel's
    backlog): idle admin clients cannot use up the descriptors the data path needs."""
    writer = lab.primary("redis").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\n"})
    idle = []
    try:
        rp.wait_writer("rd")
        fds = lambda: len(os.listdir(f"/proc/{rp.proc.pid}/fd"))
        before = fds()
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", rp.admin_port), timeout=10))
        # Each of the first 32 is accepted (and reaped after the admin timeout); the rest are not.
        # (one of the 32 may be the status request that came before)
        wait_for(lambda: fds() - before >= 31, 10, what="the first admin connections to be accepted")
        time.sleep(0.3)  # give accepts that should not happen a chance to show
        assert fds() - before <= 33, f"{fds() - before} descriptors for 200 idle admin clients"
        # The data path still takes clients.
        clients = [redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=10) for _ in range(20)]
        assert all(c.ping() for c in clients)
        for s in idle:
            s.close()
        idle.clear()
        # Once they are gone, the admin answers again at once.
        wait_for(lambda: http("GET", rp.admin_port, "/live")[0] == 200, 20, what="the admin to answer again")
    finally:
        for s in idle:
            s.close()
        rp.stop()


def http(method, port, path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def test_health_endpoints_for_kubernetes(lab, tmp_path):
    writer = lab.primary("redis").addr
    dead = free_port()
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\nprobe_interval = 100ms\n",
                          "nowriter": f"protocol = redis\nmembers = 127.0.0.1:{dead}\nprobe_interval = 100ms\n"})
    try:
        rp.wait_writer("rd")
        assert http("GET", rp.admin_port, "/live") == (200, "live\n")
        assert http("HEAD", rp.admin_port, "/live")[0] == 200
        wait_for(lambda: http("GET", rp.admin_port, "/startup")[0] == 200, 10, what="startup")
        status, body = http("GET", rp.admin_port, "/ready")
        assert status == 503 and "service nowriter: no confirmed writer" in body and "service rd" not in body
        assert http("HEAD", rp.admin_port, "/ready") == (503, "")
        assert http("POST", rp.admin_port, "/ready")[0] == 405
    finally:
        rp.stop()
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\nprobe_interval = 100ms\n"})
    try:
        rp.wait_writer("rd")
        assert http("GET", rp.admin_port, "/ready") == (200, "ready\n")
    finally:
        rp.stop()


def test_an_ordinary_connection_logs_nothing_at_info(lab, tmp_path):
    writer = lab.primary("redis").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\n"})
    try:
        rp.wait_writer("rd")
        before = rp.logtext().count("\n")
        for _ in range(20):
            assert redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5).ping()
        assert rp.logtext().count("\n") == before, rp.logtext().splitlines()[before:][:5]
    finally:
        rp.stop()


def test_get_clients_lists_each_session(lab, tmp_path):
    writer = lab.primary("redis").addr
    pg = lab.primary("postgres").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\nprobe_interval = 100ms\n",
                                 "pg": f"protocol = postgres\nmembers = {pg}\nprobe_interval = 100ms\n"})
    try:
        rp.wait_writer("rd")
        rp.wait_writer("pg")
        r = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=10)
        r.set("clients:k", "x" * 1000)
        conn = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", connect_timeout=10)
        conn.cursor().execute("SELECT 1")
        status, body = http("GET", rp.admin_port, "/clients")
        assert status == 200
        clients = json.loads(body)["clients"]
        rd = [c for c in clients if c["service"] == "rd"]
        assert len(rd) == 1 and rd[0]["member"] == writer and rd[0]["state"] == "active", rd
        assert rd[0]["bytes_in"] > 1000 and rd[0]["bytes_out"] >= 5 and rd[0]["age_s"] >= rd[0]["idle_s"] >= 0
        local = r.connection_pool.get_connection("PING")
        assert rd[0]["client"] == "127.0.0.1:%d" % local._sock.getsockname()[1]
        r.connection_pool.release(local)
        status, body = http("GET", rp.admin_port, "/clients?service=pg")
        only = json.loads(body)["clients"]
        assert [c["service"] for c in only] == ["pg"] and only[0]["member"] == pg
        assert http("POST", rp.admin_port, "/clients")[0] == 405
        conn.close()
    finally:
        rp.stop()


def test_pause_and_resume_hold_clients_for_maintenance(lab, tmp_path):
    """POST /services/NAME/pause: new clients wait, open sessions are drained at idle points (a Redis session
    keeps its connection and waits too; a Postgres one is closed there); /resume lets them all go on."""
    import threading
    import urllib.request
    import urllib.error
    writer, pg = lab.primary("redis").addr, lab.primary("postgres").addr
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}\nprobe_interval = 100ms\n",
                                 "pg": f"protocol = postgres\nmembers = {pg}\nprobe_interval = 100ms\n"},
                      extra="admin_token = m41nt")

    def post(path, token="m41nt"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (rp.admin_port, path), data=b"", method="POST")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    try:
        rp.wait_writer("rd")
        rp.wait_writer("pg")
        r = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=30)
        assert r.set("pause:k", "1")
        conn = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", connect_timeout=30)
        conn.autocommit = True  # idle between statements (inside a transaction it would be drained at its end)
        conn.cursor().execute("SELECT 1")
        assert post("/services/rd/pause", token=None)[0] == 401
        assert post("/services/nope/pause")[0] == 404
        assert post("/services/rd/pause") == (200, {"service": "rd", "paused": True})
        assert post("/services/pg/pause")[1]["paused"] is True
        assert http("GET", rp.admin_port, "/ready")[0] == 503
        done = {}

        def later(key, fn):
            try:
                done[key] = fn()
            except Exception as e:  # noqa: BLE001 - reported below
                done[key] = e
        t1 = threading.Thread(target=later, args=("redis", lambda: r.incr("pause:k")))
        t2 = threading.Thread(target=later, args=("pg", lambda: psycopg2.connect(
            host="127.0.0.1", port=rp.ports["pg"], user="postgres", connect_timeout=30).cursor().execute("SELECT 1")))
        t1.start()
        t2.start()
        wait_for(lambda: rp.service("rd")["held"] >= 1 and rp.service("pg")["held"] >= 1, 10,
                 what="both clients held while paused")
        assert done == {}, done
        with pytest.raises(psycopg2.Error):  # the idle Postgres session was closed at its idle point
            conn.cursor().execute("SELECT 1")
        assert post("/services/rd/resume")[1]["paused"] is False
        assert post("/services/pg/resume")[1]["paused"] is False
        t1.join(20)
        t2.join(20)
        assert done["redis"] == 2, done  # the same Redis connection, its command run once
        assert done["pg"] is None, done
        assert http("GET", rp.admin_port, "/ready")[0] == 200
    finally:
        rp.stop()


def test_metrics_on_an_address_of_their_own(tmp_path):
    """[repoint] metrics: /metrics alone on its own address (the admin API can stay on loopback while
    metrics are scraped)."""
    import urllib.error
    import urllib.request
    from conftest import free_port, start_custom
    mport = free_port()
    rp = start_custom(tmp_path, {"rd": "protocol = redis\nmembers = 127.0.0.1:1\n"},
                      extra="metrics = 127.0.0.1:%d\n" % mport)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            body = r.read().decode()
        assert "repoint_build_info" in body and 'service="rd"' in body
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://127.0.0.1:%d/status" % mport, timeout=5)
        assert e.value.code == 404
        assert rp.status()  # the admin API as before
    finally:
        rp.stop()
