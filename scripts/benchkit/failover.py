"""Failover reaction: clients writing every 5 ms through each proxy while the lab switches the Redis
primary over; time from the promotion to the first acknowledged write, errors, and a split check."""

import socket
import threading
import time

from .common import BenchError, wait_for

WRITE_TIMEOUT = 2.0


class RespConn:
    """The smallest Redis client: one socket, one command at a time, no retries of its own."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WRITE_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def command(self, *args):
        payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        self.sock.sendall(payload)
        while b"\r\n" not in self.buf:
            b = self.sock.recv(4096)
            if not b:
                raise ConnectionError("connection closed by peer")
            self.buf += b
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def error_kind(text):
    t = text.split(":")[0] if ":" in text else text
    return t.split()[0][:40] if t else "?"


class Writer(threading.Thread):
    """An application writing a new key every `interval` s through `port`; after any error it
    drops its connection and reconnects for the next write, as a pool would."""

    def __init__(self, path, port, idx, prefix, interval=0.005):
        super().__init__(daemon=True, name="writer-%s-%d" % (path, idx))
        self.path, self.port, self.idx, self.prefix, self.interval = path, port, idx, prefix, interval
        self.records = []     # (t_start, t_end, ok, error_kind, key)
        self.stop_ev = threading.Event()

    def run(self):
        conn, seq = None, 0
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            seq += 1
            key = "%s:%s:%d:%d" % (self.prefix, self.path, self.idx, seq)
            t0 = time.time()
            try:
                if conn is None:
                    conn = RespConn(self.port)
                r = conn.command(b"SET", key.encode(), b"%f" % t0)
                if r == "+OK":
                    self.records.append((t0, time.time(), True, None, key))
                else:
                    self.records.append((t0, time.time(), False, error_kind(r.lstrip("-")), key))
                    conn.close()
                    conn = None
            except (OSError, ConnectionError) as exc:
                kind = "timeout" if isinstance(exc, socket.timeout) else type(exc).__name__
                self.records.append((t0, time.time(), False, kind, key))
                if conn is not None:
                    conn.close()
                conn = None
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop_ev.wait(delay)
            else:
                nxt = time.monotonic()
        if conn is not None:
            conn.close()

    def oks_after(self, t):
        return sum(1 for r in self.records if r[2] and r[1] > t)


def _exists(lab, node, keys):
    """Which keys exist on a node (pipelined EXISTS, in chunks)."""
    c = lab.connect("redis", node)
    found = set()
    try:
        for i in range(0, len(keys), 2000):
            chunk = keys[i:i + 2000]
            p = c.pipeline(transaction=False)
            for k in chunk:
                p.exists(k)
            for k, v in zip(chunk, p.execute()):
                if v:
                    found.add(k)
    finally:
        c.close()
    return found


def _longest_gap(records, t_from, t_to):
    """Longest interval without an acknowledged write (union of the path's clients) in [t_from, t_to]."""
    oks = sorted(r[1] for r in records if r[2] and t_from <= r[1] <= t_to)
    if len(oks) < 2:
        return None
    return max(b - a for a, b in zip(oks, oks[1:]))


def switchover_once(lab, paths, idx, to=None, clients=4, interval=0.005, after_s=1.5, timeout=20.0, optional=()):
    """paths: {name: port}. Returns the per-path results of one switchover. A path in `optional` whose
    writers cannot write before the switchover is left out of it (out["dropped"]) instead of failing it."""
    prefix = "bench:fo:%d:%d" % (int(time.time()), idx)
    writers = {p: [Writer(p, port, i, prefix, interval) for i in range(clients)] for p, port in paths.items()}
    started = [w for ws in writers.values() for w in ws]
    dropped = {}
    for w in started:
        w.start()
    try:
        try:
            wait_for(lambda: all(w.oks_after(0) >= 20 for w in started), 20,
                     "every writer to write before the switchover")
        except BenchError:
            bad = [p for p, ws in writers.items() if not all(w.oks_after(0) >= 20 for w in ws)]
            if not bad or any(p not in optional for p in bad):
                raise
            for p in bad:
                for w in writers[p]:
                    w.stop_ev.set()
                kinds = {}
                for r in [r for w in writers.pop(p) for r in list(w.records) if not r[2]]:
                    kinds[r[3]] = kinds.get(r[3], 0) + 1
                dropped[p] = "fewer than 20 acknowledged writes per client in 20 s before the switchover " \
                             "(errors: %s)" % (", ".join("%s %d" % kv for kv in sorted(kinds.items())) or "none")
        allw = [w for ws in writers.values() for w in ws]
        old = lab.primary("redis")
        t0 = time.time()
        rep = lab.switchover("redis", to=to)
        promoted = rep["promoted_at"]
        new = lab.primary("redis")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(w.oks_after(promoted + 0.001) >= int(after_s / interval) // 2 for w in allw):
                break
            time.sleep(0.05)
    finally:
        for w in started:
            w.stop_ev.set()
        for w in started:
            w.join(10)
    t_end = time.time()
    lab.verify("redis")          # replication has caught up everywhere before we look for the keys
    out = {"from": old.name, "to": new.name, "promoted_at": promoted, "switchover_ms": rep.get("total_ms"),
           "steps": rep.get("steps"), "paths": {}}
    if dropped:
        out["dropped"] = dropped
    for p, ws in writers.items():
        recs = [r for w in ws for r in w.records]
        acked = [r[4] for r in recs if r[2]]
        attempted = [r[4] for r in recs]
        on_new = _exists(lab, new, attempted)
        on_old = _exists(lab, old, attempted)
        first_ok = min((r[1] for r in recs if r[2] and r[1] > promoted), default=None)
        errs = [r for r in recs if not r[2] and r[0] >= t0 - 0.5]
        kinds = {}
        for r in errs:
            kinds[r[3]] = kinds.get(r[3], 0) + 1
        gap = _longest_gap(recs, t0 - 0.5, t_end)
        last_ok_before = max((r[1] for r in recs if r[2] and r[1] <= promoted), default=None)
        out["paths"][p] = {
            "first_write_after_promotion_ms": None if first_ok is None else round((first_ok - promoted) * 1000, 1),
            "last_write_before_promotion_ms": None if last_ok_before is None
            else round((last_ok_before - promoted) * 1000, 1),
            "longest_gap_ms": None if gap is None else round(gap * 1000, 1),
            "errors": len(errs), "error_kinds": kinds, "writes": len(recs), "acked": len(acked),
            "acked_missing_on_new_primary": len([k for k in acked if k not in on_new]),
            "on_demoted_not_on_new_primary": len([k for k in on_old if k not in on_new]),
        }
    return out
