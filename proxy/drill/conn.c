/* drill/conn.c - a drill's client connection: connect + one statement at a time, on the loop.
 *
 *   NONE ──run──▶ CONNECTING ──▶ QUERYING ──answer──▶ IDLE ──run──▶ QUERYING ...
 *    ▲                                                   │
 *    └────────── any failure or a timeout ◀──────────────┘   (drill_conn_close_engine() alone)
 *
 * The shape is the one of sources/probe.c (which asks roles and cannot run arbitrary statements):
 * one evtimer bounds an operation, one deferred event delivers its result. Driving the libraries
 * on the loop is sources/engine.c's (shared with the probes); what is left here is what to send,
 * how to read the answer, and how to sort a failure: every engine step ends in conn_step(). */
#include "drill/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <mysql.h>

#include "sources/engine.h"
#include "util.h"

/* A Redis command of a drill has a handful of words. */
#define CONN_RD_MAX_ARGS 16

enum conn_state { CONN_NONE, CONN_CONNECTING, CONN_QUERYING, CONN_IDLE };

struct drill_conn {
	struct event_base *base;
	struct drill_endpoint ep;      /* user/password/database point at our copies below */
	char *user, *password, *database;
	drill_conn_cb cb;
	void *cb_arg;
	struct event *timer, *deliver;
	enum conn_state state;
	bool busy;                     /* an operation is under way: its callback is owed */
	bool done;                     /* its result waits in `deliver` */
	bool connected_now;            /* this operation opened the connection */
	int64_t timeout_ms;
	char *stmt;                    /* the operation's statement, NULL for connect only */
	struct drill_result res;
	char *value;                   /* owned copy behind res.value */

	/* The engine's connection: socket event, library handles, Redis stream. */
	struct engine_conn eng;

	/* Postgres: what the statement's results said so far */
	bool pg_failed;
	char *pg_value;                /* first column of the first row seen so far */
	char pg_state[8];
	char pg_msg[256];

	/* Redis */
	int rd_auth_left;              /* replies still expected that belong to AUTH */
};

static const char *const kind_names[DRILL_NKINDS] = {
	[DRILL_OK] = "ok",
	[DRILL_ERR_REFUSED] = "refused",
	[DRILL_ERR_CLOSED] = "closed",
	[DRILL_ERR_TIMEOUT] = "timeout",
	[DRILL_ERR_READ_ONLY] = "read_only",
	[DRILL_ERR_SERVER] = "server_error",
};

const char *drill_kind_name(enum drill_kind k)
{
	return (unsigned)k < DRILL_NKINDS ? kind_names[k] : "unknown";
}

int drill_kind_parse(const char *name)
{
	for (int i = 0; i < DRILL_NKINDS; i++)
		if (name != NULL && strcmp(name, kind_names[i]) == 0)
			return i;
	return -1;
}

/* ---- classification (pure) -------------------------------------------------------------------- */

enum drill_kind drill_classify_pg(const char *sqlstate, const char *message, bool in_connect)
{
	const char *m = message != NULL ? message : "";

	if (strstr(m, "timeout") != NULL || strstr(m, "timed out") != NULL)
		return DRILL_ERR_TIMEOUT;
	if (in_connect) {
		/* libpq's words for a TCP refusal and for a peer that hung up during the handshake;
		 * anything else the server (or repoint, 57P03) said means it refused the session. */
		if (strstr(m, "server closed the connection") != NULL || strstr(m, "EOF") != NULL ||
		    strstr(m, "Connection reset") != NULL)
			return DRILL_ERR_CLOSED;
		return DRILL_ERR_REFUSED;
	}
	if (sqlstate != NULL && strcmp(sqlstate, "25006") == 0)
		return DRILL_ERR_READ_ONLY;
	/* txid_current() and friends on a standby raise a plain error ("cannot assign TransactionIds
	 * during recovery"), not 25006: the words are the only sign. */
	if (strstr(m, "during recovery") != NULL || strstr(m, "read-only transaction") != NULL)
		return DRILL_ERR_READ_ONLY;
	/* 57P01..57P03: the server (or repoint) is ending the session: to the client it is gone. */
	if (sqlstate != NULL && strncmp(sqlstate, "57P0", 4) == 0)
		return DRILL_ERR_CLOSED;
	if (sqlstate == NULL || sqlstate[0] == '\0')
		return DRILL_ERR_CLOSED;  /* libpq's own error: the connection broke */
	return DRILL_ERR_SERVER;
}

