"""Reload (SIGHUP): the configuration is re-read, checked and applied in place; sessions the change
does not concern go on untouched, and a file that fails the check changes nothing."""
import re
import signal
import socket
import threading
import time

import psycopg2
import redis

from conftest import free_port, wait_for


def set_key(text, service, key, value):
    """The config text with `key = value` in [service SERVICE] (added when absent)."""
    out, in_svc, done = [], False, False
    for line in text.splitlines():
        if line.startswith("["):
            if in_svc and not done:
                out.append(f"{key} = {value}")
                done = True
            in_svc = line.strip() == f"[service {service}]"
        elif in_svc and re.match(rf"{re.escape(key)}\s*=", line):
            line, done = f"{key} = {value}", True
        out.append(line)
    if in_svc and not done:
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


def section(text, service):
    m = re.search(rf"^\[service {service}\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    return m.group(1)


def drop_section(text, service):
    return re.sub(rf"^\[service {service}\]\n.*?(?=^\[|\Z)", "", text, flags=re.S | re.M)


def reload(rp, text):
    """Write `text`, SIGHUP, and wait until repoint has read it (applied or refused)."""
    done = rp.logtext().count("configuration reloaded from") + rp.logtext().count("refused; the running configuration stays")
    with open(rp.config_path, "w") as f:
        f.write(text)
    rp.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: rp.logtext().count("configuration reloaded from")
             + rp.logtext().count("refused; the running configuration stays") > done, 10, what="the reload")
    assert rp.proc.poll() is None, "repoint exited on SIGHUP"


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_twenty_reloads_under_load_cost_no_client_anything(start_repoint):
    rp = start_repoint(probe_interval="100ms")
    stop = threading.Event()
    errors, ops = [], [0]
    r_ids, pg_pids = set(), set()

    def redis_loop(i):
        r = redis.Redis(host="127.0.0.1", port=rp.ports["redis"], socket_timeout=10)
        r_ids.add(r.client_id())
        n = 0
        while not stop.is_set():
            try:
                r.set(f"reload:{i}", n)
                assert int(r.get(f"reload:{i}")) == n
                ops[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"redis: {e!r}")
            n += 1
        r_ids.add(r.client_id())

    def pg_loop():
        conn = psycopg2.connect(host="127.0.0.1", port=rp.ports["postgres"], user="postgres", connect_timeout=10)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pg_pids.add(cur.fetchone()[0])
        while not stop.is_set():
            try:
                cur.execute("SELECT 1")
                cur.fetchone()
                ops[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(f"postgres: {e!r}")
                return
            time.sleep(0.005)
        cur.execute("SELECT pg_backend_pid()")
        pg_pids.add(cur.fetchone()[0])

    threads = [threading.Thread(target=redis_loop, args=(i,)) for i in range(3)] + [threading.Thread(target=pg_loop)]
    for t in threads:
        t.start()
    try:
        with open(rp.config_path) as f:
            base = f.read()
        for k in range(20):
            text = base
            for svc in ("redis", "postgres", "mysql"):
                text = set_key(text, svc, "probe_interval", "150ms" if k % 2 else "100ms")
                text = set_key(text, svc, "hold_timeout", f"{20 + k}s")
                text = set_key(text, svc, "drain_timeout", f"{5 + k % 3}s")
            text = text.replace("log_level = info", "log_level = debug" if k % 2 else "log_level = info")
            reload(rp, text)
            before = ops[0]
            wait_for(lambda: ops[0] > before + 3, 10, what="clients to go on after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert errors == []
    assert len(r_ids) == 3, "a Redis session was reconnected by a reload"
    assert len(pg_pids) == 1, "the Postgres session was reconnected by a reload"
    assert rp.logtext().count("configuration reloaded from") >= 20
    assert rp.service("redis")["writer_ready"]


def test_a_file_that_fails_the_check_changes_nothing(start_repoint):
    rp = start_repoint()
    r = redis.Redis(host="127.0.0.1", port=rp.ports["redis"], socket_timeout=10)
    assert r.ping()
    with open(rp.config_path) as f:
        good = f.read()
    bad = set_key(good, "redis", "probe_interval", "fast")
    line = next(i + 1 for i, ln in enumerate(bad.splitlines()) if ln.startswith("probe_interval = fast"))
    reload(rp, bad)
    log = rp.logtext()
    assert "refused; the running configuration stays" in log
    assert f"{rp.config_path}:{line}: probe_interval" in log
    # Still serving, on the same session and on new ones.
    assert r.ping()
    assert redis.Redis(host="127.0.0.1", port=rp.ports["redis"], socket_timeout=10).ping()
    # A later good file is taken.
    reload(rp, good)
    assert "configuration reloaded from" in rp.logtext()


def test_services_added_removed_and_moved_in_place(start_repoint):
    rp = start_repoint()
    with open(rp.config_path) as f:
        text = f.read()
    r = redis.Redis(host="127.0.0.1", port=rp.ports["redis"], socket_timeout=10)
    r_id = r.client_id()
    pg = psycopg2.connect(host="127.0.0.1", port=rp.ports["postgres"], user="postgres", connect_timeout=10)
    pg.autocommit = True

    # Added: a second Redis service on a new port.
    added = free_port()
    body = re.sub(r"^listen = .*$", f"listen = 127.0.0.1:{added}", section(text, "redis"), flags=re.M)
    text2 = text + f"\n[service cache2]\n{body}"
    reload(rp, text2)
    rp.wait_writer("cache2")
    assert redis.Redis(host="127.0.0.1", port=added, socket_timeout=10).ping()

    # Moved: redis listens elsewhere; the open session goes on with the same server connection.
    old_port, new_port = rp.ports["redis"], free_port()
    text3 = set_key(text2, "redis", "listen", f"127.0.0.1:{new_port}")
    reload(rp, text3)
    wait_for(lambda: refused(old_port), 10, what="the old listen address to close")
    assert redis.Redis(host="127.0.0.1", port=new_port, socket_timeout=10).ping()
    assert r.client_id() == r_id

    # Removed: postgres's idle session is drained and its port closes; the others are untouched.
    text4 = drop_section(text3, "postgres")
    reload(rp, text4)
    wait_for(lambda: refused(rp.ports["postgres"]), 10, what="the removed service's listener to close")
    cur = pg.cursor()
    try:
        cur.execute("SELECT 1")
        raise AssertionError("the removed service's session was not drained")
    except psycopg2.OperationalError:
        pass
    assert "postgres" not in [s["name"] for s in rp.status()["services"]]
    assert r.client_id() == r_id

    # A change that needs a restart is refused for that service alone, which keeps running.
    text5 = set_key(text4, "cache2", "protocol", "postgres")
    reload(rp, text5)
    assert "service cache2: protocol changed: that needs a restart" in rp.logtext()
    assert redis.Redis(host="127.0.0.1", port=added, socket_timeout=10).ping()
    rp.ports.pop("postgres")


def test_post_reload_needs_the_token_and_says_what_is_wrong(start_repoint, tmp_path):
    """POST /reload: refused without admin_token (403) or with another (401); a file that fails the check is
    answered 400 with its file:line messages and changes nothing; a good one is applied."""
    import json
    import urllib.error
    import urllib.request

    def post(token=None):
        req = urllib.request.Request("http://127.0.0.1:%d/reload" % rp.admin_port, data=b"", method="POST")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    rp = start_repoint()
    assert post()[0] == 403
    with open(rp.config_path) as f:
        good = f.read().replace("[repoint]\n", "[repoint]\nadmin_token = t0ken\n", 1)
    reload(rp, good)  # the token itself comes with a SIGHUP
    assert post()[0] == 401 and post("wrong")[0] == 401
    bad = set_key(good, "redis", "probe_interval", "fast")
    line = next(i + 1 for i, ln in enumerate(bad.splitlines()) if ln.startswith("probe_interval = fast"))
    with open(rp.config_path, "w") as f:
        f.write(bad)
    status, body = post("t0ken")
    assert status == 400 and f"{rp.config_path}:{line}: probe_interval" in body["error"], body
    n = rp.logtext().count("configuration reloaded from")
    with open(rp.config_path, "w") as f:
        f.write(set_key(good, "redis", "probe_interval", "200ms"))
    status, body = post("t0ken")
    assert status == 202 and body["status"] == "reloading", body
    wait_for(lambda: rp.logtext().count("configuration reloaded from") > n, 10, what="the reload")
    assert redis.Redis(host="127.0.0.1", port=rp.ports["redis"], socket_timeout=10).ping()
