"""Services that name a cluster instead of members: repoint follows the lab's AWS-compatible control
plane (RDS, ElastiCache, Global Datastore, MemoryDB) through real failovers, with probes confirming
and without (the control plane's word alone), and keeps routing when the control plane misbehaves."""
import json
import os
import subprocess
import time

import pytest

from labkit.clients import ENGINES, WriterLoop
from conftest import REPOINT_BIN, KeyWriters, Repoint, free_port, record_notice, record_outage, wait_for

@pytest.fixture(scope="module")
def aws(lab):
    url = lab.aws_up(delays={"promote": 0.3, "settle": 0.3})
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED",
                                            "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env = lab.aws_env()
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        lab.aws_down()


def start_sources(tmp_path, url, services, poll="300ms", aws_extra="", extra=""):
    admin = free_port()
    text = (f"[repoint]\nadmin = 127.0.0.1:{admin}\nshutdown_timeout = 5s\n{extra}\n"
            f"[aws]\nregion = us-east-1\nendpoint_url = {url}\npoll_interval = {poll}\nfailover_poll_interval = 100ms\n"
            f"{aws_extra}\n")
    ports = {}
    for name, body in services.items():
        ports[name] = free_port()
        text += f"[service {name}]\nlisten = 127.0.0.1:{ports[name]}\nprobe_interval = 100ms\nhold_timeout = 60s\n{body}\n"
    path = tmp_path / "sources.ini"
    path.write_text(text)
    rp = Repoint(str(path), admin, ports)
    wait_for(lambda: rp.status(), 10, what="admin API")
    return rp


