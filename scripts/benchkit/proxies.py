"""The proxies under test: repoint (from a lab configuration) and HAProxy 2.6 in TCP mode with
a configuration equivalent to repoint's (one frontend per service, role checks at the same interval);
the peers (twemproxy, pgbouncer); and the relay floors (relay_floor.c: the least a relay does, with
epoll and with io_uring)."""

import json
import os
import signal
import socket
import subprocess
import urllib.request

from .common import BenchError, free_port, nofile_limit, wait_for

HAPROXY_BIN = "/usr/sbin/haproxy"


def _ms(duration):
    """'100ms' | '1s' -> milliseconds."""
    d = str(duration).strip()
    if d.endswith("ms"):
        return int(d[:-2])
    if d.endswith("s"):
        return int(float(d[:-1]) * 1000)
    return int(d)


def distinct_ports(engines):
    """{engine: a free port}, no two the same."""
    ports = {}
    for e in engines:
        p = free_port()
        while p in ports.values():
            p = free_port()
        ports[e] = p
    return ports


class Proc:
    """A long-running process we started (its own session), stopped by pid only."""

    name = "proc"

    def __init__(self, argv, log_path):
        self.log_path = log_path
        self.logf = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError("%s exited (status %s); its log %s ends with:\n%s"
                             % (self.name, self.proc.returncode, self.log_path, self.log_tail()))

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logf.close()

    def nofile(self):
        return nofile_limit(self.pid)


