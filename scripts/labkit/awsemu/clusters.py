"""Cluster-mode models over a real Redis Cluster: an ElastiCache replication group with cluster mode
enabled (several node groups) and a MemoryDB cluster with several shards, both over nodes a test
started (labkit.rediscluster.RedisCluster) and named to the emulator through its control API:

    POST /_lab/config {"redis_clusters": [
        {"kind": "elasticache", "id": "labcc",  "nodes": [{"shard": "0001", "host": "127.0.0.1", "port": P}, ...]},
        {"kind": "memorydb",    "id": "labmdb", "nodes": [{"shard": "0001", "host": "127.0.0.1", "port": P}, ...]}]}

replaces the whole set (an empty list removes them). A shard is the nodes named for it, for the whole
life of the model; whichever of them is primary, and which slots the shard serves, is asked of the
nodes at every reply (ROLE, CLUSTER SLOTS), as for the single-shard models. Member names, per shard in
the order given: ElastiCache cache clusters ID-SHARD-001, ID-SHARD-002, ... (CacheNodeId 0001);
MemoryDB nodes ID-SHARD-001, ... A failover (TestFailover, FailoverShard) is a real CLUSTER FAILOVER
sent to a replica of the shard, done once every live node of the model gives it the shard's slots.
"""

import re
import threading
import time

from ..base import Steps
from ..procs import LabError

KINDS = ("elasticache", "memorydb")
ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
MF_RETRY_S = 6.0            # a manual failover not done by then was aborted (CLUSTER_MF_TIMEOUT, 5 s): ask again
FAILOVER_TIMEOUT_S = 60.0


class Spec:
    """One configured model: kind, id, region, shards [(name, [(host, port), ...])]."""

    def __init__(self, kind, id, shards, region):
        self.kind, self.id, self.shards, self.region = kind, id, shards, region

    def __repr__(self):
        return "<%s cluster model %s: %d shards>" % (self.kind, self.id, len(self.shards))

    @property
    def endpoints(self):
        return [hp for _, ns in self.shards for hp in ns]

    def shard(self, name):
        for s, ns in self.shards:
            if s == name:
                return ns
        return None

    def member(self, shard, i):
        """Cache cluster id (ElastiCache) / node name (MemoryDB) of a shard's i-th node."""
        return "%s-%s-%03d" % (self.id, shard, i + 1)

    def members(self):
        return [(s, self.member(s, i), hp) for s, ns in self.shards for i, hp in enumerate(ns)]

    def public(self):
        return {"kind": self.kind, "id": self.id, "region": self.region,
                "nodes": [{"shard": s, "host": h, "port": p} for s, ns in self.shards for h, p in ns]}


def parse(items, region, reserved=None):
    """The value of "redis_clusters" -> [Spec]; ValueError (a 400 from the control API) when malformed.
    reserved: {kind: ids of the built-in models}, which a cluster model may not take."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError("redis_clusters: a list of {kind, id, nodes} (got %s)" % type(items).__name__)
    out, seen = [], set()
    for m in items:
        if not isinstance(m, dict):
            raise ValueError("redis_clusters: each model is {kind, id, nodes}")
        unknown = set(m) - {"kind", "id", "nodes", "region"}
        if unknown:
            raise ValueError("redis_clusters: unknown keys %s (kind, id, nodes, region)" % sorted(unknown))
        kind, mid = m.get("kind"), m.get("id")
        if kind not in KINDS:
            raise ValueError("redis_clusters: kind %r (%s)" % (kind, ", ".join(KINDS)))
        if not isinstance(mid, str) or not ID_RE.match(mid):
            raise ValueError("redis_clusters: id %r (lowercase letters, digits, hyphens; a letter first)" % (mid,))
        if (kind, mid) in seen:
            raise ValueError("redis_clusters: %s %s named twice" % (kind, mid))
        if mid in (reserved or {}).get(kind, ()):
            raise ValueError("redis_clusters: %s %s is a built-in model of the emulator" % (kind, mid))
        seen.add((kind, mid))
        nodes = m.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise ValueError("redis_clusters: %s %s: nodes must be a non-empty list" % (kind, mid))
        shards, taken = {}, set()
        for n in nodes:
            if not isinstance(n, dict) or not isinstance(n.get("shard"), str) or not n["shard"]:
                raise ValueError("redis_clusters: %s %s: each node is {shard, host, port}" % (kind, mid))
            host = n.get("host") or "127.0.0.1"
            try:
                port = int(n.get("port"))
            except (TypeError, ValueError):
                raise ValueError("redis_clusters: %s %s: port %r" % (kind, mid, n.get("port"))) from None
            if not isinstance(host, str) or not 0 < port < 65536:
                raise ValueError("redis_clusters: %s %s: endpoint %r:%r" % (kind, mid, host, port))
            if (host, port) in taken:
                raise ValueError("redis_clusters: %s %s: %s:%d named twice" % (kind, mid, host, port))
            taken.add((host, port))
            shards.setdefault(n["shard"], []).append((host, port))
        r = m.get("region") or region
        out.append(Spec(kind, mid, sorted(shards.items()), r))
    return out


class Pool:
    """redis-py clients per (host, port), shared by the request and operation threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._clients = {}

    def client(self, hp):
        with self._lock:
            c = self._clients.get(hp)
            if c is None:
                import redis
                c = self._clients[hp] = redis.Redis(host=hp[0], port=hp[1], decode_responses=True,
                                                    socket_timeout=1.0, socket_connect_timeout=1.0)
            return c

    def cmd(self, hp, *args):
        return self.client(hp).execute_command(*args)   # "CLUSTER", "SLOTS" as two words: the raw reply

    def close(self):
        with self._lock:
            cs, self._clients = list(self._clients.values()), {}
        for c in cs:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