def aws_cli(*args):
    r = subprocess.run(["aws", "--endpoint-url", os.environ["AWS_ENDPOINT_URL"], "--output", "json", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else None


def last_op(lab):
    ops = lab.aws_state()["ops"]
    return ops[-1]


def follow(lab, rp, service, engine_name, trigger, new_port, kind):
    """Write through repoint, trigger the failover, wait until repoint routes to new_port; record how
    long after the promotion repoint noticed, and what the clients saw."""
    engine = ENGINES[engine_name]
    c = engine.connect(rp.ports[service])
    engine.setup(c)
    engine.close(c)
    loops = [WriterLoop(engine, rp.ports[service], name=f"src-{service}-{i}-{time.time_ns()}") for i in range(2)]
    for w in loops:
        w.start()
    wait_for(lambda: all(w.successes() for w in loops), 20, what="writers to start")
    t0 = time.time()
    trigger()
    wait_for(lambda: rp.service(service)["writer"] == f"127.0.0.1:{new_port}" and rp.service(service)["writer_ready"],
             60, interval=0.005, what=f"{service} to follow the failover to port {new_port}")
    seen = time.time()
    assert lab.aws_wait_idle(60)
    op = last_op(lab)
    wait_for(lambda: all(len([t for t in w.successes() if t > seen]) >= 10 for w in loops), 30,
             what="writers to succeed after the failover")
    for w in loops:
        w.stop()
    notice_ms = (seen - op["promoted_at"]) * 1000 if op.get("promoted_at") else None
    outage = max(w.outage(after=t0)[0] for w in loops)
    errors = sum(len([e for t, e in w.errors() if t >= t0]) for w in loops)
    if notice_ms is not None:
        record_notice(kind, "probes", notice_ms)
    record_outage(engine_name, kind, outage, errors, f"noticed {notice_ms:.0f} ms after the promotion" if notice_ms else "")
    return notice_ms


def test_rds_with_probes_and_api_only(lab, aws, tmp_path):
    rp = start_sources(tmp_path, aws, {
        "pg": "protocol = postgres\nsource = rds:lab-postgres\nprobe_user = postgres\nprobe_database = postgres\n",
        "pgapi": "protocol = postgres\nsource = rds:lab-postgres\nprobes = off\n",
    })
    try:
        primary = lab.primary("postgres")
        for s in ("pg", "pgapi"):
            rp.wait_writer(s, f"127.0.0.1:{primary.port}")
            st = rp.service(s)
            assert {m["id"] for m in st["members"]} == {"pg1", "pg2", "pg3"}
            assert st["source"]["status"] == "available"
        target = next(n for n in lab.nodes("postgres") if n.name != primary.name and n.alive())
        notice = follow(lab, rp, "pg", "postgres",
                        lambda: aws_cli("rds", "failover-db-cluster", "--db-cluster-identifier", "lab-postgres",
                                        "--target-db-instance-identifier", target.name),
                        target.port, "rds+probes")
        assert notice is not None and notice < 10000
        # The API-only service follows too, at the control plane's pace.
        rp.wait_writer("pgapi", f"127.0.0.1:{target.port}", timeout=30)
        record_notice("rds", "api-only", (time.time() - last_op(lab)["promoted_at"]) * 1000)
        c = ENGINES["postgres"].connect(rp.ports["pgapi"])
        assert ENGINES["postgres"].server_port(c) == target.port
        c.close()
    finally:
        rp.stop()


def test_elasticache_and_memorydb_follow_failovers(lab, aws, tmp_path):
    rp = start_sources(tmp_path, aws, {
        "ec": "protocol = redis\nsource = elasticache:lab-redis\n",
        "ecapi": "protocol = redis\nsource = elasticache:lab-redis\nprobes = off\n",
        "mdb": "protocol = redis\nsource = memorydb:lab-memorydb\nshard = 0001\n",
        "gd": "protocol = redis\nsource = elasticache-global:lab-global\n",
    })
    try:
        primary = lab.primary("redis")
        rp.wait_writer("ec", f"127.0.0.1:{primary.port}")
        # TestFailover picks the replica itself; clients write through repoint all along.
        before = rp.writer("ec")
        loops = [WriterLoop(ENGINES["redis"], rp.ports["ec"], name=f"ec-{i}") for i in range(2)]
        for w in loops:
            w.start()
        t0 = time.time()
        aws_cli("elasticache", "test-failover", "--replication-group-id", "lab-redis", "--node-group-id", "0001")
        wait_for(lambda: rp.service("ec")["writer"] not in (None, before) and rp.service("ec")["writer_ready"], 60,
                 interval=0.005, what="ec to follow TestFailover")
        seen = time.time()
        assert lab.aws_wait_idle(60)
        op = last_op(lab)
        assert rp.writer("ec") == f"127.0.0.1:{lab.primary('redis').port}"
        wait_for(lambda: all(len([t for t in w.successes() if t > seen]) >= 10 for w in loops), 30,
                 what="writers after TestFailover")
        for w in loops:
            w.stop()
        notice = (seen - op["promoted_at"]) * 1000 if op.get("promoted_at") else None
        if notice is not None:
            record_notice("elasticache", "probes", notice)
        rp.wait_writer("ecapi", rp.writer("ec"), timeout=30)
        record_notice("elasticache", "api-only", (time.time() - op["promoted_at"]) * 1000)
        record_outage("redis", "elasticache", max(w.outage(after=t0)[0] for w in loops),
                      sum(len(w.errors()) for w in loops), f"noticed {notice:.0f} ms after the promotion" if notice else "")

        mdb = rp.wait_writer("mdb")
        assert len(rp.service("mdb")["members"]) == 2   # the pinned shard only
        aws_cli("memorydb", "failover-shard", "--cluster-name", "lab-memorydb", "--shard-name", "0001")
        wait_for(lambda: rp.service("mdb")["writer"] not in (None, mdb) and rp.service("mdb")["writer_ready"], 60,
                 interval=0.005, what="mdb to follow FailoverShard")
        seen = time.time()
        assert lab.aws_wait_idle(60)
        record_notice("memorydb", "probes", (seen - last_op(lab)["promoted_at"]) * 1000)

        gd = rp.wait_writer("gd")
        aws_cli("elasticache", "failover-global-replication-group", "--global-replication-group-id", "lab-global",
                "--primary-region", "us-west-2", "--primary-replication-group-id", "lab-gd-west")
        wait_for(lambda: rp.service("gd")["writer"] not in (None, gd) and rp.service("gd")["writer_ready"], 60,
                 interval=0.005, what="gd to follow the Global Datastore failover")
        seen = time.time()
        assert lab.aws_wait_idle(60)
        record_notice("elasticache-global", "probes", (seen - last_op(lab)["promoted_at"]) * 1000)
        c = ENGINES["redis"].connect(rp.ports["gd"])
        ENGINES["redis"].write(c, "global-key", "v")
        c.close()
    finally:
        rp.stop()


def test_control_plane_faults_keep_the_last_topology(lab, aws, tmp_path):
    rp = start_sources(tmp_path, aws, {"ec": "protocol = redis\nsource = elasticache:lab-redis\n"}, poll="100ms")
    try:
        writer = rp.wait_writer("ec")
        for kind in ("throttle", "500", "malformed", "truncated"):
            lab.aws_fault(action="DescribeReplicationGroups", kind=kind, count=-1)
            wait_for(lambda: rp.service("ec")["source"]["last_error"] is not None and
                     rp.service("ec")["source"]["failures"] >= 1, 30, what=f"a failed poll ({kind})")
            # Still routing on the last known topology.
            assert rp.writer("ec") == writer and rp.service("ec")["writer_ready"]
            c = ENGINES["redis"].connect(rp.ports["ec"])
            ENGINES["redis"].write(c, "k", kind)
            c.close()
            lab.aws_faults_clear()
        assert 'repoint_source_failures_total{service="ec"}' in rp.metrics()
        assert rp.service("ec")["source"]["throttles"] >= 1
    finally:
        lab.aws_faults_clear()
        rp.stop()



def test_in_transit_encryption_from_the_control_plane_turns_tls_on(lab, aws, tmp_path):
    """ElastiCache TransitEncryptionEnabled / MemoryDB TLSEnabled make repoint use TLS (verify-full) to the
    members unless the configuration says `tls`. The emulator's nodes are plaintext, so once the flag is
    on, repoint (TLS now) can no longer reach them -- and says why -- while a service with `tls = off`
    configured keeps working: the configuration wins."""
    lab.aws_configure(transit_encryption=True)
    try:
        rp = start_sources(tmp_path, aws, {"ec": "protocol = redis\nsource = elasticache:lab-redis\n",
                                           "mdb": "protocol = redis\nsource = memorydb:lab-memorydb\n",
                                           "ecoff": "protocol = redis\nsource = elasticache:lab-redis\ntls = off\n"})
        try:
            for name in ("ec", "mdb"):
                wait_for(lambda: all("TLS handshake" in m["probe"]["detail"] for m in rp.service(name)["members"]),
                         20, what="%s's probes to go over TLS" % name)
                assert not rp.service(name)["writer_ready"], "never plaintext to a member that the API says is TLS"
            rp.wait_writer("ecoff")
            assert rp.logtext().count("in-transit encryption is on") == 2
        finally:
            rp.stop()
    finally:
        lab.aws_configure(transit_encryption=False)


@pytest.mark.parametrize("kind", ["elasticache", "memorydb"])
def test_cluster_from_a_source(lab, aws, redis_cluster, tmp_path, kind):
    """An ElastiCache cluster-mode-enabled replication group, or a MemoryDB cluster, over a real
    3-shard Redis Cluster, named as `source` with `cluster = on` and no members: the control plane's
    nodes are the seeds, the slot map puts them in shards, the probes find each shard's primary (the
    API says nothing of roles in cluster mode). A TestFailover / FailoverShard of one node group
    through the aws CLI, under clients writing keys of every shard: 0 errors."""
    import redis as redispy
    cid = {"elasticache": "labcc", "memorydb": "labmdb"}[kind]
    nodes = []
    for i in range(3):
        primary, replicas = redis_cluster.shard_nodes(i)
        nodes += [{"shard": "%04d" % (i + 1), "host": "127.0.0.1", "port": p} for p in [primary] + replicas]
    lab.aws_configure(redis_clusters=[{"kind": kind, "id": cid, "nodes": nodes}])
    rp = None
    try:
        rp = start_sources(tmp_path, aws, {"cache": f"protocol = redis\nsource = {kind}:{cid}\ncluster = on\n"
                                                    "failover_probe_interval = 20ms\n"},
                           extra="admin_token = s3cret")
        wait_for(lambda: (rp.service("cache").get("cluster") or {}).get("ready"), 30,
                 what="the cluster's shards and primaries from the source's seeds")
        s = rp.service("cache")
        assert len(s["cluster"]["shards"]) == 3 and len(s["members"]) == 6
        assert {sh["primary"] for sh in s["cluster"]["shards"]} == {f"127.0.0.1:{p}" for _, p in redis_cluster.primaries()}
        old, _ = redis_cluster.shard_nodes(1)
        clients = [redispy.Redis(host="127.0.0.1", port=rp.ports["cache"], socket_timeout=30) for _ in range(2)]
        keys = [[[redis_cluster.key_in_shard(i, f"src{w}", j) for j in range(20)] for i in range(3)] for w in range(2)]
        with KeyWriters(clients, lambda w, n: keys[w][n % 3][n // 3 % 20]) as kw:
            wait_for(lambda: min(kw.writes) > 20, 10, what="the writers to write")
            if kind == "elasticache":
                aws_cli("elasticache", "test-failover", "--replication-group-id", cid, "--node-group-id", "0002")
            else:
                aws_cli("memorydb", "failover-shard", "--cluster-name", cid, "--shard-name", "0002")
            wait_for(lambda: redis_cluster.shard_nodes(1)[0] != old, 60, what="the node group's failover")
            new = redis_cluster.shard_nodes(1)[0]
            wait_for(lambda: any(sh["primary"] == f"127.0.0.1:{new}" and sh["primary_ready"]
                                 for sh in rp.service("cache")["cluster"]["shards"]), 20,
                     what=f"repoint to follow the failover to {new}")
            assert lab.aws_wait_idle(60)
            seen = list(kw.writes)
            wait_for(lambda: all(kw.writes[w] > seen[w] + 20 for w in range(2)), 10, what="writes after the failover")
        errors, writes = kw.errors, kw.writes
        assert errors == []
        print(f"{kind}: writes {writes}, retried {rp.service('cache')['counters']['retried']}")
        # A drill of node group 0003 (the lab's shard 2): the control plane's failover call, the load
        # through the listener, the report's rows for repoint's shard that holds its nodes.
        old = redis_cluster.shard_nodes(2)[0]
        out_json = str(tmp_path / "drill.json")
        p = subprocess.run([REPOINT_BIN, "drill", "-c", rp.config_path, "--service", "cache", "--shard", "0003",
                            "--yes", "--json", out_json, "--warmup", "1s", "--duration-after", "2s",
                            "--ledger", str(tmp_path / "ledger.json")],   # the test's own, not the machine's
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, (p.stdout, p.stderr[-3000:])
        with open(out_json) as f:
            run = json.load(f)["runs"][0]
        assert run["status"] == "completed", run.get("error")
        drilled = [sh for sh in run["shards"] if sh["drilled"]]
        assert len(drilled) == 1 and drilled[0]["primary_before"] == f"127.0.0.1:{old}"
        assert drilled[0]["primary_after"] == f"127.0.0.1:{redis_cluster.shard_nodes(2)[0]}" != drilled[0]["primary_before"]
        assert all(sh["errors"] == 0 for sh in run["shards"]), run["shards"]
        assert lab.aws_wait_idle(60)
    finally:
        lab.aws_configure(redis_clusters=[])
        if rp is not None:
            rp.stop()
