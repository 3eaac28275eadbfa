/* pg_login.c - repoint's own side of a Postgres session's start (auth = repoint): proto.h's
 * proto_login_ops for Postgres.
 *
 * Messages (protocol 3.0): the client's StartupMessage is untyped (int32 length, int32 version,
 * then NUL-terminated name/value pairs and a final NUL); everything else is typed (1 byte, int32
 * length including itself). The member answers a StartupMessage with Authentication requests ('R':
 * 0 Ok, 3 cleartext, 5 MD5, 10 SASL, 11 SASL continue, 12 SASL final) or an ErrorResponse, then
 * ParameterStatus ('S'), BackendKeyData ('K'), notices ('N'), NegotiateProtocolVersion ('v') and
 * ReadyForQuery ('Z').
 */
#include "auth/auth.h"
#include "config.h"
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define PG_STARTUP_MAX 10000u       /* the server's own limit on a startup packet */
#define PG_LOGIN_MSG_MAX (64u * 1024u)  /* an authentication-phase message longer than this is not one */
#define PG_PROTOCOL_3 0x00030000u

enum front_state { FRONT_STARTUP, FRONT_SASL_INIT, FRONT_SASL_FINAL, FRONT_MD5, FRONT_DONE, FRONT_FAILED };
enum back_state { BACK_NONE, BACK_AUTH, BACK_PARAMS, BACK_REPLAY, BACK_DONE };

/* The most a session keeps to replay after a move (its SETs). */
#define PG_REPLAY_MAX (64u * 1024u)

/* A named prepared statement: its Parse message, whole, to send again on the next server. */
struct pg_stmt {
	char *name;
	uint8_t *parse;
	uint32_t len;
};

