/* scram.c - SCRAM-SHA-256 both ways, as PostgreSQL speaks it (RFC 5802 / 7677; no channel binding),
 * and PostgreSQL's verifier format. Every primitive from OpenSSL: HMAC, SHA-256, PBKDF2, RAND,
 * base64 and the timing-safe comparison. */
#include "auth/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_SALT_LEN 16
#define SCRAM_NONCE_RAW 18

static size_t b64_encode(const uint8_t *in, size_t n, char *out, size_t outlen)
{
	if (outlen < 4 * ((n + 2) / 3) + 1)
		return 0;
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Base64 (with padding) of exactly its length; the decoded length or -1. */
static int b64_decode(const char *in, size_t n, uint8_t *out, size_t outlen)
{
	uint8_t buf[256];
	int len;
	size_t pad = 0;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf))
		return -1;
	len = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
	if (len < 0)
		return -1;
	if (in[n - 1] == '=')
		pad++;
	if (in[n - 2] == '=')
		pad++;
	len -= (int)pad;
	if (len < 0 || (size_t)len > outlen)
		return -1;
	memcpy(out, buf, (size_t)len);
	return len;
}

static bool hmac(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t *out)
{
	unsigned int len = SCRAM_KEY_LEN;

	return HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &len) != NULL && len == SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *in, size_t n, uint8_t *out)
{
	return SHA256(in, n, out) != NULL;
}

bool scram_parse_verifier(const char *s, struct scram_verifier *v)
{
	const char *p = s, *salt, *colon, *dollar, *keys, *colon2;
	char *end;
	long it;

	if (strncmp(p, "SCRAM-SHA-256$", 14) != 0)
		return false;
	p += 14;
	it = strtol(p, &end, 10);
	if (end == p || *end != ':' || it < 1 || it > 10000000)
		return false;
	salt = end + 1;
	dollar = strchr(salt, '$');
	if (dollar == NULL)
		return false;
	keys = dollar + 1;
	colon2 = strchr(keys, ':');
	if (colon2 == NULL)
		return false;
	colon = colon2;
	int sl = b64_decode(salt, (size_t)(dollar - salt), v->salt, sizeof(v->salt));
	if (sl <= 0)
		return false;
	if (b64_decode(keys, (size_t)(colon - keys), v->stored_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN ||
	    b64_decode(colon + 1, strlen(colon + 1), v->server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
		return false;
	v->salt_len = (size_t)sl;
	v->iterations = (int)it;
	return true;
}

/* SaltedPassword and the two keys derived from it. */
static bool salted_keys(const char *password, const uint8_t *salt, size_t salt_len, int iterations, uint8_t *client_key,
			uint8_t *server_key)
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok = PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations, EVP_sha256(),
				    SCRAM_KEY_LEN, salted) == 1 &&
		  hmac(salted, sizeof(salted), "Client Key", 10, client_key) &&
		  hmac(salted, sizeof(salted), "Server Key", 10, server_key);

	OPENSSL_cleanse(salted, sizeof(salted));
	return ok;
}

bool scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
				  struct scram_verifier *v)
{
	uint8_t client_key[SCRAM_KEY_LEN];
	bool ok;

