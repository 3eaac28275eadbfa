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
#include "net/txlog.h"
#include "proto/proto.h"
#include "topology.h"

struct event;
struct evbuffer;
struct net_tls;
struct shared;
struct session;

#define SESSION_UNMOVABLE_REASONS 12

/* Counters a session bumps (the service shows them in /status and /metrics). */
struct service_counters {
	uint64_t accepted;
	uint64_t closed;
	uint64_t hold_timeouts;      /* clients refused after hold_timeout */
	uint64_t held_total;         /* clients that had to wait for a writer */
	uint64_t drained;            /* sessions closed by a drain */
	uint64_t drained_idle;       /* ... at an idle point */
	uint64_t drained_timeout;    /* ... at drain_timeout */
	uint64_t upstream_connect_failures;
	uint64_t client_tls_failures;  /* listen_tls: clients whose handshake failed */
	uint64_t client_auth_failures; /* auth = repoint: clients refused at authentication */
	uint64_t member_logins;      /* auth = repoint, Redis: repoint's logins to members (first and again) */
	uint64_t member_login_failures; /* ... refused by the member */
	uint64_t relogins;           /* ... logins again on a long-lived connection */
	uint64_t pooled;             /* pool_size: server connections kept when their client left */
	uint64_t pool_reused;        /* ... given to a new client instead of a new login */
	uint64_t outcome_unknown;    /* requests in flight when their server went away, answered so */
	uint64_t opaque_sessions;    /* sessions repoint could not read (a client's own TLS passed through) */
	uint64_t migrated;           /* sessions moved to another server without the client noticing */
	uint64_t retried;            /* requests refused as read-only by an old writer, sent again */
	uint64_t tx_replayed;        /* transactions refused part-way by an old writer, run again on the new one */
	uint64_t restarted;          /* session starts refused by a server (shutting down), replayed */
	uint64_t shared_commands;    /* multiplex: commands sent over shared connections */
	uint64_t pinned;             /* multiplex: sessions that needed a connection of their own */
	uint64_t bytes_client_to_server;
	uint64_t bytes_server_to_client;
	uint64_t bytes_spliced;      /* of those either way, moved by splice(2) without a copy (plain, large values) */
	/* Sessions closed at a failover, at an idle point, because what they set on their server
	 * cannot be carried to another (proto->unmovable_reason; "replay_full" when the settings to
	 * replay are out of room), per reason: the first SESSION_UNMOVABLE_REASONS seen. */
	struct {
		const char *reason;
		uint64_t n;
	} unmovable[SESSION_UNMOVABLE_REASONS];
	struct histogram hold_wait;     /* held -> connected to a writer (seconds) */
	struct histogram connect_time;  /* upstream connect, TLS handshake included (seconds) */
};

struct session_host;

/* A server connection kept for the next client (pool_size, auth = repoint): logged in, idle, with
 * what its login said and its cancel key. */
struct session_pooled {
	struct net_conn conn;
	struct evbuffer *params;     /* owned by whoever holds the connection */
	uint8_t member_key[PROTO_KEY_MAX];
	bool has_key;
	int64_t born_ms;             /* when it connected (monotonic): server_lifetime counts from there */
	struct evbuffer *reset;      /* its session set something: what resets it (proto_login_ops.reset_request),
	                                sent before another client takes it (NULL: nothing to); pool_put takes
	                                it with the connection, the caller frees it otherwise */
};
/* What a session asks of, and tells, the service that accepted it. service.c implements it and
 * hands it over with each client (session_accept): the data path names nothing of service.c, so
 * calls run one way, from the service down to its sessions. */
