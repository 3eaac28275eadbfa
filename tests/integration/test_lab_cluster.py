"""The lab's real Redis Cluster (labkit.rediscluster, issue 12) checked on its own, with redis-py's
RedisCluster and plain connections straight to the nodes: keys over the whole slot range, a switchover
of every shard, a primary's crash and restart, a reshard of 100 slots. Every key stays readable, and it
is where the nodes themselves (CLUSTER SLOTS on every node, ROLE) say it is -- on its slot's primary
and, once replicated, on that primary's replica."""
import redis
import redis.cluster

from labkit.rediscluster import SLOTS, keys_for_slots, slot_of

N = 1000
SPREAD = [round(j * (SLOTS - 1) / (N - 1)) for j in range(N)]     # 1,000 slots from 0 to 16383


def plain(port):
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5,
                       single_connection_client=True)


def cluster_client(rc, port=None):
    return redis.cluster.RedisCluster(host="127.0.0.1", port=port or rc.primaries()[0][1],
                                      decode_responses=True, socket_timeout=5)


def slot_map(rc):
    """[(first, last, primary, (replicas))] as every live node reports it in CLUSTER SLOTS (they agree)."""
    maps = {}
    for p in rc.nodes:
        if rc.alive(p):
            with plain(p) as c:
                maps[p] = tuple(sorted((int(r[0]), int(r[1]), int(r[2][1]), tuple(sorted(int(x[1]) for x in r[3:])))
                                       for r in c.execute_command("CLUSTER", "SLOTS")))
    assert len(set(maps.values())) == 1, maps
    m = next(iter(maps.values()))
    assert sum(b - a + 1 for a, b, _, _ in m) == SLOTS
    return m


def role(port):
    with plain(port) as c:
        return c.execute_command("ROLE")


def write_keys(rc, prefix):
    """A key in each of 1,000 slots spread over the whole range, written through redis-py's RedisCluster."""
    keys = keys_for_slots(SPREAD, prefix)
    c = cluster_client(rc)
    try:
        for k in keys.values():
            assert c.set(k, "v-" + k)
    finally:
        c.close()
    return keys


def check_keys(rc, keys, client=None, replicas=False):
    """Every key readable through RedisCluster (a fresh one unless given), and found by a plain GET on the
    primary its slot belongs to -- and on that primary's replicas (READONLY) when replicas is true."""
    c = client or cluster_client(rc)
    try:
        got = [c.get(k) for k in keys.values()]
        assert got == ["v-" + k for k in keys.values()]
    finally:
        if client is None:
            c.close()
    if replicas:
        rc.wait_replicated()
    m, placed = slot_map(rc), {}
    for s, k in keys.items():
        owner, reps = next((o, r) for a, b, o, r in m if a <= s <= b)
        placed.setdefault((owner, reps), []).append(k)
    for (owner, reps), ks in placed.items():
        for port in (owner,) + (reps if replicas else ()):
            with plain(port) as d:
                p = d.pipeline(transaction=False)    # (a pipeline has a connection of its own)
                p.execute_command("READONLY")       # a replica answers for its primary's slots
                for k in ks:
                    p.get(k)
                assert p.execute()[1:] == ["v-" + k for k in ks], "keys missing on :%d" % port


def owner_of(m, slot):
    return next(o for a, b, o, _ in m if a <= slot <= b)


def test_made_as_asked(redis_cluster):
    rc = redis_cluster
    assert len(rc.nodes) == 6 and len(set(rc.nodes)) == 6
    m = slot_map(rc)
    prim = rc.primaries()
    assert [i for i, _ in prim] == [0, 1, 2]
    assert {p for _, p in prim} == {o for _, _, o, _ in m}
    firsts = [min(a for a, _, o, _ in m if o == p) for _, p in prim]
    assert firsts == sorted(firsts) and firsts[0] == 0                  # shards by first slot
    for i, p in prim:
        primary, reps = rc.shard_nodes(i)
        assert primary == p and len(reps) == 1
        assert role(p)[0] == "master" and [int(r[1]) for r in role(p)[2]] == reps
        r = role(reps[0])
        assert (r[0], r[2], r[3]) == ("slave", p, "connected")
        assert {o for _, _, o, rr in m if rr == tuple(reps)} == {p}
        assert rc.primary_of_slot(firsts[i]) == p
        for n in range(3):
            k = rc.key_in_shard(i, "own", n)
            assert owner_of(m, slot_of(k)) == p
    assert rc.seeds_config() == ", ".join("127.0.0.1:%d" % p for _, p in prim)
    with plain(prim[0][1]) as c:
        for k in ("a", "foo", "{user:1}:x", "x{}y", "{}", "{a}{b}", "k:12345", "ünï"):
            assert slot_of(k) == c.execute_command("CLUSTER", "KEYSLOT", k), k
    # redis-py's own view of the cluster is the lab's
    c = cluster_client(rc, prim[1][1])
    try:
        assert sorted(n.port for n in c.get_primaries()) == sorted(p for _, p in prim)
        assert sorted(n.port for n in c.get_replicas()) == sorted(r for i, _ in prim for r in rc.shard_nodes(i)[1])
        for s in (0, 5460, 5461, 10922, 10923, 16383):
            assert c.nodes_manager.get_node_from_slot(s).port == rc.primary_of_slot(s)
    finally:
        c.close()
    assert "All 16384 slots covered" in rc.check()


