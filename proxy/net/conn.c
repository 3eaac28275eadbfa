/* conn.c - plain and TLS transports behind one ops table (conn.h). */
#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* A TLS write is retried with what `out` holds, at most this much at once (at least `wretry`). */
#define NET_TLS_WRITE_MAX (64 * 1024)
/* Sessions kept for resumption, one per member address (the oldest go first). */
#define NET_TLS_RESUME_MAX 64
/* Empty pipes kept for the next splice (two descriptors each). */
#define NET_PIPES_KEPT 16
/* What a pipe is asked to hold: a 100 KB value's payload in one splice each way (the kernel's
 * default is 64 KiB; a smaller one is kept if the system refuses, pipe-max-size). */
#define NET_PIPE_SIZE (256 * 1024)

struct net_tls_resume {
	char key[96];
	SSL_SESSION *sess;
};

struct net_tls {
	int refs;                    /* the owner's, and one per connection made with it */
	SSL_CTX *ctx;
	enum net_tls_mode mode;
	char *ca_file, *cert_file, *key_file;  /* as configured (for libpq's own TLS, say) */
	struct net_tls_settings st;
	struct net_tls_resume resume[NET_TLS_RESUME_MAX];
	int nresume;
};

/* ---- plain ------------------------------------------------------------------------------------- */