struct proto_login {
	enum client_auth how;
	struct auth_users *users;   /* a reference */
	struct auth_user cred;      /* the user's entry (password copied), when auth_file has one */
	char *member_pw;            /* this member login's password instead (member_password), or NULL */
	bool has_member_pw;         /* ... one was given (member_pw NULL then: out of memory) */
	bool has_cred;
	bool known;                 /* the user is in auth_file (an unknown one goes through a mock exchange) */
	bool has_scram_key;         /* the client's SCRAM proof gave its ClientKey (for cred.verifier) */
	uint8_t scram_key[SCRAM_KEY_LEN];
	struct scram_server *ss;    /* the client's SCRAM exchange, while it lasts */
	struct scram_client *sc;    /* a member's, while it lasts */
	enum front_state front;
	enum back_state back;
	bool told;                  /* the client has had its AuthenticationOk .. ReadyForQuery */
	uint8_t *startup;           /* the client's StartupMessage, whole */
	size_t startup_len;
	char user[128];
	uint8_t client_key[PROTO_KEY_MAX];  /* the key repoint gave the client */
	uint8_t md5_salt[4];        /* client_auth = md5: the salt repoint sent the client */
	uint8_t member_key[PROTO_KEY_MAX];  /* the key the member gave repoint's connection */
	bool has_member_key;
	struct evbuffer *first;     /* the first login's messages for the client, until ReadyForQuery */
	struct evbuffer *said;      /* ... kept (they go with the connection when it is pooled) */
	struct evbuffer *replay;    /* Queries to send again after a later login (SETs) */
	uint32_t replay_count;      /* ... how many */
	struct pg_stmt *stmts;      /* named prepared statements to create again after a later login */
	size_t nstmts, stmts_cap;
	size_t replay_bytes;        /* SETs and Parse messages kept, at most PG_REPLAY_MAX */
	uint32_t replay_left;       /* ReadyForQuery still owed for them during a login */
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* A typed message: type, body. */
static void pg_message(struct evbuffer *out, uint8_t type, const void *body, size_t len)
{
	uint8_t hdr[5] = {type};

	put_be32(hdr + 1, (uint32_t)(len + 4));
	evbuffer_add(out, hdr, sizeof(hdr));
	if (len > 0)
		evbuffer_add(out, body, len);
}

static void auth_ok(struct evbuffer *out)
{
	static const uint8_t zero[4] = {0, 0, 0, 0};

	pg_message(out, 'R', zero, sizeof(zero));
}

static void pgl_free(struct proto_login *l);

static struct proto_login *pgl_new(enum client_auth how, struct auth_users *users)
{
	struct proto_login *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->how = how;
	l->users = users;
	auth_users_ref(users);
	l->first = evbuffer_new();
	l->said = evbuffer_new();
	l->replay = evbuffer_new();
	/* The client's cancel key: random, so that nobody can cancel another client's query by
	 * guessing (the server's own keys are random for the same reason). */
	if (l->first == NULL || l->said == NULL || l->replay == NULL || RAND_bytes(l->client_key, sizeof(l->client_key)) != 1) {
		pgl_free(l);
		return NULL;
	}
	return l;
}

static void member_pw_forget(struct proto_login *l)
{
	auth_secret_free(l->member_pw);
	l->member_pw = NULL;
}

static void pgl_free(struct proto_login *l)
{
	if (l == NULL)
		return;
	if (l->first != NULL)
		evbuffer_free(l->first);
	if (l->said != NULL)
		evbuffer_free(l->said);
	if (l->replay != NULL)
		evbuffer_free(l->replay);
	free(l->startup);
	auth_secret_free(l->cred.password);
	member_pw_forget(l);
	for (size_t i = 0; i < l->nstmts; i++) {
		free(l->stmts[i].name);
		free(l->stmts[i].parse);
	}
	free(l->stmts);
	if (l->ss != NULL) {
		OPENSSL_cleanse(l->ss, sizeof(*l->ss));
		free(l->ss);
	}
	if (l->sc != NULL) {
		OPENSSL_cleanse(l->sc, sizeof(*l->sc));
		free(l->sc);
	}
	OPENSSL_cleanse(l->scram_key, sizeof(l->scram_key));
	auth_users_unref(l->users);
	free(l);
}

static bool pgl_front_done(const struct proto_login *l)
{
	return l->front == FRONT_DONE;
}

static bool pgl_told(const struct proto_login *l)
{
	return l->told;
}

static enum proto_login_step front_fail(struct proto_login *l, struct evbuffer *out, const char *sqlstate, const char *msg)
{
	pg_error_response(out, "FATAL", sqlstate, msg);
	l->front = FRONT_FAILED;
	return PROTO_LOGIN_FAIL;
}

/* The StartupMessage's name/value pairs: the user is required (the server's rule too). */
static bool startup_user(struct proto_login *l)
{
	const char *p = (const char *)l->startup + 8, *end = (const char *)l->startup + l->startup_len;

	while (p < end && *p != '\0') {
		const char *name = p, *value = memchr(p, '\0', (size_t)(end - p));
		if (value == NULL || ++value >= end)
			return false;
		const char *next = memchr(value, '\0', (size_t)(end - value));
		if (next == NULL)
			return false;
		if (strcmp(name, "user") == 0) {
			if ((size_t)(next - value) >= sizeof(l->user))
				return false;
			memcpy(l->user, value, (size_t)(next - value) + 1);
		}
		p = next + 1;
	}
	/* The list ends with one NUL, the last byte of the packet. */
	return p == end - 1 && l->user[0] != '\0';
}

/* A complete typed message from `in` (its type and body copied out, NUL-terminated), or false
 * (*more set) when not all there yet. */
static bool take_message(struct evbuffer *in, uint8_t *type, char *body, size_t cap, size_t *len, bool *more,
			 bool *bad)
{
	uint8_t hdr[5];
	size_t have = evbuffer_get_length(in);

	*more = *bad = false;
	if (have < 5) {
		*more = true;
		return false;
	}
	evbuffer_copyout(in, hdr, sizeof(hdr));
	uint32_t mlen = be32(hdr + 1);
	if (mlen < 4 || mlen - 4 >= cap) {
		*bad = true;
		return false;
	}
	if (have < 1 + (size_t)mlen) {
		*more = true;
		return false;
	}
	evbuffer_drain(in, 5);
	evbuffer_remove(in, body, mlen - 4);
	body[mlen - 4] = '\0';
	*type = hdr[0];
	*len = mlen - 4;
	return true;
}

static enum proto_login_step password_failed(struct proto_login *l, struct evbuffer *out)
{
	char msg[200];

	snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"", l->user);
	return front_fail(l, out, "28P01", msg);
}

static bool md5_hex(const void *a, size_t alen, const void *b, size_t blen, char *out);

/* md5hex(password + user), what an md5 secret holds, from the user's auth_file entry: false when
 * it has neither a password nor an md5 secret (a SCRAM verifier cannot give it). */
static bool md5_inner(const struct proto_login *l, char inner[33])
{
	if (l->has_cred && l->cred.password != NULL)
		return md5_hex(l->cred.password, strlen(l->cred.password), l->user, strlen(l->user), inner);
	if (l->has_cred && l->cred.has_md5) {
		memcpy(inner, l->cred.md5, 33);
		return true;
	}
	return false;
}

/* The client's answer to AuthenticationMD5Password: "md5" + md5hex(inner + salt), checked
 * timing-safe. An unknown user, or one whose secret is a SCRAM verifier, is refused the same way. */
static enum proto_login_step front_md5(struct proto_login *l, struct evbuffer *in, struct evbuffer *out)
{
	char body[128], inner[33], want[36] = "md5";
	size_t len;
	uint8_t type;
	bool more, bad, ok;

	if (!take_message(in, &type, body, sizeof(body), &len, &more, &bad)) {
		if (bad)
			return front_fail(l, out, "08P01", "invalid password message");
		return PROTO_LOGIN_MORE;
	}
	if (type != 'p')
		return front_fail(l, out, "08P01", "expected a password response");
	ok = md5_inner(l, inner) && md5_hex(inner, 32, l->md5_salt, sizeof(l->md5_salt), want + 3);
	ok = ok && len == 36 && body[35] == '\0' && CRYPTO_memcmp(body, want, 35) == 0;
	OPENSSL_cleanse(inner, sizeof(inner));
	OPENSSL_cleanse(want, sizeof(want));
	if (!ok)
		return password_failed(l, out);
	l->front = FRONT_DONE;
	return PROTO_LOGIN_DONE;
}

