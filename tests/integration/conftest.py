"""Fixtures for the integration suite: one real lab (Postgres, MariaDB, Redis with replication)
for the whole run, and repoint processes started from the binary under test ($REPOINT_BIN)."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "scripts"))
sys.path.insert(0, os.path.dirname(__file__))

from labkit import Lab  # noqa: E402

REPOINT_BIN = os.environ.get("REPOINT_BIN", os.path.join(TOP, "build", "plain", "proxy", "repoint"))
OUTAGES = []
NOTICES = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=20.0, interval=0.02, what="condition"):
    """Poll `cond` until it returns a truthy value; fail the test with `what` after `timeout`."""
    deadline = time.time() + timeout
    last_exc = None
    while time.time() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the condition may raise while the system settles
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class Repoint:
    """A repoint process under test."""

    def __init__(self, config_path, admin_port, ports, wrap=None, env=None):
        """wrap: a function from repoint's argv to the argv that runs it (it must exec repoint in place);
        env: the environment it runs with (None: this one)."""
        self.config_path, self.admin_port, self.ports = config_path, admin_port, ports
        self.log_path = config_path + ".log"
        self.log = open(self.log_path, "wb")
        argv = [REPOINT_BIN, "-c", config_path]
        self.proc = subprocess.Popen(wrap(argv) if wrap else argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=5) as r:
            return json.load(r)

    def service(self, name):
        for s in self.status()["services"]:
            if s["name"] == name:
                return s
        raise KeyError(name)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def writer(self, name):
        return self.service(name)["writer"]

    def wait_writer(self, name, address=None, timeout=30):
        def ok():
            s = self.service(name)
            if not s["writer_ready"]:
                return None
            return s["writer"] if address is None or s["writer"] == address else None
        return wait_for(ok, timeout, what=f"service {name} to have writer {address or '(any)'}")

    def logtext(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("repoint did not stop within %ss of SIGTERM\n%s" % (timeout, self.logtext()[-4000:]))
        self.log.close()
        text = self.logtext()
        assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text and "LeakSanitizer" not in text, text[-6000:]
        assert self.proc.returncode == 0, f"repoint exited {self.proc.returncode}\n{text[-4000:]}"


def start_custom(tmp_path, services, admin=True, extra="", env=None, tail=""):
    """A repoint with hand-written services ({name: body}), each on a free port; admin API up.
    extra goes into [repoint], tail after the services (an [aws] section); env: the process's."""
    admin_port = free_port()
    text = f"[repoint]\nadmin = 127.0.0.1:{admin_port}\nshutdown_timeout = 5s\n{extra}\n"
    ports = {}
    for name, body in services.items():
        ports[name] = free_port()
        while ports[name] == admin_port or list(ports.values()).count(ports[name]) > 1:
            ports[name] = free_port()  # nothing is bound yet: the kernel may hand out the same port twice
        text += f"[service {name}]\nlisten = 127.0.0.1:{ports[name]}\n{body}\n"
    path = tmp_path / "custom.ini"
    path.write_text(text + tail)
    rp = Repoint(str(path), admin_port, ports, env=env)
    wait_for(lambda: rp.status(), 10, what="admin API")
    return rp


class KeyWriters:
    """Redis clients writing through repoint, each `SET key n` every `pace` seconds until stopped
    (n = 0, 1, ...; key_of(w, n) names client w's key): every error kept as the application saw
    it, every acknowledged write counted (writes[w]) and remembered (acked[key] = n)."""

    def __init__(self, clients, key_of, pace=0.005):
        import redis
        self.redis, self.key_of, self.pace = redis, key_of, pace
        self.stop_event, self.lock = threading.Event(), threading.Lock()
        self.errors, self.acked, self.writes = [], {}, [0] * len(clients)
        self.threads = [threading.Thread(target=self._run, args=(w, c)) for w, c in enumerate(clients)]

    def _run(self, w, r):
        n = 0
        while not self.stop_event.is_set():
            try:
                key = self.key_of(w, n)
            except Exception as e:  # the test's own doing: said, and the writer stops
                self.errors.append(f"writer {w}: no key: {e!r}")
                break
            try:
                r.set(key, n)
                with self.lock:
                    self.acked[key] = n
                self.writes[w] += 1
            except self.redis.RedisError as e:
                self.errors.append(f"{key}: {e!r}")
            n += 1
            time.sleep(self.pace)
        r.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join()