static ssize_t plain_read(struct net_conn *c, void *buf, size_t len)
{
	ssize_t r;

	do
		r = recv(c->fd, buf, len, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -2;
	return r;
}

static ssize_t plain_write(struct net_conn *c, const void *p, size_t n)
{
	ssize_t w;

	do
		w = send(c->fd, p, n, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	return w;
}

static int plain_flush(struct net_conn *c, struct evbuffer *out, size_t *written)
{
	while (evbuffer_get_length(out) > 0) {
		int n = evbuffer_write(out, c->fd);
		if (n < 0) {
			int err = EVUTIL_SOCKET_ERROR();
			return err == EAGAIN || err == EWOULDBLOCK || err == EINTR ? 0 : err;
		}
		if (n == 0)
			break;
		if (written != NULL)
			*written += (size_t)n;
	}
	return 0;
}

ssize_t net_conn_peek(struct net_conn *c, uint8_t *b)
{
	ssize_t r;

	do
		r = recv(c->fd, b, 1, MSG_PEEK | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -2;
	return r;
}

static bool plain_pending(const struct net_conn *c)
{
	(void)c;
	return false;
}

static void plain_shutdown_write(struct net_conn *c)
{
	shutdown(c->fd, SHUT_WR);
}

static ssize_t plain_splice_in(struct net_conn *c, struct net_pipe *p, size_t len)
{
	ssize_t r;

	do
		r = splice(c->fd, NULL, p->w, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -2;
	if (r > 0)
		p->len += (size_t)r;
	return r;
}

static ssize_t plain_splice_out(struct net_conn *c, struct net_pipe *p, size_t len)
{
	ssize_t w;

	do
		w = splice(p->r, NULL, c->fd, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	while (w < 0 && errno == EINTR);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (w > 0)
		p->len -= (size_t)w;
	return w;
}

const struct net_ops net_plain_ops = {
	.name = "plain",
	.read = plain_read,
	.write = plain_write,
	.flush = plain_flush,
	.pending = plain_pending,
	.shutdown_write = plain_shutdown_write,
	.splice_in = plain_splice_in,
	.splice_out = plain_splice_out,
};

/* The loop is single-threaded: one list of kept pipes. */
static struct net_pipe pipes_kept[NET_PIPES_KEPT];
static int npipes_kept;

bool net_pipe_get(struct net_pipe *p)
{
	int fds[2];

	if (npipes_kept > 0) {
		*p = pipes_kept[--npipes_kept];
		return true;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return false;
	(void)fcntl(fds[1], F_SETPIPE_SZ, NET_PIPE_SIZE);  /* a smaller pipe works too */
	p->r = fds[0];
	p->w = fds[1];
	p->len = 0;
	p->open = true;
	return true;
}

void net_pipe_put(struct net_pipe *p)
{
	if (!p->open)
		return;
	if (p->len == 0 && npipes_kept < NET_PIPES_KEPT) {
		pipes_kept[npipes_kept++] = *p;
	} else {
		close(p->r);
		close(p->w);
	}
	*p = (struct net_pipe){.r = -1, .w = -1};
}

/* ---- TLS --------------------------------------------------------------------------------------- */

/* What an SSL call that returned r means: 0 (wait: c->want set), or -1 (failed; errno set). */
static int tls_wait_or_fail(struct net_conn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->want = EV_READ;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		c->want = EV_WRITE;
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			errno = ECONNRESET;
		return -1;
	default:
		errno = EPROTO;
		return -1;
	}
}

static ssize_t tls_read(struct net_conn *c, void *buf, size_t len)
{
	size_t got = 0;

	c->want = 0;
	while (got < len) {
		size_t n = 0;
		int r;

		ERR_clear_error();
		r = SSL_read_ex(c->ssl, (char *)buf + got, len - got, &n);
		if (r == 1) {
			got += n;
			continue;
		}
		if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN)
			return got > 0 ? (ssize_t)got : 0;  /* the end comes again at the next read */
		if (tls_wait_or_fail(c, r) < 0)
			return got > 0 ? (ssize_t)got : -1;
		if (c->want == EV_READ)
			c->want = 0;  /* the usual wait */
		break;
	}
	return got > 0 ? (ssize_t)got : -2;
}

static ssize_t tls_write(struct net_conn *c, const void *p, size_t n)
{
	size_t w = 0;
	int r;

	c->want = 0;
	if (n == 0)
		return 0;
	ERR_clear_error();
	r = SSL_write_ex(c->ssl, p, n, &w);
	if (r == 1) {
		c->wretry = 0;
		return (ssize_t)w;
	}
	if (tls_wait_or_fail(c, r) < 0)
		return -1;
	/* OpenSSL has taken part of these bytes into a record: the retry must offer them again. */
	c->wretry = n;
	if (c->want == EV_WRITE)
		c->want = 0;
	return 0;
}

static int tls_flush(struct net_conn *c, struct evbuffer *out, size_t *written)
{
	while (evbuffer_get_length(out) > 0) {
		size_t len = evbuffer_get_length(out), n = len < NET_TLS_WRITE_MAX ? len : NET_TLS_WRITE_MAX;
		ssize_t w;

		if (n < c->wretry)
			n = c->wretry <= len ? c->wretry : len;
		w = tls_write(c, evbuffer_pullup(out, (ev_ssize_t)n), n);
		if (w < 0)
			return errno != 0 ? errno : EPROTO;
		if (w == 0)
			break;
		evbuffer_drain(out, (size_t)w);
		if (written != NULL)
			*written += (size_t)w;
	}
	return 0;
}

static bool tls_pending(const struct net_conn *c)
{
	return c->ssl != NULL && SSL_pending(c->ssl) > 0;
}

static void tls_shutdown_write(struct net_conn *c)
{
	/* close_notify, then the socket's write side: the server sees the end either way. */
	ERR_clear_error();
	(void)SSL_shutdown(c->ssl);
	shutdown(c->fd, SHUT_WR);
}

const struct net_ops net_tls_ops = {
	.name = "tls",
	.read = tls_read,
	.write = tls_write,
	.flush = tls_flush,
	.pending = tls_pending,
	.shutdown_write = tls_shutdown_write,
};

void net_conn_close(struct net_conn *c)
{
	if (c->ops->close != NULL)
		c->ops->close(c);  /* (the socket too, when it must outlive the operations on it) */
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		evutil_closesocket(c->fd);
	net_conn_init(c, -1);
}

/* ---- contexts and resumption ------------------------------------------------------------------- */

static int resume_index = -1;  /* SSL ex_data: the struct net_tls of a connection (a reference) */
static int resume_key_index = -1;  /* SSL ex_data: its resume key (malloc'd) */

static void tls_unref_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	net_tls_free(ptr);
}

static void resume_key_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* A session ticket arrived (TLS 1.3: after the handshake): keep it for the member's next connection. */
static int resume_new_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct net_tls *t = SSL_get_ex_data(ssl, resume_index);
	const char *key = SSL_get_ex_data(ssl, resume_key_index);
	int i;

	if (t == NULL || key == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	for (i = 0; i < t->nresume; i++)
		if (strcmp(t->resume[i].key, key) == 0)
			break;
	if (i == t->nresume) {
		if (t->nresume == NET_TLS_RESUME_MAX) {
			SSL_SESSION_free(t->resume[0].sess);
			memmove(&t->resume[0], &t->resume[1], sizeof(t->resume[0]) * (NET_TLS_RESUME_MAX - 1));
			i = --t->nresume;
		}
		t->nresume++;
		snprintf(t->resume[i].key, sizeof(t->resume[i].key), "%s", key);
		t->resume[i].sess = NULL;
	}
	if (t->resume[i].sess != NULL)
		SSL_SESSION_free(t->resume[i].sess);
	t->resume[i].sess = sess;
	return 1;  /* the reference is ours now */
}

static void tls_reason(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(err, errlen, "%s", what);
	else
		snprintf(err, errlen, "%s: %s", what, ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "error");
	ERR_clear_error();
}

struct net_tls *net_tls_new(const struct net_tls_settings *st, char *err, size_t errlen)
{
	struct net_tls *t;

	if (st->mode == NET_TLS_OFF) {
		snprintf(err, errlen, "tls is off");
		return NULL;
	}
	if (resume_index < 0) {
		resume_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_unref_cb);
		resume_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, resume_key_free);
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL || (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->refs = 1;
	t->mode = st->mode;
	t->ca_file = st->ca_file != NULL && st->ca_file[0] != '\0' ? strdup(st->ca_file) : NULL;
	t->cert_file = st->cert_file != NULL && st->cert_file[0] != '\0' ? strdup(st->cert_file) : NULL;
	t->key_file = st->key_file != NULL && st->key_file[0] != '\0' ? strdup(st->key_file) : NULL;
	t->st = (struct net_tls_settings){.mode = st->mode, .ca_file = t->ca_file, .cert_file = t->cert_file,
					  .key_file = t->key_file};
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	/* A member that dies without close_notify ends its stream as a plain socket's would. */
	SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					 SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(t->ctx, resume_new_cb);
	if (st->mode >= NET_TLS_VERIFY_CA) {
		int ok = st->ca_file != NULL && st->ca_file[0] != '\0'
				 ? SSL_CTX_load_verify_locations(t->ctx, st->ca_file, NULL)
				 : SSL_CTX_set_default_verify_paths(t->ctx);
		if (ok != 1) {
			char what[300];
			snprintf(what, sizeof(what), "tls_ca_file %s", st->ca_file != NULL ? st->ca_file : "(system store)");
			tls_reason(err, errlen, what);
			net_tls_free(t);
			return NULL;
		}
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
	}
	if (st->cert_file != NULL && st->cert_file[0] != '\0') {
		const char *key = st->key_file != NULL && st->key_file[0] != '\0' ? st->key_file : st->cert_file;
		if (SSL_CTX_use_certificate_chain_file(t->ctx, st->cert_file) != 1) {
			tls_reason(err, errlen, "tls_cert_file");
			net_tls_free(t);
			return NULL;
		}
		if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(t->ctx) != 1) {
			tls_reason(err, errlen, "tls_key_file");
			net_tls_free(t);
			return NULL;
		}
	}
	return t;
}

void net_tls_ref(struct net_tls *t)
{
	t->refs++;
}

void net_tls_free(struct net_tls *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	for (int i = 0; i < t->nresume; i++)
		SSL_SESSION_free(t->resume[i].sess);
	SSL_CTX_free(t->ctx);
	free(t->ca_file);
	free(t->cert_file);
	free(t->key_file);
	free(t);
}

const struct net_tls_settings *net_tls_get_settings(const struct net_tls *t)
{
	return &t->st;
}

enum net_tls_mode net_tls_mode(const struct net_tls *t)
{
	return t != NULL ? t->mode : NET_TLS_OFF;
}

struct net_tls *net_tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	struct net_tls *t = calloc(1, sizeof(*t));

	if (t == NULL || (t->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->refs = 1;
	t->mode = NET_TLS_REQUIRE;
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					 SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
		tls_reason(err, errlen, "listen_tls_cert_file");
		net_tls_free(t);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file != NULL && key_file[0] != '\0' ? key_file : cert_file,
					SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(t->ctx) != 1) {
		tls_reason(err, errlen, "listen_tls_key_file");
		net_tls_free(t);
		return NULL;
	}
	return t;
}

bool net_conn_accept_tls(struct net_conn *c, struct net_tls *t)
{
	if (resume_index < 0) {
		resume_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_unref_cb);
		resume_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, resume_key_free);
	}
	c->ssl = SSL_new(t->ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_set_ex_data(c->ssl, resume_index, t) != 1)
		return false;
	t->refs++;
	SSL_set_accept_state(c->ssl);
	c->ops = &net_tls_ops;
	c->want = EV_READ;
	return true;
}

