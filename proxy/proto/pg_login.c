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
#include "config.h"
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#define PG_STARTUP_MAX 10000u       /* the server's own limit on a startup packet */
#define PG_LOGIN_MSG_MAX (64u * 1024u)  /* an authentication-phase message longer than this is not one */
#define PG_PROTOCOL_3 0x00030000u

enum front_state { FRONT_STARTUP, FRONT_DONE, FRONT_FAILED };
enum back_state { BACK_NONE, BACK_AUTH, BACK_PARAMS, BACK_DONE };

struct proto_login {
	enum client_auth how;
	const struct auth_users *users;
	enum front_state front;
	enum back_state back;
	bool told;                  /* the client has had its AuthenticationOk .. ReadyForQuery */
	uint8_t *startup;           /* the client's StartupMessage, whole */
	size_t startup_len;
	char user[128];
	uint8_t client_key[PROTO_KEY_MAX];  /* the key repoint gave the client */
	uint8_t member_key[PROTO_KEY_MAX];  /* the key the member gave repoint's connection */
	bool has_member_key;
	struct evbuffer *first;     /* the first login's messages for the client, until ReadyForQuery */
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

static struct proto_login *pgl_new(enum client_auth how, const struct auth_users *users)
{
	struct proto_login *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->how = how;
	l->users = users;
	l->first = evbuffer_new();
	/* The client's cancel key: random, so that nobody can cancel another client's query by
	 * guessing (the server's own keys are random for the same reason). */
	if (l->first == NULL || RAND_bytes(l->client_key, sizeof(l->client_key)) != 1) {
		pgl_free(l);
		return NULL;
	}
	return l;
}

static void pgl_free(struct proto_login *l)
{
	if (l == NULL)
		return;
	if (l->first != NULL)
		evbuffer_free(l->first);
	free(l->startup);
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

static enum proto_login_step pgl_front(struct proto_login *l, struct evbuffer *in, struct evbuffer *out)
{
	size_t have = evbuffer_get_length(in);
	uint8_t hdr[8];

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
	switch (l->how) {
	case CLIENT_AUTH_TRUST:
		l->front = FRONT_DONE;
		return PROTO_LOGIN_DONE;
	default:
		break;
	}
	return front_fail(l, out, "28000", "repoint: this client authentication method is not available");
}

static void pgl_back_start(struct proto_login *l, struct evbuffer *to_member)
{
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

static enum proto_login_step pgl_back(struct proto_login *l, struct evbuffer *in, struct evbuffer *to_member,
				 struct evbuffer *to_client, char *err, size_t errlen)
{
	uint8_t hdr[5];

	(void)to_member;
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
				snprintf(err, errlen, "the member asks for authentication method %u, which repoint cannot do "
					 "for this user", be32(body));
				return PROTO_LOGIN_FAIL;
			}
			l->back = BACK_PARAMS;
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
			if (l->back != BACK_PARAMS) {
				snprintf(err, errlen, "ready before logged in");
				return PROTO_LOGIN_FAIL;
			}
			if (!l->told) {
				auth_ok(to_client);
				evbuffer_add_buffer(to_client, l->first);
				pg_message(to_client, 'K', l->client_key, sizeof(l->client_key));
				evbuffer_add(to_client, m, 1 + len);
				l->told = true;
			}
			evbuffer_drain(in, 1 + len);
			l->back = BACK_DONE;
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
	.back = pgl_back,
	.told = pgl_told,
	.track_idle = pgl_track_idle,
	.member_key = pgl_member_key,
};