/* The client's SCRAM-SHA-256 exchange with repoint (AuthenticationSASL was sent). An unknown user,
 * or one without a secret, goes through the same exchange with a verifier nobody knows, as the
 * server does, so that the answer does not tell who exists. */
static enum proto_login_step front_sasl(struct proto_login *l, struct evbuffer *in, struct evbuffer *out)
{
	char body[2048], reply[600], err[200];
	size_t len;
	uint8_t type;
	bool more, bad;

	while (l->front == FRONT_SASL_INIT || l->front == FRONT_SASL_FINAL) {
		if (!take_message(in, &type, body, sizeof(body), &len, &more, &bad)) {
			if (bad)
				return front_fail(l, out, "08P01", "invalid SASL message");
			return PROTO_LOGIN_MORE;
		}
		if (type != 'p')
			return front_fail(l, out, "08P01", "expected a SASL response");
		if (l->front == FRONT_SASL_INIT) {
			/* SASLInitialResponse: mechanism, NUL, int32 length (-1: none), data */
			size_t mlen = strnlen(body, len);
			struct scram_verifier v;
			if (mlen == len || strcmp(body, "SCRAM-SHA-256") != 0)
				return front_fail(l, out, "28000", "the client selected an invalid SASL authentication mechanism");
			if (len < mlen + 5 || be32((const uint8_t *)body + mlen + 1) != len - mlen - 5)
				return front_fail(l, out, "08P01", "malformed SASLInitialResponse");
			if (l->has_cred && l->cred.has_verifier)
				v = l->cred.verifier;
			else if (!(l->has_cred && l->cred.password != NULL &&
				   scram_verifier_from_password(l->cred.password, NULL, 0, 0, &v)) &&
				 !scram_verifier_from_password("", NULL, 0, 0, &v))
				return front_fail(l, out, "53200", "out of memory");
			if (!(l->has_cred && (l->cred.has_verifier || l->cred.password != NULL))) {
				l->known = false;  /* a mock exchange: its proof can never match */
				RAND_bytes(v.stored_key, sizeof(v.stored_key));
			}
			if ((l->ss = calloc(1, sizeof(*l->ss))) == NULL)
				return front_fail(l, out, "53200", "out of memory");
			if (!scram_server_first(l->ss, &v, body + mlen + 5, len - mlen - 5, reply + 4, sizeof(reply) - 4, err,
						sizeof(err)))
				return front_fail(l, out, "08P01", err);
			memcpy(reply, "\0\0\0\x0b", 4);  /* AuthenticationSASLContinue */
			pg_message(out, 'R', reply, 4 + strlen(reply + 4));
			l->front = FRONT_SASL_FINAL;
			continue;
		}
		if (!scram_server_final(l->ss, body, len, reply + 4, sizeof(reply) - 4, err, sizeof(err)) || !l->known)
			return password_failed(l, out);
		memcpy(reply, "\0\0\0\x0c", 4);  /* AuthenticationSASLFinal */
		pg_message(out, 'R', reply, 4 + strlen(reply + 4));
		if (l->cred.has_verifier) {
			memcpy(l->scram_key, l->ss->client_key, SCRAM_KEY_LEN);
			l->has_scram_key = true;
		}
		OPENSSL_cleanse(l->ss, sizeof(*l->ss));
		free(l->ss);
		l->ss = NULL;
		l->front = FRONT_DONE;
	}
	return l->front == FRONT_DONE ? PROTO_LOGIN_DONE : PROTO_LOGIN_FAIL;
}

static enum proto_login_step pgl_front(struct proto_login *l, struct evbuffer *in, struct evbuffer *out)
{
	size_t have = evbuffer_get_length(in);
	uint8_t hdr[8];

