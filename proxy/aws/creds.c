/* aws/creds.c - the AWS credential chain: planning (pure), parsing (pure), fetching (on the loop). */
#include "aws/creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <ini.h>
#include <jansson.h>
#include <libxml/tree.h>

#include "log.h"
#include "util.h"

#define LOG_SUBJECT "aws credentials"
#define STS_NS "https://sts.amazonaws.com/doc/2011-06-15/"
#define ECS_AGENT "http://169.254.170.2"
#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL_S 21600
#define MAX_FILE_BYTES (1u << 20)      /* shared config files */
#define MAX_TOKEN_BYTES (64u << 10)    /* web identity / container tokens */
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 60000

const char *aws_creds_source_name(enum aws_creds_source s)
{
	switch (s) {
	case AWS_CREDS_NONE:
		return "none";
	case AWS_CREDS_ENV:
		return "environment";
	case AWS_CREDS_WEB_IDENTITY:
		return "web-identity";
	case AWS_CREDS_PROFILE:
		return "profile";
	case AWS_CREDS_CONTAINER:
		return "container";
	case AWS_CREDS_IMDS:
		return "imds";
	}
	return "?";
}

/* ------------------------------------------------------------------------------------------------
 * Time
 * ---------------------------------------------------------------------------------------------- */

static bool take_digits(const char **p, int n, int *out)
{
	int v = 0;

	while (n-- > 0) {
		if (!isdigit((unsigned char)**p))
			return false;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*out = v;
	return true;
}

/* Days from 1970-01-01 to the given proleptic Gregorian date: count in 400-year eras that start
 * on March 1st, so that the leap day is the last day of its year. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

bool aws_parse_iso8601(const char *s, int64_t *out_ms)
{
	const char *p = s;
	int Y, M, D, h, mi, sec, frac = 0, offh = 0, offm = 0, sign = 0;
	int64_t t;

	if (s == NULL)
		return false;
	if (!take_digits(&p, 4, &Y) || *p++ != '-' || !take_digits(&p, 2, &M) || *p++ != '-' ||
	    !take_digits(&p, 2, &D))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	if (!take_digits(&p, 2, &h) || *p++ != ':' || !take_digits(&p, 2, &mi) || *p++ != ':' ||
	    !take_digits(&p, 2, &sec))
		return false;
	if (*p == '.') {
		int nd = 0;
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		for (; isdigit((unsigned char)*p); p++, nd++)
			if (nd < 3)
				frac = frac * 10 + (*p - '0');
		for (; nd < 3; nd++)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (!take_digits(&p, 2, &offh))
			return false;
		if (*p == ':')
			p++;
		if (!take_digits(&p, 2, &offm) || offh > 23 || offm > 59)
			return false;
	} else {
		return false; /* a time without a zone is ambiguous: refuse it */
	}
	if (*p != '\0')
		return false;
	if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || mi > 59 || sec > 60)
		return false;
	if (sec == 60) /* a leap second: close enough */
		sec = 59;
	t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec;
	t -= (int64_t)sign * (offh * 3600 + offm * 60);
	*out_ms = t * 1000 + frac;
	return true;
}

int64_t aws_creds_refresh_at(int64_t now_ms, int64_t expiration_ms)
{
	int64_t left;

	if (expiration_ms == 0)
		return INT64_MAX;
	left = expiration_ms - now_ms;
	if (left <= 0)
		return now_ms;
	/* Long-lived (IMDS/STS give an hour or more): 5 minutes ahead. Short-lived: halfway, so that
	 * a failed refresh still leaves time for another try before the expiry. */
	if (left >= 2 * AWS_CREDS_REFRESH_AHEAD_MS)
		return expiration_ms - AWS_CREDS_REFRESH_AHEAD_MS;
	return now_ms + left / 2;
}

bool aws_creds_usable(const struct aws_credentials *c, int64_t now_ms)
{
	if (c == NULL || c->access_key_id[0] == '\0' || c->secret_access_key[0] == '\0')
		return false;
	return c->expiration_ms == 0 || now_ms < c->expiration_ms - AWS_CREDS_EXPIRY_MARGIN_MS;
}

/* ------------------------------------------------------------------------------------------------
 * Shared config / credentials files
 * ---------------------------------------------------------------------------------------------- */

/* inih (as Debian builds it) cuts lines at 200 bytes, and session tokens are much longer. The
 * reader below hands inih whole lines when they fit; a longer "key = value" line becomes
 * "key=\x1eN", the value kept aside as long value N and put back by the handler. */
#define LONG_MARK '\x1e'
#define BAD_LINE "\x1f\n" /* no separator: inih reports the line as an error */

struct ini_stream {
	const char *p, *end;
	char **longv;
	int nlong, caplong;
	bool oom;
};

static char *ini_read_line(char *str, int num, void *stream)
{
	struct ini_stream *s = stream;
	const char *line = s->p, *nl, *sep, *q;
	size_t n, content;
	char *val, **nv;
	int k;

	if (s->p >= s->end || num < 16)
		return NULL;
	nl = memchr(line, '\n', (size_t)(s->end - line));
	n = nl ? (size_t)(nl - line) + 1 : (size_t)(s->end - line);
	s->p = line + n;
	if (n < (size_t)num) {
		memcpy(str, line, n);
		str[n] = '\0';
		return str;
	}
	content = n;
	while (content > 0 && (line[content - 1] == '\n' || line[content - 1] == '\r'))
		content--;
	for (q = line; q < line + content && (*q == ' ' || *q == '\t'); q++)
		;
	if (q < line + content && (*q == ';' || *q == '#')) {
		snprintf(str, (size_t)num, ";\n");
		return str;
	}
	sep = NULL;
	for (q = line; q < line + content; q++) {
		if (*q == '=' || *q == ':') {
			sep = q;
			break;
		}
	}
	if (sep == NULL || (size_t)(sep - line) + 16 >= (size_t)num) {
		snprintf(str, (size_t)num, "%s", BAD_LINE);
		return str;
	}
	val = strndup(sep + 1, content - (size_t)(sep + 1 - line));
	if (val == NULL) {
		s->oom = true;
		return NULL;
	}
	if (s->nlong == s->caplong) {
		int cap = s->caplong ? s->caplong * 2 : 4;
		nv = realloc(s->longv, (size_t)cap * sizeof(*nv));
		if (nv == NULL) {
			free(val);
			s->oom = true;
			return NULL;
		}
		s->longv = nv;
		s->caplong = cap;
	}
	k = s->nlong++;
	s->longv[k] = val;
	memcpy(str, line, (size_t)(sep - line));
	snprintf(str + (sep - line), (size_t)num - (size_t)(sep - line), "=%c%d\n", LONG_MARK, k);
	return str;
}

