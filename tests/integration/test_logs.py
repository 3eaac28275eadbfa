"""Logs: `log_format = json` lines carry fields (service, session, client, member, event, reason,
duration_ms), not only a message; at info level a connection's everyday life is not logged."""
import json

from labkit.clients import ENGINES
from conftest import wait_for


def json_lines(rp):
    return [json.loads(line) for line in rp.logtext().splitlines() if line.startswith("{")]


def test_json_logs_carry_fields(lab, start_repoint):
    rp = start_repoint(log_level="debug", log_format="json")
    engine = ENGINES["redis"]
    c = engine.connect(rp.ports["redis"])
    engine.echo(c, "x")
    old = lab.primary("redis")
    lab.switchover("redis")
    new = lab.primary("redis")
    rp.wait_writer("redis", f"127.0.0.1:{new.port}")
    engine.echo(c, "y")
    engine.close(c)
    wait_for(lambda: any(r.get("event") == "failover" for r in json_lines(rp)), 10, what="the failover line")
    lines = json_lines(rp)
    assert lines and all({"ts", "level", "subject", "msg"} <= set(r) for r in lines)
    active = [r for r in lines if r.get("event") == "active" and r.get("service") == "redis"]
    assert active, lines[-20:]
    r = active[0]
    assert isinstance(r["session"], int) and r["client"].startswith("127.0.0.1:") and r["member"].startswith("127.0.0.1:")
    fo = next(r for r in lines if r.get("event") == "failover")
    assert fo["service"] == "redis" and fo["member"] == f"127.0.0.1:{new.port}" and isinstance(fo["duration_ms"], int)
    lost = next(r for r in lines if r.get("event") == "writer_lost")
    assert lost["member"] == f"127.0.0.1:{old.port}" and lost["reason"]


def test_info_logs_say_nothing_per_connection(lab, start_repoint):
    rp = start_repoint()
    engine = ENGINES["postgres"]
    for _ in range(100):
        c = engine.connect(rp.ports["postgres"])
        engine.echo(c, "x")
        engine.close(c)
    wait_for(lambda: rp.service("postgres")["counters"]["closed"] >= 100, 20, what="the connections closed")
    assert "client#" not in rp.logtext(), [l for l in rp.logtext().splitlines() if "client#" in l][:5]
