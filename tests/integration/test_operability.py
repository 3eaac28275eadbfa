"""What an operator meets on the first morning: a member name that does not resolve, a stop that
refuses new clients instead of accepting and resetting them."""
import signal
import socket
import time

import psycopg2
import redis

from conftest import Repoint, free_port, wait_for


def start(tmp_path, services, extra=""):
    admin = free_port()
    text = f"[repoint]\nadmin = 127.0.0.1:{admin}\nshutdown_timeout = 10s\n{extra}\n"
    ports = {}
    for name, body in services.items():
        ports[name] = free_port()
        text += f"[service {name}]\nlisten = 127.0.0.1:{ports[name]}\n{body}\n"
    path = tmp_path / "ops.ini"
    path.write_text(text)
    rp = Repoint(str(path), admin, ports)
    wait_for(lambda: rp.status(), 10, what="admin API")
    return rp


def test_a_member_name_that_does_not_resolve_does_not_stop_the_others(lab, tmp_path):
    writer = lab.nodes("redis")[0].addr
    rp = start(tmp_path, {"rd": f"protocol = redis\nmembers = {writer}, no-such-member.invalid:6379\n"
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
    pg = lab.nodes("postgres")[0].addr
    rp = start(tmp_path, {"pg": f"protocol = postgres\nmembers = {pg}\nprobe_interval = 100ms\n"})
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
