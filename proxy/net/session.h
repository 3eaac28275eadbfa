/* session.h - one client connection paired with (at most) one upstream connection.
 *
 *   accept ─▶ HELD ──writer known──▶ CONNECTING ──connected──▶ ACTIVE ──drain──▶ DRAINING ─▶ closed
 *               │  ▲                     │ refused: back to HELD                 (at idle, or at
 *               │  └─────────────────────┘                                       drain_timeout)
 *               └──hold_timeout──▶ REFUSING (native error, then close)
 *
 * Bytes are forwarded unchanged; each direction stops reading while the other side's output
 * holds more than a high watermark (backpressure, not unbounded buffering). A held client's bytes
 * stay in its input buffer (bounded the same way) until it is connected. Every state change goes
 * through one function that logs it; a session is freed from one place only. */
#ifndef REPOINT_SESSION_H
#define REPOINT_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "config.h"
#include "net/conn.h"
#include "proto/proto.h"
#include "topology.h"

struct service;
struct event;
struct evbuffer;

enum session_state {
	SESSION_HELD,
	SESSION_CONNECTING,
	SESSION_ACTIVE,
	SESSION_DRAINING,
	SESSION_REFUSING,
	SESSION_CLOSING,
};

enum session_refusal { REFUSE_HOLD_TIMEOUT, REFUSE_SHUTDOWN, REFUSE_TLS_REQUIRED };

/* One socket of a session. Reads go straight into the other side's `out` (one read of up to
 * 64 KiB per wake-up); writes are attempted at once and only what the kernel does not take waits
 * for writability, so a request costs a read and a write, no epoll_ctl. */
struct session_side {
	struct net_conn conn;        /* the socket (conn.fd, -1 when none) and its transport */
	struct event *rev;           /* EV_READ | EV_PERSIST, added while reading */
	struct event *wev;           /* EV_WRITE | EV_PERSIST, added while `out` waits for the kernel */
	struct evbuffer *out;        /* bytes owed to this socket */
	bool reading, writing;
	bool paused;                 /* reading stopped: the other side's `out` is above the high water */
	bool handshaking;            /* a client's TLS handshake: what it is owed waits in `out` */
};

/* Fields are session.c's; the service reads `state`, `member` and walks its lists through `all`
 * and `held`. */
