"""The emulated AWS resources, over the lab's real servers.

    RDS          lab-postgres (aurora-postgresql: pg1..pg3), lab-mysql (aurora-mysql: my1, my2)   us-east-1
    ElastiCache  lab-redis (rd1..rd3; members lab-redis-001..003, node group 0001)                 us-east-1
                 Global Datastore lab-global = lab-gd-east (us-east-1: gd1, gd2)
                                             + lab-gd-west (us-west-2: gd3, gd4; gd3 follows gd1)
    MemoryDB     lab-memorydb: shard 0001 (mdb1, mdb2), shard 0002 (mdb3, mdb4)                    us-east-1
    Cluster mode (configured: POST /_lab/config {"redis_clusters": [...]}, see clusters.py)
                 ElastiCache groups with cluster mode enabled and MemoryDB clusters of several
                 shards over a real Redis Cluster's nodes (members ID-SHARD-001, ...)           us-east-1

Nothing about roles is stored here: every reply asks the nodes (ROLE, pg_is_in_recovery(),
@@read_only) at that moment, so whatever moves the writer (this emulator, `lab switchover`, a
crash + `lab promote`) shows in the next reply. Only the transient statuses of operations under
way (failing-over, modifying, rebooting) and their history live here.
"""

import base64
import collections
import json
import threading
import time

from .. import lab as labmod
from ..base import Steps
from ..procs import LabError
from . import clusters as awsclusters
from . import nodes as awsnodes
from .wire import ApiError, XList, iso, q_bool, q_filters, q_int

ACCOUNT = "123456789012"
REGION = "us-east-1"
AZS = ("a", "b", "c")
CREATED = 1700000000.0

RDS_CLUSTERS = (
    # id, lab engine, Engine, EngineVersion, parameter group, default port, license
    ("lab-postgres", "postgres", "aurora-postgresql", "15.4", "default.aurora-postgresql15", 5432,
     "postgresql-license"),
    ("lab-mysql", "mysql", "aurora-mysql", "8.0.mysql_aurora.3.05.2", "default.aurora-mysql8.0", 3306,
     "general-public-license"),
)
GLOBAL_ID = "lab-global"
# replication groups: id, region, [(cache cluster id, node name, source)], global id
EC_GROUPS = (
    ("lab-redis", REGION, "lab", ("rd1", "rd2", "rd3"), None),
    ("lab-gd-east", "us-east-1", "aws", ("gd1", "gd2"), GLOBAL_ID),
    ("lab-gd-west", "us-west-2", "aws", ("gd3", "gd4"), GLOBAL_ID),
)
MEMORYDB = ("lab-memorydb", REGION, (("0001", "0-8191", ("mdb1", "mdb2")),
                                     ("0002", "8192-16383", ("mdb3", "mdb4"))))

DEFAULT_DELAYS = {"promote": 1.0, "settle": 0.5}
SERVICES = ("rds", "elasticache", "global", "memorydb")


