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
 * The engines only translate their library's "wait for this" into probe_watch() and report back
 * with probe_connected(), probe_connect_failed(), probe_answer() or probe_fail().
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
	uint16_t port;
	int64_t timeout_ms;
	probe_cb cb;
	probe_lost_cb lost_cb;  /* optional: the idle connection died between checks */
	void *cb_arg;

	struct event *io;      /* the connection's socket (re-targeted by probe_watch) */
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

	/* Postgres */
	PGconn *pg;
	bool pg_flushing;      /* PQflush() has more to send */
	bool pg_have_row;
	bool pg_recovery;
	bool pg_tli_null;
	int64_t pg_tli;
	char pg_error[128];

	/* MySQL */
	MYSQL *my;
	MYSQL_RES *my_res;
	MYSQL *my_ret;         /* where the _start/_cont calls leave their results */
	int my_rc;
	enum probe_my_phase my_phase;
	bool my_idle;          /* nothing in flight: mysql_close() can send COM_QUIT without waiting */

	/* Redis */
	int rd_fd;
	redisReader *rd_reader;
	char *rd_out;          /* commands not yet written */
	size_t rd_outlen, rd_outoff;
	int rd_pending;        /* replies still expected */
	int rd_auth_left;      /* replies before ROLE's that belong to AUTH (errors there fail the check) */
	int rd_ignore_left;    /* replies before ROLE's to ignore (CLIENT SETNAME) */
};

struct probe_engine {
	void (*connect)(struct probe *p);       /* to p->addrs[p->addr_idx] */
	void (*query)(struct probe *p);         /* on an open connection */
	void (*io)(struct probe *p, short what);
	bool (*idle_readable)(struct probe *p); /* false: the connection is gone */
	int (*fd)(const struct probe *p);
	void (*close)(struct probe *p, bool polite);
};

static const struct probe_engine *probe_engine_of(const struct probe *p);
static void probe_conn_close(struct probe *p, bool polite);
static void probe_start_connect(struct probe *p);
static void probe_io_cb(evutil_socket_t fd, short what, void *arg);

/* ---- common ---------------------------------------------------------------------------------- */

static char *probe_strdup0(const char *s)
{
	return strdup(s != NULL ? s : "");
}

/* Re-targets the socket event: fd may change between calls (libpq may open a new socket during
 * connect), and what each library waits for changes from step to step. timeout_ms < 0: none. */