	if (l->front == FRONT_SASL_INIT || l->front == FRONT_SASL_FINAL)
		return front_sasl(l, in, out);
	if (l->front == FRONT_MD5)
		return front_md5(l, in, out);
	if (l->front != FRONT_STARTUP)
		return l->front == FRONT_DONE ? PROTO_LOGIN_DONE : PROTO_LOGIN_FAIL;
	if (have < 8)
		return PROTO_LOGIN_MORE;
	evbuffer_copyout(in, hdr, sizeof(hdr));
	uint32_t len = be32(hdr), version = be32(hdr + 4);
	if (len < 9 || len > PG_STARTUP_MAX || version >> 16 != 3)
		return front_fail(l, out, "08P01", "invalid startup packet");
	if (have < len)
		return PROTO_LOGIN_MORE;
	l->startup = malloc(len);
	if (l->startup == NULL)
		return front_fail(l, out, "53200", "out of memory");
	evbuffer_remove(in, l->startup, len);
	l->startup_len = len;
	if (!startup_user(l))
		return front_fail(l, out, "28000", "no PostgreSQL user name specified in startup packet");
	const struct auth_user *u = auth_users_find(l->users, l->user);
	if (u != NULL) {
		l->cred = *u;
		l->cred.password = NULL;
		if (u->password != NULL && (l->cred.password = strdup(u->password)) == NULL)
			return front_fail(l, out, "53200", "out of memory");
		l->has_cred = l->known = true;
	}
	switch (l->how) {
	case CLIENT_AUTH_TRUST:
		l->front = FRONT_DONE;
		return PROTO_LOGIN_DONE;
	case CLIENT_AUTH_SCRAM: {
		static const char mechs[] = "\0\0\0\x0aSCRAM-SHA-256\0";  /* AuthenticationSASL, one mechanism */
		pg_message(out, 'R', mechs, sizeof(mechs));
		l->front = FRONT_SASL_INIT;
		return front_sasl(l, in, out);
	}
	case CLIENT_AUTH_MD5: {
		uint8_t req[8] = {0, 0, 0, 5};  /* AuthenticationMD5Password, a fresh salt */
		if (RAND_bytes(l->md5_salt, sizeof(l->md5_salt)) != 1)
			return front_fail(l, out, "53200", "out of randomness");
		memcpy(req + 4, l->md5_salt, 4);
		pg_message(out, 'R', req, sizeof(req));
		l->front = FRONT_MD5;
		return front_md5(l, in, out);
	}
	case CLIENT_AUTH_MYSQL_NATIVE:
		break;
	}
	return front_fail(l, out, "28000", "repoint: this client authentication method is not available");
}

static const char *pgl_user(const struct proto_login *l)
{
	return l->user;
}

static void pgl_back_start(struct proto_login *l, struct evbuffer *to_member, const char *member_password, bool tls)
{
	(void)tls;  /* made before the login, by the session */
	member_pw_forget(l);
	if (member_password != NULL)
		l->member_pw = strdup(member_password);  /* NULL on no memory: the login then says it has none */
	l->has_member_pw = member_password != NULL;
	evbuffer_add(to_member, l->startup, l->startup_len);
	l->back = BACK_AUTH;
	l->has_member_key = false;
	evbuffer_drain(l->first, evbuffer_get_length(l->first));
}

/* The first ErrorResponse field of type `field` ('M' message), for the log. */
static void error_field(const uint8_t *body, size_t len, char field, char *buf, size_t buflen)
{
	size_t i = 0;

	snprintf(buf, buflen, "(no message)");
	while (i < len && body[i] != 0) {
		const uint8_t *v = body + i + 1, *nul = memchr(v, 0, len - i - 1);
		if (nul == NULL)
			return;
		if (body[i] == (uint8_t)field) {
			snprintf(buf, buflen, "%.*s", (int)(nul - v), (const char *)v);
			return;
		}
		i = (size_t)(nul - body) + 1;
	}
}

/* A 'p' message (password, SASL) to the member. */
static void to_member_p(struct evbuffer *out, const void *a, size_t alen, const void *b, size_t blen)
{
	uint8_t hdr[5] = {'p'};

	put_be32(hdr + 1, (uint32_t)(4 + alen + blen));
	evbuffer_add(out, hdr, sizeof(hdr));
	evbuffer_add(out, a, alen);
	if (blen > 0)
		evbuffer_add(out, b, blen);
}

/* md5(hex of md5(a + b)) as PostgreSQL's "md5" method chains it; out gets 32 hex digits and a NUL. */
static bool md5_hex(const void *a, size_t alen, const void *b, size_t blen, char *out)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t d[16];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
		  EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, d, &n) == 1 && n == 16;

	EVP_MD_CTX_free(ctx);
	for (int i = 0; ok && i < 16; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[32] = '\0';
	return ok;
}

/* The member asks the login to prove itself (an Authentication request other than Ok): SCRAM with
 * the password or the client's ClientKey, or the password in clear or as md5 when auth_file has it. */
static enum proto_login_step back_auth(struct proto_login *l, const uint8_t *body, size_t blen,
				       struct evbuffer *to_member, char *err, size_t errlen)
{
	uint32_t code = be32(body);
	const char *data = (const char *)body + 4;
	size_t dlen = blen - 4;
	char msg[600];
	const char *pw = l->has_member_pw ? l->member_pw : l->has_cred ? l->cred.password : NULL;

