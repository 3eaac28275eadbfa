/* mysql_login.c - repoint's own side of a MySQL/MariaDB session's start (auth = repoint): proto.h's
 * proto_login_ops for MySQL.
 *
 * The member speaks first. repoint reads its greeting (HandshakeV10) and greets the client with it,
 * but with a challenge of repoint's own, mysql_native_password as the method, and neither TLS nor
 * compression offered. The client's answer proves its password to repoint -- against a plaintext
 * password, or against the mysql.user hash in auth_file, which then gives SHA1(password) back --
 * and repoint answers the member's own challenge. A session moved to another member logs in the
 * same way there: the client's handshake response is kept (capabilities, character set, database,
 * attributes), only the proof is made anew for the new member's challenge.
 *
 * Packets: 3-byte length, sequence id, payload. The connection phase:
 *   member:  greeting (seq 0), or an ERR in its place
 *   repoint: HandshakeResponse41 (seq 1)
 *   member:  OK | ERR | AuthSwitchRequest (0xFE, plugin, data) | AuthMoreData (0x01)
 * With the client: repoint's greeting (seq 0), the client's response (1), [an AuthSwitchRequest to
 * mysql_native_password (2), its answer (3)], then the member's OK renumbered, or an ERR.
 */
#include "auth/auth.h"
#include "config.h"
#include "proto/mysql_wire.h"
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#define CLIENT_LONG_PASSWORD 0x00000001u
#define CLIENT_CONNECT_WITH_DB 0x00000008u
#define CLIENT_COMPRESS 0x00000020u
#define CLIENT_PROTOCOL_41 0x00000200u
#define CLIENT_SSL 0x00000800u
#define CLIENT_SSL_VERIFY_SERVER_CERT 0x40000000u
#define CLIENT_SECURE_CONNECTION 0x00008000u
#define CLIENT_PLUGIN_AUTH 0x00080000u
#define CLIENT_CONNECT_ATTRS 0x00100000u
#define CLIENT_DEPRECATE_EOF 0x01000000u
#define CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA 0x00200000u
#define CLIENT_ZSTD_COMPRESSION 0x04000000u

#define ML_PACKET_MAX (64u * 1024u)   /* a connection-phase packet longer than this is not one */
#define ML_REPLAY_MAX (64u * 1024u)   /* the most a session keeps to replay after a move */
#define ML_HELLO_FIXED 32u            /* caps, max packet, charset, filler */
#define ML_STMTS_MAX 8                /* prepared statements kept to prepare again (the tracker follows 6) */

static const char native[] = "mysql_native_password";
static const char sha2[] = "caching_sha2_password";

enum front_state { FRONT_WAIT, FRONT_HELLO, FRONT_SWITCH, FRONT_DONE, FRONT_FAILED };
enum back_state { BACK_NONE, BACK_GREETING, BACK_WAIT, BACK_AUTH, BACK_REPLAY, BACK_DONE, BACK_CHANGE };

struct proto_login {
	enum client_auth how;
	struct auth_users *users;    /* a reference */
	struct auth_user cred;       /* the user's entry (password copied), when auth_file has one */
	bool has_cred;
	char *member_pw;             /* this member login's password instead (member_password), or NULL */
	bool has_member_pw;
	bool tls;                    /* this member connection is to be TLS (asked for after the greeting) */
	bool offer_tls, require_tls; /* clients may (must) bring TLS (listen_tls) */
	bool client_tls;             /* ... this one asked for it: its hello comes through the handshake */
	bool has_stage1;             /* SHA1(password), from the client's answer and auth_file's hash */
	uint8_t stage1[MYSQL_NATIVE_LEN];
	uint8_t challenge[MYSQL_NATIVE_LEN];         /* repoint's, to the client */
	uint8_t member_challenge[MYSQL_NATIVE_LEN];  /* the member's */
	uint32_t member_caps;        /* ... its capabilities */
	uint32_t member_id;          /* ... its connection id for this session */
	uint32_t client_id;          /* the connection id repoint's greeting gave the client */
	uint32_t tls_caps;           /* what repoint's TLS request said (0: none on this connection) */
	enum front_state front;
	enum back_state back;
	bool greeted;                /* the client has repoint's greeting */
	bool told;                   /* ... and its OK */
	uint8_t cseq;                /* the sequence id of the next packet to the client */
	uint8_t *greeting;           /* repoint's greeting as sent (header included): the tracker's start */
	size_t greeting_len;
	/* The client's handshake response, in parts: the fixed 32 bytes, the user, then what follows
	 * the proof (database, plugin, attributes). */
	uint8_t fixed[ML_HELLO_FIXED];
	uint32_t caps;
	char user[128];
	uint8_t *db;                 /* with its NUL, or NULL */
	size_t db_len;
	uint8_t *attrs;              /* with its length prefix, or NULL */
	size_t attrs_len;
	uint8_t hello_seq;
	struct evbuffer *replay;     /* SET / USE / COM_INIT_DB packets to send again after a later login */
	uint8_t *member_greeting;    /* the member's greeting (payload), which goes with its connection when kept */
	size_t member_greeting_len;
	uint8_t key[4 + 1 + 128 + 256 + 2];  /* the pool's key: capabilities, character set, user, database */
	size_t key_len;
	/* COM_CHANGE_USER checked and sent on: who the session becomes once the member agrees. */
	bool changing;
	struct auth_user next_cred;
	bool next_has_cred, next_has_stage1;
	uint8_t next_stage1[MYSQL_NATIVE_LEN];
	char next_user[128];
	uint8_t *next_db;
	size_t next_db_len;
	uint8_t next_charset[2];     /* COM_CHANGE_USER's character set (two bytes there, one at the start) */
	uint32_t replay_count, replay_left;
	/* Prepared statements open on the session's server, prepared again after a later login. The
	 * new member numbers them its own way (MariaDB's thread cache goes on with a thread's count),
	 * so the client's ids are mapped to the member's (map; the walk over the client's packets that
	 * rewrites them, map_request; the tracker rewrites the prepare-OKs going back). While that
	 * login's answers come: the statement answered next, and the definition packets of its answer
	 * still to come. */
	struct ml_stmt {
		uint32_t id;             /* the client's */
		uint32_t member_id;      /* the member's, once prepared again */
		uint16_t params;
		uint8_t *pkt;            /* the client's COM_STMT_PREPARE, header included */
		size_t len;
	} stmts[ML_STMTS_MAX];
	unsigned nstmts;
	size_t stmt_bytes;
	bool stmt_wait;              /* answers to the statements prepared again are still to come */
	unsigned stmt_at;
	uint32_t stmt_skip;
	struct mysql_idmap map;
	/* The walk: header bytes seen, payload bytes left, the payload offset reached (1-4: inside a
	 * statement id, gathered in id[]). */
	struct ml_walk {
		uint32_t len, left;
		uint8_t hdr, pos;
		uint8_t id[4];
		bool cont, next_cont, names;
	} walk;
	bool sha2_asked;             /* the member switched this login to caching_sha2_password: its word follows */
};

