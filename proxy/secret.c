/* secret.c - secrets from the configuration: literal, env:, file:, secretsmanager:, iam. */
#include "secret.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "aws/creds.h"
#include "aws/http.h"
#include "aws/presign.h"
#include "config.h"
#include "log.h"
#include "sources/aws_source.h"
#include "util.h"

#define RETRY_BASE_MS 1000
#define RETRY_MAX_MS 60000

const char *secret_kind_name(enum secret_kind k)
{
	switch (k) {
	case SECRET_LITERAL:
		return "literal";
	case SECRET_ENV:
		return "env";
	case SECRET_FILE:
		return "file";
	case SECRET_SECRETSMANAGER:
		return "secretsmanager";
	case SECRET_IAM:
		return "iam";
	}
	return "?";
}

/* ------------------------------------------------------------------------------------------------
 * References (pure)
 * ---------------------------------------------------------------------------------------------- */

static bool env_name_ok(const char *s)
{
	if (!(isalpha((unsigned char)*s) || *s == '_'))
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || *s == '_'))
			return false;
	return true;
}

/* Secrets Manager names: letters, digits and /_+=.@- (at most 512). */
static bool sm_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 512)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+=.@-") == n;
}

/* arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME -> the region; false when not such an ARN. */
static bool sm_arn_region(const char *arn, char *region, size_t len)
{
	const char *f[7];
	const char *p = arn;
	int i;

	for (i = 0; i < 7 && p != NULL; i++) {
		f[i] = p;
		p = i < 6 ? strchr(p, ':') : NULL;
		if (p != NULL)
			p++;
	}
	if (i < 7 || strncmp(f[0], "arn:", 4) != 0 || strncmp(f[2], "secretsmanager:", 15) != 0 ||
	    strncmp(f[5], "secret:", 7) != 0 || !sm_name_ok(f[6]))
		return false;
	if ((size_t)(f[4] - f[3] - 1) >= len || f[4] - f[3] - 1 < 1)
		return false;
	memcpy(region, f[3], (size_t)(f[4] - f[3] - 1));
	region[f[4] - f[3] - 1] = '\0';
	return aws_valid_name(region) && f[5] - f[4] - 1 == 12;
}

static bool copy_arg(char *dst, size_t len, const char *src, size_t n)
{
	if (n >= len)
		return false;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return true;
}

bool secret_ref_parse(const char *value, struct secret_ref *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	if (value == NULL)
		value = "";
	if (strcmp(value, "iam") == 0) {
		out->kind = SECRET_IAM;
		return true;
	}
	if (strncmp(value, "env:", 4) == 0) {
		out->kind = SECRET_ENV;
		if (!env_name_ok(value + 4) || !copy_arg(out->arg, sizeof(out->arg), value + 4, strlen(value + 4))) {
			snprintf(why, whylen, "env: needs a variable name (letters, digits, '_'), as in env:DB_PASSWORD");
			return false;
		}
		return true;
	}
	if (strncmp(value, "file:", 5) == 0) {
		out->kind = SECRET_FILE;
		if (value[5] != '/' || !copy_arg(out->arg, sizeof(out->arg), value + 5, strlen(value + 5))) {
			snprintf(why, whylen, "file: needs an absolute path, as in file:/run/secrets/db-password");
			return false;
		}
		return true;
	}
	if (strncmp(value, "secretsmanager:", 15) == 0) {
		const char *id = value + 15, *hash = strchr(id, '#');
		size_t idlen = hash != NULL ? (size_t)(hash - id) : strlen(id);

		out->kind = SECRET_SECRETSMANAGER;
		if (!copy_arg(out->arg, sizeof(out->arg), id, idlen) ||
		    (hash != NULL && !copy_arg(out->key, sizeof(out->key), hash + 1, strlen(hash + 1)))) {
			snprintf(why, whylen, "secretsmanager: the id or key is too long");
			return false;
		}
		if (hash != NULL && out->key[0] == '\0') {
			snprintf(why, whylen, "secretsmanager: nothing after '#': expected a JSON key, as in #password");
			return false;
		}
		for (const char *k = out->key; *k; k++)
			if ((unsigned char)*k < 0x20) {
				snprintf(why, whylen, "secretsmanager: a control character in the key");
				return false;
			}
		if (strncmp(out->arg, "arn:", 4) == 0) {
			if (!sm_arn_region(out->arg, out->region, sizeof(out->region))) {
				snprintf(why, whylen, "secretsmanager: not a Secrets Manager ARN "
				                      "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)");
				return false;
			}
		} else if (!sm_name_ok(out->arg)) {
			snprintf(why, whylen, "secretsmanager: expected a secret name (letters, digits, /_+=.@-) or an "
			                      "ARN, then optionally #KEY");
			return false;
		}
		return true;
	}
	out->kind = SECRET_LITERAL;
	return true;
}

