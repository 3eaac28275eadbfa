"""Redis Cluster behind one listener (`cluster = on`, issue 12): a real 3-shard cluster (3 primaries, 3
replicas) from the lab, plain redis-py clients and redis-py's RedisCluster through repoint. Commands go
by their keys' slot (key positions from the server's own COMMAND) to each shard's primary; a
switchover of any shard costs clients nothing."""
import socket
import threading
import time

import pytest
import redis
import redis.cluster

from conftest import KeyWriters, start_custom, wait_for

SLOTS = 16384


def cluster_service(redis_cluster, extra=""):
    return {"cache": f"protocol = redis\nmembers = {redis_cluster.seeds_config()}\ncluster = on\n"
                     f"probe_interval = 100ms\nfailover_probe_interval = 20ms\n{extra}"}


@pytest.fixture
def rp(tmp_path, redis_cluster):
    rp = start_custom(tmp_path, cluster_service(redis_cluster))
    try:
        wait_for(lambda: rp.service("cache")["cluster"]["ready"], 20, what="the cluster's shards and primaries")
        yield rp
    finally:
        rp.stop()


def client(rp, **kw):
    kw.setdefault("socket_timeout", 10)
    return redis.Redis(host="127.0.0.1", port=rp.ports["cache"], decode_responses=True, **kw)


def test_shards_in_status_and_metrics(rp, redis_cluster):
    s = rp.service("cache")
    shards = s["cluster"]["shards"]
    assert len(shards) == 3
    assert sum(sh["slots"] for sh in shards) == SLOTS
    primaries = {f"127.0.0.1:{p}" for _, p in redis_cluster.primaries()}
    assert {sh["primary"] for sh in shards} == primaries
    assert s["writer_ready"] and s["cluster"]["commands_known"] > 100
    assert sorted(m["shard"] for m in s["members"]) == [0, 0, 1, 1, 2, 2]
    text = rp.metrics()
    assert text.count('repoint_shard_primary_ready{service="cache"') == 3
    assert 'repoint_writer_ready{service="cache"} 1' in text


def test_plain_client_every_slot(rp, redis_cluster):
    """10,000 keys over all slots through one plain connection, pipelined across shards (replies in
    order), then read back straight from the cluster's nodes."""
    r = client(rp)
    keys = [f"k:{i}" for i in range(10000)]
    for i in range(0, len(keys), 500):
        p = r.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            p.set(k, k[::-1])
        assert p.execute() == [True] * 500
    for i in range(0, len(keys), 500):
        p = r.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            p.get(k)
        assert p.execute() == [k[::-1] for k in keys[i:i + 500]]
    direct = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.primaries()[0][1], decode_responses=True)
    try:
        assert direct.mget_nonatomic(keys) == [k[::-1] for k in keys]
    finally:
        direct.close()
    r.close()


def test_multi_key_hash_tags_and_local_answers(rp):
    r = client(rp)
    assert r.mset({"{user:1}:name": "ada", "{user:1}:lang": "c"})
    assert r.mget("{user:1}:name", "{user:1}:lang") == ["ada", "c"]
    assert r.eval("return redis.call('GET', KEYS[1])", 1, "{user:1}:name") == "ada"
    with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
        r.sunion("a", "b")        # slots 15495 and 3300: not a command that splits
    with pytest.raises(redis.ResponseError, match="cluster mode"):
        r.execute_command("SELECT", "1")
    with pytest.raises(redis.ResponseError, match="repoint does not route 'CONFIG'"):
        r.config_get("maxmemory")
    assert r.ping()
    assert r.execute_command("CLUSTER", "KEYSLOT", "{user:1}:x") == r.execute_command("CLUSTER", "KEYSLOT", "user:1")
    slots = r.execute_command("CLUSTER", "SLOTS")
    assert len(slots) == 1 and slots[0][0] == 0 and slots[0][1] == SLOTS - 1
    assert slots[0][2][:2] == ["127.0.0.1", rp.ports["cache"]]
    assert "cluster_state:ok" in r.execute_command("CLUSTER", "INFO")
    # The session goes on after each local answer, in order.
    p = r.pipeline(transaction=False)
    p.set("x1", 1).sunion("a", "b").get("x1").execute_command("CLUSTER", "MYID").get("x1")
    out = p.execute(raise_on_error=False)
    assert out[0] is True and isinstance(out[1], redis.ResponseError) and out[2] == "1" and out[4] == "1"
    r.close()


