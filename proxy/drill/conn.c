/* drill/conn.c - a drill's client connection: connect + one statement at a time, on the loop.
 *
 *   NONE ──run──▶ CONNECTING ──▶ QUERYING ──answer──▶ IDLE ──run──▶ QUERYING ...
 *    ▲                                                   │
 *    └────────── any failure or a timeout ◀──────────────┘   (drill_conn_close_engine() alone)
 *
 * The shape is the one of sources/probe.c (which asks roles and cannot run arbitrary statements):
 * one evtimer bounds an operation, one deferred event delivers its result, and the engines only
 * turn their library's "wait for this" into conn_watch() and report with conn_end(). */
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

#include "util.h"

/* A Redis command of a drill has a handful of words. */
#define CONN_RD_MAX_ARGS 16

enum conn_state { CONN_NONE, CONN_CONNECTING, CONN_QUERYING, CONN_IDLE };
enum conn_my_phase { CONN_MY_CONNECT, CONN_MY_QUERY, CONN_MY_STORE };

struct drill_conn {
	struct event_base *base;
	struct drill_endpoint ep;      /* user/password/database point at our copies below */
	char *user, *password, *database;
	drill_conn_cb cb;
	void *cb_arg;
	struct event *io, *timer, *deliver;
	enum conn_state state;
	bool busy;                     /* an operation is under way: its callback is owed */
	bool done;                     /* its result waits in `deliver` */
	bool connected_now;            /* this operation opened the connection */
	int64_t timeout_ms;
	char *stmt;                    /* the operation's statement, NULL for connect only */
	struct drill_result res;
	char *value;                   /* owned copy behind res.value */

	/* Postgres */
	PGconn *pg;
	bool pg_flushing;
	bool pg_failed;
	char *pg_value;                /* first column of the first row seen so far */
	char pg_state[8];
	char pg_msg[256];

	/* MariaDB */
	MYSQL *my;
	MYSQL *my_ret;
	int my_rc;
	MYSQL_RES *my_res;
	enum conn_my_phase my_phase;
	bool my_idle;

	/* Redis */
	int rd_fd;
	redisReader *rd;
	char *rd_out;
	size_t rd_outlen, rd_outoff;
	int rd_pending;                /* replies still expected */
	int rd_auth_left;              /* of which AUTH's come first */
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
static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_start_query(struct drill_conn *c);

static bool conn_watch(struct drill_conn *c, int fd, short what, int64_t timeout_ms)
{
	struct timeval tv;

	event_del(c->io);
	if (fd < 0 && (what & (EV_READ | EV_WRITE)) != 0)
		return false;
	if (event_assign(c->io, c->base, (what & (EV_READ | EV_WRITE)) != 0 ? fd : -1, what, conn_io_cb, c) != 0)
		return false;
	if (timeout_ms >= 0) {
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
	}
	return event_add(c->io, timeout_ms >= 0 ? &tv : NULL) == 0;
}

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
		event_del(c->io);
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

/* ---- Postgres --------------------------------------------------------------------------------- */

static void conn_pg_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static void conn_pg_fail(struct drill_conn *c, const char *sqlstate, const char *msg)
{
	bool in_connect = c->state == CONN_CONNECTING;
	const char *reason = strstr(msg, "failed: ");

	/* 'connection to server at "h", port N failed: REASON': the reason is what matters. */
	if (strncmp(msg, "connection to server", 20) == 0 && reason != NULL)
		msg = reason + 8;
	conn_end(c, drill_classify_pg(sqlstate, msg, in_connect), NULL, "%s", msg[0] ? msg : "unknown error");
}

static void conn_pg_connect_step(struct drill_conn *c, PostgresPollingStatusType st)
{
	switch (st) {
	case PGRES_POLLING_OK:
		conn_connected(c);
		return;
	case PGRES_POLLING_READING:
	case PGRES_POLLING_WRITING:
		if (!conn_watch(c, PQsocket(c->pg), st == PGRES_POLLING_READING ? EV_READ : EV_WRITE, -1))
			conn_end(c, DRILL_ERR_REFUSED, NULL, "cannot watch the socket");
		return;
	default:
		conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
		return;
	}
}

static void conn_pg_connect(struct drill_conn *c)
{
	const char *keys[12], *vals[12];
	char port[8];
	int n = 0;

	snprintf(port, sizeof(port), "%u", (unsigned)c->ep.port);
#define CONN_PG_KV(k, v)                                                                           \
	do {                                                                                       \
		if ((v) != NULL && (v)[0] != '\0') {                                               \
			keys[n] = (k);                                                             \
			vals[n] = (v);                                                             \
			n++;                                                                       \
		}                                                                                  \
	} while (0)
	/* hostaddr: libpq must not resolve (synchronously); host is an IP literal anyway. */
	CONN_PG_KV("host", c->ep.host);
	CONN_PG_KV("hostaddr", c->ep.host);
	CONN_PG_KV("port", port);
	CONN_PG_KV("user", c->user);
	CONN_PG_KV("password", c->password);
	CONN_PG_KV("dbname", c->database);
	CONN_PG_KV("application_name", "repoint-drill");
	/* As for the probes: GSS may talk to a KDC synchronously, and the environment must not turn
	 * a standby into a refused connection. */
	CONN_PG_KV("gssencmode", "disable");
	CONN_PG_KV("target_session_attrs", "any");
#undef CONN_PG_KV
	keys[n] = NULL;
	vals[n] = NULL;
	c->pg_flushing = false;
	c->pg = PQconnectStartParams(keys, vals, 0);
	if (c->pg == NULL) {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "out of memory");
		return;
	}
	PQsetNoticeProcessor(c->pg, conn_pg_notice, NULL);
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
		return;
	}
	PQsetnonblocking(c->pg, 1);
	conn_pg_connect_step(c, PGRES_POLLING_WRITING);
}