static void ini_stream_free(struct ini_stream *s)
{
	int i;

	for (i = 0; i < s->nlong; i++) {
		explicit_bzero(s->longv[i], strlen(s->longv[i]));
		free(s->longv[i]);
	}
	free(s->longv);
}

struct ini_ctx {
	struct ini_stream *stream;
	struct aws_profile *out;
	const char *want;
	bool config_file;
	bool too_long;
	char too_long_key[64];
};

static bool section_matches(const char *section, const char *want, bool config_file)
{
	char name[128];
	const char *p = section;

	if (config_file) {
		/* The config file names profiles "[profile NAME]"; only "default" may go without. */
		if (strncmp(p, "profile", 7) == 0 && (p[7] == ' ' || p[7] == '\t'))
			p += 8;
		else if (strcmp(want, "default") != 0)
			return false;
	}
	snprintf(name, sizeof(name), "%s", p);
	str_trim(name);
	return strcmp(name, want) == 0;
}

/* What inih does to a value, for the long ones it never saw: trim, drop a " ;comment". */
static char *clean_value(char *v)
{
	char *p;

	for (p = v; *p != '\0'; p++) {
		if (*p == ';' && p > v && isspace((unsigned char)p[-1])) {
			*p = '\0';
			break;
		}
	}
	return str_trim(v);
}

static bool set_field(struct ini_ctx *x, char *dst, size_t len, const char *name, const char *v)
{
	if (strlen(v) >= len) {
		/* Not truncated: half a key is a wrong key. Reported by the caller. */
		x->too_long = true;
		snprintf(x->too_long_key, sizeof(x->too_long_key), "%s", name);
		return false;
	}
	snprintf(dst, len, "%s", v);
	return true;
}

static int profile_ini_handler(void *user, const char *section, const char *name,
                               const char *value)
{
	struct ini_ctx *x = user;
	struct aws_profile *o = x->out;
	const char *v = value;
	static const char *const unsupported[] = {
		"source_profile", "credential_source", "credential_process", "sso_start_url",
		"sso_session", "sso_account_id", "sso_role_name", "login_session",
	};
	size_t i;

	if (!section_matches(section, x->want, x->config_file))
		return 1;
	o->found = true;
	if (name == NULL || *name == '\0')
		return 1;
	if (v[0] == LONG_MARK) {
		int k = atoi(v + 1);
		if (k < 0 || k >= x->stream->nlong)
			return 0;
		v = clean_value(x->stream->longv[k]);
	}
	if (strcasecmp(name, "aws_access_key_id") == 0)
		set_field(x, o->access_key_id, sizeof(o->access_key_id), name, v);
	else if (strcasecmp(name, "aws_secret_access_key") == 0)
		set_field(x, o->secret_access_key, sizeof(o->secret_access_key), name, v);
	else if (strcasecmp(name, "aws_session_token") == 0)
		set_field(x, o->session_token, sizeof(o->session_token), name, v);
	else if (strcasecmp(name, "region") == 0)
		set_field(x, o->region, sizeof(o->region), name, v);
	else if (strcasecmp(name, "role_arn") == 0)
		set_field(x, o->role_arn, sizeof(o->role_arn), name, v);
	else if (strcasecmp(name, "web_identity_token_file") == 0)
		set_field(x, o->web_identity_token_file, sizeof(o->web_identity_token_file), name, v);
	else if (strcasecmp(name, "role_session_name") == 0)
		set_field(x, o->role_session_name, sizeof(o->role_session_name), name, v);
	else
		for (i = 0; i < ARRAY_LEN(unsupported); i++)
			if (strcasecmp(name, unsupported[i]) == 0 && o->unsupported[0] == '\0')
				snprintf(o->unsupported, sizeof(o->unsupported), "%s", name);
	return 1;
}

static bool parse_one(const char *text, const char *fname, bool config_file, const char *profile,
                      struct aws_profile *out, char *err, size_t errlen)
{
	struct ini_stream s = {.p = text, .end = text + strlen(text)};
	struct ini_ctx x = {.stream = &s, .out = out, .want = profile, .config_file = config_file};
	int rc = ini_parse_stream(ini_read_line, &s, profile_ini_handler, &x);
	bool ok = true;

	if (s.oom) {
		snprintf(err, errlen, "%s: out of memory", fname);
		ok = false;
	} else if (rc != 0) {
		snprintf(err, errlen, "%s:%d: cannot parse this line", fname, rc);
		ok = false;
	} else if (x.too_long) {
		snprintf(err, errlen, "%s: profile %s: %s is too long", fname, profile, x.too_long_key);
		ok = false;
	}
	ini_stream_free(&s);
	return ok;
}

bool aws_profile_parse(const char *credentials_text, const char *config_text, const char *profile,
                       struct aws_profile *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (profile == NULL || *profile == '\0')
		profile = "default";
	snprintf(out->name, sizeof(out->name), "%s", profile);
	/* Config first, credentials second: where both set a key, the credentials file wins. */
	if (config_text != NULL && !parse_one(config_text, "config", true, profile, out, err, errlen))
		return false;
	if (credentials_text != NULL &&
	    !parse_one(credentials_text, "credentials", false, profile, out, err, errlen))
		return false;
	return true;
}

/* Reads a whole (small) file. NULL with errno set; ENOENT for a missing one, EFBIG if too big. */
static char *read_small_file(const char *path, size_t max, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t len = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	buf = malloc(max + 1);
	if (buf == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			free(buf);
			close(fd);
			errno = EFBIG;
			return NULL;
		}
	}
	close(fd);
	buf[len] = '\0';
	if (lenp)
		*lenp = len;
	return buf;
}

static void free_secret_text(char *t)
{
	if (t != NULL) {
		explicit_bzero(t, strlen(t));
		free(t);
	}
}