class Repoint(Proc):
    name = "repoint"

    def __init__(self, binary, lab, workdir, tag, engines, interval="100ms", max_clients=100000, name=None,
                 **overrides):
        """overrides: passed to Lab.write_config, e.g. redis={"multiplex": "on"} for one service. The
        redis service says `multiplex = off` unless told otherwise (Redis multiplexes by default): the
        "repoint" path is one server connection per client, "repoint-mux" the shared one. The postgres
        service has auth = repoint (client_auth = trust on loopback; pool_size's default of 20), the
        mysql one too (mysql_native_password against the lab's hash)."""
        if name:
            self.name = name
        overrides = dict(overrides)
        overrides["redis"] = dict(overrides.get("redis") or {})
        overrides["redis"].setdefault("multiplex", "off")
        # Postgres as people would run it behind repoint to keep sessions and connections: repoint
        # answers the start (the bench's clients are trusted on loopback) and pools server connections.
        overrides["postgres"] = dict(overrides.get("postgres") or {})
        overrides["postgres"].setdefault("auth", "repoint")
        overrides["postgres"].setdefault("client_auth", "trust")
        # MariaDB likewise: repoint checks the clients' mysql_native_password answers against the hash
        # the lab's mysql.user keeps, and logs in to the members itself.
        self.cfg = os.path.join(workdir, "repoint-%s.ini" % tag)
        if "mysql" in engines:
            overrides["mysql"] = dict(overrides.get("mysql") or {})
            if "auth" not in overrides["mysql"]:
                overrides["mysql"]["auth"] = "repoint"
                overrides["mysql"]["auth_file"] = lab.mysql_auth_file(os.path.join(workdir, "mysql-users-%s.txt" % tag))
        self.admin = free_port()
        self.ports = lab.write_config(self.cfg, admin="127.0.0.1:%d" % self.admin, engines=engines,
                                      log_level="warn", probe_interval=interval, max_clients=max_clients,
                                      **overrides)
        self.ports.pop("admin", None)
        self.lab, self.engines = lab, list(engines)
        # `repoint -t` first: a configuration the binary refuses is reported as such, not as a timeout
        out = subprocess.run([binary, "-t", "-c", self.cfg], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=30)
        if out.returncode != 0:
            raise BenchError("%s: `repoint -t -c %s` exits %d: %s" % (
                self.name, self.cfg, out.returncode, out.stdout.decode("utf-8", "replace").strip()[:500]))
        super().__init__([binary, "-c", self.cfg], self.cfg + ".log")

    def status(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/status" % self.admin, timeout=5) as r:
            return json.load(r)

    def writer(self, engine):
        for s in self.status()["services"]:
            if s["name"] == engine:
                return s["writer"] if s.get("writer_ready") else None
        return None

    def wait_ready(self, timeout=60):
        for e in self.engines:
            want = self.lab.primary(e).addr

            def ok(e=e, want=want):
                self.check_alive()
                return self.writer(e) == want
            wait_for(ok, timeout, "%s to route %s to %s" % (self.name, e, want))


REDIS_CHECK = r"""    option tcp-check
    tcp-check connect
    tcp-check send PING\r\n
    tcp-check expect string +PONG
    tcp-check send info\ replication\r\n
    tcp-check expect string role:master
    tcp-check send QUIT\r\n
    tcp-check expect string +OK
"""


def haproxy_config(lab, engines, ports, stats_sock, interval="100ms", probe_timeout="1s", maxconn=4000,
                   threads=1, mysql_check_user="haproxy", splice=False):
    """HAProxy 2.6 TCP-mode configuration equivalent to repoint's lab configuration; with splice, HAProxy
    as tuned for large payloads (`option splice-request`, `option splice-response`: the kernel moves the
    bytes from socket to socket through a pipe, HAProxy never copies them).

    Redis: the documented role check over all nodes (configuration.txt, `tcp-check send`), with
    on-marked-down shutdown-sessions. Postgres / MariaDB: pgsql-check / mysql-check, the primary as
    server and the replicas as backup. Check interval = repoint's probe_interval, timeout = probe_timeout.
    """
    lines = [
        "global",
        "    maxconn %d" % maxconn,
        "    nbthread %d" % threads,
        "    stats socket %s mode 600 level admin" % stats_sock,
        "",
        "defaults",
        "    mode tcp",
        "    maxconn %d" % maxconn,
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check %s" % probe_timeout,
        "    default-server check inter %s on-marked-down shutdown-sessions" % interval,
    ] + (["    option splice-request", "    option splice-response"] if splice else []) + [
        "",
    ]
    for e in engines:
        nodes = lab.nodes(e)
        primary = lab.primary(e)
        lines += ["frontend fe_%s" % e, "    bind 127.0.0.1:%d" % ports[e], "    default_backend be_%s" % e, "",
                  "backend be_%s" % e]
        if e == "redis":
            lines.append(REDIS_CHECK.rstrip("\n"))
            lines += ["    server %s %s" % (n.name, n.addr) for n in nodes]
        else:
            if e == "postgres":
                lines.append("    option pgsql-check user postgres")
            else:
                lines.append("    option mysql-check user %s post-41" % mysql_check_user)
            lines.append("    server %s %s" % (primary.name, primary.addr))
            lines += ["    server %s %s backup" % (n.name, n.addr) for n in nodes if n.name != primary.name]
        lines.append("")
    return "\n".join(lines) + "\n"


class HAProxy(Proc):
    name = "haproxy"

    def __init__(self, lab, workdir, tag, engines, interval="100ms", maxconn=4000, threads=1, check_timeout="1s",
                 splice=False, name="haproxy"):
        self.name = name
        self.lab, self.engines = lab, list(engines)
        self.cfg = os.path.join(workdir, "haproxy-%s.cfg" % tag)
        self.sock = os.path.join(workdir, "haproxy-%s.sock" % tag)
        self.ports = distinct_ports(engines)
        self.maxconn, self.threads = maxconn, threads
        with open(self.cfg, "w") as f:
            f.write(haproxy_config(lab, engines, self.ports, self.sock, interval=interval, maxconn=maxconn,
                                   threads=threads, probe_timeout=check_timeout, splice=splice))
        out = subprocess.run([HAPROXY_BIN, "-c", "-q", "-f", self.cfg], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        if out.returncode != 0:
            raise BenchError("haproxy rejects %s:\n%s" % (self.cfg, out.stdout.decode(errors="replace")))
        super().__init__([HAPROXY_BIN, "-db", "-f", self.cfg], self.cfg + ".log")

    def command(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")

    def servers(self):
        """{(backend, server): status} from `show stat`."""
        out = self.command("show stat")
        lines = out.strip().splitlines()
        hdr = lines[0].lstrip("# ").split(",")
        ix = {k: i for i, k in enumerate(hdr)}
        res = {}
        for line in lines[1:]:
            f = line.split(",")
            if f[ix["svname"]] in ("FRONTEND", "BACKEND"):
                continue
            res[(f[ix["pxname"]], f[ix["svname"]])] = f[ix["status"]]
        return res

    def up_servers(self, engine):
        return sorted(s for (b, s), st in self.servers().items() if b == "be_%s" % engine and st.startswith("UP"))

    def wait_ready(self, timeout=60):
        for e in self.engines:
            want = self.lab.primary(e).name

            def ok(e=e, want=want):
                self.check_alive()
                up = self.up_servers(e)
                return up == [want] if e == "redis" else want in up
            wait_for(ok, timeout, "haproxy to mark %s UP (and only it) in be_%s" % (want, e), interval=0.05)


def _port_answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Twemproxy(Proc):
    """twemproxy (nutcracker 0.5, Debian), the Redis proxy people pick for multiplexing: one pool with the
    lab's Redis primary as its only server and its default of one server connection, which every client's
    commands share. It does not follow a failover (no role checks): the bench only measures throughput."""

    name = "twemproxy"
    BIN = "/usr/sbin/nutcracker"

    def __init__(self, lab, workdir, tag):
        if not os.access(self.BIN, os.X_OK):
            raise BenchError("twemproxy: %s is missing (Debian package nutcracker; scripts/install-deps installs it)"
                             % self.BIN)
        self.ports = {"redis": free_port()}
        stats = free_port()
        while stats == self.ports["redis"]:
            stats = free_port()
        self.cfg = os.path.join(workdir, "twemproxy-%s.yml" % tag)
        with open(self.cfg, "w") as f:
            f.write("bench:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n"
                    "  auto_eject_hosts: false\n  server_connections: 1\n  timeout: 10000\n  servers:\n"
                    "   - 127.0.0.1:%d:1\n" % (self.ports["redis"], lab.primary("redis").port))
        super().__init__([self.BIN, "-c", self.cfg, "-s", str(stats), "-a", "127.0.0.1", "-v", "3",
                          "-o", self.cfg + ".log", "-p", self.cfg + ".pid"], self.cfg + ".out")

    def wait_ready(self, timeout=30):
        def ok():
            self.check_alive()
            return _port_answers(self.ports["redis"])
        wait_for(ok, timeout, "twemproxy to listen")


class Pgbouncer(Proc):
    """pgbouncer 1.18 (Debian) in session pooling, pointing at the lab's Postgres primary: server
    connections are kept for the next client (what `pgbench -C` measures). It refuses to run as root:
    it runs as postgres, with its files in a directory of its own."""

    name = "pgbouncer"
    BIN = "/usr/sbin/pgbouncer"

    def __init__(self, lab, workdir, tag, pool_size=64):
        import pwd
        if not os.access(self.BIN, os.X_OK):
            raise BenchError("pgbouncer: %s is missing (Debian package pgbouncer; scripts/install-deps installs it)"
                             % self.BIN)
        pw = pwd.getpwnam("postgres")
        d = os.path.join(workdir, "pgbouncer-%s" % tag)
        os.makedirs(d, exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        self.ports = {"postgres": free_port()}
        users = os.path.join(d, "users.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')
        self.cfg = os.path.join(d, "pgbouncer.ini")
        with open(self.cfg, "w") as f:
            f.write("[databases]\n* = host=127.0.0.1 port=%d\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                    "listen_port = %d\nunix_socket_dir =\nauth_type = trust\nauth_file = %s\npool_mode = session\n"
                    "max_client_conn = 4000\ndefault_pool_size = %d\nlogfile = %s\npidfile = %s\n"
                    "ignore_startup_parameters = extra_float_digits\nlog_connections = 0\nlog_disconnections = 0\n"
                    % (lab.primary("postgres").port, self.ports["postgres"], users, pool_size,
                       os.path.join(d, "pgbouncer.log"), os.path.join(d, "pgbouncer.pid")))
        for p in (users, self.cfg):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        # setpriv execs pgbouncer in place (runuser would stay its parent): the pid is pgbouncer's, for
        # its CPU time
        super().__init__(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", self.BIN,
                          self.cfg], os.path.join(workdir, "pgbouncer-%s.out" % tag))

    def wait_ready(self, timeout=30):
        def ok():
            self.check_alive()
            return _port_answers(self.ports["postgres"])
        wait_for(ok, timeout, "pgbouncer to listen")


RELAY_FLOOR_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_floor.c")


def relay_floor_binary(build_dir):
    """relay_floor.c built into build_dir (again when the source is newer): its path, or BenchError
    (liburing-dev is missing, say)."""
    out = os.path.join(build_dir, "relay-floor")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(RELAY_FLOOR_SRC):
        return out
    try:
        os.makedirs(build_dir, exist_ok=True)
    except OSError as exc:
        raise BenchError("relay-floor: %s: %s" % (build_dir, exc)) from exc
    r = subprocess.run(["cc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", out + ".tmp", RELAY_FLOOR_SRC,
                        "-luring"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError("relay-floor: cc %s failed (liburing-dev; scripts/install-deps installs it):\n%s"
                         % (RELAY_FLOOR_SRC, r.stdout.decode("utf-8", "replace")[:800]))
    os.replace(out + ".tmp", out)
    return out


class RelayFloor(Proc):
    """The floor of a relay in one I/O model (relay_floor.c, `--io epoll|uring`) in front of the lab's
    primary of each engine: a connection per client, bytes passed on unread, nothing else. Beside
    repoint it shows what of repoint's CPU per request is the kernel's for that model and what is
    repoint's own."""

    def __init__(self, binary, lab, workdir, io, engines):
        self.name = "floor-" + io
        self.ports = distinct_ports(engines)
        super().__init__([binary, "--io", io] + ["%d:%d" % (self.ports[e], lab.primary(e).port) for e in engines],
                         os.path.join(workdir, "%s.log" % self.name))

    def wait_ready(self, timeout=30):
        for e, port in self.ports.items():
            def ok(port=port):
                self.check_alive()
                return _port_answers(port)
            wait_for(ok, timeout, "%s to listen for %s" % (self.name, e))
