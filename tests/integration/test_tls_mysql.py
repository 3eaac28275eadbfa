"""MySQL/MariaDB over TLS: the CLIENT_SSL upgrade inside the handshake, conducted by repoint on both sides.
A MariaDB with require_secure_transport = ON (TLS only, as RDS's require_secure_transport) behind repoint:
plaintext clients reach it over TLS, TLS clients reach repoint's listener (pymysql with a verified
certificate, the mysql CLI), a plaintext client where TLS is required gets MariaDB's own refusal, bytes after
the TLS request are never taken, and a member whose certificate fails is refused with the reason."""
import json
import os
import socket
import subprocess
import tempfile
import urllib.request

import pytest

from conftest import OwnServer, free_port, start_custom, wait_for
from test_tls import listen_tls_body, pki  # noqa: F401 - pki is a fixture

TLS_REQUIRED = 3159   # ER_SECURE_TRANSPORT_REQUIRED


class TlsMariadb(OwnServer):
    """A MariaDB 10.11 that takes TLS connections only (require_secure_transport = ON)."""

    def __init__(self, pki):
        self.dir = tempfile.mkdtemp(prefix="repoint-tls-my-")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "sock")
        root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=%s/data" % self.dir,
                        "--auth-root-authentication-method=normal", "--skip-test-db"] + root,
                       check=True, capture_output=True, timeout=120, cwd=self.dir)
        self._spawn(
            ["/usr/sbin/mariadbd", "--no-defaults", "--datadir=%s/data" % self.dir, "--port=%d" % self.port,
             "--bind-address=127.0.0.1", "--socket=%s" % self.sock, "--pid-file=%s/pid" % self.dir,
             "--tmpdir=%s" % self.dir, "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
             "--performance-schema=OFF", "--max-allowed-packet=64M", "--ssl-cert=%s" % pki["cert"],
             "--ssl-key=%s" % pki["key"], "--ssl-ca=%s" % pki["ca"], "--require-secure-transport=ON"] + root)
        self.ca = pki["ca"]
        wait_for(lambda: self.admin(), 60, what="TLS mariadb")
        c = self.admin()
        with c.cursor() as cur:
            for sql in ("CREATE DATABASE IF NOT EXISTS test",
                        "CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY 'test'",
                        "GRANT ALL PRIVILEGES ON *.* TO 'test'@'%'"):
                cur.execute(sql)
        c.close()

    def admin(self):
        import pymysql
        return pymysql.connect(unix_socket=self.sock, user="root", autocommit=True, connect_timeout=2)


@pytest.fixture(scope="module")
def tls_my(pki):  # noqa: F811
    my = TlsMariadb(pki)
    yield my
    my.stop()


def my_service(port, pki, tls="verify-full", extra=""):  # noqa: F811
    return ("protocol = mysql\nmembers = 127.0.0.1:%d\nprobe_interval = 100ms\nprobe_user = test\n"
            "probe_password = test\nprobe_database = test\ntls = %s\ntls_ca_file = %s\n%s"
            % (port, tls, pki["ca"], extra))


def connect(port, **kw):
    import pymysql
    return pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                           autocommit=True, connect_timeout=10, read_timeout=60, **kw)


def cipher(c):
    with c.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return cur.fetchone()[1]


def clients(rp):
    with urllib.request.urlopen("http://127.0.0.1:%d/clients" % rp.admin_port, timeout=5) as r:
        return json.load(r)["clients"]