	if (salt == NULL) {
		if (RAND_bytes(v->salt, SCRAM_SALT_LEN) != 1)
			return false;
		v->salt_len = SCRAM_SALT_LEN;
		v->iterations = SCRAM_DEFAULT_ITERATIONS;
	} else {
		if (salt_len > sizeof(v->salt))
			return false;
		memcpy(v->salt, salt, salt_len);
		v->salt_len = salt_len;
		v->iterations = iterations;
	}
	ok = salted_keys(password, v->salt, v->salt_len, v->iterations, client_key, v->server_key) &&
	     sha256(client_key, sizeof(client_key), v->stored_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	return ok;
}

/* "k=value" at *p (up to the next ',' or the end): the value, or NULL. */
static const char *attr(const char *p, const char *end, char k, size_t *len)
{
	const char *comma;

	if (end - p < 2 || p[0] != k || p[1] != '=')
		return NULL;
	comma = memchr(p, ',', (size_t)(end - p));
	*len = (size_t)((comma != NULL ? comma : end) - (p + 2));
	return p + 2;
}

static bool random_nonce(char *out, size_t outlen)
{
	uint8_t raw[SCRAM_NONCE_RAW];

	return RAND_bytes(raw, sizeof(raw)) == 1 && b64_encode(raw, sizeof(raw), out, outlen) > 0;
}

bool scram_server_first(struct scram_server *s, const struct scram_verifier *v, const char *client_first, size_t n,
			char *out, size_t outlen, char *err, size_t errlen)
{
	const char *p = client_first, *end = client_first + n, *bare, *cnonce;
	char srand[64], salt[SCRAM_SALT_MAX * 2];
	size_t len, clen;

	memset(s, 0, sizeof(*s));
	s->v = *v;
	if (n >= 2 && p[0] == 'p' && p[1] == '=') {
		snprintf(err, errlen, "channel binding is not offered (SCRAM-SHA-256-PLUS)");
		return false;
	}
	if (n < 3 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',') {
		snprintf(err, errlen, "malformed SCRAM client-first-message");
		return false;
	}
	/* gs2 header: "n," or "y," then an authzid we do not take ("a=...") or nothing, then ','. */
	p += 2;
	if (p < end && *p == 'a') {
		snprintf(err, errlen, "authorization identities are not supported");
		return false;
	}
	if (p >= end || *p != ',') {
		snprintf(err, errlen, "malformed SCRAM client-first-message");
		return false;
	}
	memcpy(s->gs2, client_first, (size_t)(p + 1 - client_first));
	bare = p + 1;
	/* n=<user> (ignored: the startup packet names the user, as PostgreSQL does), r=<nonce> */
	if (attr(bare, end, 'n', &len) == NULL || bare + 2 + len >= end) {
		snprintf(err, errlen, "malformed SCRAM client-first-message");
		return false;
	}
	cnonce = attr(bare + 2 + len + 1, end, 'r', &clen);
	if (cnonce == NULL || clen == 0 || clen > SCRAM_NONCE_MAX || memchr(cnonce, ',', clen) != NULL ||
	    (size_t)(end - bare) >= sizeof(s->client_first_bare)) {
		snprintf(err, errlen, "malformed SCRAM client-first-message");
		return false;
	}
	for (size_t i = 0; i < clen; i++)
		if (cnonce[i] < 0x21 || cnonce[i] > 0x7e) {
			snprintf(err, errlen, "malformed SCRAM nonce");
			return false;
		}
	memcpy(s->client_first_bare, bare, (size_t)(end - bare));
	if (!random_nonce(srand, sizeof(srand)) || b64_encode(v->salt, v->salt_len, salt, sizeof(salt)) == 0) {
		snprintf(err, errlen, "out of randomness");
		return false;
	}
	snprintf(s->nonce, sizeof(s->nonce), "%.*s%s", (int)clen, cnonce, srand);
	if ((size_t)snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%d", s->nonce, salt, v->iterations) >=
		    sizeof(s->server_first) ||
	    (size_t)snprintf(out, outlen, "%s", s->server_first) >= outlen) {
		snprintf(err, errlen, "SCRAM message too long");
		return false;
	}
	return true;
}

bool scram_server_final(struct scram_server *s, const char *client_final, size_t n, char *out, size_t outlen,
			char *err, size_t errlen)
{
	const char *end = client_final + n, *c, *r, *proof_b64, *p;
	char gs2_b64[16], auth[1536], sig_b64[64];
	uint8_t proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN], server_sig[SCRAM_KEY_LEN];
	size_t clen, rlen, plen;

	snprintf(err, errlen, "malformed SCRAM client-final-message");
	c = attr(client_final, end, 'c', &clen);
	if (c == NULL || c + clen >= end)
		return false;
	b64_encode((const uint8_t *)s->gs2, strlen(s->gs2), gs2_b64, sizeof(gs2_b64));
	if (clen != strlen(gs2_b64) || memcmp(c, gs2_b64, clen) != 0) {
		snprintf(err, errlen, "SCRAM channel binding does not match");
		return false;
	}
	r = attr(c + clen + 1, end, 'r', &rlen);
	if (r == NULL || rlen != strlen(s->nonce) || memcmp(r, s->nonce, rlen) != 0) {
		snprintf(err, errlen, "SCRAM nonce does not match");
		return false;
	}
	/* Extensions may follow the nonce; the proof is the last attribute. */
	p = NULL;
	for (const char *q = end - 3; q >= r + rlen; q--)
		if (q[0] == ',' && q[1] == 'p' && q[2] == '=') {
			p = q;
			break;
		}
	if (p == NULL)
		return false;
	proof_b64 = attr(p + 1, end, 'p', &plen);
	if (proof_b64 == NULL || proof_b64 + plen != end ||
	    b64_decode(proof_b64, plen, proof, sizeof(proof)) != SCRAM_KEY_LEN)
		return false;
	/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
	if ((size_t)snprintf(auth, sizeof(auth), "%s,%s,%.*s", s->client_first_bare, s->server_first,
			     (int)(p - client_final), client_final) >= sizeof(auth))
		return false;
	if (!hmac(s->v.stored_key, SCRAM_KEY_LEN, auth, strlen(auth), sig))
		return false;
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		s->client_key[i] = proof[i] ^ sig[i];
	if (!sha256(s->client_key, SCRAM_KEY_LEN, stored) || CRYPTO_memcmp(stored, s->v.stored_key, SCRAM_KEY_LEN) != 0) {
		OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
		snprintf(err, errlen, "wrong password");
		return false;
	}
	if (!hmac(s->v.server_key, SCRAM_KEY_LEN, auth, strlen(auth), server_sig) ||
	    b64_encode(server_sig, sizeof(server_sig), sig_b64, sizeof(sig_b64)) == 0 ||
	    (size_t)snprintf(out, outlen, "v=%s", sig_b64) >= outlen)
		return false;
	err[0] = '\0';
	return true;
}