	switch (code) {
	case 5:  /* AuthenticationMD5Password with only an md5 secret: it is what the exchange hashes */
		if (pw == NULL && !l->has_member_pw && l->has_cred && l->cred.has_md5) {
			char outer[36] = "md5";
			if (dlen != 4 || !md5_hex(l->cred.md5, 32, data, 4, outer + 3)) {
				snprintf(err, errlen, dlen != 4 ? "malformed AuthenticationMD5Password" : "md5 failed");
				return PROTO_LOGIN_FAIL;
			}
			to_member_p(to_member, outer, 36, NULL, 0);
			return PROTO_LOGIN_MORE;
		}
		/* fall through */
	case 3:  /* AuthenticationCleartextPassword */
		if (pw == NULL) {
			snprintf(err, errlen, "the member asks user \"%s\" for a password, and %s", l->user,
				 l->has_member_pw ? "member_password has none now" : "auth_file has none for it");
			return PROTO_LOGIN_FAIL;
		}
		if (code == 3) {
			to_member_p(to_member, pw, strlen(pw) + 1, NULL, 0);
			return PROTO_LOGIN_MORE;
		}
		if (dlen != 4) {
			snprintf(err, errlen, "malformed AuthenticationMD5Password");
			return PROTO_LOGIN_FAIL;
		}
		char inner[33], outer[36] = "md5";
		if (!md5_hex(pw, strlen(pw), l->user, strlen(l->user), inner) || !md5_hex(inner, 32, data, 4, outer + 3)) {
			snprintf(err, errlen, "md5 failed");
			return PROTO_LOGIN_FAIL;
		}
		to_member_p(to_member, outer, 36, NULL, 0);
		return PROTO_LOGIN_MORE;
	case 10: {  /* AuthenticationSASL: the mechanisms, each NUL-terminated, then an empty one */
		bool scram = false;
		for (size_t i = 0; i < dlen && data[i] != '\0';) {
			size_t n = strnlen(data + i, dlen - i);
			if (n == 13 && memcmp(data + i, "SCRAM-SHA-256", 13) == 0)
				scram = true;
			i += n + 1;
		}
		if (!scram) {
			snprintf(err, errlen, "the member offers no SASL mechanism repoint speaks (SCRAM-SHA-256)");
			return PROTO_LOGIN_FAIL;
		}
		if (l->sc == NULL && (l->sc = calloc(1, sizeof(*l->sc))) == NULL) {
			snprintf(err, errlen, "out of memory");
			return PROTO_LOGIN_FAIL;
		}
		memset(l->sc, 0, sizeof(*l->sc));
		l->sc->password = pw;
		if (pw == NULL && l->has_scram_key && !l->has_member_pw) {
			l->sc->has_key = true;
			memcpy(l->sc->client_key, l->scram_key, SCRAM_KEY_LEN);
			l->sc->v = l->cred.verifier;
		} else if (pw == NULL) {
			snprintf(err, errlen, "nothing to log in to the member with for user \"%s\" (auth_file: a password, or a "
				 "SCRAM verifier with client_auth = scram-sha-256)", l->user);
			return PROTO_LOGIN_FAIL;
		}
		if (!scram_client_first(l->sc, msg, sizeof(msg))) {
			snprintf(err, errlen, "out of randomness");
			return PROTO_LOGIN_FAIL;
		}
		uint8_t len[4];
		put_be32(len, (uint32_t)strlen(msg));
		uint8_t head[14 + 4];
		memcpy(head, "SCRAM-SHA-256", 14);
		memcpy(head + 14, len, 4);
		to_member_p(to_member, head, sizeof(head), msg, strlen(msg));
		return PROTO_LOGIN_MORE;
	}
	case 11:  /* AuthenticationSASLContinue: server-first-message */
		if (l->sc == NULL || !scram_client_final(l->sc, data, dlen, msg, sizeof(msg), err, errlen)) {
			if (l->sc == NULL)
				snprintf(err, errlen, "a SASL continuation out of place");
			return PROTO_LOGIN_FAIL;
		}
		to_member_p(to_member, msg, strlen(msg), NULL, 0);
		return PROTO_LOGIN_MORE;
	case 12:  /* AuthenticationSASLFinal: the server's signature */
		if (l->sc == NULL || !scram_client_check(l->sc, data, dlen, err, errlen)) {
			if (l->sc == NULL)
				snprintf(err, errlen, "a SASL final out of place");
			return PROTO_LOGIN_FAIL;
		}
		return PROTO_LOGIN_MORE;
	default:
		snprintf(err, errlen, "the member asks for authentication method %u, which repoint cannot do", code);
		return PROTO_LOGIN_FAIL;
	}
}

static enum proto_login_step pgl_back(struct proto_login *l, struct evbuffer *in, struct evbuffer *to_member,
				 struct evbuffer *to_client, char *err, size_t errlen)
{
	uint8_t hdr[5];