def rss_kb(pid):
    """Resident memory of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture(scope="session")
def lab():
    d = tempfile.mkdtemp(prefix="repoint-lab-")
    os.chmod(d, 0o755)
    lab = Lab(d)
    lab.up(["postgres", "mysql", "redis"])
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def start_repoint(lab, tmp_path):
    """start_repoint(**overrides) -> a running Repoint in front of the lab, every writer known."""
    started = []

    def start(**overrides):
        os.chmod(tmp_path, 0o755)
        cfg = str(tmp_path / f"repoint-{len(started)}.ini")
        admin = free_port()
        ports = lab.write_config(cfg, admin=f"127.0.0.1:{admin}", **overrides)
        ports.pop("admin", None)
        rp = Repoint(cfg, admin, ports)
        started.append(rp)
        wait_for(lambda: rp.status(), 10, what="repoint's admin API")
        for name in ports:
            rp.wait_writer(name)
        return rp

    yield start
    for rp in started:
        rp.stop()


def record_outage(engine, kind, outage_s, errors, extra=""):
    OUTAGES.append({"engine": engine, "kind": kind, "outage_ms": round(outage_s * 1000, 1), "errors": errors,
                    "extra": extra})


def record_notice(source, mode, ms):
    NOTICES.append({"source": source, "mode": mode, "notice_ms": round(ms, 1)})


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if NOTICES:
        tr.section("time from a control-plane failover's promotion to repoint routing to the new writer")
        for n in NOTICES:
            tr.write_line(f"{n['source']:20s} {n['mode']:10s} {n['notice_ms']:8.1f} ms")
    if not OUTAGES:
        return
    tr.section("client-visible outage through repoint (measured)")
    for o in OUTAGES:
        tr.write_line(f"{o['engine']:9s} {o['kind']:11s} outage {o['outage_ms']:8.1f} ms  errors {o['errors']:3d}  {o['extra']}")
    out = os.environ.get("REPOINT_OUTAGE_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(OUTAGES, f, indent=2)


class OwnServer:
    """A server a test starts for itself (one process, its own temp dir, its log there); stop() ends it and
    removes the dir."""

    def _spawn(self, argv):
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        import shutil
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres(OwnServer):
    """A PostgreSQL 15 of a test's own, run as the postgres user (it refuses root), with the pg_hba.conf given,
    `files` {name in the data dir: source} copied in as the server's own (0600), and extra -c settings."""

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self, hba, settings=(), files=None, prefix="repoint-pg-"):
        import pwd
        import shutil
        import tempfile
        pw = pwd.getpwnam("postgres")
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        as_pg = ["runuser", "-u", "postgres", "--"]
        data = self.dir + "/data"
        subprocess.run(as_pg + [self.BIN + "/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
                                "--no-instructions", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True, timeout=120, cwd="/")
        for name, src in (files or {}).items():
            shutil.copy(src, os.path.join(data, name))
            os.chown(os.path.join(data, name), pw.pw_uid, pw.pw_gid)
            os.chmod(os.path.join(data, name), 0o600)
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write(hba)
        argv = as_pg + [self.BIN + "/postgres", "-D", data, "-p", str(self.port), "-k", self.dir,
                        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        for s in settings:
            argv += ["-c", s]
        self._spawn(argv)

    def local(self):
        """The superuser over the unix socket (whatever pg_hba says of TCP)."""
        import psycopg2
        c = psycopg2.connect(host=self.dir, port=self.port, user="postgres", dbname="postgres", connect_timeout=5)
        c.autocommit = True
        return c


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster (3 shards, a replica each) for a test module; always stopped."""
    from labkit.rediscluster import RedisCluster
    rc = RedisCluster(str(tmp_path_factory.mktemp("rcluster")), shards=3)
    rc.start()
    try:
        yield rc
    finally:
        rc.stop()
