/* sources/engine.c - one connection of an engine's client library, driven on the loop.
 *
 * Nothing here blocks: libpq runs non-blocking from its first call, libmariadb through its
 * _start/_cont API (its waits turned into one re-targeted event), Redis over a non-blocking socket
 * of our own. A peer that black-holes packets therefore costs the owner's timer, never the loop.
 * Every step ends in an engine_step; results and replies go to the owner's takers, which decide
 * what they mean. Closing is engine_close() alone, called from the owner's one close path. */
#include "sources/engine.h"

#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/conn.h"
#include "net/transport.h"
#include "util.h"

static void engine_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct engine_conn *e = arg;

	(void)fd;
	e->on_io(e->arg, what);
}

bool engine_init(struct engine_conn *e, struct event_base *base, enum protocol protocol, engine_io_fn on_io,
		 engine_pg_take_fn pg_take, engine_rd_take_fn rd_take, void *arg)
{
	memset(e, 0, sizeof(*e));
	e->base = base;
	e->protocol = protocol;
	e->on_io = on_io;
	e->pg_take = pg_take;
	e->rd_take = rd_take;
	e->arg = arg;
	net_conn_init(&e->rd_conn, -1);
	e->io = event_new(base, -1, 0, engine_io_cb, e);
	return e->io != NULL;
}

void engine_cleanup(struct engine_conn *e)
{
	if (e->io != NULL)
		event_free(e->io);
	e->io = NULL;
}

bool engine_watch(struct engine_conn *e, int fd, short what, int64_t timeout_ms)
{
	struct timeval tv;

	event_del(e->io);
	if (fd < 0 && (what & (EV_READ | EV_WRITE)) != 0)
		return false;
	if (event_assign(e->io, e->base, (what & (EV_READ | EV_WRITE)) != 0 ? fd : -1, what, engine_io_cb, e) != 0)
		return false;
	if (timeout_ms >= 0) {
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
	}
	return event_add(e->io, timeout_ms >= 0 ? &tv : NULL) == 0;
}

void engine_unwatch(struct engine_conn *e)
{
	if (e->io != NULL)
		event_del(e->io);
}

/* Our own failure: the text is the whole story. */
static enum engine_step engine_fail(struct engine_conn *e, const char *op, int err, const char *msg)
{
	e->op = op;
	e->sys_errno = err;
	snprintf(e->msg, sizeof(e->msg), "%s", msg);
	return ENGINE_ERROR;
}

static enum engine_step engine_watch_step(struct engine_conn *e, int fd, short what, int64_t timeout_ms)
{
	return engine_watch(e, fd, what, timeout_ms) ? ENGINE_WAITING
	                                             : engine_fail(e, "watch", 0, "cannot watch the socket");
}

int engine_fd(const struct engine_conn *e)
{
	switch (e->protocol) {
	case PROTOCOL_POSTGRES:
		return e->pg != NULL ? PQsocket(e->pg) : -1;
	case PROTOCOL_MYSQL:
		return e->my != NULL ? (int)mysql_get_socket(e->my) : -1;
	case PROTOCOL_REDIS:
		return e->rd_conn.fd;
	}
	return -1;
}

/* Nothing is due on an idle MySQL or Redis connection: anything readable is EOF, a reset or the
 * error a server sends before it closes an idle session. Peeked, so the library's stream stays
 * intact. */