/* ------------------------------------------------------------------------------------------------
 * Values
 * ---------------------------------------------------------------------------------------------- */

void secret_value_free(char *v)
{
	if (v != NULL) {
		explicit_bzero(v, strlen(v));
		free(v);
	}
}

static void replace_value(char **slot, char *v)
{
	secret_value_free(*slot);
	*slot = v;
}

struct secrets {
	struct event_base *base;
	const struct aws_config *aws;
	int64_t refresh_ms;
	struct aws_http *http;
	struct aws_creds *creds;
	bool aws_tried;
	char aws_err[256];
	struct secret *list;
};

struct secret {
	struct secrets *reg;
	struct secret *next;
	int refs;
	char *ref;
	struct secret_ref r;
	char subject[300];          /* "secret env:NAME", ...; never a literal's value */
	/* file, secretsmanager: the cached value */
	char *value;
	char *user;                 /* an RDS-managed secret's username */
	char version[80];           /* secretsmanager VersionId */
	int64_t fetched_wall_ms;
	uint64_t fetches, failures;
	char last_error[256];
	char last_code[64];         /* logged once per distinct code */
	/* file */
	struct stat st;
	bool have_st;
	int64_t checked_ms;
	/* secretsmanager */
	struct aws_http_req *req;
	bool creds_wait;
	struct event *timer;
	int64_t done_ms;            /* monotonic: when the last fetch ended */
	int64_t login_failed_ms;    /* monotonic: the last failed login that asked for a fetch */
	int retries;
	/* iam: the tokens made last, for whom, and when (monotonic); reused while fresh */
	struct {
		char *tok;
		char whom[600];
		int64_t made_ms;
	} toks[SECRET_TOKEN_CACHE];
	uint64_t tokens;
};

/* ---- file: ---- */