struct session {
	struct service *svc;
	TAILQ_ENTRY(session) all;    /* every session of the service */
	TAILQ_ENTRY(session) held;   /* sessions waiting for a writer */
	bool in_held;
	enum session_state state;
	int member;                  /* upstream member, -1 when none */
	uint64_t id;
	struct session_side client;
	struct session_side upstream;
	struct evbuffer *client_in;  /* what the client sent before a server could take it (held,
	                                connecting, refusing); NULL once forwarded */
	struct event *timer;         /* hold, connect, drain or refuse deadline */
	int connect_errno;           /* connect() failed at once: reported from the loop */
	int64_t accepted_ms;         /* monotonic */
	int64_t hold_deadline_ms;    /* accepted + hold_timeout */
	bool client_eof;             /* client closed its side: flush to upstream, then close */
	enum session_refusal refusal;
	/* Redis: the request in flight, kept so that a server that refuses it as read-only (a
	 * demoted writer) can be replaced by the new writer and the request sent again. Captured from
	 * an idle point on, only while it stays small. */
	uint8_t *retry;
	uint32_t retry_len, retry_cap;
	bool retry_valid;
	bool replay;                 /* send `retry` first once connected (a migrated request) */
	uint8_t retry_streak;        /* read-only refusals retried in a row */
	bool starting;               /* before the server accepted the session: the client's bytes are
	                                kept in `retry`, so a refusal ("shutting down") can be replayed
	                                to another server */
	uint8_t swallow;             /* bytes of the server's next answer the client already got (the
	                                'N' to a replayed SSLRequest) */
	uint16_t restarts;           /* startup replays so far */
	uint32_t replay_rest;        /* offset in `retry` still to send once the swallowed answer came */
	int avoid_member;            /* refused this session's start a moment ago: not before ... */
	int64_t avoid_until_ms;      /* ... this time (monotonic) */
	/* multiplex = on (Redis): the session starts `shared` -- its commands travel on the member's
	 * shared connection (net/shared.h), client_in holds what is not sent yet (a partial command, or
	 * everything from a command that needs a connection of its own on). Such a command -- or
	 * replies of more than SESSION_SHARE_MAX bytes on average, which would hold up everyone else's
	 * on the shared stream -- sets `unshare`: once nothing is in flight the session gets its own
	 * connection (pinned) for good. */
	bool shared;
	bool unshare;
	bool resp3;                  /* said HELLO 3: on the RESP3 shared connection */
	bool barrier;                /* holds the service's barrier (service_barrier) */
	bool tls_asking;             /* connecting: the member's answer to the TLS request awaited */
	bool opaque_seen;            /* its bytes stopped being readable to the tracker (counted once) */
	bool client_sniff;           /* listen_tls = on (TLS from the first byte): its first byte
	                                tells a TLS client (a handshake record) from a plaintext one */
	bool greet;                  /* pinned: its own connection says HELLO 3 (a RESP3 session) or
	                                PING first, its reply not passed on, before the client's bytes */
	struct shared *sh;           /* the connection its commands in flight are on; NULL when none */
	bool sh_write;               /* ... the one for writes (reads may ride along) */
	uint32_t shared_out;         /* commands in flight */
	size_t shared_bytes;         /* their bytes */
	size_t shared_need;          /* client_in must hold this much before a command can be complete */
	size_t shared_reply;         /* bytes of the reply being received so far */
	/* Waiting for the member's own word on its role (service_confirm_role) before acting on what
	 * the data path saw: a read-only refusal of a request that could be sent again (the reply is
	 * held back in `held_reply`, both sides paused), or the server closing an idle session (the
	 * client is held meanwhile). */
	uint8_t confirming;          /* enum session_confirm (session.c) */
	int confirm_member;
	struct evbuffer *held_reply;
	bool cancel_checked;         /* the client's first bytes were looked at for a cancel request */
	bool cancel;                 /* a cancel request: forwarded once to the member of the session
	                                it names, then closed; never replayed, never a failure */
	bool upstream_shut;          /* the client half-closed: the server's write side is shut too */
	struct proto_state ps;
	char peer[48];
};

TAILQ_HEAD(session_list, session);

const char *session_state_name(enum session_state st);

/* Takes ownership of the accepted, non-blocking fd; routes the client at once (or holds it).
 * NULL (fd closed) on allocation failure. */
struct session *session_accept(struct service *svc, int fd, const struct sockaddr *peer);

/* The service has a writer (again): a held session connects now. */
void session_release(struct session *s);
/* Drain a session attached to a lost member: at once (immediate) or at its next idle point
 * (graceful), at the latest after timeout_ms. */
void session_drain(struct session *s, enum drain_mode mode, int64_t timeout_ms);
/* Refuse a held session now with the protocol's native error (e.g. on shutdown). */
void session_refuse(struct session *s, enum session_refusal why);
/* The answer to service_confirm_role for the member this session waits on: `role` is its own
 * word (ROLE_WRITER/ROLE_READER), ROLE_UNKNOWN when alive but it could not say, ROLE_DOWN when the
 * check failed; `is_writer`: the service routes writes to it. */
void session_confirmed(struct session *s, enum role role, bool is_writer);
/* Close both sides now, without flushing (the loop is going away). */
void session_destroy(struct session *s);

/* From the shared connection `s` has commands in flight on: n bytes of its replies, in which
 * `replies` replies end (the last may continue in the next call), and `done_bytes` of its
 * commands are answered in full. */
void session_shared_reply(struct session *s, const uint8_t *p, size_t n, uint32_t replies, uint32_t done_bytes);
/* The service's barrier was lifted: send what waited. */
void session_shared_kick(struct session *s);
/* What the client is owed and has not read yet (bytes). */
size_t session_owed(const struct session *s);
/* That connection failed: the commands in flight may or may not have run. */
void session_shared_lost(struct session *s, const char *why);
/* That connection failed before any of `s`'s commands in flight were written to it: they did not
 * run, and come back (`unsent`, owned by the callee) to be sent on the next connection. */
void session_shared_unsent(struct session *s, struct evbuffer *unsent);

#endif