/* Reads what has come and takes every complete result; ends the operation after the last. */
static void conn_pg_pump(struct drill_conn *c, short what)
{
	PGresult *res;
	char *value;

	if (c->pg_flushing && (what & EV_WRITE)) {
		int r = PQflush(c->pg);
		if (r < 0) {
			conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
			return;
		}
		c->pg_flushing = r == 1;
	}
	if ((what & EV_READ) && !PQconsumeInput(c->pg)) {
		conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
		return;
	}
	while (!PQisBusy(c->pg)) {
		res = PQgetResult(c->pg);
		if (res == NULL) {
			value = c->pg_value;
			c->pg_value = NULL;
			if (c->pg_failed) {
				free(value);
				conn_pg_fail(c, c->pg_state, c->pg_msg);
			} else {
				conn_end(c, DRILL_OK, value, NULL);
			}
			return;
		}
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
			PQclear(res);
			conn_end(c, DRILL_ERR_SERVER, NULL, "COPY is not supported in a drill statement");
			return;
		default:
			break;
		}
		PQclear(res);
		if (PQstatus(c->pg) == CONNECTION_BAD && c->pg_failed) {
			conn_pg_fail(c, c->pg_state, c->pg_msg);
			return;
		}
	}
	if (!conn_watch(c, PQsocket(c->pg), (short)(EV_READ | (c->pg_flushing ? EV_WRITE : 0)), -1))
		conn_end(c, DRILL_ERR_CLOSED, NULL, "cannot watch the socket");
}

static void conn_pg_query(struct drill_conn *c)
{
	int r;

	c->pg_failed = false;
	c->pg_state[0] = c->pg_msg[0] = '\0';
	if (!PQsendQuery(c->pg, c->stmt)) {
		conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
		return;
	}
	r = PQflush(c->pg);
	if (r < 0) {
		conn_pg_fail(c, NULL, PQerrorMessage(c->pg));
		return;
	}
	c->pg_flushing = r == 1;
	if (!conn_watch(c, PQsocket(c->pg), (short)(EV_READ | (c->pg_flushing ? EV_WRITE : 0)), -1))
		conn_end(c, DRILL_ERR_CLOSED, NULL, "cannot watch the socket");
}

/* ---- MariaDB ---------------------------------------------------------------------------------- */

static bool conn_my_wait(struct drill_conn *c, int status)
{
	short what = 0;

	if (status & MYSQL_WAIT_READ)
		what |= EV_READ;
	if (status & MYSQL_WAIT_WRITE)
		what |= EV_WRITE;
	return conn_watch(c, mysql_get_socket(c->my), what,
			  (status & MYSQL_WAIT_TIMEOUT) ? (int64_t)mysql_get_timeout_value_ms(c->my) : -1);
}