static bool engine_sock_idle_alive(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

bool engine_idle_alive(struct engine_conn *e)
{
	PGnotify *n;

	switch (e->protocol) {
	case PROTOCOL_POSTGRES:
		/* Between statements the server may send ParameterStatus or notices; only a broken
		 * connection (EOF, reset, or a FATAL such as an administrator's shutdown) ends it. */
		if (e->pg == NULL || !PQconsumeInput(e->pg) || PQstatus(e->pg) == CONNECTION_BAD)
			return false;
		while ((n = PQnotifies(e->pg)) != NULL)
			PQfreemem(n);
		return true;
	case PROTOCOL_MYSQL:
		return e->my != NULL && engine_sock_idle_alive(mysql_get_socket(e->my));
	case PROTOCOL_REDIS:
		if (e->rd_conn.ssl != NULL) {
			/* TLS records come on an idle connection too (session tickets): only data, the end
			 * or an error mean it is over. */
			char c;
			return e->rd_conn.ops->read(&e->rd_conn, &c, 1) == -2;
		}
		return engine_sock_idle_alive(e->rd_conn.fd);
	}
	return false;
}

void engine_close(struct engine_conn *e, bool polite)
{
	engine_unwatch(e);
	e->connecting = false;
	/* Non-blocking, so PQfinish() at most tries to send Terminate and closes. */
	if (e->pg != NULL)
		PQfinish(e->pg);
	e->pg = NULL;
	e->pg_flushing = false;
	if (e->my_res != NULL)
		mysql_free_result(e->my_res);
	e->my_res = NULL;
	if (e->my != NULL) {
		/* mysql_close() sends COM_QUIT with a blocking write (bounded only by the write
		 * timeout). On an idle, healthy connection that write lands in an empty socket buffer;
		 * in any other case mariadb_cancel() shuts the socket down first so it fails at once. */
		if (!(polite && e->my_idle))
			mariadb_cancel(e->my);
		mysql_close(e->my);
	}
	e->my = NULL;
	e->my_idle = false;
	net_conn_close(&e->rd_conn);
	e->rd_handshaking = false;
	if (e->rd_reader != NULL)
		engine_rd_reader_free(e->rd_reader);
	e->rd_reader = NULL;
	free(e->rd_out);
	e->rd_out = NULL;
	e->rd_outlen = e->rd_outoff = 0;
	e->rd_pending = 0;
}

/* ---- Postgres -------------------------------------------------------------------------------- */

static void engine_pg_notice(void *arg, const char *message)
{
	/* The default processor prints to stderr; neither owner has anything to say about notices. */
	(void)arg;
	(void)message;
}

void engine_pg_param(struct engine_pg_params *kv, const char *key, const char *val)
{
	if (val == NULL || val[0] == '\0' || kv->n + 1 >= (int)ARRAY_LEN(kv->keys))
		return;
	kv->keys[kv->n] = key;
	kv->vals[kv->n] = val;
	kv->n++;
	kv->keys[kv->n] = NULL;
	kv->vals[kv->n] = NULL;
}

/* libpq's connection errors read 'connection to server at "h", port 5432 failed: REASON': the
 * address is already known to whoever reads the message, the reason is what matters. */
void engine_pg_error(const struct engine_conn *e, char *buf, size_t len)
{
	const char *msg = e->pg != NULL ? PQerrorMessage(e->pg) : "";
	const char *reason;

	if (strncmp(msg, "connection to server", 20) == 0 && (reason = strstr(msg, "failed: ")) != NULL)
		msg = reason + 8;
	str_oneline(buf, len, msg);
	if (buf[0] == '\0')
		snprintf(buf, len, "unknown error");
}

static enum engine_step engine_pg_connect_step(struct engine_conn *e, PostgresPollingStatusType st)
{
	switch (st) {
	case PGRES_POLLING_OK:
		e->connecting = false;
		return ENGINE_READY;
	case PGRES_POLLING_READING:
	case PGRES_POLLING_WRITING:
		return engine_watch_step(e, PQsocket(e->pg), st == PGRES_POLLING_READING ? EV_READ : EV_WRITE, -1);
	default:
		return ENGINE_LIB_ERROR;
	}
}

void engine_pg_tls_params(struct engine_pg_params *kv, const struct net_tls_settings *tls, const char *host)
{
	/* libpq does the TLS itself, with the service's settings (sslmode's words are ours). */
	static const char *const modes[] = {[NET_TLS_OFF] = "disable", [NET_TLS_REQUIRE] = "require",
					    [NET_TLS_VERIFY_CA] = "verify-ca", [NET_TLS_VERIFY_FULL] = "verify-full"};

	engine_pg_param(kv, "host", host);
	if (tls == NULL)
		return;
	engine_pg_param(kv, "sslmode", modes[tls->mode]);
	/* libpq 15 knows no "system" root: the system store is Debian's bundle. */
	engine_pg_param(kv, "sslrootcert", tls->ca_file != NULL ? tls->ca_file : "/etc/ssl/certs/ca-certificates.crt");
	if (tls->cert_file != NULL) {
		engine_pg_param(kv, "sslcert", tls->cert_file);
		engine_pg_param(kv, "sslkey", tls->key_file != NULL ? tls->key_file : tls->cert_file);
	}
}

enum engine_step engine_pg_connect(struct engine_conn *e, const struct engine_pg_params *kv)
{
	e->pg_flushing = false;
	e->connecting = true;
	e->pg = PQconnectStartParams(kv->keys, kv->vals, 0);
	if (e->pg == NULL)
		return engine_fail(e, NULL, 0, "out of memory");
	PQsetNoticeProcessor(e->pg, engine_pg_notice, NULL);
	if (PQstatus(e->pg) == CONNECTION_BAD)
		return ENGINE_LIB_ERROR;
	/* Non-blocking from the start: PQfinish() then never waits to send its Terminate. */
	PQsetnonblocking(e->pg, 1);
	/* libpq's protocol: act as if PQconnectPoll() had asked for writability. */
	return engine_pg_connect_step(e, PGRES_POLLING_WRITING);
}

/* Finishes sending, then takes results until libpq says there are no more. */
static enum engine_step engine_pg_drain(struct engine_conn *e)
{
	PGresult *res;
	bool ended;
	int rc;

	if (!PQconsumeInput(e->pg))
		return ENGINE_LIB_ERROR;
	if (e->pg_flushing) {
		rc = PQflush(e->pg);
		if (rc < 0)
			return ENGINE_LIB_ERROR;
		if (rc == 1)
			return engine_watch_step(e, PQsocket(e->pg), EV_READ | EV_WRITE, -1);
		e->pg_flushing = false;
	}
	while (!PQisBusy(e->pg)) {
		res = PQgetResult(e->pg);
		if (res == NULL)
			return ENGINE_READY;
		ended = e->pg_take(e->arg, res);
		PQclear(res);
		if (ended)
			return ENGINE_TAKEN;
	}
	if (PQstatus(e->pg) == CONNECTION_BAD)
		return ENGINE_LIB_ERROR;
	return engine_watch_step(e, PQsocket(e->pg), EV_READ, -1);
}

enum engine_step engine_pg_query(struct engine_conn *e, const char *sql)
{
	if (!PQsendQuery(e->pg, sql))
		return ENGINE_LIB_ERROR;
	e->pg_flushing = true;
	return engine_pg_drain(e);
}

/* ---- MySQL / MariaDB ------------------------------------------------------------------------- */

/* Turns libmariadb's "wait for" bits into the event; MYSQL_WAIT_TIMEOUT asks for a timer of its
 * own (libmariadb's timeouts, a backstop behind the owner's). */
static enum engine_step engine_my_wait(struct engine_conn *e, int status)
{
	short what = 0;

	if (status & MYSQL_WAIT_READ)
		what |= EV_READ;
	if (status & MYSQL_WAIT_WRITE)
		what |= EV_WRITE;
	return engine_watch_step(e, mysql_get_socket(e->my), what,
	                         (status & MYSQL_WAIT_TIMEOUT) ? (int64_t)mysql_get_timeout_value_ms(e->my) : -1);
}

/* Moves on from what the last _start/_cont call returned: wait for what it asks, or take its
 * result and start the next call. */
static enum engine_step engine_my_advance(struct engine_conn *e, int status)
{
	for (;;) {
		if (status != 0)
			return engine_my_wait(e, status);
		switch (e->my_phase) {
		case ENGINE_MY_CONNECT:
			if (e->my_ret == NULL)
				return ENGINE_LIB_ERROR;
			/* libmariadb 3.3 refuses a server without TLS only when it verifies the name: what
			 * was asked for is checked here, for every mode. */
			if (e->my_tls && mysql_get_ssl_cipher(e->my) == NULL)
				return engine_fail(e, NULL, 0, "the member does not offer TLS (no CLIENT_SSL in its greeting)");
			e->connecting = false;
			e->my_idle = true;
			return ENGINE_READY;
		case ENGINE_MY_QUERY:
			if (e->my_rc != 0)
				return ENGINE_LIB_ERROR;
			/* No columns (INSERT, SET ...): nothing to store. */
			if (mysql_field_count(e->my) == 0) {
				e->my_idle = true;
				return ENGINE_READY;
			}
			e->my_phase = ENGINE_MY_STORE;
			status = mysql_store_result_start(&e->my_res, e->my);
			continue;
		case ENGINE_MY_STORE:
			if (e->my_res == NULL && mysql_errno(e->my) != 0)
				return ENGINE_LIB_ERROR;
			/* A stored result is in memory: reading it does no I/O. */
			e->my_idle = true;
			return ENGINE_READY;
		}
	}
}

enum engine_step engine_my_connect(struct engine_conn *e, const char *host, uint16_t port, const char *user,
				   const char *password, const char *database, int64_t timeout_ms,
				   const char *program_name, const struct net_tls_settings *tls, const char *tls_name)
{
	/* libmariadb's own timeouts are whole seconds and only a backstop: a second more than the
	 * owner's, so that its timer speaks first and the message is its own. */
	unsigned int secs = (unsigned int)((timeout_ms + 999) / 1000 + 1);
	unsigned int proto = MYSQL_PROTOCOL_TCP;

	e->my_idle = false;
	e->connecting = true;
	e->my = mysql_init(NULL);
	if (e->my == NULL)
		return engine_fail(e, NULL, 0, "out of memory");
	/* Without its non-blocking context the _start calls would not be usable at all. */
	if (mysql_options(e->my, MYSQL_OPT_NONBLOCK, 0) != 0)
		return engine_fail(e, NULL, 0, "cannot enable the non-blocking API");
	mysql_options(e->my, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
	mysql_options(e->my, MYSQL_OPT_READ_TIMEOUT, &secs);
	mysql_options(e->my, MYSQL_OPT_WRITE_TIMEOUT, &secs);
	/* "localhost" would otherwise mean the Unix socket; we always hand it an address. */
	mysql_options(e->my, MYSQL_OPT_PROTOCOL, &proto);
	mysql_options4(e->my, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", program_name);
	e->my_tls = tls != NULL && tls->mode != NET_TLS_OFF;
	if (e->my_tls) {
		my_bool on = 1;
		my_bool verify = tls->mode == NET_TLS_VERIFY_FULL && tls_name != NULL &&
				 (tls_name[0] == '\0' || strcmp(tls_name, host) == 0);
		/* Never plaintext; with a CA the chain is verified (verify-ca and up). */
		mysql_options(e->my, MYSQL_OPT_SSL_ENFORCE, &on);
		if (tls->mode != NET_TLS_REQUIRE)
			mysql_options(e->my, MYSQL_OPT_SSL_CA,
				      tls->ca_file != NULL && tls->ca_file[0] != '\0' ? tls->ca_file
										  : "/etc/ssl/certs/ca-certificates.crt");
		mysql_options(e->my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
		if (tls->cert_file != NULL) {
			mysql_options(e->my, MYSQL_OPT_SSL_CERT, tls->cert_file);
			mysql_options(e->my, MYSQL_OPT_SSL_KEY, tls->key_file != NULL ? tls->key_file : tls->cert_file);
		}
	}
	e->my_phase = ENGINE_MY_CONNECT;
	e->my_ret = NULL;
	return engine_my_advance(e, mysql_real_connect_start(&e->my_ret, e->my, host,
	                                                     user != NULL && user[0] != '\0' ? user : NULL,
	                                                     password != NULL && password[0] != '\0' ? password : NULL,
	                                                     database != NULL && database[0] != '\0' ? database : NULL,
	                                                     port, NULL, 0));
}

enum engine_step engine_my_query(struct engine_conn *e, const char *sql, size_t len)
{
	e->my_idle = false;
	e->my_phase = ENGINE_MY_QUERY;
	e->my_rc = 0;
	return engine_my_advance(e, mysql_real_query_start(&e->my_rc, e->my, sql, len));
}

static enum engine_step engine_my_io(struct engine_conn *e, short what)
{
	int ready = 0;

	if (what & EV_READ)
		ready |= MYSQL_WAIT_READ;
	if (what & EV_WRITE)
		ready |= MYSQL_WAIT_WRITE;
	if (what & EV_TIMEOUT)
		ready |= MYSQL_WAIT_TIMEOUT;
	switch (e->my_phase) {
	case ENGINE_MY_CONNECT:
		return engine_my_advance(e, mysql_real_connect_cont(&e->my_ret, e->my, ready));
	case ENGINE_MY_QUERY:
		return engine_my_advance(e, mysql_real_query_cont(&e->my_rc, e->my, ready));
	case ENGINE_MY_STORE:
		return engine_my_advance(e, mysql_store_result_cont(&e->my_res, e->my, ready));
	}
	return ENGINE_WAITING;
}

/* ---- Redis ----------------------------------------------------------------------------------- */

/* The reader's own functions, with createArray counting against the reply's budget (a size_t the
 * reader's privdata points to, which hiredis copies into every task). */
static redisReplyObjectFunctions rd_fns;
static void *(*rd_create_array)(const redisReadTask *task, int elements);
static pthread_once_t rd_fns_once = PTHREAD_ONCE_INIT;

static void *rd_create_array_budgeted(const redisReadTask *task, int elements)
{
	size_t *used = task->privdata;

	if (elements < 0 || (size_t)elements > ENGINE_RD_MAX_ELEMENTS - *used) {
		*used = ENGINE_RD_MAX_ELEMENTS + 1;
		return NULL;  /* hiredis: "Out of memory", the reader stops */
	}
	*used += (size_t)elements;
	return rd_create_array(task, elements);
}

static void rd_fns_init(void)
{
	redisReader *r = redisReaderCreate();

	if (r == NULL)
		return;
	rd_fns = *r->fn;
	rd_create_array = rd_fns.createArray;
	rd_fns.createArray = rd_create_array_budgeted;
	redisReaderFree(r);
}

redisReader *engine_rd_reader_new(void)
{
	redisReader *r;
	size_t *used;

	if (pthread_once(&rd_fns_once, rd_fns_init) != 0 || rd_create_array == NULL)
		return NULL;
	used = calloc(1, sizeof(*used));
	if (used == NULL)
		return NULL;
	r = redisReaderCreateWithFunctions(&rd_fns);
	if (r == NULL) {
		free(used);
		return NULL;
	}
	r->privdata = used;
	return r;
}

void engine_rd_reader_free(redisReader *r)
{
	if (r == NULL)
		return;
	free(r->privdata);
	redisReaderFree(r);
}

void engine_rd_reply_taken(redisReader *r)
{
	*(size_t *)r->privdata = 0;
}

bool engine_rd_reader_over(const redisReader *r)
{
	return *(const size_t *)r->privdata > ENGINE_RD_MAX_ELEMENTS;
}

static enum engine_step engine_rd_established(struct engine_conn *e)
{
	e->connecting = false;
	e->rd_pending = 0;
	e->rd_fed = 0;
	e->rd_reader = engine_rd_reader_new();
	if (e->rd_reader == NULL)
		return engine_fail(e, NULL, 0, "out of memory");
	return ENGINE_READY;
}

/* TLS: the handshake goes on as the socket allows. */
static enum engine_step engine_rd_handshake(struct engine_conn *e)
{
	char err[sizeof(e->msg)];
	int r = net_conn_handshake(&e->rd_conn, err, sizeof(err));

	if (r == EAGAIN)
		return engine_watch_step(e, e->rd_conn.fd, e->rd_conn.want, -1);
	if (r != 0)
		return engine_fail(e, "tls", r, err);
	e->rd_handshaking = false;
	return engine_rd_established(e);
}

/* Connected: TLS starts, or the connection is ready. */
static enum engine_step engine_rd_tcp_up(struct engine_conn *e)
{
	if (e->rd_tls == NULL)
		return engine_rd_established(e);
	if (!net_conn_start_tls(&e->rd_conn, e->rd_tls, e->rd_tls_name, e->rd_resume))
		return engine_fail(e, NULL, 0, "TLS: out of memory");
	e->rd_handshaking = true;
	return engine_rd_handshake(e);
}

enum engine_step engine_rd_connect(struct engine_conn *e, const struct sockaddr *sa, socklen_t salen,
				   struct net_tls *tls, const char *tls_name, const char *resume_key)
{
	int err;

	e->connecting = true;
	e->rd_tls = tls;
	e->rd_tls_name = tls_name;
	e->rd_resume = resume_key;
	net_conn_init(&e->rd_conn, net_tcp_socket(sa->sa_family));
	if (e->rd_conn.fd < 0)
		return engine_fail(e, "socket", errno, strerror(errno));
	err = net_tcp_connect(e->rd_conn.fd, sa, salen);
	if (err == 0)
		return engine_rd_tcp_up(e);
	if (err != EINPROGRESS)
		return engine_fail(e, "connect", err, strerror(err));
	return engine_watch_step(e, e->rd_conn.fd, EV_WRITE, -1);
}

/* The socket became writable while connecting: the connect's outcome is in SO_ERROR. */
static enum engine_step engine_rd_connect_done(struct engine_conn *e)
{
	int err;

	if (e->rd_handshaking)
		return engine_rd_handshake(e);
	err = net_connect_outcome(e->rd_conn.fd, 0);
	if (err != 0)
		return engine_fail(e, "connect", err, strerror(err));
	return engine_rd_tcp_up(e);
}

bool engine_rd_command(struct engine_conn *e, int len, char *cmd)
{
	char *grown;

	if (len < 0 || cmd == NULL)
		return false;
	grown = realloc(e->rd_out, e->rd_outlen + (size_t)len);
	if (grown == NULL) {
		redisFreeCommand(cmd);
		return false;
	}
	memcpy(grown + e->rd_outlen, cmd, (size_t)len);
	redisFreeCommand(cmd);
	e->rd_out = grown;
	e->rd_outlen += (size_t)len;
	e->rd_pending++;
	return true;
}

enum engine_step engine_rd_pump(struct engine_conn *e)
{
	char buf[16384];
	char msg[sizeof(e->msg)];
	void *reply;
	bool ended;
	ssize_t n;

	while (e->rd_outoff < e->rd_outlen) {
		n = e->rd_conn.ops->write(&e->rd_conn, e->rd_out + e->rd_outoff, e->rd_outlen - e->rd_outoff);
		if (n == 0)
			break;
		if (n < 0) {
			snprintf(msg, sizeof(msg), "write: %s", strerror(errno));
			return engine_fail(e, "write", errno, msg);
		}
		e->rd_outoff += (size_t)n;
	}
	if (e->rd_outoff == e->rd_outlen) {
		free(e->rd_out);
		e->rd_out = NULL;
		e->rd_outlen = e->rd_outoff = 0;
	}
	for (;;) {
		n = e->rd_conn.ops->read(&e->rd_conn, buf, sizeof(buf));
		if (n == 0)
			return engine_fail(e, "eof", 0, "connection closed by the server");
		if (n == -2)
			break;
		if (n < 0) {
			snprintf(msg, sizeof(msg), "read: %s", strerror(errno));
			return engine_fail(e, "read", errno, msg);
		}
		if (redisReaderFeed(e->rd_reader, buf, (size_t)n) != REDIS_OK)
			goto protocol;
		e->rd_fed += (size_t)n;
		for (;;) {
			reply = NULL;
			if (redisReaderGetReply(e->rd_reader, &reply) != REDIS_OK)
				goto protocol;
			if (reply == NULL)
				break;
			/* What is left over belongs to the next reply. */
			e->rd_fed = e->rd_reader->len - e->rd_reader->pos;
			engine_rd_reply_taken(e->rd_reader);
			if (e->rd_pending <= 0) {
				freeReplyObject(reply);
				return engine_fail(e, "unexpected", 0, "unexpected reply");
			}
			e->rd_pending--;
			ended = e->rd_take(e->arg, reply);
			freeReplyObject(reply);
			if (ended)
				return ENGINE_TAKEN;
		}
		if (e->rd_fed > ENGINE_RD_MAX_REPLY) {
			snprintf(msg, sizeof(msg), "reply larger than %d bytes: not read further", ENGINE_RD_MAX_REPLY);
			return engine_fail(e, "protocol", 0, msg);
		}
	}
	return engine_watch_step(e, e->rd_conn.fd,
				 (short)(EV_READ | (e->rd_out != NULL || e->rd_conn.want == EV_WRITE ? EV_WRITE : 0)), -1);
protocol:
	if (engine_rd_reader_over(e->rd_reader))
		snprintf(msg, sizeof(msg), "reply with more than %d array elements: not read further",
		         ENGINE_RD_MAX_ELEMENTS);
	else
		snprintf(msg, sizeof(msg), "protocol error: %s", e->rd_reader->errstr);
	return engine_fail(e, "protocol", 0, msg);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

enum engine_step engine_io(struct engine_conn *e, short what)
{
	switch (e->protocol) {
	case PROTOCOL_POSTGRES:
		if (e->connecting)
			return engine_pg_connect_step(e, PQconnectPoll(e->pg));
		return engine_pg_drain(e);
	case PROTOCOL_MYSQL:
		return engine_my_io(e, what);
	case PROTOCOL_REDIS:
		if (e->connecting)
			return engine_rd_connect_done(e);
		return engine_rd_pump(e);
	}
	return ENGINE_WAITING;
}