def test_commands_over_several_slots_split(rp, redis_cluster):
    """MGET, MSET, DEL, UNLINK, EXISTS and TOUCH over keys of several slots are sent as one command per
    key to each key's shard, and their replies merged into the one the command would have had, in
    order with what comes before and after it."""
    r = client(rp)
    keys = [f"split:{i}" for i in range(200)]          # every shard, many slots
    assert len({redis_cluster.slot_of(k) for k in keys}) > 150
    assert r.mset({k: k.upper() for k in keys})
    assert r.mget(keys) == [k.upper() for k in keys]
    assert r.mget(["split:0", "nosuch:key", "split:1"]) == ["SPLIT:0", None, "SPLIT:1"]
    r.lpush("split:list", "x")
    assert r.mget(["split:0", "split:list"]) == ["SPLIT:0", None]     # another type: nil, as MGET does
    assert r.exists(*keys, "nosuch:key") == 200
    assert r.exists("split:0", "split:0", "split:1") == 3              # counted as often as named
    assert r.touch(*keys[:50]) == 50
    p = r.pipeline(transaction=False)
    p.set("before", 1).mget(keys[:20]).delete(*keys[:100]).unlink(*keys[100:]).get("before").mget(keys[:3])
    assert p.execute() == [True, [k.upper() for k in keys[:20]], 100, 100, "1", [None, None, None]]
    assert r.delete("split:list", "before") == 2
    r.close()


def test_data_set_wide_commands_span_every_shard(rp, redis_cluster):
    """DBSIZE, KEYS, RANDOMKEY, FLUSHALL and SCRIPT LOAD/EXISTS/FLUSH go to every shard's primary and
    their replies are merged; SCAN walks the shards one after the other with a cursor that names the
    shard, and returns every key once."""
    r = client(rp)
    assert r.flushall() and r.dbsize() == 0
    assert r.randomkey() is None and r.keys("*") == []
    keys = [f"scan:{i}" for i in range(3000)]
    for i in range(0, len(keys), 500):
        p = r.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            p.set(k, 1)
        p.execute()
    per_shard = [0, 0, 0]
    for i in range(3):
        d = redis.Redis(host="127.0.0.1", port=redis_cluster.shard_nodes(i)[0])
        per_shard[i] = d.dbsize()
        d.close()
    assert min(per_shard) > 500 and sum(per_shard) == 3000, per_shard
    assert r.dbsize() == 3000
    assert sorted(r.keys("scan:*")) == sorted(keys)
    assert r.randomkey() in set(keys)
    seen, cursors = [], []
    cursor = 0
    while True:
        cursor, batch = r.scan(cursor, match="scan:*", count=200)
        seen += batch
        cursors.append(cursor)
        if cursor == 0:
            break
    assert len(seen) == len(keys) and set(seen) == set(keys)
    assert len({c & 0x3FFF for c in cursors[:-1]}) == 3   # every shard in turn
    assert sorted(r.scan_iter(match="scan:1*", count=50)) == sorted(k for k in keys if k.startswith("scan:1"))
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.scan(12345)
    sha = r.script_load("return 7")
    assert r.script_exists(sha, "0" * 40) == [True, False]
    for i in range(3):                        # on every shard: EVALSHA works whatever its key's shard
        assert r.evalsha(sha, 1, redis_cluster.key_in_shard(i, "ev")) == 7
    assert r.script_flush() and r.script_exists(sha) == [False]
    assert r.flushall() and r.dbsize() == 0
    r.close()


