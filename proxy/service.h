/* service.h - one [service NAME]: a listener, its members and their probes, the topology that
 * decides the writer, and the sessions that follow it.
 *
 *   probes ──observations──▶ topology ──events──▶ service ──hold / release / drain──▶ sessions
 *
 * Sessions ask the service where to go (service_pick) and report what they see on the data path
 * (service_upstream_failed); they never talk to probes. */
#ifndef REPOINT_SERVICE_H
#define REPOINT_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "config.h"
#include "topology.h"

struct event_base;
struct evbuffer;
struct session;
struct shared;
struct proto_ops;
typedef struct json_t json_t;

struct service;

/* `aws` is the [aws] section, used by services with `source = ...`. */
struct service *service_new(struct event_base *base, const struct service_config *cfg,
			    const struct aws_config *aws);
/* Binds the listener and starts the probes. False (logged) when the address cannot be bound. */
bool service_start(struct service *svc) __attribute__((warn_unused_result));
/* Stops accepting and drains every session (closing each when idle), at the latest after
 * timeout_ms; held clients are refused. */
void service_shutdown(struct service *svc, int64_t timeout_ms);
unsigned service_nsessions(const struct service *svc);
/* Reload: run on `cfg` from now on (the caller keeps it alive while the service uses it), without
 * closing a session the change does not concern. Taken in place: listen (the listener moves;
 * sessions go on), members (sessions on members that leave are closed), probe settings (the
 * probes start again), timeouts, route, max_clients, down_after, multiplex (for new sessions).
 * protocol, source and shard need a restart: false, with the reason in err, and the service keeps
 * running as it was -- as it does on any other failure (an address that cannot be bound). */
bool service_reconfigure(struct service *svc, const struct service_config *cfg, char *err, size_t errlen);
/* Gone from the configuration: stops accepting (the listener is closed), probing and polling, and
 * drains every session as service_shutdown does. Stays allocated until service_free. */
void service_retire(struct service *svc, int64_t timeout_ms);
void service_free(struct service *svc);

json_t *service_status_json(const struct service *svc);
/* Whether a new client would be routed now (false: why, e.g. "service orders: no confirmed
 * writer (new clients are held)"); and whether every member has been probed once (startup). */
bool service_ready(const struct service *svc, char *why, size_t len);
bool service_started(const struct service *svc);

/* What a watcher (the drill's timeline) hears of the service's life. */
enum service_event_kind {
	SERVICE_EV_SUSPECT,           /* the writer failed a probe: new clients are held */
	SERVICE_EV_RECOVERED,         /* ... and answered again */
	SERVICE_EV_WRITER_LOST,       /* the writer is down or demoted: failover under way */
	SERVICE_EV_WRITER_CONFIRMED,  /* a writer is confirmed (`member`), new or not */
	SERVICE_EV_CONFLICT,          /* several members claim the writer role */
	SERVICE_EV_ROLE_CHANGED,      /* `member` now has `role` */
	SERVICE_EV_HELD_RELEASED,     /* `count` held clients were sent to the writer */
	SERVICE_EV_DRAIN_STARTED,     /* `count` sessions on `member` (the old writer) are drained */
};
struct service_event {
	enum service_event_kind kind;
	int64_t at_ms;          /* monotonic */
	const char *member;     /* "host:port", or NULL */
	const char *role;       /* ROLE_CHANGED: "writer", "reader", "down", "unknown" */
	const char *via;        /* what saw it: "probe", "control plane", "data path" */
	unsigned count;
};
typedef void (*service_observer)(void *arg, const struct service_event *e);
/* One watcher at a time; NULL to stop. */
void service_set_observer(struct service *svc, service_observer fn, void *arg);
/* Members, for a watcher or a drill: count, address, and role as /status shows it. */
int service_nmembers(const struct service *svc);
enum role service_member_role(const struct service *svc, int member);
/* Prometheus text format for all services, one family at a time. */
void service_metrics(struct service *const *svcs, int n, struct evbuffer *out);