static uint32_t le24(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

static uint32_t le32(const uint8_t *p)
{
	return le24(p) | (uint32_t)p[3] << 24;
}

static void put_header(uint8_t *h, size_t len, uint8_t seq)
{
	h[0] = (uint8_t)len;
	h[1] = (uint8_t)(len >> 8);
	h[2] = (uint8_t)(len >> 16);
	h[3] = seq;
}

static void add_packet(struct evbuffer *out, uint8_t seq, const void *payload, size_t len)
{
	uint8_t h[4];

	put_header(h, len, seq);
	evbuffer_add(out, h, 4);
	if (len > 0)
		evbuffer_add(out, payload, len);
}

/* A whole packet at the start of `in`: its payload copied into a fresh buffer (*p, *n, *seq),
 * drained from `in`. 0 more to come, 1 taken, -1 too long (or out of memory). */
static int take_packet(struct evbuffer *in, uint8_t **p, size_t *n, uint8_t *seq)
{
	uint8_t h[4];
	size_t have = evbuffer_get_length(in);

	if (have < 4)
		return 0;
	evbuffer_copyout(in, h, 4);
	size_t len = le24(h);
	if (len > ML_PACKET_MAX)
		return -1;
	if (have < 4 + len)
		return 0;
	if ((*p = malloc(len + 1)) == NULL)
		return -1;
	evbuffer_drain(in, 4);
	evbuffer_remove(in, *p, len);
	(*p)[len] = 0;
	*n = len;
	*seq = h[3];
	return 1;
}

static void mll_free(struct proto_login *l);

static struct proto_login *mll_new(enum client_auth how, struct auth_users *users)
{
	struct proto_login *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->how = how;
	l->users = users;
	auth_users_ref(users);
	l->replay = evbuffer_new();
	/* The challenge: printable, no NUL (it travels NUL-terminated), from OpenSSL's generator. */
	if (l->replay == NULL || RAND_bytes(l->challenge, sizeof(l->challenge)) != 1) {
		mll_free(l);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(l->challenge); i++)
		l->challenge[i] = (uint8_t)(0x21 + l->challenge[i] % 94);
	/* The client's connection id: repoint's, so that a KILL naming it reaches the session wherever
	 * it moved (proto_ops.kill_request); random in 2^30..2^31, far above any server's own ids. */
	if (RAND_bytes((uint8_t *)&l->client_id, sizeof(l->client_id)) != 1) {
		mll_free(l);
		return NULL;
	}
	l->client_id = 0x40000000u | (l->client_id & 0x3FFFFFFFu);
	l->front = FRONT_WAIT;
	return l;
}

static void member_pw_forget(struct proto_login *l)
{
	auth_secret_free(l->member_pw);
	l->member_pw = NULL;
}

static void stmts_forget(struct proto_login *l)
{
	for (unsigned i = 0; i < l->nstmts; i++)
		free(l->stmts[i].pkt);
	l->nstmts = 0;
	l->stmt_bytes = 0;
	l->map.n = 0;  /* (nothing the client holds is open on the member) */
}

static void mll_free(struct proto_login *l)
{
	if (l == NULL)
		return;
	stmts_forget(l);
	if (l->replay != NULL)
		evbuffer_free(l->replay);
	free(l->greeting);
	free(l->member_greeting);
	free(l->next_db);
	auth_secret_free(l->next_cred.password);
	OPENSSL_cleanse(l->next_stage1, sizeof(l->next_stage1));
	free(l->db);
	free(l->attrs);
	auth_secret_free(l->cred.password);
	member_pw_forget(l);
	OPENSSL_cleanse(l->stage1, sizeof(l->stage1));
	auth_users_unref(l->users);
	free(l);
}

static bool mll_front_done(const struct proto_login *l)
{
	return l->front == FRONT_DONE;
}

static bool mll_told(const struct proto_login *l)
{
	return l->told;
}

static const char *mll_user(const struct proto_login *l)
{
	return l->user;
}

static enum proto_login_step front_fail(struct proto_login *l, struct evbuffer *out, uint16_t code, const char *state,
					const char *msg)
{
	mysql_err_packet(out, l->cseq, code, state, msg);
	l->front = FRONT_FAILED;
	return PROTO_LOGIN_FAIL;
}

static enum proto_login_step access_denied(struct proto_login *l, struct evbuffer *out, bool with_password)
{
	char msg[220];

	snprintf(msg, sizeof(msg), "Access denied for user '%s' (using password: %s)", l->user, with_password ? "YES" : "NO");
	return front_fail(l, out, 1045, "28000", msg);
}

/* The client's answer (20 bytes, or none for an empty password) to repoint's challenge. */
static bool answer_right(struct proto_login *l, const uint8_t *a, size_t n)
{
	uint8_t stage2[MYSQL_NATIVE_LEN], stage1[MYSQL_NATIVE_LEN];
	bool ok = false;

	if (l->has_cred && l->cred.has_native) {
		ok = mysql_native_check(l->challenge, a, n, l->cred.native, stage1);
	} else if (l->has_cred && l->cred.password != NULL && l->cred.password[0] == '\0') {
		ok = n == 0;
	} else if (l->has_cred && l->cred.password != NULL) {
		ok = mysql_native_stage1(l->cred.password, stage1) && mysql_native_stage2(stage1, stage2) &&
		     mysql_native_check(l->challenge, a, n, stage2, stage1);
	} else {
		/* Nobody's secret: the same work, a hash nobody knows, so that timing tells nothing. */
		RAND_bytes(stage2, sizeof(stage2));
		(void)mysql_native_check(l->challenge, a, n, stage2, stage1);
	}
	if (ok && l->has_cred && l->cred.has_native) {
		memcpy(l->stage1, stage1, sizeof(stage1));
		l->has_stage1 = true;
	}
	OPENSSL_cleanse(stage1, sizeof(stage1));
	OPENSSL_cleanse(stage2, sizeof(stage2));
	return ok;
}

static enum proto_login_step front_checked(struct proto_login *l, struct evbuffer *out, const uint8_t *a, size_t n)
{
	bool right = answer_right(l, a, n);

	if (l->how != CLIENT_AUTH_TRUST && !right)
		return access_denied(l, out, n > 0);
	l->front = FRONT_DONE;
	return PROTO_LOGIN_DONE;
}

/* The client's handshake response: kept in parts, its proof checked. */
static void make_key(struct proto_login *l);

static enum proto_login_step front_hello(struct proto_login *l, const uint8_t *p, size_t n, uint8_t seq,
					 struct evbuffer *out)
{
	uint64_t v;

	l->cseq = (uint8_t)(seq + 1);
	l->hello_seq = seq;
	if (n < ML_HELLO_FIXED || !(le32(p) & CLIENT_PROTOCOL_41))
		return front_fail(l, out, 1043, "08S01", "Bad handshake");
	l->caps = le32(p);
	if ((l->caps & CLIENT_SSL) && n == ML_HELLO_FIXED && l->offer_tls && !l->client_tls) {
		l->client_tls = true;  /* a TLS request: the hello comes through the handshake */
		return PROTO_LOGIN_TLS;
	}
	if ((l->caps & CLIENT_SSL) && !l->client_tls)
		return front_fail(l, out, 1043, "08S01", "Bad handshake (repoint offered no TLS)");
	if (l->require_tls && !l->client_tls)
		return front_fail(l, out, 3159, "08004", "Connections using insecure transport are prohibited: this "
			"repoint service takes TLS clients only (listen_tls = require)");
	l->caps &= ~CLIENT_SSL;  /* (TLS on the client's side is repoint's; the member's is its own) */
	memcpy(l->fixed, p, ML_HELLO_FIXED);
	l->fixed[1] &= (uint8_t)~(CLIENT_SSL >> 8);
	size_t off = ML_HELLO_FIXED;
	const uint8_t *nul = memchr(p + off, 0, n - off);
	if (nul == NULL || (size_t)(nul - (p + off)) >= sizeof(l->user))
		return front_fail(l, out, 1043, "08S01", "Bad handshake");
	memcpy(l->user, p + off, (size_t)(nul - (p + off)) + 1);
	off = (size_t)(nul - p) + 1;
	const uint8_t *auth;
	size_t alen;
	if (l->caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
		size_t k = mysql_lenenc(p + off, n - off, &v);
		if (k == 0 || v > n - off - k)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		auth = p + off + k;
		alen = (size_t)v;
		off += k + alen;
	} else if (l->caps & CLIENT_SECURE_CONNECTION) {
		if (off >= n || p[off] > n - off - 1)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		auth = p + off + 1;
		alen = p[off];
		off += 1 + alen;
	} else {
		const uint8_t *e = memchr(p + off, 0, n - off);
		if (e == NULL)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		auth = p + off;
		alen = (size_t)(e - auth);
		off += alen + 1;
	}
	const char *plugin = NULL;
	if ((l->caps & CLIENT_CONNECT_WITH_DB) && off < n) {
		const uint8_t *e = memchr(p + off, 0, n - off);
		if (e == NULL || (l->db = malloc((size_t)(e - (p + off)) + 1)) == NULL)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		l->db_len = (size_t)(e - (p + off)) + 1;
		memcpy(l->db, p + off, l->db_len);
		off += l->db_len;
	}
	if ((l->caps & CLIENT_PLUGIN_AUTH) && off < n) {
		const uint8_t *e = memchr(p + off, 0, n - off);
		if (e == NULL)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		plugin = (const char *)p + off;
		off = (size_t)(e - p) + 1;
	}
	if ((l->caps & CLIENT_CONNECT_ATTRS) && off < n) {
		size_t k = mysql_lenenc(p + off, n - off, &v);
		if (k == 0 || v > n - off - k || (l->attrs = malloc(k + (size_t)v)) == NULL)
			return front_fail(l, out, 1043, "08S01", "Bad handshake");
		l->attrs_len = k + (size_t)v;
		memcpy(l->attrs, p + off, l->attrs_len);
	}
	/* The pool's key: what the member's session starts as (the attributes are the client's own). */
	make_key(l);
	const struct auth_user *u = auth_users_find(l->users, l->user);
	if (u != NULL) {
		l->cred = *u;
		l->cred.password = NULL;
		if (u->password != NULL && (l->cred.password = strdup(u->password)) == NULL)
			return front_fail(l, out, 1041, "HY000", "Out of memory");
		l->has_cred = true;
	}
	if (plugin != NULL && strcmp(plugin, native) != 0) {
		/* The client answered for another method: it is asked again, for this one. */
		uint8_t sw[1 + sizeof(native) + MYSQL_NATIVE_LEN + 1];
		sw[0] = 0xFE;
		memcpy(sw + 1, native, sizeof(native));
		memcpy(sw + 1 + sizeof(native), l->challenge, MYSQL_NATIVE_LEN);
		sw[sizeof(sw) - 1] = 0;
		add_packet(out, l->cseq++, sw, sizeof(sw));
		l->front = FRONT_SWITCH;
		return PROTO_LOGIN_MORE;
	}
	return front_checked(l, out, auth, alen);
}

static enum proto_login_step mll_front(struct proto_login *l, struct evbuffer *in, struct evbuffer *out)
{
	uint8_t *p, seq;
	size_t n;
	int r;

	if (l->front == FRONT_DONE)
		return PROTO_LOGIN_DONE;
	if (l->front == FRONT_FAILED)
		return PROTO_LOGIN_FAIL;
	if (l->front == FRONT_WAIT) {
		/* The client speaks once it has the greeting: what it sends before is kept, within a
		 * packet's bound (a client that talks on is refused). */
		if (evbuffer_get_length(in) > 4 + ML_PACKET_MAX)
			return front_fail(l, out, 1043, "08S01", "Bad handshake (bytes before the server's greeting)");
		return PROTO_LOGIN_MORE;
	}
	if ((r = take_packet(in, &p, &n, &seq)) == 0)
		return PROTO_LOGIN_MORE;
	if (r < 0)
		return front_fail(l, out, 1043, "08S01", "Bad handshake");
	enum proto_login_step st;
	if (l->front == FRONT_HELLO) {
		st = front_hello(l, p, n, seq, out);
	} else {
		l->cseq = (uint8_t)(seq + 1);
		st = front_checked(l, out, p, n);
	}
	OPENSSL_cleanse(p, n);
	free(p);
	return st;
}

static void mll_set_member_password(struct proto_login *l, const char *member_password);

static void mll_back_start(struct proto_login *l, struct evbuffer *to_member, const char *member_password, bool tls)
{
	(void)to_member;  /* the member speaks first */
	l->tls = tls;
	mll_set_member_password(l, member_password);
	l->back = BACK_GREETING;
	l->map.n = 0;  /* (a new member connection: its own ids) */
}

/* The member's ERR packet's message, for the log. */
static void err_text(const uint8_t *p, size_t n, char *buf, size_t buflen)
{
	size_t off = 3;

	if (n >= 9 && p[3] == '#')
		off = 9;
	if (n < off) {
		snprintf(buf, buflen, "(no message)");
		return;
	}
	snprintf(buf, buflen, "%u: %.*s", (unsigned)(p[1] | p[2] << 8), (int)(n - off), (const char *)p + off);
}

/* The member's greeting: its challenge kept; on a first login, repoint's greeting made of it. */
static bool back_greeting(struct proto_login *l, const uint8_t *g, size_t n, struct evbuffer *to_client, char *err,
			  size_t errlen)
{
	const uint8_t *vend = n > 1 ? memchr(g + 1, 0, n - 1) : NULL;

	if (n < 1 || g[0] != 10 || vend == NULL) {
		snprintf(err, errlen, "its greeting is not one repoint can read (protocol 10)");
		return false;
	}
	size_t off = (size_t)(vend - g) + 1;  /* the connection id */
	if (n < off + 31 + 13) {
		snprintf(err, errlen, "its greeting is cut short");
		return false;
	}
	uint32_t caps = (uint32_t)g[off + 13] | (uint32_t)g[off + 14] << 8 | (uint32_t)g[off + 18] << 16 |
			(uint32_t)g[off + 19] << 24;
	if (!(caps & CLIENT_PROTOCOL_41) || !(caps & CLIENT_SECURE_CONNECTION) || g[off + 20] < 21) {
		snprintf(err, errlen, "the member does not speak protocol 4.1 with a 20-byte challenge");
		return false;
	}
	memcpy(l->member_challenge, g + off + 4, 8);
	memcpy(l->member_challenge + 8, g + off + 31, 12);
	free(l->member_greeting);
	if ((l->member_greeting = malloc(n)) != NULL)
		memcpy(l->member_greeting, g, n);
	l->member_greeting_len = l->member_greeting != NULL ? n : 0;
	l->member_caps = caps;
	l->member_id = (uint32_t)g[off] | (uint32_t)g[off + 1] << 8 | (uint32_t)g[off + 2] << 16 | (uint32_t)g[off + 3] << 24;
	l->tls_caps = 0;
	l->sha2_asked = false;
	if (l->greeted)
		return true;
	/* repoint's: the member's, with repoint's challenge and method, no compression, TLS as the
	 * listener takes it. */
	caps &= ~(CLIENT_SSL | CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION);
	caps |= CLIENT_PLUGIN_AUTH | (l->offer_tls ? CLIENT_SSL : 0);
	size_t len = off + 31 + 13 + sizeof(native);
	uint8_t *out = malloc(4 + len);
	if (out == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	put_header(out, len, 0);
	memcpy(out + 4, g, off + 31);
	uint8_t *q = out + 4;
	memcpy(q + off + 4, l->challenge, 8);
	q[off + 13] = (uint8_t)caps;
	q[off + 14] = (uint8_t)(caps >> 8);
	q[off + 18] = (uint8_t)(caps >> 16);
	q[off + 19] = (uint8_t)(caps >> 24);
	q[off + 20] = MYSQL_NATIVE_LEN + 1;
	q[off] = (uint8_t)l->client_id;
	q[off + 1] = (uint8_t)(l->client_id >> 8);
	q[off + 2] = (uint8_t)(l->client_id >> 16);
	q[off + 3] = (uint8_t)(l->client_id >> 24);
	memcpy(q + off + 31, l->challenge + 8, 12);
	q[off + 43] = 0;
	memcpy(q + off + 44, native, sizeof(native));
	evbuffer_add(to_client, out, 4 + len);
	free(l->greeting);
	l->greeting = out;
	l->greeting_len = 4 + len;
	l->greeted = true;
	l->front = FRONT_HELLO;
	l->cseq = 2;
	return true;
}

/* The password this login proves itself with to the member: member_password's, else auth_file's
 * plaintext (NULL when it has only a hash). */
static const char *member_secret(const struct proto_login *l)
{
	return l->has_member_pw ? l->member_pw : l->has_cred ? l->cred.password : NULL;
}

/* The proof for challenge: from the member's own password, the user's password in auth_file, or
 * SHA1(password) that the client's answer gave (auth_file's hash). False (err) when there is none. */
static bool proof(struct proto_login *l, const uint8_t challenge[MYSQL_NATIVE_LEN], uint8_t out[MYSQL_NATIVE_LEN],
		  size_t *outlen, char *err, size_t errlen)
{
	const char *pw = member_secret(l);
	uint8_t stage1[MYSQL_NATIVE_LEN];
	bool ok;

	if (pw != NULL && pw[0] == '\0') {
		*outlen = 0;
		return true;
	}
	if (pw != NULL)
		ok = mysql_native_stage1(pw, stage1);
	else if (l->has_stage1 && !l->has_member_pw)
		ok = (memcpy(stage1, l->stage1, sizeof(stage1)), true);
	else {
		snprintf(err, errlen, "nothing to log in to the member with for user \"%s\" (auth_file: a password, or "
			 "the mysql_native_password hash with client_auth = mysql_native_password)", l->user);
		return false;
	}
	ok = ok && mysql_native_answer(challenge, stage1, out);
	OPENSSL_cleanse(stage1, sizeof(stage1));
	*outlen = MYSQL_NATIVE_LEN;
	if (!ok)
		snprintf(err, errlen, "SHA-1 failed");
	return ok;
}

/* repoint's handshake response to the member: the client's, with a proof for this member. */
static bool back_hello(struct proto_login *l, struct evbuffer *to_member, char *err, size_t errlen)
{
	uint8_t a[MYSQL_NATIVE_LEN], h[4];
	size_t alen, ulen = strlen(l->user) + 1;
	uint32_t caps = l->caps & ~(CLIENT_SSL | CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION | CLIENT_SSL_VERIFY_SERVER_CERT);

	if (l->tls_caps != 0)
		caps |= CLIENT_SSL;  /* as in the TLS request (the server checks that they agree) */
	if (l->next_charset[1] != 0 && !l->changing) {
		/* A COM_CHANGE_USER chose a character set a handshake cannot name (id above 255). */
		snprintf(err, errlen, "the session's character set (id %u) cannot be said in a handshake",
			 (unsigned)(l->next_charset[0] | l->next_charset[1] << 8));
		return false;
	}
	if (!proof(l, l->member_challenge, a, &alen, err, errlen))
		return false;
	uint8_t fixed[ML_HELLO_FIXED];
	memcpy(fixed, l->fixed, sizeof(fixed));
	fixed[0] = (uint8_t)caps;
	fixed[1] = (uint8_t)(caps >> 8);
	fixed[2] = (uint8_t)(caps >> 16);
	fixed[3] = (uint8_t)(caps >> 24);
	uint8_t alen_b = (uint8_t)alen;
	bool plugin = (caps & CLIENT_PLUGIN_AUTH) != 0;
	bool lenenc_or_secure = (caps & (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION)) != 0;
	size_t len = sizeof(fixed) + ulen + (lenenc_or_secure ? 1 : 0) + alen + (lenenc_or_secure ? 0 : 1) +
		     (l->db != NULL ? l->db_len : (caps & CLIENT_CONNECT_WITH_DB) && (plugin || l->attrs) ? 1 : 0) +
		     (plugin ? sizeof(native) : 0) + l->attrs_len;
	put_header(h, len, l->tls_caps != 0 ? 2 : 1);
	evbuffer_add(to_member, h, 4);
	evbuffer_add(to_member, fixed, sizeof(fixed));
	evbuffer_add(to_member, l->user, ulen);
	if (lenenc_or_secure)
		evbuffer_add(to_member, &alen_b, 1);
	evbuffer_add(to_member, a, alen);
	if (!lenenc_or_secure)
		evbuffer_add(to_member, "", 1);
	if (l->db != NULL)
		evbuffer_add(to_member, l->db, l->db_len);
	else if ((caps & CLIENT_CONNECT_WITH_DB) && (plugin || l->attrs))
		evbuffer_add(to_member, "", 1);
	if (plugin)
		evbuffer_add(to_member, native, sizeof(native));
	if (l->attrs != NULL)
		evbuffer_add(to_member, l->attrs, l->attrs_len);
	OPENSSL_cleanse(a, sizeof(a));
	return true;
}

/* The statements open on the last server, prepared again on this one: sent behind the replayed
 * settings, all at once. Their ids there are the member's (stmt_answer, map_make). */
static void stmts_send(struct proto_login *l, struct evbuffer *to_member)
{
	for (unsigned i = 0; i < l->nstmts; i++)
		evbuffer_add(to_member, l->stmts[i].pkt, l->stmts[i].len);
	l->stmt_wait = l->nstmts > 0;
	l->stmt_at = 0;
	l->stmt_skip = 0;
}

static bool in_list(const uint32_t *ids, unsigned n, uint32_t id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Every statement is prepared again: the client's ids to the member's, made a permutation. */
static void map_make(struct proto_login *l)
{
	struct mysql_idmap *m = &l->map;
	uint32_t spare[ML_STMTS_MAX];
	unsigned pairs = 0, nspare = 0, k = 0;

	_Static_assert(2 * ML_STMTS_MAX <= MYSQL_IDMAP_MAX, "a map holds every pair and its completion");
	memset(&l->walk, 0, sizeof(l->walk));
	for (unsigned i = 0; i < l->nstmts; i++)
		if (l->stmts[i].id != l->stmts[i].member_id) {
			m->client[pairs] = l->stmts[i].id;
			m->member[pairs++] = l->stmts[i].member_id;
		}
	/* The client ids given to no member id, for the member ids no client id names. */
	for (unsigned i = 0; i < pairs; i++)
		if (!in_list(m->member, pairs, m->client[i]))
			spare[nspare++] = m->client[i];
	m->n = pairs;
	for (unsigned i = 0; i < pairs; i++)
		if (!in_list(m->client, pairs, m->member[i]) && k < nspare) {
			m->client[m->n] = m->member[i];
			m->member[m->n++] = spare[k++];
		}
}

/* For the log: the statements prepared again, and their ids where the member's differ. */
static void map_note(const struct proto_login *l, char *note, size_t len)
{
	int w = snprintf(note, len, "%u prepared statement(s) prepared again, %s", l->nstmts,
			 l->map.n > 0 ? "ids mapped (client -> member):" : "under the same ids");
	for (unsigned i = 0; i < l->nstmts && w > 0 && (size_t)w < len; i++)
		if (l->stmts[i].id != l->stmts[i].member_id)
			w += snprintf(note + w, len - (size_t)w, " %u -> %u", (unsigned)l->stmts[i].id,
				      (unsigned)l->stmts[i].member_id);
}

/* All statements answered, each under an id of its own on both sides: the map. */
static bool stmts_answered(struct proto_login *l, char *err, size_t errlen)
{
	l->stmt_wait = false;
	for (unsigned i = 0; i < l->nstmts; i++)
		for (unsigned j = 0; j < i; j++)
			if (l->stmts[j].member_id == l->stmts[i].member_id || l->stmts[j].id == l->stmts[i].id) {
				snprintf(err, errlen, "two statements prepared again got the same id %u",
					 (unsigned)l->stmts[i].member_id);
				return false;
			}
	map_make(l);
	return true;
}

/* One packet of the answers to stmts_send's prepares: each a prepare-OK (the same parameter count as
 * the first time), then its parameter and column definitions (each block ended by an EOF unless
 * CLIENT_DEPRECATE_EOF), passed over. */
static bool stmt_answer(struct proto_login *l, const uint8_t *p, size_t n, char *err, size_t errlen)
{
	if (!l->stmt_wait) {
		snprintf(err, errlen, "an answer to nothing after the statements prepared again");
		return false;
	}
	if (l->stmt_skip > 0) {
		l->stmt_skip--;
	} else {
		if (p[0] != 0x00 || n < 12) {
			snprintf(err, errlen, "a statement prepared again was answered with something else than its OK");
			return false;
		}
		uint32_t id = le32(p + 1);
		uint16_t cols = (uint16_t)(p[5] | p[6] << 8), params = (uint16_t)(p[7] | p[8] << 8);
		struct ml_stmt *st = &l->stmts[l->stmt_at];
		if (params != st->params || id == 0 || id == UINT32_MAX) {
			snprintf(err, errlen, "a statement prepared again got id %u with %u parameters (%u the first time)",
				 (unsigned)id, (unsigned)params, (unsigned)st->params);
			return false;
		}
		st->member_id = id;
		bool eof = !(l->caps & l->member_caps & CLIENT_DEPRECATE_EOF);
		l->stmt_skip = (uint32_t)params + cols + (eof ? (params != 0) + (cols != 0) : 0);
	}
	if (l->stmt_skip == 0 && ++l->stmt_at == l->nstmts)
		return stmts_answered(l, err, errlen);
	return true;
}

/* The client's packets p[0..n) on their way to the member: the statement id of each
 * COM_STMT_EXECUTE, _SEND_LONG_DATA, _CLOSE, _RESET, _FETCH and _BULK_EXECUTE (payload bytes 1-4)
 * mapped in place. An id cut by the end of a read waits: its bytes are not counted (the return
 * value is what of p to send), and go with the next read, into head[0..*head_len) before p. */
static size_t mll_map_request(struct proto_login *l, uint8_t *p, size_t n, uint8_t *head, size_t *head_len)
{
	struct ml_walk *w = &l->walk;
	unsigned held = w->names && w->hdr == 4 && w->pos >= 2 && w->pos <= 4 ? w->pos - 1u : 0u;
	size_t i = 0;

	*head_len = 0;
	if (l->map.n == 0 && held == 0)
		return n;  /* (an id cut before the map emptied is owed its first bytes: walked to its end) */
	while (i < n) {
		if (w->hdr < 4) {
			if (w->hdr < 3)
				w->len |= (uint32_t)p[i] << (8 * w->hdr);
			i++;
			if (++w->hdr == 4) {
				w->left = w->len;
				w->len = 0;
				w->cont = w->next_cont;
				w->next_cont = w->left == 0xFFFFFF;
				w->pos = 0;
				w->names = false;
				if (w->left == 0)
					w->hdr = 0;
			}
			continue;
		}
		size_t step = 1;
		if (w->pos == 0) {
			uint8_t c = p[i];
			w->names = !w->cont && w->left >= 5 &&
				   (c == 0x17 || c == 0x18 || c == 0x19 || c == 0x1A || c == 0x1C || c == 0xFA);
			w->pos = 1;
		} else if (w->names && w->pos <= 4) {
			w->id[w->pos - 1] = p[i];
			if (++w->pos == 5) {
				uint32_t to = mysql_idmap_member(&l->map, le32(w->id));
				uint8_t b[4] = {(uint8_t)to, (uint8_t)(to >> 8), (uint8_t)(to >> 16), (uint8_t)(to >> 24)};
				unsigned here = 4 - held;
				if (held > 0) {
					memcpy(head, b, held);
					*head_len = held;
				}
				memcpy(p + i + 1 - here, b + held, here);
				held = 0;
			}
		} else {
			step = w->left < n - i ? w->left : n - i;
		}
		i += step;
		w->left -= (uint32_t)step;
		if (w->left == 0)
			w->hdr = 0;
	}
	if (w->names && w->hdr == 4 && w->pos >= 2 && w->pos <= 4)
		return n - (w->pos - 1u - held);  /* the id's bytes in this read wait for the rest */
	return n;
}

/* The member switched the login to caching_sha2_password (MySQL 8's default): the answer to its
 * nonce, made from the password itself (a mysql_native_password hash cannot make it). */
static enum proto_login_step sha2_answer(struct proto_login *l, const uint8_t nonce[MYSQL_NATIVE_LEN], uint8_t seq,
					 struct evbuffer *to_member, char *err, size_t errlen)
{
	const char *pw = member_secret(l);
	uint8_t a[MYSQL_SHA2_LEN];

	if (pw == NULL) {
		snprintf(err, errlen, "the member asks user \"%s\" for %s, which needs the password: auth_file has only "
			 "its %s hash", l->user, sha2, native);
		return PROTO_LOGIN_FAIL;
	}
	l->sha2_asked = true;
	if (pw[0] == '\0') {
		add_packet(to_member, (uint8_t)(seq + 1), "", 1);  /* no password: one NUL, as MySQL's client sends */
		return PROTO_LOGIN_MORE;
	}
	if (!mysql_sha2_answer(pw, nonce, a)) {
		snprintf(err, errlen, "SHA-256 failed");
		return PROTO_LOGIN_FAIL;
	}
	add_packet(to_member, (uint8_t)(seq + 1), a, sizeof(a));
	OPENSSL_cleanse(a, sizeof(a));
	return PROTO_LOGIN_MORE;
}

/* The member's answer to the login (or to a replayed request). */
static enum proto_login_step back_answer(struct proto_login *l, const uint8_t *p, size_t n, uint8_t seq,
					 struct evbuffer *to_member, struct evbuffer *to_client, char *err,
					 size_t errlen)
{
	if (n == 0) {
		snprintf(err, errlen, "an empty packet during the login");
		return PROTO_LOGIN_FAIL;
	}
	if (p[0] == 0xFF) {
		char text[200];
		err_text(p, n, text, sizeof(text));
		if (l->back == BACK_REPLAY) {
			snprintf(err, errlen, "%s sent again was refused: %s",
				 l->replay_left > 0 ? "a setting" : "a statement prepared", text);
			return PROTO_LOGIN_FAIL;
		}
		snprintf(err, errlen, "%s", text);
		if (!l->told && l->front == FRONT_DONE)
			add_packet(to_client, l->cseq, p, n);  /* the member's own refusal, in the client's numbering */
		return PROTO_LOGIN_FAIL;
	}
	if (l->back == BACK_REPLAY) {
		if (l->replay_left > 0) {
			if (p[0] != 0x00) {
				snprintf(err, errlen, "a setting sent again was answered with something else than OK");
				return PROTO_LOGIN_FAIL;
			}
			l->replay_left--;
		} else if (!stmt_answer(l, p, n, err, errlen)) {
			return PROTO_LOGIN_FAIL;
		}
		if (l->replay_left > 0 || l->stmt_wait)
			return PROTO_LOGIN_MORE;
		if (l->nstmts > 0)
			map_note(l, err, errlen);
		return PROTO_LOGIN_DONE;
	}
	switch (p[0]) {
	case 0x00:
		if (!l->told) {
			add_packet(to_client, l->cseq, p, n);
			l->told = true;
		}
		if (l->replay_count == 0 && l->nstmts == 0)
			return PROTO_LOGIN_DONE;
		evbuffer_add(to_member, evbuffer_pullup(l->replay, -1), evbuffer_get_length(l->replay));
		l->replay_left = l->replay_count;
		stmts_send(l, to_member);
		l->back = BACK_REPLAY;
		return PROTO_LOGIN_MORE;
	case 0xFE: {
		const uint8_t *e = memchr(p + 1, 0, n - 1);
		if (e == NULL) {
			snprintf(err, errlen, "a malformed auth switch request");
			return PROTO_LOGIN_FAIL;
		}
		const char *plugin = (const char *)p + 1;
		size_t dlen = n - (size_t)(e - p) - 1;
		if (strcmp(plugin, "mysql_clear_password") == 0) {
			/* The password itself (RDS IAM: the token; PAM), over TLS only. */
			const char *pw = member_secret(l);
			if (l->tls_caps == 0) {
				snprintf(err, errlen, "the member asks user \"%s\" for the password in clear "
					 "(mysql_clear_password), and this connection is not TLS (tls = off)", l->user);
				return PROTO_LOGIN_FAIL;
			}
			if (pw == NULL) {
				snprintf(err, errlen, "the member asks user \"%s\" for the password in clear "
					 "(mysql_clear_password), and %s", l->user,
					 l->has_member_pw ? "member_password has none now" : "auth_file has only its hash");
				return PROTO_LOGIN_FAIL;
			}
			add_packet(to_member, (uint8_t)(seq + 1), pw, strlen(pw) + 1);
			return PROTO_LOGIN_MORE;
		}
		if (strcmp(plugin, sha2) == 0 && dlen >= MYSQL_NATIVE_LEN)
			return sha2_answer(l, e + 1, seq, to_member, err, errlen);
		if (strcmp(plugin, native) != 0 || dlen < MYSQL_NATIVE_LEN) {
			snprintf(err, errlen, "the member asks user \"%s\" for %.64s; repoint logs in with %s", l->user, plugin,
				 native);
			return PROTO_LOGIN_FAIL;
		}
		uint8_t a[MYSQL_NATIVE_LEN];
		size_t alen;
		memcpy(l->member_challenge, e + 1, MYSQL_NATIVE_LEN);
		if (!proof(l, l->member_challenge, a, &alen, err, errlen))
			return PROTO_LOGIN_FAIL;
		add_packet(to_member, (uint8_t)(seq + 1), a, alen);
		OPENSSL_cleanse(a, sizeof(a));
		return PROTO_LOGIN_MORE;
	}
	case 0x01:
		if (l->sha2_asked && n == 2 && p[1] == 0x03)
			return PROTO_LOGIN_MORE;  /* fast authentication: its OK follows */
		if (l->sha2_asked && n == 2 && p[1] == 0x04) {
			/* Full authentication: the password itself, which only TLS may carry (the member's RSA
			 * key, asked for in plaintext, could be anybody's). */
			const char *pw = member_secret(l);
			if (l->tls_caps == 0 || pw == NULL) {
				snprintf(err, errlen, "the member asks user \"%s\" for caching_sha2_password's full authentication "
					 "(no login since its start put the user in its cache), which repoint does over TLS "
					 "only (tls = on)", l->user);
				return PROTO_LOGIN_FAIL;
			}
			add_packet(to_member, (uint8_t)(seq + 1), pw, strlen(pw) + 1);
			return PROTO_LOGIN_MORE;
		}
		/* fall through */
	default:
		snprintf(err, errlen, "the member asks for more than %s and %s's fast and full authentication "
			 "(AuthMoreData), which repoint does not speak", native, sha2);
		return PROTO_LOGIN_FAIL;
	}
}

static enum proto_login_step change_answer(struct proto_login *l, const uint8_t *p, size_t n, uint8_t seq,
					   struct evbuffer *to_member, struct evbuffer *to_client, char *err,
					   size_t errlen);

static enum proto_login_step mll_back(struct proto_login *l, struct evbuffer *in, struct evbuffer *to_member,
				      struct evbuffer *to_client, char *err, size_t errlen)
{
	uint8_t *p, seq;
	size_t n;
	int r;

	for (;;) {
		if (l->back == BACK_WAIT) {
			if (l->front != FRONT_DONE)
				return PROTO_LOGIN_MORE;
			if (l->tls && l->tls_caps == 0) {
				/* SSLRequest (seq 1): the first 32 bytes of the client's handshake response with
				 * CLIENT_SSL (the server keeps the capabilities it says). */
				uint8_t req[ML_HELLO_FIXED];
				uint32_t caps = (l->caps & ~(CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION | CLIENT_SSL_VERIFY_SERVER_CERT)) |
						CLIENT_SSL;
				memcpy(req, l->fixed, sizeof(req));
				req[0] = (uint8_t)caps;
				req[1] = (uint8_t)(caps >> 8);
				req[2] = (uint8_t)(caps >> 16);
				req[3] = (uint8_t)(caps >> 24);
				add_packet(to_member, 1, req, sizeof(req));
				l->tls_caps = caps;
				return PROTO_LOGIN_TLS;
			}
			if (!back_hello(l, to_member, err, errlen))
				return PROTO_LOGIN_FAIL;
			l->back = BACK_AUTH;
			continue;
		}
		if (l->back == BACK_DONE)
			return PROTO_LOGIN_DONE;
		if ((r = take_packet(in, &p, &n, &seq)) == 0)
			return PROTO_LOGIN_MORE;
		if (r < 0) {
			snprintf(err, errlen, "a login packet longer than %u bytes", ML_PACKET_MAX);
			return PROTO_LOGIN_FAIL;
		}
		enum proto_login_step st = PROTO_LOGIN_MORE;
		if (l->back == BACK_CHANGE) {
			st = change_answer(l, p, n, seq, to_member, to_client, err, errlen);
		} else if (l->back == BACK_GREETING) {
			if (n > 0 && p[0] == 0xFF) {
				/* An ERR in place of the greeting (too many connections, shutting down). */
				char text[200];
				err_text(p, n, text, sizeof(text));
				snprintf(err, errlen, "%s", text);
				if (!l->greeted)
					add_packet(to_client, seq, p, n);
				st = PROTO_LOGIN_FAIL;
			} else if (!back_greeting(l, p, n, to_client, err, errlen)) {
				st = PROTO_LOGIN_FAIL;
			} else if (l->tls && !(l->member_caps & CLIENT_SSL)) {
				snprintf(err, errlen, "the member offers no TLS (its greeting has no CLIENT_SSL), and tls is on");
				st = PROTO_LOGIN_FAIL;
			} else {
				l->back = BACK_WAIT;
			}
		} else {
			st = back_answer(l, p, n, seq, to_member, to_client, err, errlen);
			if (st == PROTO_LOGIN_DONE)
				l->back = BACK_DONE;
		}
		free(p);
		if (st != PROTO_LOGIN_MORE)
			return st;
	}
}

static void mll_track_idle(const struct proto_login *l, struct proto_state *st)
{
	/* The tracker as if it had seen the start: repoint's greeting, the client's response, an OK. */
	static const uint8_t ok[] = {7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0};
	uint8_t h[4];

	proto_mysql.init(st);
	if (l->greeting != NULL)
		proto_mysql.feed(st, PROTO_SERVER_TO_CLIENT, l->greeting, l->greeting_len);
	put_header(h, ML_HELLO_FIXED, 1);
	proto_mysql.feed(st, PROTO_CLIENT_TO_SERVER, h, 4);
	proto_mysql.feed(st, PROTO_CLIENT_TO_SERVER, l->fixed, ML_HELLO_FIXED);
	proto_mysql.feed(st, PROTO_SERVER_TO_CLIENT, ok, sizeof(ok));
	mysql_track_owned(st);
	for (unsigned i = 0; i < l->nstmts; i++)
		(void)mysql_track_statement(st, l->stmts[i].id, l->stmts[i].params);

}

/* The member's connection id for the client's (repoint's) one (a KILL's, proto_ops.kill_request). */
static bool mll_member_key(const struct proto_login *l, const uint8_t *key, size_t keylen, uint8_t *member_key)
{
	if (keylen != 4 || ((uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 | (uint32_t)key[3] << 24) !=
				   l->client_id)
		return false;
	member_key[0] = (uint8_t)l->member_id;
	member_key[1] = (uint8_t)(l->member_id >> 8);
	member_key[2] = (uint8_t)(l->member_id >> 16);
	member_key[3] = (uint8_t)(l->member_id >> 24);
	return true;
}

/* The pool's key from the login's start (capabilities, character set, user, database). */
static void make_key(struct proto_login *l)
{
	uint32_t kc = l->caps & ~(CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION | CLIENT_SSL_VERIFY_SERVER_CERT);
	size_t ulen = strlen(l->user) + 1;

	memcpy(l->key, &kc, 4);
	l->key[4] = l->fixed[8];
	memcpy(l->key + 5, l->user, ulen);
	l->key_len = 5 + ulen;
	if (l->db != NULL && l->db_len <= 256) {
		memcpy(l->key + l->key_len, l->db, l->db_len);
		l->key_len += l->db_len;
	} else {
		l->key[l->key_len++] = 0;
	}
}

/* The member agreed to COM_CHANGE_USER: the session is the new user's, logged in as such after a move. */
static void change_commit(struct proto_login *l)
{
	if (!l->changing)
		return;
	l->changing = false;
	auth_secret_free(l->cred.password);
	l->cred = l->next_cred;
	l->has_cred = l->next_has_cred;
	memset(&l->next_cred, 0, sizeof(l->next_cred));
	memcpy(l->stage1, l->next_stage1, sizeof(l->stage1));
	l->has_stage1 = l->next_has_stage1;
	OPENSSL_cleanse(l->next_stage1, sizeof(l->next_stage1));
	memcpy(l->user, l->next_user, sizeof(l->user));
	free(l->db);
	l->db = l->next_db;
	l->db_len = l->next_db_len;
	l->next_db = NULL;
	l->fixed[8] = l->next_charset[0];  /* (the handshake's field is one byte: a later login says the low one) */
	make_key(l);
}

/* COM_CHANGE_USER: user, the proof for repoint's challenge (length-prefixed with
 * CLIENT_SECURE_CONNECTION), database, character set (2 bytes), plugin, attributes. */
static int mll_change_user(struct proto_login *l, const uint8_t *p, size_t n, struct evbuffer *to_member,
			   struct evbuffer *to_client)
{
	const uint8_t *q = p + 4, *e, *auth, *db, *plugin = NULL, *attrs = NULL;
	size_t qn = n - 4, off = 1, alen, dblen, attrs_len = 0;
	uint8_t charset[2] = {l->fixed[8], 0}, stage1[MYSQL_NATIVE_LEN], stage2[MYSQL_NATIVE_LEN], a[MYSQL_NATIVE_LEN];
	char err[200];

	l->cseq = 1;
	if (n < 6 || q[0] != 0x11 || !(l->caps & CLIENT_SECURE_CONNECTION) ||
	    (e = memchr(q + off, 0, qn - off)) == NULL || (size_t)(e - (q + off)) >= sizeof(l->next_user)) {
		mysql_err_packet(to_client, 1, 1043, "08S01", "Bad handshake");
		return 0;
	}
	memcpy(l->next_user, q + off, (size_t)(e - (q + off)) + 1);
	off = (size_t)(e - q) + 1;
	if (off >= qn || q[off] > qn - off - 1) {
		mysql_err_packet(to_client, 1, 1043, "08S01", "Bad handshake");
		return 0;
	}
	alen = q[off];
	auth = q + off + 1;
	off += 1 + alen;
	db = q + off;
	if (off >= qn || (e = memchr(q + off, 0, qn - off)) == NULL) {
		mysql_err_packet(to_client, 1, 1043, "08S01", "Bad handshake");
		return 0;
	}
	dblen = (size_t)(e - db) + 1;
	off += dblen;
	if (off + 2 <= qn) {
		charset[0] = q[off];
		charset[1] = q[off + 1];
		off += 2;
	}
	if ((l->caps & CLIENT_PLUGIN_AUTH) && off < qn && (e = memchr(q + off, 0, qn - off)) != NULL) {
		plugin = q + off;
		off = (size_t)(e - q) + 1;
	}
	if ((l->caps & CLIENT_CONNECT_ATTRS) && off < qn) {
		attrs = q + off;
		attrs_len = qn - off;
	}
	if (l->has_member_pw) {
		/* member_password (an IAM token) is made for the client's user at each login. */
		mysql_err_packet(to_client, 1, 1045, "28000", "repoint: COM_CHANGE_USER on a session whose logins use "
				 "member_password is not taken");
		return 0;
	}
	/* Checked as at the start, against repoint's challenge (the client's only). */
	const struct auth_user *u = auth_users_find(l->users, l->next_user);
	bool right = false;
	auth_secret_free(l->next_cred.password);
	memset(&l->next_cred, 0, sizeof(l->next_cred));
	l->next_has_cred = l->next_has_stage1 = false;
	if (u != NULL) {
		l->next_cred = *u;
		l->next_cred.password = u->password != NULL ? strdup(u->password) : NULL;
		l->next_has_cred = true;
	}
	if (plugin == NULL || strcmp((const char *)plugin, native) == 0) {
		if (l->next_has_cred && l->next_cred.has_native) {
			right = mysql_native_check(l->challenge, auth, alen, l->next_cred.native, stage1);
			if (right) {
				memcpy(l->next_stage1, stage1, sizeof(stage1));
				l->next_has_stage1 = true;
			}
		} else if (l->next_has_cred && l->next_cred.password != NULL && l->next_cred.password[0] == '\0') {
			right = alen == 0;
		} else if (l->next_has_cred && l->next_cred.password != NULL) {
			right = mysql_native_stage1(l->next_cred.password, stage1) && mysql_native_stage2(stage1, stage2) &&
				mysql_native_check(l->challenge, auth, alen, stage2, stage1);
		}
	}
	if (l->how == CLIENT_AUTH_TRUST)
		right = true;
	OPENSSL_cleanse(stage1, sizeof(stage1));
	OPENSSL_cleanse(stage2, sizeof(stage2));
	if (!right) {
		snprintf(err, sizeof(err), "Access denied for user '%s' (using password: %s)", l->next_user,
			 alen > 0 ? "YES" : "NO");
		mysql_err_packet(to_client, 1, 1045, "28000", err);
		return 0;
	}
	/* Written again with a proof for the member's challenge, as the new user. */
	struct proto_login tmp = *l;   /* proof() reads the user and secrets it is given */
	tmp.cred = l->next_cred;
	tmp.has_cred = l->next_has_cred;
	tmp.has_stage1 = l->next_has_stage1;
	memcpy(tmp.stage1, l->next_stage1, sizeof(tmp.stage1));
	memcpy(tmp.user, l->next_user, sizeof(tmp.user));
	size_t plen;
	bool ok = proof(&tmp, l->member_challenge, a, &plen, err, sizeof(err));
	OPENSSL_cleanse(&tmp, sizeof(tmp));
	if (!ok) {
		mysql_err_packet(to_client, 1, 1045, "28000", err);
		return 0;
	}
	size_t ulen = strlen(l->next_user) + 1;
	size_t len = 1 + ulen + 1 + plen + dblen + 2 + (plugin != NULL ? sizeof(native) : 0) + attrs_len;
	uint8_t h[4], head = 0x11, pl = (uint8_t)plen;
	put_header(h, len, 0);
	evbuffer_add(to_member, h, 4);
	evbuffer_add(to_member, &head, 1);
	evbuffer_add(to_member, l->next_user, ulen);
	evbuffer_add(to_member, &pl, 1);
	evbuffer_add(to_member, a, plen);
	evbuffer_add(to_member, db, dblen);
	evbuffer_add(to_member, charset, 2);
	if (plugin != NULL)
		evbuffer_add(to_member, native, sizeof(native));
	if (attrs != NULL)
		evbuffer_add(to_member, attrs, attrs_len);
	OPENSSL_cleanse(a, sizeof(a));
	free(l->next_db);
	l->next_db = NULL;
	l->next_db_len = 0;
	if (dblen > 1 && (l->next_db = malloc(dblen)) != NULL) {
		memcpy(l->next_db, db, dblen);
		l->next_db_len = dblen;
	}
	memcpy(l->next_charset, charset, 2);
	l->changing = true;
	l->back = BACK_CHANGE;
	return 1;
}

/* The member's answers to COM_CHANGE_USER. It asks again (an auth switch with its challenge: MariaDB
 * always does), which repoint answers for the new user -- a client would answer for repoint's
 * challenge -- then OK (the session is the new user's) or ERR; either goes to the client numbered as
 * the answer to its request. */
static enum proto_login_step change_answer(struct proto_login *l, const uint8_t *p, size_t n, uint8_t seq,
					   struct evbuffer *to_member, struct evbuffer *to_client, char *err,
					   size_t errlen)
{
	if (n > 0 && p[0] == 0x00) {
		change_commit(l);
		evbuffer_drain(l->replay, evbuffer_get_length(l->replay));
		l->replay_count = 0;
		stmts_forget(l);  /* (the server closed them) */
		l->back = BACK_DONE;
		add_packet(to_client, 1, p, n);
		return PROTO_LOGIN_DONE;
	}
	if (n > 0 && p[0] == 0xFE) {
		const uint8_t *e = memchr(p + 1, 0, n - 1);
		if (e != NULL && strcmp((const char *)p + 1, native) == 0 && n - (size_t)(e - p) - 1 >= MYSQL_NATIVE_LEN) {
			struct proto_login tmp = *l;
			uint8_t a[MYSQL_NATIVE_LEN];
			size_t alen;
			tmp.cred = l->next_cred;
			tmp.has_cred = l->next_has_cred;
			tmp.has_stage1 = l->next_has_stage1;
			memcpy(tmp.stage1, l->next_stage1, sizeof(tmp.stage1));
			memcpy(tmp.user, l->next_user, sizeof(tmp.user));
			bool ok = proof(&tmp, e + 1, a, &alen, err, errlen);
			OPENSSL_cleanse(&tmp, sizeof(tmp));
			if (ok) {
				add_packet(to_member, (uint8_t)(seq + 1), a, alen);
				OPENSSL_cleanse(a, sizeof(a));
				return PROTO_LOGIN_MORE;
			}
		} else {
			snprintf(err, errlen, "the member asks user \"%s\" for another method than %s", l->next_user, native);
		}
		mysql_err_packet(to_client, 1, 1045, "28000", "repoint: the server asks for a method repoint cannot answer");
		return PROTO_LOGIN_FAIL;
	}
	if (n > 0 && p[0] == 0xFF)
		err_text(p, n, err, errlen);
	else
		snprintf(err, errlen, "an answer to COM_CHANGE_USER repoint cannot read");
	add_packet(to_client, 1, p, n);
	return PROTO_LOGIN_FAIL;
}

static bool stmt_keep(struct proto_login *l, const uint8_t *msgs, size_t n, const struct proto_state *st);
static void stmts_prune(struct proto_login *l, const struct proto_state *st);

static bool mll_replay(struct proto_login *l, int kind, const uint8_t *msgs, size_t n, const struct proto_state *st)
{
	switch (kind) {
	case MY_REPLAY_PACKET:
		if (evbuffer_get_length(l->replay) + n > ML_REPLAY_MAX || n < 5 || msgs[3] != 0)
			return false;
		/* One command, whole (what the session kept since the last idle point). */
		if (4 + (size_t)le24(msgs) != n)
			return false;
		evbuffer_add(l->replay, msgs, n);
		l->replay_count++;
		return true;
	case MY_REPLAY_RESET:
		evbuffer_drain(l->replay, evbuffer_get_length(l->replay));
		l->replay_count = 0;
		stmts_forget(l);
		change_commit(l);  /* (after COM_CHANGE_USER: the new user's from here on) */
		return true;
	case MY_REPLAY_PREPARE:
		return stmt_keep(l, msgs, n, st);
	}
	return false;
}

/* The last packet of msgs[0..n) is the COM_STMT_PREPARE the tracker just saw answered, under the id
 * it gives its last open statement. */
static bool stmt_keep(struct proto_login *l, const uint8_t *msgs, size_t n, const struct proto_state *st)
{
	size_t off = 0, at = 0, len = 0;
	uint32_t id = 0;
	uint16_t params = 0;
	unsigned k = 0;

	while (off + 4 <= n) {
		at = off;
		len = le24(msgs + off);
		off += 4 + len;
	}
	while (mysql_statement(st, k, &id, &params))
		k++;
	if (off != n || len < 1 || msgs[at + 3] != 0 || msgs[at + 4] != 0x16 || k == 0 ||
	    !mysql_statement(st, k - 1, &id, &params) || id == 0)
		return false;
	len += 4;
	stmts_prune(l, st);   /* (those closed since: a client that closes each after use keeps none) */
	if (l->nstmts >= ML_STMTS_MAX || l->stmt_bytes + len > ML_REPLAY_MAX)
		return false;
	struct ml_stmt *s = &l->stmts[l->nstmts];
	if ((s->pkt = malloc(len)) == NULL)
		return false;
	memcpy(s->pkt, msgs + at, len);
	s->len = len;
	s->id = id;
	s->params = params;
	l->stmt_bytes += len;
	l->nstmts++;
	return true;
}

/* Leaving the server: only the statements still open there are prepared again on the next. */
static void mll_leaving(struct proto_login *l, const struct proto_state *st)
{
	stmts_prune(l, st);
}

/* Only the statements the tracker knows open are kept. */
static void stmts_prune(struct proto_login *l, const struct proto_state *st)
{
	for (unsigned i = 0; i < l->nstmts;) {
		uint32_t id;
		uint16_t params;
		bool open = false;
		for (unsigned k = 0; !open && mysql_statement(st, k, &id, &params); k++)
			open = id == l->stmts[i].id;
		if (open) {
			i++;
			continue;
		}
		l->stmt_bytes -= l->stmts[i].len;
		free(l->stmts[i].pkt);
		l->stmts[i] = l->stmts[--l->nstmts];
	}
}

static size_t mll_map_answer(struct proto_login *l, struct proto_state *st, uint8_t *p, size_t n, uint8_t *head,
			     size_t *head_len)
{
	return mysql_feed_answer(st, &l->map, p, n, head, head_len);
}

/* --- server connections kept for the next client (pool_size) --- */

static bool mll_goodbye(const uint8_t *p, size_t n)
{
	return n == 5 && memcmp(p, "\x01\x00\x00\x00\x01", 5) == 0;  /* COM_QUIT */
}

/* Logged in, and nothing kept to send again (no SET, USE): the connection is as a new login leaves
 * it (the tracker says the rest: no statement, nothing else set). */
static bool mll_poolable(const struct proto_login *l)
{
	return l->told && l->back == BACK_DONE && l->replay_count == 0 && l->nstmts == 0 && l->member_greeting != NULL &&
	       l->key_len > 0 && l->next_charset[1] == 0;  /* (the key names the character set in one byte) */
}

/* The commands that make a connection whose session set something as a login of its start leaves it:
 * COM_RESET_CONNECTION (transaction, temporary tables, locks, user variables, statements, session
 * variables), COM_INIT_DB (the reset keeps the database a USE chose), and the character set the
 * client's hello named (MySQL's reset takes the server's; MariaDB's the hello's, which this sets
 * again): the collation by its id, then the client's and the results' sets from it. Four commands,
 * four OKs (reset_answer). Not for a start without a database (none cannot be chosen again). */
static bool mll_reset_request(const struct proto_login *l, bool in_transaction, struct evbuffer *out)
{
	static const uint8_t reset[] = {0x1F};
	static const char from_conn[] =
		"SET character_set_client = @@character_set_connection, character_set_results = @@character_set_connection";
	static const char global[] =
		"SET character_set_client = @@global.character_set_client, character_set_results = @@global.character_set_results";
	uint8_t cmd[1 + 256 + sizeof(global)];
	size_t n;

	(void)in_transaction;  /* (COM_RESET_CONNECTION rolls it back) */
	if (!l->told || l->back != BACK_DONE || l->member_greeting == NULL || l->key_len == 0 || l->next_charset[1] != 0 ||
	    l->db == NULL || l->db_len < 2 || l->db_len > 256)
		return false;
	add_packet(out, 0, reset, sizeof(reset));
	cmd[0] = 0x02;  /* COM_INIT_DB: the name, without its NUL */
	memcpy(cmd + 1, l->db, l->db_len - 1);
	add_packet(out, 0, cmd, l->db_len);
	cmd[0] = 0x03;  /* COM_QUERY */
	if (l->fixed[8] != 0)
		n = (size_t)snprintf((char *)cmd + 1, sizeof(cmd) - 1, "SET collation_connection = %u", (unsigned)l->fixed[8]);
	else
		n = (size_t)snprintf((char *)cmd + 1, sizeof(cmd) - 1, "SET collation_connection = @@global.collation_connection");
	add_packet(out, 0, cmd, 1 + n);
	n = (size_t)snprintf((char *)cmd + 1, sizeof(cmd) - 1, "%s", l->fixed[8] != 0 ? from_conn : global);
	add_packet(out, 0, cmd, 1 + n);
	return true;
}

/* The answers to mll_reset_request's four commands: an OK each (its number 1), nothing after. */
static int mll_reset_answer(const uint8_t *p, size_t n)
{
	size_t i = 0;
	int oks = 0;

	while (oks < 4) {
		if (n - i < 4)
			return 0;
		size_t len = le24(p + i);
		if (len == 0 || len > ML_PACKET_MAX || p[i + 3] != 1)
			return -1;
		if (n - i - 4 < len)
			return 0;
		if (p[i + 4] != 0x00)
			return -1;  /* an ERR (a database since dropped), or anything else */
		i += 4 + len;
		oks++;
	}
	return i == n ? 1 : -1;
}

static const uint8_t *mll_startup(const struct proto_login *l, size_t *n)
{
	*n = l->key_len;
	return l->key_len > 0 ? l->key : NULL;
}

/* What goes with a kept connection: the member's greeting, and its connection id. */
static bool mll_hand_over(const struct proto_login *l, struct evbuffer *params, uint8_t *member_key, bool *has_key)
{
	member_key[0] = (uint8_t)l->member_id;
	member_key[1] = (uint8_t)(l->member_id >> 8);
	member_key[2] = (uint8_t)(l->member_id >> 16);
	member_key[3] = (uint8_t)(l->member_id >> 24);
	*has_key = true;
	return evbuffer_add(params, l->member_greeting, l->member_greeting_len) == 0;
}

/* The client greeted from a kept connection's greeting, without a member connection. */
static bool mll_greet(struct proto_login *l, const uint8_t *params, size_t n, struct evbuffer *to_client)
{
	char err[200];

	if (l->greeted || l->front != FRONT_WAIT)
		return false;
	return back_greeting(l, params, n, to_client, err, sizeof(err));
}

/* A new client's login ends on a kept connection: it is told it is in (the OK a login ends with). */
static void mll_adopt(struct proto_login *l, const uint8_t *params, size_t n, const uint8_t *member_key, bool has_key,
		      struct evbuffer *to_client)
{
	static const uint8_t ok[] = {0, 0, 0, 2, 0, 0, 0};  /* OK: no rows, no id, autocommit, no warnings */

	free(l->member_greeting);
	if ((l->member_greeting = malloc(n > 0 ? n : 1)) != NULL)
		memcpy(l->member_greeting, params, n);
	l->member_greeting_len = l->member_greeting != NULL ? n : 0;
	if (has_key)
		l->member_id = (uint32_t)member_key[0] | (uint32_t)member_key[1] << 8 | (uint32_t)member_key[2] << 16 |
			       (uint32_t)member_key[3] << 24;
	add_packet(to_client, l->cseq, ok, sizeof(ok));
	l->told = true;
	l->back = BACK_DONE;
}

static void mll_set_member_password(struct proto_login *l, const char *member_password)
{
	member_pw_forget(l);
	if (member_password != NULL)
		l->member_pw = strdup(member_password);
	l->has_member_pw = member_password != NULL;
}

static void mll_offer_tls(struct proto_login *l, bool required)
{
	l->offer_tls = true;
	l->require_tls = required;
}

const struct proto_login_ops mysql_login_ops = {
	.offer_tls = mll_offer_tls,
	.goodbye = mll_goodbye,
	.change_user = mll_change_user,
	.greet = mll_greet,
	.poolable = mll_poolable,
	.reset_request = mll_reset_request,
	.reset_answer = mll_reset_answer,
	.startup = mll_startup,
	.hand_over = mll_hand_over,
	.adopt = mll_adopt,
	.set_member_password = mll_set_member_password,
	.member_first = true,
	.create = mll_new,
	.destroy = mll_free,
	.front = mll_front,
	.front_done = mll_front_done,
	.back_start = mll_back_start,
	.user = mll_user,
	.back = mll_back,
	.told = mll_told,
	.track_idle = mll_track_idle,
	.member_key = mll_member_key,
	.replay = mll_replay,
	.leaving = mll_leaving,
	.map_request = mll_map_request,
	.map_answer = mll_map_answer,
};
