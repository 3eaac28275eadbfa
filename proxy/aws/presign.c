/* aws/presign.c - SigV4 query-string presigning with OpenSSL's HMAC and SHA-256. */
#include "aws/presign.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ALGORITHM "AWS4-HMAC-SHA256"
/* SHA-256 of nothing: a presigned GET has no payload. */
#define EMPTY_PAYLOAD_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MAX_EXPIRES_S (7 * 24 * 3600)
#define MAX_PARAMS 8

/* A text under construction in one allocation sized up front; every byte is wiped on free. */
struct text {
	char *p;
	size_t len, cap;
	bool full;
};

static bool text_init(struct text *t, size_t cap)
{
	t->p = calloc(1, cap);
	t->len = 0;
	t->cap = cap;
	t->full = t->p == NULL;
	return t->p != NULL;
}

static void text_put(struct text *t, const char *s, size_t n)
{
	if (t->full || t->len + n + 1 > t->cap) {
		t->full = true;
		return;
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

static void text_puts(struct text *t, const char *s)
{
	text_put(t, s, strlen(s));
}

/* RFC 3986 unreserved characters stay, everything else becomes %XX (upper case): SigV4's rule,
 * and urllib's quote(safe="-_.~") which botocore uses. */
static void text_encode(struct text *t, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			text_put(t, (const char *)&c, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};
			text_put(t, e, 3);
		}
	}
}

static void text_wipe(struct text *t)
{
	if (t->p != NULL) {
		explicit_bzero(t->p, t->cap);
		free(t->p);
	}
	t->p = NULL;
}

void aws_presign_free(char *token)
{
	if (token != NULL) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
}

static void to_hex(const unsigned char *d, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[2 * n] = '\0';
}

static bool sha256_hex(const char *s, size_t n, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return false;
	to_hex(md, mdlen, out);
	return true;
}

static bool hmac(const unsigned char *key, size_t keylen, const char *msg, unsigned char out[32])
{
	unsigned int n = 0;

	return HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &n) != NULL &&
	       n == 32;
}

/* One query parameter, encoded once: what the canonical query string sorts. */
struct qparam {
	char *name, *value;
};

static int qparam_order(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

static char *encoded(const char *s)
{
	struct text t;

	if (!text_init(&t, 3 * strlen(s) + 1))
		return NULL;
	text_encode(&t, s);
	return t.p;
}

static bool plain_name(const char *s)
{
	return aws_valid_name(s);
}

/* The Host header as botocore derives it from the URL: lower case, the scheme's default port left out. */
static bool signed_host(const struct aws_presign *p, char *out, size_t len)
{
	const char *colon = strrchr(p->host, ':');
	size_t n = strlen(p->host);

	if (n == 0 || n >= len || strpbrk(p->host, "/?#@ \t\r\n") != NULL)
		return false;
	for (size_t i = 0; i <= n; i++)
		out[i] = (char)tolower((unsigned char)p->host[i]);
	if (colon != NULL && strcmp(colon + 1, p->https ? "443" : "80") == 0)
		out[colon - p->host] = '\0';
	return true;
}

char *aws_presign(const struct aws_presign *p, char *err, size_t errlen)
{
	const struct aws_credentials *c = p->creds;
	struct qparam q[MAX_PARAMS + 6];
	struct text creq = {0}, sts = {0}, out = {0};
	char host[300], amz_date[20], date[10], scope[128], credential[300], expires[16], creq_hash[65];
	char signature[65];
	unsigned char key[32], sig[32];
	struct tm tm;
	time_t now = (time_t)p->now_s;
	size_t nq = 0, nop = 0, cap = 0;
	char *result = NULL;
	bool ok = true;

	if (c == NULL || c->access_key_id[0] == '\0' || c->secret_access_key[0] == '\0') {
		snprintf(err, errlen, "no credentials to sign with");
		return NULL;
	}
	if (!plain_name(p->region) || !plain_name(p->service)) {
		snprintf(err, errlen, "bad region or service name");
		return NULL;
	}
	if (!signed_host(p, host, sizeof(host))) {
		snprintf(err, errlen, "bad host name");
		return NULL;
	}
	if (p->expires_s < 1 || p->expires_s > MAX_EXPIRES_S || p->now_s < 0 || gmtime_r(&now, &tm) == NULL) {
		snprintf(err, errlen, "bad time or lifetime");
		return NULL;
	}
	for (const char *const *kv = p->params; kv != NULL && kv[0] != NULL; kv += 2) {
		if (kv[1] == NULL || nop == MAX_PARAMS) {
			snprintf(err, errlen, "bad parameter list");
			return NULL;
		}
		nop++;
	}
	strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
	strftime(date, sizeof(date), "%Y%m%d", &tm);
	snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, p->region, p->service);
	if ((size_t)snprintf(credential, sizeof(credential), "%s/%s", c->access_key_id, scope) >= sizeof(credential)) {
		snprintf(err, errlen, "access key id too long");
		return NULL;
	}
	snprintf(expires, sizeof(expires), "%d", p->expires_s);

	/* The query's pairs in the order they appear: the operation's, then the authentication's. */
	{
		const char *auth[] = {"X-Amz-Algorithm", ALGORITHM, "X-Amz-Credential", credential,
		                      "X-Amz-Date", amz_date, "X-Amz-Expires", expires,
		                      "X-Amz-SignedHeaders", "host",
		                      "X-Amz-Security-Token", c->session_token, NULL};
		const char *const *lists[2] = {p->params, auth};

		for (int l = 0; l < 2; l++)
			for (const char *const *kv = lists[l]; kv != NULL && kv[0] != NULL; kv += 2) {
				if (l == 1 && strcmp(kv[0], "X-Amz-Security-Token") == 0 && kv[1][0] == '\0')
					continue; /* long-term keys: no token */
				q[nq].name = encoded(kv[0]);
				q[nq].value = encoded(kv[1]);
				ok = ok && q[nq].name != NULL && q[nq].value != NULL;
				cap += (q[nq].name ? strlen(q[nq].name) : 0) + (q[nq].value ? strlen(q[nq].value) : 0) + 2;
				nq++;
			}
	}
	cap += strlen(host) + 256;
	ok = ok && text_init(&out, cap) && text_init(&creq, cap) && text_init(&sts, 512);
	if (!ok)
		goto done;
	/* The URL's query (token order)... */
	text_puts(&out, p->host);
	text_puts(&out, "/?");
	for (size_t i = 0; i < nq; i++) {
		text_puts(&out, i ? "&" : "");
		text_puts(&out, q[i].name);
		text_puts(&out, "=");
		text_puts(&out, q[i].value);
	}
	/* ... and the canonical one (sorted by name, then value). */
	qsort(q, nq, sizeof(q[0]), qparam_order);
	text_puts(&creq, "GET\n/\n");
	for (size_t i = 0; i < nq; i++) {
		text_puts(&creq, i ? "&" : "");
		text_puts(&creq, q[i].name);
		text_puts(&creq, "=");
		text_puts(&creq, q[i].value);
	}
	text_puts(&creq, "\nhost:");
	text_puts(&creq, host);
	text_puts(&creq, "\n\nhost\n" EMPTY_PAYLOAD_SHA256);
	ok = !creq.full && sha256_hex(creq.p, creq.len, creq_hash);

	text_puts(&sts, ALGORITHM "\n");
	text_puts(&sts, amz_date);
	text_puts(&sts, "\n");
	text_puts(&sts, scope);
	text_puts(&sts, "\n");
	text_puts(&sts, creq_hash);
	ok = ok && !sts.full;

	/* kDate = HMAC("AWS4" + secret, date); kRegion; kService; kSigning = HMAC(kService, "aws4_request") */
	if (ok) {
		struct text k0;
		ok = text_init(&k0, strlen(c->secret_access_key) + 8);
		if (ok) {
			text_puts(&k0, "AWS4");
			text_puts(&k0, c->secret_access_key);
			ok = !k0.full && hmac((const unsigned char *)k0.p, k0.len, date, key) &&
			     hmac(key, sizeof(key), p->region, key) && hmac(key, sizeof(key), p->service, key) &&
			     hmac(key, sizeof(key), "aws4_request", key) && hmac(key, sizeof(key), sts.p, sig);
			text_wipe(&k0);
		}
	}
	if (ok) {
		to_hex(sig, sizeof(sig), signature);
		text_puts(&out, "&X-Amz-Signature=");
		text_puts(&out, signature);
		ok = !out.full;
	}
	if (ok) {
		result = out.p;
		out.p = NULL;
	}
done:
	if (result == NULL)
		snprintf(err, errlen, "out of memory");
	for (size_t i = 0; i < nq; i++) {
		aws_presign_free(q[i].name);
		aws_presign_free(q[i].value);
	}
	text_wipe(&out);
	text_wipe(&creq);
	text_wipe(&sts);
	explicit_bzero(key, sizeof(key));
	explicit_bzero(sig, sizeof(sig));
	return result;
}

