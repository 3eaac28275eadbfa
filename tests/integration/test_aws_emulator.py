"""The lab's AWS control-plane emulator (scripts/labkit/awsemu), checked with clients nobody here
wrote: the aws CLI (--endpoint-url), boto3/botocore and botocore's SigV4 signer. Failovers
requested through the API must really move the writer of the lab's servers (as the nodes
themselves report it), passing through the states AWS shows."""
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import pytest

from conftest import TOP, wait_for
from labkit import Lab

AWS = os.environ.get("AWS_CLI") or ("/usr/bin/aws" if os.path.exists("/usr/bin/aws") else shutil.which("aws"))
FAST = {"promote": 0.3, "settle": 0.2}


@pytest.fixture(scope="module")
def emu(lab):
    lab.aws_up(delays=FAST)
    try:
        yield lab
    finally:
        lab.aws_wait_idle(30)
        lab.aws_down()


@pytest.fixture(scope="module")
def cli_env(emu, tmp_path_factory):
    d = tmp_path_factory.mktemp("awscli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emu.aws_env())
    env.update(AWS_PAGER="", AWS_CONFIG_FILE=str(d / "config"), AWS_SHARED_CREDENTIALS_FILE=str(d / "credentials"),
               HOME=str(d))
    return env


def aws(env, *args, extra_env=None, region=None):
    """Run the aws CLI against the emulator: (exit code, parsed JSON or None, stderr)."""
    assert AWS is not None, "the aws CLI is missing: scripts/install-deps installs awscli"
    e = dict(env, **(extra_env or {}))
    cmd = [AWS, "--endpoint-url", env["AWS_ENDPOINT_URL"], "--output", "json"]
    if region:
        cmd += ["--region", region]
    p = subprocess.run(cmd + list(args), env=e, capture_output=True, text=True, timeout=60)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr


def client(lab, service, region=None):
    import boto3
    from botocore.config import Config
    env = lab.aws_env()
    return boto3.session.Session().client(
        service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=region or env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}))


def watch(fn, until, timeout=30, what="condition"):
    """Poll fn() until until(value); returns every distinct value seen on the way (in order)."""
    seen = []

    def step():
        v = fn()
        if not seen or seen[-1] != v:
            seen.append(v)
        return until(v)
    wait_for(step, timeout, interval=0.02, what=what)
    return seen


def rds_state(rds, cid):
    c = rds.describe_db_clusters(DBClusterIdentifier=cid)["DBClusters"][0]
    return c["Status"], tuple(m["DBInstanceIdentifier"] for m in c["DBClusterMembers"] if m["IsClusterWriter"])


def last_op(lab):
    return lab.aws_state()["ops"][-1]


# ---- RDS -----------------------------------------------------------------------------------------------
def test_describe_db_clusters_and_instances_match_the_lab(emu, cli_env):
    rc, out, err = aws(cli_env, "rds", "describe-db-clusters")
    assert rc == 0, err
    clusters = {c["DBClusterIdentifier"]: c for c in out["DBClusters"]}
    assert set(clusters) == {"lab-postgres", "lab-mysql"}
    for cid, engine, aws_engine in (("lab-postgres", "postgres", "aurora-postgresql"),
                                    ("lab-mysql", "mysql", "aurora-mysql")):
        c = clusters[cid]
        assert c["Status"] == "available" and c["Engine"] == aws_engine
        members = {m["DBInstanceIdentifier"]: m for m in c["DBClusterMembers"]}
        assert set(members) == {n.name for n in emu.nodes(engine)}
        assert [n for n, m in members.items() if m["IsClusterWriter"]] == [emu.primary(engine).name]
        assert all(m["DBClusterParameterGroupStatus"] == "in-sync" and "PromotionTier" in m for m in members.values())

    since = emu.aws_calls()[-1]["seq"]
    rc, out, err = aws(cli_env, "rds", "describe-db-instances", "--filters", "Name=db-cluster-id,Values=lab-postgres")
    assert rc == 0, err
    got = {i["DBInstanceIdentifier"]: i for i in out["DBInstances"]}
    assert {k: v["Endpoint"]["Port"] for k, v in got.items()} == {n.name: n.port for n in emu.nodes("postgres")}
    assert all(i["DBInstanceStatus"] == "available" and i["DBClusterIdentifier"] == "lab-postgres"
               and i["Endpoint"]["Address"] == "127.0.0.1" for i in got.values())
    # the request as the CLI shaped it, seen through the call log
    call = [c for c in emu.aws_calls(since=since) if c["action"] == "DescribeDBInstances"][-1]
    assert call["service"] == "rds" and call["status"] == 200 and call["method"] == "POST"
    assert call["params"]["Version"] == "2014-10-31"
    assert call["params"]["Filters.Filter.1.Name"] == "db-cluster-id"
    assert call["params"]["Filters.Filter.1.Values.Value.1"] == "lab-postgres"


def test_pagination_with_markers(emu):
    emu.aws_configure(max_page_size=2)
    try:
        rds = client(emu, "rds")
        since = emu.aws_calls()[-1]["seq"]
        ids = [i["DBInstanceIdentifier"] for page in rds.get_paginator("describe_db_instances").paginate()
               for i in page["DBInstances"]]
        assert sorted(ids) == sorted(n.name for e in ("postgres", "mysql") for n in emu.nodes(e))
        calls = emu.aws_calls(action="DescribeDBInstances", since=since)
        assert len(calls) == 3 and "Marker" not in calls[0]["params"] and all("Marker" in c["params"] for c in calls[1:])
        with pytest.raises(Exception) as ei:
            rds.describe_db_instances(Marker="bogus")
        assert ei.value.response["Error"]["Code"] == "InvalidParameterValue"
    finally:
        emu.aws_configure(max_page_size=100)