/* --- for sessions --- */
const struct service_config *service_config(const struct service *svc);
const struct proto_ops *service_proto(const struct service *svc);
struct event_base *service_base(const struct service *svc);
const char *service_name(const struct service *svc);
/* The member a new client should go to now, or -1 to hold it. */
int service_pick(struct service *svc);
const struct sockaddr *service_member_addr(const struct service *svc, int member, socklen_t *len);
const char *service_member_str(const struct service *svc, int member);
/* TLS to the members: the context (NULL: plain) and the name a member's certificate must carry
 * (tls_server_name, else its host name). */
struct net_tls *service_tls(const struct service *svc);
/* TLS on the listener: the server context for a new client (its certificate re-read when the files
 * changed; NULL when listen_tls = off) and the mode. */
struct net_tls *service_listen_tls(struct service *svc);
enum listen_tls_mode service_listen_tls_mode(const struct service *svc);
const char *service_member_tls_name(const struct service *svc, int member);
/* Whether the service is shutting down (held clients are refused at once). */
bool service_stopping(const struct service *svc);
/* A connection to `member` failed on the data path: counts as a failed observation and asks
 * for an immediate probe. */
void service_upstream_failed(struct service *svc, int member, const char *why);
/* A session needs `member`'s own word on its role, from a check that starts from now on: every
 * session with `confirming` set and `confirm_member` == member hears it through
 * session_confirmed() (later, from the loop). With probes off the topology's word is given. */
void service_confirm_role(struct service *svc, int member);
/* Route held sessions soon (from the loop), if the service knows where to. */
void service_kick_held(struct service *svc);
/* An upstream connection to `member` closed while in use: probe the member now. */
void service_probe_soon(struct service *svc, int member);
/* Session bookkeeping: a session enters/leaves the held list, attaches to/detaches from a
 * member, and is forgotten when it closes. */
void service_session_opened(struct service *svc, struct session *s);
void service_hold(struct service *svc, struct session *s);
void service_unhold(struct service *svc, struct session *s);
void service_attach(struct service *svc, struct session *s, int member);
void service_detach(struct service *svc, struct session *s);
void service_session_closed(struct service *svc, struct session *s);
/* The member holding the session whose cancel key (proto session_key) is key[0..keylen), or -1. */
int service_session_member_by_key(const struct service *svc, const struct session *except, const uint8_t *key,
				  size_t keylen);

/* multiplex: a session pinning with a command raises the barrier until that command is handed to
 * its own connection; meanwhile no shared session sends (a command another client sent later
 * must not overtake it: the XADD an XREAD BLOCK waits for). Lifting it resumes the others. */
void service_barrier(struct service *svc, bool on);
bool service_barred(const struct service *svc);

/* Counters a session bumps. */
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
	uint64_t opaque_sessions;    /* sessions repoint could not read (a client's own TLS passed through) */
	uint64_t migrated;           /* sessions moved to another server without the client noticing */
	uint64_t retried;            /* requests refused as read-only by an old writer, sent again */
	uint64_t restarted;          /* session starts refused by a server (shutting down), replayed */
	uint64_t shared_commands;    /* multiplex: commands sent over shared connections */
	uint64_t pinned;             /* multiplex: sessions that needed a connection of their own */
	uint64_t bytes_client_to_server;
	uint64_t bytes_server_to_client;
};
struct service_counters *service_counters(struct service *svc);
/* A session's bytes became unreadable to repoint: counted, and said once per service. */
void service_opaque_session(struct service *svc);

/* multiplex: the shared connection to `member` (the RESP3 one: opened with HELLO 3; the one for
 * writes, or the one for reads that a paused write cannot hold up), opened on
 * first use (it may still be connecting: see shared_ready; held sessions are released once it is
 * up). NULL when it cannot be had now (one failed a moment ago, or no socket). */
struct shared *service_shared(struct service *svc, int member, bool resp3, bool write);

#endif
