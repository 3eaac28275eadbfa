/* engine.h - the mechanics of driving an engine's own client library on the loop without ever
 * blocking it, shared by the role probes (sources/probe.c) and the drill's clients (drill/conn.c):
 *
 *   Postgres  libpq: PQconnectStartParams/PQconnectPoll stepping, PQsendQuery + flush + result
 *             draining, each result handed to the owner's taker
 *   MySQL     libmariadb's _start/_cont API: MYSQL_WAIT_* flags to events (and libmariadb's own
 *             timeout to the event's), connect -> query -> store result advancing
 *   Redis     a raw non-blocking socket: connect, queued redisFormatCommand() output, redisReader
 *             reply loop, each reply handed to the owner's taker
 *
 * An engine_conn is one connection, embedded in its owner. It re-targets one socket event (the fd
 * and what the library waits for change from step to step) and reports every step as an
 * engine_step; the owner decides what a result means, bounds the whole operation with its own
 * timer, and closes through engine_close() from its single close path. What to send and how to
 * read the answer stay with the owner. */
#ifndef REPOINT_ENGINE_H
#define REPOINT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <mysql.h>

#include "config.h"
#include "net/conn.h"

enum engine_step {
	ENGINE_WAITING,   /* the socket is watched: the io callback comes back */
	ENGINE_READY,     /* connected, or the statement's results are all in */
	ENGINE_TAKEN,     /* a taker ended the operation itself (nothing else to do) */
	ENGINE_LIB_ERROR, /* the library failed: its own error says why (engine_pg_error, mysql_error) */
	ENGINE_ERROR,     /* our failure, or any Redis one: msg says why (op and sys_errno too) */
};

enum engine_my_phase { ENGINE_MY_CONNECT, ENGINE_MY_QUERY, ENGINE_MY_STORE };

/* Called from the loop when the watched socket (or libmariadb's own timeout) fires. */
typedef void (*engine_io_fn)(void *arg, short what);
/* Take one result / reply. Return true when the operation has been ended by the taker. */
typedef bool (*engine_pg_take_fn)(void *arg, PGresult *res);
typedef bool (*engine_rd_take_fn)(void *arg, redisReply *reply);

struct engine_conn {
	struct event_base *base;
	enum protocol protocol;
	struct event *io;          /* the connection's socket, re-targeted by engine_watch() */
	engine_io_fn on_io;
	engine_pg_take_fn pg_take;
	engine_rd_take_fn rd_take;
	void *arg;
	bool connecting;           /* a connect is under way (engine_io() continues it) */

	/* ENGINE_ERROR: what failed. op names the system call ("socket", "connect", "read", "write")
	 * or the fault ("watch": the event could not be added; Redis: "eof", "protocol", "unexpected"),
	 * NULL for the rest (out of memory, no non-blocking API). */
	char msg[160];
	const char *op;
	int sys_errno;

	/* Postgres */
	PGconn *pg;
	bool pg_flushing;          /* PQflush() has more to send */

	/* MySQL */
	MYSQL *my;
	MYSQL_RES *my_res;         /* the stored result after READY of a query with columns */
	MYSQL *my_ret;             /* where the _start/_cont calls leave their results */
	int my_rc;
	enum engine_my_phase my_phase;
	bool my_idle;              /* nothing in flight: mysql_close() can send COM_QUIT without waiting */
	bool my_tls;               /* TLS asked for: a connection without it is a failure */

	/* Redis */
	struct net_conn rd_conn;   /* plain or TLS (net/conn.h) */
	bool rd_handshaking;       /* TLS: connected, the handshake under way */
	struct net_tls *rd_tls;    /* NULL: plain; else with the name to verify and the resume key */
	const char *rd_tls_name, *rd_resume;
	redisReader *rd_reader;
	char *rd_out;              /* commands not yet written */
	size_t rd_outlen, rd_outoff;
	int rd_pending;            /* replies still expected */
	size_t rd_fed;             /* bytes fed since the last complete reply: bounded by
	                              ENGINE_RD_MAX_REPLY (a node that declares a huge reply is cut off
	                              instead of streaming into memory) */
};

/* The largest reply a probe or a drill client reads from a Redis node (ROLE, INFO, GET of the
 * drill's own small values are far below it). */
#define ENGINE_RD_MAX_REPLY (1024 * 1024)
/* hiredis 0.14 (Debian 12) allocates a declared array's element pointers at once ("*200000000"
 * asks for 1.6 GB) and has no limit of its own: the arrays of one reply may hold this many
 * elements together, no more (beyond, the reader fails and so does the check). */