enum drill_kind drill_classify_mysql(unsigned err, bool in_connect)
{
	switch (err) {
	case 1290: /* ER_OPTION_PREVENTS_STATEMENT: --read-only */
	case 1792: /* ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION */
	case 1836: /* ER_READ_ONLY_MODE */
		return DRILL_ERR_READ_ONLY;
	case 2002: /* CR_CONNECTION_ERROR */
	case 2003: /* CR_CONN_HOST_ERROR */
		return DRILL_ERR_REFUSED;
	case 2006: /* CR_SERVER_GONE_ERROR */
	case 2013: /* CR_SERVER_LOST */
	case 2055: /* CR_SERVER_LOST_EXTENDED */
	case 1927: /* ER_CONNECTION_KILLED */
		return DRILL_ERR_CLOSED;
	default:
		break;
	}
	return in_connect ? DRILL_ERR_REFUSED : DRILL_ERR_SERVER;
}

enum drill_kind drill_classify_redis(const char *error)
{
	if (error != NULL && strncmp(error, "READONLY", 8) == 0)
		return DRILL_ERR_READ_ONLY;
	return DRILL_ERR_SERVER;
}

/* ---- common ----------------------------------------------------------------------------------- */

static void conn_close_engine(struct drill_conn *c);
static void conn_start_query(struct drill_conn *c);

/* Ends the operation once: a failure closes the connection, a success leaves it idle. value is
 * taken over (freed here on failure). */
static void conn_end(struct drill_conn *c, enum drill_kind kind, char *value, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void conn_end(struct drill_conn *c, enum drill_kind kind, char *value, const char *fmt, ...)
{
	char msg[sizeof(c->res.message)];
	va_list ap;

	if (!c->busy || c->done) {
		free(value);
		return;
	}
	c->done = true;
	event_del(c->timer);
	msg[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	memset(&c->res, 0, sizeof(c->res));
	c->res.kind = kind;
	c->res.in_connect = c->state == CONN_CONNECTING || c->state == CONN_NONE;
	str_oneline(c->res.message, sizeof(c->res.message), msg);
	free(c->value);
	c->value = NULL;
	if (kind == DRILL_OK) {
		c->res.connected = c->connected_now;
		c->value = value;
		c->state = CONN_IDLE;
		engine_unwatch(&c->eng);
	} else {
		free(value);
		conn_close_engine(c);
	}
	event_active(c->deliver, EV_TIMEOUT, 1);
}

static void conn_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill_conn *c = arg;
	struct drill_result r = c->res;
	char *value = c->value;

	(void)fd;
	(void)what;
	/* Taken out first: the callback may start the next operation or free the conn. */
	c->value = NULL;
	r.value = value;
	c->busy = false;
	c->done = false;
	c->cb(c->cb_arg, &r);
	free(value);
}

static void conn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill_conn *c = arg;

	(void)fd;
	(void)what;
	conn_end(c, DRILL_ERR_TIMEOUT, NULL, "timeout after %lld ms (%s)", (long long)c->timeout_ms,
		 c->state == CONN_CONNECTING ? "connecting" : "waiting for the answer");
}

/* The connection is up: run the statement, or end here when there is none. */
static void conn_connected(struct drill_conn *c)
{
	c->connected_now = true;
	c->state = CONN_QUERYING;
	conn_start_query(c);
}

/* ---- engine steps ----------------------------------------------------------------------------- */

static void conn_pg_fail(struct drill_conn *c, const char *sqlstate, const char *msg);
static void conn_pg_finish(struct drill_conn *c);
static void conn_my_fail(struct drill_conn *c);
static void conn_my_finish(struct drill_conn *c);
static void conn_rd_established(struct drill_conn *c);
static void conn_rd_fail(struct drill_conn *c);