static void conn_my_fail(struct drill_conn *c)
{
	unsigned err = mysql_errno(c->my);
	const char *msg = mysql_error(c->my);

	conn_end(c, drill_classify_mysql(err, c->state == CONN_CONNECTING), NULL, "%u: %s", err,
		 msg[0] ? msg : "unknown error");
}

static void conn_my_advance(struct drill_conn *c, int status)
{
	MYSQL_ROW row;
	char *value = NULL;

	for (;;) {
		if (status != 0) {
			if (!conn_my_wait(c, status))
				conn_end(c, DRILL_ERR_CLOSED, NULL, "cannot watch the socket");
			return;
		}
		switch (c->my_phase) {
		case CONN_MY_CONNECT:
			if (c->my_ret == NULL) {
				conn_my_fail(c);
				return;
			}
			c->my_idle = true;
			conn_connected(c);
			return;
		case CONN_MY_QUERY:
			if (c->my_rc != 0) {
				conn_my_fail(c);
				return;
			}
			if (mysql_field_count(c->my) == 0) {
				c->my_idle = true;
				conn_end(c, DRILL_OK, NULL, NULL);
				return;
			}
			c->my_phase = CONN_MY_STORE;
			status = mysql_store_result_start(&c->my_res, c->my);
			continue;
		case CONN_MY_STORE:
			if (c->my_res == NULL) {
				conn_my_fail(c);
				return;
			}
			/* A stored result is in memory: fetching rows does no I/O. */
			row = mysql_fetch_row(c->my_res);
			if (row != NULL && mysql_num_fields(c->my_res) > 0 && row[0] != NULL)
				value = strdup(row[0]);
			mysql_free_result(c->my_res);
			c->my_res = NULL;
			c->my_idle = true;
			conn_end(c, DRILL_OK, value, NULL);
			return;
		}
	}
}

static void conn_my_connect(struct drill_conn *c)
{
	/* libmariadb's own timeouts (whole seconds) are a backstop behind our timer. */
	unsigned int secs = (unsigned int)((c->timeout_ms + 999) / 1000 + 1);
	unsigned int proto = MYSQL_PROTOCOL_TCP;

	c->my_idle = false;
	c->my = mysql_init(NULL);
	if (c->my == NULL) {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "out of memory");
		return;
	}
	if (mysql_options(c->my, MYSQL_OPT_NONBLOCK, 0) != 0) {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "cannot enable the non-blocking API");
		return;
	}
	mysql_options(c->my, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
	mysql_options(c->my, MYSQL_OPT_READ_TIMEOUT, &secs);
	mysql_options(c->my, MYSQL_OPT_WRITE_TIMEOUT, &secs);
	mysql_options(c->my, MYSQL_OPT_PROTOCOL, &proto);
	mysql_options4(c->my, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "repoint-drill");
	c->my_phase = CONN_MY_CONNECT;
	c->my_ret = NULL;
	conn_my_advance(c, mysql_real_connect_start(&c->my_ret, c->my, c->ep.host,
						    c->user[0] ? c->user : NULL,
						    c->password[0] ? c->password : NULL,
						    c->database[0] ? c->database : NULL, c->ep.port, NULL, 0));
}

static void conn_my_query(struct drill_conn *c)
{
	c->my_idle = false;
	c->my_phase = CONN_MY_QUERY;
	c->my_rc = 0;
	conn_my_advance(c, mysql_real_query_start(&c->my_rc, c->my, c->stmt, strlen(c->stmt)));
}

static void conn_my_io(struct drill_conn *c, short what)
{
	int ready = 0;

	if (what & EV_READ)
		ready |= MYSQL_WAIT_READ;
	if (what & EV_WRITE)
		ready |= MYSQL_WAIT_WRITE;
	if (what & EV_TIMEOUT)
		ready |= MYSQL_WAIT_TIMEOUT;
	switch (c->my_phase) {
	case CONN_MY_CONNECT:
		conn_my_advance(c, mysql_real_connect_cont(&c->my_ret, c->my, ready));
		return;
	case CONN_MY_QUERY:
		conn_my_advance(c, mysql_real_query_cont(&c->my_rc, c->my, ready));
		return;
	case CONN_MY_STORE:
		conn_my_advance(c, mysql_store_result_cont(&c->my_res, c->my, ready));
		return;
	}
}

/* ---- Redis ------------------------------------------------------------------------------------ */

