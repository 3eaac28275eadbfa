/* userlist.c - auth_file: pgbouncer's userlist format ("name" "secret" per line). */
#include "auth/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define USERLIST_MAX_USERS 100000
#define USERLIST_LINE_MAX 4096

struct auth_users {
	int refs;
	struct auth_user *users;
	size_t n;
};

/* A quoted field at *p ("" inside is one quote) into out; *p moves past it. */
static bool quoted(const char **p, char *out, size_t outlen)
{
	const char *s = *p;
	size_t n = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '"')
		return false;
	s++;
	for (;;) {
		if (*s == '\0' || *s == '\n')
			return false;
		if (*s == '"') {
			if (s[1] != '"')
				break;
			s++;
		}
		if (n + 1 >= outlen)
			return false;
		out[n++] = *s++;
	}
	out[n] = '\0';
	*p = s + 1;
	return true;
}

void auth_secret_free(char *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, strlen(p));
		free(p);
	}
}

static void users_free(struct auth_users *u)
{
	for (size_t i = 0; i < u->n; i++) {
		auth_secret_free(u->users[i].password);
		free(u->users[i].ref);
	}
	OPENSSL_cleanse(u->users, u->n * sizeof(*u->users));
	free(u->users);
	free(u);
}

struct auth_users *auth_users_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	struct auth_users *u;
	char line[USERLIST_LINE_MAX], secret[USERLIST_LINE_MAX];
	int lineno = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	u->refs = 1;
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *p = line;
		struct auth_user au;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path, lineno);
			goto fail;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';' || *p == '#')
			continue;
		memset(&au, 0, sizeof(au));
		if (!quoted(&p, au.name, sizeof(au.name)) || au.name[0] == '\0' || !quoted(&p, secret, sizeof(secret))) {
			snprintf(err, errlen, "%s:%d: expected \"user\" \"secret\"", path, lineno);
			goto fail;
		}
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '\0') {
			snprintf(err, errlen, "%s:%d: unexpected text after the secret", path, lineno);
			goto fail;
		}
		if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0) {
			if (!scram_parse_verifier(secret, &au.verifier)) {
				snprintf(err, errlen, "%s:%d: not a SCRAM-SHA-256 verifier", path, lineno);
				goto fail;
			}
			au.has_verifier = true;
		} else if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == 35 &&
			   strspn(secret + 3, "0123456789abcdef") == 32) {
			memcpy(au.md5, secret + 3, 33);
			au.has_md5 = true;
		} else if (secret[0] == '*' && strlen(secret) == 41 && mysql_native_parse_hash(secret, au.native)) {
			au.has_native = true;  /* MySQL's mysql_native_password hash, as mysql.user keeps it */
		} else if (strncmp(secret, "env:", 4) == 0 || strncmp(secret, "file:", 5) == 0 ||
			   strncmp(secret, "secretsmanager:", 15) == 0) {
			/* Read by the service (secret.h), like every other secret of the configuration. */
			if ((au.ref = strdup(secret)) == NULL) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
		} else if ((au.password = strdup(secret)) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (auth_users_find(u, au.name) != NULL) {
			snprintf(err, errlen, "%s:%d: user \"%s\" is listed twice", path, lineno, au.name);
			free(au.password);
			free(au.ref);
			goto fail;
		}
		if (u->n == USERLIST_MAX_USERS) {
			snprintf(err, errlen, "%s:%d: more than %d users", path, lineno, USERLIST_MAX_USERS);
			free(au.password);
			free(au.ref);
			goto fail;
		}
		struct auth_user *grown = realloc(u->users, (u->n + 1) * sizeof(*grown));
		if (grown == NULL) {
			free(au.password);
			free(au.ref);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		u->users = grown;
		u->users[u->n++] = au;
	}
	OPENSSL_cleanse(line, sizeof(line));
	OPENSSL_cleanse(secret, sizeof(secret));
	fclose(f);
	return u;
fail:
	OPENSSL_cleanse(line, sizeof(line));
	OPENSSL_cleanse(secret, sizeof(secret));
	fclose(f);
	users_free(u);
	return NULL;
}

void auth_users_ref(struct auth_users *u)
{
	if (u != NULL)
		u->refs++;
}

void auth_users_unref(struct auth_users *u)
{
	if (u != NULL && --u->refs == 0)
		users_free(u);
}

size_t auth_users_count(const struct auth_users *u)
{
	return u != NULL ? u->n : 0;
}

const struct auth_user *auth_users_at(const struct auth_users *u, size_t i)
{
	return u != NULL && i < u->n ? &u->users[i] : NULL;
}

bool auth_users_set_password(struct auth_users *u, const char *name, const char *password)
{
	char *copy = NULL;

	for (size_t i = 0; u != NULL && i < u->n; i++) {
		if (strcmp(u->users[i].name, name) != 0)
			continue;
		if (password != NULL && (copy = strdup(password)) == NULL)
			return false;
		auth_secret_free(u->users[i].password);
		u->users[i].password = copy;
		return true;
	}
	return false;
}

const struct auth_user *auth_users_find(const struct auth_users *u, const char *name)
{
	if (u == NULL)
		return NULL;
	for (size_t i = 0; i < u->n; i++)
		if (strcmp(u->users[i].name, name) == 0)
			return &u->users[i];
	return NULL;
}