struct session_host_ops {
	/* where to go */
	int (*pick)(struct session_host *h);  /* the member for a new client now, or -1: hold it */
	/* cluster = on: the member (its shard's primary) for a command on `slot` now, or -1: hold it;
	 * slot -1: a command without keys (any shard's primary). slot: the slot of the complete command
	 * p[0..n), or a KEYSPEC_* code (proto/keyspec.h: no keys, cross-slot, unknown, malformed). */
	int (*pick_slot)(struct session_host *h, int slot);
	int (*slot)(struct session_host *h, const uint8_t *p, size_t n);
	/* cluster = on: `member`, a shard's primary, answered p[0..n) -- a MOVED naming another shard's
	 * confirmed primary (a resharding moved the slot): taken, true (the command did not run: send
	 * it again). False otherwise (the map is asked for again soon). */
	bool (*slot_moved)(struct session_host *h, int member, const uint8_t *p, size_t n);
	/* cluster = on: `member` answered p[0..n) with ASK (the slot is migrating and the key has left):
	 * the member it names, another shard's confirmed primary, where the command goes once after
	 * ASKING; -1 for any other. */
	int (*slot_asked)(struct session_host *h, int member, const uint8_t *p, size_t n);
	/* cluster = on: the first slot of each shard that serves one, ascending, at most max of them
	 * (a shard's name for a command sent to every shard, and in a SCAN cursor); their number. */
	int (*shard_starts)(struct session_host *h, int *first, int max);
	const struct sockaddr *(*member_addr)(struct session_host *h, int member, socklen_t *len);
	const char *(*member_str)(struct session_host *h, int member);
	const char *(*member_tls_name)(struct session_host *h, int member);
	struct net_tls *(*tls)(struct session_host *h);         /* to the members; NULL: plain */
	struct net_tls *(*listen_tls)(struct session_host *h);  /* for a new TLS client */
	enum listen_tls_mode (*listen_tls_mode)(struct session_host *h);
	struct auth_users *(*auth_users)(struct session_host *h);  /* auth = repoint: auth_file's, or NULL */
	/* auth = repoint where logging in is one command (proto->login_command, Redis): appends to
	 * out the command logging a new connection to `member` in and returns 1; 0 when repoint does
	 * not log in; -1 with the reason (never the secret) when there is no credential now. */
	int (*member_login)(struct session_host *h, int member, struct evbuffer *out, char *why, size_t whylen);
	/* auth = repoint with a login of the protocol's (proto->login, Postgres): *password gets what
	 * the login to `member` as `user` proves itself with instead of auth_file's secret (malloc'ed;
	 * the caller wipes and frees it) and 1; 0 when none is configured; -1 with the reason when
	 * there is none now. */
	int (*member_password)(struct session_host *h, int member, const char *user, char **password, char *why,
			       size_t whylen);
	/* pool_size: keep `p` (its connection moved in, params owned) for a later client whose start is
	 * startup[0..n) -- false when not (full, off, not the writer): the caller still owns it; take
	 * one back (true: *out filled, the caller owns it now). */
	bool (*pool_put)(struct session_host *h, int member, const uint8_t *startup, size_t n, struct session_pooled *p);
	bool (*pool_take)(struct session_host *h, int member, const uint8_t *startup, size_t n, struct session_pooled *out);
	/* ... the params of one kept for `member` (any start), appended to `params`: false when none. */
	bool (*pool_params)(struct session_host *h, int member, struct evbuffer *params);
	/* ... and the member refused it (`why`: its error): said, counted, the secret looked at again. */
	void (*member_login_refused)(struct session_host *h, int member, const char *why);
	/* multiplex: the shared connection to `member` (may still be connecting), or NULL for now */
	struct shared *(*shared)(struct session_host *h, int member, bool resp3, bool write);
	/* the session (on a member) whose cancel key, as its client knows it, is key[0..keylen), or NULL */
	const struct session *(*session_by_key)(struct session_host *h, const struct session *except,
						const uint8_t *key, size_t keylen);
	bool (*stopping)(struct session_host *h);  /* shutting down: held clients are refused */
	/* what it saw */
	void (*upstream_failed)(struct session_host *h, int member, const char *why);  /* an observation */
	/* `member`'s own word on its role is wanted, from a check that starts now: every session
	 * with `confirming` set hears it through session_confirmed() (later, from the loop) */
	void (*confirm_role)(struct session_host *h, int member);
	void (*probe_soon)(struct session_host *h, int member);  /* a reason to ask, never an observation */
	void (*opaque)(struct session_host *h);  /* a session's bytes became unreadable (counted, said once) */
	/* its bookkeeping: held list, member attachment, open/closed */
	void (*opened)(struct session_host *h, struct session *s);
	void (*hold)(struct session_host *h, struct session *s);
	void (*unhold)(struct session_host *h, struct session *s);
	void (*attach)(struct session_host *h, struct session *s, int member);
	void (*detach)(struct session_host *h, struct session *s);
	void (*closed)(struct session_host *h, struct session *s);
	void (*kick_held)(struct session_host *h);  /* route held sessions soon, if it knows where */
	/* multiplex: a session pinning with a command raises the barrier until that command is with its
	 * own connection; meanwhile no shared session sends (a command sent later must not overtake
	 * it: the XADD an XREAD BLOCK waits for). Lifting it resumes the others. */
	void (*barrier)(struct session_host *h, bool on);
	bool (*barred)(struct session_host *h);
};

