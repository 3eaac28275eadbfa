"""The failover scenarios of test_failover.py, unchanged, on a lab whose servers serve TLS only (`scripts/lab up
--tls`: Redis with its plaintext port off and TLS replication, Postgres with hostssl only, MariaDB with
require_secure_transport and TLS replication), repoint reaching them with tls = verify-full against the lab's CA
and the applications talking plaintext to repoint on loopback. The same bounds as on the plaintext lab."""
import json
import tempfile
import urllib.request

import pytest

from labkit import Lab
from test_auth import test_a_switchover_costs_persistent_connections_nothing  # noqa: F401 - auth = repoint, over TLS
from test_failover import (test_crash_of_the_writer_holds_new_clients_then_recovers,  # noqa: F401 - collected here
                           test_switchover_keeps_writes_flowing)


@pytest.fixture(scope="module")
def lab():
    """This module's lab (it overrides the plaintext one for the tests above)."""
    d = tempfile.mkdtemp(prefix="repoint-tlslab-")
    lab = Lab(d)
    lab.up(["postgres", "mysql", "redis"], tls=True)
    try:
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("name", ["postgres", "mysql", "redis"])
def test_every_member_connection_is_tls(lab, start_repoint, name):
    """The probes found each writer over TLS, and a client's session reaches it over TLS too."""
    from labkit.clients import ENGINES
    rp = start_repoint()
    assert rp.writer(name) == "127.0.0.1:%d" % lab.primary(name).port
    engine = ENGINES[name]
    c = engine.connect(rp.ports[name])
    engine.echo(c, "over tls")
    with urllib.request.urlopen("http://127.0.0.1:%d/clients" % rp.admin_port, timeout=5) as r:
        seen = [x for x in json.load(r)["clients"] if x["service"] == name]
    engine.close(c)
    assert seen and all(x.get("member_tls", "").startswith("TLSv1.") for x in seen), seen