/* Acts on how an engine step ended: connected, answered, or failed (sorted per engine). */
static void conn_step(struct drill_conn *c, enum engine_step st)
{
	char msg[sizeof(c->res.message)];

	switch (st) {
	case ENGINE_WAITING:
	case ENGINE_TAKEN:
		return;
	case ENGINE_READY:
		if (c->state == CONN_CONNECTING) {
			if (c->ep.protocol == PROTOCOL_REDIS)
				conn_rd_established(c);
			else
				conn_connected(c);
		} else if (c->ep.protocol == PROTOCOL_POSTGRES) {
			conn_pg_finish(c);
		} else if (c->ep.protocol == PROTOCOL_MYSQL) {
			conn_my_finish(c);
		}
		return;
	case ENGINE_LIB_ERROR:
	case ENGINE_ERROR:
		break;
	}
	switch (c->ep.protocol) {
	case PROTOCOL_POSTGRES:
		if (st == ENGINE_LIB_ERROR)
			engine_pg_error(&c->eng, msg, sizeof(msg));
		else
			snprintf(msg, sizeof(msg), "%s", c->eng.msg);
		conn_pg_fail(c, NULL, msg);
		return;
	case PROTOCOL_MYSQL:
		if (st == ENGINE_LIB_ERROR)
			conn_my_fail(c);
		else
			/* A socket that cannot be watched is a broken connection; the rest (no memory, no
			 * non-blocking API) only happens while connecting: a refusal. */
			conn_end(c, c->eng.op != NULL ? DRILL_ERR_CLOSED : DRILL_ERR_REFUSED, NULL, "%s", c->eng.msg);
		return;
	case PROTOCOL_REDIS:
		conn_rd_fail(c);
		return;
	}
}

/* ---- Postgres --------------------------------------------------------------------------------- */

static void conn_pg_fail(struct drill_conn *c, const char *sqlstate, const char *msg)
{
	bool in_connect = c->state == CONN_CONNECTING;
	const char *reason = strstr(msg, "failed: ");

	/* 'connection to server at "h", port N failed: REASON': the reason is what matters. */
	if (strncmp(msg, "connection to server", 20) == 0 && reason != NULL)
		msg = reason + 8;
	conn_end(c, drill_classify_pg(sqlstate, msg, in_connect), NULL, "%s", msg[0] ? msg : "unknown error");
}

static void conn_pg_connect(struct drill_conn *c)
{
	struct engine_pg_params kv = { .n = 0 };
	char port[8];

	snprintf(port, sizeof(port), "%u", (unsigned)c->ep.port);
	/* hostaddr: libpq must not resolve (synchronously); host is an IP literal anyway. */
	engine_pg_tls_params(&kv, c->ep.tls != NULL ? net_tls_get_settings(c->ep.tls) : NULL,
			     c->ep.tls_name[0] != '\0' ? c->ep.tls_name : c->ep.host);
	engine_pg_param(&kv, "hostaddr", c->ep.host);
	engine_pg_param(&kv, "port", port);
	engine_pg_param(&kv, "user", c->user);
	engine_pg_param(&kv, "password", c->password);
	engine_pg_param(&kv, "dbname", c->database);
	engine_pg_param(&kv, "application_name", "repoint-drill");
	/* As for the probes: GSS may talk to a KDC synchronously, and the environment must not turn
	 * a standby into a refused connection. */
	engine_pg_param(&kv, "gssencmode", "disable");
	engine_pg_param(&kv, "target_session_attrs", "any");
	conn_step(c, engine_pg_connect(&c->eng, &kv));
}