	for (;;) {
		size_t have = evbuffer_get_length(in);
		if (l->back == BACK_DONE)
			return PROTO_LOGIN_DONE;
		if (have < 5)
			return PROTO_LOGIN_MORE;
		evbuffer_copyout(in, hdr, sizeof(hdr));
		uint32_t len = be32(hdr + 1);
		if (len < 4 || len > PG_LOGIN_MSG_MAX) {
			snprintf(err, errlen, "not a Postgres login answer");
			return PROTO_LOGIN_FAIL;
		}
		if (have < 1 + (size_t)len)
			return PROTO_LOGIN_MORE;
		uint8_t *m = evbuffer_pullup(in, (ev_ssize_t)(1 + len));
		const uint8_t *body = m + 5;
		size_t blen = len - 4;
		switch (hdr[0]) {
		case 'E':
			error_field(body, blen, 'M', err, errlen);
			if (l->back == BACK_REPLAY) {
				char what[200];
				snprintf(what, sizeof(what), "%s", err);
				snprintf(err, errlen, "setting again what the session set: %s", what);
				return PROTO_LOGIN_FAIL;
			}
			if (!l->told)
				evbuffer_add(to_client, m, 1 + len);
			evbuffer_drain(in, 1 + len);
			return PROTO_LOGIN_FAIL;
		case 'R':
			if (blen < 4 || l->back != BACK_AUTH) {
				snprintf(err, errlen, "an authentication request out of place");
				return PROTO_LOGIN_FAIL;
			}
			if (be32(body) != 0) {
				enum proto_login_step st = back_auth(l, body, blen, to_member, err, errlen);
				if (st == PROTO_LOGIN_FAIL) {
					if (!l->told) {
						char msg[400];
						snprintf(msg, sizeof(msg), "repoint cannot log in to the member as \"%s\": %s",
							 l->user, err);
						pg_error_response(to_client, "FATAL", "28000", msg);
					}
					return st;
				}
				break;
			}
			l->back = BACK_PARAMS;
			break;
		case 'C':
		case 'T':
		case 'D':
		case '1':  /* ParseComplete: a statement created again */
			if (l->back != BACK_REPLAY) {
				snprintf(err, errlen, "an unexpected message ('%c') while logging in", hdr[0]);
				return PROTO_LOGIN_FAIL;
			}
			break;
		case 'K':
			if (blen != PROTO_KEY_MAX) {
				snprintf(err, errlen, "a cancel key repoint cannot hold (%zu bytes)", blen);
				return PROTO_LOGIN_FAIL;
			}
			memcpy(l->member_key, body, PROTO_KEY_MAX);
			l->has_member_key = true;
			break;
		case 'S':
		case 'N':
		case 'v':
			if (!l->told)
				evbuffer_add(l->first, m, 1 + len);
			break;
		case 'Z':
			if (l->back == BACK_REPLAY) {
				evbuffer_drain(in, 1 + len);
				if (--l->replay_left > 0)
					continue;
				l->back = BACK_DONE;
				member_pw_forget(l);
				return PROTO_LOGIN_DONE;
			}
			if (l->back != BACK_PARAMS) {
				snprintf(err, errlen, "ready before logged in");
				return PROTO_LOGIN_FAIL;
			}
			if (l->told && (l->replay_count > 0 || l->nstmts > 0)) {
				/* A moved session: what it set on its old server, set again; its prepared
				 * statements created again (one Sync: one ReadyForQuery for them all). */
				static const uint8_t sync[] = {'S', 0, 0, 0, 4};
				evbuffer_drain(in, 1 + len);
				uint8_t *p = evbuffer_pullup(l->replay, -1);
				evbuffer_add(to_member, p, evbuffer_get_length(l->replay));
				for (size_t i = 0; i < l->nstmts; i++)
					evbuffer_add(to_member, l->stmts[i].parse, l->stmts[i].len);
				if (l->nstmts > 0)
					evbuffer_add(to_member, sync, sizeof(sync));
				l->replay_left = l->replay_count + (l->nstmts > 0 ? 1 : 0);
				l->back = BACK_REPLAY;
				continue;
			}
			if (!l->told) {
				auth_ok(to_client);
				evbuffer_add(l->said, evbuffer_pullup(l->first, -1), evbuffer_get_length(l->first));
				evbuffer_add_buffer(to_client, l->first);
				pg_message(to_client, 'K', l->client_key, sizeof(l->client_key));
				evbuffer_add(to_client, m, 1 + len);
				l->told = true;
			}
			evbuffer_drain(in, 1 + len);
			l->back = BACK_DONE;
			member_pw_forget(l);
			return PROTO_LOGIN_DONE;
		default:
			snprintf(err, errlen, "an unexpected message ('%c') while logging in", hdr[0]);
			return PROTO_LOGIN_FAIL;
		}
		evbuffer_drain(in, 1 + len);
	}
}

static void pgl_track_idle(const struct proto_login *l, struct proto_state *st)
{
	struct evbuffer *b = evbuffer_new();
	static const uint8_t ready[] = {'Z', 0, 0, 0, 5, 'I'};

	proto_postgres.init(st);
	if (b == NULL)
		return;
	proto_postgres.feed(st, PROTO_CLIENT_TO_SERVER, l->startup, l->startup_len);
	auth_ok(b);
	pg_message(b, 'K', l->client_key, sizeof(l->client_key));
	evbuffer_add(b, ready, sizeof(ready));
	proto_postgres.feed(st, PROTO_SERVER_TO_CLIENT, evbuffer_pullup(b, -1), evbuffer_get_length(b));
	evbuffer_free(b);
}