/* The service as its sessions see it: the calls above and what they read directly. */
struct session_host {
	const struct session_host_ops *ops;
	const struct proto_ops *proto;
	const struct service_config *cfg;  /* the service's current configuration (a reload replaces it) */
	bool cluster;                      /* a Redis Cluster behind the listener (cluster = on, or auto
	                                      and the members said so) */
	struct event_base *base;
	const char *name;
	struct service_counters counters;
};

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
	struct net_pipe pipe;        /* ... and before them, in a pipe (splice), while it holds any */
	bool reading, writing;
	bool paused;                 /* reading stopped: the other side's `out` is above the high water */
	bool handshaking;            /* a client's TLS handshake: what it is owed waits in `out` */
	bool big;                    /* a payload from it was spliced: its reads stop where the next may begin */
};

/* Fields are session.c's; the service reads `state`, `member` and walks its lists through `all`
 * and `held`. */
struct session {
	struct session_host *host;
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
	int64_t active_ms;           /* the last bytes either way (monotonic, coarse: a few ms): GET /clients' idle time */
	int64_t held_since_ms;       /* when it started waiting for a writer, 0 when not waiting */
	int64_t connect_started_ms;  /* when its upstream connect began */
	uint64_t bytes_in, bytes_out;  /* from the client, to the client */
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
	/* auth = repoint, a protocol whose transactions can run again (proto->tx_retryable): the
	 * answers since the idle point (allocated on first use), and a transaction refused part-way
	 * being run again on the new writer, one request at a time, each answer checked against them:
	 * `retry` up to txr_sent is sent, txr_pos/txr_idx where the log is. held_reply keeps the
	 * refusal meanwhile: the client's answer if the replay goes otherwise. */
	struct txlog *txlog;
	bool txr_pending;            /* replay the transaction once connected: */
	bool txr_all;                /* ... every request of it compared (its server went away while it
	                                was idle in it), else the last one's answer is the client's */
	bool txr_replaying;
	uint8_t txr_idx;
	uint32_t txr_sent, txr_pos;
	struct proto_strip txlog_strip, txr_strip;  /* where the log's and the replay's answers are */
	uint8_t retry_streak;        /* read-only refusals retried in a row */
	int64_t later_until_ms;      /* refused "for a moment" (proto->later_reply) since: sent again until
	                                this time (monotonic), 0 when not refused so */
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
	bool barrier;                /* holds the service's barrier (the host's barrier) */
	bool tls_asking;             /* connecting: the member's answer to the TLS request awaited */
	/* A server-first TLS upgrade repoint conducts itself (MySQL: proto->upgrade): the member's
	 * greeting is read whole (`greeting`), passed on with the listener's TLS offer, the client's
	 * hello taken (after its TLS handshake), and sent on (after repoint's). */
	uint8_t med;                 /* where it is (enum med_step, session.c); 0 when not conducting */
	uint8_t med_seq;             /* the client's hello's number */
	bool relay_on;               /* the two sides number packets differently until authentication ends */
	struct proto_relay relay;
	struct evbuffer *greeting;
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
	/* auth = repoint (proto->login): repoint authenticated the client and logs in to members
	 * itself, so the session can move to another member at an idle point. */
	struct proto_login *login;
	struct evbuffer *login_in;   /* the member's bytes during a login */
	bool logging_in;             /* connecting: the login to the member is under way */
	bool login_tls;              /* ... paused for the TLS handshake it asked the member for */
	bool member_pw_pending;      /* ... its member password waits for the client's user (member_first) */
	bool changing_user;          /* active: the login conducts a client's COM_CHANGE_USER */
	bool logged_in;              /* the current member connection is logged in */
	bool login_own_pw;           /* ... with member_password (a refusal is said about it) */
	int64_t upstream_born_ms;    /* when its server connection was made (a pooled one keeps its age) */
	bool term_held;              /* held_reply holds the server's last words (proto->termination) */
	/* auth = repoint, one-command logins (host member_login, Redis AUTH): the connection is logged
	 * in before anything of the client's goes, and again every reauth_interval at an idle point. */
	bool member_authing;         /* connecting: the answer to repoint's login is awaited */
	bool member_authed;          /* the current connection is logged in (or needs no login) */
	bool relogging;              /* active: the answer to a new login is awaited, the client paused */
	struct event *relogin_ev;    /* when to log in again; NULL until the first login */
	struct proto_state auth_ps;  /* counts the login's one reply */
	char auth_reply[128];        /* the start of that reply (an error says why) */
	uint8_t auth_reply_len;
	bool unmovable;              /* it set something it cannot set again elsewhere (replay out of room) */
	struct session_split *split; /* cluster = on: a command over several slots sent as one per key;
	                                their replies are merged into its one (session.c) */
	/* cluster = on: a transaction or a blocking command travels on a connection of the session's
	 * own (`own`, net/shared.h, opened by session.c; kept for the next one while it goes to the
	 * member wanted) to the primary of its keys' slot; `own_active` while one is under way. What
	 * the client believes of its transaction is kept here, so that nothing it meant to queue runs
	 * outside one (a lost connection aborts the transaction; a lost WATCH makes EXEC answer nil). */
	struct shared *own;
	int own_at;                  /* the member `own` goes to */
	int own_member;              /* the member this transaction goes to; -1 not chosen yet */
	int own_slot;                /* the slot it is bound to (its first key's); -1 none yet */
	int ask_member;              /* the next command goes there once, after ASKING (-1: none) */
	bool own_active;
	bool tx_multi;               /* MULTI sent on `own`, EXEC or DISCARD not yet */
	bool tx_watch;               /* WATCH armed on `own` */
	bool tx_deferred;            /* MULTI answered by repoint and not sent yet (no key seen yet) */
	bool tx_dirty;               /* a command inside was refused: EXEC answers EXECABORT */
	bool tx_lost;                /* ... because its connection was lost: nothing more is queued */
	bool tx_watch_lost;          /* the connection a WATCH was armed on was lost: EXEC answers nil */
	uint32_t owed;               /* requests in flight when its server went away: answered "outcome
	                                unknown" if the session moves on */
	struct proto_state ps;
	char peer[48];
};

TAILQ_HEAD(session_list, session);

const char *session_state_name(enum session_state st);

/* Takes ownership of the accepted, non-blocking fd; routes the client at once (or holds it).
 * NULL (fd closed) on allocation failure. */
struct session *session_accept(struct session_host *host, int fd, const struct sockaddr *peer);

/* The service has a writer (again): a held session connects now. */
void session_release(struct session *s);
/* Drain a session attached to a lost member: at once (immediate) or at its next idle point
 * (graceful), at the latest after timeout_ms. */
void session_drain(struct session *s, enum drain_mode mode, int64_t timeout_ms);
/* Refuse a held session now with the protocol's native error (e.g. on shutdown). */
void session_refuse(struct session *s, enum session_refusal why);
/* The answer to the host's confirm_role for the member this session waits on: `role` is its own
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