def test_pubsub_and_sharded_pubsub(rp, redis_cluster):
    """SUBSCRIBE gives the session a connection of its own to a primary (the cluster bus carries every
    PUBLISH there), SSUBSCRIBE to its channel's shard's primary (SPUBLISH goes by the channel's slot)."""
    r = client(rp)
    sub = client(rp).pubsub(ignore_subscribe_messages=True)
    sub.subscribe("news")
    wait_for(lambda: sub.get_message(timeout=0.1) is None and sub.subscribed, 5, what="the subscription")
    got = []
    def published():
        r.publish("news", "hello")       # any shard: the cluster bus brings it to the subscriber's node
        m = sub.get_message(timeout=0.5)
        if m:
            got.append(m)
        return got
    wait_for(published, 10, what="a message published through repoint")
    assert got[0]["channel"] == "news" and got[0]["data"] == "hello"
    sub.close()
    for channel in ("orders", "{user:7}:events", "zzz"):
        s = socket.create_connection(("127.0.0.1", rp.ports["cache"]), timeout=10)
        s.sendall(resp("SSUBSCRIBE", channel))
        assert read_reply(s)[0] == b"ssubscribe"
        assert r.execute_command("SPUBLISH", channel, "x") == 1   # at the channel's shard: one subscriber
        assert read_reply(s) == [b"smessage", channel.encode(), b"x"]
        s.close()
    r.close()


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_reply(s):
    """One RESP2 array of bulk strings and integers, as a pushed message is."""
    f = s.makefile("rb")
    head = f.readline()
    assert head[:1] == b"*", head
    items = []
    for _ in range(int(head[1:])):
        line = f.readline()
        if line[:1] == b"$":
            items.append(f.read(int(line[1:]) + 2)[:-2])
        else:
            items.append(int(line[1:]))
    return items


def command(s, *args):
    """Send one command on a raw socket and read its one reply (RESP2): bytes, int, list, an error as
    ("ERR", text), or None for a nil."""
    s.sendall(resp(*args))
    return read_one(s.makefile("rb"))