def test_failover_db_cluster_moves_the_writer(emu, cli_env):
    rds = client(emu, "rds")
    old = emu.primary("postgres").name
    target = [n for n in emu.replicas("postgres")][-1]
    emu.aws_delays(rds={"promote": 120})       # hold the promotion until the checks below are done
    try:
        rc, out, err = aws(cli_env, "rds", "failover-db-cluster", "--db-cluster-identifier", "lab-postgres",
                           "--target-db-instance-identifier", target)
        assert rc == 0, err
        assert out["DBCluster"]["DBClusterIdentifier"] == "lab-postgres"
        assert out["DBCluster"]["Status"] == "failing-over"
        inst = {i["DBInstanceIdentifier"]: i["DBInstanceStatus"] for i in rds.describe_db_instances(
            Filters=[{"Name": "db-cluster-id", "Values": ["lab-postgres"]}])["DBInstances"]}
        assert inst[old] == "rebooting" and inst[target] == "rebooting"
        # a second failover while this one runs
        rc, out, err = aws(cli_env, "rds", "failover-db-cluster", "--db-cluster-identifier", "lab-postgres")
        assert rc != 0 and out is None
        assert ("An error occurred (InvalidDBClusterStateFault) when calling the FailoverDBCluster operation"
                in err), err
        assert rds_state(rds, "lab-postgres") == ("failing-over", (old,))
        released = time.time()
    finally:
        emu.aws_delays(rds=FAST)                 # the waiting failover goes on now
    seen = watch(lambda: rds_state(rds, "lab-postgres"), lambda s: s == ("available", (target,)),
                 what="lab-postgres to be available with writer %s" % target)
    assert seen[-1] == ("available", (target,))
    # the node itself says so, and the old writer follows it
    assert emu.primary("postgres").name == target and emu.primaries("postgres") == [target]
    assert emu.node("postgres", old).role() == "replica"
    emu.verify("postgres")
    op = last_op(emu)
    assert op["action"] == "FailoverDBCluster" and op["state"] == "done" and op["to"] == target, op
    assert op["promoted_at"] >= released


