"""An ElastiCache/MemoryDB IAM front for a lab Redis: what a cluster with IAM authentication does
at the door, checked with code that shares nothing with repoint's signer (the emulator's SigV4
verifier, labkit/awsemu/sigv4.py, hmac/hashlib).

A Redis 7.0 server cannot check a presigned SigV4 token itself (no external authentication before
7.2's module callbacks), and the token changes every time it is made, so the lab cannot rotate an
ACL password to it either. The front stands in front of a real redis-server instead, TLS-only like
the managed service: a connection's first command must be `AUTH user token` (or `HELLO ... AUTH
user token`); the token must be a presigned `connect` for this resource (the replication group,
serverless cache or cluster name as its host), `User` = the AUTH user, signed for the expected
service and region by known credentials, and not expired (X-Amz-Expires <= 900 from X-Amz-Date).
Then the front logs in to the server as that user with the lab's own password for it and relays
the connection one command at a time; a later AUTH is checked the same way and answered by the
front (the re-authentication ElastiCache asks for before 12 hours). Every decision is recorded
(`events`), with the reason for a refusal; tokens never are (a short hash at most).
"""
import calendar
import hashlib
import socket
import ssl
import threading
import time
import urllib.parse

from .awsemu import sigv4

MAX_EXPIRES = 900


class RespError(Exception):
    pass


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise RespError("line too long")
            self._fill()
        i = self.buf.index(b"\r\n")
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def command(self):
        """One client command: (argv as bytes, its raw bytes)."""
        first = self.line()
        if not first.startswith(b"*"):
            return first.split(), first + b"\r\n"
        raw, argv = first + b"\r\n", []
        for _ in range(int(first[1:])):
            hdr = self.line()
            if not hdr.startswith(b"$"):
                raise RespError("expected a bulk string")
            arg = self.exact(int(hdr[1:]) + 2)
            raw += hdr + b"\r\n" + arg
            argv.append(arg[:-2])
        return argv, raw

    def reply(self):
        """One whole server reply, raw."""
        first = self.line()
        raw, t = first + b"\r\n", first[:1]
        if t in (b"$", b"=", b"!"):
            n = int(first[1:])
            if n >= 0:
                raw += self.exact(n + 2)
        elif t in (b"*", b"~", b">", b"%", b"|"):
            n = int(first[1:])
            for _ in range(max(n, 0) * (2 if t in (b"%", b"|") else 1)):
                raw += self.reply()
        return raw


