/* sources/probe.c - ask a node its role, through the engine's own client library, without blocking
 * the loop.
 *
 * A probe is a small state machine shared by the three engines:
 *
 *   NONE ──probe_run──▶ RESOLVING ──▶ CONNECTING ──▶ QUERYING ──answer──▶ IDLE ──probe_run──▶ QUERYING
 *    ▲                                                                       │
 *    └──────────── any failure, a timeout, or EOF seen while idle ◀──────────┘
 *
 * Every check is bounded by one evtimer; whatever phase it ends in, the connection is torn down
 * through probe_conn_close() alone, and the result reaches the callback through one deferred event
 * (probe_deliver_cb), so the callback never runs inside probe_run() nor twice for one check.
 * Driving the libraries on the loop is sources/engine.c's (shared with the drill); every engine
 * step ends in probe_step(), which moves on with probe_connected(), probe_connect_failed(), the
 * engine's evaluation (probe_read_* then probe_end(), or probe_fail()).
 *
 * Host names are resolved by getaddrinfo() in a short-lived thread: the client libraries would
 * otherwise resolve them synchronously, and a slow DNS server would then stall every session. */
#include "sources/probe.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <mysql.h>

#include "secret.h"
#include "sources/engine.h"
#include "util.h"

/* A name rarely has more addresses worth trying within one check. */
#define PROBE_MAX_ADDRS 8

enum probe_conn {
	PROBE_CONN_NONE,       /* no connection (first check, or after a failure) */
	PROBE_CONN_RESOLVING,  /* waiting for the lookup thread */
	PROBE_CONN_CONNECTING, /* engine connect/handshake/auth under way */
	PROBE_CONN_QUERYING,   /* role query sent, waiting for its answer */
	PROBE_CONN_IDLE,       /* open between checks; watched for EOF */
};

enum probe_my_phase { PROBE_MY_CONNECT, PROBE_MY_QUERY, PROBE_MY_STORE };

/* One address to try: the sockaddr (Redis connects itself) and its numeric text (libpq's hostaddr,
 * libmariadb's host, both of which then skip name resolution). */
struct probe_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[INET6_ADDRSTRLEN + 16];
};

/* Shared by a probe and its lookup thread; whichever lets go last frees it, so a probe may be freed
 * while getaddrinfo() is still running. */
struct probe_lookup {
	atomic_int refs;
	int efd;                  /* the thread writes to it when done; the loop watches it */
	char host[256];
	atomic_bool done;         /* set (release) by the thread before it signals efd */
	int err;                  /* getaddrinfo()'s result, valid once done */
	int sys_errno;            /* the thread's errno, for EAI_SYSTEM */
	struct addrinfo *ai;
};

struct probe {
	struct event_base *base;
	enum protocol protocol;
	char *host, *user, *password, *database;
	char *conf_user;         /* user as configured (user may come from the secret) */
	char *iam_resource;      /* what a Redis IAM token names ("elasticache:ID"), or NULL */
	struct secret *secret;   /* where password comes from at each new connection; NULL: fixed */
	bool user_from_secret;
	bool auth_failed;        /* this check's login was refused */
	char *tls_name;          /* Redis over TLS: the name the certificate must carry ("" when none) */
	struct net_tls *tls;     /* NULL: plain */
	uint16_t port;
	int64_t timeout_ms;
	probe_cb cb;
	probe_lost_cb lost_cb;  /* optional: the idle connection died between checks */
	probe_cluster_cb cluster_cb;  /* optional (Redis Cluster): CLUSTER SHARDS / COMMAND replies */
	bool want_map, want_commands;     /* ... asked for with the next check */
	enum probe_cluster_reply map_kind;  /* ... the map as CLUSTER SHARDS or CLUSTER SLOTS */
	void *cb_arg;

	struct event *timer;   /* bounds one check */
	struct event *deliver; /* hands the result to the callback from the loop */

	bool busy;             /* a check is under way: its callback is owed */
	bool done;             /* its result is recorded and waiting in `deliver` */
	int64_t started_us;
	struct probe_result result;
	enum probe_conn conn;
	bool idle_lost;        /* the open connection died between checks (told with the next failure) */

	/* Addresses: fixed for an IP literal, re-resolved before each new connection otherwise. */
	bool literal;
	struct probe_addr addrs[PROBE_MAX_ADDRS];
	int naddrs;
	int addr_idx;          /* the one being tried */
	bool addrs_fresh;      /* a lookup finished after its check had given up: use it next */
	struct probe_lookup *lookup;
	struct event *lookup_ev;

	/* The engine's connection: socket event, library handles, Redis stream. */
	struct engine_conn eng;

	/* Postgres: what the answer said so far */
	bool pg_have_row;
	struct probe_result pg_row;  /* what the row said (probe_read_postgres) */
	char pg_error[128];

	/* Redis */
	int rd_auth_left;      /* replies before ROLE's that belong to AUTH (errors there fail the check) */
	int rd_ignore_left;    /* replies before ROLE's to ignore (CLIENT SETNAME) */
	uint8_t rd_extra[2];   /* replies before ROLE's for cluster_cb (enum probe_cluster_reply), in order */
	int rd_extra_n;
};