def test_keys_over_all_slots(redis_cluster):
    rc = redis_cluster
    keys = write_keys(rc, "all")
    assert sorted(keys) == sorted(set(SPREAD)) and min(keys) == 0 and max(keys) == SLOTS - 1
    m = slot_map(rc)
    assert {owner_of(m, s) for s in keys} == {p for _, p in rc.primaries()}
    check_keys(rc, keys, replicas=True)


def test_switchover_of_each_shard_keeps_every_key(redis_cluster):
    rc = redis_cluster
    keys = write_keys(rc, "sw")
    c = cluster_client(rc)      # one client through all three switchovers (it follows MOVED)
    try:
        for i in range(3):
            before = rc.primaries()
            old, new = rc.switchover(i)
            assert old == before[i][1] and new != old
            assert rc.shard_nodes(i) == (new, [old])
            assert rc.primaries() == [(j, new if j == i else p) for j, p in before]
            assert role(new)[0] == "master"
            r = role(old)
            assert (r[0], r[2], r[3]) == ("slave", new, "connected")
            m = slot_map(rc)
            assert old not in {o for _, _, o, _ in m}
            assert all(rr == (old,) for _, _, o, rr in m if o == new)
            check_keys(rc, keys, client=c)
            k = rc.key_in_shard(i, "sw-after")
            assert c.set(k, "x") and c.get(k) == "x"
            assert plain(new).get(k) == "x"
        check_keys(rc, keys, replicas=True)
    finally:
        c.close()
    rc.check()


def test_crash_and_restart_of_a_primary(redis_cluster):
    rc = redis_cluster
    keys = write_keys(rc, "crash")
    rc.wait_replicated()        # nothing written is still on its way to the replica when it dies
    before = rc.primaries()
    old, new = rc.crash(1)
    assert old == before[1][1] and not rc.alive(old)
    assert rc.shard_nodes(1) == (new, [])
    assert role(new)[0] == "master"
    m = slot_map(rc)
    assert {o for _, _, o, _ in m} == {before[0][1], new, before[2][1]}
    c = cluster_client(rc, before[0][1])     # a new client: it learns the new topology from a live node
    try:
        check_keys(rc, keys, client=c)
    finally:
        c.close()
    assert rc.restart(old) == new
    assert rc.alive(old) and rc.shard_nodes(1) == (new, [old])
    r = role(old)
    assert (r[0], r[2], r[3]) == ("slave", new, "connected")
    check_keys(rc, keys, replicas=True)     # the restarted node has shard 1's keys again (full sync)
    rc.check()


def test_reshard_of_100_slots_keeps_every_key(redis_cluster):
    rc = redis_cluster
    keys = write_keys(rc, "rs")
    src, dst = rc.shard_nodes(0)[0], rc.shard_nodes(2)[0]
    src_slots = [s for a, b in rc.slots_of_shard(0) for s in range(a, b + 1)]
    # a key in every slot shard 0 has, straight to its primary, so every moved slot carries a key
    every = keys_for_slots(src_slots, "rs-src")
    with plain(src) as d:
        p = d.pipeline(transaction=False)
        for k in every.values():
            p.set(k, "v-" + k)
        assert all(p.execute())
    moved = rc.reshard(0, 2, 100)
    assert len(moved) == 100 and set(moved) <= set(src_slots)
    m = slot_map(rc)
    assert all(owner_of(m, s) == dst for s in moved)
    assert sum(b - a + 1 for a, b, o, _ in m if o == src) == len(src_slots) - 100
    with plain(dst) as d:
        assert [d.get(every[s]) for s in moved] == ["v-" + every[s] for s in moved]
    with plain(src) as d:
        try:
            d.get(every[moved[0]])
            raise AssertionError("a moved key still answered by its old primary")
        except redis.ResponseError as e:
            assert "MOVED" in str(e) or isinstance(e, redis.exceptions.MovedError)
            assert str(dst) in str(e)
    check_keys(rc, keys)
    check_keys(rc, every, replicas=True)
    rc.check()