def read_one(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return ("ERR", rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else f.read(int(rest) + 2)[:-2]
    if kind == b"*":
        return None if int(rest) < 0 else [read_one(f) for _ in range(int(rest))]
    raise AssertionError(line)


def test_transactions_bind_to_their_first_keys_slot(rp, redis_cluster):
    """MULTI/EXEC and WATCH go on a connection of the session's own to the primary of their first
    key's slot, whichever shard the session used before; a key of another slot inside is refused with
    CROSSSLOT and EXEC aborts (nothing of it ran); a WATCH conflict makes EXEC answer nil."""
    r, other = client(rp), client(rp)
    for i in range(3):                      # transactions on every shard from one connection, in turn
        for n in range(10):
            tag = "{%s}" % redis_cluster.key_in_shard(i, "tx", n)
            p = r.pipeline()                # transaction=True: MULTI ... EXEC
            p.set(f"{tag}:a", n).incr(f"{tag}:b").get(f"{tag}:a")
            assert p.execute() == [True, 1, str(n)]
            assert r.get(f"{tag}:a") == str(n)   # the session is back on the shared connections
    a, b = redis_cluster.key_in_shard(0, "x"), redis_cluster.key_in_shard(1, "y")
    r.delete(a, b)
    p = r.pipeline()
    p.set(a, 1).set(b, 2)
    with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
        p.execute()
    assert r.get(a) is None and r.get(b) is None
    # WATCH: the optimistic lock holds across the session's own connection.
    key = "{w}:counter"
    r.set(key, 10)
    with r.pipeline() as p:
        p.watch(key)
        v = int(p.get(key))
        p.multi()
        p.set(key, v + 1)
        assert p.execute() == [True]
    with r.pipeline() as p:
        p.watch(key)
        v = int(p.get(key))
        other.set(key, 100)                  # another client changes it between WATCH and EXEC
        p.multi()
        p.set(key, v + 1)
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get(key) == "100"
    # By hand, one command at a time: MULTI is answered before repoint knows the transaction's slot.
    s = socket.create_connection(("127.0.0.1", rp.ports["cache"]), timeout=10)
    k2 = redis_cluster.key_in_shard(2, "hand")
    assert command(s, "GET", a) is None       # the session is on shard 0's primary first
    assert command(s, "MULTI") == b"OK"
    assert command(s, "MULTI") == ("ERR", "ERR MULTI calls can not be nested")
    assert command(s, "SET", k2, "v") == b"QUEUED"
    assert command(s, "GET", k2) == b"QUEUED"
    assert command(s, "EXEC") == [b"OK", b"v"]
    assert command(s, "MULTI") == b"OK" and command(s, "EXEC") == []
    assert command(s, "MULTI") == b"OK" and command(s, "DISCARD") == b"OK"
    assert command(s, "EXEC") == ("ERR", "ERR EXEC without MULTI")
    assert command(s, "MULTI") == b"OK" and command(s, "SET", k2, "w") == b"QUEUED"
    assert command(s, "SET", a, "w")[1].startswith("CROSSSLOT Keys in request don't hash")
    assert command(s, "EXEC")[1].startswith("EXECABORT Transaction discarded because of previous errors")
    assert command(s, "GET", k2) == b"v" and command(s, "PING") == b"PONG"
    s.close()
    r.close()
    other.close()


def test_blocking_commands_wait_on_their_own(rp, redis_cluster):
    """BLPOP waits on a connection of its own at its key's shard: other commands of the same shard
    are not held up behind it, and it gets what another client pushes."""
    r, waiter = client(rp), client(rp)
    key = redis_cluster.key_in_shard(1, "queue")
    t, got = blpop_waiting(r, waiter, redis_cluster, 1, key, 10)
    t0 = time.monotonic()
    for i in range(50):                      # the shard's shared connection is not held up
        r.set(redis_cluster.key_in_shard(1, "busy", i), i)
    assert time.monotonic() - t0 < 2
    assert r.rpush(key, "job") == 1
    t.join(10)
    assert got == [(key, "job")]
    assert waiter.blpop([key], timeout=0.2) is None
    with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
        waiter.blpop([redis_cluster.key_in_shard(0, "q"), redis_cluster.key_in_shard(2, "q")], timeout=1)
    assert waiter.set(key, 1) and waiter.get(key) == "1"
    r.close()
    waiter.close()


def test_blocking_command_waits_through_its_shards_switchover(rp, redis_cluster):
    """A BLPOP waiting at a shard's primary when the shard switches over: the old primary unblocks it
    (it popped nothing), repoint sends it again to the new primary, and it gets what is pushed
    after -- the client sees nothing of the switchover."""
    r, waiter = client(rp, socket_timeout=30), client(rp, socket_timeout=30)
    key = redis_cluster.key_in_shard(2, "jobs")
    t, got = blpop_waiting(r, waiter, redis_cluster, 2, key, 25)
    old, new = redis_cluster.switchover(2)
    wait_for(lambda: any(c["cmd"] == "blpop" for c in direct_client_list(redis_cluster, 2)), 10,
             what=f"the BLPOP to be waiting at the new primary {new}")
    assert r.rpush(key, "job") == 1
    t.join(25)
    assert got == [(key, "job")]
    r.close()
    waiter.close()


def blpop_waiting(r, waiter, redis_cluster, shard, key, timeout):
    """`waiter` BLPOPs the empty list `key` of `shard` in a thread: (the thread, what it got, once
    it has), returned once the BLPOP waits at the shard's primary."""
    r.delete(key)
    got = []
    t = threading.Thread(target=lambda: got.append(waiter.blpop([key], timeout=timeout)))
    t.start()
    wait_for(lambda: any(c["cmd"] == "blpop" for c in direct_client_list(redis_cluster, shard)), 5,
             what="the BLPOP to be waiting at its shard's primary")
    return t, got


def direct_client_list(redis_cluster, shard):
    d = redis.Redis(host="127.0.0.1", port=redis_cluster.shard_nodes(shard)[0], decode_responses=True)
    try:
        return d.client_list()
    finally:
        d.close()


def test_cluster_client_stays_on_the_sidecar(rp):
    """redis-py's RedisCluster asks CLUSTER SLOTS and is told of one node, repoint: every command it
    sends then comes through the sidecar."""
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=rp.ports["cache"], decode_responses=True)
    try:
        assert [(n.host, n.port) for n in rc.get_nodes()] == [("127.0.0.1", rp.ports["cache"])]
        for i in range(1000):
            rc.set(f"rc:{i}", i)
        assert [rc.get(f"rc:{i}") for i in range(0, 1000, 37)] == [str(i) for i in range(0, 1000, 37)]
        assert rc.mget_nonatomic([f"rc:{i}" for i in range(10)]) == [str(i) for i in range(10)]
    finally:
        rc.close()


def test_switchover_of_each_shard_costs_nothing(rp, redis_cluster):
    """3 plain clients and one redis-py RedisCluster write keys of every shard every 5 ms, and a fifth
    client runs transactions (MULTI, INCR, INCR, EXEC) on each shard in turn, while each shard in
    turn switches over (CLUSTER FAILOVER on its replica): no client sees an error, every acknowledged
    write is on the new primaries, and every acknowledged transaction ran exactly once."""
    tags = ["{%s}" % redis_cluster.key_in_shard(i, "txw") for i in range(3)]
    tx_acked, tx_errors, stop = [0] * 3, [], threading.Event()

    def transactions():
        r = client(rp, socket_timeout=30)
        n = 0
        while not stop.is_set():
            i = n % 3
            p = r.pipeline()
            p.incr(f"{tags[i]}:a").incr(f"{tags[i]}:b")
            try:
                a, b = p.execute()
                assert a == b == tx_acked[i] + 1, (a, b, tx_acked[i])
                tx_acked[i] += 1
            except redis.RedisError as e:
                tx_errors.append(f"transaction on {tags[i]}: {e!r}")
            n += 1
            time.sleep(0.005)
        r.close()

    clients = [client(rp, socket_timeout=30) for _ in range(3)]
    clients.append(redis.cluster.RedisCluster(host="127.0.0.1", port=rp.ports["cache"], socket_timeout=30))
    tx = threading.Thread(target=transactions)
    tx.start()
    try:
        with KeyWriters(clients, lambda w, n: f"w{w}:{n % 64}") as kw:
            def progress(k=20):
                seen = list(kw.writes) + [sum(tx_acked)]
                wait_for(lambda: all(a >= b + k for a, b in zip(list(kw.writes) + [sum(tx_acked)], seen)), 10,
                         what="every writer to write")
            progress()
            for shard in range(3):
                old, new = redis_cluster.switchover(shard)
                wait_for(lambda: any(sh["primary"] == f"127.0.0.1:{new}" and sh["primary_ready"]
                                     for sh in rp.service("cache")["cluster"]["shards"]), 10,
                         what=f"repoint to follow shard {shard}'s switchover to {new}")
                progress()
    finally:
        stop.set()
        tx.join()
    writes = list(kw.writes) + [sum(tx_acked)]
    assert kw.errors + tx_errors == []
    s = rp.service("cache")
    assert sorted(sh["failovers"] for sh in s["cluster"]["shards"]) == [1, 1, 1], "\n".join(
        l for l in rp.logtext().splitlines() if "slot map" in l or "writer" in l or "member" in l)[-6000:]
    print(f"writes {writes}, retried {s['counters']['retried']}, shards {s['cluster']['shards']}")
    direct = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.primaries()[0][1], decode_responses=True)
    try:
        for key, n in kw.acked.items():
            assert int(direct.get(key)) >= n
        for i, tag in enumerate(tags):
            assert int(direct.get(f"{tag}:a")) == int(direct.get(f"{tag}:b")) == tx_acked[i]
    finally:
        direct.close()

