"""Connection scale: N idle client connections held through a proxy (Redis behind it); resident
memory per connection = (VmRSS after - VmRSS before) / N, each proxy freshly started."""

import socket
import struct
import time

from .common import BenchError, open_fds, rss_kb, wait_for

LINGER_RST = struct.pack("ii", 1, 0)   # close with RST: leave no TIME_WAIT behind on our side


def redis_cmd(port, *args):
    """One command on a fresh connection; returns the reply (bulk strings decoded, errors as '-...')."""
    payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        line = f.readline()
        if line[:1] == b"$":
            size = int(line[1:])
            return None if size < 0 else f.read(size + 2)[:-2].decode(errors="replace")
        return line.decode(errors="replace").rstrip("\r\n")


def redis_connected_clients(port):
    for line in redis_cmd(port, "INFO", "clients").splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    raise BenchError("no connected_clients in INFO clients")


def _read_reply(s, want=b"+PONG\r\n"):
    buf = b""
    while len(buf) < len(want):
        b = s.recv(64)
        if not b:
            raise BenchError("connection closed before %r (got %r)" % (want, buf))
        buf += b
    if buf != want:
        raise BenchError("expected %r, got %r" % (want, buf))


def hold_idle(port, n, timeout=120):
    """Open n connections, PING/PONG on each (so the whole path exists and has carried a request),
    and return them idle. The PING is a RESP array, as client libraries send it."""
    socks = []
    deadline = time.monotonic() + timeout
    try:
        # one at a time (connect, PING, PONG): what stays resident is the idle cost, not the peak of
        # thousands of requests in flight at once
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            socks.append(s)
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            _read_reply(s)
            if time.monotonic() > deadline:
                raise BenchError("opening %d connections took more than %ss" % (n, timeout))
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def measure(proxy, port, redis_port, n, settle=0.5, upstream=None):
    """One proxy instance (already ready): hold n idle connections through it, return the numbers.
    `upstream`: the server connections to expect (n: one per client; 1 for a multiplexing proxy)."""
    time.sleep(settle)
    proxy.check_alive()
    before = rss_kb(proxy.pid)
    fds_before = open_fds(proxy.pid)
    clients_before = redis_connected_clients(redis_port)
    t = time.monotonic()
    socks = hold_idle(port, n)
    open_s = time.monotonic() - t
    try:
        # upstream connections are made asynchronously: wait until the server sees them all
        try:
            want = n if upstream is None else upstream
            wait_for(lambda: redis_connected_clients(redis_port) - clients_before >= want, 30,
                     "%d upstream connections to reach redis" % want, interval=0.1)
        except BenchError:
            pass
        time.sleep(settle)
        proxy.check_alive()
        after = rss_kb(proxy.pid)
        fds_after = open_fds(proxy.pid)
        upstream = redis_connected_clients(redis_port) - clients_before
    finally:
        close_all(socks)
    return {"connections": n, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_conn": (after - before) / float(n), "fds_added": (fds_after - fds_before)
            if fds_after is not None and fds_before is not None else None,
            "upstream_conns_seen_by_redis": upstream, "open_seconds": round(open_s, 2)}