/* What differs between engines: how to connect and what to ask. Driving the libraries on the loop
 * is engine.c's. */
struct probe_engine {
	void (*connect)(struct probe *p);       /* to p->addrs[p->addr_idx] */
	void (*established)(struct probe *p);   /* the connection is up, before the first query */
	void (*query)(struct probe *p);         /* on an open connection */
	void (*evaluate)(struct probe *p);      /* the query's results are all in */
};

static const struct probe_engine *probe_engine_of(const struct probe *p);
static void probe_conn_close(struct probe *p, bool polite);
static void probe_start_connect(struct probe *p);
static void probe_my_error(MYSQL *m, char *buf, size_t len);

/* ---- common ---------------------------------------------------------------------------------- */

static char *probe_strdup0(const char *s)
{
	return strdup(s != NULL ? s : "");
}


/* Ends the check: records the result and schedules its delivery. Called once per check; later calls
 * (a late event racing the end) are ignored. */
static void probe_end(struct probe *p, bool ok, enum role role, int64_t epoch, const char *detail)
{
	struct probe_result *r = &p->result;

	if (!p->busy || p->done)
		return;
	p->done = true;
	event_del(p->timer);
	memset(r, 0, sizeof(*r));
	r->ok = ok;
	r->role = ok ? role : ROLE_UNKNOWN;
	r->epoch = ok ? epoch : 0;
	r->latency_us = now_us() - p->started_us;
	r->auth_failed = !ok && p->auth_failed;
	str_oneline(r->detail, sizeof(r->detail), detail);
	if (!ok && p->idle_lost) {
		size_t n = strlen(r->detail);
		snprintf(r->detail + n, sizeof(r->detail) - n, " (the connection had closed while idle)");
	}
	p->idle_lost = false;
	if (ok) {
		p->conn = PROBE_CONN_IDLE;
		/* Watch the idle connection so that a crash or a server-side close is noticed now,
		 * not as a failure of the next check. */
		if (!engine_watch(&p->eng, engine_fd(&p->eng), EV_READ, -1))
			probe_conn_close(p, false);
	} else {
		probe_conn_close(p, false);
	}
	event_active(p->deliver, EV_TIMEOUT, 1);
}

static void probe_fail(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void probe_fail(struct probe *p, const char *fmt, ...)
{
	char detail[sizeof(p->result.detail)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	probe_end(p, false, ROLE_UNKNOWN, 0, detail);
}

/* The engine's connection is up: ask the role. */
static void probe_connected(struct probe *p)
{
	p->conn = PROBE_CONN_QUERYING;
	probe_engine_of(p)->query(p);
}

/* Connecting to this address failed: a name may have others (localhost is ::1 and 127.0.0.1), and
 * they are tried within the same check while time remains. */
static void probe_connect_failed(struct probe *p, const char *detail)
{
	probe_conn_close(p, false);
	if (p->addr_idx + 1 < p->naddrs) {
		p->addr_idx++;
		p->conn = PROBE_CONN_CONNECTING;
		probe_engine_of(p)->connect(p);
		return;
	}
	probe_fail(p, "connect: %s", detail);
}

/* The only place that closes a connection, whatever its engine and phase. polite: the peer is
 * healthy and idle, so a goodbye (COM_QUIT) cannot wait on it. A pending lookup survives: it is
 * not part of the connection, and the next check can use its answer. */
static void probe_conn_close(struct probe *p, bool polite)
{
	if (p->conn == PROBE_CONN_CONNECTING || p->conn == PROBE_CONN_QUERYING ||
	    p->conn == PROBE_CONN_IDLE)
		engine_close(&p->eng, polite && p->conn == PROBE_CONN_IDLE);
	else
		engine_unwatch(&p->eng);
	p->conn = PROBE_CONN_NONE;
}

/* The library's own error, in words. */
static void probe_lib_error(struct probe *p, char *buf, size_t len)
{
	if (p->protocol == PROTOCOL_MYSQL)
		probe_my_error(p->eng.my, buf, len);
	else
		engine_pg_error(&p->eng, buf, len);
}

/* Whether a failed connect was the server refusing the credentials (not a network or TLS failure):
 * MySQL's access-denied errors; libpq reports the server's FATAL text only (no SQLSTATE while
 * connecting), in English unless lc_messages says otherwise. */
static bool probe_auth_refused(struct probe *p, const char *err)
{
	if (p->protocol == PROTOCOL_MYSQL) {
		unsigned e = p->eng.my != NULL ? mysql_errno(p->eng.my) : 0;
		return e == 1045 || e == 1698 || e == 1862; /* access denied, no password, expired */
	}
	return strstr(err, "password authentication failed") != NULL || strstr(err, "PAM authentication failed") != NULL ||
	       strstr(err, "no password supplied") != NULL;
}

/* Acts on how an engine step ended, in the phase the check is in: connected, answered, or failed
 * (the next address is tried when connecting). */
static void probe_step(struct probe *p, enum engine_step st)
{
	char err[sizeof(p->result.detail)];
	bool connecting = p->conn == PROBE_CONN_CONNECTING;

	switch (st) {
	case ENGINE_WAITING:
	case ENGINE_TAKEN:
		return;
	case ENGINE_READY:
		if (connecting)
			probe_engine_of(p)->established(p);
		else
			probe_engine_of(p)->evaluate(p);
		return;
	case ENGINE_LIB_ERROR:
		probe_lib_error(p, err, sizeof(err));
		if (connecting && probe_auth_refused(p, err))
			p->auth_failed = true;
		if (connecting)
			probe_connect_failed(p, err);
		else
			probe_fail(p, "query: %s", err);
		return;
	case ENGINE_ERROR:
		if (connecting)
			probe_connect_failed(p, p->eng.msg);
		else
			probe_fail(p, "%s", p->eng.msg);
		return;
	}
}

static void probe_io(void *arg, short what)
{
	struct probe *p = arg;

	if (p->conn == PROBE_CONN_IDLE) {
		if (engine_idle_alive(&p->eng)) {
			if (!engine_watch(&p->eng, engine_fd(&p->eng), EV_READ, -1))
				probe_conn_close(p, false);
		} else {
			probe_conn_close(p, false);
			p->idle_lost = true;
			/* A crash or a shutdown shows here first: let the owner check now rather than at
			 * the next interval. Called from the loop, outside any check. */
			if (p->lost_cb != NULL)
				p->lost_cb(p->cb_arg);
		}
		return;
	}
	if (p->busy && !p->done && (p->conn == PROBE_CONN_CONNECTING || p->conn == PROBE_CONN_QUERYING))
		probe_step(p, engine_io(&p->eng, what));
}


static void probe_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	const char *phase;

	(void)fd;
	(void)what;
	switch (p->conn) {
	case PROBE_CONN_RESOLVING: phase = "resolving"; break;
	case PROBE_CONN_CONNECTING:
		/* A plaintext server takes a TLS client hello for the start of a command and waits. */
		phase = p->eng.rd_handshaking ? "TLS handshake: no answer to it; is the member speaking TLS?"
					      : "connecting";
		break;
	default: phase = "waiting for the answer"; break;
	}
	probe_fail(p, "timeout after %" PRId64 " ms (%s)", p->timeout_ms, phase);
}

static void probe_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	struct probe_result r;

	(void)fd;
	(void)what;
	/* Copied first: the callback may start the next check, which reuses p->result. */
	r = p->result;
	p->busy = false;
	p->done = false;
	p->cb(p->cb_arg, &r);
}