def test_failover_when_the_writer_crashed(emu):
    """Crash the writer: the API keeps naming it writer (status failed) until a failover promotes a
    reader (promote + repoint, since there is no live primary to switch over from)."""
    rds = client(emu, "rds")
    old = emu.primary("mysql").name
    emu.crash("mysql", old)
    try:
        status, writers = rds_state(rds, "lab-mysql")
        assert (status, writers) == ("available", (old,))
        st = {i["DBInstanceIdentifier"]: i["DBInstanceStatus"]
              for i in rds.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": ["lab-mysql"]}])["DBInstances"]}
        assert st[old] == "failed"
        with pytest.raises(Exception) as ei:
            rds.failover_db_cluster(DBClusterIdentifier="lab-mysql", TargetDBInstanceIdentifier=old)
        assert ei.value.response["Error"]["Code"] == "InvalidDBInstanceState"
        r = rds.failover_db_cluster(DBClusterIdentifier="lab-mysql")
        assert r["DBCluster"]["Status"] == "failing-over"
        new = [n.name for n in emu.nodes("mysql") if n.name != old][0]
        watch(lambda: rds_state(rds, "lab-mysql"), lambda s: s == ("available", (new,)),
              what="lab-mysql writer %s" % new)
        assert emu.primary("mysql").name == new
    finally:
        emu.aws_wait_idle(30)
        emu.restart("mysql", old, as_replica=True)
    assert rds_state(rds, "lab-mysql") == ("available", (emu.primary("mysql").name,))


@pytest.mark.parametrize("args,code,op", [
    (("rds", "failover-db-cluster", "--db-cluster-identifier", "no-such-cluster"),
     "DBClusterNotFoundFault", "FailoverDBCluster"),
    (("rds", "describe-db-instances", "--db-instance-identifier", "no-such-instance"),
     "DBInstanceNotFound", "DescribeDBInstances"),
    (("elasticache", "test-failover", "--replication-group-id", "lab-redis", "--node-group-id", "0042"),
     "NodeGroupNotFoundFault", "TestFailover"),
    (("memorydb", "failover-shard", "--cluster-name", "no-such-cluster", "--shard-name", "0001"),
     "ClusterNotFoundFault", "FailoverShard"),
])
def test_errors_reach_the_cli_with_their_codes(emu, cli_env, args, code, op):
    rc, out, err = aws(cli_env, *args)
    assert rc != 0 and out is None
    assert "An error occurred (%s) when calling the %s operation" % (code, op) in err, err
    call = emu.aws_calls(action=op)[-1]
    assert call["error"] == code and call["status"] == {"DBClusterNotFoundFault": 404, "DBInstanceNotFound": 404,
                                                         "NodeGroupNotFoundFault": 404}.get(code, 400)


# ---- ElastiCache ---------------------------------------------------------------------------------
def ec_roles(ec, gid, region=None):
    g = ec.describe_replication_groups(ReplicationGroupId=gid)["ReplicationGroups"][0]
    ng = g["NodeGroups"][0]
    return g["Status"], ng["Status"], {m["CacheClusterId"]: m["CurrentRole"] for m in ng["NodeGroupMembers"]}


def test_test_failover_promotes_a_replica(emu, cli_env):
    ec = client(emu, "elasticache")
    names = {"lab-redis-%03d" % (i + 1): n.name for i, n in enumerate(emu.nodes("redis"))}
    rc, out, err = aws(cli_env, "elasticache", "describe-replication-groups", "--replication-group-id", "lab-redis")
    assert rc == 0, err
    g = out["ReplicationGroups"][0]
    assert g["Status"] == "available" and g["ClusterEnabled"] is False
    members = g["NodeGroups"][0]["NodeGroupMembers"]
    old = emu.primary("redis").name
    assert [names[m["CacheClusterId"]] for m in members if m["CurrentRole"] == "primary"] == [old]
    assert {names[m["CacheClusterId"]]: m["ReadEndpoint"]["Port"] for m in members} == \
        {n.name: n.port for n in emu.nodes("redis")}
    assert g["NodeGroups"][0]["PrimaryEndpoint"]["Port"] == emu.primary("redis").port

    rc, out, err = aws(cli_env, "elasticache", "test-failover", "--replication-group-id", "lab-redis",
                       "--node-group-id", "0001")
    assert rc == 0, err
    assert out["ReplicationGroup"]["Status"] == "modifying"
    assert out["ReplicationGroup"]["NodeGroups"][0]["Status"] == "modifying"
    seen = watch(lambda: ec_roles(ec, "lab-redis"),
                 lambda s: s[0] == "available" and [names[k] for k, r in s[2].items() if r == "primary"] != [old],
                 what="lab-redis to fail over")
    new = [names[k] for k, r in seen[-1][2].items() if r == "primary"]
    assert len(new) == 1 and emu.primary("redis").name == new[0] != old
    assert emu.node("redis", old).role() == "replica"
    emu.verify("redis")


def test_roles_follow_the_nodes_whoever_moves_them(emu):
    ec = client(emu, "elasticache")
    emu.switchover("redis")          # not through the API
    now = emu.primary("redis").name
    names = {"lab-redis-%03d" % (i + 1): n.name for i, n in enumerate(emu.nodes("redis"))}
    _, _, roles = ec_roles(ec, "lab-redis")
    assert [names[k] for k, r in roles.items() if r == "primary"] == [now]


def test_test_failover_limit_and_busy_group(emu):
    ec = client(emu, "elasticache")
    used = emu.aws_state()["config"]["quota_used"]["elasticache"]
    emu.aws_configure(test_failover_limit=used + 1)
    try:
        ec.test_failover(ReplicationGroupId="lab-redis", NodeGroupId="0001")
        with pytest.raises(Exception) as ei:       # busy: the first one is under way
            ec.test_failover(ReplicationGroupId="lab-redis", NodeGroupId="0001")
        assert ei.value.response["Error"]["Code"] == "InvalidReplicationGroupState"
        assert emu.aws_wait_idle(30)
        with pytest.raises(Exception) as ei:       # over the (lowered) 24-hour limit
            ec.test_failover(ReplicationGroupId="lab-redis", NodeGroupId="0001")
        assert ei.value.response["Error"]["Code"] == "TestFailoverNotAvailableFault"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    finally:
        emu.aws_configure(test_failover_limit=15, reset_quota=True)
    assert last_op(emu)["state"] == "done"
    emu.verify("redis")


def test_global_datastore_failover_swaps_regions(emu, cli_env):
    def members():
        g = client(emu, "elasticache").describe_global_replication_groups(
            GlobalReplicationGroupId="lab-global", ShowMemberInfo=True)["GlobalReplicationGroups"][0]
        return g["Status"], {m["ReplicationGroupId"]: (m["ReplicationGroupRegion"], m["Role"]) for m in g["Members"]}

    rc, out, err = aws(cli_env, "elasticache", "describe-global-replication-groups",
                       "--global-replication-group-id", "lab-global", "--show-member-info")
    assert rc == 0, err
    g = out["GlobalReplicationGroups"][0]
    roles = {m["ReplicationGroupId"]: m["Role"] for m in g["Members"]}
    regions = {m["ReplicationGroupId"]: m["ReplicationGroupRegion"] for m in g["Members"]}
    assert regions == {"lab-gd-east": "us-east-1", "lab-gd-west": "us-west-2"}
    assert sorted(roles.values()) == ["PRIMARY", "SECONDARY"] and all(m["Status"] == "associated" for m in g["Members"])
    new = [k for k, r in roles.items() if r == "SECONDARY"][0]
    old = [k for k in roles if k != new][0]
    nodes = {"lab-gd-east": ("gd1", "gd2"), "lab-gd-west": ("gd3", "gd4")}
    assert "primary" in [emu.aws_role(n) for n in nodes[old]]
    assert "primary" not in [emu.aws_role(n) for n in nodes[new]]
    # the secondary region's group, described in its own region
    ec_new = client(emu, "elasticache", region=regions[new])
    rg = ec_new.describe_replication_groups(ReplicationGroupId=new)["ReplicationGroups"][0]
    assert rg["GlobalReplicationGroupInfo"] == {"GlobalReplicationGroupId": "lab-global",
                                                "GlobalReplicationGroupMemberRole": "SECONDARY"}

    rc, out, err = aws(cli_env, "elasticache", "failover-global-replication-group",
                       "--global-replication-group-id", "lab-global", "--primary-region", regions[new],
                       "--primary-replication-group-id", new)
    assert rc == 0, err
    assert out["GlobalReplicationGroup"]["Status"] == "modifying"
    seen = watch(members, lambda s: s[0] == "available" and s[1][new][1] == "PRIMARY", what="global failover")
    assert seen[-1][1][old][1] == "SECONDARY"
    np = nodes[new][0]
    assert emu.aws_role(np) == "primary" and all(emu.aws_role(n) == "replica" for n in nodes[old] + nodes[new][1:])
    # writes on the new primary region reach the old one (through its primary)
    r = emu.aws_node(np)
    import redis
    pw = emu.env().get("redis_password")
    c = redis.Redis(port=r.port, password=pw, decode_responses=True, socket_timeout=3)
    token = "t%d" % time.time_ns()
    c.set("_aws:global", token)
    for n in nodes[old]:
        rc_ = redis.Redis(port=emu.aws_node(n).port, password=pw, decode_responses=True, socket_timeout=3)
        wait_for(lambda: rc_.get("_aws:global") == token, 10, what="the write to reach %s" % n)
    # repoint's reading: the old primary region is now secondary, in its own group's reply too
    ec_old = client(emu, "elasticache", region=regions[old])
    assert ec_old.describe_replication_groups(ReplicationGroupId=old)["ReplicationGroups"][0][
        "GlobalReplicationGroupInfo"]["GlobalReplicationGroupMemberRole"] == "SECONDARY"
    with pytest.raises(Exception) as ei:      # regions are separate: the group is not in the other one
        ec_new.describe_replication_groups(ReplicationGroupId=old)
    assert ei.value.response["Error"]["Code"] == "ReplicationGroupNotFoundFault"


# ---- MemoryDB --------------------------------------------------------------------------------------
def test_memorydb_failover_shard(emu, cli_env):
    mdb = client(emu, "memorydb")
    rc, out, err = aws(cli_env, "memorydb", "describe-clusters", "--cluster-name", "lab-memorydb",
                       "--show-shard-details")
    assert rc == 0, err
    c = out["Clusters"][0]
    assert c["Status"] == "available" and c["NumberOfShards"] == 2
    shards = {s["Name"]: s for s in c["Shards"]}
    assert set(shards) == {"0001", "0002"} and shards["0001"]["Slots"] == "0-8191"
    ports = {n["Name"]: n["Endpoint"]["Port"] for s in c["Shards"] for n in s["Nodes"]}
    assert ports == {"lab-memorydb-0001-001": emu.aws_node("mdb1").port,
                     "lab-memorydb-0001-002": emu.aws_node("mdb2").port,
                     "lab-memorydb-0002-001": emu.aws_node("mdb3").port,
                     "lab-memorydb-0002-002": emu.aws_node("mdb4").port}
    before = {n: emu.aws_role(n) for n in ("mdb1", "mdb2", "mdb3", "mdb4")}
    call = emu.aws_calls(action="DescribeClusters")[-1]
    assert call["target"] == "AmazonMemoryDB.DescribeClusters" and call["params"] == {
        "ClusterName": "lab-memorydb", "ShowShardDetails": True}

    rc, out, err = aws(cli_env, "memorydb", "failover-shard", "--cluster-name", "lab-memorydb", "--shard-name", "0001")
    assert rc == 0, err
    assert out["Cluster"]["Status"] == "modifying"
    assert [s["Status"] for s in out["Cluster"]["Shards"]] == ["failing-over", "available"]

    def state():
        c = mdb.describe_clusters(ClusterName="lab-memorydb", ShowShardDetails=True)["Clusters"][0]
        return c["Status"], tuple(s["Status"] for s in c["Shards"])
    watch(state, lambda s: s == ("available", ("available", "available")), what="the shard failover")
    after = {n: emu.aws_role(n) for n in ("mdb1", "mdb2", "mdb3", "mdb4")}
    assert after["mdb1"] == before["mdb2"] and after["mdb2"] == before["mdb1"] and after["mdb1"] != after["mdb2"]
    assert (after["mdb3"], after["mdb4"]) == (before["mdb3"], before["mdb4"])      # the other shard untouched
    with pytest.raises(Exception) as ei:
        mdb.failover_shard(ClusterName="lab-memorydb", ShardName="0009")
    assert ei.value.response["Error"]["Code"] == "ShardNotFoundFault"


def test_failover_rate_limit(emu):
    mdb = client(emu, "memorydb")
    emu.aws_configure(failover_rate_limit=1)
    codes = []
    try:
        for _ in range(2):
            try:
                mdb.failover_shard(ClusterName="lab-memorydb", ShardName="0002")
                codes.append(None)
                assert emu.aws_wait_idle(30)
            except Exception as exc:  # noqa: BLE001
                codes.append(exc.response["Error"]["Code"])
                break
    finally:
        emu.aws_configure(failover_rate_limit=0)
    assert codes[-1] == "APICallRateForCustomerExceededFault", codes


def test_automatic_failover_after_a_crash(emu):
    """Opt-in: with auto_failover set, a dead writer is replaced by the emulator itself."""
    ec = client(emu, "elasticache")
    old = emu.primary("redis").name
    names = {"lab-redis-%03d" % (i + 1): n.name for i, n in enumerate(emu.nodes("redis"))}
    emu.aws_configure(auto_failover=0.3)
    try:
        emu.crash("redis", old)
        watch(lambda: ec_roles(ec, "lab-redis"),
              lambda s: s[0] == "available" and [names[k] for k, r in s[2].items() if r == "primary"] != [old],
              what="the automatic failover of lab-redis")
    finally:
        emu.aws_configure(auto_failover=0)
        emu.aws_wait_idle(30)
        emu.restart("redis", old, as_replica=True)
    op = last_op(emu)
    assert op["action"] == "auto-failover" and op["model"] == "lab-redis" and op["state"] == "done", op
    assert emu.primary("redis").name != old
    emu.verify("redis")


# ---- Secrets Manager -------------------------------------------------------------------------------------
def test_secretsmanager_versions_with_the_cli_and_boto3(emu, cli_env):
    rc, out, err = aws(cli_env, "secretsmanager", "create-secret", "--name", "emu/test-db",
                       "--secret-string", '{"username": "app", "password": "first"}')
    assert rc == 0, err
    arn = out["ARN"]
    assert arn.startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:emu/test-db-")
    rc, out, err = aws(cli_env, "secretsmanager", "put-secret-value", "--secret-id", "emu/test-db",
                       "--secret-string", '{"username": "app", "password": "second"}')
    assert rc == 0 and out["VersionStages"] == ["AWSCURRENT"], err
    sm = client(emu, "secretsmanager")
    cur = sm.get_secret_value(SecretId=arn)
    prev = sm.get_secret_value(SecretId="emu/test-db", VersionStage="AWSPREVIOUS")
    assert json.loads(cur["SecretString"])["password"] == "second" and cur["VersionStages"] == ["AWSCURRENT"]
    assert json.loads(prev["SecretString"])["password"] == "first" and prev["VersionId"] != cur["VersionId"]
    rc, out, err = aws(cli_env, "secretsmanager", "get-secret-value", "--secret-id", "emu/nothing")
    assert rc != 0 and "ResourceNotFoundException" in err
    rc, out, err = aws(cli_env, "secretsmanager", "get-secret-value", "--secret-id", "emu/test-db",
                       region="us-west-2")
    assert rc != 0 and "ResourceNotFoundException" in err          # secrets live in their region
    rc, out, err = aws(cli_env, "secretsmanager", "create-secret", "--name", "emu/test-db", "--secret-string", "x")
    assert rc != 0 and "ResourceExistsException" in err
    # the call log keeps the calls, never the values
    calls = emu.aws_calls(service="secretsmanager")
    assert calls and all("second" not in json.dumps(c) and "first" not in json.dumps(c) for c in calls)


# ---- SigV4 -----------------------------------------------------------------------------------------
def signed(lab, creds, service="rds", body="Action=DescribeDBClusters&Version=2014-10-31", method="POST",
           headers=None, region="us-east-1"):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    url = lab.aws_url() + "/"
    if method == "GET":
        req = AWSRequest(method="GET", url=url + "?" + body)
    else:
        req = AWSRequest(method="POST", url=url, data=body, headers=headers or {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    if creds is not None:
        SigV4Auth(creds, service, region).add_auth(req)
    return req


def send(req):
    p = req.prepare()
    u = urllib.parse.urlsplit(p.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    body = p.body.encode() if isinstance(p.body, str) else p.body
    c.request(p.method, u.path + ("?" + u.query if u.query else ""), body=body, headers=dict(p.headers))
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    code = data.split("<Code>")[1].split("</Code>")[0] if "<Code>" in data else None
    if data.startswith("{") and "__type" in data:
        code = json.loads(data)["__type"]
    return r.status, code


def test_botocore_signer_accepted_and_tampering_rejected(emu):
    from botocore.credentials import Credentials
    env = emu.aws_env()
    good = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    assert send(signed(emu, good)) == (200, None)
    assert send(signed(emu, good, method="GET", body="Action=DescribeDBInstances&Version=2014-10-31"
                       "&Filters.Filter.1.Name=db-cluster-id&Filters.Filter.1.Values.Value.1=lab-mysql")) == (200, None)
    assert send(signed(emu, good, service="memorydb", body='{"ShowShardDetails": true}', headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonMemoryDB.DescribeClusters"})) == (200, None)
    tmp = emu.aws_env(temporary=True)
    assert send(signed(emu, Credentials(tmp["AWS_ACCESS_KEY_ID"], tmp["AWS_SECRET_ACCESS_KEY"],
                                        tmp["AWS_SESSION_TOKEN"]))) == (200, None)

    r = signed(emu, good)
    auth = r.headers["Authorization"]
    sig = auth.rsplit("=", 1)[1]
    r.headers.replace_header("Authorization", auth[:-len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:])
    assert send(r) == (403, "SignatureDoesNotMatch")
    r = signed(emu, good)
    r.data = "Action=DescribeDBClusters&Version=2014-10-31&DBClusterIdentifier=lab-mysql"   # body changed after signing
    assert send(r) == (403, "SignatureDoesNotMatch")
    assert send(signed(emu, Credentials(env["AWS_ACCESS_KEY_ID"], "wrong-secret"))) == (403, "SignatureDoesNotMatch")
    assert send(signed(emu, Credentials("AKIAUNKNOWNUNKNOWN00", "x"))) == (403, "InvalidClientTokenId")
    assert send(signed(emu, Credentials(tmp["AWS_ACCESS_KEY_ID"], tmp["AWS_SECRET_ACCESS_KEY"]))) == \
        (403, "InvalidClientTokenId")                                   # temporary key without its token
    assert send(signed(emu, None)) == (403, "MissingAuthenticationToken")
    # 20 minutes of clock skew
    import botocore.auth
    real = botocore.auth.datetime.datetime

    class Skewed(real):
        @classmethod
        def utcnow(cls):
            return real.utcnow() - __import__("datetime").timedelta(minutes=20)
    botocore.auth.datetime.datetime = Skewed
    try:
        assert send(signed(emu, good)) == (400, "RequestExpired")
    finally:
        botocore.auth.datetime.datetime = real
    errs = [c for c in emu.aws_calls(action="DescribeDBClusters")[-8:] if c["error"] == "SignatureDoesNotMatch"]
    assert errs and "canonical_request" in errs[-1]["auth_detail"]


# ---- fault injection ---------------------------------------------------------------------------------
def test_throttle_is_retried_by_the_cli_or_shown(emu, cli_env):
    since = emu.aws_calls()[-1]["seq"]
    emu.aws_fault("DescribeDBClusters", "throttle", count=1)
    rc, out, err = aws(cli_env, "rds", "describe-db-clusters", "--db-cluster-identifier", "lab-mysql")
    assert rc == 0, err
    assert out["DBClusters"][0]["DBClusterIdentifier"] == "lab-mysql"
    calls = emu.aws_calls(action="DescribeDBClusters", since=since)
    assert [(c["status"], c["error"], c["fault"]) for c in calls] == [(400, "Throttling", "throttle"), (200, None, None)]

    emu.aws_fault("DescribeDBClusters", "throttle", count=-1)
    try:
        rc, out, err = aws(cli_env, "rds", "describe-db-clusters", extra_env={"AWS_MAX_ATTEMPTS": "2"})
    finally:
        assert emu.aws_faults_clear() == 2
    assert rc != 0 and "An error occurred (Throttling) when calling the DescribeDBClusters operation" in err, err
    assert "reached max retries: 1" in err, err


def test_malformed_and_server_errors(emu, cli_env):
    emu.aws_fault("DescribeReplicationGroups", "malformed", count=1, service="elasticache")
    rc, out, err = aws(cli_env, "elasticache", "describe-replication-groups")
    assert rc != 0 and "invalid XML received" in err, err
    rds = client(emu, "rds")
    emu.aws_fault("DescribeDBClusters", "500", count=1)
    with pytest.raises(Exception) as ei:
        rds.describe_db_clusters()
    assert ei.value.response["Error"]["Code"] == "InternalFailure"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    emu.aws_fault("FailoverDBCluster", "error", code="APICallRateForCustomerExceeded", count=1)
    with pytest.raises(Exception) as ei:
        rds.failover_db_cluster(DBClusterIdentifier="lab-postgres")
    assert ei.value.response["Error"]["Code"] == "APICallRateForCustomerExceeded"
    emu.aws_fault("DescribeDBClusters", "slow", delay_ms=300, count=1)
    t = time.monotonic()
    rds.describe_db_clusters()
    assert time.monotonic() - t >= 0.3
    assert [f for f in emu.aws_state()["faults"] if f["remaining"] != 0] == []
    assert emu.aws_faults_clear() == 4


# ---- the lab's command line, and `lab down` ---------------------------------------------------------------
def test_lab_cli_env_and_down_stops_the_emulator():
    lab_cli = os.path.join(TOP, "scripts", "lab")
    d = tempfile.mkdtemp(prefix="awsemu-lab-")
    os.chmod(d, 0o755)
    lab = Lab(d)
    pid, aws_pids = None, []
    try:
        lab.up(["redis"])
        r = subprocess.run([lab_cli, "aws", "up", "--dir", d], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([lab_cli, "aws", "env", "--dir", d], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        env = dict(line[len("export "):].split("=", 1) for line in r.stdout.splitlines())
        assert env["AWS_ACCESS_KEY_ID"] == "AKIALABLABLABLAB1234" and env["AWS_DEFAULT_REGION"] == "us-east-1"
        url = env["AWS_ENDPOINT_URL"]
        st = lab.env()["aws"]
        pid = st["pid"]
        assert url == st["url"] and os.path.exists("/proc/%d" % pid)
        ports = lab.write_aws_config()
        text = open(lab.env()["aws"]["repoint_config"]["path"]).read()
        assert "endpoint_url = %s" % url in text and "source = elasticache:lab-redis" in text
        assert "source = memorydb:lab-memorydb" in text and "shard = 0002" in text and "members" not in text
        assert set(ports) == {"redis", "redis-global", "memorydb-0001", "memorydb-0002", "admin"}
        aws_pids = [n.pid for n in lab.aws_nodes()]
        assert len(aws_pids) == 8
    finally:
        r = subprocess.run([lab_cli, "down", "--dir", d], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    def gone(p):
        try:
            with open("/proc/%d/stat" % p) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True
    wait_for(lambda: all(gone(p) for p in [pid] + aws_pids), 10, what="the emulator and its nodes to stop")
    assert not os.path.exists(d)


# ---- cluster mode: ElastiCache (cluster mode enabled) and MemoryDB over a real Redis Cluster ----------------
@pytest.fixture(scope="module")
def cluster_models(emu, redis_cluster):
    """labcc (ElastiCache, cluster mode enabled) and labmdb (MemoryDB) over the same 3-shard Redis Cluster,
    each shard's nodes named primary first (so ID-SHARD-001 is the primary at the start). Whatever the
    tests did, the models are removed again (redis_clusters=[]) and no failover is left running."""
    rc = redis_cluster
    nodes = []
    for i in range(3):
        p, reps = rc.shard_nodes(i)
        nodes += [{"shard": "%04d" % (i + 1), "host": rc.host, "port": port} for port in [p] + reps]
    cfg = emu.aws_configure(redis_clusters=[{"kind": "elasticache", "id": "labcc", "nodes": nodes},
                                            {"kind": "memorydb", "id": "labmdb", "nodes": nodes}])
    assert [(m["kind"], m["id"], len(m["nodes"])) for m in cfg["redis_clusters"]] == \
        [("elasticache", "labcc", 6), ("memorydb", "labmdb", 6)]
    try:
        yield rc, nodes
    finally:
        emu.aws_wait_idle(90)
        emu.aws_configure(redis_clusters=[])


def cc_ports(nodes, prefix):
    """{member name (PREFIX-SHARD-00N, in the order the shard's nodes were named): port}."""
    out, count = {}, {}
    for n in nodes:
        count[n["shard"]] = count.get(n["shard"], 0) + 1
        out["%s-%s-%03d" % (prefix, n["shard"], count[n["shard"]])] = n["port"]
    return out


def slots_text(rc, i):
    return ",".join("%d-%d" % r for r in rc.slots_of_shard(i))


def test_cluster_mode_group_shows_live_node_groups(emu, cli_env, cluster_models):
    """describe-replication-groups (aws CLI) of a cluster-mode-enabled group: one node group per shard
    with the slots the cluster serves NOW (read live: a reshard shows in the next reply, as several
    ranges), members without CurrentRole/ReadEndpoint and node groups without Primary/ReaderEndpoint
    (AWS leaves roles to the cluster itself in cluster mode), a configuration endpoint that is one of
    the nodes; listed with the other groups too."""
    rc, nodes = cluster_models
    ports = cc_ports(nodes, "labcc")

    def group():
        rc_, out, err = aws(cli_env, "elasticache", "describe-replication-groups", "--replication-group-id", "labcc")
        assert rc_ == 0, err
        return out["ReplicationGroups"][0]

    g = group()
    assert g["Status"] == "available" and g["ClusterEnabled"] is True
    assert g["AutomaticFailover"] == "enabled" and g["MultiAZ"] == "enabled"
    assert g["TransitEncryptionEnabled"] is False
    assert g["ConfigurationEndpoint"]["Address"] == rc.host and g["ConfigurationEndpoint"]["Port"] in ports.values()
    assert g["MemberClusters"] == list(ports)
    ngs = g["NodeGroups"]
    assert [ng["NodeGroupId"] for ng in ngs] == ["0001", "0002", "0003"]
    assert [ng["Slots"] for ng in ngs] == [slots_text(rc, i) for i in range(3)]
    assert ngs[0]["Slots"].startswith("0-") and all(ng["Status"] == "available" for ng in ngs)
    for ng in ngs:
        assert "PrimaryEndpoint" not in ng and "ReaderEndpoint" not in ng
        assert [m["CacheClusterId"] for m in ng["NodeGroupMembers"]] == \
            ["labcc-%s-%03d" % (ng["NodeGroupId"], j + 1) for j in range(2)]
        for m in ng["NodeGroupMembers"]:
            assert m["CacheNodeId"] == "0001" and m["PreferredAvailabilityZone"].startswith("us-east-1")
            assert "CurrentRole" not in m and "ReadEndpoint" not in m

    # the slots are the cluster's, not the configuration's: move some and look again
    moved = rc.reshard(0, 1, 10)
    g = group()
    assert [ng["Slots"] for ng in g["NodeGroups"]] == [slots_text(rc, i) for i in range(3)]
    assert len(moved) == 10 and "," in g["NodeGroups"][0]["Slots"] + g["NodeGroups"][1]["Slots"]

    # the listing has it next to the single-shard groups; the flag follows transit_encryption
    emu.aws_configure(transit_encryption=True)
    try:
        rc_, out, err = aws(cli_env, "elasticache", "describe-replication-groups")
    finally:
        emu.aws_configure(transit_encryption=False)
    assert rc_ == 0, err
    groups = {x["ReplicationGroupId"]: x for x in out["ReplicationGroups"]}
    assert {"lab-redis", "labcc"} <= set(groups) and groups["labcc"]["TransitEncryptionEnabled"] is True
    assert groups["lab-redis"]["ClusterEnabled"] is False
    models = emu.aws_state()["models"]
    assert models["elasticache"]["labcc"]["members"] == {k: "%s:%d" % (rc.host, p) for k, p in ports.items()}


def test_cluster_mode_cache_clusters_give_every_node(emu, cli_env, cluster_models):
    """describe-cache-clusters --show-cache-node-info knows every node of the cluster-mode group as a
    cache cluster of its own (ID-SHARD-00N, CacheNodeId 0001) with the node's endpoint: what a client
    that maps cache clusters to nodes reads. Also by id, and through the paged listing."""
    rc, nodes = cluster_models
    ports = cc_ports(nodes, "labcc")
    rc_, out, err = aws(cli_env, "elasticache", "describe-cache-clusters", "--show-cache-node-info")
    assert rc_ == 0, err
    got = {c["CacheClusterId"]: c for c in out["CacheClusters"] if c.get("ReplicationGroupId") == "labcc"}
    assert list(got) == list(ports)
    for cc, c in got.items():
        assert c["CacheClusterStatus"] == "available" and c["Engine"] == "redis" and c["NumCacheNodes"] == 1
        (node,) = c["CacheNodes"]
        assert node["CacheNodeId"] == "0001" and node["Endpoint"] == {"Address": rc.host, "Port": ports[cc]}
        assert node["CustomerAvailabilityZone"].startswith("us-east-1")
    rc_, out, err = aws(cli_env, "elasticache", "describe-cache-clusters", "--cache-cluster-id", "labcc-0002-002",
                        "--show-cache-node-info")
    assert rc_ == 0, err
    assert [(c["CacheClusterId"], c["CacheNodes"][0]["Endpoint"]["Port"]) for c in out["CacheClusters"]] == \
        [("labcc-0002-002", ports["labcc-0002-002"])]
    rc_, out, err = aws(cli_env, "elasticache", "describe-cache-clusters", "--cache-cluster-id", "labcc-0009-001")
    assert rc_ != 0 and "CacheClusterNotFound" in err, err
    # pages of 4: the cluster's six after the single-shard groups' members, none lost or doubled
    emu.aws_configure(max_page_size=4)
    try:
        ec = client(emu, "elasticache")
        ids = [c["CacheClusterId"] for page in ec.get_paginator("describe_cache_clusters").paginate(
            ShowCacheNodeInfo=True) for c in page["CacheClusters"]]
    finally:
        emu.aws_configure(max_page_size=100)
    assert len(ids) == len(set(ids)) and [i for i in ids if i.startswith("labcc-")] == list(ports)


def test_cluster_mode_test_failover_swaps_a_shard(emu, cli_env, cluster_models):
    """aws elasticache test-failover --node-group-id 0002 on the cluster-mode group is a real CLUSTER
    FAILOVER in that shard: held (promote delay) the group and that node group say modifying, its two
    cache clusters too, and a second failover -- or one through the MemoryDB model over the same
    nodes -- is refused as busy; released, the shard's replica becomes primary (its nodes say so) and
    the group goes back to available, the other shards untouched."""
    rc, nodes = cluster_models
    ec = client(emu, "elasticache")
    rc.wait_healthy()
    before = [rc.shard_nodes(i) for i in range(3)]
    old, reps = before[1]
    ports = cc_ports(nodes, "labcc")
    assert ports["labcc-0002-001"] == old and ports["labcc-0002-002"] == reps[0]

    def state():
        g = ec.describe_replication_groups(ReplicationGroupId="labcc")["ReplicationGroups"][0]
        return g["Status"], tuple(ng["Status"] for ng in g["NodeGroups"])

    emu.aws_delays(elasticache={"promote": 120})      # hold the failover until the checks below are done
    try:
        rc_, out, err = aws(cli_env, "elasticache", "test-failover", "--replication-group-id", "labcc",
                            "--node-group-id", "0002")
        assert rc_ == 0, err
        g = out["ReplicationGroup"]
        assert g["ReplicationGroupId"] == "labcc" and g["Status"] == "modifying"
        assert [ng["Status"] for ng in g["NodeGroups"]] == ["available", "modifying", "available"]
        assert state() == ("modifying", ("available", "modifying", "available"))
        st = {c["CacheClusterId"]: c["CacheClusterStatus"] for c in ec.describe_cache_clusters()["CacheClusters"]
              if c["CacheClusterId"].startswith("labcc-")}
        assert [k for k, v in st.items() if v == "modifying"] == ["labcc-0002-001", "labcc-0002-002"]
        rc_, out, err = aws(cli_env, "elasticache", "test-failover", "--replication-group-id", "labcc",
                            "--node-group-id", "0001")
        assert rc_ != 0 and "(InvalidReplicationGroupState) when calling the TestFailover operation" in err, err
        with pytest.raises(Exception) as ei:
            client(emu, "memorydb").failover_shard(ClusterName="labmdb", ShardName="0002")
        assert ei.value.response["Error"]["Code"] == "InvalidClusterStateFault"
        assert rc.shard_nodes(1)[0] == old                # held: nothing happened to the cluster yet
    finally:
        emu.aws_delays(elasticache=FAST)                  # the waiting failover goes on now
    seen = watch(state, lambda s: s[0] == "available", timeout=90, what="labcc to fail over node group 0002")
    assert seen[0] == ("modifying", ("available", "modifying", "available")), seen
    assert seen[-1] == ("available", ("available",) * 3), seen
    # the cluster's own nodes: the replica is primary, the old primary its replica, every node agrees
    assert rc.shard_nodes(1) == (reps[0], [old])
    assert rc.client(reps[0]).execute_command("ROLE")[0] == "master"
    assert rc.client(old).execute_command("ROLE")[0] == "slave"
    rc.wait_healthy()
    assert [rc.shard_nodes(i) for i in (0, 2)] == [before[0], before[2]]
    g = ec.describe_replication_groups(ReplicationGroupId="labcc")["ReplicationGroups"][0]
    assert g["NodeGroups"][1]["Slots"] == slots_text(rc, 1)          # the slots moved with the shard
    op = last_op(emu)
    assert (op["action"], op["model"], op["node_group"], op["state"]) == ("TestFailover", "labcc", "0002", "done"), op
    assert (op["from"], op["to"]) == ("labcc-0002-001", "labcc-0002-002") and op["error"] is None, op
    rc_, out, err = aws(cli_env, "elasticache", "test-failover", "--replication-group-id", "labcc",
                        "--node-group-id", "0009")
    assert rc_ != 0 and "(NodeGroupNotFoundFault) when calling the TestFailover operation" in err, err


def test_memorydb_multi_shard_cluster_and_failover_shard(emu, cli_env, cluster_models):
    """memorydb describe-clusters --show-shard-details of the MemoryDB model over the same Redis Cluster:
    three shards with the live slots and every node's endpoint; failover-shard 0003 is a real CLUSTER
    FAILOVER of that shard (modifying / failing-over while it runs, available after, the cluster's
    nodes agree); unknown shards and shards without a replica are refused with AWS' faults."""
    rc, nodes = cluster_models
    mdb = client(emu, "memorydb")
    ports = cc_ports(nodes, "labmdb")
    rc.wait_healthy()
    rc_, out, err = aws(cli_env, "memorydb", "describe-clusters", "--cluster-name", "labmdb", "--show-shard-details")
    assert rc_ == 0, err
    (c,) = out["Clusters"]
    assert c["Name"] == "labmdb" and c["Status"] == "available" and c["NumberOfShards"] == 3
    assert c["TLSEnabled"] is False and c["ClusterEndpoint"]["Port"] in ports.values()
    assert [s["Name"] for s in c["Shards"]] == ["0001", "0002", "0003"]
    assert [s["Slots"] for s in c["Shards"]] == [slots_text(rc, i) for i in range(3)]
    assert {n["Name"]: n["Endpoint"]["Port"] for s in c["Shards"] for n in s["Nodes"]} == ports
    assert all(n["Status"] == "available" and n["AvailabilityZone"].startswith("us-east-1")
               for s in c["Shards"] for n in s["Nodes"])
    rc_, out, err = aws(cli_env, "memorydb", "describe-clusters")
    assert rc_ == 0, err
    assert {"lab-memorydb", "labmdb"} <= {x["Name"] for x in out["Clusters"]}

    old, reps = rc.shard_nodes(2)
    before = [rc.shard_nodes(i) for i in (0, 1)]
    rc_, out, err = aws(cli_env, "memorydb", "failover-shard", "--cluster-name", "labmdb", "--shard-name", "0003")
    assert rc_ == 0, err
    assert out["Cluster"]["Status"] == "modifying"
    assert [s["Status"] for s in out["Cluster"]["Shards"]] == ["available", "available", "failing-over"]

    def state():
        c = mdb.describe_clusters(ClusterName="labmdb", ShowShardDetails=True)["Clusters"][0]
        return c["Status"], tuple(s["Status"] for s in c["Shards"])
    seen = watch(state, lambda s: s == ("available", ("available",) * 3), timeout=90, what="labmdb shard 0003")
    assert seen[0][0] == "modifying", seen
    assert rc.shard_nodes(2) == (reps[0], [old])
    rc.wait_healthy()
    assert [rc.shard_nodes(i) for i in (0, 1)] == before
    op = last_op(emu)
    assert (op["action"], op["model"], op["shard"], op["state"]) == ("FailoverShard", "labmdb", "0003", "done"), op
    with pytest.raises(Exception) as ei:
        mdb.failover_shard(ClusterName="labmdb", ShardName="0009")
    assert ei.value.response["Error"]["Code"] == "ShardNotFoundFault"

    # a model naming only a shard's primary: nothing to fail over to
    p0 = rc.shard_nodes(0)[0]
    emu.aws_configure(redis_clusters=emu.aws_state()["config"]["redis_clusters"] + [
        {"kind": "memorydb", "id": "labmdb-lone", "nodes": [{"shard": "0001", "host": rc.host, "port": p0}]}])
    with pytest.raises(Exception) as ei:
        mdb.failover_shard(ClusterName="labmdb-lone", ShardName="0001")
    assert ei.value.response["Error"]["Code"] == "TestFailoverNotAvailableFault"
    assert rc.shard_nodes(0)[0] == p0


def test_cluster_models_removed_with_an_empty_list(emu, cli_env, cluster_models):
    """redis_clusters=[] removes every cluster-mode model (the single-shard ones stay): their ids are
    unknown to the API again. Malformed configurations are refused by the control API."""
    rc, nodes = cluster_models
    try:
        with pytest.raises(Exception) as ei:
            emu.aws_configure(redis_clusters=[{"kind": "elasticache", "id": "lab-redis", "nodes": nodes}])
        assert "built-in" in str(ei.value)
        with pytest.raises(Exception):
            emu.aws_configure(redis_clusters=[{"kind": "rds", "id": "x", "nodes": nodes}])
        assert {m["id"] for m in emu.aws_state()["config"]["redis_clusters"]} >= {"labcc", "labmdb"}
    finally:
        assert emu.aws_configure(redis_clusters=[])["redis_clusters"] == []
    rc_, out, err = aws(cli_env, "elasticache", "describe-replication-groups", "--replication-group-id", "labcc")
    assert rc_ != 0 and "ReplicationGroupNotFoundFault" in err, err
    rc_, out, err = aws(cli_env, "elasticache", "describe-replication-groups")
    assert rc_ == 0 and "labcc" not in {g["ReplicationGroupId"] for g in out["ReplicationGroups"]}
    assert "lab-redis" in {g["ReplicationGroupId"] for g in out["ReplicationGroups"]}
    rc_, out, err = aws(cli_env, "memorydb", "describe-clusters", "--cluster-name", "labmdb")
    assert rc_ != 0 and "ClusterNotFoundFault" in err, err
    models = emu.aws_state()["models"]
    assert "labcc" not in models["elasticache"] and "labmdb" not in models["memorydb"]
