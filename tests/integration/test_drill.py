"""`repoint drill` against the lab: real failovers of static members for each engine (checked on the
nodes themselves and against an independent client loop), the gate, the dry run, the admin API,
and the AWS kinds against the emulator when it is available."""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import REPOINT_BIN, free_port, wait_for
from labkit.clients import ENGINES, WriterLoop

ENGINE_NAMES = ["postgres", "mysql", "redis"]
# Generous: the suite runs on a small shared machine, twice (plain and ASan).
MAX_OUTAGE_S = 10.0
DRILL_TIMEOUT_S = 180
# MariaDB: the lab's application user may not change read_only (it lacks READ_ONLY ADMIN, so that
# writes fail on a replica as they should); the drill promotes as a user that may.
PROMOTE_USER, PROMOTE_PASSWORD = "repoint_drill", "repoint_drill"


def addr(node):
    return f"127.0.0.1:{node.port}"


@pytest.fixture(scope="module")
def promote_user(lab):
    eng = lab._engine("mysql")
    eng.q(lab.primary("mysql"), f"CREATE USER IF NOT EXISTS '{PROMOTE_USER}'@'%' IDENTIFIED BY '{PROMOTE_PASSWORD}'",
          f"GRANT ALL PRIVILEGES ON *.* TO '{PROMOTE_USER}'@'%'")
    lab.verify("mysql")
    return PROMOTE_USER


def drill_env():
    env = dict(os.environ)
    env["REPOINT_DRILL_PROMOTE_PASSWORD"] = PROMOTE_PASSWORD
    return env


def drill_args(cfg, name, *extra):
    args = [REPOINT_BIN, "drill", "-c", cfg, "--service", name]
    if name == "mysql":
        args += ["--promote-user", PROMOTE_USER]
    return args + list(extra)