/* Reads a whole small file; NULL with errno set (EFBIG when too large). */
static char *read_file(const char *path, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char *buf, *v;
	size_t len = 0;
	int e = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	buf = calloc(1, SECRET_MAX_BYTES + 2);
	if (buf == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	while (e == 0) {
		ssize_t n = read(fd, buf + len, SECRET_MAX_BYTES + 1 - len);
		if (n < 0 && errno != EINTR)
			e = errno;
		else if (n == 0)
			break;
		else if (n > 0 && (len += (size_t)n) > SECRET_MAX_BYTES)
			e = EFBIG;
	}
	close(fd);
	/* `echo secret > file` adds a line break that is not part of the secret. */
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	v = e == 0 ? strdup(buf) : NULL;
	if (e == 0 && v == NULL)
		e = ENOMEM;
	explicit_bzero(buf, SECRET_MAX_BYTES + 2);
	free(buf);
	errno = e;
	return v;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void file_check(struct secret *s)
{
	struct stat st;
	char *v;
	int64_t now = now_ms();

	if (s->value != NULL && s->checked_ms != 0 && now - s->checked_ms < SECRET_FILE_CHECK_MS)
		return;
	s->checked_ms = now;
	if (stat(s->r.arg, &st) == 0 && s->have_st && s->value != NULL && same_file(&st, &s->st))
		return;
	v = read_file(s->r.arg, &st);
	if (v == NULL) {
		char err[sizeof(s->last_error)];
		snprintf(err, sizeof(err), "%.160s: %.60s", s->r.arg, errno == EFBIG ? "larger than 64 KiB" : strerror(errno));
		if (strcmp(err, s->last_error) != 0)
			log_warn(s->subject, "cannot read it: %s%s", err,
			         s->value != NULL ? " (the value read before stays in use)" : "");
		snprintf(s->last_error, sizeof(s->last_error), "%s", err);
		s->failures++;
		return;
	}
	if (s->value != NULL)
		log_info(s->subject, "the file changed: read again");
	replace_value(&s->value, v);
	s->st = st;
	s->have_st = true;
	s->fetches++;
	s->fetched_wall_ms = wall_ms();
	s->last_error[0] = '\0';
}

/* ---- the AWS side (secretsmanager:, iam) ---- */

static bool aws_ready(struct secrets *r)
{
	struct aws_creds_options copts = {0};

	if (r->creds != NULL)
		return true;
	if (r->aws_tried)
		return false;
	r->aws_tried = true;
	r->http = aws_http_new(r->base, NULL);
	if (r->http == NULL) {
		snprintf(r->aws_err, sizeof(r->aws_err), "cannot set up the AWS client");
		return false;
	}
	copts.profile = r->aws != NULL ? r->aws->profile : NULL;
	copts.region = r->aws != NULL ? r->aws->region : NULL;
	r->creds = aws_creds_new(r->http, &copts, r->aws_err, sizeof(r->aws_err));
	if (r->creds == NULL)
		log_error("secrets", "no AWS credentials for secretsmanager: and iam secrets: %s", r->aws_err);
	return r->creds != NULL;
}

/* [aws] region, else the chain's (AWS_REGION, AWS_DEFAULT_REGION, the profile's). */
static const char *aws_region(const struct secrets *r)
{
	const char *reg = r->aws != NULL && r->aws->region != NULL ? r->aws->region
	                  : r->creds != NULL                      ? aws_creds_region(r->creds)
	                                                          : NULL;
	return reg != NULL && reg[0] != '\0' ? reg : NULL;
}

static void sm_fetch(struct secret *s);

static void sm_arm(struct secret *s, int64_t delay_ms)
{
	struct timeval tv;

	if (delay_ms < 0)
		delay_ms = 0;
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
}

/* A fetch ended: the next after secret_refresh, or sooner while failing. */
static void sm_done(struct secret *s, bool ok)
{
	int64_t delay = s->reg->refresh_ms;

	s->done_ms = now_ms();
	if (ok) {
		s->retries = 0;
	} else {
		int64_t b = RETRY_BASE_MS;
		for (int i = 0; i < s->retries && b < RETRY_MAX_MS; i++)
			b *= 2;
		s->retries++;
		if (b < delay)
			delay = b;
	}
	sm_arm(s, delay);
}

static void sm_fail(struct secret *s, const char *code, const char *msg)
{
	char text[AWS_ERROR_TEXT_MAX + 1];

	aws_source_error_text(text, sizeof(text), msg);
	snprintf(s->last_error, sizeof(s->last_error), "%s%s%s", code, text[0] ? ": " : "", text);
	s->failures++;
	if (strcmp(code, s->last_code) != 0)
		log_warn(s->subject, "GetSecretValue failed: %s%s", s->last_error,
		         s->value != NULL ? " (the value fetched before stays in use)" : "");
	snprintf(s->last_code, sizeof(s->last_code), "%s", code);
	sm_done(s, false);
}

/* SecretString -> the value (and the username of an RDS-managed secret); false with why. */
static bool sm_extract(const char *key, const char *str, char **value, char **user, char *why, size_t len)
{
	json_t *j = NULL, *m;
	const char *v = str, *u = NULL;
	bool ok = true;

	if (key[0] != '\0' || str[0] == '{')
		j = json_loads(str, JSON_REJECT_DUPLICATES, NULL);
	if (key[0] != '\0') {
		m = json_object_get(j, key);
		if (!json_is_string(m)) {
			snprintf(why, len, "the secret's value is not a JSON object with a string \"%.60s\"", key);
			ok = false;
		}
		v = json_string_value(m);
	} else if (json_is_string(json_object_get(j, "password"))) {
		/* RDS-managed and rotation-template secrets: {"username", "password", "engine", ...} */
		v = json_string_value(json_object_get(j, "password"));
		u = json_string_value(json_object_get(j, "username"));
	}
	if (ok) {
		*value = strdup(v);
		*user = u != NULL && u[0] != '\0' ? strdup(u) : NULL;
		ok = *value != NULL;
		if (!ok)
			snprintf(why, len, "out of memory");
	}
	json_decref(j);
	return ok;
}

bool secret_parse_reply(const char *body, size_t len, const char *key, char **value, char **user, char *version,
                        size_t vlen, char *why, size_t whylen)
{
	json_t *j = json_loadb(body, len, 0, NULL);
	const char *str = json_string_value(json_object_get(j, "SecretString"));
	const char *vid = json_string_value(json_object_get(j, "VersionId"));
	bool ok = false;

	*value = *user = NULL;
	if (!json_is_object(j))
		snprintf(why, whylen, "the reply is not a JSON object");
	else if (str == NULL)
		snprintf(why, whylen, "%s", json_object_get(j, "SecretBinary") != NULL
		                            ? "the secret holds SecretBinary only: repoint reads SecretString"
		                            : "no SecretString in the reply");
	else if (strlen(str) > SECRET_MAX_BYTES)
		snprintf(why, whylen, "SecretString larger than 64 KiB");
	else
		ok = sm_extract(key != NULL ? key : "", str, value, user, why, whylen);
	if (ok)
		aws_copy_text(version, vlen, vid != NULL ? vid : "");
	json_decref(j);
	return ok;
}

static void sm_reply(void *arg, const struct aws_response *resp)
{
	struct secret *s = arg;
	char *value = NULL, *user = NULL, why[160], version[sizeof(s->version)];

	s->req = NULL;
	if (!resp->ok) {
		if (aws_creds_current(s->reg->creds) != NULL &&
		    (strcmp(resp->error_code, "ExpiredTokenException") == 0 ||
		     strcmp(resp->error_code, "UnrecognizedClientException") == 0))
			aws_creds_invalidate(s->reg->creds);
		sm_fail(s, resp->error_code, resp->error_message);
		return;
	}
	if (!secret_parse_reply(resp->body, resp->body_len, s->r.key, &value, &user, version, sizeof(version), why,
	                        sizeof(why))) {
		sm_fail(s, "parse", why);
		return;
	}
	if (s->value == NULL || strcmp(s->version, version) != 0)
		log_info(s->subject, "%s version %s", s->value == NULL ? "fetched," : "a new version is in use:",
		         version[0] ? version : "(none)");
	snprintf(s->version, sizeof(s->version), "%s", version);
	replace_value(&s->value, value);
	replace_value(&s->user, user);
	s->fetches++;
	s->fetched_wall_ms = wall_ms();
	s->last_error[0] = '\0';
	s->last_code[0] = '\0';
	sm_done(s, true);
}

static void sm_creds(void *arg, const struct aws_credentials *c, const char *err)
{
	struct secret *s = arg;

	s->creds_wait = false;
	if (c == NULL) {
		sm_fail(s, "credentials", err != NULL ? err : "no AWS credentials");
		return;
	}
	sm_fetch(s);
}

static void sm_fetch(struct secret *s)
{
	struct secrets *r = s->reg;
	const struct aws_credentials *c;
	const char *region = s->r.region[0] != '\0' ? s->r.region : NULL;
	json_t *body;
	char *text;
	struct aws_call call = {0};

	if (s->req != NULL || s->creds_wait)
		return;
	evtimer_del(s->timer);
	if (!aws_ready(r)) {
		sm_fail(s, "credentials", r->aws_err);
		return;
	}
	if (region == NULL)
		region = aws_region(r);
	if (region == NULL) {
		sm_fail(s, "NoRegion", "no AWS region: use an ARN, or set [aws] region, AWS_REGION or the profile's");
		return;
	}
	c = aws_creds_current(r->creds);
	if (c == NULL) {
		s->creds_wait = aws_creds_get(r->creds, sm_creds, s);
		if (!s->creds_wait)
			sm_fail(s, "Internal", "out of memory");
		return;
	}
	body = json_pack("{s:s}", "SecretId", s->r.arg);
	text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	call.service = "secretsmanager";
	call.region = region;
	call.endpoint_url = r->aws != NULL ? r->aws->endpoint_url : NULL;
	call.action = "GetSecretValue";
	call.target_prefix = "secretsmanager";
	call.json = text;
	call.creds = c;
	s->req = text != NULL ? aws_http_call(r->http, &call, sm_reply, s) : NULL;
	free(text);
	if (s->req == NULL)
		sm_fail(s, "Internal", "out of memory");
}

static void sm_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sm_fetch(arg);
}

/* ---- the registry ---- */

struct secrets *secrets_new(struct event_base *base, const struct aws_config *aws, int64_t refresh_ms)
{
	struct secrets *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->base = base;
	r->aws = aws;
	r->refresh_ms = refresh_ms > 0 ? refresh_ms : 300000;
	return r;
}

void secrets_set_refresh(struct secrets *r, int64_t refresh_ms)
{
	if (r != NULL && refresh_ms > 0)
		r->refresh_ms = refresh_ms;
}

static void tokens_forget(struct secret *s)
{
	for (size_t i = 0; i < SECRET_TOKEN_CACHE; i++) {
		aws_presign_free(s->toks[i].tok);
		s->toks[i].tok = NULL;
	}
}

static void secret_destroy(struct secret *s)
{
	struct secrets *r = s->reg;

	if (s->req != NULL)
		aws_http_cancel(s->req);
	if (s->creds_wait && r->creds != NULL)
		aws_creds_cancel(r->creds, s);
	if (s->timer != NULL)
		event_free(s->timer);
	replace_value(&s->value, NULL);
	replace_value(&s->user, NULL);
	tokens_forget(s);
	secret_value_free(s->ref);
	explicit_bzero(&s->r, sizeof(s->r));
	free(s);
}

void secrets_free(struct secrets *r)
{
	struct secret *s, *next;

	if (r == NULL)
		return;
	for (s = r->list; s != NULL; s = next) {
		next = s->next;
		secret_destroy(s);
	}
	aws_creds_free(r->creds);
	aws_http_free(r->http);
	free(r);
}

struct secret *secret_open(struct secrets *r, const char *ref)
{
	struct secret *s;
	char why[200];

	if (ref == NULL)
		ref = "";
	for (s = r->list; s != NULL; s = s->next)
		if (strcmp(s->ref, ref) == 0) {
			s->refs++;
			return s;
		}
	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->ref = strdup(ref)) == NULL || !secret_ref_parse(ref, &s->r, why, sizeof(why))) {
		if (s != NULL)
			secret_value_free(s->ref);
		free(s);
		return NULL;
	}
	s->reg = r;
	s->refs = 1;
	if (s->r.kind == SECRET_LITERAL)
		snprintf(s->subject, sizeof(s->subject), "secret (literal)");
	else
		snprintf(s->subject, sizeof(s->subject), "secret %.280s", ref);
	if (s->r.kind == SECRET_SECRETSMANAGER) {
		s->timer = evtimer_new(r->base, sm_timer_cb, s);
		if (s->timer == NULL) {
			secret_destroy(s);
			return NULL;
		}
		sm_arm(s, 0); /* the first fetch from the loop */
	} else if (s->r.kind == SECRET_IAM) {
		aws_ready(r); /* temporary credentials start coming now */
	}
	s->next = r->list;
	r->list = s;
	return s;
}

