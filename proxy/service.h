/* service.h - one [service NAME]: a listener, its members and their probes, the topology that
 * decides the writer, and the sessions that follow it.
 *
 *   probes ──observations──▶ topology ──events──▶ service ──hold / release / drain──▶ sessions
 *
 * Sessions ask the service where to go and report what they see on the data path through their
 * session_host (net/session.h), which service.c implements: calls run from the service down to its
 * sessions and shared connections, never back by name. Sessions never talk to probes. */
#ifndef REPOINT_SERVICE_H
#define REPOINT_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "config.h"
#include "net/session.h"
#include "topology.h"

struct event_base;
struct evbuffer;
struct session;
struct shared;
struct proto_ops;
typedef struct json_t json_t;

struct service;

struct secrets;
/* `aws` is the [aws] section, used by services with `source = ...`; `secrets` (the runtime's,
 * which outlives the service) is where probe_password comes from (NULL: taken as written). */
struct service *service_new(struct event_base *base, const struct service_config *cfg,
			    const struct aws_config *aws, struct secrets *secrets);
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
/* POST /services/NAME/pause and /resume (pgbouncer's PAUSE/RESUME, for planned maintenance): while
 * paused, new clients are held (at most hold_timeout) and open sessions drained at their idle points
 * (a Redis session is held there, its connection kept; a Postgres or MySQL one is closed); resume
 * routes the held ones. /drain drains every session without pausing. */
void service_pause(struct service *svc, bool on);
bool service_paused(const struct service *svc);
void service_drain_all(struct service *svc, const char *why);
/* GET /clients: each session (client, member, state, age, idle time, bytes either way). */
json_t *service_clients_json(const struct service *svc);
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

/* --- for the drill, the admin API and the runtime (sessions see the service through their
 * session_host: net/session.h) --- */
const struct service_config *service_config(const struct service *svc);
const char *service_name(const struct service *svc);
const struct sockaddr *service_member_addr(const struct service *svc, int member, socklen_t *len);
struct net_tls;
const char *service_member_str(const struct service *svc, int member);
/* TLS to the members (NULL: plain) and the name a member's certificate must carry. */
struct net_tls *service_tls(const struct service *svc);
const char *service_member_tls_name(const struct service *svc, int member);
struct service_counters *service_counters(struct service *svc);
/* The probe credentials for member `member` (-1: none in particular; an iam token needs one) as
 * the probes use them now: the password (malloc'ed, free with secret_value_free) and, when an
 * RDS-managed secret names one and probe_user is not set, the user (*user, malloc'ed, else NULL).
 * NULL with the reason in why when the password is not available. */
char *service_probe_credentials(struct service *svc, int member, char **user, char *why, size_t whylen);

/* cluster = on: the shard that serves `slot` now (as /status's cluster.shards[].shard numbers them),
 * -1 when none does or the service is not a cluster. */
int service_slot_shard(const struct service *svc, int slot);
/* cluster = on with an elasticache:/memorydb: source: the shard (as /status numbers them) whose
 * nodes the control plane puts in node group (shard) `group`; -1 when none is in one. */
int service_group_shard(const struct service *svc, const char *group);
/* A Redis Cluster now: cluster = on, or auto and a member said so. */
bool service_is_cluster(const struct service *svc);

#endif