def test_plaintext_mysql_clients_reach_a_tls_only_server(tls_my, pki, tmp_path):  # noqa: F811
    import pymysql
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(tls_my.port)  # the server takes TLS only (MariaDB 10.11 says "access denied", 11.4 3159)
    assert e.value.args[0] in (1045, TLS_REQUIRED)
    rp = start_custom(tmp_path, {"my": my_service(tls_my.port, pki)})
    try:
        rp.wait_writer("my", "127.0.0.1:%d" % tls_my.port)
        c = connect(rp.ports["my"])
        assert cipher(c) != ""  # repoint -> member is TLS
        with c.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS test.big (id INT PRIMARY KEY, v LONGBLOB)")
            big = os.urandom(16 << 20)
            cur.execute("REPLACE INTO test.big VALUES (1, %s)", (big,))
            cur.execute("SELECT v FROM test.big WHERE id = 1")
            assert cur.fetchone()[0] == big
            # A transaction, a prepared statement, a multi-result: the tracker follows them (idle again).
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
            cur.execute("COMMIT")
        assert [x["member_tls"] for x in clients(rp) if x.get("member_tls")], clients(rp)
        c.close()
        # repoint followed every session (TLS to the member, plaintext to it): none became opaque.
        assert 'repoint_opaque_sessions_total{service="my"} 0' in rp.metrics()
        # The mysql CLI (libmariadb), asking for no TLS on loopback, starting with another authentication
        # plugin than the account's: the server's auth switch request and the answer are renumbered too.
        out = subprocess.run(["mysql", "--no-defaults", "-h127.0.0.1", "-P%d" % rp.ports["my"], "-utest", "-ptest",
                              "--skip-ssl", "--default-auth=client_ed25519", "-N", "-e",
                              "SHOW SESSION STATUS LIKE 'Ssl_version'"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "TLSv1" in out.stdout
        # Ten sessions in parallel, each a short conversation.
        conns = [connect(rp.ports["my"]) for _ in range(10)]
        for i, x in enumerate(conns):
            with x.cursor() as cur:
                cur.execute("SELECT %s", (i,))
                assert cur.fetchone()[0] == i
            x.close()
    finally:
        rp.stop()


def repoint_login(tmp_path, auth):
    """The service lines for auth (passthrough, or repoint with the hash of test's password in auth_file)."""
    if auth == "passthrough":
        return ""
    users = tmp_path / "users.txt"
    users.write_text('"test" "*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29"\n')   # PASSWORD('test')
    return "auth = repoint\nauth_file = %s\n" % users


@pytest.mark.parametrize("auth", ["passthrough", "repoint"])
def test_mysql_clients_over_tls(tls_my, pki, tmp_path, auth):  # noqa: F811
    """TLS on both sides: repoint conducts the start (passthrough), or makes it its own (auth = repoint:
    its greeting offers TLS, and it asks the member for TLS inside its own login)."""
    import pymysql
    rp = start_custom(tmp_path, {"my": my_service(tls_my.port, pki, extra=listen_tls_body(pki, "require") +
                                                  repoint_login(tmp_path, auth))})
    try:
        rp.wait_writer("my")
        c = connect(rp.ports["my"], ssl={"ca": pki["ca"], "check_hostname": True})
        with c.cursor() as cur:
            cur.execute("SELECT 41")
            assert cur.fetchone()[0] == 41
        assert cipher(c) != ""
        c.close()
        # The mysql CLI with a verified certificate.
        out = subprocess.run(["mysql", "--no-defaults", "-h127.0.0.1", "-P%d" % rp.ports["my"], "-utest", "-ptest",
                              "--ssl-ca=%s" % pki["ca"], "--ssl-verify-server-cert", "-N", "-e", "SELECT 'over tls'"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "over tls" in out.stdout
        # A plaintext client where TLS is required: MariaDB's own error.
        with pytest.raises(pymysql.err.OperationalError) as e:
            connect(rp.ports["my"])
        assert e.value.args[0] == TLS_REQUIRED and "TLS clients only" in e.value.args[1]
        # A client that sends its TLS handshake in the same write as its TLS request (MySQL clients do not wait
        # for an answer): the handshake goes on.
        import ssl
        with socket.create_connection(("127.0.0.1", rp.ports["my"]), 5) as s:
            s.settimeout(5)
            head = s.recv(4)
            s.recv(int.from_bytes(head[:3], "little"))
            caps = 0x0200 | 0x0800 | 0x8000 | 0x00080000
            req = caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + bytes([33]) + bytes(23)
            ctx = ssl.create_default_context(cafile=pki["ca"])
            inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, outg, server_hostname="127.0.0.1")
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            s.sendall(bytes([32, 0, 0, 1]) + req + outg.read())
            done = False
            while not done:
                data = s.recv(65536)
                assert data, "repoint closed a TLS handshake that came with its request"
                inc.write(data)
                try:
                    tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                s.sendall(outg.read())
        # Plaintext bytes sent after the TLS request, before the handshake, are never taken (CVE-2021-23214):
        # closed.
        with socket.create_connection(("127.0.0.1", rp.ports["my"]), 5) as s:
            s.settimeout(5)
            head = s.recv(4)
            greeting = head + s.recv(int.from_bytes(head[:3], "little"))
            assert greeting[4] == 10
            caps = 0x0200 | 0x0800 | 0x8000 | 0x00080000  # PROTOCOL_41, SSL, SECURE_CONNECTION, PLUGIN_AUTH
            req = caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + bytes([33]) + bytes(23)
            s.sendall(bytes([32, 0, 0, 1]) + req + b"\x05\x00\x00\x00\x03SELECT")
            try:
                got = s.recv(10)   # they reach the TLS handshake, which fails on them: closed (or reset)
            except ConnectionResetError:
                got = b""
            assert got == b"", "no session for an injected packet"
    finally:
        rp.stop()


@pytest.mark.parametrize("auth", ["passthrough", "repoint"])
def test_listen_tls_on_in_front_of_a_plaintext_mysql(lab, pki, tmp_path, auth):  # noqa: F811
    """TLS clients and plaintext ones side by side (listen_tls = on) to plaintext members: repoint terminates."""
    node = lab.primary("mysql")
    body = ("protocol = mysql\nmembers = %s\nprobe_interval = 100ms\nprobe_user = test\nprobe_password = test\n"
            "probe_database = test\n%s%s" % (", ".join("127.0.0.1:%d" % n.port for n in lab.nodes("mysql")),
                                              listen_tls_body(pki, "on"), repoint_login(tmp_path, auth)))
    rp = start_custom(tmp_path, {"my": body})
    try:
        rp.wait_writer("my", "127.0.0.1:%d" % node.port)
        tls_c = connect(rp.ports["my"], ssl={"ca": pki["ca"], "check_hostname": True})
        plain_c = connect(rp.ports["my"])
        for c in (tls_c, plain_c):
            with c.cursor() as cur:
                cur.execute("SELECT @@port")
                assert cur.fetchone()[0] == node.port
                assert cipher(c) == ""  # repoint -> member stays plaintext
        # Commands number their packets afresh: nothing is renumbered after authentication.
        tls_c.select_db("test")
        with tls_c.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone()[0] == "test"
        tls_c.close()
        plain_c.close()
        assert 'repoint_opaque_sessions_total{service="my"} 0' in rp.metrics()
    finally:
        rp.stop()


@pytest.mark.parametrize("case", ["other_ca", "other_ca_verify_ca", "wrong_name", "plaintext_member"])
def test_a_mysql_member_whose_certificate_fails_is_refused(request, tls_my, pki, tmp_path, case):  # noqa: F811
    import pymysql
    if case == "plaintext_member":
        # The lab's MariaDB offers no TLS: never a writer, and no session reaches it in plaintext.
        lab = request.getfixturevalue("lab")
        body = my_service(lab.primary("mysql").port, pki, tls="require", extra="hold_timeout = 1s\n")
        rp = start_custom(tmp_path, {"my": body})
        try:
            wait_for(lambda: "does not offer tls" in json.dumps(rp.service("my")["members"]).lower(), 20,
                     what="the probe's reason")
            assert rp.writer("my") is None
            with pytest.raises(pymysql.err.OperationalError):
                connect(rp.ports["my"])
        finally:
            rp.stop()
        return
    if case.startswith("other_ca"):
        body = my_service(tls_my.port, dict(pki, ca=pki["other_ca"]), extra="hold_timeout = 1s\n",
                          tls="verify-ca" if case.endswith("verify_ca") else "verify-full")
        reason = "certificate verify failed"
    else:
        body = my_service(tls_my.port, pki, extra="hold_timeout = 1s\ntls_server_name = db.example.com\n")
        reason = "hostname mismatch"
    rp = start_custom(tmp_path, {"my": body})
    try:
        if case.startswith("other_ca"):
            # The probe (libmariadb, the chain checked against the CA) says why in /status.
            wait_for(lambda: "certificate" in json.dumps(rp.service("my")["members"]).lower(), 20,
                     what="the probe's reason")
            assert rp.writer("my") is None
        else:
            # libmariadb cannot check another name than the address it connects to, so the probe checks the
            # chain; the data path checks the name and refuses the session with the reason.
            rp.wait_writer("my")
            with pytest.raises(pymysql.err.OperationalError):
                connect(rp.ports["my"])
            wait_for(lambda: reason in rp.logtext(), 10, what="the reason in the log")
    finally:
        rp.stop()