static bool conn_rd_queue(struct drill_conn *c, int len, char *cmd)
{
	char *grown;

	if (len < 0 || cmd == NULL)
		return false;
	grown = realloc(c->rd_out, c->rd_outlen + (size_t)len);
	if (grown == NULL) {
		redisFreeCommand(cmd);
		return false;
	}
	memcpy(grown + c->rd_outlen, cmd, (size_t)len);
	redisFreeCommand(cmd);
	c->rd_out = grown;
	c->rd_outlen += (size_t)len;
	return true;
}

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
static bool conn_rd_take(struct drill_conn *c, redisReply *r)
{
	c->rd_pending--;
	if (c->rd_auth_left > 0) {
		c->rd_auth_left--;
		if (r->type == REDIS_REPLY_ERROR) {
			c->state = CONN_CONNECTING;  /* reported as a refusal of the session */
			conn_end(c, DRILL_ERR_REFUSED, NULL, "AUTH: %s", r->str);
			return true;
		}
		if (c->rd_pending == 0) {
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

static void conn_rd_pump(struct drill_conn *c)
{
	char buf[16384];
	void *reply;
	ssize_t n;

	while (c->rd_outoff < c->rd_outlen) {
		n = send(c->rd_fd, c->rd_out + c->rd_outoff, c->rd_outlen - c->rd_outoff, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			conn_end(c, DRILL_ERR_CLOSED, NULL, "write: %s", strerror(errno));
			return;
		}
		c->rd_outoff += (size_t)n;
	}
	if (c->rd_outoff == c->rd_outlen) {
		free(c->rd_out);
		c->rd_out = NULL;
		c->rd_outlen = c->rd_outoff = 0;
	}
	for (;;) {
		n = recv(c->rd_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0) {
			conn_end(c, DRILL_ERR_CLOSED, NULL, "connection closed by the server");
			return;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			conn_end(c, errno == ECONNREFUSED ? DRILL_ERR_REFUSED : DRILL_ERR_CLOSED, NULL, "read: %s",
				 strerror(errno));
			return;
		}
		if (redisReaderFeed(c->rd, buf, (size_t)n) != REDIS_OK) {
			conn_end(c, DRILL_ERR_SERVER, NULL, "protocol error: %s", c->rd->errstr);
			return;
		}
		for (;;) {
			bool ended;

			reply = NULL;
			if (redisReaderGetReply(c->rd, &reply) != REDIS_OK) {
				conn_end(c, DRILL_ERR_SERVER, NULL, "protocol error: %s", c->rd->errstr);
				return;
			}
			if (reply == NULL)
				break;
			if (c->rd_pending <= 0) {
				freeReplyObject(reply);
				conn_end(c, DRILL_ERR_SERVER, NULL, "unexpected reply");
				return;
			}
			ended = conn_rd_take(c, reply);
			freeReplyObject(reply);
			if (ended)
				return;
		}
	}
	if (!conn_watch(c, c->rd_fd, (short)(EV_READ | (c->rd_out != NULL ? EV_WRITE : 0)), -1))
		conn_end(c, DRILL_ERR_CLOSED, NULL, "cannot watch the socket");
}

static void conn_rd_established(struct drill_conn *c)
{
	char *cmd = NULL;
	int len;

	c->rd = redisReaderCreate();
	if (c->rd == NULL) {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "out of memory");
		return;
	}
	c->rd_pending = c->rd_auth_left = 0;
	if (c->password[0] != '\0') {
		if (c->user[0] != '\0')
			len = redisFormatCommand(&cmd, "AUTH %s %s", c->user, c->password);
		else
			len = redisFormatCommand(&cmd, "AUTH %s", c->password);
		if (!conn_rd_queue(c, len, cmd)) {
			conn_end(c, DRILL_ERR_REFUSED, NULL, "out of memory");
			return;
		}
		c->rd_pending++;
		c->rd_auth_left++;
	}
	conn_connected(c);
}

static void conn_rd_connect(struct drill_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int one = 1;

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
	c->rd_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->rd_fd < 0) {
		conn_end(c, DRILL_ERR_REFUSED, NULL, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(c->rd_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->rd_fd, (struct sockaddr *)&ss, sslen) == 0) {
		conn_rd_established(c);
		return;
	}
	if (errno != EINPROGRESS) {
		conn_end(c, errno == ECONNREFUSED ? DRILL_ERR_REFUSED : DRILL_ERR_CLOSED, NULL, "connect: %s",
			 strerror(errno));
		return;
	}
	if (!conn_watch(c, c->rd_fd, EV_WRITE, -1))
		conn_end(c, DRILL_ERR_REFUSED, NULL, "cannot watch the socket");
}

static void conn_rd_query(struct drill_conn *c)
{
	char *copy, *save = NULL, *word;
	const char *argv[CONN_RD_MAX_ARGS];
	size_t lens[CONN_RD_MAX_ARGS];
	int argc = 0, len;
	char *cmd = NULL;

	if (c->stmt == NULL) {
		if (c->rd_pending == 0) {
			conn_end(c, DRILL_OK, NULL, NULL);
			return;
		}
		conn_rd_pump(c);
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
	if (!conn_rd_queue(c, len, cmd)) {
		conn_end(c, DRILL_ERR_SERVER, NULL, argc > 0 ? "out of memory" : "empty command");
		return;
	}
	c->rd_pending++;
	conn_rd_pump(c);
}

static void conn_rd_io(struct drill_conn *c, short what)
{
	int err = 0;
	socklen_t len = sizeof(err);

	(void)what;
	if (c->state == CONN_QUERYING) {
		conn_rd_pump(c);
		return;
	}
	if (getsockopt(c->rd_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err != 0) {
		conn_end(c, err == ECONNREFUSED ? DRILL_ERR_REFUSED : DRILL_ERR_CLOSED, NULL, "connect: %s",
			 strerror(err));
		return;
	}
	conn_rd_established(c);
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

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill_conn *c = arg;

	(void)fd;
	if (!c->busy || c->done)
		return;
	switch (c->ep.protocol) {
	case PROTOCOL_POSTGRES:
		if (c->state == CONN_CONNECTING)
			conn_pg_connect_step(c, PQconnectPoll(c->pg));
		else
			conn_pg_pump(c, what);
		return;
	case PROTOCOL_MYSQL:
		conn_my_io(c, what);
		return;
	case PROTOCOL_REDIS:
		conn_rd_io(c, what);
		return;
	}
}

/* The one place a connection is closed, whatever the engine and phase. */
static void conn_close_engine(struct drill_conn *c)
{
	if (c->io != NULL)
		event_del(c->io);
	if (c->pg != NULL)
		PQfinish(c->pg);  /* non-blocking: at most tries to send Terminate */
	c->pg = NULL;
	free(c->pg_value);
	c->pg_value = NULL;
	if (c->my_res != NULL)
		mysql_free_result(c->my_res);
	c->my_res = NULL;
	if (c->my != NULL) {
		/* mysql_close() writes COM_QUIT blocking; only an idle healthy connection takes it at
		 * once, any other is shut down first so that the write fails without waiting. */
		if (!(c->my_idle && c->state == CONN_IDLE))
			mariadb_cancel(c->my);
		mysql_close(c->my);
	}
	c->my = NULL;
	c->my_idle = false;
	if (c->rd_fd >= 0)
		close(c->rd_fd);
	c->rd_fd = -1;
	if (c->rd != NULL)
		redisReaderFree(c->rd);
	c->rd = NULL;
	free(c->rd_out);
	c->rd_out = NULL;
	c->rd_outlen = c->rd_outoff = 0;
	c->rd_pending = c->rd_auth_left = 0;
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
	c->rd_fd = -1;
	c->user = strdup(ep->user != NULL ? ep->user : "");
	c->password = strdup(ep->password != NULL ? ep->password : "");
	c->database = strdup(ep->database != NULL ? ep->database : "");
	c->ep.user = c->user;
	c->ep.password = c->password;
	c->ep.database = c->database;
	c->io = event_new(base, -1, 0, conn_io_cb, c);
	c->timer = evtimer_new(base, conn_timeout_cb, c);
	c->deliver = event_new(base, -1, 0, conn_deliver_cb, c);
	if (c->user == NULL || c->password == NULL || c->database == NULL || c->io == NULL || c->timer == NULL ||
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
	if (c->io != NULL)
		event_free(c->io);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->deliver != NULL)
		event_free(c->deliver);
	free(c->value);
	free(c->stmt);
	free(c->user);
	free(c->password);
	free(c->database);
	free(c);
}