class Models:
    def __init__(self, lab_dir, cfg=None):
        cfg = dict(cfg or {})
        self.lab_dir = lab_dir
        self.reader = labmod.Lab(lab_dir)      # replies (request threads)
        self.writer = labmod.Lab(lab_dir)      # promotions (operation threads; the lab's flock)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.delays = {s: dict(DEFAULT_DELAYS) for s in SERVICES}
        self.set_delays(cfg.pop("delays", None) or {})
        self.test_failover_limit = int(cfg.get("test_failover_limit", 15))
        self.max_page_size = int(cfg.get("max_page_size", 100))
        self.strict_regions = bool(cfg.get("strict_regions", True))
        # What the API says about in-transit encryption (TransitEncryptionEnabled, MemoryDB TLSEnabled); the
        # emulator's own nodes stay plaintext, so saying True shows what a client does with the flag.
        self.transit_encryption = bool(cfg.get("transit_encryption", False))
        # failover calls (TestFailover, FailoverShard, FailoverGlobalReplicationGroup) per service and
        # minute before APICallRateForCustomerExceeded; 0: no limit
        self.failover_rate_limit = int(cfg.get("failover_rate_limit", 0))
        # seconds a dead writer is tolerated before the emulator fails over by itself (as Aurora,
        # ElastiCache and MemoryDB do); 0: never (the default: crash drills stay in the lab's hands)
        self.auto_failover = float(cfg.get("auto_failover", 0))
        self._rate = {"elasticache": collections.deque(), "memorydb": collections.deque()}
        self._down_since = {}
        self._monitor = None
        self.busy = {}          # (service, model id) -> op
        self.ops = []           # history of failover operations
        self.quota = {"elasticache": collections.deque(), "memorydb": collections.deque()}
        self._op_seq = 0
        # cluster-mode models over a real Redis Cluster (clusters.py): [clusters.Spec]
        self.cpool = awsclusters.Pool()
        self.redis_clusters = awsclusters.parse(cfg.get("redis_clusters"), REGION, self._reserved_ids())

    # ---- configuration ----------------------------------------------------------------------------
    def set_delays(self, d):
        """{"promote": s, "settle": s} for every service, or {"rds": {...}, ...}."""
        with self.lock:
            for k, v in d.items():
                if k in SERVICES:
                    for kk, vv in (v or {}).items():
                        if kk not in DEFAULT_DELAYS:
                            raise ValueError("unknown delay %r (promote, settle)" % kk)
                        self.delays[k][kk] = float(vv)
                elif k in DEFAULT_DELAYS:
                    for s in SERVICES:
                        self.delays[s][k] = float(v)
                else:
                    raise ValueError("unknown delay %r (promote, settle, or a service: %s)"
                                     % (k, ", ".join(SERVICES)))
            return {s: dict(v) for s, v in self.delays.items()}

    def configure(self, d):
        with self.lock:
            if "delays" in d:
                self.set_delays(d["delays"])
            if "test_failover_limit" in d:
                self.test_failover_limit = int(d["test_failover_limit"])
            if "max_page_size" in d:
                self.max_page_size = max(1, int(d["max_page_size"]))
            if "strict_regions" in d:
                self.strict_regions = bool(d["strict_regions"])
            if "transit_encryption" in d:
                self.transit_encryption = bool(d["transit_encryption"])
            if "failover_rate_limit" in d:
                self.failover_rate_limit = int(d["failover_rate_limit"])
            if "auto_failover" in d:
                self.auto_failover = float(d["auto_failover"] or 0)
                self._down_since.clear()
            if "redis_clusters" in d:
                self.redis_clusters = awsclusters.parse(d["redis_clusters"], REGION, self._reserved_ids())
            if d.get("reset_quota"):
                for q in self.quota.values():
                    q.clear()
            return self.config()

    def config(self):
        with self.lock:
            return {"delays": {s: dict(v) for s, v in self.delays.items()},
                    "test_failover_limit": self.test_failover_limit, "max_page_size": self.max_page_size,
                    "strict_regions": self.strict_regions, "failover_rate_limit": self.failover_rate_limit,
                    "transit_encryption": self.transit_encryption,
                    "auto_failover": self.auto_failover,
                    "redis_clusters": [s.public() for s in self.redis_clusters],
                    "quota_used": {k: len(self._quota(k)) for k in self.quota}}

    @staticmethod
    def _reserved_ids():
        return {"elasticache": {g[0] for g in EC_GROUPS}, "memorydb": {MEMORYDB[0]}}

    def _clusters(self, kind, region=None):
        """The cluster-mode models of one kind (in a region, when given and regions are strict)."""
        with self.lock:
            specs = list(self.redis_clusters)
        return [s for s in specs if s.kind == kind and self._check_region(region, s.region)]

    def _cluster_find(self, kind, mid, region):
        for s in self._clusters(kind, region):
            if mid and s.id == mid.lower():
                return s
        return None

    def state(self):
        with self.lock:
            return {"config": self.config(), "ops": [dict(o) for o in self.ops],
                    "busy": ["%s:%s" % k for k in self.busy], "models": self.describe_models()}

    def describe_models(self):
        """Which ids map to which lab nodes (for tests and humans)."""
        self._refresh()
        out = {"rds": {}, "elasticache": {}, "global": {}, "memorydb": {}}
        engines = self.reader.state.get("engines", {})
        for cid, eng, *_ in RDS_CLUSTERS:
            if eng in engines:
                out["rds"][cid] = {"region": REGION, "engine": eng, "instances": list(engines[eng]["order"])}
        for gid, region, src, names, gl in self._ec_groups():
            out["elasticache"][gid] = {"region": region, "node_group": "0001", "global": gl,
                                       "members": {"%s-%03d" % (gid, i + 1): n for i, n in enumerate(names)}}
        if self._aws_nodes_up():
            out["global"][GLOBAL_ID] = {"members": {g[0]: g[1] for g in EC_GROUPS if g[4] == GLOBAL_ID}}
            name, region, shards = MEMORYDB
            out["memorydb"][name] = {"region": region, "shards": {
                s: {"%s-%s-%03d" % (name, s, i + 1): n for i, n in enumerate(ns)} for s, _, ns in shards}}
        for spec in self._clusters("elasticache"):
            out["elasticache"][spec.id] = {
                "region": spec.region, "cluster_mode": True, "global": None,
                "node_groups": {s: {spec.member(s, i): "%s:%d" % hp for i, hp in enumerate(ns)}
                                for s, ns in spec.shards},
                "members": {m: "%s:%d" % hp for _, m, hp in spec.members()}}
        for spec in self._clusters("memorydb"):
            out["memorydb"][spec.id] = {
                "region": spec.region, "cluster_mode": True,
                "shards": {s: {spec.member(s, i): "%s:%d" % hp for i, hp in enumerate(ns)}
                           for s, ns in spec.shards}}
        return out

    # ---- reading the lab ------------------------------------------------------------------------
    def _refresh(self):
        lab = self.reader
        if lab._depth == 0:
            lab.state = lab._load()

    def _aws_nodes_up(self):
        return bool(self.reader.state.get("aws", {}).get("nodes"))

    def _ec_groups(self):
        engines = self.reader.state.get("engines", {})
        out = []
        for gid, region, src, names, gl in EC_GROUPS:
            if src == "lab":
                if "redis" not in engines:
                    continue
                names = tuple(engines["redis"]["order"])
            elif not self._aws_nodes_up():
                continue
            out.append((gid, region, src, names, gl))
        return out

    def _node(self, src, engine, name):
        if src == "aws":
            return awsnodes.node(self.reader, name)
        return labmod.Node(self.reader, engine, name)

    def _redis_eng(self, src):
        return awsnodes.engine(self.reader) if src == "aws" else self.reader._engine("redis")

    @staticmethod
    def _redis_probe(eng, node):
        """('primary'|'replica'|'down', port of the configured master or None)."""
        try:
            if not eng.alive(node):
                return "down", None
            r = eng.r(node, "ROLE")
        except Exception:  # noqa: BLE001
            return "down", None
        if r[0] == "master":
            return "primary", None
        try:
            return "replica", int(r[2])
        except (IndexError, ValueError, TypeError):
            return "replica", None

    def _redis_view(self, src, names):
        """{name: {"node", "role", "upstream", "recorded"}} for redis nodes, probed in parallel."""
        eng = self._redis_eng(src)
        out = {}

        def probe(n):
            node = self._node(src, "redis", n)
            try:
                recorded, rec_up = node.st.get("role"), node.st.get("upstream")
            except LabError:
                recorded = rec_up = None
            role, up = self._redis_probe(eng, node)
            out[n] = {"node": node, "role": role, "upstream": up, "recorded": recorded, "recorded_up": rec_up}
        _parallel(probe, names)
        return out

    @staticmethod
    def _group_primary(names, view):
        """The node group's primary: a master, or the member that follows a node outside the group
        (a Global Datastore secondary); from the recorded roles when no live member says."""
        ports = {view[n]["node"].port for n in names}
        for n in names:
            v = view[n]
            if v["role"] == "primary" or (v["role"] == "replica" and v["upstream"] not in ports):
                return n
        for n in names:
            v = view[n]
            if v["recorded"] == "primary" or (v["recorded"] == "replica" and v.get("recorded_up")
                                              and v["recorded_up"] not in names):
                return n
        return None

    # ---- helpers --------------------------------------------------------------------------------
    def _quota(self, service):
        q = self.quota[service]
        cutoff = time.time() - 24 * 3600
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def _page(self, items, params, action, max_key="MaxRecords", marker_key="Marker", lo=20, hi=100,
              exc="InvalidParameterValue"):
        try:
            maxr = q_int(params, max_key, lo, hi, default=hi)
        except ApiError as e:
            raise ApiError(exc, 400, e.message)
        maxr = max(1, min(maxr, self.max_page_size))
        start = 0
        marker = params.get(marker_key)
        if marker:
            try:
                d = json.loads(base64.urlsafe_b64decode(marker.encode() + b"==").decode())
                if d.get("a") != action:
                    raise ValueError("marker of another action")
                start = int(d["o"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc, 400, "Invalid %s: %s" % (marker_key, marker))
        page = items[start:start + maxr]
        nxt = None
        if start + maxr < len(items):
            nxt = base64.urlsafe_b64encode(json.dumps({"a": action, "o": start + maxr}).encode()).decode().rstrip("=")
        return page, nxt

    def _check_region(self, region, model_region):
        return not self.strict_regions or region is None or region == model_region

    def _new_op(self, service, action, model, **kw):
        with self.lock:
            self._op_seq += 1
            op = {"id": self._op_seq, "service": service, "action": action, "model": model,
                  "state": "pending", "requested_at": time.time(), "promote_started_at": None,
                  "promoted_at": None, "completed_at": None, "error": None, "steps": {}}
            op.update(kw)
            self.ops.append(op)
            del self.ops[:-200]
            return op

    def _wait_delay(self, start, delays, k):
        """Sleep until start + the delay; True if the emulator stops first. A service name's delay is
        re-read while waiting, so shortening it (POST /_lab/delays) releases the operation."""
        while True:
            d = self.delays[delays][k] if isinstance(delays, str) else delays[k]
            left = start + d - time.time()
            if left <= 0:
                return False
            if self.stopping.wait(min(left, 0.05)):
                return True

    def _run_op(self, op, key, delays, promote, after=None):
        """Background: wait the promote delay, do the promotion, wait the settle delay, clear the busy
        state. delays: a service name (its current delays) or {"promote": s, "settle": s}."""
        def run():
            try:
                if self._wait_delay(op["requested_at"], delays, "promote"):
                    raise LabError("emulator stopping")
                with self.lock:
                    op["state"] = "promoting"
                    op["promote_started_at"] = time.time()
                r = promote() or {}
                with self.lock:
                    op["promoted_at"] = r.get("promoted_at") or time.time()
                    op["steps"] = r.get("steps", {})
                    for k in ("from", "to"):
                        if r.get(k):
                            op[k] = r[k]
                    op["state"] = "settling"
                self._wait_delay(time.time(), delays, "settle")
            except Exception as exc:  # noqa: BLE001 - reported in the op, the model goes back to available
                with self.lock:
                    op["error"] = "%s: %s" % (type(exc).__name__, exc)
            finally:
                with self.lock:
                    if after:
                        try:
                            after()
                        except Exception as exc:  # noqa: BLE001
                            op["error"] = op["error"] or "%s: %s" % (type(exc).__name__, exc)
                    self.busy.pop(key, None)
                    op["completed_at"] = time.time()
                    op["state"] = "failed" if op["error"] else "done"
                    op["duration_ms"] = round((op["completed_at"] - op["requested_at"]) * 1000, 1)
                    if op["promoted_at"] and op["promote_started_at"]:
                        op["promotion_ms"] = round((op["promoted_at"] - op["promote_started_at"]) * 1000, 1)
        t = threading.Thread(target=run, name="awsemu-op-%d" % op["id"], daemon=True)
        t.start()
        op["_thread"] = t.name

    def wait_idle(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if not self.busy:
                    return True
            time.sleep(0.02)
        return False

    # ---- promotions on the lab's own engines ------------------------------------------------------
    def _lab_failover(self, engine, target=None):
        """Planned switchover to target (default: the lab's first replica); when the primary is down,
        promote the target and make the other live nodes follow it."""
        lab = self.writer
        with lab._op():
            p = lab.primary(engine)
            if p is not None and len(lab.primaries(engine)) == 1:
                r = lab.switchover(engine, to=target)
                return r
            if target is None:
                reps = lab.replicas(engine)
                if not reps:
                    raise LabError("%s has no live replica to promote" % engine)
                target = reps[0]
            r1 = lab.promote(engine, target)
            r2 = lab.repoint(engine, primary=target)
            steps = dict(r1["steps"])
            steps.update(r2["steps"])
            return {"promoted_at": r1["promoted_at"], "steps": steps, "from": p.name if p else None,
                    "to": target}

    def _aws_failover(self, names, target=None, from_group=None):
        """Fail a node group of the emulator's redis nodes over to `target` (default: its first live
        replica). With from_group (Global Datastore): make group `names` the primary one, taking
        over from the primary of from_group."""
        lab = self.writer
        with lab._op():
            eng = awsnodes.engine(lab)
            every = awsnodes.NAMES
            view = {}
            for n in every:
                node = awsnodes.node(lab, n)
                role, up = self._redis_probe(eng, node)
                view[n] = {"node": node, "role": role, "upstream": up, "recorded": node.st.get("role"),
                           "recorded_up": node.st.get("upstream")}
            by_port = {view[n]["node"].port: n for n in every}
            steps = Steps()
            if from_group is not None:
                old = self._group_primary(from_group, view)
                new = self._group_primary(names, view)
                if new is None or view[new]["role"] == "down":
                    raise LabError("no live primary in the group to promote (%s)" % ",".join(names))
                if old and view[old]["role"] == "primary" and view[new]["upstream"] == view[old]["node"].port:
                    eng.switchover(view[old]["node"], view[new]["node"], [], steps)
                else:
                    with steps("promote"):
                        eng.promote(view[new]["node"], steps)
                    if old and view[old]["role"] != "down":
                        eng.make_replica(view[old]["node"], view[new]["node"], steps)
                frm, to = old, new
            else:
                old = self._group_primary(names, view)
                cands = [n for n in names if n != old and view[n]["role"] == "replica"
                         and (old is None or view[n]["upstream"] == view[old]["node"].port
                              or view[old]["role"] == "down")]
                if target is not None:
                    if target not in cands:
                        raise LabError("%s is not a live replica of %s" % (target, old))
                    new = target
                elif cands:
                    new = cands[0]
                else:
                    raise LabError("no live replica in %s to fail over to" % ",".join(names))
                others = [n for n in names if n not in (old, new) and view[n]["role"] == "replica"]
                # nodes outside the group that follow its primary (a secondary region's primary)
                outside = [n for n in every if n not in names and view[n]["role"] == "replica"
                           and old is not None and view[n]["upstream"] == view[old]["node"].port]
                N = view[new]["node"]
                if old and view[old]["role"] == "primary":
                    eng.switchover(view[old]["node"], N, [view[o]["node"] for o in others + outside], steps)
                else:
                    ext = view[old]["upstream"] if old else None
                    ext_name = by_port.get(ext)
                    if ext_name and view[old]["role"] == "replica":
                        # a secondary group: the new primary follows the same upstream
                        eng.make_replica(N, view[ext_name]["node"], steps)
                        steps.promoted()
                        eng.make_replica(view[old]["node"], N, steps)
                    else:
                        with steps("promote"):
                            eng.promote(N, steps)
                    for o in others + outside:
                        eng.make_replica(view[o]["node"], N, steps)
                frm, to = old, new
            # record what the nodes now say
            for n in every:
                node = view[n]["node"]
                role, up = self._redis_probe(eng, node)
                if role != "down":
                    node.st.update(role=role, upstream=by_port.get(up))
            lab._save()
            return {"promoted_at": steps.promoted_at or time.time(), "steps": steps.steps,
                    "from": frm, "to": to}

    # ---- automatic failover (opt-in) ----------------------------------------------------------------
    def start_monitor(self):
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="awsemu-auto-failover", daemon=True)
            self._monitor.start()

    def _monitor_loop(self):
        while not self.stopping.wait(0.2):
            if self.auto_failover <= 0:
                continue
            try:
                self._auto_check()
            except Exception as exc:  # noqa: BLE001 - keep watching
                print("awsemu: auto-failover check failed: %s" % exc, flush=True)

    def _dead_for(self, key, dead):
        """Seconds the writer of `key` has been down (0 when it is not)."""
        now = time.time()
        if not dead:
            self._down_since.pop(key, None)
            return 0.0
        return now - self._down_since.setdefault(key, now)

    def _auto_check(self):
        self._refresh()
        after = self.auto_failover
        for spec in self._rds_specs():
            key = ("rds", spec[0])
            ns, roles, writers = self._rds_view(spec)
            live = [n.name for n in ns if roles[n.name] == "replica"]
            dead = bool(live) and not any(r == "primary" for r in roles.values())
            if self._dead_for(key, dead) >= after:
                with self.lock:
                    if key in self.busy:
                        continue
                    op = self._new_op("rds", "auto-failover", spec[0], **{
                        "from": writers[0] if writers else None, "to": live[0], "rebooting": [live[0]]})
                    self.busy[key] = op
                    delays = dict(self.delays["rds"], promote=0.0)
                self._down_since.pop(key, None)
                self._run_op(op, key, delays, lambda e=spec[1], t=live[0]: self._lab_failover(e, t))
        for g in self._ec_groups():
            gid, region, src, names, gl = g
            if gl:          # a Global Datastore does not change regions by itself
                continue
            key = ("elasticache", gid)
            view, primary = self._ec_view(g)
            live = [n for n in names if n != primary and view[n]["role"] == "replica"]
            dead = bool(live) and (primary is None or view[primary]["role"] == "down")
            if self._dead_for(key, dead) >= after:
                with self.lock:
                    if key in self.busy:
                        continue
                    op = self._new_op("elasticache", "auto-failover", gid, node_group="0001",
                                      **{"from": primary, "nodes": live[:1]})
                    self.busy[key] = op
                    delays = dict(self.delays["elasticache"], promote=0.0)
                self._down_since.pop(key, None)
                fn = (lambda: self._lab_failover("redis")) if src == "lab" else (lambda n=names: self._aws_failover(n))
                self._run_op(op, key, delays, fn)
        if self._aws_nodes_up():
            name, _, shards = MEMORYDB
            view = self._redis_view("aws", [n for _, _, ns in shards for n in ns])
            for sname, _, ns in shards:
                key = ("memorydb", name)
                skey = ("memorydb", name, sname)
                primary = self._group_primary(ns, view)
                live = [n for n in ns if n != primary and view[n]["role"] == "replica"]
                dead = bool(live) and (primary is None or view[primary]["role"] == "down")
                if self._dead_for(skey, dead) >= after:
                    with self.lock:
                        if key in self.busy:
                            continue
                        op = self._new_op("memorydb", "auto-failover", name, shard=sname, **{"from": primary})
                        self.busy[key] = op
                        delays = dict(self.delays["memorydb"], promote=0.0)
                    self._down_since.pop(skey, None)
                    self._run_op(op, key, delays, lambda n=ns: self._aws_failover(n))

    # =================================================================================================
    # RDS
    # =================================================================================================
    def _rds_specs(self, region=None):
        engines = self.reader.state.get("engines", {})
        out = []
        for spec in RDS_CLUSTERS:
            if spec[1] in engines and self._check_region(region, REGION):
                out.append(spec)
        return out

    def _rds_find(self, cid, region):
        for spec in self._rds_specs(region):
            if cid and (spec[0] == cid.lower() or cid.endswith(":cluster:" + spec[0])):
                return spec
        raise ApiError("DBClusterNotFoundFault", 404, "DBCluster %s not found." % cid)

    def _rds_view(self, spec):
        engine = spec[1]
        lab = self.reader
        eng = lab._engine(engine)
        ns = lab.nodes(engine)
        roles = {}
        _parallel(lambda n: roles.__setitem__(n.name, eng.safe_role(n)), ns)
        writers = [n.name for n in ns if roles[n.name] == "primary"]
        if not writers:
            rec = lab.state["engines"][engine].get("primary")
            writers = [rec] if rec in roles else []
        return ns, roles, writers

    def _rds_instance_status(self, cid, name, roles):
        op = self.busy.get(("rds", cid))
        if op and name in op.get("rebooting", ()):
            return "rebooting"
        if roles.get(name) == "down":
            return "failed"
        return "available"

    def _rds_cluster(self, spec, view=None):
        cid, engine, aws_engine, version, pgroup, _, _ = spec
        ns, roles, writers = view or self._rds_view(spec)
        with self.lock:
            op = self.busy.get(("rds", cid))
        status = "failing-over" if op else "available"
        by = {n.name: n for n in ns}
        wport = by[writers[0]].port if writers else ns[0].port
        members = [{"DBInstanceIdentifier": n.name, "IsClusterWriter": n.name in writers,
                    "DBClusterParameterGroupStatus": "in-sync", "PromotionTier": i}
                   for i, n in enumerate(ns)]
        return {
            "AllocatedStorage": 1,
            "AvailabilityZones": XList("AvailabilityZone", [REGION + z for z in AZS]),
            "BackupRetentionPeriod": 1,
            "DatabaseName": "test",
            "DBClusterIdentifier": cid,
            "DBClusterParameterGroup": pgroup,
            "DBSubnetGroup": "default",
            "Status": status,
            "EarliestRestorableTime": iso(CREATED),
            # no DNS here: the cluster endpoint is loopback, its Port the current writer's
            "Endpoint": "127.0.0.1",
            "ReaderEndpoint": "127.0.0.1",
            "CustomEndpoints": XList("member", []),
            "MultiAZ": len(ns) > 1,
            "Engine": aws_engine,
            "EngineVersion": version,
            "LatestRestorableTime": iso(time.time() - 60),
            "Port": wport,
            "MasterUsername": "postgres" if engine == "postgres" else "root",
            "DBClusterOptionGroupMemberships": XList("DBClusterOptionGroup", []),
            "PreferredBackupWindow": "07:00-07:30",
            "PreferredMaintenanceWindow": "sun:05:00-sun:05:30",
            "ReadReplicaIdentifiers": XList("ReadReplicaIdentifier", []),
            "DBClusterMembers": XList("DBClusterMember", members),
            "VpcSecurityGroups": XList("VpcSecurityGroupMembership", [
                {"VpcSecurityGroupId": "sg-0lab0lab0lab0lab0", "Status": "active"}]),
            "HostedZoneId": "Z2R2ITUGPM61AM",
            "StorageEncrypted": False,
            "DbClusterResourceId": "cluster-%s" % cid.upper().replace("-", "")[:26],
            "DBClusterArn": "arn:aws:rds:%s:%s:cluster:%s" % (REGION, ACCOUNT, cid),
            "AssociatedRoles": XList("DBClusterRole", []),
            "IAMDatabaseAuthenticationEnabled": False,
            "ClusterCreateTime": iso(CREATED),
            "EngineMode": "provisioned",
            "DeletionProtection": False,
            "HttpEndpointEnabled": False,
            "CopyTagsToSnapshot": False,
            "CrossAccountClone": False,
            "DomainMemberships": XList("DomainMembership", []),
            "TagList": XList("Tag", []),
            "NetworkType": "IPV4",
        }

    @staticmethod
    def _strip(d):
        return {k: v for k, v in d.items() if not k.startswith("_")}

    def _rds_instances(self, spec, view=None):
        cid, engine, aws_engine, version, pgroup, _, lic = spec
        ns, roles, writers = view or self._rds_view(spec)
        with self.lock:
            out = []
            for i, n in enumerate(ns):
                out.append({
                    "DBInstanceIdentifier": n.name,
                    "DBInstanceClass": "db.r6g.large",
                    "Engine": aws_engine,
                    "DBInstanceStatus": self._rds_instance_status(cid, n.name, roles),
                    "MasterUsername": "postgres" if engine == "postgres" else "root",
                    "DBName": "test",
                    "Endpoint": {"Address": n.host, "Port": n.port, "HostedZoneId": "Z2R2ITUGPM61AM"},
                    "AllocatedStorage": 1,
                    "InstanceCreateTime": iso(CREATED),
                    "PreferredBackupWindow": "07:00-07:30",
                    "BackupRetentionPeriod": 1,
                    "DBSecurityGroups": XList("DBSecurityGroup", []),
                    "VpcSecurityGroups": XList("VpcSecurityGroupMembership", [
                        {"VpcSecurityGroupId": "sg-0lab0lab0lab0lab0", "Status": "active"}]),
                    "DBParameterGroups": XList("DBParameterGroup", [
                        {"DBParameterGroupName": pgroup, "ParameterApplyStatus": "in-sync"}]),
                    "AvailabilityZone": REGION + AZS[i % len(AZS)],
                    "PreferredMaintenanceWindow": "sun:05:00-sun:05:30",
                    "PendingModifiedValues": {},
                    "MultiAZ": False,
                    "EngineVersion": version,
                    "AutoMinorVersionUpgrade": True,
                    "ReadReplicaDBInstanceIdentifiers": XList("ReadReplicaDBInstanceIdentifier", []),
                    "LicenseModel": lic,
                    "OptionGroupMemberships": XList("OptionGroupMembership", []),
                    "PubliclyAccessible": False,
                    "StorageType": "aurora",
                    "DbInstancePort": 0,
                    "DBClusterIdentifier": cid,
                    "StorageEncrypted": False,
                    "DbiResourceId": "db-%s%s" % (cid.upper().replace("-", "")[:20], n.name.upper()),
                    "CACertificateIdentifier": "rds-ca-rsa2048-g1",
                    "CopyTagsToSnapshot": False,
                    "PromotionTier": i,
                    "DBInstanceArn": "arn:aws:rds:%s:%s:db:%s" % (REGION, ACCOUNT, n.name),
                    "IAMDatabaseAuthenticationEnabled": False,
                    "PerformanceInsightsEnabled": False,
                    "DeletionProtection": False,
                    "TagList": XList("Tag", []),
                    "NetworkType": "IPV4",
                    "_writer": n.name in writers,
                })
            return out

    def rds_describe_db_clusters(self, p, region):
        self._refresh()
        cid = p.get("DBClusterIdentifier")
        specs = [self._rds_find(cid, region)] if cid else self._rds_specs(region)
        for name, values in q_filters(p):
            if name == "db-cluster-id":
                specs = [s for s in specs if any(s[0] == v.lower() or v.endswith(":cluster:" + s[0]) for v in values)]
            elif name == "engine":
                specs = [s for s in specs if s[2] in values]
            else:
                raise ApiError("InvalidParameterValue", 400, "Unrecognized filter name: %s" % name)
        page, nxt = self._page(specs, p, "DescribeDBClusters")
        clusters = [self._strip(self._rds_cluster(s)) for s in page]
        return {"Marker": nxt, "DBClusters": XList("DBCluster", clusters)}

    def rds_describe_db_instances(self, p, region):
        self._refresh()
        iid = p.get("DBInstanceIdentifier")
        items = []
        for s in self._rds_specs(region):
            items += self._rds_instances(s)
        if iid:
            items = [i for i in items if i["DBInstanceIdentifier"] == iid.lower()
                     or iid.endswith(":db:" + i["DBInstanceIdentifier"])]
            if not items:
                raise ApiError("DBInstanceNotFound", 404, "DBInstance %s not found." % iid)
        for name, values in q_filters(p):
            if name == "db-cluster-id":
                items = [i for i in items if any(i["DBClusterIdentifier"] == v.lower()
                                                 or v.endswith(":cluster:" + i["DBClusterIdentifier"])
                                                 for v in values)]
            elif name == "db-instance-id":
                items = [i for i in items if any(i["DBInstanceIdentifier"] == v.lower()
                                                 or v.endswith(":db:" + i["DBInstanceIdentifier"])
                                                 for v in values)]
            elif name == "engine":
                items = [i for i in items if i["Engine"] in values]
            elif name == "dbi-resource-id":
                items = [i for i in items if i["DbiResourceId"] in values]
            else:
                raise ApiError("InvalidParameterValue", 400, "Unrecognized filter name: %s" % name)
        page, nxt = self._page(items, p, "DescribeDBInstances")
        return {"Marker": nxt, "DBInstances": XList("DBInstance", [self._strip(i) for i in page])}

    def rds_failover_db_cluster(self, p, region):
        self._refresh()
        cid = p.get("DBClusterIdentifier")
        if not cid:
            raise ApiError("MissingParameter", 400,
                           "The request must contain the parameter DBClusterIdentifier")
        spec = self._rds_find(cid, region)
        cid, engine = spec[0], spec[1]
        view = self._rds_view(spec)
        ns, roles, writers = view
        names = [n.name for n in ns]
        target = p.get("TargetDBInstanceIdentifier")
        with self.lock:
            if ("rds", cid) in self.busy:
                raise ApiError("InvalidDBClusterStateFault", 400,
                               "DBCluster %s is in state failing-over; a failover is already in progress." % cid)
            if target:
                t = target.lower().rsplit(":db:", 1)[-1]
                if t not in names:
                    every = [n.name for s in self._rds_specs(None) for n in self.reader.nodes(s[1])]
                    if t not in every:
                        raise ApiError("DBInstanceNotFound", 404, "DBInstance %s not found." % target)
                    raise ApiError("InvalidParameterValue", 400,
                                   "DBInstance %s is not a member of DBCluster %s." % (target, cid))
                if roles[t] == "down":
                    raise ApiError("InvalidDBInstanceState", 400,
                                   "DBInstance %s is not in available state." % t)
                if t in writers:
                    raise ApiError("InvalidDBInstanceState", 400,
                                   "DBInstance %s is already the writer of DBCluster %s." % (t, cid))
            else:
                # lowest promotion tier first: the lab's order
                reps = [n for n in names if roles[n] == "replica"]
                if not reps:
                    raise ApiError("InvalidDBClusterStateFault", 400,
                                   "DBCluster %s has no available reader to fail over to." % cid)
                t = reps[0]
            old = writers[0] if writers else None
            op = self._new_op("rds", "FailoverDBCluster", cid, **{"from": old, "to": t,
                                                                  "rebooting": [x for x in (old, t) if x]})
            self.busy[("rds", cid)] = op
            delays = "rds"      # read live: changing the delays moves this operation too
        self._run_op(op, ("rds", cid), delays, lambda: self._lab_failover(engine, t))
        return {"DBCluster": self._strip(self._rds_cluster(spec, view))}

    # =================================================================================================
    # ElastiCache
    # =================================================================================================
    def _ec_find(self, gid, region):
        for g in self._ec_groups():
            if gid and g[0] == gid.lower() and self._check_region(region, g[1]):
                return g
        raise ApiError("ReplicationGroupNotFoundFault", 404, "ReplicationGroup %s not found." % gid)

    def _ec_view(self, g):
        gid, region, src, names, gl = g
        view = self._redis_view(src, names)
        primary = self._group_primary(names, view)
        return view, primary

    def _global_role(self, gid, cache=None):
        """PRIMARY / SECONDARY of a Global Datastore member group, from its primary node."""
        if cache is None:
            groups = [g for g in self._ec_groups() if g[4] == GLOBAL_ID]
            cache = {g[0]: self._ec_view(g) for g in groups}
        view, primary = cache[gid]
        if primary is not None and view[primary]["role"] == "primary":
            return "PRIMARY"
        if primary is not None and view[primary]["role"] == "replica":
            return "SECONDARY"
        if primary is None:
            return "SECONDARY"
        return "PRIMARY" if view[primary]["recorded"] == "primary" else "SECONDARY"

    def _ec_status(self, gid):
        if ("elasticache", gid) in self.busy:
            return "modifying"
        g = self.busy.get(("global", GLOBAL_ID))
        if g and gid in g.get("groups", ()):
            return "modifying"
        return "available"

    def _ec_group(self, g, ev=None, grole=None):
        gid, region, src, names, gl = g
        view, primary = ev or self._ec_view(g)
        auth = bool(self.reader.state.get("redis_password"))
        with self.lock:
            status = self._ec_status(gid)
        members = []
        reader = None
        for i, n in enumerate(names):
            v = view[n]
            node = v["node"]
            role = "primary" if n == primary else "replica"
            if n != primary and v["role"] != "down" and reader is None:
                reader = node
            members.append({"CacheClusterId": "%s-%03d" % (gid, i + 1), "CacheNodeId": "0001",
                            "ReadEndpoint": {"Address": node.host, "Port": node.port},
                            "PreferredAvailabilityZone": region + AZS[i % len(AZS)],
                            "CurrentRole": role})
        ng = {"NodeGroupId": "0001", "Status": status}
        if primary is not None:
            ng["PrimaryEndpoint"] = {"Address": "127.0.0.1", "Port": view[primary]["node"].port}
        if reader is not None:
            ng["ReaderEndpoint"] = {"Address": "127.0.0.1", "Port": reader.port}
        ng["NodeGroupMembers"] = XList("NodeGroupMember", members)
        out = {"ReplicationGroupId": gid, "Description": "lab %s" % gid}
        if gl:
            out["GlobalReplicationGroupInfo"] = {"GlobalReplicationGroupId": gl,
                                                 "GlobalReplicationGroupMemberRole": grole or self._global_role(gid)}
        out.update({
            "Status": status,
            "PendingModifiedValues": {},
            "MemberClusters": XList("ClusterId", ["%s-%03d" % (gid, i + 1) for i in range(len(names))]),
            "NodeGroups": XList("NodeGroup", [ng]),
            "SnapshottingClusterId": "%s-%03d" % (gid, len(names)),
            "AutomaticFailover": "enabled",
            "MultiAZ": "enabled",
            "ClusterEnabled": False,
            "TransitEncryptionMode": None,
            "ClusterMode": "disabled",
        })
        out.update(self._ec_group_common(region, gid, auth))
        return out

    def _ec_group_common(self, region, gid, auth):
        """What every replication group of the lab says alike, cluster mode or not."""
        return {
            "SnapshotRetentionLimit": 0,
            "SnapshotWindow": "06:30-07:30",
            "CacheNodeType": "cache.r6g.large",
            "AuthTokenEnabled": auth,
            "TransitEncryptionEnabled": self.transit_encryption,
            "AtRestEncryptionEnabled": False,
            "MemberClustersOutpostArns": XList("ReplicationGroupOutpostArn", []),
            "ARN": "arn:aws:elasticache:%s:%s:replicationgroup:%s" % (region, ACCOUNT, gid),
            "LogDeliveryConfigurations": XList("LogDeliveryConfiguration", []),
            "ReplicationGroupCreateTime": iso(CREATED),
            "DataTiering": "disabled",
            "AutoMinorVersionUpgrade": True,
            "NetworkType": "ipv4",
            "IpDiscovery": "ipv4",
            "Engine": "redis",
        }

    def ec_describe_replication_groups(self, p, region):
        self._refresh()
        gid = p.get("ReplicationGroupId")
        cs = self._cluster_find("elasticache", gid, region) if gid else None
        if cs is not None:
            groups = [cs]
        else:
            groups = [self._ec_find(gid, region)] if gid else [
                g for g in self._ec_groups() if self._check_region(region, g[1])]
            if not gid:
                groups += self._clusters("elasticache", region)
        page, nxt = self._page(groups, p, "DescribeReplicationGroups")
        return {"Marker": nxt, "ReplicationGroups": XList("ReplicationGroup", [
            self._ecc_group(g) if isinstance(g, awsclusters.Spec) else self._ec_group(g) for g in page])}

    def _cc_item(self, cc, gid, gregion, i, status, host, port, show, auth):
        """One CacheCluster of DescribeCacheClusters (a member of replication group gid)."""
        d = {"CacheClusterId": cc, "ClientDownloadLandingPage":
             "https://console.aws.amazon.com/elasticache/home#client-download:",
             "CacheNodeType": "cache.r6g.large", "Engine": "redis", "EngineVersion": "7.0.15",
             "CacheClusterStatus": status, "NumCacheNodes": 1,
             "PreferredAvailabilityZone": gregion + AZS[i % len(AZS)],
             "CacheClusterCreateTime": iso(CREATED),
             "PreferredMaintenanceWindow": "sun:05:00-sun:06:00",
             "PendingModifiedValues": {},
             "CacheSecurityGroups": XList("CacheSecurityGroup", []),
             "CacheParameterGroup": {"CacheParameterGroupName": "default.redis7",
                                     "ParameterApplyStatus": "in-sync",
                                     "CacheNodeIdsToReboot": XList("CacheNodeId", [])},
             "CacheSubnetGroupName": "default"}
        if show:
            d["CacheNodes"] = XList("CacheNode", [{
                "CacheNodeId": "0001", "CacheNodeStatus": status if status != "modifying" else "available",
                "CacheNodeCreateTime": iso(CREATED),
                "Endpoint": {"Address": host, "Port": port},
                "ParameterGroupStatus": "in-sync",
                "CustomerAvailabilityZone": gregion + AZS[i % len(AZS)]}])
        d.update({"AutoMinorVersionUpgrade": True, "ReplicationGroupId": gid,
                  "SnapshotRetentionLimit": 0, "SnapshotWindow": "06:30-07:30",
                  "AuthTokenEnabled": auth, "TransitEncryptionEnabled": self.transit_encryption,
                  "AtRestEncryptionEnabled": False,
                  "ARN": "arn:aws:elasticache:%s:%s:cluster:%s" % (gregion, ACCOUNT, cc),
                  "ReplicationGroupLogDeliveryEnabled": False,
                  "LogDeliveryConfigurations": XList("LogDeliveryConfiguration", []),
                  "NetworkType": "ipv4", "IpDiscovery": "ipv4"})
        return d

    def ec_describe_cache_clusters(self, p, region):
        self._refresh()
        ccid = p.get("CacheClusterId")
        show = q_bool(p, "ShowCacheNodeInfo")
        not_in_rg = q_bool(p, "ShowCacheClustersNotInReplicationGroups")
        items = []
        auth = bool(self.reader.state.get("redis_password"))
        for g in self._ec_groups():
            gid, gregion, src, names, gl = g
            if not self._check_region(region, gregion):
                continue
            if ccid and not ccid.lower().startswith(gid + "-"):
                continue
            view = self._redis_view(src, names)
            with self.lock:
                op = self.busy.get(("elasticache", gid))
                gop = self.busy.get(("global", GLOBAL_ID))
            for i, n in enumerate(names):
                cc = "%s-%03d" % (gid, i + 1)
                if ccid and cc != ccid.lower():
                    continue
                v = view[n]
                if v["role"] == "down":
                    status = "rebooting cache cluster nodes"
                elif (op and n in op.get("nodes", ())) or (gop and n in gop.get("nodes", ())):
                    status = "modifying"
                else:
                    status = "available"
                items.append(self._cc_item(cc, gid, gregion, i, status, v["node"].host, v["node"].port,
                                           show, auth))
        for spec in self._clusters("elasticache", region):
            if ccid and not ccid.lower().startswith(spec.id + "-"):
                continue
            items += self._ecc_cache_clusters(spec, show, ccid)
        if ccid and not items:
            raise ApiError("CacheClusterNotFound", 404, "CacheCluster %s not found." % ccid)
        if not_in_rg:
            items = []
        page, nxt = self._page(items, p, "DescribeCacheClusters")
        return {"Marker": nxt, "CacheClusters": XList("CacheCluster", page)}

    def _take_quota(self, service):
        if self.failover_rate_limit > 0:
            r = self._rate[service]
            while r and r[0] < time.time() - 60:
                r.popleft()
            if len(r) >= self.failover_rate_limit:
                raise ApiError("APICallRateForCustomerExceeded" if service == "elasticache"
                               else "APICallRateForCustomerExceededFault", 400,
                               "The customer has exceeded the allowed rate of API calls "
                               "(%d failovers a minute)." % self.failover_rate_limit)
            r.append(time.time())
        q = self._quota(service)
        if len(q) >= self.test_failover_limit:
            raise ApiError("TestFailoverNotAvailableFault", 400,
                           "TestFailover is not available: the limit of %d node groups in a rolling "
                           "24 hour period has been reached." % self.test_failover_limit)
        q.append(time.time())

    def ec_test_failover(self, p, region):
        self._refresh()
        for k in ("ReplicationGroupId", "NodeGroupId"):
            if not p.get(k):
                raise ApiError("MissingParameter", 400, "The request must contain the parameter %s" % k)
        cs = self._cluster_find("elasticache", p["ReplicationGroupId"], region)
        if cs is not None:
            return self._ecc_test_failover(cs, p)
        g = self._ec_find(p["ReplicationGroupId"], region)
        gid, gregion, src, names, gl = g
        if p["NodeGroupId"] != "0001":
            raise ApiError("NodeGroupNotFoundFault", 404,
                           "NodeGroup %s not found in ReplicationGroup %s." % (p["NodeGroupId"], gid))
        ev = self._ec_view(g)
        view, primary = ev
        with self.lock:
            status = self._ec_status(gid)
            if status != "available":
                raise ApiError("InvalidReplicationGroupState", 400,
                               "ReplicationGroup %s is not in available state (%s)." % (gid, status))
            cands = [n for n in names if n != primary and view[n]["role"] == "replica"]
            if not cands:
                raise ApiError("TestFailoverNotAvailableFault", 400,
                               "ReplicationGroup %s has no available replica to fail over to." % gid)
            self._take_quota("elasticache")
            op = self._new_op("elasticache", "TestFailover", gid, node_group="0001", **{
                "from": primary, "nodes": [x for x in (primary, cands[0]) if x]})
            self.busy[("elasticache", gid)] = op
            delays = "elasticache"      # read live: changing the delays moves this operation too
        if src == "lab":
            fn = lambda: self._lab_failover("redis")  # noqa: E731
        else:
            fn = lambda: self._aws_failover(names)  # noqa: E731
        self._run_op(op, ("elasticache", gid), delays, fn)
        return {"ReplicationGroup": self._ec_group(g, ev)}

    # ---- Global Datastore ---------------------------------------------------------------------------
    def _global_groups(self):
        return [g for g in self._ec_groups() if g[4] == GLOBAL_ID]

    def _global(self, show_members, cache=None):
        groups = self._global_groups()
        cache = cache or {g[0]: self._ec_view(g) for g in groups}
        with self.lock:
            status = "modifying" if ("global", GLOBAL_ID) in self.busy else "available"
        out = {"GlobalReplicationGroupId": GLOBAL_ID,
               "GlobalReplicationGroupDescription": "lab global datastore",
               "Status": status, "CacheNodeType": "cache.r6g.large", "Engine": "redis",
               "EngineVersion": "7.0.15"}
        if show_members:
            out["Members"] = XList("GlobalReplicationGroupMember", [
                {"ReplicationGroupId": g[0], "ReplicationGroupRegion": g[1],
                 "Role": self._global_role(g[0], cache), "AutomaticFailover": "enabled",
                 "Status": "associated"} for g in groups])
        out.update({"ClusterEnabled": False,
                    "AuthTokenEnabled": bool(self.reader.state.get("redis_password")),
                    "TransitEncryptionEnabled": self.transit_encryption, "AtRestEncryptionEnabled": False,
                    "ARN": "arn:aws:elasticache::%s:globalreplicationgroup:%s" % (ACCOUNT, GLOBAL_ID)})
        return out

    def _global_find(self, gid):
        if gid and gid.lower() == GLOBAL_ID and self._global_groups():
            return GLOBAL_ID
        raise ApiError("GlobalReplicationGroupNotFoundFault", 404, "GlobalReplicationGroup %s not found." % gid)

    def ec_describe_global_replication_groups(self, p, region):
        self._refresh()
        gid = p.get("GlobalReplicationGroupId")
        if gid:
            self._global_find(gid)
        items = [GLOBAL_ID] if self._global_groups() else []
        page, nxt = self._page(items, p, "DescribeGlobalReplicationGroups")
        show = q_bool(p, "ShowMemberInfo")
        return {"Marker": nxt, "GlobalReplicationGroups": XList("GlobalReplicationGroup",
                                                                [self._global(show) for _ in page])}

    def ec_failover_global_replication_group(self, p, region):
        self._refresh()
        for k in ("GlobalReplicationGroupId", "PrimaryRegion", "PrimaryReplicationGroupId"):
            if not p.get(k):
                raise ApiError("MissingParameter", 400, "The request must contain the parameter %s" % k)
        self._global_find(p["GlobalReplicationGroupId"])
        groups = {g[0]: g for g in self._global_groups()}
        new = groups.get(p["PrimaryReplicationGroupId"].lower())
        if new is None or new[1] != p["PrimaryRegion"]:
            raise ApiError("InvalidParameterValue", 400,
                           "Replication group %s in region %s is not a member of Global Datastore %s."
                           % (p["PrimaryReplicationGroupId"], p["PrimaryRegion"], GLOBAL_ID))
        cache = {gid: self._ec_view(g) for gid, g in groups.items()}
        with self.lock:
            if ("global", GLOBAL_ID) in self.busy or any(("elasticache", g) in self.busy for g in groups):
                raise ApiError("InvalidGlobalReplicationGroupState", 400,
                               "Global Datastore %s is not in available state." % GLOBAL_ID)
            if self._global_role(new[0], cache) == "PRIMARY":
                raise ApiError("InvalidParameterValue", 400,
                               "Replication group %s is already the primary of Global Datastore %s."
                               % (new[0], GLOBAL_ID))
            if self.failover_rate_limit > 0:
                r = self._rate["elasticache"]
                while r and r[0] < time.time() - 60:
                    r.popleft()
                if len(r) >= self.failover_rate_limit:
                    raise ApiError("APICallRateForCustomerExceeded", 400,
                                   "The customer has exceeded the allowed rate of API calls "
                                   "(%d failovers a minute)." % self.failover_rate_limit)
                r.append(time.time())
            old = [gid for gid in groups if gid != new[0] and self._global_role(gid, cache) == "PRIMARY"]
            old_g = groups[old[0]] if old else [g for gid, g in groups.items() if gid != new[0]][0]
            op = self._new_op("global", "FailoverGlobalReplicationGroup", GLOBAL_ID, groups=list(groups),
                              from_group=old_g[0], to_group=new[0],
                              nodes=[n for g in groups.values() for n in g[3]])
            self.busy[("global", GLOBAL_ID)] = op
            delays = "global"      # read live: changing the delays moves this operation too
        self._run_op(op, ("global", GLOBAL_ID), delays,
                     lambda: self._aws_failover(new[3], from_group=old_g[3]))
        return {"GlobalReplicationGroup": self._global(True, cache)}

    # =================================================================================================
    # MemoryDB
    # =================================================================================================
    def _mdb_cluster(self, show_shards, view=None):
        name, region, shards = MEMORYDB
        with self.lock:
            op = self.busy.get(("memorydb", name))
        all_names = [n for _, _, ns in shards for n in ns]
        view = view or self._redis_view("aws", all_names)
        out = {"Name": name, "Description": "lab MemoryDB cluster",
               "Status": "modifying" if op else "available", "PendingUpdates": {},
               "NumberOfShards": len(shards)}
        if show_shards:
            sl = []
            for sname, slots, ns in shards:
                nodes = []
                for i, n in enumerate(ns):
                    v = view[n]
                    nodes.append({"Name": "%s-%s-%03d" % (name, sname, i + 1),
                                  "Status": "failed" if v["role"] == "down" else "available",
                                  "AvailabilityZone": region + AZS[i % len(AZS)], "CreateTime": CREATED,
                                  "Endpoint": {"Address": v["node"].host, "Port": v["node"].port}})
                sl.append({"Name": sname,
                           "Status": "failing-over" if op and op.get("shard") == sname else "available",
                           "Slots": slots, "Nodes": nodes, "NumberOfNodes": len(ns)})
            out["Shards"] = sl
        first = view[shards[0][2][0]]["node"]
        out.update({"AvailabilityMode": "multiaz",
                    "ClusterEndpoint": {"Address": "127.0.0.1", "Port": first.port},
                    "NodeType": "db.r6g.large", "Engine": "redis", "EngineVersion": "7.0",
                    "EnginePatchVersion": "7.0.7", "ParameterGroupName": "default.memorydb-redis7",
                    "ParameterGroupStatus": "in-sync",
                    "SecurityGroups": [{"SecurityGroupId": "sg-0lab0lab0lab0lab0", "Status": "active"}],
                    "SubnetGroupName": "default", "TLSEnabled": self.transit_encryption,
                    "ARN": "arn:aws:memorydb:%s:%s:cluster/%s" % (region, ACCOUNT, name),
                    "SnapshotRetentionLimit": 0, "MaintenanceWindow": "sun:05:00-sun:06:00",
                    "SnapshotWindow": "06:30-07:30", "ACLName": "open-access",
                    "AutoMinorVersionUpgrade": True, "DataTiering": "false"})
        return out

    def _mdb_exists(self, region):
        return self._aws_nodes_up() and self._check_region(region, MEMORYDB[1])

    def mdb_describe_clusters(self, p, region):
        self._refresh()
        name = p.get("ClusterName")
        if name is not None and not isinstance(name, str):
            raise ApiError("InvalidParameterValueException", 400, "ClusterName must be a string.")
        exists = self._mdb_exists(region)
        cms = self._clusters("memorydb", region)
        if name:
            cs = self._cluster_find("memorydb", name, region)
            if cs is not None:
                items = [cs]
            elif name.lower() != MEMORYDB[0] or not exists:
                raise ApiError("ClusterNotFoundFault", 400, "Cluster %s not found." % name)
            else:
                items = [MEMORYDB[0]]
        else:
            items = ([MEMORYDB[0]] if exists else []) + cms
        mp = {}
        if p.get("MaxResults") is not None:
            mp["MaxResults"] = str(p["MaxResults"])
        if p.get("NextToken") is not None:
            mp["NextToken"] = str(p["NextToken"])
        page, nxt = self._page(items, mp, "DescribeClusters", max_key="MaxResults", marker_key="NextToken",
                               lo=1, hi=100, exc="InvalidParameterValueException")
        show = bool(p.get("ShowShardDetails"))
        out = {"Clusters": [self._mdbc_cluster(c, show) if isinstance(c, awsclusters.Spec) else self._mdb_cluster(show)
                            for c in page]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def mdb_failover_shard(self, p, region):
        self._refresh()
        for k in ("ClusterName", "ShardName"):
            if not p.get(k):
                raise ApiError("InvalidParameterValueException", 400, "%s is required." % k)
        cs = self._cluster_find("memorydb", p["ClusterName"], region)
        if cs is not None:
            return self._mdbc_failover_shard(cs, p)
        name, _, shards = MEMORYDB
        if p["ClusterName"].lower() != name or not self._mdb_exists(region):
            raise ApiError("ClusterNotFoundFault", 400, "Cluster %s not found." % p["ClusterName"])
        shard = [s for s in shards if s[0] == p["ShardName"]]
        if not shard:
            raise ApiError("ShardNotFoundFault", 400, "Shard %s not found in cluster %s." % (p["ShardName"], name))
        sname, _, ns = shard[0]
        all_names = [n for _, _, x in shards for n in x]
        view = self._redis_view("aws", all_names)
        primary = self._group_primary(ns, view)
        with self.lock:
            if ("memorydb", name) in self.busy:
                raise ApiError("InvalidClusterStateFault", 400,
                               "Cluster %s is not in available state (modifying)." % name)
            if not [n for n in ns if n != primary and view[n]["role"] == "replica"]:
                raise ApiError("TestFailoverNotAvailableFault", 400,
                               "Shard %s has no available replica to fail over to." % sname)
            self._take_quota("memorydb")
            op = self._new_op("memorydb", "FailoverShard", name, shard=sname, **{"from": primary})
            self.busy[("memorydb", name)] = op
            delays = "memorydb"      # read live: changing the delays moves this operation too
        self._run_op(op, ("memorydb", name), delays, lambda: self._aws_failover(ns))
        return {"Cluster": self._mdb_cluster(True, view)}


    # =================================================================================================
    # Cluster mode: ElastiCache (cluster mode enabled) and MemoryDB over a real Redis Cluster
    # (POST /_lab/config {"redis_clusters": [...]}, see clusters.py)
    # =================================================================================================
    def _cview(self, spec):
        return awsclusters.View(spec, self.cpool)

    def _cluster_conflict(self, ns):
        """A failover under way on any of these nodes (two models may name the same cluster's nodes)."""
        want = {"%s:%d" % hp for hp in ns}
        for op in self.busy.values():
            if want & set(op.get("endpoints", ())):
                return op
        return None

    def _ecc_group(self, spec, v=None):
        """A replication group with cluster mode enabled: one node group per shard with its live slots;
        members carry no CurrentRole and no ReadEndpoint, node groups no Primary/ReaderEndpoint (as AWS
        replies for cluster-mode groups: clients ask the cluster itself)."""
        v = v or self._cview(spec)
        with self.lock:
            status = self._ec_status(spec.id)
            op = self.busy.get(("elasticache", spec.id))
        ngs = []
        for s, ns in spec.shards:
            members = [{"CacheClusterId": spec.member(s, i), "CacheNodeId": "0001",
                        "PreferredAvailabilityZone": spec.region + AZS[i % len(AZS)]} for i in range(len(ns))]
            ngs.append({"NodeGroupId": s,
                        "Status": "modifying" if op and op.get("node_group") == s else "available",
                        "Slots": v.shards[s]["slots"] or None,
                        "NodeGroupMembers": XList("NodeGroupMember", members)})
        entry = v.entry()
        out = {
            "ReplicationGroupId": spec.id,
            "Description": "lab %s (cluster mode enabled)" % spec.id,
            "Status": status,
            "PendingModifiedValues": {},
            "MemberClusters": XList("ClusterId", [m for _, m, _ in spec.members()]),
            "NodeGroups": XList("NodeGroup", ngs),
            "AutomaticFailover": "enabled",
            "MultiAZ": "enabled",
            "ConfigurationEndpoint": {"Address": entry[0], "Port": entry[1]},
            "ClusterEnabled": True,
            "ClusterMode": "enabled",
        }
        out.update(self._ec_group_common(spec.region, spec.id, False))
        return out

    def _ecc_cache_clusters(self, spec, show, ccid=None):
        v = self._cview(spec)
        with self.lock:
            op = self.busy.get(("elasticache", spec.id))
        out = []
        for s, ns in spec.shards:
            for i, hp in enumerate(ns):
                cc = spec.member(s, i)
                if ccid and cc != ccid.lower():
                    continue
                if v.nodes[hp]["role"] == "down":
                    status = "rebooting cache cluster nodes"
                elif op and cc in op.get("nodes", ()):
                    status = "modifying"
                else:
                    status = "available"
                out.append(self._cc_item(cc, spec.id, spec.region, i, status, hp[0], hp[1], show, False))
        return out

    def _ecc_test_failover(self, spec, p):
        ng = p["NodeGroupId"]
        ns = spec.shard(ng)
        if ns is None:
            raise ApiError("NodeGroupNotFoundFault", 404,
                           "NodeGroup %s not found in ReplicationGroup %s." % (ng, spec.id))
        v = self._cview(spec)
        sh = v.shards[ng]
        key = ("elasticache", spec.id)
        with self.lock:
            status = self._ec_status(spec.id)
            if status == "available" and self._cluster_conflict(ns):
                status = "modifying"
            if status != "available":
                raise ApiError("InvalidReplicationGroupState", 400,
                               "ReplicationGroup %s is not in available state (%s)." % (spec.id, status))
            if not sh["linked"]:
                raise ApiError("TestFailoverNotAvailableFault", 400,
                               "NodeGroup %s of ReplicationGroup %s has no available replica to fail over to."
                               % (ng, spec.id))
            op = self._cluster_failover_op("elasticache", "TestFailover", spec, ng, sh, ns, key, node_group=ng)
        self._run_op(op, key, "elasticache",
                     lambda: awsclusters.failover(spec, ng, self.cpool, self.stopping))
        return {"ReplicationGroup": self._ecc_group(spec, v)}

    def _cluster_failover_op(self, service, action, spec, group, sh, ns, key, **label):
        """(Under self.lock.) A real CLUSTER FAILOVER of shard `group` starts: its quota taken, its
        operation recorded (from its primary to its first linked replica) and the model marked busy."""
        self._take_quota(service)
        names = {hp: spec.member(group, i) for i, hp in enumerate(ns)}
        op = self._new_op(service, action, spec.id, cluster_mode=True, endpoints=["%s:%d" % hp for hp in ns],
                          **label, **{"from": names.get(sh["primary"]),
                                      "nodes": [names[x] for x in (sh["primary"], sh["linked"][0]) if x]})
        self.busy[key] = op
        return op

    def _mdbc_cluster(self, spec, show_shards, v=None):
        v = v or self._cview(spec)
        with self.lock:
            op = self.busy.get(("memorydb", spec.id))
        out = {"Name": spec.id, "Description": "lab MemoryDB cluster %s" % spec.id,
               "Status": "modifying" if op else "available", "PendingUpdates": {},
               "NumberOfShards": len(spec.shards)}
        if show_shards:
            sl = []
            for s, ns in spec.shards:
                nodes = []
                for i, hp in enumerate(ns):
                    nodes.append({"Name": spec.member(s, i),
                                  "Status": "failed" if v.nodes[hp]["role"] == "down" else "available",
                                  "AvailabilityZone": spec.region + AZS[i % len(AZS)], "CreateTime": CREATED,
                                  "Endpoint": {"Address": hp[0], "Port": hp[1]}})
                sl.append({"Name": s,
                           "Status": "failing-over" if op and op.get("shard") == s else "available",
                           "Slots": v.shards[s]["slots"] or None, "Nodes": nodes, "NumberOfNodes": len(ns)})
            out["Shards"] = sl
        entry = v.entry()
        out.update({"AvailabilityMode": "multiaz",
                    "ClusterEndpoint": {"Address": entry[0], "Port": entry[1]},
                    "NodeType": "db.r6g.large", "Engine": "redis", "EngineVersion": "7.0",
                    "EnginePatchVersion": "7.0.7", "ParameterGroupName": "default.memorydb-redis7",
                    "ParameterGroupStatus": "in-sync",
                    "SecurityGroups": [{"SecurityGroupId": "sg-0lab0lab0lab0lab0", "Status": "active"}],
                    "SubnetGroupName": "default", "TLSEnabled": self.transit_encryption,
                    "ARN": "arn:aws:memorydb:%s:%s:cluster/%s" % (spec.region, ACCOUNT, spec.id),
                    "SnapshotRetentionLimit": 0, "MaintenanceWindow": "sun:05:00-sun:06:00",
                    "SnapshotWindow": "06:30-07:30", "ACLName": "open-access",
                    "AutoMinorVersionUpgrade": True, "DataTiering": "false"})
        return out

    def _mdbc_failover_shard(self, spec, p):
        sname = p["ShardName"]
        ns = spec.shard(sname)
        if ns is None:
            raise ApiError("ShardNotFoundFault", 400, "Shard %s not found in cluster %s." % (sname, spec.id))
        v = self._cview(spec)
        sh = v.shards[sname]
        key = ("memorydb", spec.id)
        with self.lock:
            if key in self.busy or self._cluster_conflict(ns):
                raise ApiError("InvalidClusterStateFault", 400,
                               "Cluster %s is not in available state (modifying)." % spec.id)
            if not sh["linked"]:
                raise ApiError("TestFailoverNotAvailableFault", 400,
                               "Shard %s has no available replica to fail over to." % sname)
            op = self._cluster_failover_op("memorydb", "FailoverShard", spec, sname, sh, ns, key, shard=sname)
        self._run_op(op, key, "memorydb",
                     lambda: awsclusters.failover(spec, sname, self.cpool, self.stopping))
        return {"Cluster": self._mdbc_cluster(spec, True, v)}


def _parallel(fn, items):
    items = list(items)
    if len(items) <= 1:
        for i in items:
            fn(i)
        return
    errors = []

    def run(i):
        try:
            fn(i)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    ts = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