bool net_conn_start_tls(struct net_conn *c, struct net_tls *t, const char *server_name, const char *resume_key)
{
	unsigned char ip[16];
	bool is_ip = server_name != NULL &&
		     (inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1);
	char *key;

	c->ssl = SSL_new(t->ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		return false;
	if (server_name != NULL && server_name[0] != '\0') {
		if (!is_ip && SSL_set_tlsext_host_name(c->ssl, server_name) != 1)
			return false;
		if (t->mode == NET_TLS_VERIFY_FULL) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
			if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, server_name) != 1
				  : X509_VERIFY_PARAM_set1_host(vp, server_name, 0) != 1)
				return false;
		}
	}
	if (SSL_set_ex_data(c->ssl, resume_index, t) != 1)
		return false;
	t->refs++;  /* the connection's: a reload may drop the owner's first */
	if (resume_key != NULL && (key = strdup(resume_key)) != NULL) {
		SSL_set_ex_data(c->ssl, resume_key_index, key);
		for (int i = 0; i < t->nresume; i++)
			if (strcmp(t->resume[i].key, resume_key) == 0) {
				SSL_set_session(c->ssl, t->resume[i].sess);
				break;
			}
	}
	SSL_set_connect_state(c->ssl);
	c->ops = &net_tls_ops;
	c->want = EV_WRITE;
	return true;
}

