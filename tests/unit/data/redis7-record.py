#!/usr/bin/python3
"""Records what test_keyspec checks keyspec.c against, from a real redis-server (Debian 12's 7.0.15):

  redis7-command.resp   with --reply: the raw bytes of its COMMAND reply (RESP2; the entries come in
                        the order of the server's hash table, not the same twice -- the fuzz seeds
                        words-* pick commands by their place in the file that is there)
  redis7-getkeys.tsv    commands, and the keys the server itself finds in them (COMMAND GETKEYS),
                        as the slot keyspec_slot must give: one line a command,
                        <expected>\t<arg0>\t<arg1>..., expected one of
                          <slot>    all its keys hash there
                          cross     its keys are in more than one slot
                          nokeys    the command has none ("The command has no key arguments")
                          none      the server found none in these arguments ([]: EVAL s 0, and EVAL
                                    with a numkeys EVAL itself refuses)
                          invalid   the server calls its arguments invalid for its key specs (an
                                    empty variadic range, numkeys 0 beside other keys, numkeys past
                                    the end): anything but KEYSPEC_UNKNOWN
                        "" is written as <empty>.

Commands whose keys keyspec.c finds differently on purpose are left out of the random part (the test
checks them by hand): the sharded Pub/Sub commands (their channels are "not_key" for GETKEYS, but the
cluster routes them by slot), SORT/SORT_RO and MIGRATE (specs Redis cannot apply itself: keyspec.c
takes the legacy first key); so are commands of a wrong arity (refused before routing), and
one-word commands (COMMAND GETKEYS takes none).

  /usr/bin/python3 tests/unit/data/redis7-record.py [--reply]    (redis-server on PATH; a free port)
"""
import binascii
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Commands worth having whatever the random part draws: every key-spec shape of 7.0.
CURATED = """
GET foo
SET foo v
SET {user1}.a v GET
DEL a b c
DEL {t}a {t}b {t}c
MGET {user1}.a {user1}.b
MGET a b
MSET {m}a 1 {m}b 2
MSET {m}a b {m}c d
EVAL s 0
EVAL s 1 k
EVAL s 2 {x}1 {x}2 notakey
EVAL s 2 a b
EVALSHA_RO s 1 k arg
FCALL f 1 k arg
ZUNIONSTORE d 2 a b
ZUNIONSTORE {z}d 2 {z}a {z}b WEIGHTS 1 2
ZINTERCARD 2 {z}a {z}b LIMIT 1
ZDIFF 2 a b WITHSCORES
SINTERCARD 2 {s}a {s}b
XREAD COUNT 1 STREAMS s1 s2 0 0
XREAD COUNT 1 STREAMS {s}1 {s}2 0 0
XREAD BLOCK 0 STREAMS {s}1 $
XREADGROUP GROUP g c COUNT 1 STREAMS {s}1 {s}2 > >
XREADGROUP GROUP g c STREAMS a b > >
LMPOP 2 {l}a {l}b LEFT
BLMPOP 0 2 {l}a {l}b LEFT COUNT 2
BZMPOP 0 1 z MIN
GEORADIUS g 0 0 1 km
GEORADIUS {g}k 0 0 1 km STORE {g}d
GEORADIUS {g}k 0 0 1 km STOREDIST {g}d
GEORADIUS g 0 0 1 km STORE d
GEORADIUSBYMEMBER {g}k m 1 km STORE {g}d
GEOSEARCHSTORE {g}d {g}s FROMMEMBER m BYRADIUS 1 km
BITOP AND {b}d {b}a {b}c
BITOP AND d a
SMOVE {s}a {s}b m
SMOVE a b m
LCS {l}a {l}b
RENAME {r}a {r}b
COPY a b
LMOVE {l}a {l}b LEFT RIGHT
BLPOP {l}a {l}b 0
BRPOPLPUSH {l}a {l}b 0
PFMERGE {p}d {p}a {p}b
SUNIONSTORE {u}d {u}a {u}b
ZRANGESTORE {z}d {z}s 0 1
OBJECT ENCODING k
OBJECT FREQ k
XINFO STREAM k
XINFO GROUPS k
XGROUP CREATE s g $
MEMORY USAGE k
MEMORY USAGE k SAMPLES 5
CLIENT LIST
CONFIG GET maxmemory
COMMAND INFO get
PING
ECHO hi
WATCH {w}a {w}b
EXPIRE k 10
TOUCH a
EXISTS {e}a {e}b
XADD s * f v
XAUTOCLAIM s g c 0 0
RESTORE k 0 x
"""

