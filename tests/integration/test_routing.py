"""Routes other than `writer`, and graceful drain of sessions that are busy when the writer changes."""
import time

import pytest
import redis

from labkit.clients import ENGINES
from conftest import wait_for
from conftest import start_custom


def test_reader_route_spreads_over_replicas_and_falls_back_to_the_writer(lab, tmp_path):
    primary = lab.primary("redis")
    replicas = [n for n in lab.nodes("redis") if n.name != primary.name and n.alive()]
    members = ", ".join(f"127.0.0.1:{n.port}" for n in [primary] + replicas)
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nroute = reader\nmembers = {members}\nprobe_interval = 100ms\n"})
    try:
        wait_for(lambda: sorted(m["role"] for m in rp.service("rd")["members"]).count("reader") == len(replicas),
                 10, what="the replicas to be known")
        conns = [redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5, single_connection_client=True)
                 for _ in range(6)]
        ports = [int(c.info("server")["tcp_port"]) for c in conns]
        assert set(ports) == {n.port for n in replicas}          # every replica used, never the writer
        assert max(ports.count(n.port) for n in replicas) <= 6 // len(replicas) + 1
        for c in conns:
            c.close()
    finally:
        rp.stop()

    # No reader left: the writer serves.
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nroute = reader\nmembers = 127.0.0.1:{primary.port}\n"})
    try:
        rp.wait_writer("rd", f"127.0.0.1:{primary.port}", timeout=10)
        c = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5)
        assert int(c.info("server")["tcp_port"]) == primary.port
        c.close()
    finally:
        rp.stop()


@pytest.mark.parametrize("multiplex", ["off", "on"])
def test_a_write_through_a_reader_route_gets_the_refusal_at_once(lab, tmp_path, multiplex):
    """route = reader sends a session to a replica on purpose: a write refused there (-READONLY) is the
    client's answer at once, never held for the member's word and sent to another replica."""
    primary = lab.primary("redis")
    replicas = [n for n in lab.nodes("redis") if n.name != primary.name and n.alive()]
    members = ", ".join(f"127.0.0.1:{n.port}" for n in [primary] + replicas)
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nroute = reader\nmembers = {members}\nmultiplex = {multiplex}\n"})
    try:
        wait_for(lambda: sorted(m["role"] for m in rp.service("rd")["members"]).count("reader") == len(replicas),
                 10, what="the replicas to be known")
        c = redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5, single_connection_client=True)
        with pytest.raises(redis.exceptions.ReadOnlyError):
            c.set("reader-route-write", "1")
        assert c.ping()
        c.close()
        assert rp.service("rd")["counters"]["retried"] == 0
    finally:
        rp.stop()


def test_any_route_uses_every_healthy_member(lab, tmp_path):
    nodes = [n for n in lab.nodes("redis") if n.alive()]
    members = ", ".join(f"127.0.0.1:{n.port}" for n in nodes)
    rp = start_custom(tmp_path, {"rd": f"protocol = redis\nroute = any\nmembers = {members}\n"})
    try:
        wait_for(lambda: all(m["healthy"] for m in rp.service("rd")["members"]), 10, what="all members healthy")
        conns = [redis.Redis(host="127.0.0.1", port=rp.ports["rd"], socket_timeout=5, single_connection_client=True)
                 for _ in range(len(nodes) * 2)]
        assert {int(c.info("server")["tcp_port"]) for c in conns} == {n.port for n in nodes}
        for c in conns:
            c.close()
    finally:
        rp.stop()


@pytest.mark.parametrize("name", ["mysql", "redis"])
def test_busy_sessions_are_drained_at_their_idle_point_or_at_drain_timeout(lab, start_repoint, name):
    """One session is in a transaction that it finishes after the switchover: it is closed right
    after the COMMIT reply, its idle point (Redis: moved to the new writer after EXEC). Another never finishes: it is closed at
    drain_timeout. Neither ever sends a byte to the new writer, and the old writer keeps none."""
    engine = ENGINES[name]
    rp = start_repoint(drain_timeout="2s")
    port = rp.ports[name]
    c = engine.connect(port)
    engine.setup(c)
    engine.close(c)
    old = lab.primary(name)
    finisher, stuck = engine.connect(port), engine.connect(port)
    ids = {engine.conn_id(finisher), engine.conn_id(stuck)}
    if name == "mysql":
        for conn in (finisher, stuck):
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT 1")
    else:
        for conn in (finisher, stuck):
            conn.execute_command("MULTI")
            conn.execute_command("GET", "k")
    t0 = time.time()
    lab.switchover(name)
    new = lab.primary(name)
    rp.wait_writer(name, f"127.0.0.1:{new.port}")
    # The finisher completes its transaction on the old writer (a read-only one succeeds), then is closed.
    if name == "mysql":
        with finisher.cursor() as cur:
            cur.execute("COMMIT")
    else:
        finisher.execute_command("EXEC")
    if name == "mysql":
        wait_for(lambda: rp.service(name)["counters"]["drained_idle"] >= 1, 5,
                 what="the finisher to be drained at its idle point")
    else:
        # A Redis session without connection state is not closed at its idle point but moved to
        # the new writer: the same connection keeps working.
        wait_for(lambda: rp.service(name)["counters"]["migrated"] >= 1, 5, what="the finisher to move")
        assert engine.server_port(finisher) == new.port
    wait_for(lambda: rp.service(name)["counters"]["drained_timeout"] >= 1, 10, what="the stuck session to be drained at drain_timeout")
    assert time.time() - t0 >= 1.5  # not before drain_timeout (2s) from the switchover's detection
    direct = engine.connect(old.port)
    wait_for(lambda: engine.live_ids(direct, ids) == set(), 5, what="the old writer to have none of the sessions")
    engine.close(direct)
    for conn in (finisher, stuck):
        engine.close(conn)
