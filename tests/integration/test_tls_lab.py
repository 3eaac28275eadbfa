"""The failover scenarios of test_failover.py, unchanged, on a lab whose servers serve TLS only (`scripts/lab up
--tls`: Redis with its plaintext port off and TLS replication, Postgres with hostssl only, MariaDB with
require_secure_transport and TLS replication), repoint reaching them with tls = verify-full against the lab's CA
and the applications talking plaintext to repoint on loopback. The same bounds as on the plaintext lab."""
import json
import tempfile
import urllib.request

import psycopg2
import pymysql
import pytest
import redis

from labkit import Lab
from labkit.clients import ENGINES
from test_auth import test_a_switchover_costs_persistent_connections_nothing  # noqa: F401 - auth = repoint, over TLS
from test_failover import (ENGINE_NAMES, test_crash_of_the_writer_holds_new_clients_then_recovers,  # noqa: F401
                           test_sessions_on_the_old_writer_are_drained, test_switchover_keeps_writes_flowing,
                           test_two_writers_never_both_receive_writes)


@pytest.fixture(scope="module")
def lab():
    """This module's lab (it overrides the plaintext one for the tests above)."""
    lab = Lab(tempfile.mkdtemp(prefix="repoint-tlslab-"), tls=True)
    try:
        lab.up(ENGINE_NAMES)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_member_connection_is_tls(lab, start_repoint, name):
    """The probes found each writer over TLS, and a client's session reaches it over TLS too."""
    rp = start_repoint()
    assert rp.writer(name) == "127.0.0.1:%d" % lab.primary(name).port
    engine = ENGINES[name]
    c = engine.connect(rp.ports[name])
    engine.echo(c, "over tls")
    with urllib.request.urlopen("http://127.0.0.1:%d/clients" % rp.admin_port, timeout=5) as r:
        seen = [x for x in json.load(r)["clients"] if x["service"] == name]
    engine.close(c)
    assert seen and all(x.get("member_tls", "").startswith("TLSv1.") for x in seen), seen


def plaintext(name, port):
    """A client that does not try TLS (libpq's default, sslmode=prefer, would)."""
    if name == "postgres":
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", sslmode="disable",
                                connect_timeout=5)
    return ENGINES[name].connect(port, timeout=5)


def refused(name, exc):
    """How each server turns a plaintext client away (MariaDB 10.11 answers require_secure_transport with
    'Access denied', where MySQL says 'Connections using insecure transport are prohibited')."""
    if name == "postgres":
        return isinstance(exc, psycopg2.OperationalError) and "no encryption" in str(exc)
    if name == "mysql":
        return isinstance(exc, pymysql.err.OperationalError) and exc.args[0] in (1045, 3159)
    return isinstance(exc, redis.ConnectionError)   # a TLS port only: the plaintext hello ends the connection


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_a_node_refuses_plaintext_and_takes_the_same_client_over_tls(lab, name):
    engine = ENGINES[name]
    for node in lab.nodes(name):
        with pytest.raises(Exception) as exc:
            plaintext(name, node.port)
        assert refused(name, exc.value), (node.name, repr(exc.value))
        c = engine.connect_node(node)
        assert engine.server_port(c) == node.port
        engine.close(c)
