"""TLS to the members: TLS-only redis-servers (plaintext port off, TLS replication) behind repoint, with a
lab CA made here with openssl. Plaintext clients through repoint reach them over TLS (sessions, shared
connections, probes); a switchover over TLS costs a writing client nothing; a certificate from another CA,
one that does not name the member, an expired one and a member speaking plaintext are each refused with the
reason."""
import os
import subprocess
import threading
import time

import pytest
import redis

from conftest import OwnPostgres, free_port, start_custom, wait_for
from labkit.pki import make_ca, make_cert, make_expired


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = make_ca(d, "ca")
    other = make_ca(d, "other")
    cert, key = make_cert(d, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    expired, expired_key = make_expired(d, "ca", "expired", "IP:127.0.0.1")
    return {"dir": d, "ca": ca, "other_ca": other, "cert": cert, "key": key, "expired": expired,
            "expired_key": expired_key}


class TlsRedis:
    """A TLS-only redis-server on a free port (optionally a replica of another, over TLS)."""

    def __init__(self, pki, workdir, replicaof=None, check=True):
        self.port = free_port()
        cmd = ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
               "--tls-cert-file", pki["cert"], "--tls-key-file", pki["key"], "--tls-ca-cert-file", pki["ca"],
               "--tls-auth-clients", "no", "--tls-replication", "yes", "--save", "", "--appendonly", "no",
               "--dir", workdir]
        if replicaof is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replicaof.port)]
        self.log = open(os.path.join(workdir, "redis-%d.log" % self.port), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.ca = pki["ca"]
        if check:
            wait_for(lambda: self.client().ping(), 10, what="TLS redis on %d" % self.port)
        else:  # a certificate no client accepts: listening is all there is to see
            import socket
            wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close() or True, 10,
                     what="redis on %d" % self.port)

    def client(self):
        return redis.Redis("127.0.0.1", self.port, ssl=True, ssl_ca_certs=self.ca, socket_timeout=5)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def tls_pair(pki, tmp_path):
    a = TlsRedis(pki, str(tmp_path))
    b = TlsRedis(pki, str(tmp_path), replicaof=a)
    wait_for(lambda: b.client().info("replication")["master_link_status"] == "up", 15, what="TLS replication")
    yield a, b
    for n in (a, b):
        n.stop()


def service(members, pki, tls="verify-full", extra=""):
    return ("protocol = redis\nmembers = %s\nprobe_interval = 100ms\ntls = %s\ntls_ca_file = %s\n%s"
            % (", ".join("127.0.0.1:%d" % m.port for m in members), tls, pki["ca"], extra))


@pytest.mark.parametrize("multiplex", ["off", "on"])
def test_plaintext_clients_reach_tls_only_members(tls_pair, pki, tmp_path, multiplex):
    a, b = tls_pair
    rp = start_custom(tmp_path, {"rd": service([a, b], pki, extra="multiplex = %s\n" % multiplex)})
    try:
        rp.wait_writer("rd", "127.0.0.1:%d" % a.port)
        # The replica's own first check over TLS may end after the writer's (a loaded machine).
        wait_for(lambda: {m["address"]: m for m in rp.service("rd")["members"]}["127.0.0.1:%d" % b.port]["role"]
                 == "reader", 20, what="the TLS replica to be known as a reader")
        c = redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=20)
        big = os.urandom(16 << 20)
        assert c.set("tls:big", big)
        assert c.get("tls:big") == big
        assert a.client().get("tls:big") == big
        pipe = c.pipeline(transaction=False)
        for i in range(2000):
            pipe.set("tls:k%d" % i, i)
        assert all(pipe.execute())
        assert c.get("tls:k1999") == b"1999"
        clients = [redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=10) for _ in range(20)]
        assert all(x.incr("tls:n") for x in clients)
        assert int(c.get("tls:n")) == 20
        assert rp.service("rd")["counters"]["bytes_spliced"] == 0  # TLS to the member: every byte through OpenSSL
        if multiplex == "off":
            # Each session has its own TLS connection to the member; after the first, they resume the session.
            import json
            import urllib.request
            with urllib.request.urlopen("http://127.0.0.1:%d/clients" % rp.admin_port, timeout=5) as r:
                seen = [x.get("member_tls", "") for x in json.load(r)["clients"]]
            assert len(seen) == 21 and all(t.startswith("TLSv1.3") for t in seen), seen
            assert sum("resumed" in t for t in seen) >= 19, seen
    finally:
        rp.stop()