/* ---- addresses ------------------------------------------------------------------------------- */

static void probe_set_addrs(struct probe *p, const struct addrinfo *ai)
{
	p->naddrs = 0;
	for (; ai != NULL && p->naddrs < PROBE_MAX_ADDRS; ai = ai->ai_next) {
		struct probe_addr *a = &p->addrs[p->naddrs];

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(a->sa))
			continue;
		memcpy(&a->sa, ai->ai_addr, ai->ai_addrlen);
		a->salen = ai->ai_addrlen;
		if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)&a->sa)->sin_port = htons(p->port);
		else
			((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(p->port);
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a->text, sizeof(a->text), NULL, 0,
		                NI_NUMERICHOST) != 0)
			continue;
		p->naddrs++;
	}
}

static void probe_lookup_release(struct probe_lookup *l)
{
	if (atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	if (l->ai != NULL)
		freeaddrinfo(l->ai);
	close(l->efd);
	free(l);
}

static void *probe_lookup_thread(void *arg)
{
	struct probe_lookup *l = arg;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_ADDRCONFIG };
	uint64_t one = 1;

	l->err = getaddrinfo(l->host, NULL, &hints, &l->ai);
	l->sys_errno = errno;
	atomic_store_explicit(&l->done, true, memory_order_release);
	if (write(l->efd, &one, sizeof(one)) != sizeof(one)) {
		/* Cannot happen with an eventfd counter far from overflow; nothing else to tell. */
	}
	probe_lookup_release(l);
	return NULL;
}

static void probe_lookup_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	struct probe_lookup *l = p->lookup;
	bool waiting = p->busy && !p->done && p->conn == PROBE_CONN_RESOLVING;
	uint64_t n;
	int err, sys_errno;

	(void)fd;
	(void)what;
	if (read(l->efd, &n, sizeof(n)) != sizeof(n) || !atomic_load_explicit(&l->done, memory_order_acquire))
		return;  /* spurious wake-up: keep waiting */
	event_free(p->lookup_ev);
	p->lookup_ev = NULL;
	p->lookup = NULL;
	err = l->err;
	sys_errno = l->sys_errno;
	if (err == 0)
		probe_set_addrs(p, l->ai);
	probe_lookup_release(l);
	if (err == 0 && p->naddrs == 0)
		err = EAI_NONAME;
	if (err != 0) {
		p->naddrs = 0;
		if (waiting)
			probe_fail(p, "resolve %s: %s", p->host,
			           err == EAI_SYSTEM ? strerror(sys_errno) : gai_strerror(err));
		return;
	}
	if (!waiting) {
		p->addrs_fresh = true;
		return;
	}
	p->addr_idx = 0;
	p->conn = PROBE_CONN_CONNECTING;
	probe_engine_of(p)->connect(p);
}