static bool probe_watch(struct probe *p, int fd, short what, int64_t timeout_ms)
{
	struct timeval tv;

	event_del(p->io);
	if (fd < 0 && (what & (EV_READ | EV_WRITE)) != 0)
		return false;
	if (event_assign(p->io, p->base, (what & (EV_READ | EV_WRITE)) != 0 ? fd : -1, what,
	                 probe_io_cb, p) != 0)
		return false;
	if (timeout_ms >= 0) {
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
	}
	return event_add(p->io, timeout_ms >= 0 ? &tv : NULL) == 0;
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
		if (!probe_watch(p, probe_engine_of(p)->fd(p), EV_READ, -1))
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

static void probe_answer(struct probe *p, enum role role, int64_t epoch, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void probe_answer(struct probe *p, enum role role, int64_t epoch, const char *fmt, ...)
{
	char detail[sizeof(p->result.detail)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	probe_end(p, true, role, epoch, detail);
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
	if (p->io != NULL)
		event_del(p->io);
	if (p->conn == PROBE_CONN_CONNECTING || p->conn == PROBE_CONN_QUERYING ||
	    p->conn == PROBE_CONN_IDLE)
		probe_engine_of(p)->close(p, polite && p->conn == PROBE_CONN_IDLE);
	p->conn = PROBE_CONN_NONE;
}

static void probe_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	const struct probe_engine *e = probe_engine_of(p);

	(void)fd;
	if (p->conn == PROBE_CONN_IDLE) {
		if (e->idle_readable(p)) {
			if (!probe_watch(p, e->fd(p), EV_READ, -1))
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
		e->io(p, what);
}

static void probe_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	const char *phase;

	(void)fd;
	(void)what;
	switch (p->conn) {
	case PROBE_CONN_RESOLVING: phase = "resolving"; break;
	case PROBE_CONN_CONNECTING: phase = "connecting"; break;
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

/* Opens a new connection: at once for an IP literal; after a fresh lookup for a name, so that a
 * DNS change (a cloud endpoint moving) is followed on the next reconnect. */
static void probe_start_connect(struct probe *p)
{
	const char *why = NULL;

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

/* One round trip, one row: in_recovery, and the timeline. A primary's is the one of the WAL it is
 * writing (switches at promotion, unlike pg_control_checkpoint() which waits for a checkpoint).
 * A standby's is the timeline it receives, else that of its last restartpoint; the functions are
 * guarded because an unprivileged user may not run them (then the timeline is NULL). The CTE is
 * materialized so that pg_is_in_recovery() is evaluated once: pg_current_wal_lsn() raises an
 * error during recovery. */
static const char probe_pg_sql[] =
	"WITH s AS MATERIALIZED (SELECT pg_catalog.pg_is_in_recovery() AS rec) "
	"SELECT s.rec, CASE WHEN s.rec THEN coalesce("
	"(SELECT received_tli::bigint FROM pg_catalog.pg_stat_wal_receiver), "
	"CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_checkpoint()', 'execute') "
	"THEN (SELECT timeline_id::bigint FROM pg_catalog.pg_control_checkpoint()) END) "
	"ELSE ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))"
	"::bit(32)::bigint END FROM s";

static void probe_pg_notice(void *arg, const char *message)
{
	/* The default processor prints to stderr; a probe has nothing to say about notices. */
	(void)arg;
	(void)message;
}

/* libpq's connection errors read 'connection to server at "h", port 5432 failed: REASON': the
 * address is already known to whoever reads the detail, the reason is what matters. */
static void probe_pg_error(const PGconn *pg, char *buf, size_t len)
{
	const char *msg = PQerrorMessage(pg);
	const char *reason;

	if (strncmp(msg, "connection to server", 20) == 0 && (reason = strstr(msg, "failed: ")) != NULL)
		msg = reason + 8;
	str_oneline(buf, len, msg);
	if (buf[0] == '\0')
		snprintf(buf, len, "unknown error");
}

static void probe_pg_connect_step(struct probe *p, PostgresPollingStatusType st)
{
	char err[sizeof(p->result.detail)];

	switch (st) {
	case PGRES_POLLING_OK:
		probe_connected(p);
		return;
	case PGRES_POLLING_READING:
	case PGRES_POLLING_WRITING:
		if (!probe_watch(p, PQsocket(p->pg), st == PGRES_POLLING_READING ? EV_READ : EV_WRITE, -1))
			probe_connect_failed(p, "cannot watch the socket");
		return;
	default:
		probe_pg_error(p->pg, err, sizeof(err));
		probe_connect_failed(p, err);
		return;
	}
}

/* Keyword/value pairs for PQconnectStartParams(); empty values are left out (libpq's defaults). */
struct probe_pg_params {
	const char *keys[12];
	const char *vals[12];
	int n;
};

static void probe_pg_param(struct probe_pg_params *kv, const char *key, const char *val)
{
	if (val[0] == '\0' || kv->n + 1 >= (int)ARRAY_LEN(kv->keys))
		return;
	kv->keys[kv->n] = key;
	kv->vals[kv->n] = val;
	kv->n++;
	kv->keys[kv->n] = NULL;
	kv->vals[kv->n] = NULL;
}

static void probe_pg_connect(struct probe *p)
{
	struct probe_pg_params kv = { .n = 0 };
	char port[8];
	char err[sizeof(p->result.detail)];

	snprintf(port, sizeof(port), "%u", (unsigned)p->port);
	/* hostaddr keeps libpq from resolving (synchronously); host still names the server for TLS. */
	probe_pg_param(&kv, "host", p->host);
	probe_pg_param(&kv, "hostaddr", p->addrs[p->addr_idx].text);
	probe_pg_param(&kv, "port", port);
	probe_pg_param(&kv, "user", p->user);
	probe_pg_param(&kv, "password", p->password);
	probe_pg_param(&kv, "dbname", p->database);
	probe_pg_param(&kv, "application_name", "repoint-probe");
	/* Pinned against the environment: GSS encryption may talk to a KDC synchronously, and a
	 * PGTARGETSESSIONATTRS=read-write would turn every standby into a failed check. */
	probe_pg_param(&kv, "gssencmode", "disable");
	probe_pg_param(&kv, "target_session_attrs", "any");

	p->pg_flushing = false;
	p->pg = PQconnectStartParams(kv.keys, kv.vals, 0);
	if (p->pg == NULL) {
		probe_connect_failed(p, "out of memory");
		return;
	}
	PQsetNoticeProcessor(p->pg, probe_pg_notice, NULL);
	if (PQstatus(p->pg) == CONNECTION_BAD) {
		probe_pg_error(p->pg, err, sizeof(err));
		probe_connect_failed(p, err);
		return;
	}
	/* Non-blocking from the start: PQfinish() then never waits to send its Terminate. */
	PQsetnonblocking(p->pg, 1);
	/* libpq's protocol: act as if PQconnectPoll() had asked for writability. */
	probe_pg_connect_step(p, PGRES_POLLING_WRITING);
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
	if (p->pg_tli_null && !p->pg_recovery) {
		probe_fail(p, "query: a primary without a timeline");
		return;
	}
	if (p->pg_recovery) {
		if (p->pg_tli_null)
			probe_answer(p, ROLE_READER, 0, "in_recovery=t tli=unknown");
		else
			probe_answer(p, ROLE_READER, p->pg_tli, "in_recovery=t tli=%" PRId64, p->pg_tli);
		return;
	}
	probe_answer(p, ROLE_WRITER, p->pg_tli, "in_recovery=f tli=%" PRId64, p->pg_tli);
}

/* Takes in one result: the row we asked for, or the server's error. Anything else is malformed. */
static void probe_pg_take(struct probe *p, PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	const char *rec, *tli;
	char *end;

	if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
		if (p->pg_error[0] == '\0')
			str_oneline(p->pg_error, sizeof(p->pg_error), PQresultErrorMessage(res));
		if (p->pg_error[0] == '\0')
			snprintf(p->pg_error, sizeof(p->pg_error), "error without a message");
		return;
	}
	if (st != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 2 || p->pg_have_row) {
		if (p->pg_error[0] == '\0')
			snprintf(p->pg_error, sizeof(p->pg_error), "unexpected answer (%s, %d rows, %d columns)",
			         PQresStatus(st), PQntuples(res), PQnfields(res));
		return;
	}
	rec = PQgetvalue(res, 0, 0);
	if (PQgetisnull(res, 0, 0) || (strcmp(rec, "t") != 0 && strcmp(rec, "f") != 0)) {
		snprintf(p->pg_error, sizeof(p->pg_error), "unexpected in_recovery value");
		return;
	}
	p->pg_recovery = rec[0] == 't';
	p->pg_tli_null = PQgetisnull(res, 0, 1);
	p->pg_tli = 0;
	if (!p->pg_tli_null) {
		tli = PQgetvalue(res, 0, 1);
		errno = 0;
		p->pg_tli = strtoll(tli, &end, 10);
		if (errno != 0 || end == tli || *end != '\0' || p->pg_tli <= 0) {
			snprintf(p->pg_error, sizeof(p->pg_error), "unexpected timeline value");
			return;
		}
	}
	p->pg_have_row = true;
}

/* Drives the query: finish sending, then read results until libpq says there are no more. */
static void probe_pg_pump(struct probe *p)
{
	PGresult *res;
	char err[sizeof(p->result.detail)];
	int rc;

	if (!PQconsumeInput(p->pg))
		goto broken;
	if (p->pg_flushing) {
		rc = PQflush(p->pg);
		if (rc < 0)
			goto broken;
		if (rc == 1) {
			if (!probe_watch(p, PQsocket(p->pg), EV_READ | EV_WRITE, -1))
				probe_fail(p, "cannot watch the socket");
			return;
		}
		p->pg_flushing = false;
	}
	while (!PQisBusy(p->pg)) {
		res = PQgetResult(p->pg);
		if (res == NULL) {
			probe_pg_evaluate(p);
			return;
		}
		probe_pg_take(p, res);
		PQclear(res);
	}
	if (PQstatus(p->pg) == CONNECTION_BAD)
		goto broken;
	if (!probe_watch(p, PQsocket(p->pg), EV_READ, -1))
		probe_fail(p, "cannot watch the socket");
	return;
broken:
	probe_pg_error(p->pg, err, sizeof(err));
	probe_fail(p, "query: %s", err);
}

static void probe_pg_query(struct probe *p)
{
	char err[sizeof(p->result.detail)];

	p->pg_have_row = false;
	p->pg_error[0] = '\0';
	if (!PQsendQuery(p->pg, probe_pg_sql)) {
		probe_pg_error(p->pg, err, sizeof(err));
		probe_fail(p, "query: %s", err);
		return;
	}
	p->pg_flushing = true;
	probe_pg_pump(p);
}

static void probe_pg_io(struct probe *p, short what)
{
	(void)what;
	if (p->conn == PROBE_CONN_CONNECTING)
		probe_pg_connect_step(p, PQconnectPoll(p->pg));
	else
		probe_pg_pump(p);
}

static bool probe_pg_idle_readable(struct probe *p)
{
	PGnotify *n;

	/* Between checks the server may send ParameterStatus or notices; only a broken connection
	 * (EOF, reset, or a FATAL such as an administrator's shutdown) ends it. */
	if (!PQconsumeInput(p->pg) || PQstatus(p->pg) == CONNECTION_BAD)
		return false;
	while ((n = PQnotifies(p->pg)) != NULL)
		PQfreemem(n);
	return true;
}

static int probe_pg_fd(const struct probe *p)
{
	return p->pg != NULL ? PQsocket(p->pg) : -1;
}

static void probe_pg_close(struct probe *p, bool polite)
{
	/* Non-blocking, so PQfinish() at most tries to send Terminate and closes. */
	(void)polite;
	if (p->pg != NULL)
		PQfinish(p->pg);
	p->pg = NULL;
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

/* Turns libmariadb's "wait for" bits into an event; MYSQL_WAIT_TIMEOUT asks for a timer of its
 * own (libmariadb's timeouts, a backstop behind ours). */
static bool probe_my_wait(struct probe *p, int status)
{
	short what = 0;

	if (status & MYSQL_WAIT_READ)
		what |= EV_READ;
	if (status & MYSQL_WAIT_WRITE)
		what |= EV_WRITE;
	return probe_watch(p, mysql_get_socket(p->my), what,
	                   (status & MYSQL_WAIT_TIMEOUT) ? (int64_t)mysql_get_timeout_value_ms(p->my) : -1);
}

static void probe_my_evaluate(struct probe *p)
{
	MYSQL_RES *res = p->my_res;
	MYSQL_ROW row;
	long v[2];
	char *end;
	int i;

	if (mysql_num_fields(res) != 2 || mysql_num_rows(res) != 1 || (row = mysql_fetch_row(res)) == NULL) {
		probe_fail(p, "query: unexpected answer (%u columns, %llu rows)", mysql_num_fields(res),
		           (unsigned long long)mysql_num_rows(res));
		return;
	}
	for (i = 0; i < 2; i++) {
		if (row[i] == NULL) {
			probe_fail(p, "query: unexpected NULL");
			return;
		}
		errno = 0;
		v[i] = strtol(row[i], &end, 10);
		if (errno != 0 || end == row[i] || *end != '\0') {
			probe_fail(p, "query: unexpected value '%.32s'", row[i]);
			return;
		}
	}
	mysql_free_result(res);
	p->my_res = NULL;
	p->my_idle = true;
	probe_answer(p, v[0] == 0 && v[1] == 0 ? ROLE_WRITER : ROLE_READER, 0,
	             "read_only=%ld innodb_read_only=%ld", v[0], v[1]);
}

/* Moves on from what the last _start/_cont call returned: wait for what it asks, or take its
 * result and start the next call. */
static void probe_my_advance(struct probe *p, int status)
{
	char err[sizeof(p->result.detail)];

	for (;;) {
		if (status != 0) {
			if (!probe_my_wait(p, status))
				probe_fail(p, "cannot watch the socket");
			return;
		}
		switch (p->my_phase) {
		case PROBE_MY_CONNECT:
			if (p->my_ret == NULL) {
				probe_my_error(p->my, err, sizeof(err));
				probe_connect_failed(p, err);
				return;
			}
			probe_connected(p);
			return;
		case PROBE_MY_QUERY:
			if (p->my_rc != 0)
				goto failed;
			p->my_phase = PROBE_MY_STORE;
			status = mysql_store_result_start(&p->my_res, p->my);
			continue;
		case PROBE_MY_STORE:
			if (p->my_res == NULL) {
				if (mysql_errno(p->my) != 0)
					goto failed;
				probe_fail(p, "query: no result set");
				return;
			}
			probe_my_evaluate(p);
			return;
		}
	}
failed:
	probe_my_error(p->my, err, sizeof(err));
	probe_fail(p, "query: %s", err);
}

static void probe_my_connect(struct probe *p)
{
	/* libmariadb's own timeouts are whole seconds and only a backstop: a second more than ours,
	 * so that our timer speaks first and the detail is ours. */
	unsigned int secs = (unsigned int)((p->timeout_ms + 999) / 1000 + 1);
	unsigned int proto = MYSQL_PROTOCOL_TCP;
	p->my_idle = false;
	p->my = mysql_init(NULL);
	if (p->my == NULL) {
		probe_connect_failed(p, "out of memory");
		return;
	}
	/* Without its non-blocking context the _start calls would not be usable at all. */
	if (mysql_options(p->my, MYSQL_OPT_NONBLOCK, 0) != 0) {
		probe_connect_failed(p, "cannot enable the non-blocking API");
		return;
	}
	mysql_options(p->my, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
	mysql_options(p->my, MYSQL_OPT_READ_TIMEOUT, &secs);
	mysql_options(p->my, MYSQL_OPT_WRITE_TIMEOUT, &secs);
	/* "localhost" would otherwise mean the Unix socket; we always hand it an address. */
	mysql_options(p->my, MYSQL_OPT_PROTOCOL, &proto);
	mysql_options4(p->my, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "repoint-probe");
	p->my_phase = PROBE_MY_CONNECT;
	p->my_ret = NULL;
	probe_my_advance(p, mysql_real_connect_start(&p->my_ret, p->my, p->addrs[p->addr_idx].text,
	                                             p->user[0] != '\0' ? p->user : NULL,
	                                             p->password[0] != '\0' ? p->password : NULL,
	                                             p->database[0] != '\0' ? p->database : NULL,
	                                             p->port, NULL, 0));
}

static void probe_my_query(struct probe *p)
{
	p->my_idle = false;
	p->my_phase = PROBE_MY_QUERY;
	p->my_rc = 0;
	probe_my_advance(p, mysql_real_query_start(&p->my_rc, p->my, probe_my_sql, sizeof(probe_my_sql) - 1));
}

static void probe_my_io(struct probe *p, short what)
{
	int ready = 0;

	if (what & EV_READ)
		ready |= MYSQL_WAIT_READ;
	if (what & EV_WRITE)
		ready |= MYSQL_WAIT_WRITE;
	if (what & EV_TIMEOUT)
		ready |= MYSQL_WAIT_TIMEOUT;
	switch (p->my_phase) {
	case PROBE_MY_CONNECT:
		probe_my_advance(p, mysql_real_connect_cont(&p->my_ret, p->my, ready));
		return;
	case PROBE_MY_QUERY:
		probe_my_advance(p, mysql_real_query_cont(&p->my_rc, p->my, ready));
		return;
	case PROBE_MY_STORE:
		probe_my_advance(p, mysql_store_result_cont(&p->my_res, p->my, ready));
		return;
	}
}

/* Nothing is due from an idle MySQL connection: anything readable is EOF, a reset or the error a
 * server sends before it closes an idle session. Peeked, so libmariadb's stream stays intact. */
static bool probe_sock_idle_readable(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

static bool probe_my_idle_readable(struct probe *p)
{
	return probe_sock_idle_readable(mysql_get_socket(p->my));
}

static int probe_my_fd(const struct probe *p)
{
	return p->my != NULL ? (int)mysql_get_socket(p->my) : -1;
}

static void probe_my_close(struct probe *p, bool polite)
{
	if (p->my_res != NULL)
		mysql_free_result(p->my_res);
	p->my_res = NULL;
	if (p->my == NULL)
		return;
	/* mysql_close() sends COM_QUIT with a blocking write (bounded only by the write timeout).
	 * On an idle, healthy connection that write lands in an empty socket buffer; in any other
	 * case mariadb_cancel() shuts the socket down first so the write fails at once. */
	if (!(polite && p->my_idle))
		mariadb_cancel(p->my);
	mysql_close(p->my);
	p->my = NULL;
	p->my_idle = false;
}

/* ---- Redis ----------------------------------------------------------------------------------- */

static void probe_rd_evaluate(struct probe *p, const redisReply *r)
{
	const redisReply *kind;
	const char *state = "";

	if (r->type == REDIS_REPLY_ERROR) {
		probe_fail(p, "ROLE: %s", r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    (r->element[0]->type != REDIS_REPLY_STRING && r->element[0]->type != REDIS_REPLY_STATUS)) {
		probe_fail(p, "unexpected reply to ROLE");
		return;
	}
	kind = r->element[0];
	if (strcmp(kind->str, "master") == 0) {
		size_t replicas = r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY
		                          ? r->element[2]->elements : 0;
		probe_answer(p, ROLE_WRITER, 0, "role=master replicas=%zu", replicas);
		return;
	}
	if (strcmp(kind->str, "slave") == 0) {
		/* ["slave", host, port, state, offset]: the link state helps whoever reads /status. */
		if (r->elements >= 4 && r->element[3]->type == REDIS_REPLY_STRING)
			state = r->element[3]->str;
		probe_answer(p, ROLE_READER, 0, "role=slave%s%.40s", state[0] != '\0' ? " link=" : "", state);
		return;
	}
	probe_fail(p, "not a data node: role=%.60s", kind->str);
}

/* Takes the replies in order: AUTH's (an error fails the check), CLIENT SETNAME's (ignored:
 * some services rename or forbid it), then ROLE's. */
static void probe_rd_take(struct probe *p, redisReply *r)
{
	p->rd_pending--;
	if (p->rd_auth_left > 0) {
		p->rd_auth_left--;
		if (r->type == REDIS_REPLY_ERROR)
			probe_fail(p, "AUTH: %s", r->str);
		return;
	}
	if (p->rd_ignore_left > 0) {
		p->rd_ignore_left--;
		return;
	}
	probe_rd_evaluate(p, r);
}

/* Writes what is queued, then reads replies until ROLE's has been taken. */
static void probe_rd_pump(struct probe *p)
{
	char buf[4096];
	void *reply;
	ssize_t n;

	while (p->rd_outoff < p->rd_outlen) {
		n = send(p->rd_fd, p->rd_out + p->rd_outoff, p->rd_outlen - p->rd_outoff, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			probe_fail(p, "write: %s", strerror(errno));
			return;
		}
		p->rd_outoff += (size_t)n;
	}
	if (p->rd_outoff == p->rd_outlen && p->rd_out != NULL) {
		free(p->rd_out);
		p->rd_out = NULL;
		p->rd_outlen = p->rd_outoff = 0;
	}
	for (;;) {
		n = recv(p->rd_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0) {
			probe_fail(p, "connection closed by the server");
			return;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			probe_fail(p, "read: %s", strerror(errno));
			return;
		}
		if (redisReaderFeed(p->rd_reader, buf, (size_t)n) != REDIS_OK) {
			probe_fail(p, "protocol error: %s", p->rd_reader->errstr);
			return;
		}
		for (;;) {
			reply = NULL;
			if (redisReaderGetReply(p->rd_reader, &reply) != REDIS_OK) {
				probe_fail(p, "protocol error: %s", p->rd_reader->errstr);
				return;
			}
			if (reply == NULL)
				break;
			if (p->rd_pending <= 0) {
				freeReplyObject(reply);
				probe_fail(p, "unexpected reply");
				return;
			}
			probe_rd_take(p, reply);
			freeReplyObject(reply);
			if (p->done)
				return;
		}
	}
	if (!probe_watch(p, p->rd_fd, (short)(EV_READ | (p->rd_out != NULL ? EV_WRITE : 0)), -1))
		probe_fail(p, "cannot watch the socket");
}

/* Appends one formatted command to the output queue. */
static bool probe_rd_queue(struct probe *p, int len, char *cmd)
{
	char *grown;

	if (len < 0 || cmd == NULL)
		return false;
	grown = realloc(p->rd_out, p->rd_outlen + (size_t)len);
	if (grown == NULL) {
		redisFreeCommand(cmd);
		return false;
	}
	memcpy(grown + p->rd_outlen, cmd, (size_t)len);
	redisFreeCommand(cmd);
	p->rd_out = grown;
	p->rd_outlen += (size_t)len;
	return true;
}

static void probe_rd_query(struct probe *p)
{
	char *cmd = NULL;
	int len = redisFormatCommand(&cmd, "ROLE");

	if (!probe_rd_queue(p, len, cmd)) {
		probe_fail(p, "out of memory");
		return;
	}
	p->rd_pending++;
	probe_rd_pump(p);
}

/* The TCP connection is up: AUTH (when there is a password) and CLIENT SETNAME go in the same
 * write as the first ROLE, so connect + check costs one round trip after the handshake. */
static void probe_rd_established(struct probe *p)
{
	char *cmd = NULL;
	int len;
	bool ok = true;

	p->rd_reader = redisReaderCreate();
	if (p->rd_reader == NULL) {
		probe_connect_failed(p, "out of memory");
		return;
	}
	p->rd_pending = p->rd_auth_left = p->rd_ignore_left = 0;
	if (p->password[0] != '\0') {
		if (p->user[0] != '\0')
			len = redisFormatCommand(&cmd, "AUTH %s %s", p->user, p->password);
		else
			len = redisFormatCommand(&cmd, "AUTH %s", p->password);
		ok = probe_rd_queue(p, len, cmd);
		p->rd_pending++;
		p->rd_auth_left++;
	}
	cmd = NULL;
	len = redisFormatCommand(&cmd, "CLIENT SETNAME %s", "repoint-probe");
	ok = ok && probe_rd_queue(p, len, cmd);
	p->rd_pending++;
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
	int one = 1;

	p->rd_fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->rd_fd < 0) {
		probe_connect_failed(p, strerror(errno));
		return;
	}
	setsockopt(p->rd_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(p->rd_fd, (const struct sockaddr *)&a->sa, a->salen) == 0) {
		probe_rd_established(p);
		return;
	}
	if (errno != EINPROGRESS) {
		probe_connect_failed(p, strerror(errno));
		return;
	}
	if (!probe_watch(p, p->rd_fd, EV_WRITE, -1))
		probe_connect_failed(p, "cannot watch the socket");
}

static void probe_rd_io(struct probe *p, short what)
{
	int err = 0;
	socklen_t len = sizeof(err);

	(void)what;
	if (p->conn == PROBE_CONN_QUERYING) {
		probe_rd_pump(p);
		return;
	}
	if (getsockopt(p->rd_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err != 0) {
		probe_connect_failed(p, strerror(err));
		return;
	}
	probe_rd_established(p);
}

static bool probe_rd_idle_readable(struct probe *p)
{
	return probe_sock_idle_readable(p->rd_fd);
}

static int probe_rd_fd(const struct probe *p)
{
	return p->rd_fd;
}

static void probe_rd_close(struct probe *p, bool polite)
{
	(void)polite;
	if (p->rd_fd >= 0)
		close(p->rd_fd);
	p->rd_fd = -1;
	if (p->rd_reader != NULL)
		redisReaderFree(p->rd_reader);
	p->rd_reader = NULL;
	free(p->rd_out);
	p->rd_out = NULL;
	p->rd_outlen = p->rd_outoff = 0;
	p->rd_pending = p->rd_auth_left = p->rd_ignore_left = 0;
}

/* ---- public ---------------------------------------------------------------------------------- */

static const struct probe_engine probe_engines[] = {
	[PROTOCOL_POSTGRES] = { probe_pg_connect, probe_pg_query, probe_pg_io, probe_pg_idle_readable,
	                        probe_pg_fd, probe_pg_close },
	[PROTOCOL_MYSQL] = { probe_my_connect, probe_my_query, probe_my_io, probe_my_idle_readable,
	                     probe_my_fd, probe_my_close },
	[PROTOCOL_REDIS] = { probe_rd_connect, probe_rd_query, probe_rd_io, probe_rd_idle_readable,
	                     probe_rd_fd, probe_rd_close },
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
	p->rd_fd = -1;
	p->host = probe_strdup0(params->host);
	p->user = probe_strdup0(params->user);
	p->password = probe_strdup0(params->password);
	p->database = probe_strdup0(params->database);
	p->io = event_new(base, -1, 0, probe_io_cb, p);
	p->timer = evtimer_new(base, probe_timeout_cb, p);
	p->deliver = event_new(base, -1, 0, probe_deliver_cb, p);
	if (p->host == NULL || p->user == NULL || p->password == NULL || p->database == NULL ||
	    p->io == NULL || p->timer == NULL || p->deliver == NULL) {
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

bool probe_run(struct probe *p)
{
	struct timeval tv = { .tv_sec = p->timeout_ms / 1000, .tv_usec = (p->timeout_ms % 1000) * 1000 };

	if (p->busy)
		return false;
	p->busy = true;
	p->done = false;
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

void probe_on_idle_lost(struct probe *p, probe_lost_cb cb)
{
	p->lost_cb = cb;
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
	if (p->io != NULL)
		event_free(p->io);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->deliver != NULL)
		event_free(p->deliver);
	free(p->host);
	free(p->user);
	free(p->password);
	free(p->database);
	free(p);
}
