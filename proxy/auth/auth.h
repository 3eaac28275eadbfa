/* auth.h - who may log in, the SCRAM-SHA-256 exchange both ways (RFC 5802 / 7677, as PostgreSQL
 * speaks it) and MySQL's mysql_native_password, for auth = repoint. Pure functions over strings;
 * every primitive from OpenSSL.
 *
 * auth_file: pgbouncer's userlist format, one user per line: "name" "secret" (a quote inside is
 * doubled), blank lines and lines starting with ';' or '#' ignored. A secret is a SCRAM verifier as
 * PostgreSQL stores it (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64), an md5
 * secret ("md5" + 32 hex digits: md5(password + user)), a MySQL mysql_native_password hash ("*" + 40
 * hex digits, as mysql.user keeps it), a plaintext password, or a reference to the
 * password (env:NAME, file:/PATH, secretsmanager:ID[#KEY]) that the service reads. With a verifier repoint needs no password: the client's proof gives it the
 * ClientKey, which logs it in to a member holding the same verifier (every member of a replicated
 * cluster does: the catalog is replicated). */
#ifndef REPOINT_AUTH_H
#define REPOINT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32   /* SHA-256 */
#define SCRAM_SALT_MAX 64
#define SCRAM_NONCE_MAX 96

struct scram_verifier {
	int iterations;
	uint8_t salt[SCRAM_SALT_MAX];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

struct auth_user {
	char name[128];
	bool has_verifier;
	struct scram_verifier verifier;
	char *password;           /* plaintext, or NULL */
	char *ref;                /* the password as a reference (env:, file:, secretsmanager:), which the
	                             service reads (secret.h) and sets with auth_users_set_password */
	bool has_md5;             /* PostgreSQL's md5 secret: "md5" + md5hex(password + user) */
	char md5[33];             /* ... its 32 hex digits */
	bool has_native;          /* MySQL's mysql_native_password hash: "*" + 40 hex digits */
	uint8_t native[20];       /* ... SHA1(SHA1(password)) */
};

struct auth_users;

/* NULL with "file:line: why" in err. */
struct auth_users *auth_users_load(const char *path, char *err, size_t errlen);
void auth_users_ref(struct auth_users *u);
void auth_users_unref(struct auth_users *u);
/* NULL when unknown. Valid while the caller holds a reference. */
const struct auth_user *auth_users_find(const struct auth_users *u, const char *name);
/* The users in file order (for the references among their secrets). */
size_t auth_users_count(const struct auth_users *u);
const struct auth_user *auth_users_at(const struct auth_users *u, size_t i);
/* The password of a user whose secret is a reference, as it reads now (NULL: none now); logins
 * from then on use it. False when out of memory or the user is unknown. */
bool auth_users_set_password(struct auth_users *u, const char *name, const char *password);

/* A secret (NUL-terminated, or NULL) wiped and freed. */
void auth_secret_free(char *p);

/* "SCRAM-SHA-256$..." into v; false when it is not one. */
bool scram_parse_verifier(const char *s, struct scram_verifier *v);
/* The verifier of a password (a fresh salt, 4096 iterations; or the given salt and iterations). */
bool scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
				  struct scram_verifier *v);

/* The server's side (repoint authenticating a client). */
struct scram_server {
	struct scram_verifier v;
	char client_first_bare[512];
	char server_first[512];
	char nonce[SCRAM_NONCE_MAX * 2];
	char gs2[8];
	uint8_t client_key[SCRAM_KEY_LEN];  /* recovered from a valid proof */
};
/* client-first-message -> server-first-message (out). False (err) when malformed or asking for
 * channel binding. */
bool scram_server_first(struct scram_server *s, const struct scram_verifier *v, const char *client_first, size_t n,
			char *out, size_t outlen, char *err, size_t errlen);
/* client-final-message -> server-final-message (out). False (err) when malformed or the proof is
 * wrong (timing-safe); on success s->client_key holds the client's key. */
bool scram_server_final(struct scram_server *s, const char *client_final, size_t n, char *out, size_t outlen,
			char *err, size_t errlen);

/* The client's side (repoint logging in to a member): with a password, or with a ClientKey and the
 * verifier it belongs to (then the member's salt and iterations must be the verifier's). */
struct scram_client {
	const char *password;                 /* or NULL */
	bool has_key;
	uint8_t client_key[SCRAM_KEY_LEN];
	struct scram_verifier v;              /* with has_key: the verifier (server_key used to check) */
	char nonce[64];
	char client_first_bare[128];
	uint8_t server_key[SCRAM_KEY_LEN];    /* for the server's signature */
	char auth_message[1536];
};
/* client-first-message into out. */
bool scram_client_first(struct scram_client *c, char *out, size_t outlen);
/* server-first-message -> client-final-message. */
bool scram_client_final(struct scram_client *c, const char *server_first, size_t n, char *out, size_t outlen,
			char *err, size_t errlen);
/* server-final-message: the server proved it knows the verifier. */
bool scram_client_check(struct scram_client *c, const char *server_final, size_t n, char *err, size_t errlen);

/* MySQL's mysql_native_password: the server keeps SHA1(SHA1(password)) (mysql.user's "*" + 40 hex
 * digits); a client answers a 20-byte challenge with SHA1(password) XOR SHA1(challenge +
 * SHA1(SHA1(password))). A right answer and the hash give SHA1(password) back, and that logs in to
 * a member keeping the same hash (the catalog is replicated): no password needed. */
#define MYSQL_NATIVE_LEN 20
/* "*" + 40 hex digits into stage2; false when it is not one. */
bool mysql_native_parse_hash(const char *s, uint8_t stage2[MYSQL_NATIVE_LEN]);
bool mysql_native_stage1(const char *password, uint8_t stage1[MYSQL_NATIVE_LEN]);                 /* SHA1(pw) */
bool mysql_native_stage2(const uint8_t stage1[MYSQL_NATIVE_LEN], uint8_t stage2[MYSQL_NATIVE_LEN]);  /* SHA1(stage1) */
/* The answer to challenge from stage1 (what a client sends). */
bool mysql_native_answer(const uint8_t challenge[MYSQL_NATIVE_LEN], const uint8_t stage1[MYSQL_NATIVE_LEN],
			 uint8_t out[MYSQL_NATIVE_LEN]);
/* A client's answer[0..n) to challenge, checked against stage2 (timing-safe): true and stage1 set
 * when it is right. */
bool mysql_native_check(const uint8_t challenge[MYSQL_NATIVE_LEN], const uint8_t *answer, size_t n,
			const uint8_t stage2[MYSQL_NATIVE_LEN], uint8_t stage1[MYSQL_NATIVE_LEN]);

/* MySQL 8's caching_sha2_password, as a client: the answer to a 20-byte nonce is SHA256(password) XOR
 * SHA256(SHA256(SHA256(password)) + nonce). Its server keeps a salted SHA-256 crypt() of the password
 * and, once a login showed the password itself (over TLS: "full authentication"), SHA256(SHA256(pw))
 * in a cache that lets this answer through: the password is needed, not a hash. */
#define MYSQL_SHA2_LEN 32
bool mysql_sha2_answer(const char *password, const uint8_t nonce[MYSQL_NATIVE_LEN], uint8_t out[MYSQL_SHA2_LEN]);

#endif