def _parallel(fn, items):
    ts = [threading.Thread(target=fn, args=(i,), daemon=True) for i in items]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def _role(pool, hp):
    """('primary'|'replica'|'down', upstream port or None, link up?)"""
    try:
        r = pool.cmd(hp, "ROLE")
    except Exception:  # noqa: BLE001 - not answering: down
        return "down", None, False
    if r[0] == "master":
        return "primary", None, True
    try:
        return "replica", int(r[2]), r[3] == "connected"
    except (IndexError, ValueError, TypeError):
        return "replica", None, False


def _slot_map(pool, hp):
    """CLUSTER SLOTS of one node: sorted [(first, last, (owner host, owner port))]; None if it does not answer."""
    try:
        rows = pool.cmd(hp, "CLUSTER", "SLOTS")
    except Exception:  # noqa: BLE001
        return None
    out = []
    for r in rows:
        try:
            out.append((int(r[0]), int(r[1]), (str(r[2][0]), int(r[2][1]))))
        except (IndexError, ValueError, TypeError):
            continue
    return sorted(out)


def slots_text(ranges):
    """AWS' Slots string: "0-5460", several ranges comma-separated."""
    return ",".join("%d-%d" % (a, b) for a, b in ranges)


class View:
    """What the nodes of one model say now: per node its role, per shard its primary, replicas and slots."""

    def __init__(self, spec, pool):
        self.spec = spec
        self.nodes = {}         # (host, port) -> {"role", "upstream", "link", "slots"}

        def probe(hp):
            role, up, link = _role(pool, hp)
            sm = _slot_map(pool, hp) if role != "down" else None
            self.nodes[hp] = {"role": role, "upstream": up, "link": link, "slots": sm}
        _parallel(probe, spec.endpoints)
        ports = [p for _, p in spec.endpoints]
        self._by_port = len(set(ports)) == len(ports)     # ports unique: owners matched by port alone
        self.shards = {}
        for s, ns in spec.shards:
            self.shards[s] = self._shard(ns)

    def _owns(self, owner, hp):
        return owner[1] == hp[1] if self._by_port else owner == hp

    def _shard(self, ns):
        masters = [hp for hp in ns if self.nodes[hp]["role"] == "primary"]
        any_map = next((self.nodes[hp]["slots"] for hp in self.spec.endpoints if self.nodes[hp]["slots"]), None)
        if len(masters) > 1 and any_map:
            owning = [hp for hp in masters if any(self._owns(o, hp) for _, _, o in any_map)]
            masters = owning or masters
        primary = masters[0] if masters else None
        if primary is None and any_map:       # no live primary: the one the cluster still names
            named = [hp for hp in ns if any(self._owns(o, hp) for _, _, o in any_map)]
            primary = named[0] if named else None
        # the shard's slots as its primary reports them (it knows first), else as any node does
        sm = (self.nodes[primary]["slots"] if primary and self.nodes[primary]["slots"] else any_map) or []
        ranges = [(a, b) for a, b, o in sm if any(self._owns(o, hp) for hp in ns)]
        replicas = [hp for hp in ns if hp != primary and self.nodes[hp]["role"] == "replica"]
        linked = [hp for hp in replicas if primary and self.nodes[hp]["upstream"] == primary[1]
                  and self.nodes[hp]["link"] and self.nodes[primary]["role"] == "primary"]
        return {"primary": primary, "replicas": replicas, "linked": linked, "slots": slots_text(ranges),
                "ranges": ranges}

    def live(self):
        return [hp for hp in self.spec.endpoints if self.nodes[hp]["role"] != "down"]

    def entry(self):
        """The endpoint a client starts from (the configuration / cluster endpoint): the first live node."""
        lv = self.live()
        return lv[0] if lv else self.spec.endpoints[0]