/* Starts getaddrinfo() in a detached thread; false (with the reason in why) when it cannot. */
static bool probe_lookup_start(struct probe *p, const char **why)
{
	struct probe_lookup *l;
	pthread_attr_t attr;
	pthread_t tid;
	sigset_t all, old;
	int rc;

	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		*why = "out of memory";
		return false;
	}
	snprintf(l->host, sizeof(l->host), "%s", p->host);
	atomic_init(&l->refs, 2);
	atomic_init(&l->done, false);
	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->efd < 0) {
		*why = strerror(errno);
		goto fail;
	}
	p->lookup_ev = event_new(p->base, l->efd, EV_READ | EV_PERSIST, probe_lookup_done_cb, p);
	if (p->lookup_ev == NULL || event_add(p->lookup_ev, NULL) != 0) {
		*why = "cannot watch the lookup";
		goto fail;
	}
	/* Signals stay with the main thread: block them all in the helper. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&tid, &attr, probe_lookup_thread, l);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		*why = strerror(rc);
		goto fail;
	}
	p->lookup = l;
	return true;
fail:
	/* No thread holds it: undo everything here. */
	if (p->lookup_ev != NULL)
		event_free(p->lookup_ev);
	p->lookup_ev = NULL;
	if (l->efd >= 0)
		close(l->efd);
	free(l);
	return false;
}

/* Drops our interest in a running lookup: the thread finishes on its own and frees it. */
static void probe_lookup_abandon(struct probe *p)
{
	if (p->lookup == NULL)
		return;
	event_free(p->lookup_ev);
	p->lookup_ev = NULL;
	probe_lookup_release(p->lookup);
	p->lookup = NULL;
}

/* The password (and maybe user) for a new connection, from the secret: a file read again when it
 * changed, the last secret fetched, a fresh IAM token for this member. False (the check failed,
 * with the reason: never the value) when there is none. */
static bool probe_credentials(struct probe *p)
{
	struct secret_target t = {.host = p->host, .port = p->port, .user = p->conf_user, .resource = p->iam_resource};
	char why[sizeof(p->result.detail)], *user = NULL, *pw;

	if (p->secret == NULL)
		return true;
	pw = secret_get(p->secret, &t, p->user_from_secret ? &user : NULL, why, sizeof(why));
	if (pw == NULL) {
		probe_fail(p, "probe_password: %s", why);
		return false;
	}
	secret_value_free(p->password);
	p->password = pw;
	if (user == NULL && (user = strdup(p->conf_user)) == NULL) {
		probe_fail(p, "out of memory");
		return false;
	}
	free(p->user);
	p->user = user;
	return true;
}

/* Opens a new connection: at once for an IP literal; after a fresh lookup for a name, so that a
 * DNS change (a cloud endpoint moving) is followed on the next reconnect. */
static void probe_start_connect(struct probe *p)
{
	const char *why = NULL;

	if (!probe_credentials(p))
		return;
	if (p->literal || p->addrs_fresh) {
		p->addrs_fresh = false;
		p->addr_idx = 0;
		p->conn = PROBE_CONN_CONNECTING;
		probe_engine_of(p)->connect(p);
		return;
	}
	p->conn = PROBE_CONN_RESOLVING;
	/* A lookup left running by a check that timed out is awaited rather than doubled. */
	if (p->lookup == NULL && !probe_lookup_start(p, &why))
		probe_fail(p, "resolve %s: %s", p->host, why);
}

/* ---- Postgres -------------------------------------------------------------------------------- */

/* One round trip, one row: in_recovery, the timeline, and whether the server makes every new
 * transaction read-only. A primary's timeline is the one of the WAL it is writing (switches at
 * promotion, unlike pg_control_checkpoint() which waits for a checkpoint). A standby's is the
 * timeline it receives, else that of its last restartpoint; the functions are guarded because an
 * unprivileged user may not run them (then the timeline is NULL). The CTE is materialized so that
 * pg_is_in_recovery() is evaluated once: pg_current_wal_lsn() raises an error during recovery.
 * The third column is libpq's own test for target_session_attrs=read-write: a primary whose
 * default_transaction_read_only is on refuses new writes (25006) -- a switchover drains its old
 * primary so -- and is not the writer. Only the server's setting counts (its configuration file,
 * command line or environment), not one a role or a database sets for its own sessions. */
