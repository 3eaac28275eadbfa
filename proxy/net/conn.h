/* conn.h - the transport under every connection repoint makes or takes: a socket and the ops that
 * move bytes over it, plain or TLS (OpenSSL), behind one table. Sessions (both sides), shared Redis
 * connections and the Redis probes read, write, flush, shut down and close through it; what they
 * do with the bytes (the protocol) stays theirs.
 *
 *   plain  recv / send / evbuffer_write: what the data path did before, one indirect call more;
 *          splice(2) through a pipe for the payloads a protocol says need not be seen
 *   uring  completions (net/uring.h, io = uring): a receive always posted into a buffer of a shared
 *          ring, sends from a buffer the transport owns until they complete; the owner's events,
 *          without a socket, are made active when it can read or write on (`watch`)
 *   TLS    SSL_read_ex / SSL_write_ex over the same non-blocking socket; `want` says which event a
 *          call that could not go on waits for (a TLS read may need the socket writable, a write
 *          readable); a handshake is driven from the loop like a connect
 *
 * Contexts (struct net_tls) are per service: mode (libpq's sslmode words), CA bundle, client
 * certificate, TLS 1.2 minimum, OpenSSL's default ciphers, and client-side session resumption
 * keyed by the member's address (a reconnect after a failover costs one round trip less). */
#ifndef REPOINT_NET_CONN_H
#define REPOINT_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/util.h>

struct evbuffer;
struct net_conn;
struct net_pipe;
struct net_tls;
struct net_uconn;
typedef struct ssl_st SSL;

enum net_tls_mode { NET_TLS_OFF, NET_TLS_REQUIRE, NET_TLS_VERIFY_CA, NET_TLS_VERIFY_FULL };

struct net_ops {
	const char *name;
	/* Up to len bytes: the count, 0 at the peer's end, -1 on error (errno set), -2 when nothing is
	 * there now (wait for `want`, or EV_READ when want is 0). */
	ssize_t (*read)(struct net_conn *c, void *buf, size_t len);
	/* Bytes taken (0: none now; wait for `want`, or EV_WRITE), -1 on error. */
	ssize_t (*write)(struct net_conn *c, const void *p, size_t n);
	/* Write what `out` holds until the transport takes no more: 0 or the error (as
	 * evbuffer_flush_fd); adds the bytes written to *written when not NULL. */
	int (*flush)(struct net_conn *c, struct evbuffer *out, size_t *written);
	/* Plaintext already decrypted and waiting inside the transport (no socket event will come
	 * for it). */
	bool (*pending)(const struct net_conn *c);
	void (*shutdown_write)(struct net_conn *c);
	/* Zero copy (optional: plain only; a TLS record must pass through OpenSSL). splice_in moves up
	 * to len bytes from the socket into the pipe (its count, 0 at the peer's end, -1 on error, -2
	 * when nothing is there now); splice_out moves up to len bytes of the pipe to the socket (its
	 * count, 0 when the socket takes none now, -1 on error). The bytes never enter user space. */
	ssize_t (*splice_in)(struct net_conn *c, struct net_pipe *p, size_t len);
	ssize_t (*splice_out)(struct net_conn *c, struct net_pipe *p, size_t len);
	/* A transport whose readiness is its own (optional: completions): the owner's interest in
	 * reading or writing (EV_READ or EV_WRITE) instead of adding its events to the loop; the
	 * bytes it took and has not handed to the kernel yet (what is owed beyond `out`); what a
	 * close does beyond closing the socket. */
	void (*watch)(struct net_conn *c, short what, bool on);
	size_t (*queued)(const struct net_conn *c);
	void (*close)(struct net_conn *c);
};

/* A pipe holding bytes owed to one socket (splice_in put them there, splice_out takes them out),
 * or none (open false). Taken when needed and given back empty (net_pipe_put): a few are kept for the
 * next session. */
struct net_pipe {
	int r, w;
	size_t len;                  /* bytes in it */
	bool open;                   /* r and w are a pipe's (zeroed memory is none) */
};

struct net_conn {
	evutil_socket_t fd;          /* -1 when none */
	const struct net_ops *ops;
	SSL *ssl;                    /* TLS */
	size_t wretry;               /* TLS: a write that could not go on is retried with at least this much */
	short want;                  /* TLS: the event the last call waits for, 0 when the usual one */
	struct net_uconn *u;         /* completions: buffers and operations in flight (net/uring.c) */
};

extern const struct net_ops net_plain_ops;
extern const struct net_ops net_tls_ops;

/* A plain connection on fd (-1: none yet). */
static inline void net_conn_init(struct net_conn *c, evutil_socket_t fd)
{
	c->fd = fd;
	c->ops = &net_plain_ops;
	c->ssl = NULL;
	c->wretry = 0;
	c->want = 0;
	c->u = NULL;
}

/* The first byte waiting on a plain conn's socket, left there (a listener telling a TLS client from
 * a plaintext one): 1, 0 at the peer's end, -1 on error, -2 when nothing is there yet. */
ssize_t net_conn_peek(struct net_conn *c, uint8_t *b);

/* Closes the socket and frees the TLS state; the conn is then as net_conn_init(c, -1) left it. */
void net_conn_close(struct net_conn *c);

/* A pipe for p (one kept, or a new one); false when none can be had (errno set): the caller copies
 * as before. */
bool net_pipe_get(struct net_pipe *p);
/* Gives p's pipe back (kept when empty, else closed: its bytes go with it); p is then none. */
void net_pipe_put(struct net_pipe *p);

/* ---- TLS --------------------------------------------------------------------------------------- */

struct net_tls_settings {
	enum net_tls_mode mode;
	const char *ca_file;         /* NULL or "": the system store */
	const char *cert_file;       /* client certificate (mutual TLS), optional */
	const char *key_file;
};

/* NULL with a reason in err when a file cannot be used (or the mode is off). */
struct net_tls *net_tls_new(const struct net_tls_settings *st, char *err, size_t errlen);
/* One more owner (a shared connection keeps its context until it is gone). */
void net_tls_ref(struct net_tls *t);
/* Drops the owner's reference: the context lives on while connections made with it do. */
void net_tls_free(struct net_tls *t);
enum net_tls_mode net_tls_mode(const struct net_tls *t);
/* The settings it was made from (for a client library that does TLS itself: libpq). */
const struct net_tls_settings *net_tls_get_settings(const struct net_tls *t);

/* Turns a connected plain conn into a TLS client about to shake hands: SNI and (verify-full) the
 * name checked are server_name (an IP literal is checked as an address, sent without SNI);
 * resume_key picks the session to resume (the member's address). False when out of memory. */
bool net_conn_start_tls(struct net_conn *c, struct net_tls *t, const char *server_name, const char *resume_key);

/* The server side (a listener's): certificate chain and key (NULL: in the chain file); TLS 1.2
 * at least. NULL with the reason in err. */
struct net_tls *net_tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Turns an accepted plain conn into a TLS server about to shake hands. False when out of memory. */
bool net_conn_accept_tls(struct net_conn *c, struct net_tls *t);

/* Drives the handshake (either side): 0 when done, EAGAIN (wait for c->want) or an error with its reason in err
 * ("certificate verify failed: unable to get local issuer certificate", "wrong version number:
 * is the member speaking TLS?"). */
int net_conn_handshake(struct net_conn *c, char *err, size_t errlen);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384 resumed" for logs and /status. */
void net_conn_describe(const struct net_conn *c, char *buf, size_t len);

#endif