void secret_close(struct secret *s)
{
	struct secret **pp;

	if (s == NULL || --s->refs > 0)
		return;
	for (pp = &s->reg->list; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	secret_destroy(s);
}

enum secret_kind secret_kind(const struct secret *s)
{
	return s->r.kind;
}

static char *iam_token(struct secret *s, const struct secret_target *t, char *why, size_t whylen)
{
	struct secrets *r = s->reg;
	const struct aws_credentials *c;
	const char *region;
	char err[160];
	char *tok;

	if (t == NULL || (t->host == NULL && t->resource == NULL)) {
		snprintf(why, whylen, "iam: an IAM token is made for one member (no writer is known)");
		return NULL;
	}
	if (t->user == NULL || t->user[0] == '\0') {
		snprintf(why, whylen, "iam: an IAM token needs a user (probe_user)");
		return NULL;
	}
	if (!aws_ready(r)) {
		snprintf(why, whylen, "iam: %s", r->aws_err);
		return NULL;
	}
	c = aws_creds_current(r->creds);
	if (c == NULL) {
		const char *e = aws_creds_last_error(r->creds);
		snprintf(why, whylen, "iam: no AWS credentials yet%s%s", e[0] ? ": " : "", e);
		return NULL;
	}
	region = aws_region(r);
	if (region == NULL) {
		snprintf(why, whylen, "iam: no AWS region: set [aws] region, AWS_REGION or the profile's");
		return NULL;
	}
	/* One token per member and user (RDS) or resource and user (ElastiCache, MemoryDB), made again
	 * once SECRET_CACHE_TOKEN_REUSE_MS old; the slot used longest ago makes room. */
	char whom[sizeof(s->toks[0].whom)];
	const char *colon = t->resource != NULL ? strchr(t->resource, ':') : NULL;
	bool memorydb = t->resource != NULL && strncmp(t->resource, "memorydb:", 9) == 0;
	bool serverless = t->resource != NULL && strncmp(t->resource, "elasticache-serverless:", 23) == 0;
	if (t->resource != NULL &&
	    (colon == NULL || (!memorydb && !serverless && strncmp(t->resource, "elasticache:", 12) != 0))) {
		snprintf(why, whylen, "iam: tokens are made for elasticache:, elasticache-serverless: and memorydb: "
		                      "resources");
		return NULL;
	}
	if (t->resource != NULL)
		snprintf(whom, sizeof(whom), "%s %s %s %s", t->resource, t->user, region, c->access_key_id);
	else
		snprintf(whom, sizeof(whom), "rds-db %s:%u %s %s %s", t->host, (unsigned)t->port, t->user, region,
		         c->access_key_id);
	size_t slot = 0;
	int64_t now = now_ms();
	for (size_t i = 0; i < SECRET_TOKEN_CACHE; i++) {
		if (s->toks[i].tok != NULL && strcmp(s->toks[i].whom, whom) == 0) {
			slot = i;
			break;
		}
		if (s->toks[i].tok == NULL || s->toks[i].made_ms < s->toks[slot].made_ms)
			slot = i;
	}
	if (s->toks[slot].tok == NULL || strcmp(s->toks[slot].whom, whom) != 0 ||
	    now - s->toks[slot].made_ms >= SECRET_CACHE_TOKEN_REUSE_MS) {
		if (t->resource == NULL)
			tok = aws_rds_auth_token(t->host, t->port, t->user, region, c, (int64_t)time(NULL), err, sizeof(err));
		else
			tok = aws_cache_auth_token(memorydb ? "memorydb" : "elasticache", colon + 1, t->user, serverless,
			                           region, c, (int64_t)time(NULL), err, sizeof(err));
		if (tok == NULL) {
			snprintf(why, whylen, "iam: %s", err);
			return NULL;
		}
		aws_presign_free(s->toks[slot].tok);
		s->toks[slot].tok = tok;
		s->toks[slot].made_ms = now;
		snprintf(s->toks[slot].whom, sizeof(s->toks[slot].whom), "%s", whom);
		s->tokens++;
	}
	tok = strdup(s->toks[slot].tok);
	if (tok == NULL)
		snprintf(why, whylen, "out of memory");
	return tok;
}

char *secret_get(struct secret *s, const struct secret_target *t, char **user, char *why, size_t whylen)
{
	const char *v = NULL;
	char *out;

	if (user != NULL)
		*user = NULL;
	switch (s->r.kind) {
	case SECRET_LITERAL:
		v = s->ref;
		break;
	case SECRET_ENV:
		v = getenv(s->r.arg);
		if (v == NULL) {
			snprintf(why, whylen, "env:%s is not set", s->r.arg);
			return NULL;
		}
		break;
	case SECRET_FILE:
		file_check(s);
		v = s->value;
		if (v == NULL) {
			snprintf(why, whylen, "file:%s", s->last_error[0] ? s->last_error : s->r.arg);
			return NULL;
		}
		break;
	case SECRET_SECRETSMANAGER:
		v = s->value;
		if (v == NULL) {
			snprintf(why, whylen, "secretsmanager:%s: %s%s", s->r.arg,
			         s->last_error[0] ? "" : "not fetched yet", s->last_error);
			return NULL;
		}
		if (user != NULL && s->user != NULL)
			*user = strdup(s->user);
		break;
	case SECRET_IAM:
		return iam_token(s, t, why, whylen);
	}
	out = strdup(v);
	if (out == NULL)
		snprintf(why, whylen, "out of memory");
	return out;
}

void secret_login_failed(struct secret *s)
{
	int64_t now = now_ms();

	if (s == NULL)
		return;
	switch (s->r.kind) {
	case SECRET_FILE:
		s->checked_ms = 0;
		break;
	case SECRET_SECRETSMANAGER:
		/* At once, unless a fetch is under way or asked for already: then its answer will do. A
		 * rotation half done (the database has the new password, AWSCURRENT not yet) keeps
		 * failing: at most one fetch every SECRET_RETRY_MIN_MS for that. */
		if (s->req != NULL || s->creds_wait || now - s->login_failed_ms < SECRET_RETRY_MIN_MS)
			return;
		s->login_failed_ms = now;
		log_info(s->subject, "a login with it was refused: fetching it again");
		sm_arm(s, s->done_ms != 0 && now - s->done_ms < 1000 ? 1000 - (now - s->done_ms) : 0);
		break;
	case SECRET_IAM:
		/* A token refused (a clock far off, a rotated key): the next login gets a fresh one. */
		tokens_forget(s);
		break;
	case SECRET_LITERAL:
	case SECRET_ENV:
		break;
	}
}

static json_t *wall_json(int64_t ms)
{
	char buf[40];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0)
		return json_null();
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

json_t *secret_status_json(const struct secret *s)
{
	json_t *o = json_object();

	json_object_set_new(o, "kind", json_string(secret_kind_name(s->r.kind)));
	if (s->r.kind == SECRET_LITERAL)
		return o;
	if (s->r.kind != SECRET_IAM)
		json_object_set_new(o, "ref", json_string(s->ref));
	if (s->r.kind == SECRET_FILE || s->r.kind == SECRET_SECRETSMANAGER) {
		if (s->r.kind == SECRET_SECRETSMANAGER)
			json_object_set_new(o, "version", s->version[0] ? json_string(s->version) : json_null());
		json_object_set_new(o, "fetched_at", wall_json(s->fetched_wall_ms));
		json_object_set_new(o, "fetches", json_integer((json_int_t)s->fetches));
		json_object_set_new(o, "failures", json_integer((json_int_t)s->failures));
		json_object_set_new(o, "last_error", s->last_error[0] ? json_string(s->last_error) : json_null());
	}
	if (s->r.kind == SECRET_IAM)
		json_object_set_new(o, "tokens_made", json_integer((json_int_t)s->tokens));
	if (s->r.kind == SECRET_IAM || s->r.kind == SECRET_SECRETSMANAGER) {
		const char *e = s->reg->creds != NULL ? aws_creds_last_error(s->reg->creds) : s->reg->aws_err;
		json_object_set_new(o, "credentials", json_string(s->reg->creds != NULL
		                                                      ? aws_creds_source_name(aws_creds_source(s->reg->creds))
		                                                      : "none"));
		json_object_set_new(o, "credentials_error", e[0] ? json_string(e) : json_null());
	}
	return o;
}

/* ---- once, for a command line ---- */

struct once {
	struct event_base *base;
	struct secret *s;
	struct event *tick;
	int64_t deadline_ms;
	char *value;
	char why[300];
};

static void once_tick(evutil_socket_t fd, short what, void *arg)
{
	struct once *o = arg;
	struct timeval tv = {0, 20 * 1000};

	(void)fd;
	(void)what;
	o->value = secret_get(o->s, NULL, NULL, o->why, sizeof(o->why));
	if (o->value != NULL || o->s->last_error[0] != '\0' || now_ms() >= o->deadline_ms)
		event_base_loopbreak(o->base);
	else
		evtimer_add(o->tick, &tv);
}

char *secret_fetch_once(const struct config *cfg, const char *ref, int64_t timeout_ms, char *why, size_t whylen)
{
	struct once o = {0};
	struct secrets *r;
	struct timeval zero = {0, 0};

	o.base = event_base_new();
	r = o.base != NULL ? secrets_new(o.base, &cfg->aws, cfg->secret_refresh_ms) : NULL;
	o.s = r != NULL ? secret_open(r, ref) : NULL;
	o.tick = o.base != NULL ? evtimer_new(o.base, once_tick, &o) : NULL;
	if (o.s == NULL || o.tick == NULL) {
		snprintf(why, whylen, "cannot read the secret: out of memory");
	} else {
		o.deadline_ms = now_ms() + timeout_ms;
		evtimer_add(o.tick, &zero);
		event_base_dispatch(o.base);
		if (o.value == NULL)
			snprintf(why, whylen, "%s", o.why[0] ? o.why : "no answer in time");
	}
	if (o.tick != NULL)
		event_free(o.tick);
	secret_close(o.s);
	secrets_free(r);
	if (o.base != NULL)
		event_base_free(o.base);
	return o.value;
}