def test_switchover_over_tls_costs_a_writing_client_nothing(tls_pair, pki, tmp_path):
    a, b = tls_pair
    rp = start_custom(tmp_path, {"rd": service([a, b], pki, extra="failover_probe_interval = 20ms\n")})
    stop, errors, acked = threading.Event(), [], []
    try:
        rp.wait_writer("rd", "127.0.0.1:%d" % a.port)

        def writer():
            c = redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=20)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    c.rpush("tls:log", i)
                    acked.append(i)
                except redis.RedisError as e:
                    errors.append(repr(e))
                time.sleep(0.002)
        th = threading.Thread(target=writer)
        th.start()
        wait_for(lambda: len(acked) > 200, 10, what="writes before the switchover")
        # A planned switchover, as ElastiCache's TestFailover does it: pause writes, let the replica catch up,
        # promote it, make the old primary its replica.
        old, new = a.client(), b.client()
        old.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        off = old.info("replication")["master_repl_offset"]
        wait_for(lambda: new.info("replication")["slave_repl_offset"] >= off, 5, what="the replica to catch up")
        new.execute_command("REPLICAOF", "NO", "ONE")
        old.execute_command("REPLICAOF", "127.0.0.1", str(b.port))
        old.execute_command("CLIENT", "UNPAUSE")
        rp.wait_writer("rd", "127.0.0.1:%d" % b.port, timeout=15)
        n = len(acked)
        wait_for(lambda: len(acked) > n + 200, 10, what="writes after the switchover")
        stop.set()
        th.join(30)
        assert errors == [], errors[:5]
        on_new = [int(x) for x in new.lrange("tls:log", 0, -1)]
        assert sorted(set(on_new)) == on_new and set(acked) <= set(on_new), "every acknowledged write once"
    finally:
        stop.set()
        rp.stop()


@pytest.mark.parametrize("case", ["other CA", "wrong name", "expired", "plaintext member"])
def test_a_member_that_fails_tls_is_refused_with_the_reason(pki, tmp_path, case):
    plain = None
    node = None
    try:
        if case == "plaintext member":
            port = free_port()
            plain = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
            wait_for(lambda: redis.Redis("127.0.0.1", port).ping(), 10, what="plain redis")
            body = ("protocol = redis\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\ntls = require\n" % port)
            want = "is the member speaking TLS?"
        elif case == "expired":
            node = TlsRedis(dict(pki, cert=pki["expired"], key=pki["expired_key"]), str(tmp_path), check=False)
            body = service([node], pki)
            want = "certificate has expired"
        else:
            node = TlsRedis(pki, str(tmp_path))
            if case == "other CA":
                body = service([node], dict(pki, ca=pki["other_ca"]))
                want = "certificate verify failed"
            else:
                body = service([node], pki, extra="tls_server_name = db.example.com\n")
                want = "hostname mismatch"
        rp = start_custom(tmp_path, {"rd": body + "hold_timeout = 1s\n"})
        try:
            wait_for(lambda: want in rp.service("rd")["members"][0]["probe"]["detail"], 10,
                     what="the probe to say why (%s)" % want)
            assert not rp.service("rd")["writer_ready"], "never a writer over a connection that failed TLS"
            # A client is held, never passed to the member in plaintext or unverified, and refused in the end.
            c = redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=10)
            with pytest.raises(redis.ResponseError):
                c.set("x", 1)
        finally:
            rp.stop()
    finally:
        if plain is not None:
            plain.kill()
            plain.wait()
        if node is not None:
            node.stop()


# ---- Postgres: SSLRequest, 'S', then the handshake, on repoint's side -------------------------------