char *aws_rds_auth_token(const char *host, uint16_t port, const char *user, const char *region,
                         const struct aws_credentials *creds, int64_t now_s, char *err, size_t errlen)
{
	const char *params[] = {"Action", "connect", "DBUser", user, NULL};
	char hp[300];
	struct aws_presign p = {.host = hp, .https = true, .params = params, .region = region,
	                        .service = "rds-db", .creds = creds, .now_s = now_s,
	                        .expires_s = AWS_AUTH_TOKEN_EXPIRES_S};

	if (host == NULL || host[0] == '\0' || strchr(host, ':') != NULL || port == 0 || user == NULL ||
	    user[0] == '\0') {
		snprintf(err, errlen, "an RDS token needs a host name, a port and a user");
		return NULL;
	}
	if ((size_t)snprintf(hp, sizeof(hp), "%s:%u", host, (unsigned)port) >= sizeof(hp)) {
		snprintf(err, errlen, "host name too long");
		return NULL;
	}
	return aws_presign(&p, err, errlen);
}

char *aws_cache_auth_token(const char *service, const char *name, const char *user, bool serverless,
                           const char *region, const struct aws_credentials *creds, int64_t now_s,
                           char *err, size_t errlen)
{
	const char *params[] = {"Action", "connect", "User", user, serverless ? "ResourceType" : NULL,
	                        "ServerlessCache", NULL};
	struct aws_presign p = {.host = name, .https = false, .params = params, .region = region,
	                        .service = service, .creds = creds, .now_s = now_s,
	                        .expires_s = AWS_AUTH_TOKEN_EXPIRES_S};

	if (service == NULL || (strcmp(service, "elasticache") != 0 && strcmp(service, "memorydb") != 0)) {
		snprintf(err, errlen, "the service is elasticache or memorydb");
		return NULL;
	}
	if (name == NULL || name[0] == '\0' || strchr(name, ':') != NULL || user == NULL || user[0] == '\0') {
		snprintf(err, errlen, "a cache token needs the cache or cluster name and a user");
		return NULL;
	}
	if (serverless && strcmp(service, "elasticache") != 0) {
		snprintf(err, errlen, "serverless caches are ElastiCache's");
		return NULL;
	}
	return aws_presign(&p, err, errlen);
}