/* Takes one result: the first error, the first column of the first row; COPY ends the operation. */
static bool conn_pg_take(void *arg, PGresult *res)
{
	struct drill_conn *c = arg;

	switch (PQresultStatus(res)) {
	case PGRES_FATAL_ERROR:
	case PGRES_NONFATAL_ERROR:
		if (!c->pg_failed) {
			const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			c->pg_failed = true;
			snprintf(c->pg_state, sizeof(c->pg_state), "%s", st != NULL ? st : "");
			str_oneline(c->pg_msg, sizeof(c->pg_msg), PQresultErrorMessage(res));
		}
		break;
	case PGRES_TUPLES_OK:
		if (c->pg_value == NULL && PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
			c->pg_value = strdup(PQgetvalue(res, 0, 0));
		break;
	case PGRES_COPY_IN:
	case PGRES_COPY_OUT:
	case PGRES_COPY_BOTH:
		conn_end(c, DRILL_ERR_SERVER, NULL, "COPY is not supported in a drill statement");
		return true;
	default:
		break;
	}
	if (PQstatus(c->eng.pg) == CONNECTION_BAD && c->pg_failed) {
		conn_pg_fail(c, c->pg_state, c->pg_msg);
		return true;
	}
	return false;
}

/* The last result is in: the statement's first error, or its value. */
static void conn_pg_finish(struct drill_conn *c)
{
	char *value = c->pg_value;

	c->pg_value = NULL;
	if (c->pg_failed) {
		free(value);
		conn_pg_fail(c, c->pg_state, c->pg_msg);
	} else {
		conn_end(c, DRILL_OK, value, NULL);
	}
}

static void conn_pg_query(struct drill_conn *c)
{
	c->pg_failed = false;
	c->pg_state[0] = c->pg_msg[0] = '\0';
	conn_step(c, engine_pg_query(&c->eng, c->stmt));
}

/* ---- MariaDB ---------------------------------------------------------------------------------- */

static void conn_my_fail(struct drill_conn *c)
{
	unsigned err = mysql_errno(c->eng.my);
	const char *msg = mysql_error(c->eng.my);

	conn_end(c, drill_classify_mysql(err, c->state == CONN_CONNECTING), NULL, "%u: %s", err,
		 msg[0] ? msg : "unknown error");
}

/* The statement is done: its first column of the first row when it had a result set. */
static void conn_my_finish(struct drill_conn *c)
{
	MYSQL_ROW row;
	char *value = NULL;

	if (c->eng.my_res != NULL) {
		/* A stored result is in memory: fetching rows does no I/O. */
		row = mysql_fetch_row(c->eng.my_res);
		if (row != NULL && mysql_num_fields(c->eng.my_res) > 0 && row[0] != NULL)
			value = strdup(row[0]);
		mysql_free_result(c->eng.my_res);
		c->eng.my_res = NULL;
	}
	conn_end(c, DRILL_OK, value, NULL);
}

static void conn_my_connect(struct drill_conn *c)
{
	conn_step(c, engine_my_connect(&c->eng, c->ep.host, c->ep.port, c->user, c->password, c->database,
				       c->timeout_ms, "repoint-drill",
				       c->ep.tls != NULL ? net_tls_get_settings(c->ep.tls) : NULL, c->ep.tls_name));
}

static void conn_my_query(struct drill_conn *c)
{
	conn_step(c, engine_my_query(&c->eng, c->stmt, strlen(c->stmt)));
}

/* ---- Redis ------------------------------------------------------------------------------------ */



/* The reply as text for whoever asked: strings as they are, integers in decimal. */
static char *conn_rd_text(const redisReply *r)
{
	char buf[32];

	switch (r->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
		return strndup(r->str, r->len);
	case REDIS_REPLY_INTEGER:
		snprintf(buf, sizeof(buf), "%lld", r->integer);
		return strdup(buf);
	case REDIS_REPLY_ARRAY:
		snprintf(buf, sizeof(buf), "[%zu elements]", r->elements);
		return strdup(buf);
	default:
		return NULL;
	}
}

/* Takes one reply: AUTH's first (an error there refuses the session), then the command's. */
static bool conn_rd_take(void *arg, redisReply *r)
{
	struct drill_conn *c = arg;

	if (c->rd_auth_left > 0) {
		c->rd_auth_left--;
		if (r->type == REDIS_REPLY_ERROR) {
			c->state = CONN_CONNECTING;  /* reported as a refusal of the session */
			conn_end(c, DRILL_ERR_REFUSED, NULL, "AUTH: %s", r->str);
			return true;
		}
		if (c->eng.rd_pending == 0) {
			conn_end(c, DRILL_OK, NULL, NULL);
			return true;
		}
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR)
		conn_end(c, drill_classify_redis(r->str), NULL, "%s", r->str);
	else
		conn_end(c, DRILL_OK, conn_rd_text(r), NULL);
	return true;
}

/* Sorts a failure of the socket or the stream the way an application would see it. */
static void conn_rd_fail(struct drill_conn *c)
{
	const struct engine_conn *e = &c->eng;
	const char *op = e->op != NULL ? e->op : "";
	bool in_connect = c->state == CONN_CONNECTING;
	enum drill_kind kind;

	if (strcmp(op, "protocol") == 0 || strcmp(op, "unexpected") == 0)
		kind = DRILL_ERR_SERVER;
	else if (strcmp(op, "connect") == 0 || strcmp(op, "read") == 0)
		kind = e->sys_errno == ECONNREFUSED ? DRILL_ERR_REFUSED : DRILL_ERR_CLOSED;
	else
		kind = in_connect ? DRILL_ERR_REFUSED : DRILL_ERR_CLOSED;
	/* The engine says only strerror() for the connect's own calls: name the call. */
	if (strcmp(op, "socket") == 0 || strcmp(op, "connect") == 0)
		conn_end(c, kind, NULL, "%s: %s", op, e->msg);
	else
		conn_end(c, kind, NULL, "%s", e->msg);
}



/* The TCP connection is up: AUTH (with a password) goes in the same write as the statement. */
static void conn_rd_established(struct drill_conn *c)
{
	char *cmd = NULL;
	int len;

	c->rd_auth_left = 0;
	if (c->password[0] != '\0') {
		if (c->user[0] != '\0')
			len = redisFormatCommand(&cmd, "AUTH %s %s", c->user, c->password);
		else
			len = redisFormatCommand(&cmd, "AUTH %s", c->password);
		if (!engine_rd_command(&c->eng, len, cmd)) {
			conn_end(c, DRILL_ERR_REFUSED, NULL, "out of memory");
			return;
		}
		c->rd_auth_left++;
	}
	conn_connected(c);
}

static void conn_rd_connect(struct drill_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sslen;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, c->ep.host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons(c->ep.port);
		sslen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, c->ep.host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(c->ep.port);
		sslen = sizeof(struct sockaddr_in6);
	} else {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "not an IP address: %s", c->ep.host);
		return;
	}
	conn_step(c, engine_rd_connect(&c->eng, (const struct sockaddr *)&ss, sslen, c->ep.tls,
				       c->ep.tls_name[0] != '\0' ? c->ep.tls_name : c->ep.host, c->ep.host));
}