bool aws_profile_load(const char *credentials_path, const char *config_path, const char *profile,
                      struct aws_profile *out, char *err, size_t errlen)
{
	char *ctext = NULL, *gtext = NULL;
	const char *paths[2] = {credentials_path, config_path};
	char **texts[2] = {&ctext, &gtext};
	bool ok;
	int i;

	for (i = 0; i < 2; i++) {
		if (paths[i] == NULL)
			continue;
		*texts[i] = read_small_file(paths[i], MAX_FILE_BYTES, NULL);
		if (*texts[i] == NULL && errno != ENOENT) {
			snprintf(err, errlen, "%s: %s", paths[i],
			         errno == EFBIG ? "file too large" : strerror(errno));
			free_secret_text(ctext);
			free_secret_text(gtext);
			return false;
		}
	}
	ok = aws_profile_parse(ctext, gtext, profile, out, err, errlen);
	/* Messages name "config"/"credentials"; say which files those were. */
	if (!ok && strncmp(err, "config", 6) == 0 && config_path) {
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "%s%s", config_path, err + 6);
		snprintf(err, errlen, "%s", tmp);
	} else if (!ok && strncmp(err, "credentials", 11) == 0 && credentials_path) {
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "%s%s", credentials_path, err + 11);
		snprintf(err, errlen, "%s", tmp);
	}
	free_secret_text(ctext);
	free_secret_text(gtext);
	return ok;
}

/* ------------------------------------------------------------------------------------------------
 * The plan
 * ---------------------------------------------------------------------------------------------- */

static const char *env_get(aws_getenv_fn env, void *arg, const char *name)
{
	const char *v = env(arg, name);
	return v != NULL && *v != '\0' ? v : NULL;
}

static const char *process_getenv(void *arg, const char *name)
{
	(void)arg;
	return getenv(name);
}

/* "~/x" -> "$HOME/x", as the SDKs do for these paths. */
static bool expand_path(const char *in, const char *home, char *out, size_t len)
{
	int n;

	if (in[0] == '~' && (in[1] == '/' || in[1] == '\0')) {
		if (home == NULL)
			return false;
		n = snprintf(out, len, "%s%s", home, in + 1);
	} else {
		n = snprintf(out, len, "%s", in);
	}
	return n >= 0 && (size_t)n < len;
}

static bool copy_field(char *dst, size_t len, const char *src, const char *what, char *err,
                       size_t errlen)
{
	if (strlen(src) >= len) {
		snprintf(err, errlen, "%s is too long", what);
		return false;
	}
	snprintf(dst, len, "%s", src);
	return true;
}

/* Host part of an http(s) URL (brackets of an IPv6 literal removed). */
static bool url_host(const char *url, char *host, size_t len, bool *https)
{
	const char *p, *e;

	if (strncasecmp(url, "https://", 8) == 0) {
		*https = true;
		p = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		*https = false;
		p = url + 7;
	} else {
		return false;
	}
	if (*p == '[') {
		e = strchr(p, ']');
		if (e == NULL)
			return false;
		p++;
	} else {
		e = p + strcspn(p, ":/?#");
	}
	if (e == p || (size_t)(e - p) >= len)
		return false;
	memcpy(host, p, (size_t)(e - p));
	host[e - p] = '\0';
	return strchr(host, '@') == NULL; /* no userinfo tricks */
}

bool aws_container_uri_allowed(const char *url)
{
	char host[256];
	bool https;

	if (url == NULL || !url_host(url, host, sizeof(host), &https))
		return false;
	if (https)
		return true;
	if (strncmp(host, "127.", 4) == 0 || strcasecmp(host, "localhost") == 0 ||
	    strcmp(host, "::1") == 0)
		return true;
	/* The ECS agent and the EKS Pod Identity agent. */
	return strcmp(host, "169.254.170.2") == 0 || strcmp(host, "169.254.170.23") == 0 ||
	       strcasecmp(host, "fd00:ec2::23") == 0;
}

static bool plan_web_identity(struct aws_creds_plan *o, aws_getenv_fn env, void *arg,
                              const char *home, const char *role_arn, const char *token_file,
                              const char *session, char *err, size_t errlen)
{
	const char *sts;

	o->source = AWS_CREDS_WEB_IDENTITY;
	if (!copy_field(o->role_arn, sizeof(o->role_arn), role_arn, "role ARN", err, errlen))
		return false;
	if (!expand_path(token_file, home, o->token_file, sizeof(o->token_file))) {
		snprintf(err, errlen, "web identity token file path cannot be used");
		return false;
	}
	if (session != NULL && *session != '\0') {
		if (!copy_field(o->role_session_name, sizeof(o->role_session_name), session,
		                "role session name", err, errlen))
			return false;
	} else {
		snprintf(o->role_session_name, sizeof(o->role_session_name), "repoint-%lld",
		         (long long)(wall_ms() / 1000));
	}
	sts = env_get(env, arg, "AWS_ENDPOINT_URL_STS");
	if (sts == NULL)
		sts = env_get(env, arg, "AWS_ENDPOINT_URL");
	if (sts != NULL) {
		if (!copy_field(o->sts_endpoint, sizeof(o->sts_endpoint), sts, "STS endpoint", err,
		                errlen))
			return false;
	} else if (!(o->region[0] != '\0' &&
	             aws_endpoint_url("sts", o->region, o->sts_endpoint, sizeof(o->sts_endpoint)))) {
		/* No region: the global endpoint still serves AssumeRoleWithWebIdentity. */
		snprintf(o->sts_endpoint, sizeof(o->sts_endpoint), "https://sts.amazonaws.com/");
	}
	return true;
}

bool aws_creds_plan(aws_getenv_fn env, void *arg, const char *profile, const char *region,
                    struct aws_creds_plan *o, char *err, size_t errlen)
{
	const char *akid, *secret, *home, *v, *rel, *full;
	bool explicit_profile = profile != NULL && *profile != '\0';
	char cpath[1024] = "", gpath[1024] = "";
	struct aws_profile *prof;
	bool ok = false, prof_ok;
	char proferr[256];

	memset(o, 0, sizeof(*o));
	if (env == NULL)
		env = process_getenv;
	if (!explicit_profile) {
		profile = env_get(env, arg, "AWS_PROFILE");
		explicit_profile = profile != NULL;
		if (profile == NULL)
			profile = "default";
	}
	if (!copy_field(o->profile, sizeof(o->profile), profile, "profile name", err, errlen))
		return false;

