"""Steady-state behaviour: payloads, native errors, admin API, shutdown."""
import os
import signal
import socket
import re
import time

import psycopg2
import pymysql
import pytest
import redis

from labkit.clients import ENGINES
from conftest import free_port, start_custom, wait_for


@pytest.mark.parametrize("name", ["postgres", "mysql", "redis"])
def test_16mib_payload_round_trips_unchanged(start_repoint, name):
    engine = ENGINES[name]
    rp = start_repoint()
    conn = engine.connect(rp.ports[name])
    payload = os.urandom(8 * 1024 * 1024).hex()  # 16 MiB of text
    back = engine.echo(conn, payload)
    if isinstance(back, bytes):
        back = back.decode()
    assert back == payload
    engine.close(conn)




@pytest.mark.parametrize("multiplex", ["off", "on"])
def test_large_redis_values_pass_by_splice_unchanged(start_repoint, lab, multiplex):
    """Plain on both sides, a large bulk payload goes from one socket to the other through a pipe
    (splice(2)), never read by repoint, either way: values around the 16 KiB threshold and far above
    it, whose bytes look like RESP (CRLF, -READONLY, $ headers), are stored as sent and come back
    unchanged alone, pipelined and mixed with small commands, and the bytes spliced are counted. A
    client that reads slowly gets every byte in order (the pipe and the buffer behind it are drained
    before the member is read on)."""
    rp = start_repoint(redis={"multiplex": multiplex})
    port = rp.ports["redis"]
    c = redis.Redis("127.0.0.1", port, socket_timeout=30)
    sizes = [0, 1, 16381, 16382, 16383, 16384, 16385, 65534, 65536, 100000, 262143, 1 << 20, 5 << 20]
    noise = b"\r\n-READONLY You can't write\r\n$5\r\n*2\r\n"
    vals = {}
    for n in sizes:
        v = (noise * (n // len(noise) + 1))[:n // 2] + os.urandom(n - n // 2)
        vals[n] = v
        assert c.set("splice:%d" % n, v)
    direct = redis.Redis("127.0.0.1", lab.primary("redis").port, socket_timeout=30)
    for n in sizes:
        assert direct.get("splice:%d" % n) == vals[n], n
    direct.close()
    sent = rp.service("redis")["counters"]["bytes_spliced"]
    assert sent > sum(sizes) // 2, sent   # the SETs' values, most of them
    for n in sizes:
        assert c.get("splice:%d" % n) == vals[n], n
    c.delete("splice:n")
    p = c.pipeline(transaction=False)
    for n in sizes + sizes[::-1]:
        p.get("splice:%d" % n)
        p.incr("splice:n")
    out = p.execute()
    assert out[0::2] == [vals[n] for n in sizes + sizes[::-1]]
    assert out[1::2] == list(range(1, 2 * len(sizes) + 1))
    # Several clients at once, each its own values.
    clients = [redis.Redis("127.0.0.1", port, socket_timeout=30) for _ in range(8)]
    for i, x in enumerate(clients):
        assert x.get("splice:%d" % sizes[-2 - i % 3]) == vals[sizes[-2 - i % 3]]
    spliced = rp.service("redis")["counters"]["bytes_spliced"]
    # Most of the bytes of the large values went through the pipe: once alone, twice pipelined.
    assert spliced - sent > 3 * sum(sizes) // 2, (sent, spliced)
    m = re.search(r'repoint_spliced_bytes_total\{service="redis"\} (\d+)', rp.metrics())
    assert m and int(m.group(1)) >= spliced
    if multiplex == "off":
        # A client that asks for 20 MiB at once and reads 64 KiB at a time with pauses.
        s = socket.create_connection(("127.0.0.1", port))
        key = b"splice:%d" % (1 << 20)
        s.sendall((b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)) * 20)
        want = (b"$%d\r\n" % (1 << 20) + vals[1 << 20] + b"\r\n") * 20
        got = bytearray()
        s.settimeout(30)
        while len(got) < len(want):
            b = s.recv(65536)
            assert b, "closed after %d of %d bytes" % (len(got), len(want))
            got += b
            if len(got) % (1 << 20) < 65536:
                time.sleep(0.05)
        assert bytes(got) == want
        s.close()
        assert rp.service("redis")["counters"]["bytes_spliced"] > spliced + (10 << 20)
    for x in clients + [c]:
        x.close()


def test_held_client_gets_a_native_error_after_hold_timeout(tmp_path):
    dead = free_port()  # nothing listens there
    common = f"members = 127.0.0.1:{dead}\nhold_timeout = 1s\nprobe_interval = 100ms\n"
    rp = start_custom(tmp_path, {
        "pg": "protocol = postgres\n" + common,
        "my": "protocol = mysql\n" + common,
        "rd": "protocol = redis\n" + common,
    })
    try:
        t = time.time()
        with pytest.raises(psycopg2.OperationalError, match='no writer for service "pg"'):
            psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", connect_timeout=10)
        assert 0.9 < time.time() - t < 5
        with pytest.raises(pymysql.err.OperationalError, match='no writer for service "my"'):
            pymysql.connect(host="127.0.0.1", port=rp.ports["my"], user="test", password="test", connect_timeout=10)
        r = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=10)
        with pytest.raises(redis.exceptions.ResponseError, match='no writer for service "rd"'):
            r.ping()
        s = {x["name"]: x for x in rp.status()["services"]}
        assert s["pg"]["writer"] is None and s["pg"]["members"][0]["role"] in ("down", "unknown")
        assert "repoint_hold_timeouts_total{service=\"pg\"} 1" in rp.metrics()
    finally:
        rp.stop()