int net_conn_handshake(struct net_conn *c, char *err, size_t errlen)
{
	int r;
	long v;

	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->want = 0;
		return 0;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->want = EV_READ;
		return EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		c->want = EV_WRITE;
		return EAGAIN;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			snprintf(err, errlen, "TLS handshake: %s",
				 errno != 0 ? strerror(errno) : "the member closed the connection (is it speaking TLS?)");
			return errno != 0 ? errno : ECONNRESET;
		}
		break;
	default:
		break;
	}
	v = SSL_get_verify_result(c->ssl);
	if (v != X509_V_OK) {
		snprintf(err, errlen, "TLS handshake: certificate verify failed: %s", X509_verify_cert_error_string(v));
		ERR_clear_error();
	} else {
		unsigned long e = ERR_get_error();
		const char *why = e != 0 && ERR_reason_error_string(e) != NULL ? ERR_reason_error_string(e) : "failed";
		snprintf(err, errlen, "TLS handshake: %s%s", why,
			 ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER || ERR_GET_REASON(e) == SSL_R_PACKET_LENGTH_TOO_LONG
				 ? " (is the member speaking TLS?)"
				 : "");
		ERR_clear_error();
	}
	return EPROTO;
}

void net_conn_describe(const struct net_conn *c, char *buf, size_t len)
{
	if (c->ssl == NULL) {
		snprintf(buf, len, "plain");
		return;
	}
	snprintf(buf, len, "%s %s%s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
		 SSL_session_reused(c->ssl) ? " resumed" : "");
}
