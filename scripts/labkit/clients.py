"""Real clients (psycopg2, pymysql, redis-py) behind one small interface, and a writer loop that
measures what an application sees through repoint during a failover."""
import threading
import time

import psycopg2
import pymysql
import redis


class Engine:
    """How a test talks to one engine through a TCP address."""

    name = None

    def connect(self, port, timeout=10, ca=None):
        """A connection to 127.0.0.1:port (repoint's listener or a server); ca: over TLS, verified with it."""
        raise NotImplementedError

    def connect_node(self, node, timeout=10):
        """A connection straight to a lab node, over TLS if the lab is TLS-only."""
        return self.connect(node.port, timeout, ca=node.tls_ca)

    def setup(self, conn):
        """Create what write() needs (idempotent)."""

    def write(self, conn, key, value):
        raise NotImplementedError

    def read(self, conn, key):
        raise NotImplementedError

    def server_port(self, conn):
        """The port of the server this connection really reached."""
        raise NotImplementedError

    def echo(self, conn, payload):
        """Round-trip a payload (bytes/str) through the server and return what came back."""
        raise NotImplementedError

    def conn_id(self, conn):
        """The server's id of this connection (backend pid, connection id, client id)."""
        raise NotImplementedError

    def live_ids(self, conn, ids):
        """Which of `ids` are connections that the server of `conn` still has open."""
        raise NotImplementedError

    def close(self, conn):
        try:
            conn.close()
        except Exception:
            pass


class Postgres(Engine):
    name = "postgres"

    def connect(self, port, timeout=10, ca=None):
        tls = {"sslmode": "verify-full", "sslrootcert": ca} if ca else {}
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                connect_timeout=timeout, **tls)
        conn.autocommit = True
        return conn

    def setup(self, conn):
        with conn.cursor() as c:
            c.execute("CREATE TABLE IF NOT EXISTS repoint_t (k text PRIMARY KEY, v text)")

    def write(self, conn, key, value):
        with conn.cursor() as c:
            c.execute("INSERT INTO repoint_t VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                      (key, value))

    def read(self, conn, key):
        with conn.cursor() as c:
            c.execute("SELECT v FROM repoint_t WHERE k = %s", (key,))
            row = c.fetchone()
            return row[0] if row else None

    def server_port(self, conn):
        with conn.cursor() as c:
            c.execute("SELECT inet_server_port()")
            return c.fetchone()[0]

    def echo(self, conn, payload):
        with conn.cursor() as c:
            c.execute("SELECT %s::text", (payload,))
            return c.fetchone()[0]

    def conn_id(self, conn):
        return conn.get_backend_pid()

    def live_ids(self, conn, ids):
        with conn.cursor() as c:
            c.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(ids),))
            return {r[0] for r in c.fetchall()}


class MySQL(Engine):
    name = "mysql"

    def connect(self, port, timeout=10, ca=None):
        tls = {"ssl": {"ca": ca, "check_hostname": True}} if ca else {}
        return pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="test",
                               connect_timeout=timeout, read_timeout=30, write_timeout=30, autocommit=True,
                               max_allowed_packet=64 * 1024 * 1024, **tls)

    def setup(self, conn):
        with conn.cursor() as c:
            c.execute("CREATE TABLE IF NOT EXISTS repoint_t (k VARCHAR(64) PRIMARY KEY, v TEXT)")

    def write(self, conn, key, value):
        with conn.cursor() as c:
            c.execute("REPLACE INTO repoint_t VALUES (%s, %s)", (key, value))

    def read(self, conn, key):
        with conn.cursor() as c:
            c.execute("SELECT v FROM repoint_t WHERE k = %s", (key,))
            row = c.fetchone()
            return row[0] if row else None

    def server_port(self, conn):
        with conn.cursor() as c:
            c.execute("SELECT @@port")
            return int(c.fetchone()[0])

    def echo(self, conn, payload):
        with conn.cursor() as c:
            c.execute("SELECT %s", (payload,))
            return c.fetchone()[0]

    def conn_id(self, conn):
        return conn.thread_id()

    def live_ids(self, conn, ids):
        with conn.cursor() as c:
            c.execute("SELECT id FROM information_schema.processlist")
            return {int(r[0]) for r in c.fetchall()} & set(ids)


class Redis(Engine):
    name = "redis"

    def connect(self, port, timeout=10, ca=None):
        tls = {"ssl": True, "ssl_ca_certs": ca} if ca else {}
        r = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=timeout, socket_timeout=30,
                        single_connection_client=True, **tls)
        r.ping()
        return r

    def write(self, conn, key, value):
        conn.set(key, value)

    def read(self, conn, key):
        v = conn.get(key)
        return v.decode() if v is not None else None

    def server_port(self, conn):
        return int(conn.info("server")["tcp_port"])

    def echo(self, conn, payload):
        conn.set("repoint:echo", payload)
        return conn.get("repoint:echo")

    def conn_id(self, conn):
        return int(conn.client_id())

    def live_ids(self, conn, ids):
        return {int(c["id"]) for c in conn.client_list()} & set(ids)


ENGINES = {e.name: e for e in (Postgres(), MySQL(), Redis())}


class WriterLoop(threading.Thread):
    """An application writing through repoint every `interval` seconds, reconnecting after an error
    as a pool would. Records every attempt: (t, ok, error text, server port)."""

    def __init__(self, engine, port, interval=0.005, name="w"):
        super().__init__(daemon=True)
        self.engine, self.port, self.interval, self.tag = engine, port, interval, name
        self.records = []
        self.stop_event = threading.Event()
        self.conn = None
        self.seq = 0

    def run(self):
        while not self.stop_event.is_set():
            t = time.time()
            try:
                if self.conn is None:
                    self.conn = self.engine.connect(self.port)
                self.seq += 1
                self.engine.write(self.conn, f"{self.tag}", str(self.seq))
                self.records.append((t, True, None))
            except Exception as e:  # what the application would see
                self.records.append((t, False, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
                if self.conn is not None:
                    self.engine.close(self.conn)
                self.conn = None
            self.stop_event.wait(self.interval)
        if self.conn is not None:
            self.engine.close(self.conn)

    def stop(self):
        self.stop_event.set()
        self.join(30)

    def successes(self):
        return [t for t, ok, _ in self.records if ok]

    def errors(self):
        return [(t, e) for t, ok, e in self.records if not ok]

    def outage(self, after=0.0):
        """The longest gap between two successful writes that starts at or after `after` (seconds)."""
        ok = [t for t in self.successes() if t >= after - 5]
        gaps = [(b - a, a, b) for a, b in zip(ok, ok[1:]) if b >= after]
        return max(gaps) if gaps else (0.0, None, None)