static const char probe_pg_sql[] =
	"WITH s AS MATERIALIZED (SELECT pg_catalog.pg_is_in_recovery() AS rec) "
	"SELECT s.rec, CASE WHEN s.rec THEN coalesce("
	"(SELECT received_tli::bigint FROM pg_catalog.pg_stat_wal_receiver), "
	"CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_checkpoint()', 'execute') "
	"THEN (SELECT timeline_id::bigint FROM pg_catalog.pg_control_checkpoint()) END) "
	"ELSE ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))"
	"::bit(32)::bigint END, "
	"(SELECT setting = 'on' AND source IN ('configuration file', 'command line', 'environment variable') "
	"FROM pg_catalog.pg_settings WHERE name = 'default_transaction_read_only') FROM s";


static void probe_pg_connect(struct probe *p)
{
	struct engine_pg_params kv = { .n = 0 };
	char port[8];

	snprintf(port, sizeof(port), "%u", (unsigned)p->port);
	/* hostaddr keeps libpq from resolving (synchronously); host still names the server for TLS. */
	engine_pg_tls_params(&kv, p->tls != NULL ? net_tls_get_settings(p->tls) : NULL,
			     p->tls != NULL && p->tls_name[0] != '\0' ? p->tls_name : p->host);
	engine_pg_param(&kv, "hostaddr", p->addrs[p->addr_idx].text);
	engine_pg_param(&kv, "port", port);
	engine_pg_param(&kv, "user", p->user);
	engine_pg_param(&kv, "password", p->password);
	engine_pg_param(&kv, "dbname", p->database);
	engine_pg_param(&kv, "application_name", "repoint-probe");
	/* Pinned against the environment: GSS encryption may talk to a KDC synchronously, and a
	 * PGTARGETSESSIONATTRS=read-write would turn every standby into a failed check. */
	engine_pg_param(&kv, "gssencmode", "disable");
	engine_pg_param(&kv, "target_session_attrs", "any");
	probe_step(p, engine_pg_connect(&p->eng, &kv));
}


void probe_read_postgres(const char *in_recovery, const char *tli, const char *read_only, struct probe_result *r)
{
	int64_t t = 0;
	char *end;

	memset(r, 0, sizeof(*r));
	if (in_recovery == NULL || (strcmp(in_recovery, "t") != 0 && strcmp(in_recovery, "f") != 0)) {
		snprintf(r->detail, sizeof(r->detail), "unexpected in_recovery value");
		return;
	}
	if (read_only != NULL && strcmp(read_only, "t") != 0 && strcmp(read_only, "f") != 0) {
		snprintf(r->detail, sizeof(r->detail), "unexpected default_transaction_read_only value");
		return;
	}
	if (tli != NULL) {
		errno = 0;
		t = strtoll(tli, &end, 10);
		if (errno != 0 || end == tli || *end != '\0' || t <= 0) {
			snprintf(r->detail, sizeof(r->detail), "unexpected timeline value");
			return;
		}
	}
	if (in_recovery[0] == 't') {
		r->ok = true;
		r->role = ROLE_READER;
		r->epoch = t;
		if (tli == NULL)
			snprintf(r->detail, sizeof(r->detail), "in_recovery=t tli=unknown");
		else
			snprintf(r->detail, sizeof(r->detail), "in_recovery=t tli=%" PRId64, t);
		return;
	}
	if (tli == NULL) {
		snprintf(r->detail, sizeof(r->detail), "a primary without a timeline");
		return;
	}
	r->ok = true;
	r->epoch = t;
	if (read_only != NULL && read_only[0] == 't') {
		r->role = ROLE_READER;
		snprintf(r->detail, sizeof(r->detail), "in_recovery=f tli=%" PRId64 " default_transaction_read_only=on", t);
		return;
	}
	r->role = ROLE_WRITER;
	snprintf(r->detail, sizeof(r->detail), "in_recovery=f tli=%" PRId64, t);
}

static void probe_pg_evaluate(struct probe *p)
{
	if (p->pg_error[0] != '\0') {
		probe_fail(p, "query: %s", p->pg_error);
		return;
	}
	if (!p->pg_have_row) {
		probe_fail(p, "query: unexpected answer (no row)");
		return;
	}
	probe_end(p, true, p->pg_row.role, p->pg_row.epoch, p->pg_row.detail);
}

/* Takes in one result: the row we asked for, or the server's error. Anything else is malformed. */
static void probe_pg_take(struct probe *p, PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
		if (p->pg_error[0] == '\0')
			str_oneline(p->pg_error, sizeof(p->pg_error), PQresultErrorMessage(res));
		if (p->pg_error[0] == '\0')
			snprintf(p->pg_error, sizeof(p->pg_error), "error without a message");
		return;
	}
	if (st != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 3 || p->pg_have_row) {
		if (p->pg_error[0] == '\0')
			snprintf(p->pg_error, sizeof(p->pg_error), "unexpected answer (%s, %d rows, %d columns)",
			         PQresStatus(st), PQntuples(res), PQnfields(res));
		return;
	}
	probe_read_postgres(PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0),
	                    PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1),
	                    PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2), &p->pg_row);
	if (!p->pg_row.ok) {
		snprintf(p->pg_error, sizeof(p->pg_error), "%.100s", p->pg_row.detail);
		return;
	}
	p->pg_have_row = true;
}