WORDS = ["{a}1", "{a}2", "{a}3", "b", "c", "d", "0", "1", "2", "3", "5", "-1", "x", "STREAMS", "streams",
         "KEYS", "STORE", "STOREDIST", "BY", "GET", "LEFT", "COUNT", "WITHSCORES", "WEIGHTS", "", "m"]
DELIBERATE = {"spublish", "ssubscribe", "sunsubscribe", "sort", "sort_ro", "migrate"}


def enc(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def raw(self):
        """One reply's bytes, as they came."""
        out = b""
        pending = 1
        while pending:
            line = self.f.readline()
            out += line
            pending -= 1
            if line[:1] == b"$" and int(line[1:-2]) >= 0:
                out += self.f.read(int(line[1:-2]) + 2)
            elif line[:1] == b"*" and int(line[1:-2]) > 0:
                pending += int(line[1:-2])
        return out

    def read(self):
        line = self.f.readline()
        t, body = line[:1], line[1:-2]
        if t == b"-":
            return ("err", body.decode())
        if t in (b"+", b":"):
            return body.decode()
        if t == b"$":
            n = int(body)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode()
        if t == b"*":
            return [self.read() for _ in range(int(body))]
        raise ValueError(line)


def parse(b, i=0):
    t = b[i:i + 1]
    j = b.index(b"\r\n", i)
    body, i = b[i + 1:j], j + 2
    if t in (b"+", b"-"):
        return body.decode(), i
    if t == b":":
        return int(body), i
    if t == b"$":
        return b[i:i + int(body)].decode(), i + int(body) + 2
    out = []
    for _ in range(int(body)):
        v, i = parse(b, i)
        out.append(v)
    return out, i


def slot(key):
    b = key.encode()
    o = b.find(b"{")
    if o >= 0:
        c = b.find(b"}", o + 1)
        if c > o + 1:
            b = b[o + 1:c]
    return binascii.crc_hqx(b, 0) & 16383


def arity_ok(arity, argc):
    return argc == arity if arity >= 0 else argc >= -arity


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                c = Conn(port)
                break
            except OSError:
                time.sleep(0.1)
        c.s.sendall(b"*1\r\n$7\r\nCOMMAND\r\n")
        reply = c.raw()
        if "--reply" in sys.argv[1:]:
            with open(os.path.join(HERE, "redis7-command.resp"), "wb") as f:
                f.write(reply)
        entries, _ = parse(reply)
        cmds = []  # (words naming it, arity)
        for e in entries:
            if e[9]:
                cmds += [(x[0].split("|"), x[1]) for x in e[9]]
            else:
                cmds.append(([e[0]], e[1]))
        cmds.sort()  # the reply's order is its hash table's: not the same twice
        rng = random.Random(12)
        tests = [line.split() for line in CURATED.strip().splitlines()]
        while len(tests) < 1600:
            name, arity = rng.choice(cmds)
            if name[0] in DELIBERATE:
                continue
            args = list(name) + [rng.choice(WORDS) for _ in range(rng.randint(0, 9))]
            if arity_ok(arity, len(args)):
                tests.append(args)
        c.s.sendall(b"".join(enc(["COMMAND", "GETKEYS"] + a) for a in tests))
        lines = []
        for a in tests:
            ans = c.read()
            if isinstance(ans, tuple):
                if "no key arguments" in ans[1]:
                    exp = "nokeys"
                elif "Invalid arguments" in ans[1]:
                    exp = "invalid"
                elif "'command|getkeys'" in ans[1]:
                    continue  # one word: GETKEYS cannot be asked about it
                else:
                    sys.exit("%s: %s" % (a, ans[1]))
            else:
                slots = {slot(k) for k in ans}
                exp = "none" if not slots else str(slots.pop()) if len(slots) == 1 else "cross"
            lines.append("\t".join([exp] + [w if w else "<empty>" for w in a]))
        with open(os.path.join(HERE, "redis7-getkeys.tsv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("COMMAND: %d bytes, %d commands; %d GETKEYS vectors" % (len(reply), len(entries), len(lines)))
    finally:
        srv.terminate()
        srv.wait()
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