static void conn_rd_query(struct drill_conn *c)
{
	char *copy, *save = NULL, *word;
	const char *argv[CONN_RD_MAX_ARGS];
	size_t lens[CONN_RD_MAX_ARGS];
	int argc = 0, len;
	char *cmd = NULL;

	if (c->stmt == NULL) {
		if (c->eng.rd_pending == 0) {
			conn_end(c, DRILL_OK, NULL, NULL);
			return;
		}
		conn_step(c, engine_rd_pump(&c->eng));
		return;
	}
	copy = strdup(c->stmt);
	if (copy == NULL) {
		conn_end(c, DRILL_ERR_SERVER, NULL, "out of memory");
		return;
	}
	for (word = strtok_r(copy, " \t", &save); word != NULL && argc < CONN_RD_MAX_ARGS;
	     word = strtok_r(NULL, " \t", &save)) {
		argv[argc] = word;
		lens[argc] = strlen(word);
		argc++;
	}
	len = argc > 0 ? redisFormatCommandArgv(&cmd, argc, argv, lens) : -1;
	free(copy);
	if (!engine_rd_command(&c->eng, len, cmd)) {
		conn_end(c, DRILL_ERR_SERVER, NULL, argc > 0 ? "out of memory" : "empty command");
		return;
	}
	conn_step(c, engine_rd_pump(&c->eng));
}

/* ---- dispatch --------------------------------------------------------------------------------- */

static void conn_start_query(struct drill_conn *c)
{
	if (c->stmt == NULL && c->ep.protocol != PROTOCOL_REDIS) {
		conn_end(c, DRILL_OK, NULL, NULL);
		return;
	}
	switch (c->ep.protocol) {
	case PROTOCOL_POSTGRES:
		conn_pg_query(c);
		return;
	case PROTOCOL_MYSQL:
		conn_my_query(c);
		return;
	case PROTOCOL_REDIS:
		conn_rd_query(c);
		return;
	}
}