class IamFront:
    """Listens on 127.0.0.1:port (TLS with cert/key) in front of the Redis at backend (host, port).

    resource: "elasticache:ID" | "elasticache-serverless:NAME" | "memorydb:NAME"; users: {user: the
    password the backend's ACL has for it}; credentials: {akid: {"secret": S, "token": T or None}};
    region: what tokens must be signed for; clock_skew: seconds added to the front's clock (a
    positive value makes fresh tokens look old)."""

    def __init__(self, port, cert, key, backend, resource, users, credentials, region, clock_skew=0.0):
        self.port, self.backend, self.users, self.credentials = port, backend, users, credentials
        self.kind, _, self.name = resource.partition(":")
        self.service = "memorydb" if self.kind == "memorydb" else "elasticache"
        self.region, self.clock_skew = region, clock_skew
        self.events = []          # (time, kind, detail): "login", "relogin", "refused"
        self.lock = threading.Lock()
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.stopping = False
        self.conns = set()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    # ---- what the service checks ----
    def check(self, user, token):
        """None when `token` lets `user` in, else why not."""
        head, sep, query = token.partition("/?")
        if not sep:
            return "not a presigned URL"
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if head != self.name:
            return "the token is for %r, not %r" % (head, self.name)
        if q.get("Action") != "connect":
            return "Action is %r, not connect" % q.get("Action")
        if q.get("User") != user:
            return "the token is for user %r, not %r" % (q.get("User"), user)
        serverless = q.get("ResourceType") == "ServerlessCache"
        if serverless != (self.kind == "elasticache-serverless"):
            return "ResourceType says %s" % ("serverless" if serverless else "not serverless")
        try:
            expires = int(q.get("X-Amz-Expires", ""))
            signed_at = calendar.timegm(time.strptime(q.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "no valid X-Amz-Expires/X-Amz-Date"
        now = time.time() + self.clock_skew
        if expires > MAX_EXPIRES:
            return "X-Amz-Expires %d is more than %d" % (expires, MAX_EXPIRES)
        if now > signed_at + expires:
            return "expired %d s ago" % (now - signed_at - expires)
        if signed_at > now + 300:
            return "signed in the future"
        try:
            auth = sigv4.verify("GET", "/", query, [("host", head.lower())], b"", self.credentials,
                                now=now, max_skew=expires + 1)
        except sigv4.AuthError as e:
            return "%s: %s" % (e.code, e.message)
        if auth.service != self.service:
            return "signed for service %s, not %s" % (auth.service, self.service)
        if auth.region != self.region:
            return "signed for region %s, not %s" % (auth.region, self.region)
        if user not in self.users:
            return "no IAM-enabled user %r" % user
        return None

    def _note(self, kind, detail):
        with self.lock:
            self.events.append((time.time(), kind, detail))

    def count(self, kind):
        with self.lock:
            return sum(1 for e in self.events if e[1] == kind)

    def refusals(self):
        with self.lock:
            return [e[2] for e in self.events if e[1] == "refused"]

    # ---- the door ----
    @staticmethod
    def _auth_args(argv):
        """(user, token) from AUTH user token / HELLO ver AUTH user token, else None."""
        words = [a.lower() for a in argv]
        if words[:1] == [b"auth"] and len(argv) == 3:
            return argv[1].decode("utf-8", "replace"), argv[2].decode("utf-8", "replace")
        if words[:1] == [b"hello"] and b"auth" in words and words.index(b"auth") + 2 < len(argv):
            i = words.index(b"auth")
            return argv[i + 1].decode("utf-8", "replace"), argv[i + 2].decode("utf-8", "replace")
        return None

    def _verify(self, argv, kind):
        who = self._auth_args(argv)
        if who is None:
            return None, "expected AUTH user token"
        why = self.check(*who)
        tag = hashlib.sha256(who[1].encode()).hexdigest()[:8]
        if why is None:
            self._note(kind, "%s token %s" % (who[0], tag))
            return who[0], None
        self._note("refused", "%s: %s" % (who[0], why))
        return None, why

    def _serve(self, raw_sock):
        try:
            csock = self.ctx.wrap_socket(raw_sock, server_side=True)
        except (ssl.SSLError, OSError):
            raw_sock.close()
            return
        up = None
        try:
            rd = _Reader(csock)
            argv, _ = rd.command()
            user, why = self._verify(argv, "login")
            if user is None:
                csock.sendall(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                              if why != "expected AUTH user token" else b"-NOAUTH Authentication required.\r\n")
                return
            up = socket.create_connection(self.backend, timeout=10)
            up.settimeout(None)
            urd = _Reader(up)
            up.sendall(b"*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                       % (len(user), user.encode(), len(self.users[user]), self.users[user].encode()))
            ok = urd.reply()
            if not ok.startswith(b"+"):
                csock.sendall(b"-ERR the lab front could not log in to its server\r\n")
                return
            if argv[0].lower() == b"hello":
                rest = [a for a in argv[:2]]  # HELLO ver, without the AUTH part
                up.sendall(b"*%d\r\n" % len(rest) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in rest))
                csock.sendall(urd.reply())
            else:
                csock.sendall(b"+OK\r\n")
            while True:
                argv, raw = rd.command()
                if argv and argv[0].lower() in (b"auth", b"hello") and self._auth_args(argv) is not None:
                    user2, why = self._verify(argv, "relogin")
                    csock.sendall(b"+OK\r\n" if user2 is not None else
                                  b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
                    continue
                up.sendall(raw)
                csock.sendall(urd.reply())
        except (EOFError, OSError, RespError, ValueError, ssl.SSLError):
            pass
        finally:
            for s in (csock, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()

    def stop(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        self.thread.join(10)