def run_drill(cfg, name, *extra, timeout=DRILL_TIMEOUT_S):
    p = subprocess.run(drill_args(cfg, name, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=drill_env(), timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def check_sanitizers(text):
    assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text and "LeakSanitizer" not in text, \
        text[-6000:]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def repair(lab, name, new_primary):
    """Leave the lab healthy: one primary, every other node replicating from it."""
    if name == "postgres":
        # The drill left the old primary's new transactions read-only (postgresql.auto.conf): reset it
        # before it rejoins, or a later promotion of that node makes a read-only primary.
        eng = lab._engine("postgres")
        for n in lab.nodes("postgres"):
            if n.alive() and eng.q(n, "SHOW default_transaction_read_only")[0] == "on":
                eng.q(n, "ALTER SYSTEM RESET default_transaction_read_only", fetch=None)
                eng.q(n, "SELECT pg_reload_conf()")
        lab.repoint("postgres", primary=new_primary)   # the old primary is rewound onto the new timeline
    wait_for(lambda: lab.primaries(name) == [new_primary], 30, what=f"{name}: {new_primary} the only primary")
    lab.verify(name)


def a_replica(lab, name):
    p = lab.primary(name)
    return next(n for n in lab.nodes(name) if n.name != p.name and n.alive() and n.role() == "replica")


class AckedInserts:
    """Postgres through repoint, for a WriterLoop: one row per write, never overwritten, and the writes the
    application got an acknowledgement for."""
    TABLE = "repoint_drill_acked"

    def __init__(self):
        self.pg, self.acked = ENGINES["postgres"], []

    def connect(self, port):
        return self.pg.connect(port)

    def close(self, conn):
        self.pg.close(conn)

    def setup(self, conn):
        with conn.cursor() as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (tag text, seq int, PRIMARY KEY (tag, seq))")

    def write(self, conn, key, value):
        with conn.cursor() as c:
            c.execute(f"INSERT INTO {self.TABLE} VALUES (%s, %s)", (key, int(value)))
        self.acked.append(int(value))


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_static_drill_fails_over(lab, tmp_path, promote_user, name):
    engine = ENGINES[name]
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "drill.ini")
    ports = lab.write_config(cfg, admin=f"127.0.0.1:{free_port()}")     # nobody answers there: in-process
    port = ports[name]
    old, target = lab.primary(name), a_replica(lab, name)
    out_json, out_svg = str(tmp_path / "report.json"), str(tmp_path / "report.svg")
    # --max-outage 1ms: the gate must say 1 exactly when the report shows an outage above 1 ms.
    proc = subprocess.Popen(drill_args(cfg, name, "--target", addr(target), "--yes", "--json", out_json,
                                       "--svg", out_svg, "--warmup", "3s", "--duration-after", "6s",
                                       "--max-outage", "1ms"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=drill_env())
    loop = acked = inserts = None
    try:
        wait_for(lambda: listening(port), 20, what="the drill's listener")
        c = engine.connect(port)
        engine.setup(c)
        engine.close(c)
        # An independent application through the same listener, in the same run.
        loop = WriterLoop(engine, port, name=f"py-{time.time_ns()}")
        loop.start()
        if name == "postgres":
            # ... and one that keeps every row it wrote: a switchover loses none that was acknowledged.
            inserts = AckedInserts()
            c = inserts.connect(port)
            inserts.setup(c)
            inserts.close(c)
            acked = WriterLoop(inserts, port, name=f"acked-{time.time_ns()}")
            acked.start()
        try:
            wait_for(lambda: target.name in lab.primaries(name), 60, what=f"{target.name} to be primary")
        except AssertionError:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("no failover: %s\n%s" % (out.decode(errors="replace"), err.decode(errors="replace")[-3000:]))
        t_seen = time.time()
        wait_for(lambda: len([t for t in loop.successes() if t > t_seen]) >= 20, 30,
                 what="the independent client to write again")
        loop.stop()
        if acked is not None:
            acked.stop()
        stdout, stderr = proc.communicate(timeout=DRILL_TIMEOUT_S)
    finally:
        for w in (loop, acked):
            if w is not None and w.is_alive():
                w.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    check_sanitizers(stderr)
    with open(out_json) as f:
        result = json.load(f)
    run = result["runs"][0]
    assert run["status"] == "completed", (run["status"], run.get("error"), stdout, stderr[-3000:])
    worst = result["summary"]["outage_ms"]["max"]
    assert proc.returncode == (1 if worst > 1 else 0), (proc.returncode, worst, stdout)
    if worst > 1:
        assert "GATE BREACHED: outage" in stdout and result["gate"]["passed"] is False
    # The nodes themselves say the target is the primary now.
    assert target.name in lab.primaries(name), lab.roles(name)
    if name != "postgres":      # Postgres: the old primary runs on on its old timeline (see the note)
        assert lab.roles(name)[old.name] == "replica", lab.roles(name)
    else:
        assert any("timeline" in n and "RESET default_transaction_read_only" in n for n in run["failover"]["notes"]), \
            run["failover"]
        # The switchover: the old primary's new transactions read-only, the target caught up with its WAL,
        # only then promoted -- and the old primary stays read-only (fenced by timeline and by that).
        steps = run["failover"]["steps"]
        assert all(st["ok"] for st in steps), steps
        cmds = [(st["member"], st["command"]) for st in steps]
        ro = cmds.index((addr(old), "ALTER SYSTEM SET default_transaction_read_only = on"))
        catchup = next(i for i, (m, cmd) in enumerate(cmds) if m == addr(target) and "pg_last_wal_replay_lsn()" in cmd)
        promote = cmds.index((addr(target), "SELECT pg_promote(true, 30)"))
        assert ro < catchup < promote, cmds
        assert "'::pg_lsn" in cmds[catchup][1] and "<" not in cmds[catchup][1].split(">=")[1], cmds[catchup]
        pg = lab._engine("postgres")
        assert pg.q(old, "SHOW default_transaction_read_only")[0] == "on"
        # Every write acknowledged through repoint is on the new writer (with pg_promote alone, the old
        # primary took writes until repoint saw the new timeline, and they were lost).
        assert len(inserts.acked) > 100, len(inserts.acked)
        rows = {r[0] for r in pg.q(target, f"SELECT seq FROM {AckedInserts.TABLE} WHERE tag = %s", (acked.tag,),
                                   fetch="all")}
        lost = sorted(set(inserts.acked) - rows)
        assert not lost, (len(lost), lost[:20], len(inserts.acked), acked.errors()[:5])
    assert run["failover"]["to"] == addr(target) and run["failover"]["new_writer"] == addr(target)
    ev = run["events"]
    for k in ("failover_requested", "api_answered", "new_writer_confirmed", "cluster_available"):
        assert k in ev, (k, ev)
    assert ev["failover_requested"] <= ev["new_writer_confirmed"]
    assert run["outage"]["recovered"] is True
    assert run["outage"]["overall_ms"] < MAX_OUTAGE_S * 1000
    assert run["requests"]["total"] > 100 and run["requests"]["ok"] > 0
    assert sum(run["errors"]["by_kind"].values()) == run["errors"]["total"]
    # Agreement with the independent client (generous: different pacing, clocks and timing).
    py_gap = loop.outage(after=loop_after(loop, run))[0] * 1000.0
    long_clients = [c for c in run["outage"]["per_client"] if c["mode"] == "long"]
    drill_gap = max(c["outage_ms"] for c in long_clients)
    assert py_gap < MAX_OUTAGE_S * 1000 and drill_gap < MAX_OUTAGE_S * 1000
    assert abs(py_gap - drill_gap) <= 2000, (py_gap, drill_gap)
    py_errors = len([t for t, e in loop.errors()])
    drill_errors = sum(c["errors"] for c in long_clients) / max(1, len(long_clients))
    assert abs(py_errors - drill_errors) <= 3, (py_errors, drill_errors, loop.errors(), run["errors"]["samples"])
    # The picture is there, well-formed, and names the events.
    import xml.dom.minidom
    svg = open(out_svg).read()
    xml.dom.minidom.parseString(svg)
    assert "failover requested" in svg and "new writer confirmed" in svg
    assert "repoint drill: service %s" % name in stdout and "outage" in stdout
    if name == "redis":
        # The drill's writes carry a TTL: nothing of it stays in the cluster for long.
        c = lab.connect("redis", target.name)
        keys = c.keys("repoint:drill:*")
        assert keys and all(0 < c.ttl(k) <= 3600 for k in keys), keys[:5]
    repair(lab, name, target.name)


def loop_after(loop, run):
    """The wall-clock time of the failover request, from the report (epoch seconds)."""
    import calendar
    started = calendar.timegm(time.strptime(run["started_at"][:19], "%Y-%m-%dT%H:%M:%S")) + \
        int(run["started_at"][20:23]) / 1000.0
    return started + run["events"]["failover_requested"] / 1000.0


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_dry_run_changes_nothing(lab, tmp_path, promote_user, name):
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "drill.ini")
    lab.write_config(cfg, admin=f"127.0.0.1:{free_port()}")
    before = lab.roles(name)
    rc, out, err = run_drill(cfg, name, "--dry-run", "--json", str(tmp_path / "dry.json"))
    check_sanitizers(err)
    assert rc == 0, (out, err)
    assert "dry run: nothing was changed" in out
    expected = {"postgres": "SELECT pg_promote(true, 30)", "mysql": "MASTER_GTID_WAIT",
                "redis": "REPLICAOF NO ONE"}[name]
    assert expected in out, out
    if name == "postgres":      # the old writer stops taking writes before anything is promoted
        assert out.index("ALTER SYSTEM SET default_transaction_read_only = on") < out.index(expected), out
        assert "ALTER SYSTEM RESET default_transaction_read_only" in out, out
    assert lab.roles(name) == before
    with open(tmp_path / "dry.json") as f:
        result = json.load(f)
    assert result["runs"][0]["status"] == "dry_run" and result["runs"][0]["requests"]["total"] == 0
    # A real drill needs --yes; a target that is not a member is refused before anything happens.
    rc, out, err = run_drill(cfg, name)
    assert rc == 2 and "--yes" in err
    rc, out, err = run_drill(cfg, name, "--dry-run", "--target", "127.0.0.1:1")
    assert rc == 3 and "is not a member" in out, (rc, out, err)
    assert lab.roles(name) == before


def admin_call(port, method, path, body=None, token=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def with_token(rp, tmp_path, token="s3cret"):
    """The same configuration plus an admin_token, started on the same (now free) ports."""
    from conftest import Repoint
    rp.stop()
    text = open(rp.config_path).read().replace("[repoint]\n", "[repoint]\nadmin_token = %s\n" % token, 1)
    cfg = str(tmp_path / "token.ini")
    with open(cfg, "w") as f:
        f.write(text)
    rp2 = Repoint(cfg, rp.admin_port, rp.ports)
    wait_for(lambda: rp2.status(), 10, what="repoint's admin API")
    for name in rp.ports:
        rp2.wait_writer(name)
    return rp2


def test_drill_through_admin_api(lab, start_repoint, tmp_path):
    rp = start_repoint()
    old, target = lab.primary("redis"), a_replica(lab, "redis")
    # Without an admin_token configured, nothing that changes the cluster is accepted, whatever is sent.
    for body in ({"service": "redis"}, {"service": "redis", "yes": True}, {"service": "redis", "dry_run": True}):
        st, answer = admin_call(rp.admin_port, "POST", "/drills", body)
        assert st == 403 and "set admin_token" in answer["error"], answer
    rc, out, err = run_drill(rp.config_path, "redis", "--yes", "--duration-after", "500ms")
    assert rc != 0 and "admin_token" in err, (out, err)
    assert lab.primary("redis").name == old.name, "no drill ran"
    rp = with_token(rp, tmp_path)
    tok = "s3cret"
    st, body = admin_call(rp.admin_port, "POST", "/drills", {"service": "nope", "yes": True}, token=tok)
    assert st == 404
    st, body = admin_call(rp.admin_port, "POST", "/drills", {"service": "redis", "clients": 0, "yes": True},
                          token=tok)
    assert st == 400 and "clients" in body["error"]
    # The drill runs inside that repoint, through its own listener, and answers when done.
    st, body = admin_call(rp.admin_port, "POST", "/drills?wait=1",
                          {"service": "redis", "target": addr(target), "yes": True, "duration_after_ms": 1000},
                          token=tok)
    assert st == 200, body
    report = body["report"]
    assert report["status"] == "completed", report
    assert report["failover"]["new_writer"] == addr(target)
    assert report["listen"] == f"127.0.0.1:{rp.ports['redis']}"
    assert lab.roles("redis")[target.name] == "primary" and lab.roles("redis")[old.name] == "replica"
    rp.wait_writer("redis", addr(target))
    st, listing = admin_call(rp.admin_port, "GET", "/drills")
    assert st == 200 and any(d["id"] == body["id"] for d in listing["drills"])
    # One drill per service at a time.
    st, first = admin_call(rp.admin_port, "POST", "/drills", {"service": "redis", "yes": True,
                                                               "duration_after_ms": 500}, token=tok)
    assert st == 202 and first["status"] == "running"
    st, second = admin_call(rp.admin_port, "POST", "/drills", {"service": "redis", "yes": True}, token=tok)
    assert st == 409, second
    done = wait_for(lambda: (lambda r: r[1] if r[1]["status"] != "running" else None)(
        admin_call(rp.admin_port, "GET", first["href"])), 120, interval=0.2, what="the second drill")
    assert done["report"]["status"] == "completed", done["report"]
    # The CLI hands the drill to the running repoint.
    rc, out, err = run_drill(rp.config_path, "redis", "--yes", "--duration-after", "500ms")
    check_sanitizers(err)
    assert rc == 0, (out, err)
    assert "drill handed to the repoint" in err and "completed" in out
    lab.verify("redis")
    rp.stop()


def test_admin_token(lab, start_repoint, tmp_path):
    rp = start_repoint()
    rp.stop()
    # Same configuration plus a token, on fresh ports.
    text = open(rp.config_path).read().replace("[repoint]\n", "[repoint]\nadmin_token = s3cret\n", 1)
    cfg = str(tmp_path / "token.ini")
    with open(cfg, "w") as f:
        f.write(text)
    from conftest import Repoint
    rp2 = Repoint(cfg, rp.admin_port, rp.ports)
    try:
        wait_for(lambda: rp2.status(), 10, what="repoint's admin API")
        st, body = admin_call(rp.admin_port, "POST", "/drills", {"service": "redis", "dry_run": True})
        assert st == 401, body
        st, body = admin_call(rp.admin_port, "POST", "/drills?wait=1", {"service": "redis", "dry_run": True},
                              token="wrong")
        assert st == 401
        st, body = admin_call(rp.admin_port, "POST", "/drills?wait=1", {"service": "redis", "dry_run": True},
                              token="s3cret")
        assert st == 200 and body["report"]["status"] == "dry_run", body
    finally:
        rp2.stop()


# ---- AWS kinds, against the lab's emulated control plane ----------------------------------------

@pytest.fixture(scope="module")
def aws(lab):
    try:
        lab.aws_up()
    except Exception as e:  # noqa: BLE001 - the emulator is optional for this suite
        pytest.skip(f"the AWS emulator is not available: {e}")
    try:
        yield lab
    finally:
        # Like the other modules: the next one starts its own (with its own delays).
        lab.aws_down()


def aws_drill(lab, tmp_path, service, *extra):
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "aws.ini")
    lab.write_aws_config(cfg, admin=f"127.0.0.1:{free_port()}", services=[service])
    env = dict(os.environ)
    env.update(lab.aws_env())
    out_json = str(tmp_path / f"{service}.json")
    p = subprocess.run([REPOINT_BIN, "drill", "-c", cfg, "--service", service, "--json", out_json,
                        "--duration-after", "1s", "--ledger", str(tmp_path / "ledger.json")] + list(extra),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=DRILL_TIMEOUT_S)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    check_sanitizers(err)
    result = json.load(open(out_json)) if os.path.exists(out_json) else None
    return p.returncode, out, err, result


AWS_KINDS = [
    ("postgres", "FailoverDBCluster", {"DBClusterIdentifier": "lab-postgres"}),
    ("redis", "TestFailover", {"ReplicationGroupId": "lab-redis", "NodeGroupId": "0001"}),
    ("redis-global", "FailoverGlobalReplicationGroup", {"GlobalReplicationGroupId": "lab-global",
                                                         "PrimaryRegion": "us-west-2",
                                                         "PrimaryReplicationGroupId": "lab-gd-west"}),
    ("memorydb-0001", "FailoverShard", {"ClusterName": "lab-memorydb", "ShardName": "0001"}),
]


@pytest.mark.parametrize("service,action,params", AWS_KINDS, ids=[k[0] for k in AWS_KINDS])
def test_aws_drill(aws, tmp_path, service, action, params):
    lab = aws
    assert lab.aws_wait_idle(60)
    seq = lab.aws_calls_clear()
    rc, out, err, result = aws_drill(lab, tmp_path, service, "--dry-run")
    assert rc == 0 and action in out, (out, err)
    assert not lab.aws_calls(action=action, since=seq), "a dry run must not call " + action
    rc, out, err, result = aws_drill(lab, tmp_path, service, "--yes")
    assert rc == 0, (out, err[-3000:])
    run = result["runs"][0]
    assert run["status"] == "completed" and run["failover"]["method"] == action, run
    calls = lab.aws_calls(action=action, since=seq)
    assert len(calls) == 1, calls
    if service != "redis-global":
        for k, v in params.items():
            assert calls[0]["params"].get(k) == v, (k, calls[0]["params"])
    else:
        assert calls[0]["params"]["GlobalReplicationGroupId"] == "lab-global"
        assert calls[0]["params"]["PrimaryRegion"] in ("us-east-1", "us-west-2")
    assert run["failover"].get("request_id") == calls[0]["request_id"]
    for k in ("failover_requested", "api_answered", "new_writer_confirmed", "cluster_available"):
        assert k in run["events"], (k, run["events"])
    assert run["outage"]["recovered"] is True
    if action in ("TestFailover", "FailoverShard"):
        ledger = json.load(open(tmp_path / "ledger.json"))
        assert len(ledger["entries"]) == 1 and ledger["entries"][0]["api"] in ("elasticache", "memorydb")
    assert lab.aws_wait_idle(60)


@pytest.mark.parametrize("service,action,code", [
    ("postgres", "FailoverDBCluster", "InvalidDBClusterStateFault"),
    ("redis", "TestFailover", "TestFailoverNotAvailableFault"),
], ids=["rds", "elasticache"])
def test_aws_error_ends_drill_cleanly(aws, tmp_path, service, action, code):
    lab = aws
    assert lab.aws_wait_idle(60)
    engine = "postgres" if service == "postgres" else "redis"
    before = lab.roles(engine)
    seq = lab.aws_calls_clear()
    lab.aws_fault(action=action, kind="error", code=code, status=400, message="injected by the drill test")
    try:
        rc, out, err, result = aws_drill(lab, tmp_path, service, "--yes")
    finally:
        lab.aws_faults_clear()
    assert rc == 3, (rc, out, err[-2000:])
    run = result["runs"][0]
    assert run["status"] == "failed" and run["error"]["code"] == code, run["error"]
    assert code in out
    # The load stopped with the answer, and nothing changed.
    assert run["events"]["load_stopped"] - run["events"]["api_answered"] < 1000
    assert run["errors"]["total"] == 0
    assert len(lab.aws_calls(action=action, since=seq)) == 1
    assert lab.aws_wait_idle(30)
    assert lab.roles(engine) == before


def test_aws_ledger_refuses_past_the_limit(aws, tmp_path):
    lab = aws
    now = int(time.time() * 1000)
    with open(tmp_path / "ledger.json", "w") as f:
        json.dump({"entries": [{"at": now - i * 60000, "api": "elasticache", "what": "lab-redis/0001"}
                               for i in range(15)]}, f)
    seq = lab.aws_calls_clear()
    rc, out, err, result = aws_drill(lab, tmp_path, "redis", "--yes")
    assert rc == 3, (out, err)
    assert result["runs"][0]["error"]["code"] == "TestFailoverLedgerFull"
    assert "15 elasticache test failovers" in out
    assert not lab.aws_calls(action="TestFailover", since=seq)


def test_static_postgres_drills_run_one_at_a_time(lab, tmp_path):
    """A static Postgres drill leaves the old primary on its timeline (only pg_rewind on its own host makes it a
    standby again): --runs 2 is refused before anything is touched, and says why."""
    os.chmod(tmp_path, 0o755)
    cfg = str(tmp_path / "drill.ini")
    lab.write_config(cfg, admin=f"127.0.0.1:{free_port()}")
    before = lab.roles("postgres")
    rc, out, err = run_drill(cfg, "postgres", "--runs", "2", "--yes")
    assert rc != 0 and "one at a time" in out + err and "pg_rewind" in out + err, (rc, out, err)
    assert lab.roles("postgres") == before