static bool probe_pg_take_cb(void *arg, PGresult *res)
{
	probe_pg_take(arg, res);
	return false;  /* every result is read, up to the last */
}

static void probe_pg_query(struct probe *p)
{
	p->pg_have_row = false;
	p->pg_error[0] = '\0';
	probe_step(p, engine_pg_query(&p->eng, probe_pg_sql));
}

/* ---- MySQL / MariaDB ------------------------------------------------------------------------- */

static const char probe_my_sql[] = "SELECT @@global.read_only, @@global.innodb_read_only";

/* "Can't connect to server on '10.0.0.5' (111)": the number is an errno, which says more in words. */
static void probe_my_error(MYSQL *m, char *buf, size_t len)
{
	const char *msg = mysql_error(m);
	const char *open = strrchr(msg, '(');
	char *end;
	long code;

	if (msg[0] == '\0') {
		snprintf(buf, len, "error %u", mysql_errno(m));
		return;
	}
	if (open != NULL && (mysql_errno(m) == 2002 || mysql_errno(m) == 2003)) {
		code = strtol(open + 1, &end, 10);
		if (end != open + 1 && strcmp(end, ")") == 0 && code > 0) {
			snprintf(buf, len, "%.*s(%s)", (int)(open - msg), msg, strerror((int)code));
			return;
		}
	}
	str_oneline(buf, len, msg);
}

void probe_read_mysql(const char *read_only, const char *innodb_read_only, struct probe_result *r)
{
	const char *in[2] = {read_only, innodb_read_only};
	long v[2];
	char *end;

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < 2; i++) {
		if (in[i] == NULL) {
			snprintf(r->detail, sizeof(r->detail), "unexpected NULL");
			return;
		}
		errno = 0;
		v[i] = strtol(in[i], &end, 10);
		if (errno != 0 || end == in[i] || *end != '\0') {
			snprintf(r->detail, sizeof(r->detail), "unexpected value '%.32s'", in[i]);
			return;
		}
	}
	r->ok = true;
	r->role = v[0] == 0 && v[1] == 0 ? ROLE_WRITER : ROLE_READER;
	snprintf(r->detail, sizeof(r->detail), "read_only=%ld innodb_read_only=%ld", v[0], v[1]);
}

static void probe_my_evaluate(struct probe *p)
{
	MYSQL_RES *res = p->eng.my_res;
	MYSQL_ROW row;
	struct probe_result r;

	if (res == NULL) {
		probe_fail(p, "query: no result set");
		return;
	}
	if (mysql_num_fields(res) != 2 || mysql_num_rows(res) != 1 || (row = mysql_fetch_row(res)) == NULL) {
		probe_fail(p, "query: unexpected answer (%u columns, %llu rows)", mysql_num_fields(res),
		           (unsigned long long)mysql_num_rows(res));
		return;
	}
	probe_read_mysql(row[0], row[1], &r);
	mysql_free_result(res);
	p->eng.my_res = NULL;
	if (!r.ok)
		probe_fail(p, "query: %s", r.detail);
	else
		probe_end(p, true, r.role, 0, r.detail);
}

static void probe_my_connect(struct probe *p)
{
	probe_step(p, engine_my_connect(&p->eng, p->addrs[p->addr_idx].text, p->port, p->user, p->password,
	                                p->database, p->timeout_ms, "repoint-probe",
	                                p->tls != NULL ? net_tls_get_settings(p->tls) : NULL, p->tls_name));
}

static void probe_my_query(struct probe *p)
{
	probe_step(p, engine_my_query(&p->eng, probe_my_sql, sizeof(probe_my_sql) - 1));
}

/* ---- Redis ----------------------------------------------------------------------------------- */

void probe_read_redis(const redisReply *reply, struct probe_result *r)
{
	const redisReply *kind;
	const char *state = "";

	memset(r, 0, sizeof(*r));
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(r->detail, sizeof(r->detail), "ROLE: %s", reply->str);
		/* Alive: a script running (BUSY), the data set loading (LOADING). */
		r->loading = strncmp(reply->str, "LOADING", 7) == 0;
		r->busy = r->loading || strncmp(reply->str, "BUSY", 4) == 0;
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    (reply->element[0]->type != REDIS_REPLY_STRING && reply->element[0]->type != REDIS_REPLY_STATUS)) {
		snprintf(r->detail, sizeof(r->detail), "unexpected reply to ROLE");
		return;
	}
	kind = reply->element[0];
	if (strcmp(kind->str, "master") == 0) {
		size_t replicas = reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_ARRAY
		                          ? reply->element[2]->elements : 0;
		r->ok = true;
		r->role = ROLE_WRITER;
		snprintf(r->detail, sizeof(r->detail), "role=master replicas=%zu", replicas);
		return;
	}
	if (strcmp(kind->str, "slave") == 0) {
		/* ["slave", host, port, state, offset]: the link state helps whoever reads /status. */
		if (reply->elements >= 4 && reply->element[3]->type == REDIS_REPLY_STRING)
			state = reply->element[3]->str;
		r->ok = true;
		r->role = ROLE_READER;
		snprintf(r->detail, sizeof(r->detail), "role=slave%s%.40s", state[0] != '\0' ? " link=" : "", state);
		return;
	}
	snprintf(r->detail, sizeof(r->detail), "not a data node: role=%.60s", kind->str);
}