static void conn_io(void *arg, short what)
{
	struct drill_conn *c = arg;

	if (!c->busy || c->done)
		return;
	conn_step(c, engine_io(&c->eng, what));
}

/* The one place a connection is closed, whatever the engine and phase: politely (MySQL's COM_QUIT)
 * only when idle and healthy. */
static void conn_close_engine(struct drill_conn *c)
{
	engine_close(&c->eng, c->state == CONN_IDLE);
	free(c->pg_value);
	c->pg_value = NULL;
	c->rd_auth_left = 0;
	c->state = CONN_NONE;
}


struct drill_conn *drill_conn_new(struct event_base *base, const struct drill_endpoint *ep, drill_conn_cb cb,
				  void *arg)
{
	struct drill_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->base = base;
	c->ep = *ep;
	c->cb = cb;
	c->cb_arg = arg;
	/* First, so that drill_conn_free() below finds a closed connection whatever fails. */
	if (!engine_init(&c->eng, base, ep->protocol, conn_io, conn_pg_take, conn_rd_take, c)) {
		free(c);
		return NULL;
	}
	c->user = strdup(ep->user != NULL ? ep->user : "");
	c->password = strdup(ep->password != NULL ? ep->password : "");
	c->database = strdup(ep->database != NULL ? ep->database : "");
	c->ep.user = c->user;
	c->ep.password = c->password;
	c->ep.database = c->database;
	if (c->ep.tls != NULL)
		net_tls_ref(c->ep.tls);
	c->timer = evtimer_new(base, conn_timeout_cb, c);
	c->deliver = event_new(base, -1, 0, conn_deliver_cb, c);
	if (c->user == NULL || c->password == NULL || c->database == NULL || c->timer == NULL ||
	    c->deliver == NULL) {
		drill_conn_free(c);
		return NULL;
	}
	return c;
}

bool drill_conn_run(struct drill_conn *c, const char *stmt, int64_t timeout_ms)
{
	struct timeval tv;

	if (c->busy)
		return false;
	free(c->stmt);
	c->stmt = stmt != NULL ? strdup(stmt) : NULL;
	c->busy = true;
	c->done = false;
	c->connected_now = false;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
	tv.tv_sec = c->timeout_ms / 1000;
	tv.tv_usec = (c->timeout_ms % 1000) * 1000;
	/* The cached loop time may be an iteration old: the timer would fire that much early. */
	event_base_update_cache_time(c->base);
	evtimer_add(c->timer, &tv);
	if (stmt != NULL && c->stmt == NULL) {
		conn_end(c, DRILL_ERR_SERVER, NULL, "out of memory");
		return true;
	}
	if (c->state == CONN_IDLE) {
		c->state = CONN_QUERYING;
		conn_start_query(c);
		return true;
	}
	c->state = CONN_CONNECTING;
	switch (c->ep.protocol) {
	case PROTOCOL_POSTGRES:
		conn_pg_connect(c);
		break;
	case PROTOCOL_MYSQL:
		conn_my_connect(c);
		break;
	case PROTOCOL_REDIS:
		conn_rd_connect(c);
		break;
	}
	return true;
}

bool drill_conn_busy(const struct drill_conn *c)
{
	return c->busy;
}

bool drill_conn_connected(const struct drill_conn *c)
{
	return c->state == CONN_IDLE;
}

void drill_conn_reset(struct drill_conn *c)
{
	event_del(c->timer);
	event_del(c->deliver);
	c->busy = false;
	c->done = false;
	free(c->value);
	c->value = NULL;
	conn_close_engine(c);
}

void drill_conn_free(struct drill_conn *c)
{
	if (c == NULL)
		return;
	conn_close_engine(c);
	engine_cleanup(&c->eng);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->deliver != NULL)
		event_free(c->deliver);
	free(c->value);
	free(c->stmt);
	free(c->user);
	free(c->password);
	free(c->database);
	net_tls_free(c->ep.tls);
	free(c);
}