def test_crash_of_one_shard_primary(rp, redis_cluster):
    """SIGKILL shard 0's primary while one client writes to each shard every 5 ms: the other shards
    never pause; shard 0's client gets at most its command in flight answered "may or may not have
    run" (its session goes on), waits for the promoted replica, and writes again there."""
    stop, lock = threading.Event(), threading.Lock()
    errors, log = {0: [], 1: [], 2: []}, {0: [], 1: [], 2: []}   # per shard: errors, (time, ok) of each write

    def writer(shard):
        r = client(rp, socket_timeout=30)
        n = 0
        while not stop.is_set():
            key = keys[shard][n % 16]
            try:
                r.set(key, n)
                ok = True
            except redis.RedisError as e:
                errors[shard].append(repr(e))
                ok = False
            with lock:
                log[shard].append((time.monotonic(), ok))
            n += 1
            time.sleep(0.005)
        r.close()

    keys = {s: [redis_cluster.key_in_shard(s, f"crash{s}", j) for j in range(16)] for s in range(3)}
    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        t_crash = time.monotonic()
        old, new = redis_cluster.crash(0)
        wait_for(lambda: rp.service("cache")["cluster"]["shards"] and any(
            sh["primary"] == f"127.0.0.1:{new}" and sh["primary_ready"] for sh in rp.service("cache")["cluster"]["shards"]),
            20, what="repoint to follow shard 0's promoted replica")
        t_promoted = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert errors[1] == [] and errors[2] == []
        for s in (1, 2):   # written all through shard 0's outage
            during = [t for t, ok in log[s] if t_crash + 0.1 <= t <= t_promoted - 0.1]
            assert len(during) >= (t_promoted - t_crash - 0.2) / 0.05, (s, len(during), t_promoted - t_crash)
        assert len(errors[0]) <= 1, errors[0]
        assert all("may or may not have run" in e for e in errors[0]), errors[0]
        assert any(ok and t > t_promoted for t, ok in log[0])    # shard 0's client goes on, same session
        gap = max(b - a for (a, _), (b, _) in zip(log[0], log[0][1:]))
        print(f"crash: shard 0 errors {errors[0]}, longest gap {gap * 1000:.0f} ms, promotion seen "
              f"{(t_promoted - t_crash) * 1000:.0f} ms after the kill; writes {[len(log[s]) for s in range(3)]}")
    finally:
        redis_cluster.restart(old)


