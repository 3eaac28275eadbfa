/* probe.h - ask a node its role, through the engine's own client library, without blocking the loop.
 *
 *   Postgres  libpq (PQconnectStart/PQconnectPoll, PQsendQuery): pg_is_in_recovery() and the timeline
 *   MySQL     libmariadb non-blocking API (mysql_real_connect_start/_cont, ...):
 *             @@global.read_only, @@global.innodb_read_only
 *   Redis     hiredis (redisFormatCommand + redisReader over a non-blocking socket): ROLE
 *
 * One probe per member keeps its connection open between checks and reconnects after any failure.
 * The idle connection is watched: when the server closes it (crash, restart, idle timeout, a killed
 * session) it is dropped at once and the next check connects afresh, so a dead node answers that
 * check with "connect: Connection refused" within a round trip, and a live one is not failed for a
 * close it did on its own. Every check is bounded by timeout_ms: a node that hangs or black-holes
 * packets costs a timer, never a stall of the loop or of other probes. Host names are resolved off
 * the loop (getaddrinfo in a helper thread) before each new connection, so DNS changes are followed;
 * every address of a name is tried in turn within the check.
 */
#ifndef REPOINT_PROBE_H
#define REPOINT_PROBE_H

#include <stdbool.h>
#include <sys/socket.h>
#include <stdint.h>

#include "config.h"
#include "topology.h"

struct event_base;
struct net_tls;
struct probe;
struct secret;

struct probe_result {
	bool ok;              /* the node answered with a role */
	bool busy;            /* not ok, yet alive: it cannot say its role now (Redis -BUSY while a
	                         script runs, -LOADING while it loads its data): not a failure */
	bool loading;         /* ... and busy because it loads its data: no role to go on either */
	enum role role;       /* ROLE_WRITER or ROLE_READER when ok */
	int64_t epoch;        /* Postgres: timeline of the WAL being written (writer), or received /
	                         last restartpoint's (standby; 0 when the user may not see either); else 0 */
	int64_t latency_us;   /* from the start of the check to its end */
	bool auth_failed;     /* the member refused the probe's credentials (a login failed): a secret
	                         that may have been rotated is worth looking at again */
	char detail[160];     /* on failure: why ("connect: Connection refused", "timeout after 1000 ms
	                         (connecting)", "ROLE: LOADING ...", the server's error); on success: what
	                         was seen ("in_recovery=f tli=3", "read_only=1 innodb_read_only=0",
	                         "role=slave link=connected") */
};

typedef void (*probe_cb)(void *arg, const struct probe_result *r);

struct probe_params {
	enum protocol protocol;
	const char *host;        /* IP literal or name */
	uint16_t port;
	const char *user;        /* may be NULL or "" */
	const char *password;    /* may be NULL or ""; unused with password_secret */
	struct secret *password_secret; /* the password, read anew for each new connection (a file
	                            rotated, a secret fetched again, an IAM token for this member);
	                            the probe does not own it: it outlives the probe */
	bool user_from_secret;   /* an RDS-managed secret's username replaces user */
	const char *iam_resource; /* redis, password_secret iam: "elasticache:ID" or "memorydb:NAME" */
	const char *database;    /* may be NULL or "" */
	int64_t timeout_ms;      /* bounds connect + query of one check */
	struct net_tls *tls;     /* Redis over TLS (the probe keeps a reference); NULL: plain */
	const char *tls_name;    /* the name the member's certificate must carry */
};

/* Creates an idle probe; strings in params are copied. NULL on allocation failure. */
struct probe *probe_new(struct event_base *base, const struct probe_params *params, probe_cb cb, void *arg);

/* Starts one check. The callback runs exactly once per started check, always later from the loop,
 * never from inside probe_run(). Returns false (and starts nothing) when a check is under way. */
bool probe_run(struct probe *p);

bool probe_busy(const struct probe *p);
/* The next check connects afresh (the connection kept open is closed now): its answer then comes
 * from a session the server accepted after this call, never one it may be ending (a server that
 * shuts down answers on its old connections for a moment). */
void probe_fresh(struct probe *p);
/* The address the probe reached the node at (resolved off the loop, in the lookup thread); false
 * before any address is known. */
bool probe_address(const struct probe *p, struct sockaddr_storage *sa, socklen_t *len);

/* Called (with the probe's arg) when the connection kept open between checks is closed by the
 * peer or reset: a crash or shutdown is then known before the next check is due. */
typedef void (*probe_lost_cb)(void *arg);
void probe_on_idle_lost(struct probe *p, probe_lost_cb cb);

/* Redis Cluster: with the next check (and only that one), ask the slot map (CLUSTER SHARDS, or
 * CLUSTER SLOTS of a server before 7.0) and/or COMMAND before ROLE; their replies go to cb (with the
 * probe's arg) as they come, before the check's result -- any reply, errors included: the callee
 * reads it as the hostile input it is. A check that fails before they come leaves them unanswered:
 * ask again. */
struct redisReply;
enum probe_cluster_reply { PROBE_CLUSTER_SHARDS, PROBE_CLUSTER_SLOTS, PROBE_CLUSTER_COMMANDS };
typedef void (*probe_cluster_cb)(void *arg, enum probe_cluster_reply kind, const struct redisReply *r);
void probe_on_cluster(struct probe *p, probe_cluster_cb cb);
/* map: PROBE_CLUSTER_SHARDS or PROBE_CLUSTER_SLOTS to ask for the map, PROBE_CLUSTER_COMMANDS for
 * none. */
void probe_want(struct probe *p, enum probe_cluster_reply map, bool commands);

/* Cancels any check (no callback) and frees everything. Not to be called from inside its callback. */
void probe_free(struct probe *p);

/* How a member's answer to the role check reads, from what its client library decoded (pure; the
 * probes use them, and tests/fuzz/fuzz_probe_reply feeds them anything): r gets ok, busy, loading,
 * role, epoch and detail (latency_us 0). A NULL value is SQL NULL. */
struct redisReply;
void probe_read_redis(const struct redisReply *reply, struct probe_result *r);
/* Postgres: pg_is_in_recovery(), the timeline, and whether the server's default_transaction_read_only
 * is on (NULL: not known; a primary refusing new writes is a reader). */
void probe_read_postgres(const char *in_recovery, const char *tli, const char *read_only, struct probe_result *r);
void probe_read_mysql(const char *read_only, const char *innodb_read_only, struct probe_result *r);

#endif