#define ENGINE_RD_MAX_ELEMENTS 65536

/* A hiredis reader with that budget; engine_rd_reply_taken() after each complete reply renews it.
 * engine_rd_reader_over() tells whether a reader's error came from the budget. */
redisReader *engine_rd_reader_new(void);
void engine_rd_reader_free(redisReader *r);
void engine_rd_reply_taken(redisReader *r);
bool engine_rd_reader_over(const redisReader *r);

/* pg_take / rd_take may be NULL for engines that do not use them. False when out of memory. */
bool engine_init(struct engine_conn *e, struct event_base *base, enum protocol protocol, engine_io_fn on_io,
		 engine_pg_take_fn pg_take, engine_rd_take_fn rd_take, void *arg);
/* Frees the event; the owner has closed the connection first (engine_close), politely or not. */
void engine_cleanup(struct engine_conn *e);

/* Watches the socket for what (EV_READ/EV_WRITE; 0 with a timeout: a timer only). timeout_ms < 0:
 * none. The current fd is taken each time: libpq may open a new socket while connecting. */
bool engine_watch(struct engine_conn *e, int fd, short what, int64_t timeout_ms);
void engine_unwatch(struct engine_conn *e);
/* The connection's socket, -1 when none. */
int engine_fd(const struct engine_conn *e);
/* An idle connection became readable: false when it is gone (EOF, reset, a server's goodbye). */
bool engine_idle_alive(struct engine_conn *e);
/* Continues whatever step is under way after the socket fired. */
enum engine_step engine_io(struct engine_conn *e, short what);
/* The one way a connection is closed. polite: idle and healthy, so MySQL's blocking COM_QUIT
 * write lands in an empty buffer; otherwise the socket is shut down first. Never blocks. */
void engine_close(struct engine_conn *e, bool polite);

/* Postgres. Keyword/value pairs for PQconnectStartParams(); NULL or empty values are left out. */
struct engine_pg_params {
	const char *keys[20];
	const char *vals[20];
	int n;
};
void engine_pg_param(struct engine_pg_params *kv, const char *key, const char *val);
/* Starts a non-blocking connect and its first step. */
enum engine_step engine_pg_connect(struct engine_conn *e, const struct engine_pg_params *kv);
/* Sends sql and drains what is there; results go to pg_take, READY after the last. */
enum engine_step engine_pg_query(struct engine_conn *e, const char *sql);
/* TLS for a libpq connection (tls NULL: none): host (the name the certificate must carry: libpq
 * checks it; the address goes in hostaddr), sslmode, sslrootcert, sslcert and sslkey. */
void engine_pg_tls_params(struct engine_pg_params *kv, const struct net_tls_settings *tls, const char *host);
/* libpq's last error, one line, without 'connection to server at "h", port N failed: '. */
void engine_pg_error(const struct engine_conn *e, char *buf, size_t len);

/* MySQL. host must be an address (libmariadb would resolve a name synchronously); timeout_ms sets
 * libmariadb's own timeouts, a backstop a second behind the owner's timer. tls (NULL: plain):
 * libmariadb does the TLS with these settings; it checks the certificate's name against host, so
 * verify-full checks the name only where tls_name is that address (else the chain, as verify-ca;
 * the data path checks the name itself). */
enum engine_step engine_my_connect(struct engine_conn *e, const char *host, uint16_t port, const char *user,
				   const char *password, const char *database, int64_t timeout_ms,
				   const char *program_name, const struct net_tls_settings *tls, const char *tls_name);
/* Runs sql; READY with my_res holding the stored result, or NULL for a statement without columns. */
enum engine_step engine_my_query(struct engine_conn *e, const char *sql, size_t len);

/* Redis: connects to sa (tls not NULL: then shakes hands, the certificate naming tls_name, the
 * session resumed under resume_key); READY once established (with the reply reader created). */
enum engine_step engine_rd_connect(struct engine_conn *e, const struct sockaddr *sa, socklen_t salen,
				   struct net_tls *tls, const char *tls_name, const char *resume_key);
/* Queues one command from redisFormatCommand*() (taken over) and expects its reply. */
bool engine_rd_command(struct engine_conn *e, int len, char *cmd);
/* Writes what is queued and hands replies to rd_take until it ends the operation. */
enum engine_step engine_rd_pump(struct engine_conn *e);

#endif