def test_resharding_under_load_costs_nothing(rp, redis_cluster):
    """redis-cli --cluster reshard moves 300 slots from shard 0 to shard 1 while 4 plain clients write
    keys of every slot: the keys of a slot being migrated are answered ASK (waited out: sent again
    until the slot has moved), then MOVED (followed to the new owner, a confirmed primary): no client
    sees an error, every acknowledged write is readable after, and repoint's map shows the move."""
    stop, errors, acked, lock = threading.Event(), [], {}, threading.Lock()
    moving = {s for a, b in redis_cluster.slots_of_shard(0) for s in range(a, b + 1)}
    hot = [k for k in (f"rs:{i}" for i in range(20000)) if redis_cluster.slot_of(k) in moving][:400]

    def writer(w):
        r = client(rp, socket_timeout=30)
        n = 0
        while not stop.is_set():
            key = hot[(n * 4 + w) % len(hot)]
            try:
                r.set(key, f"{w}:{n}")
                with lock:
                    acked[key] = f"{w}:{n}"
            except redis.RedisError as e:
                errors.append(f"{key}: {e!r}")
            n += 1
        r.close()

    before = {sh["shard"]: sh["slots"] for sh in rp.service("cache")["cluster"]["shards"]}
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        redis_cluster.reshard(0, 1, 300)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [], errors[:5]
    assert len(acked) > 100
    direct = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.primaries()[0][1], decode_responses=True)
    try:
        for key, v in acked.items():
            assert direct.get(key) == v, key
    finally:
        direct.close()
    lab = sorted(sum(b - a + 1 for a, b in redis_cluster.slots_of_shard(i)) for i in range(3))
    assert lab != sorted(before.values())
    wait_for(lambda: sorted(sh["slots"] for sh in rp.service("cache")["cluster"]["shards"]) == lab, 10,
             what=f"repoint's map to show the move (the lab's: {lab}, repoint's: {rp.service('cache')['cluster']})")
    s = rp.service("cache")
    print(f"reshard: {len(acked)} keys written, retried {s['counters']['retried']}")