	/* The profile is read first in any case: it may hold the region, and an explicitly chosen
	 * profile that does not exist is a configuration error whichever source wins. */
	prof = calloc(1, sizeof(*prof));
	if (prof == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	home = env_get(env, arg, "HOME");
	v = env_get(env, arg, "AWS_SHARED_CREDENTIALS_FILE");
	if (!expand_path(v ? v : "~/.aws/credentials", home, cpath, sizeof(cpath)))
		cpath[0] = '\0';
	v = env_get(env, arg, "AWS_CONFIG_FILE");
	if (!expand_path(v ? v : "~/.aws/config", home, gpath, sizeof(gpath)))
		gpath[0] = '\0';
	/* A broken file only matters if the profile is needed: explicitly chosen, or reached in the
	 * chain. Keys in the environment still work next to a mangled ~/.aws/config. */
	prof_ok = aws_profile_load(cpath[0] ? cpath : NULL, gpath[0] ? gpath : NULL, profile, prof,
	                           proferr, sizeof(proferr));
	if (!prof_ok && explicit_profile) {
		snprintf(err, errlen, "%s", proferr);
		goto out;
	}
	if (explicit_profile && !prof->found) {
		snprintf(err, errlen, "profile '%s' not found in %s or %s", profile,
		         cpath[0] ? cpath : "(no credentials file)", gpath[0] ? gpath : "(no config file)");
		goto out;
	}

	/* Region: the [aws] setting, the environment, then the profile. */
	v = region;
	if (v == NULL || *v == '\0')
		v = env_get(env, arg, "AWS_REGION");
	if (v == NULL)
		v = env_get(env, arg, "AWS_DEFAULT_REGION");
	if (v == NULL && prof->region[0] != '\0')
		v = prof->region;
	if (v != NULL) {
		if (!aws_valid_name(v)) {
			snprintf(err, errlen, "region '%.40s' is not a region name", v);
			goto out;
		}
		snprintf(o->region, sizeof(o->region), "%s", v);
	}

	/* 1. environment */
	akid = env_get(env, arg, "AWS_ACCESS_KEY_ID");
	secret = env_get(env, arg, "AWS_SECRET_ACCESS_KEY");
	if (akid != NULL || secret != NULL) {
		const char *token = env_get(env, arg, "AWS_SESSION_TOKEN");
		if (akid == NULL || secret == NULL) {
			snprintf(err, errlen, "%s is set but %s is not",
			         akid ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			         akid ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
			goto out;
		}
		o->source = AWS_CREDS_ENV;
		ok = copy_field(o->creds.access_key_id, sizeof(o->creds.access_key_id), akid,
		                "AWS_ACCESS_KEY_ID", err, errlen) &&
		     copy_field(o->creds.secret_access_key, sizeof(o->creds.secret_access_key), secret,
		                "AWS_SECRET_ACCESS_KEY", err, errlen) &&
		     copy_field(o->creds.session_token, sizeof(o->creds.session_token),
		                token ? token : "", "AWS_SESSION_TOKEN", err, errlen);
		goto out;
	}

	/* 2. web identity from the environment */
	v = env_get(env, arg, "AWS_WEB_IDENTITY_TOKEN_FILE");
	if (v != NULL && env_get(env, arg, "AWS_ROLE_ARN") != NULL) {
		ok = plan_web_identity(o, env, arg, home, env_get(env, arg, "AWS_ROLE_ARN"), v,
		                       env_get(env, arg, "AWS_ROLE_SESSION_NAME"), err, errlen);
		goto out;
	}

	/* 3. the shared files */
	if (!prof_ok) {
		snprintf(err, errlen, "%s", proferr);
		goto out;
	}
	if (prof->access_key_id[0] != '\0' || prof->secret_access_key[0] != '\0') {
		if (prof->access_key_id[0] == '\0' || prof->secret_access_key[0] == '\0') {
			snprintf(err, errlen, "profile '%s' has %s but not %s", profile,
			         prof->access_key_id[0] ? "aws_access_key_id" : "aws_secret_access_key",
			         prof->access_key_id[0] ? "aws_secret_access_key" : "aws_access_key_id");
			goto out;
		}
		o->source = AWS_CREDS_PROFILE;
		memcpy(o->creds.access_key_id, prof->access_key_id, sizeof(o->creds.access_key_id));
		memcpy(o->creds.secret_access_key, prof->secret_access_key,
		       sizeof(o->creds.secret_access_key));
		memcpy(o->creds.session_token, prof->session_token, sizeof(o->creds.session_token));
		ok = true;
		goto out;
	}
	if (prof->role_arn[0] != '\0' && prof->web_identity_token_file[0] != '\0') {
		ok = plan_web_identity(o, env, arg, home, prof->role_arn, prof->web_identity_token_file,
		                       prof->role_session_name, err, errlen);
		goto out;
	}
	if (prof->unsupported[0] != '\0' || prof->role_arn[0] != '\0') {
		snprintf(err, errlen, "profile '%s' uses %s, which repoint does not support (use static "
		         "keys, web identity, or the container/instance role)", profile,
		         prof->unsupported[0] ? prof->unsupported : "role_arn");
		goto out;
	}

	/* 4. container */
	rel = env_get(env, arg, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	full = env_get(env, arg, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
	if (rel != NULL || full != NULL) {
		o->source = AWS_CREDS_CONTAINER;
		if (rel != NULL) {
			int n = snprintf(o->container_url, sizeof(o->container_url), "%s%s%s", ECS_AGENT,
			                 rel[0] == '/' ? "" : "/", rel);
			if (n < 0 || (size_t)n >= sizeof(o->container_url)) {
				snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is too long");
				goto out;
			}
		} else {
			if (!aws_container_uri_allowed(full)) {
				snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or "
				         "http to a loopback address or the ECS/EKS agent");
				goto out;
			}
			if (!copy_field(o->container_url, sizeof(o->container_url), full,
			                "AWS_CONTAINER_CREDENTIALS_FULL_URI", err, errlen))
				goto out;
		}
		v = env_get(env, arg, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
		if (v != NULL)
			ok = copy_field(o->container_token_file, sizeof(o->container_token_file), v,
			                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", err, errlen);
		else if ((v = env_get(env, arg, "AWS_CONTAINER_AUTHORIZATION_TOKEN")) != NULL)
			ok = copy_field(o->container_token, sizeof(o->container_token), v,
			                "AWS_CONTAINER_AUTHORIZATION_TOKEN", err, errlen);
		else
			ok = true;
		goto out;
	}

	/* 5. instance metadata */
	v = env_get(env, arg, "AWS_EC2_METADATA_DISABLED");
	if (v != NULL && strcasecmp(v, "true") == 0) {
		snprintf(err, errlen, "no AWS credentials: none in the environment, no web identity, "
		         "none in profile '%s', no container endpoint, and IMDS is disabled", profile);
		goto out;
	}
	o->source = AWS_CREDS_IMDS;
	v = env_get(env, arg, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
	if (v == NULL) {
		const char *mode = env_get(env, arg, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
		v = mode != NULL && strcasecmp(mode, "IPv6") == 0 ? IMDS_DEFAULT_V6 : IMDS_DEFAULT;
	}
	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
		snprintf(err, errlen, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be an http(s) URL");
		goto out;
	}
	if (!copy_field(o->imds_endpoint, sizeof(o->imds_endpoint), v,
	                "AWS_EC2_METADATA_SERVICE_ENDPOINT", err, errlen))
		goto out;
	for (size_t n = strlen(o->imds_endpoint); n > 0 && o->imds_endpoint[n - 1] == '/'; n--)
		o->imds_endpoint[n - 1] = '\0';
	ok = true;
out:
	explicit_bzero(prof, sizeof(*prof));
	free(prof);
	if (!ok) {
		aws_credentials_wipe(&o->creds);
		o->source = AWS_CREDS_NONE;
	}
	return ok;
}

/* ------------------------------------------------------------------------------------------------
 * Replies
 * ---------------------------------------------------------------------------------------------- */

static bool set_cred(char *dst, size_t len, const char *v, const char *what, char *err,
                     size_t errlen)
{
	size_t i;

	if (v == NULL || *v == '\0') {
		snprintf(err, errlen, "reply has no %s", what);
		return false;
	}
	if (strlen(v) >= len) {
		snprintf(err, errlen, "%s too long", what);
		return false;
	}
	for (i = 0; v[i] != '\0'; i++) {
		/* Keys and tokens are printable ASCII (base64 and friends); anything else is junk that
		 * would end up in a header. */
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f) {
			snprintf(err, errlen, "%s has invalid characters", what);
			return false;
		}
	}
	memcpy(dst, v, strlen(v) + 1);
	return true;
}

static bool xml_field(xmlNodePtr parent, const char *name, char *buf, size_t len, char *err,
                      size_t errlen)
{
	xmlNodePtr n = aws_xml_child(parent, name, STS_NS);
	long l;

	if (n == NULL) {
		snprintf(err, errlen, "reply has no %s", name);
		return false;
	}
	l = aws_xml_text(n, buf, len);
	if (l < 0 || (size_t)l >= len) {
		snprintf(err, errlen, "%s is malformed or too long", name);
		return false;
	}
	return true;
}

bool aws_creds_parse_sts(const char *body, size_t len, struct aws_credentials *out, char *err,
                         size_t errlen)
{
	xmlDocPtr doc = aws_xml_read(body, len, err, errlen);
	xmlNodePtr root, res, cr;
	char *tmp = NULL;
	char exp[64];
	bool ok = false;
	const size_t tmplen = 4096;

	memset(out, 0, sizeof(*out));
	if (doc == NULL)
		return false;
	root = aws_xml_root(doc);
	if (!aws_xml_is(root, "AssumeRoleWithWebIdentityResponse") ||
	    strcmp(aws_xml_ns(root), STS_NS) != 0) {
		snprintf(err, errlen, "not an AssumeRoleWithWebIdentity reply (root <%.40s>)",
		         root && root->name ? (const char *)root->name : "?");
		goto done;
	}
	res = aws_xml_child(root, "AssumeRoleWithWebIdentityResult", STS_NS);
	cr = aws_xml_child(res, "Credentials", STS_NS);
	if (cr == NULL) {
		snprintf(err, errlen, "reply has no Credentials");
		goto done;
	}
	tmp = malloc(tmplen);
	if (tmp == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (!xml_field(cr, "AccessKeyId", tmp, tmplen, err, errlen) ||
	    !set_cred(out->access_key_id, sizeof(out->access_key_id), tmp, "AccessKeyId", err, errlen))
		goto done;
	if (!xml_field(cr, "SecretAccessKey", tmp, tmplen, err, errlen) ||
	    !set_cred(out->secret_access_key, sizeof(out->secret_access_key), tmp, "SecretAccessKey",
	              err, errlen))
		goto done;
	if (!xml_field(cr, "SessionToken", tmp, tmplen, err, errlen) ||
	    !set_cred(out->session_token, sizeof(out->session_token), tmp, "SessionToken", err, errlen))
		goto done;
	if (!xml_field(cr, "Expiration", exp, sizeof(exp), err, errlen))
		goto done;
	if (!aws_parse_iso8601(exp, &out->expiration_ms)) {
		snprintf(err, errlen, "Expiration '%s' is not an ISO 8601 time", exp);
		goto done;
	}
	ok = true;
done:
	if (tmp != NULL) {
		explicit_bzero(tmp, tmplen);
		free(tmp);
	}
	if (!ok)
		aws_credentials_wipe(out);
	aws_xml_free(doc);
	return ok;
}

bool aws_creds_parse_json(const char *body, size_t len, struct aws_credentials *out, char *err,
                          size_t errlen)
{
	json_error_t jerr;
	json_t *root;
	json_t *code, *exp, *tok;
	bool ok = false;

	memset(out, 0, sizeof(*out));
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(err, errlen, "malformed JSON (line %d): %.80s", jerr.line, jerr.text);
		return false;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "reply is not a JSON object");
		goto done;
	}
	code = json_object_get(root, "Code");
	if (code != NULL && (!json_is_string(code) || strcmp(json_string_value(code), "Success") != 0)) {
		snprintf(err, errlen, "credentials endpoint says Code=%.60s",
		         json_is_string(code) ? json_string_value(code) : "(not a string)");
		goto done;
	}
	if (!set_cred(out->access_key_id, sizeof(out->access_key_id),
	              json_string_value(json_object_get(root, "AccessKeyId")), "AccessKeyId", err,
	              errlen) ||
	    !set_cred(out->secret_access_key, sizeof(out->secret_access_key),
	              json_string_value(json_object_get(root, "SecretAccessKey")), "SecretAccessKey",
	              err, errlen))
		goto done;
	tok = json_object_get(root, "Token");
	if (tok != NULL && !json_is_null(tok) &&
	    !set_cred(out->session_token, sizeof(out->session_token), json_string_value(tok), "Token",
	              err, errlen))
		goto done;
	exp = json_object_get(root, "Expiration");
	if (exp != NULL && !json_is_null(exp)) {
		if (!json_is_string(exp) || !aws_parse_iso8601(json_string_value(exp), &out->expiration_ms)) {
			snprintf(err, errlen, "Expiration is not an ISO 8601 time");
			goto done;
		}
	}
	ok = true;
done:
	if (!ok)
		aws_credentials_wipe(out);
	json_decref(root);
	return ok;
}

/* ------------------------------------------------------------------------------------------------
 * The provider
 * ---------------------------------------------------------------------------------------------- */

struct waiter {
	aws_creds_cb cb;
	void *arg;
	struct waiter *next;
};

enum imds_step { IMDS_TOKEN, IMDS_ROLE, IMDS_CREDS };

struct aws_creds {
	struct aws_http *http;
	struct event_base *base;
	struct aws_creds_plan plan;
	struct aws_credentials cur;
	bool have;
	bool stale;                 /* invalidated: not to be handed out again */
	struct event *timer;        /* refresh / retry */
	struct event *notify;       /* hands results to waiters from the loop */
	struct aws_http_req *req;   /* the fetch in flight */
	enum imds_step step;
	char imds_token[256];
	int64_t imds_token_until;   /* monotonic ms */
	char imds_role[128];
	bool imds_retried_token;
	struct waiter *waiters;
	int failures;
	char last_error[256];
};

static void fetch_start(struct aws_creds *c);

static bool creds_ready(const struct aws_creds *c)
{
	return c->have && !c->stale && aws_creds_usable(&c->cur, wall_ms());
}

static void notify_waiters(struct aws_creds *c)
{
	struct waiter *w = c->waiters;
	bool ready = creds_ready(c);

	/* Detach first: callbacks may queue new requests. */
	c->waiters = NULL;
	while (w != NULL) {
		struct waiter *next = w->next;
		w->cb(w->arg, ready ? &c->cur : NULL,
		      ready ? NULL : (c->last_error[0] ? c->last_error : "no credentials yet"));
		free(w);
		w = next;
	}
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_creds *c = arg;

	(void)fd;
	(void)what;
	if (creds_ready(c) || c->plan.source == AWS_CREDS_ENV || c->plan.source == AWS_CREDS_PROFILE)
		notify_waiters(c);
	else if (c->req == NULL && c->failures > 0 && evtimer_pending(c->timer, NULL))
		notify_waiters(c); /* failing and backing off: the last error, not a fetch per ask */
	else
		fetch_start(c); /* waiters are answered when it ends */
}

static void arm(struct event *ev, int64_t delay_ms)
{
	struct timeval tv;

	if (delay_ms < 0)
		delay_ms = 0;
	if (delay_ms > 24 * 3600 * 1000LL)
		delay_ms = 24 * 3600 * 1000LL;
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

static void fetch_done(struct aws_creds *c, const struct aws_credentials *nc, const char *err)
{
	char why[160];

	c->req = NULL;
	if (nc != NULL && !aws_creds_usable(nc, wall_ms())) {
		/* Fresh from the source yet about to expire: most likely our clock is off. Said as
		 * such, rather than as a mysterious lack of credentials. */
		snprintf(why, sizeof(why), "%s returned credentials expiring in %lld s; is the clock "
		         "right?", aws_creds_source_name(c->plan.source),
		         (long long)((nc->expiration_ms - wall_ms()) / 1000));
		nc = NULL;
		err = why;
	}
	if (nc != NULL) {
		int64_t now = wall_ms(), at;

		aws_credentials_wipe(&c->cur);
		c->cur = *nc;
		c->have = true;
		c->stale = false;
		c->failures = 0;
		c->last_error[0] = '\0';
		at = aws_creds_refresh_at(now, c->cur.expiration_ms);
		if (at != INT64_MAX)
			arm(c->timer, at - now < RETRY_MIN_MS ? RETRY_MIN_MS : at - now);
		log_info(LOG_SUBJECT, "obtained from %s, valid for %lld s",
		         aws_creds_source_name(c->plan.source),
		         (long long)(c->cur.expiration_ms ? (c->cur.expiration_ms - now) / 1000 : -1));
	} else {
		int64_t delay = RETRY_MIN_MS;
		int i;

		for (i = 1; i < c->failures + 1 && delay < RETRY_MAX_MS; i++)
			delay *= 2;
		if (delay > RETRY_MAX_MS)
			delay = RETRY_MAX_MS;
		c->failures++;
		aws_copy_text(c->last_error, sizeof(c->last_error), err);
		log_warn(LOG_SUBJECT, "%s: %s (retrying in %lld ms%s)",
		         aws_creds_source_name(c->plan.source), c->last_error, (long long)delay,
		         creds_ready(c) ? ", the current ones stay in use" : "");
		arm(c->timer, delay);
	}
	notify_waiters(c);
}

static void fetch_fail_response(struct aws_creds *c, const char *what, const struct aws_response *r)
{
	char err[256];

	if (r->status != 0)
		snprintf(err, sizeof(err), "%s: HTTP %ld %s%s%s", what, r->status, r->error_code,
		         r->error_message[0] ? ": " : "", r->error_message);
	else
		snprintf(err, sizeof(err), "%s: %s%s%s", what, r->error_code,
		         r->error_message[0] ? ": " : "", r->error_message);
	fetch_done(c, NULL, err);
}

static void finish_with_body(struct aws_creds *c, const char *what, const struct aws_response *r,
                             bool xml)
{
	struct aws_credentials nc;
	char err[200], msg[256];
	bool ok = xml ? aws_creds_parse_sts(r->body, r->body_len, &nc, err, sizeof(err))
	              : aws_creds_parse_json(r->body, r->body_len, &nc, err, sizeof(err));

	if (ok) {
		fetch_done(c, &nc, NULL);
	} else {
		snprintf(msg, sizeof(msg), "%s: %s", what, err);
		fetch_done(c, NULL, msg);
	}
	aws_credentials_wipe(&nc);
}

static void sts_cb(void *arg, const struct aws_response *r)
{
	struct aws_creds *c = arg;

	c->req = NULL;
	if (!r->ok)
		fetch_fail_response(c, "STS AssumeRoleWithWebIdentity", r);
	else
		finish_with_body(c, "STS AssumeRoleWithWebIdentity", r, true);
}

/* Reads a token file: trimmed, non-empty, bounded. */
static char *read_token(const char *path, const char *what, char *err, size_t errlen)
{
	char *t = read_small_file(path, MAX_TOKEN_BYTES, NULL);

	if (t == NULL) {
		snprintf(err, errlen, "%s %s: %s", what, path,
		         errno == EFBIG ? "file too large" : strerror(errno));
		return NULL;
	}
	str_trim(t);
	if (*t == '\0') {
		snprintf(err, errlen, "%s %s is empty", what, path);
		free(t);
		return NULL;
	}
	return t;
}

static void fetch_web_identity(struct aws_creds *c)
{
	char err[256];
	char *token = read_token(c->plan.token_file, "web identity token file", err, sizeof(err));
	const char *params[7];
	struct aws_call call = {0};

	if (token == NULL) {
		fetch_done(c, NULL, err);
		return;
	}
	params[0] = "RoleArn";
	params[1] = c->plan.role_arn;
	params[2] = "RoleSessionName";
	params[3] = c->plan.role_session_name;
	params[4] = "WebIdentityToken";
	params[5] = token;
	params[6] = NULL;
	call.service = "sts";
	call.region = c->plan.region;
	call.endpoint_url = c->plan.sts_endpoint;
	call.action = "AssumeRoleWithWebIdentity";
	call.version = "2011-06-15";
	call.params = params;
	call.creds = NULL; /* this call is unsigned: the token is the proof */
	c->req = aws_http_call(c->http, &call, sts_cb, c);
	free_secret_text(token);
	if (c->req == NULL)
		fetch_done(c, NULL, "out of memory");
}

static void container_cb(void *arg, const struct aws_response *r)
{
	struct aws_creds *c = arg;

	c->req = NULL;
	if (!r->ok)
		fetch_fail_response(c, "container credentials endpoint", r);
	else
		finish_with_body(c, "container credentials endpoint", r, false);
}

static void fetch_container(struct aws_creds *c)
{
	char err[256];
	char *token = NULL, *hdr = NULL;
	const char *headers[2] = {NULL, NULL};
	struct aws_http_request rq = {0};

	if (c->plan.container_token_file[0] != '\0') {
		token = read_token(c->plan.container_token_file, "container authorization token file",
		                   err, sizeof(err));
		if (token == NULL) {
			fetch_done(c, NULL, err);
			return;
		}
	}
	if (token != NULL || c->plan.container_token[0] != '\0') {
		const char *t = token ? token : c->plan.container_token;
		size_t n = strlen(t) + sizeof("Authorization: ");
		hdr = malloc(n);
		if (hdr == NULL) {
			free_secret_text(token);
			fetch_done(c, NULL, "out of memory");
			return;
		}
		snprintf(hdr, n, "Authorization: %s", t);
		headers[0] = hdr;
	}
	rq.method = "GET";
	rq.url = c->plan.container_url;
	rq.headers = headers;
	rq.timeout_ms = 2000;
	rq.max_attempts = 3;
	rq.errfmt = AWS_ERRFMT_NONE;
	rq.no_proxy = true;
	rq.tag = "container credentials";
	c->req = aws_http_send(c->http, &rq, container_cb, c);
	free_secret_text(token);
	free_secret_text(hdr);
	if (c->req == NULL)
		fetch_done(c, NULL, "out of memory");
}

static void imds_next(struct aws_creds *c);

static void imds_cb(void *arg, const struct aws_response *r)
{
	struct aws_creds *c = arg;
	char line[256];
	size_t n;

	c->req = NULL;
	if (!r->ok) {
		/* 401: the session token expired or was never good; get a new one, once. */
		if (r->status == 401 && c->step != IMDS_TOKEN && !c->imds_retried_token) {
			c->imds_retried_token = true;
			c->imds_token[0] = '\0';
			c->step = IMDS_TOKEN;
			imds_next(c);
			return;
		}
		if (c->step == IMDS_ROLE && r->status == 404) {
			fetch_done(c, NULL, "IMDS: no IAM role is attached to this instance");
			return;
		}
		fetch_fail_response(c, c->step == IMDS_TOKEN ? "IMDS token" : "IMDS", r);
		return;
	}
	switch (c->step) {
	case IMDS_TOKEN:
		aws_copy_text(line, sizeof(line), r->body);
		str_trim(line);
		if (line[0] == '\0' || r->body_len >= sizeof(c->imds_token) || strpbrk(line, " \t")) {
			fetch_done(c, NULL, "IMDS: malformed session token");
			return;
		}
		snprintf(c->imds_token, sizeof(c->imds_token), "%s", line);
		/* Renew the session token well before IMDS forgets it. */
		c->imds_token_until = now_ms() + (IMDS_TOKEN_TTL_S - 600) * 1000LL;
		c->step = IMDS_ROLE;
		imds_next(c);
		return;
	case IMDS_ROLE:
		/* One role name per line; an instance profile has exactly one role. */
		n = strcspn(r->body, "\r\n");
		if (n == 0 || n >= sizeof(c->imds_role)) {
			fetch_done(c, NULL, "IMDS: malformed role list");
			return;
		}
		memcpy(c->imds_role, r->body, n);
		c->imds_role[n] = '\0';
		str_trim(c->imds_role);
		/* IAM role names: [A-Za-z0-9+=,.@_-]; anything else could change the path we GET. */
		if (c->imds_role[0] == '\0' ||
		    strspn(c->imds_role, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		                         "0123456789+=,.@_-") != strlen(c->imds_role)) {
			fetch_done(c, NULL, "IMDS: malformed role name");
			return;
		}
		c->step = IMDS_CREDS;
		imds_next(c);
		return;
	case IMDS_CREDS:
		c->imds_retried_token = false;
		finish_with_body(c, "IMDS", r, false);
		return;
	}
}

static void imds_next(struct aws_creds *c)
{
	char url[512], hdr[300];
	const char *headers[2] = {hdr, NULL};
	struct aws_http_request rq = {0};

	if (c->step == IMDS_TOKEN && c->imds_token[0] != '\0' && now_ms() < c->imds_token_until)
		c->step = IMDS_ROLE;
	switch (c->step) {
	case IMDS_TOKEN:
		snprintf(url, sizeof(url), "%s/latest/api/token", c->plan.imds_endpoint);
		snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token-ttl-seconds: %d", IMDS_TOKEN_TTL_S);
		rq.method = "PUT";
		rq.tag = "IMDS token";
		break;
	case IMDS_ROLE:
		snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/",
		         c->plan.imds_endpoint);
		snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", c->imds_token);
		rq.method = "GET";
		rq.tag = "IMDS role";
		break;
	case IMDS_CREDS:
		snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/%s",
		         c->plan.imds_endpoint, c->imds_role);
		snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", c->imds_token);
		rq.method = "GET";
		rq.tag = "IMDS credentials";
		break;
	}
	rq.url = url;
	rq.headers = headers;
	/* IMDS answers in microseconds or not at all (not on EC2): fail fast. */
	rq.timeout_ms = 1000;
	rq.max_attempts = 3;
	rq.errfmt = AWS_ERRFMT_NONE;
	rq.no_proxy = true;
	c->req = aws_http_send(c->http, &rq, imds_cb, c);
	explicit_bzero(hdr, sizeof(hdr));
	if (c->req == NULL)
		fetch_done(c, NULL, "out of memory");
}

static void fetch_start(struct aws_creds *c)
{
	if (c->req != NULL)
		return; /* one fetch at a time; its end answers every waiter */
	evtimer_del(c->timer);
	switch (c->plan.source) {
	case AWS_CREDS_WEB_IDENTITY:
		fetch_web_identity(c);
		break;
	case AWS_CREDS_CONTAINER:
		fetch_container(c);
		break;
	case AWS_CREDS_IMDS:
		c->step = IMDS_TOKEN;
		imds_next(c);
		break;
	case AWS_CREDS_NONE:
	case AWS_CREDS_ENV:
	case AWS_CREDS_PROFILE:
		notify_waiters(c);
		break;
	}
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fetch_start(arg);
}

struct aws_creds *aws_creds_new(struct aws_http *http, const struct aws_creds_options *opts,
                                char *err, size_t errlen)
{
	struct aws_creds *c = calloc(1, sizeof(*c));
	aws_getenv_fn env = opts && opts->getenv ? opts->getenv : process_getenv;

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!aws_creds_plan(env, opts ? opts->getenv_arg : NULL, opts ? opts->profile : NULL,
	                    opts ? opts->region : NULL, &c->plan, err, errlen)) {
		free(c);
		return NULL;
	}
	c->http = http;
	c->base = aws_http_base(http);
	c->timer = evtimer_new(c->base, timer_cb, c);
	c->notify = evtimer_new(c->base, notify_cb, c);
	if (c->timer == NULL || c->notify == NULL) {
		snprintf(err, errlen, "out of memory");
		aws_creds_free(c);
		return NULL;
	}
	if (c->plan.source == AWS_CREDS_ENV || c->plan.source == AWS_CREDS_PROFILE) {
		c->cur = c->plan.creds;
		c->have = true;
		log_info(LOG_SUBJECT, "using static credentials from %s%s%s",
		         aws_creds_source_name(c->plan.source),
		         c->plan.source == AWS_CREDS_PROFILE ? " " : "",
		         c->plan.source == AWS_CREDS_PROFILE ? c->plan.profile : "");
	} else {
		log_info(LOG_SUBJECT, "using %s", aws_creds_source_name(c->plan.source));
		arm(c->timer, 0); /* first fetch from the loop */
	}
	aws_credentials_wipe(&c->plan.creds); /* kept once, in c->cur */
	return c;
}

void aws_creds_free(struct aws_creds *c)
{
	struct waiter *w;

	if (c == NULL)
		return;
	if (c->req != NULL)
		aws_http_cancel(c->req);
	while ((w = c->waiters) != NULL) {
		c->waiters = w->next;
		free(w);
	}
	if (c->timer)
		event_free(c->timer);
	if (c->notify)
		event_free(c->notify);
	explicit_bzero(c, sizeof(*c));
	free(c);
}

bool aws_creds_get(struct aws_creds *c, aws_creds_cb cb, void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w)), **tail;

	if (w == NULL)
		return false;
	w->cb = cb;
	w->arg = arg;
	for (tail = &c->waiters; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = w;
	/* Answer from the loop: ready ones at once, others once a fetch ends. */
	if (!evtimer_pending(c->notify, NULL))
		arm(c->notify, 0);
	return true;
}

void aws_creds_cancel(struct aws_creds *c, void *arg)
{
	struct waiter **pp = &c->waiters;

	while (*pp != NULL) {
		if ((*pp)->arg == arg) {
			struct waiter *w = *pp;
			*pp = w->next;
			free(w);
		} else {
			pp = &(*pp)->next;
		}
	}
}

const struct aws_credentials *aws_creds_current(const struct aws_creds *c)
{
	return creds_ready(c) ? &c->cur : NULL;
}

void aws_creds_invalidate(struct aws_creds *c)
{
	/* Static keys cannot be fetched anew: nothing to do but keep reporting the service's error. */
	if (c->plan.source == AWS_CREDS_ENV || c->plan.source == AWS_CREDS_PROFILE)
		return;
	c->stale = true;
	if (c->req == NULL)
		arm(c->timer, 0); /* from the loop: no callback runs inside this call */
}

enum aws_creds_source aws_creds_source(const struct aws_creds *c)
{
	return c->plan.source;
}

const char *aws_creds_region(const struct aws_creds *c)
{
	return c->plan.region;
}

const char *aws_creds_last_error(const struct aws_creds *c)
{
	return c->last_error;
}

int64_t aws_creds_expiration(const struct aws_creds *c)
{
	return c->have ? c->cur.expiration_ms : 0;
}