class TlsPostgres(OwnPostgres):
    """A PostgreSQL 15 that accepts TLS connections only (hostssl in pg_hba, as rds.force_ssl = 1 does)."""

    def __init__(self, pki):
        super().__init__("local all all trust\nhostssl all all 127.0.0.1/32 trust\n", settings=("ssl=on",),
                         files={"server.crt": pki["cert"], "server.key": pki["key"]}, prefix="repoint-tls-pg-")
        self.ca = pki["ca"]
        wait_for(lambda: self.connect(sslmode="verify-full"), 30, what="TLS postgres")

    def connect(self, **kw):
        import psycopg2
        kw.setdefault("sslrootcert", self.ca)
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             connect_timeout=5, **kw)
        c.autocommit = True
        return c


@pytest.fixture
def tls_pg(pki):
    pg = TlsPostgres(pki)
    yield pg
    pg.stop()


def pg_service(pg, pki, tls="verify-full", extra=""):
    return ("protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\nprobe_user = postgres\n"
            "tls = %s\ntls_ca_file = %s\n%s" % (pg.port, tls, pki["ca"], extra))


def test_plaintext_postgres_clients_reach_a_tls_only_server(tls_pg, pki, tmp_path):
    import psycopg2
    with pytest.raises(psycopg2.OperationalError):
        tls_pg.connect(sslmode="disable")  # the server takes TLS only
    rp = start_custom(tmp_path, {"pg": pg_service(tls_pg, pki)})
    try:
        rp.wait_writer("pg", "127.0.0.1:%d" % tls_pg.port)
        # libpq's default sslmode=prefer asks repoint for TLS first: told no, it goes on in plaintext on loopback,
        # and its session reaches the server over TLS.
        for mode in ("prefer", "disable"):
            c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                                 connect_timeout=10, sslmode=mode)
            cur = c.cursor()
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone()[0] is True
            cur.execute("SELECT repeat('x', 4000000)")
            assert len(cur.fetchone()[0]) == 4000000
            c.close()
        # A cancel reaches its session's server over TLS too.
        c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                             connect_timeout=10)
        cur = c.cursor()
        threading.Timer(0.5, c.cancel).start()
        t = time.time()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(20)")
        assert time.time() - t < 10
        c.rollback()
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
        c.close()
    finally:
        rp.stop()


def test_a_postgres_member_whose_certificate_fails_is_refused(tls_pg, pki, tmp_path):
    import psycopg2
    rp = start_custom(tmp_path, {"pg": pg_service(tls_pg, dict(pki, ca=pki["other_ca"]), extra="hold_timeout = 1s\n")})
    try:
        wait_for(lambda: "certificate verify failed" in rp.service("pg")["members"][0]["probe"]["detail"], 10,
                 what="the probe to say why")
        assert not rp.service("pg")["writer_ready"]
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                             connect_timeout=10)
    finally:
        rp.stop()


# ---- TLS on the listener (clients -> repoint) ---------------------------------------------------------

def listen_tls_body(pki, mode, cert=None, key=None):
    return "listen_tls = %s\nlisten_tls_cert_file = %s\nlisten_tls_key_file = %s\n" % (
        mode, cert or pki["cert"], key or pki["key"])


def test_redis_clients_over_tls_to_tls_members(tls_pair, pki, tmp_path):
    """TLS on both sides: repoint terminates the client's TLS and originates its own to the member, so it sees
    plaintext in between (multiplexing, the read-only retry, idle detection work as ever)."""
    a, b = tls_pair
    body = service([a, b], pki, extra="multiplex = on\n" + listen_tls_body(pki, "require"))
    rp = start_custom(tmp_path, {"rd": body})
    try:
        rp.wait_writer("rd", "127.0.0.1:%d" % a.port)
        c = redis.Redis("127.0.0.1", rp.ports["rd"], ssl=True, ssl_ca_certs=pki["ca"], socket_timeout=20)
        big = os.urandom(16 << 20)
        assert c.set("tls2:big", big) and c.get("tls2:big") == big
        pipe = c.pipeline(transaction=False)
        for i in range(1000):
            pipe.incr("tls2:n")
        assert pipe.execute()[-1] == 1000
        assert rp.service("rd")["counters"]["bytes_spliced"] == 0
        # A plaintext client is not served where TLS is required.
        with pytest.raises(redis.ConnectionError):
            redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=5).ping()
        assert "repoint_client_tls_failures_total" in rp.metrics()
    finally:
        rp.stop()