def give_back(node, slot):
    try:
        node.execute_command("CLUSTER", "ADDSLOTS", slot)
    except redis.ResponseError as e:
        assert "busy" in str(e)   # given back already
    node.execute_command("CLUSTER", "BUMPEPOCH")   # so that every node takes its claim again


def test_cluster_down_for_a_moment_is_waited_out(tmp_path, redis_cluster):
    """(Last in this module: it takes a slot away and back, which leaves the cluster's epochs moved.)
    A node that refuses for a moment (-CLUSTERDOWN: here its cluster state fails while one of its
    slots is taken away, as it does while a failover settles) ran nothing: a lone command refused so
    is sent again a little later, and the client sees only the delay; past hold_timeout it gets the
    node's own refusal."""
    rp = start_custom(tmp_path, cluster_service(redis_cluster, "hold_timeout = 3s\n"))
    try:
        wait_for(lambda: rp.service("cache")["cluster"]["ready"], 20, what="the cluster")
        node = redis_cluster.client(redis_cluster.primaries()[0][1])
        gone = redis_cluster.slot_of(redis_cluster.key_in_shard(0, "gone"))
        key = next(k for k in (redis_cluster.key_in_shard(0, "stay", n) for n in range(50))
                   if redis_cluster.slot_of(k) != gone)
        r = client(rp)
        assert r.set(key, "before")
        retried = rp.service("cache")["counters"]["retried"]
        node.execute_command("CLUSTER", "DELSLOTS", gone)
        try:
            timer = threading.Timer(0.4, lambda: node.execute_command("CLUSTER", "ADDSLOTS", gone))
            timer.start()
            t0 = time.monotonic()
            assert r.set(key, "during")         # refused "The cluster is down" until the slot is back
            took = time.monotonic() - t0
            timer.join()
        finally:
            give_back(node, gone)
        assert took >= 0.3, took
        assert r.get(key) == "during"
        assert rp.service("cache")["counters"]["retried"] > retried
        # Down for longer than hold_timeout: the client gets the refusal, and the session goes on.
        node.execute_command("CLUSTER", "DELSLOTS", gone)
        try:
            t0 = time.monotonic()
            with pytest.raises(redis.ResponseError, match="CLUSTERDOWN"):
                r.set(key, "late")
            assert 2.5 <= time.monotonic() - t0 <= 6
        finally:
            give_back(node, gone)
        wait_for(lambda: r.set(key, "after"), 10, what="the node to serve again")
        redis_cluster.wait_healthy()
        r.close()
    finally:
        rp.stop()


def test_cluster_auto_asks_the_members(tmp_path, redis_cluster, start_repoint):
    """cluster = auto: the first member's answer to CLUSTER SHARDS decides -- the lab cluster's nodes
    give a slot map (every shard followed, commands by slot), the lab's standalone Redis refuses it
    (served as one server); clients are held until then, never routed by a guess."""
    rp = start_custom(tmp_path, {"cache": f"protocol = redis\nmembers = {redis_cluster.seeds_config()}\n"
                                          "cluster = auto\nprobe_interval = 100ms\n"})
    try:
        wait_for(lambda: (rp.service("cache").get("cluster") or {}).get("ready"), 20, what="the cluster's shards")
        assert len(rp.service("cache")["cluster"]["shards"]) == 3
        r = client(rp)
        keys = [f"auto:{i}" for i in range(300)]
        assert r.mset({k: k for k in keys}) and r.mget(keys) == keys
        assert r.dbsize() >= 300
        r.close()
        assert "is in a Redis Cluster (cluster = auto)" in rp.logtext()
    finally:
        rp.stop()
    single = start_repoint(redis={"cluster": "auto"})
    s = single.service("redis")
    assert "cluster" not in s and s["writer_ready"]
    r = redis.Redis(host="127.0.0.1", port=single.ports["redis"], decode_responses=True, socket_timeout=10)
    assert r.set("auto:single", 1) and r.get("auto:single") == "1"
    with pytest.raises(redis.ResponseError, match="cluster support disabled"):
        r.execute_command("CLUSTER", "SLOTS")      # the server's own answer: repoint is no cluster here
    r.close()
    assert "is not in a Redis Cluster (cluster = auto): served as one server" in single.logtext()