static struct pg_stmt *stmt_find(struct proto_login *l, const char *name, size_t len)
{
	for (size_t i = 0; i < l->nstmts; i++)
		if (strlen(l->stmts[i].name) == len && memcmp(l->stmts[i].name, name, len) == 0)
			return &l->stmts[i];
	return NULL;
}

static void stmt_forget(struct proto_login *l, const char *name, size_t len)
{
	struct pg_stmt *st = stmt_find(l, name, len);

	if (st == NULL)
		return;
	l->replay_bytes -= st->len;
	free(st->name);
	free(st->parse);
	*st = l->stmts[--l->nstmts];
}

static bool stmt_keep(struct proto_login *l, const uint8_t *msg, size_t len, const char *name, size_t nlen)
{
	struct pg_stmt *st;

	/* Parsed again under the same name (after a Close the client sent): the last one counts. */
	stmt_forget(l, name, nlen);
	if (l->replay_bytes + len > PG_REPLAY_MAX)
		return false;
	if (l->nstmts == l->stmts_cap) {
		size_t cap = l->stmts_cap ? 2 * l->stmts_cap : 8;
		struct pg_stmt *a = realloc(l->stmts, cap * sizeof(*a));
		if (a == NULL)
			return false;
		l->stmts = a;
		l->stmts_cap = cap;
	}
	st = &l->stmts[l->nstmts];
	st->name = strndup(name, nlen);
	st->parse = malloc(len);
	if (st->name == NULL || st->parse == NULL) {
		free(st->name);
		free(st->parse);
		return false;
	}
	memcpy(st->parse, msg, len);
	st->len = (uint32_t)len;
	l->nstmts++;
	l->replay_bytes += len;
	return true;
}

/* Parse and Close messages among msgs[0..n) (complete messages, as the client sent them): named
 * statements kept, closed ones forgotten; the rest (Bind, Execute, Sync...) passes by. */
static bool replay_statements(struct proto_login *l, const uint8_t *msgs, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (n - i < 5)
			return false;
		uint32_t len = be32(msgs + i + 1);
		if (len < 4 || len > n - i - 1)
			return false;
		const uint8_t *body = msgs + i + 5;
		size_t blen = len - 4;
		const uint8_t *nul = memchr(body, 0, blen);
		if (msgs[i] == 'P' && nul != NULL && nul > body) {
			if (!stmt_keep(l, msgs + i, 1 + (size_t)len, (const char *)body, (size_t)(nul - body)))
				return false;
		} else if (msgs[i] == 'C' && blen >= 2 && body[0] == 'S') {
			const uint8_t *end = memchr(body + 1, 0, blen - 1);
			if (end == NULL)
				return false;
			stmt_forget(l, (const char *)body + 1, (size_t)(end - body - 1));
		}
		i += 1 + (size_t)len;
	}
	return true;
}