static void probe_rd_evaluate(struct probe *p, const redisReply *reply)
{
	struct probe_result r;

	probe_read_redis(reply, &r);
	if (r.ok) {
		probe_end(p, true, r.role, 0, r.detail);
		return;
	}
	probe_end(p, false, ROLE_UNKNOWN, 0, r.detail);
	/* The result is delivered later from the loop: what probe_end recorded can still be added to. */
	p->result.busy = r.busy;
	p->result.loading = r.loading;
}

/* Takes the replies in order: AUTH's (an error fails the check), CLIENT SETNAME's (ignored:
 * some services rename or forbid it), then ROLE's. */
static bool probe_rd_take(void *arg, redisReply *r)
{
	struct probe *p = arg;

	if (p->rd_auth_left > 0) {
		p->rd_auth_left--;
		if (r->type == REDIS_REPLY_ERROR) {
			/* WRONGPASS (ACL users), "ERR invalid password" (requirepass before Redis 6) */
			p->auth_failed = strncmp(r->str, "WRONGPASS", 9) == 0 || strstr(r->str, "invalid password") != NULL ||
					 strstr(r->str, "invalid username-password") != NULL;
			probe_fail(p, "AUTH: %s", r->str);
		}
		return p->done;
	}
	if (p->rd_ignore_left > 0) {
		p->rd_ignore_left--;
		return false;
	}
	if (p->rd_extra_n > 0) {
		enum probe_cluster_reply kind = p->rd_extra[0];
		p->rd_extra[0] = p->rd_extra[1];
		p->rd_extra_n--;
		if (p->cluster_cb != NULL)
			p->cluster_cb(p->cb_arg, kind, r);
		return false;
	}
	probe_rd_evaluate(p, r);
	return p->done;
}

static void probe_rd_query(struct probe *p)
{
	char *cmd = NULL;
	int len;
	bool ok = true;

	/* Redis Cluster: what the service asked for goes before ROLE, whose reply ends the check. */
	p->rd_extra_n = 0;
	if (p->want_commands) {
		len = redisFormatCommand(&cmd, "COMMAND");
		ok = engine_rd_command(&p->eng, len, cmd);
		p->rd_extra[p->rd_extra_n++] = PROBE_CLUSTER_COMMANDS;
		cmd = NULL;
	}
	if (ok && p->want_map) {
		len = redisFormatCommand(&cmd, p->map_kind == PROBE_CLUSTER_SLOTS ? "CLUSTER SLOTS" : "CLUSTER SHARDS");
		ok = engine_rd_command(&p->eng, len, cmd);
		p->rd_extra[p->rd_extra_n++] = p->map_kind;
		cmd = NULL;
	}
	p->want_commands = p->want_map = false;
	len = redisFormatCommand(&cmd, "ROLE");
	if (!ok || !engine_rd_command(&p->eng, len, cmd)) {
		probe_fail(p, "out of memory");
		return;
	}
	probe_step(p, engine_rd_pump(&p->eng));
}

/* The TCP connection is up: AUTH (when there is a password) and CLIENT SETNAME go in the same
 * write as the first ROLE, so connect + check costs one round trip after the handshake. */
static void probe_rd_established(struct probe *p)
{
	char *cmd = NULL;
	int len;
	bool ok = true;

	p->rd_auth_left = p->rd_ignore_left = 0;
	if (p->password[0] != '\0') {
		if (p->user[0] != '\0')
			len = redisFormatCommand(&cmd, "AUTH %s %s", p->user, p->password);
		else
			len = redisFormatCommand(&cmd, "AUTH %s", p->password);
		ok = engine_rd_command(&p->eng, len, cmd);
		p->rd_auth_left++;
	}
	cmd = NULL;
	len = redisFormatCommand(&cmd, "CLIENT SETNAME %s", "repoint-probe");
	ok = ok && engine_rd_command(&p->eng, len, cmd);
	p->rd_ignore_left++;
	if (!ok) {
		probe_connect_failed(p, "out of memory");
		return;
	}
	probe_connected(p);
}

static void probe_rd_connect(struct probe *p)
{
	const struct probe_addr *a = &p->addrs[p->addr_idx];

	probe_step(p, engine_rd_connect(&p->eng, (const struct sockaddr *)&a->sa, a->salen, p->tls, p->tls_name,
					a->text));
}

/* ROLE's reply ends the check in probe_rd_take: READY never comes from a pump. */
static void probe_rd_evaluate_none(struct probe *p)
{
	probe_fail(p, "unexpected reply");
}


/* ---- public ---------------------------------------------------------------------------------- */