def test_slot_map_from_cluster_slots_where_shards_is_not_answered(tmp_path, redis_cluster):
    """A node that does not answer CLUSTER SHARDS (Redis before 7.0 does not know it; here an ACL
    forbids it to the probes' user) gives its slot map as CLUSTER SLOTS: repoint asks that instead and
    follows the cluster all the same."""
    nodes = [p for i in range(3) for p in [redis_cluster.shard_nodes(i)[0]] + redis_cluster.shard_nodes(i)[1]]
    for port in nodes:
        d = redis.Redis(host="127.0.0.1", port=port)
        d.execute_command("ACL", "SETUSER", "oldprobe", "on", ">probe-pw", "~*", "&*", "+@all", "-cluster|shards")
        d.close()
    rp = start_custom(tmp_path, cluster_service(redis_cluster, "probe_user = oldprobe\nprobe_password = probe-pw\n"))
    try:
        wait_for(lambda: (rp.service("cache").get("cluster") or {}).get("ready"), 20, what="the map from CLUSTER SLOTS")
        assert len(rp.service("cache")["cluster"]["shards"]) == 3
        assert "does not answer CLUSTER SHARDS (Redis before 7.0, or an ACL)" in rp.logtext()
        r = client(rp)
        keys = [f"old:{i}" for i in range(300)]
        assert r.mset({k: k for k in keys}) and r.mget(keys) == keys
        r.close()
    finally:
        rp.stop()
        for port in nodes:
            d = redis.Redis(host="127.0.0.1", port=port)
            d.execute_command("ACL", "DELUSER", "oldprobe")
            d.close()


def test_ask_goes_to_the_importing_node_at_once(rp, redis_cluster):
    """A slot in the middle of a migration whose key has moved already: the old node answers ASK, and
    repoint sends the command once, after ASKING, to the node importing the slot -- the client gets
    its answer at once, not after the migration ends (here it never does on its own)."""
    src_port, dst_port = redis_cluster.shard_nodes(0)[0], redis_cluster.shard_nodes(1)[0]
    key = redis_cluster.key_in_shard(0, "asked")
    slot = redis_cluster.slot_of(key)
    src, dst = redis.Redis(port=src_port), redis.Redis(port=dst_port)
    r = client(rp)
    assert r.set(key, "before")
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", redis_cluster.node_id(src_port))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", redis_cluster.node_id(dst_port))
        src.execute_command("MIGRATE", "127.0.0.1", dst_port, key, 0, 5000)
        t0 = time.monotonic()
        assert r.get(key) == "before"                       # ASK, then ASKING + GET at the importing node
        assert r.set(key, "after") and r.get(key) == "after"
        assert time.monotonic() - t0 < 1
        assert dst.execute_command("ASKING") and dst.get(key) == b"after"   # where it ran
    finally:
        # The slot stable again at its owner, and its key back there.
        src.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        if dst.execute_command("ASKING") and dst.exists(key):
            dst.execute_command("MIGRATE", "127.0.0.1", src_port, key, 0, 5000)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        src.close()
        dst.close()
        r.close()
    redis_cluster.wait_healthy(30)