def test_a_member_that_never_answers_does_not_stall_the_others(start_repoint, lab, tmp_path):
    # A listener that accepts and never says a word: the probe of that member times out while
    # the real member keeps being probed and clients keep flowing.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        p = lab.primary("redis")
        rp = start_custom(tmp_path, {"rd": f"protocol = redis\nmembers = 127.0.0.1:{hole.getsockname()[1]}, "
                                           f"127.0.0.1:{p.port}\nprobe_interval = 100ms\nprobe_timeout = 2s\n"})
        try:
            rp.wait_writer("rd", f"127.0.0.1:{p.port}", timeout=10)
            r = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5)
            t = time.time()
            for i in range(50):
                r.set("k", i)
            assert time.time() - t < 2.0
            st = rp.service("rd")
            assert st["members"][1]["probe"]["latency_ms"] < 500
        finally:
            rp.stop()
    finally:
        hole.close()


def test_status_and_metrics(start_repoint, lab):
    rp = start_repoint()
    wait_for(lambda: all(m["role"] in ("writer", "reader") for s in rp.status()["services"] for m in s["members"]),
             20, what="every member to have answered a probe")
    st = rp.status()
    names = {s["name"] for s in st["services"]}
    assert names == {"postgres", "mysql", "redis"}
    for s in st["services"]:
        assert s["protocol"] in ("postgres", "mysql", "redis")
        assert s["listen"].startswith("127.0.0.1:")
        assert s["route"] == "writer"
        assert s["writer"] == f"127.0.0.1:{lab.primary(s['protocol']).port}"
        roles = sorted(m["role"] for m in s["members"])
        assert roles.count("writer") == 1 and all(r in ("writer", "reader") for r in roles)
        for k in ("clients", "held", "failovers", "last_failover"):
            assert k in s
    m = rp.metrics()
    assert "# TYPE repoint_clients gauge" in m
    assert 'repoint_member_up{service="redis"' in m
    assert re.search(r'^repoint_build_info\{version="\d+\.\d+\.\d+"\} 1$', m, re.M)
    # The role is a value (2 writer, 1 reader): a failover changes values, not series.
    writer = lab.primary("redis")
    assert 'repoint_member_role{service="redis",member="127.0.0.1:%d"} 2' % writer.port in m
    assert "role=" not in m
    # No control-plane families for services without a source.
    assert "repoint_source_" not in m


def test_sigterm_closes_idle_sessions_and_exits_0(start_repoint):
    rp = start_repoint()
    conns = [ENGINES[n].connect(rp.ports[n]) for n in ("postgres", "mysql", "redis")]
    t = time.time()
    rp.proc.send_signal(signal.SIGTERM)
    rp.proc.wait(15)
    assert rp.proc.returncode == 0
    assert time.time() - t < 5  # idle sessions do not wait for the grace period
    for c in conns:
        try:
            c.close()
        except Exception:
            pass