static const struct probe_engine probe_engines[] = {
	[PROTOCOL_POSTGRES] = { probe_pg_connect, probe_connected, probe_pg_query, probe_pg_evaluate },
	[PROTOCOL_MYSQL] = { probe_my_connect, probe_connected, probe_my_query, probe_my_evaluate },
	[PROTOCOL_REDIS] = { probe_rd_connect, probe_rd_established, probe_rd_query, probe_rd_evaluate_none },
};

static const struct probe_engine *probe_engine_of(const struct probe *p)
{
	return &probe_engines[p->protocol];
}

struct probe *probe_new(struct event_base *base, const struct probe_params *params, probe_cb cb, void *arg)
{
	struct probe *p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
	struct addrinfo *ai = NULL;

	if ((unsigned)params->protocol >= ARRAY_LEN(probe_engines) || params->host == NULL)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->base = base;
	p->protocol = params->protocol;
	p->port = params->port;
	p->timeout_ms = params->timeout_ms > 0 ? params->timeout_ms : 1;
	p->cb = cb;
	p->cb_arg = arg;
	/* First, so that probe_free() below finds a closed connection whatever fails. */
	if (!engine_init(&p->eng, base, p->protocol, probe_io, probe_pg_take_cb, probe_rd_take, p)) {
		free(p);
		return NULL;
	}
	p->host = probe_strdup0(params->host);
	p->user = probe_strdup0(params->user);
	p->conf_user = probe_strdup0(params->user);
	if (params->iam_resource != NULL && (p->iam_resource = strdup(params->iam_resource)) == NULL) {
		probe_free(p);
		return NULL;
	}
	p->secret = params->password_secret;
	p->user_from_secret = params->user_from_secret;
	p->password = probe_strdup0(params->password);
	p->database = probe_strdup0(params->database);
	p->tls_name = probe_strdup0(params->tls_name);
	if (params->tls != NULL) {
		p->tls = params->tls;
		net_tls_ref(p->tls);
	}
	p->timer = evtimer_new(base, probe_timeout_cb, p);
	p->deliver = event_new(base, -1, 0, probe_deliver_cb, p);
	if (p->host == NULL || p->user == NULL || p->conf_user == NULL || p->password == NULL || p->database == NULL ||
	    p->tls_name == NULL ||
	    p->timer == NULL || p->deliver == NULL) {
		probe_free(p);
		return NULL;
	}
	/* AI_NUMERICHOST never touches the network: it only tells an IP literal from a name. */
	if (getaddrinfo(p->host, NULL, &hints, &ai) == 0) {
		probe_set_addrs(p, ai);
		freeaddrinfo(ai);
		p->literal = p->naddrs > 0;
	}
	return p;
}

bool probe_address(const struct probe *p, struct sockaddr_storage *sa, socklen_t *len)
{
	if (p->naddrs <= 0 || p->addr_idx < 0 || p->addr_idx >= p->naddrs)
		return false;
	memcpy(sa, &p->addrs[p->addr_idx].sa, p->addrs[p->addr_idx].salen);
	*len = p->addrs[p->addr_idx].salen;
	return true;
}

bool probe_run(struct probe *p)
{
	struct timeval tv = { .tv_sec = p->timeout_ms / 1000, .tv_usec = (p->timeout_ms % 1000) * 1000 };

	if (p->busy)
		return false;
	p->busy = true;
	p->done = false;
	p->auth_failed = false;
	/* The loop's cached time may be a whole busy iteration old: without a refresh the check's
	 * timer would fire that much early. */
	event_base_update_cache_time(p->base);
	p->started_us = now_us();
	if (evtimer_add(p->timer, &tv) != 0) {
		probe_fail(p, "cannot arm the timer");
		return true;
	}
	/* Whatever happens below, a result only reaches the callback through p->deliver. */
	if (p->conn == PROBE_CONN_IDLE) {
		p->conn = PROBE_CONN_QUERYING;
		probe_engine_of(p)->query(p);
	} else {
		probe_start_connect(p);
	}
	return true;
}

void probe_fresh(struct probe *p)
{
	if (!p->busy && p->conn == PROBE_CONN_IDLE)
		probe_conn_close(p, true);
}

void probe_on_idle_lost(struct probe *p, probe_lost_cb cb)
{
	p->lost_cb = cb;
}

void probe_on_cluster(struct probe *p, probe_cluster_cb cb)
{
	p->cluster_cb = cb;
}

void probe_want(struct probe *p, enum probe_cluster_reply map, bool commands)
{
	if (map == PROBE_CLUSTER_SHARDS || map == PROBE_CLUSTER_SLOTS) {
		p->want_map = true;
		p->map_kind = map;
	}
	p->want_commands |= commands;
}

bool probe_busy(const struct probe *p)
{
	return p->busy;
}

void probe_free(struct probe *p)
{
	if (p == NULL)
		return;
	probe_conn_close(p, true);
	probe_lookup_abandon(p);
	engine_cleanup(&p->eng);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->deliver != NULL)
		event_free(p->deliver);
	free(p->host);
	free(p->user);
	free(p->conf_user);
	free(p->iam_resource);
	secret_value_free(p->password);
	free(p->database);
	free(p->tls_name);
	net_tls_free(p->tls);
	free(p);
}