def test_listen_tls_on_takes_both_and_rotates_the_certificate(pki, tmp_path):
    import shutil
    import socket
    import ssl
    port = free_port()
    plain = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    cert, key = str(tmp_path / "listen.crt"), str(tmp_path / "listen.key")
    shutil.copy(pki["cert"], cert)
    shutil.copy(pki["key"], key)
    try:
        wait_for(lambda: redis.Redis("127.0.0.1", port).ping(), 10, what="plain redis")
        rp = start_custom(tmp_path, {"rd": "protocol = redis\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\n%s"
                                           % (port, listen_tls_body(pki, "on", cert, key))})
        try:
            rp.wait_writer("rd")
            tls_client = redis.Redis("127.0.0.1", rp.ports["rd"], ssl=True, ssl_ca_certs=pki["ca"], socket_timeout=10)
            plain_client = redis.Redis("127.0.0.1", rp.ports["rd"], socket_timeout=10)
            assert tls_client.set("both", "tls") and plain_client.get("both") == b"tls"

            def served_cn():
                ctx = ssl.create_default_context(cafile=pki["ca"])
                with socket.create_connection(("127.0.0.1", rp.ports["rd"]), 5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                        return dict(x[0] for x in t.getpeercert()["subject"])["commonName"]
            assert served_cn() == "server"
            # Rotation: a new certificate in the same files is served to new clients; the open one goes on.
            make_cert(pki["dir"], "ca", "rotated", "IP:127.0.0.1")
            shutil.copy(os.path.join(pki["dir"], "rotated.crt"), cert + ".new")
            shutil.copy(os.path.join(pki["dir"], "rotated.key"), key + ".new")
            os.replace(key + ".new", key)
            os.replace(cert + ".new", cert)
            wait_for(lambda: served_cn() == "rotated", 10, what="the rotated certificate")
            assert tls_client.get("both") == b"tls"
            assert "certificate reloaded" in rp.logtext()
        finally:
            rp.stop()
    finally:
        plain.kill()
        plain.wait()


def test_postgres_clients_over_tls(tls_pg, pki, tmp_path):
    import psycopg2
    import socket
    rp = start_custom(tmp_path, {"pg": pg_service(tls_pg, pki, extra=listen_tls_body(pki, "require"))})
    try:
        rp.wait_writer("pg")
        c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                             connect_timeout=10, sslmode="verify-full", sslrootcert=pki["ca"])
        assert c.info.ssl_in_use
        cur = c.cursor()
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0] is True  # and over TLS to the member too
        threading.Timer(0.5, c.cancel).start()  # libpq 15 cancels in plaintext: still taken
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(20)")
        c.close()
        # A plaintext start where TLS is required: the native refusal.
        with pytest.raises(psycopg2.OperationalError, match="TLS clients only"):
            psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                             connect_timeout=10, sslmode="disable")
        # Bytes sent after the SSLRequest, before the handshake, are never taken (CVE-2021-23214): closed.
        with socket.create_connection(("127.0.0.1", rp.ports["pg"]), 5) as s:
            s.sendall(bytes([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]) + b"\x00\x00\x00\x08\x00\x03\x00\x00")
            s.settimeout(5)
            assert s.recv(10) == b"", "no 'S' and no session for an injected request"
    finally:
        rp.stop()


def test_a_clients_own_tls_passes_through_and_repoint_says_it_is_blind(tls_pg, pki, tmp_path):
    """Neither side configured: a client's own TLS to the member passes untouched (as before), and repoint says
    once that it cannot follow such sessions."""
    import psycopg2
    rp = start_custom(tmp_path, {"pg": "protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\n"
                                       "probe_user = postgres\n" % tls_pg.port})
    try:
        rp.wait_writer("pg")
        for _ in range(2):
            c = psycopg2.connect(host="127.0.0.1", port=rp.ports["pg"], user="postgres", dbname="postgres",
                                 connect_timeout=10, sslmode="require")
            assert c.info.ssl_in_use
            cur = c.cursor()
            cur.execute("SELECT 1")
            c.close()
        wait_for(lambda: "repoint_opaque_sessions_total{service=\"pg\"} 2" in rp.metrics(), 10,
                 what="both sessions counted")
        assert rp.logtext().count("is opaque to repoint") == 1
    finally:
        rp.stop()
