/* drill/conn.h - one client connection of a drill, driven on the loop through the engine's own
 * client library: libpq (PQconnectStartParams/PQconnectPoll, PQsendQuery), libmariadb's
 * non-blocking _start/_cont API, hiredis' redisReader over a non-blocking socket.
 *
 * The same connection serves the load (a write through the service's listener) and the static
 * promotions (statements sent to members directly). One operation at a time: "connect if needed,
 * then run this statement", bounded by one timer, answered through one deferred event so that the
 * callback never runs inside drill_conn_run() and may start the next operation or free the conn.
 * Any failure closes the connection; the next operation connects afresh.
 *
 * Every failure is sorted into what an application would tell apart: the connection was refused
 * (TCP refused, or the server/proxy refused the session with an error), closed under it, timed
 * out, the server said it is read-only (Postgres 25006 / "during recovery", MariaDB 1290/1836/1792,
 * Redis -READONLY), or another server error. */
#ifndef REPOINT_DRILL_CONN_H
#define REPOINT_DRILL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct drill_conn;
struct net_tls;

enum drill_kind {
	DRILL_OK,
	DRILL_ERR_REFUSED,
	DRILL_ERR_CLOSED,
	DRILL_ERR_TIMEOUT,
	DRILL_ERR_READ_ONLY,
	DRILL_ERR_SERVER,
	DRILL_NKINDS
};
/* "ok", "refused", "closed", "timeout", "read_only", "server_error" */
const char *drill_kind_name(enum drill_kind k);
/* The reverse; -1 when unknown. */
int drill_kind_parse(const char *name);

/* Where to connect and as whom. host must be an IP literal (nothing is resolved here). */
struct drill_endpoint {
	enum protocol protocol;
	char host[64];
	uint16_t port;
	const char *user;       /* NULL or "": the library's default (Redis: no AUTH) */
	const char *password;
	const char *database;
	struct net_tls *tls;    /* NULL: plain; else TLS with these settings (the conn keeps a reference) */
	char tls_name[256];     /* the name the certificate must carry ("": the address) */
};

struct drill_result {
	enum drill_kind kind;
	bool connected;          /* this operation opened a new connection (successfully) */
	bool in_connect;         /* the failure happened while connecting */
	char message[256];       /* the error, "" on success */
	const char *value;       /* first column of the first row, or the Redis reply as text; NULL
	                            when there is none. Valid during the callback only. */
};

typedef void (*drill_conn_cb)(void *arg, const struct drill_result *r);

/* Strings of ep are copied. NULL when out of memory. */
struct drill_conn *drill_conn_new(struct event_base *base, const struct drill_endpoint *ep, drill_conn_cb cb,
				  void *arg);
/* Connects when not connected, then runs stmt (NULL: only connect). For Redis the statement is a
 * command whose words are separated by spaces ("SET k v"). False (and nothing started) when an
 * operation is under way. */
bool drill_conn_run(struct drill_conn *c, const char *stmt, int64_t timeout_ms);
bool drill_conn_busy(const struct drill_conn *c);
bool drill_conn_connected(const struct drill_conn *c);
/* Cancels any operation (no callback) and closes the connection; the conn can be used again. */
void drill_conn_reset(struct drill_conn *c);
/* Cancels any operation (no callback) and frees everything. Not from inside its own callback
 * unless that is the last thing the callback does with it. */
void drill_conn_free(struct drill_conn *c);

/* Sorting helpers (pure, unit-tested). */
enum drill_kind drill_classify_pg(const char *sqlstate, const char *message, bool in_connect);
enum drill_kind drill_classify_mysql(unsigned err, bool in_connect);
enum drill_kind drill_classify_redis(const char *error);

#endif