bool scram_client_first(struct scram_client *c, char *out, size_t outlen)
{
	if (!random_nonce(c->nonce, sizeof(c->nonce)))
		return false;
	/* The user is the startup packet's; PostgreSQL ignores this one. */
	snprintf(c->client_first_bare, sizeof(c->client_first_bare), "n=,r=%s", c->nonce);
	return (size_t)snprintf(out, outlen, "n,,%s", c->client_first_bare) < outlen;
}

bool scram_client_final(struct scram_client *c, const char *server_first, size_t n, char *out, size_t outlen,
			char *err, size_t errlen)
{
	const char *end = server_first + n, *r, *s, *i;
	size_t rlen, slen, ilen;
	uint8_t salt[SCRAM_SALT_MAX], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN],
		proof[SCRAM_KEY_LEN];
	char proof_b64[64], num[16];
	int salt_len, iterations;

	snprintf(err, errlen, "malformed SCRAM server-first-message");
	r = attr(server_first, end, 'r', &rlen);
	if (r == NULL || r + rlen >= end || rlen <= strlen(c->nonce) || strncmp(r, c->nonce, strlen(c->nonce)) != 0)
		return false;
	s = attr(r + rlen + 1, end, 's', &slen);
	if (s == NULL || s + slen >= end || (salt_len = b64_decode(s, slen, salt, sizeof(salt))) <= 0)
		return false;
	i = attr(s + slen + 1, end, 'i', &ilen);
	if (i == NULL || ilen == 0 || ilen >= sizeof(num))
		return false;
	memcpy(num, i, ilen);
	num[ilen] = '\0';
	iterations = atoi(num);
	if (iterations < 1 || iterations > 10000000)
		return false;
	if (c->password != NULL) {
		if (!salted_keys(c->password, salt, (size_t)salt_len, iterations, client_key, c->server_key)) {
			snprintf(err, errlen, "cannot derive the SCRAM keys");
			return false;
		}
	} else if (c->has_key) {
		if ((size_t)salt_len != c->v.salt_len || memcmp(salt, c->v.salt, c->v.salt_len) != 0 ||
		    iterations != c->v.iterations) {
			snprintf(err, errlen, "the member's SCRAM verifier differs from auth_file's (salt or iterations)");
			return false;
		}
		memcpy(client_key, c->client_key, SCRAM_KEY_LEN);
		memcpy(c->server_key, c->v.server_key, SCRAM_KEY_LEN);
	} else {
		snprintf(err, errlen, "no secret to log in with");
		return false;
	}
	/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
	if ((size_t)snprintf(c->auth_message, sizeof(c->auth_message), "%s,%.*s,c=biws,r=%.*s", c->client_first_bare,
			     (int)n, server_first, (int)rlen, r) >= sizeof(c->auth_message))
		return false;
	if (!sha256(client_key, SCRAM_KEY_LEN, stored) ||
	    !hmac(stored, SCRAM_KEY_LEN, c->auth_message, strlen(c->auth_message), sig))
		return false;
	for (int k = 0; k < SCRAM_KEY_LEN; k++)
		proof[k] = client_key[k] ^ sig[k];
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (b64_encode(proof, sizeof(proof), proof_b64, sizeof(proof_b64)) == 0 ||
	    (size_t)snprintf(out, outlen, "c=biws,r=%.*s,p=%s", (int)rlen, r, proof_b64) >= outlen)
		return false;
	err[0] = '\0';
	return true;
}

bool scram_client_check(struct scram_client *c, const char *server_final, size_t n, char *err, size_t errlen)
{
	const char *v;
	size_t vlen;
	uint8_t want[SCRAM_KEY_LEN], got[SCRAM_KEY_LEN];

	v = attr(server_final, server_final + n, 'v', &vlen);
	if (v == NULL || b64_decode(v, vlen, got, sizeof(got)) != SCRAM_KEY_LEN ||
	    !hmac(c->server_key, SCRAM_KEY_LEN, c->auth_message, strlen(c->auth_message), want) ||
	    CRYPTO_memcmp(want, got, SCRAM_KEY_LEN) != 0) {
		snprintf(err, errlen, "the member's SCRAM signature is wrong (it does not know the verifier)");
		return false;
	}
	return true;
}