/* A lone "DEALLOCATE [PREPARE] name | ALL" as a simple Query: the statement(s) forgotten. */
static bool replay_deallocate(struct proto_login *l, const uint8_t *msgs, size_t n)
{
	char q[512], *w, *save = NULL;

	if (n < 6 || msgs[0] != 'Q' || n - 5 >= sizeof(q))
		return false;
	memcpy(q, msgs + 5, n - 5);
	q[n - 5] = '\0';
	w = strtok_r(q, " \t\r\n;", &save);
	if (w == NULL || strcasecmp(w, "deallocate") != 0)
		return false;
	w = strtok_r(NULL, " \t\r\n;", &save);
	if (w != NULL && strcasecmp(w, "prepare") == 0)
		w = strtok_r(NULL, " \t\r\n;", &save);
	if (w == NULL || strtok_r(NULL, " \t\r\n;", &save) != NULL)
		return false;
	if (strcasecmp(w, "all") == 0) {
		while (l->nstmts > 0)
			stmt_forget(l, l->stmts[0].name, strlen(l->stmts[0].name));
		return true;
	}
	/* An unquoted name folds to lower case, as the server folds it; a quoted one is taken as is. */
	size_t len = strlen(w);
	if (w[0] == '"') {
		if (len < 2 || w[len - 1] != '"' || memchr(w + 1, '"', len - 2) != NULL)
			return false;
		stmt_forget(l, w + 1, len - 2);
		return true;
	}
	for (char *c = w; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	stmt_forget(l, w, len);
	return true;
}

static bool pgl_replay(struct proto_login *l, int kind, const uint8_t *msgs, size_t n, const struct proto_state *st)
{
	(void)st;
	switch (kind) {
	case PG_REPLAY_SET:
		if (l->replay_bytes + n > PG_REPLAY_MAX)
			return false;
		evbuffer_add(l->replay, msgs, n);
		l->replay_bytes += n;
		l->replay_count++;
		return true;
	case PG_REPLAY_STATEMENTS:
		return replay_statements(l, msgs, n);
	case PG_REPLAY_DEALLOCATE:
		return replay_deallocate(l, msgs, n);
	}
	return false;
}

/* Terminate, alone. */
static bool pgl_goodbye(const uint8_t *p, size_t n)
{
	return n == 5 && memcmp(p, "X\0\0\0\4", 5) == 0;
}

static bool pgl_poolable(const struct proto_login *l)
{
	return l->told && l->back == BACK_DONE && l->replay_count == 0 && l->nstmts == 0;
}

static const uint8_t *pgl_startup(const struct proto_login *l, size_t *n)
{
	*n = l->startup_len;
	return l->startup;
}

static bool pgl_hand_over(const struct proto_login *l, struct evbuffer *params, uint8_t *member_key, bool *has_key)
{
	memcpy(member_key, l->member_key, PROTO_KEY_MAX);
	*has_key = l->has_member_key;
	return evbuffer_add(params, evbuffer_pullup(l->said, -1), evbuffer_get_length(l->said)) == 0;
}

static void pgl_adopt(struct proto_login *l, const uint8_t *params, size_t n, const uint8_t *member_key, bool has_key,
		      struct evbuffer *to_client)
{
	static const uint8_t ready[] = {'Z', 0, 0, 0, 5, 'I'};

	auth_ok(to_client);
	evbuffer_add(to_client, params, n);
	evbuffer_add(l->said, params, n);
	pg_message(to_client, 'K', l->client_key, sizeof(l->client_key));
	evbuffer_add(to_client, ready, sizeof(ready));
	memcpy(l->member_key, member_key, PROTO_KEY_MAX);
	l->has_member_key = has_key;
	l->told = true;
	l->back = BACK_DONE;
	member_pw_forget(l);
}

static bool pgl_reset_request(const struct proto_login *l, bool in_transaction, struct evbuffer *out)
{
	static const uint8_t rollback[] = "Q\0\0\0\015ROLLBACK";  /* length 13: 4 + "ROLLBACK" + its NUL */
	static const uint8_t q[] = "Q\0\0\0\020DISCARD ALL";   /* length 16: 4 + "DISCARD ALL" + its NUL */

	(void)l;
	/* (DISCARD ALL cannot run inside a transaction block; ROLLBACK outside one warns in the log.) */
	return (!in_transaction || evbuffer_add(out, rollback, sizeof(rollback)) == 0) &&
	       evbuffer_add(out, q, sizeof(q)) == 0;
}

/* DISCARD ALL's answer: ParameterStatus for what it reset, notices, CommandComplete, then
 * ReadyForQuery 'I'; first ROLLBACK's (CommandComplete, ReadyForQuery 'I') when it was sent. */
static int pgl_reset_answer(const uint8_t *p, size_t n)
{
	size_t i = 0;
	bool done = false, rolling = false, rolled = false;

	while (i + 5 <= n) {
		uint32_t len = be32(p + i + 1);
		if (len < 4 || len > PG_LOGIN_MSG_MAX)
			return -1;
		if (i + 1 + len > n)
			return 0;
		switch (p[i]) {
		case 'C':
			if (!rolled && !rolling && !done && len == 4 + 9 && memcmp(p + i + 5, "ROLLBACK", 9) == 0) {
				rolling = true;
				break;
			}
			done = !rolling && len == 4 + 12 && memcmp(p + i + 5, "DISCARD ALL", 12) == 0;
			if (!done)
				return -1;
			break;
		case 'S':
		case 'N':
			break;
		case 'Z':
			if (rolling && len == 5 && p[i + 5] == 'I') {
				rolling = false;
				rolled = true;
				break;
			}
			return done && len == 5 && p[i + 5] == 'I' && i + 6 == n ? 1 : -1;
		default:
			return -1;
		}
		i += 1 + len;
	}
	return 0;
}

static bool pgl_member_key(const struct proto_login *l, const uint8_t *key, size_t keylen, uint8_t *member_key)
{
	if (!l->has_member_key || keylen != PROTO_KEY_MAX || CRYPTO_memcmp(key, l->client_key, PROTO_KEY_MAX) != 0)
		return false;
	memcpy(member_key, l->member_key, PROTO_KEY_MAX);
	return true;
}

const struct proto_login_ops pg_login_ops = {
	.create = pgl_new,
	.destroy = pgl_free,
	.front = pgl_front,
	.front_done = pgl_front_done,
	.back_start = pgl_back_start,
	.user = pgl_user,
	.back = pgl_back,
	.told = pgl_told,
	.track_idle = pgl_track_idle,
	.member_key = pgl_member_key,
	.replay = pgl_replay,
	.poolable = pgl_poolable,
	.goodbye = pgl_goodbye,
	.startup = pgl_startup,
	.hand_over = pgl_hand_over,
	.adopt = pgl_adopt,
	.reset_request = pgl_reset_request,
	.reset_answer = pgl_reset_answer,
};