def failover(spec, shard, pool, stopping=None, timeout=FAILOVER_TIMEOUT_S):
    """CLUSTER FAILOVER on a linked replica of `shard`; returns (as _run_op's promote functions do)
    {promoted_at, steps, from, to} once the replica is primary, the old primary (if alive) its
    replica, and every live node of the model gives the new primary the shard's slots."""
    ns = spec.shard(shard)
    v = View(spec, pool)
    sh = v.shards[shard]
    old = sh["primary"]
    if not sh["linked"]:
        raise LabError("shard %s of %s has no linked replica to fail over to" % (shard, spec.id))
    new = sh["linked"][0]
    names = {hp: spec.member(shard, i) for i, hp in enumerate(ns)}
    steps = Steps()
    asked = None
    deadline = time.monotonic() + timeout
    why = "not asked yet"
    t0 = time.monotonic()
    while True:
        if stopping is not None and stopping.is_set():
            raise LabError("emulator stopping")
        role, up, _ = _role(pool, new)
        if role == "primary":
            if steps.promoted_at is None:
                steps.promoted()
                steps.steps["promote"] = round((time.monotonic() - t0) * 1000.0, 1)
            why = _agreed(spec, shard, pool, old, new)
            if why is None:
                break
        elif role == "replica" and up == old[1] and (asked is None or time.monotonic() - asked > MF_RETRY_S):
            # not yet asked, or asked long enough ago that Redis gave up (CLUSTER_MF_TIMEOUT, 5 s)
            try:
                pool.cmd(new, "CLUSTER", "FAILOVER")
            except Exception as exc:  # noqa: BLE001 - retried
                why = "CLUSTER FAILOVER on %s:%d: %s" % (new[0], new[1], exc)
            else:
                if asked is None:
                    steps.steps["cluster_failover_sent_ms"] = round((time.monotonic() - t0) * 1000.0, 1)
                asked = time.monotonic()
                why = "%s:%d asked to take over" % new
        else:
            why = "%s:%d says ROLE %s (upstream %s)" % (new[0], new[1], role, up)
        if time.monotonic() > deadline:
            raise LabError("shard %s of %s: failover %s:%d -> %s:%d not done in %.0f s (%s)"
                           % (shard, spec.id, old[0], old[1], new[0], new[1], timeout, why))
        time.sleep(0.05)
    steps.steps["agreed"] = round((time.monotonic() - t0) * 1000.0, 1)
    return {"promoted_at": steps.promoted_at, "steps": steps.steps, "from": names.get(old), "to": names[new]}


def _agreed(spec, shard, pool, old, new):
    """None once the old primary (if alive) follows the new one and every live node of the model gives
    the new primary the shard's slots (no range to the old one); else what is still missing."""
    if old is not None:
        role, up, _ = _role(pool, old)
        if role == "primary" or (role == "replica" and up != new[1]):
            return "%s:%d says ROLE %s (upstream %s)" % (old[0], old[1], role, up)
    v = View(spec, pool)
    ns = spec.shard(shard)
    for hp in v.live():
        sm = v.nodes[hp]["slots"]
        if sm is None:
            return "%s:%d gives no CLUSTER SLOTS" % hp
        mine = [o for _, _, o in sm if any(v._owns(o, x) for x in ns)]      # none: a shard without slots
        if any(not v._owns(o, new) for o in mine):
            return "%s:%d does not give shard %s's slots to %s:%d yet" % (hp[0], hp[1], shard, new[0], new[1])
    return None
