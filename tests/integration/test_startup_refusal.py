"""A writer that refuses new sessions while it still answers its probe (a Postgres "smart"
shutdown keeps the sessions it has, the probe's among them, and answers every new one with
57P03): a client that connects then is held -- its start replayed elsewhere, never refused --
and lands on the replica promoted meanwhile."""
import os
import subprocess
import tempfile
import threading

import psycopg2

from labkit import Lab
from conftest import Repoint, free_port, wait_for


def test_a_session_refused_at_its_start_is_replayed_on_the_new_writer(tmp_path):
    d = tempfile.mkdtemp(prefix="repoint-lab-smart-")
    os.chmod(d, 0o755)
    lab = Lab(d)
    lab.up(["postgres"])
    rp = None
    try:
        cfg = str(tmp_path / "smart.ini")
        admin = free_port()
        ports = lab.write_config(cfg, admin=f"127.0.0.1:{admin}", hold_timeout="30s")
        rp = Repoint(cfg, admin, ports)
        wait_for(lambda: rp.status(), 10, what="admin API")
        old = lab.primary("postgres")
        rp.wait_writer("postgres", f"127.0.0.1:{old.port}")
        target = next(n for n in lab.nodes("postgres") if n.name != old.name)

        ctl = ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", old.dir, "stop", "-m", "smart", "-W"]
        if os.geteuid() == 0:
            ctl = ["runuser", "-u", "postgres", "--"] + ctl
        subprocess.run(ctl, check=True, capture_output=True, timeout=30)
        # The old writer now refuses every new session, yet its probe session still says "writer".
        result = {}

        def client():
            try:
                c = psycopg2.connect(host="127.0.0.1", port=ports["postgres"], user="postgres", dbname="postgres",
                                     connect_timeout=30)
                with c.cursor() as cur:
                    cur.execute("SELECT inet_server_port(), pg_is_in_recovery()")
                    result["ok"] = cur.fetchone()
                c.close()
            except Exception as e:  # what the application would see
                result["error"] = repr(e)

        t = threading.Thread(target=client)
        t.start()
        wait_for(lambda: rp.service("postgres")["counters"]["restarted"] >= 1, 10,
                 what="the refused start to be seen")
        assert t.is_alive(), result   # held, not refused
        lab.promote("postgres", target.name)
        t.join(30)
        assert result.get("ok") == (target.port, False), result
    finally:
        if rp is not None:
            rp.stop()
        lab.down()
