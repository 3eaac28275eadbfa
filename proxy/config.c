/* config.c - reads repoint.ini with inih into a struct config, checks everything and reports every
 * problem as "file:line: message".
 *
 * inih splits "key = value" and strips inline comments, but its handler is not told the line it
 * is on, it does not announce new sections, and it returns only the first syntax error. So our
 * reader callback (line_reader) hands inih one line at a time and, before it does, counts the
 * line, opens sections itself and rejects malformed lines itself (giving inih a blank line in
 * their place). The handler (on_key) then only sees well-formed pairs, for the section the reader
 * opened last, and knows the line from the reader.
 *
 * Every key is one row of `keys` below: where it lives, its type, bounds and default. Defaults
 * are written as they would be in the file and go through the same parsers. */
#include "config.h"

#include "secret.h"
#include "auth/auth.h"

#include <ctype.h>
#include <errno.h>
#include <unistd.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest line we let inih see; longer ones are reported, not split (see line_reader). */
#define CONFIG_MAX_LINE 4096
/* Longest service name: it ends up in log subjects, metrics labels and admin URLs. */
#define SERVICE_NAME_MAX 64
/* Names farther apart than this are not offered as "did you mean". */
#define SUGGEST_DISTANCE 2
#define SUGGEST_MAX_LEN 64

#define MS_PER_S 1000
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)

/* ---- names of the enumerations (indexed by value; NULL-terminated for the parser) ---- */

static const char *const protocol_names[] = {
	[PROTOCOL_POSTGRES] = "postgres", [PROTOCOL_MYSQL] = "mysql", [PROTOCOL_REDIS] = "redis", NULL};
static const char *const route_names[] = {
	[ROUTE_WRITER] = "writer", [ROUTE_READER] = "reader", [ROUTE_ANY] = "any", NULL};
static const char *const drain_names[] = {
	[DRAIN_GRACEFUL] = "graceful", [DRAIN_IMMEDIATE] = "immediate", NULL};
static const char *const tls_mode_names[] = {
	[TLS_OFF] = "off", [TLS_REQUIRE] = "require", [TLS_VERIFY_CA] = "verify-ca", [TLS_VERIFY_FULL] = "verify-full",
	NULL};
static const char *const listen_tls_names[] = {
	[LISTEN_TLS_OFF] = "off", [LISTEN_TLS_ON] = "on", [LISTEN_TLS_REQUIRE] = "require", NULL};
static const char *const io_names[] = {[IO_EPOLL] = "epoll", [IO_URING] = "uring", NULL};
static const char *const cluster_names[] = {[CLUSTER_OFF] = "off", [CLUSTER_ON] = "on", [CLUSTER_AUTO] = "auto", NULL};
static const char *const auth_names[] = {[AUTH_PASSTHROUGH] = "passthrough", [AUTH_REPOINT] = "repoint", NULL};
static const char *const client_auth_names[] = {[CLIENT_AUTH_SCRAM] = "scram-sha-256", [CLIENT_AUTH_MD5] = "md5",
						[CLIENT_AUTH_TRUST] = "trust",
						[CLIENT_AUTH_MYSQL_NATIVE] = "mysql_native_password", NULL};
static const char *const log_level_names[] = {
	[LOG_DEBUG] = "debug", [LOG_INFO] = "info", [LOG_WARN] = "warn", [LOG_ERROR] = "error", NULL};
static const char *const log_format_names[] = {
	[LOG_FORMAT_TEXT] = "text", [LOG_FORMAT_JSON] = "json", NULL};

/* Enum fields are written through an int pointer. */
_Static_assert(sizeof(enum protocol) == sizeof(int), "enum protocol is not int-sized");
_Static_assert(sizeof(enum route) == sizeof(int), "enum route is not int-sized");
_Static_assert(sizeof(enum drain_mode) == sizeof(int), "enum drain_mode is not int-sized");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is not int-sized");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum log_format is not int-sized");
_Static_assert(sizeof(enum auth_mode) == sizeof(int), "enum auth_mode is not int-sized");
_Static_assert(sizeof(enum client_auth) == sizeof(int), "enum client_auth is not int-sized");

static const char *enum_name(const char *const *names, size_t n, int v)
{
	/* n counts the NULL terminator */
	return v >= 0 && (size_t)v < n - 1 ? names[v] : "unknown";
}

const char *protocol_name(enum protocol p)
{
	return enum_name(protocol_names, ARRAY_LEN(protocol_names), (int)p);
}

const char *route_name(enum route r)
{
	return enum_name(route_names, ARRAY_LEN(route_names), (int)r);
}

const char *drain_mode_name(enum drain_mode d)
{
	return enum_name(drain_names, ARRAY_LEN(drain_names), (int)d);
}

/* ---- `source = KIND:ID` ---- */

enum source_kind { SOURCE_NONE, SOURCE_RDS, SOURCE_ELASTICACHE, SOURCE_ELASTICACHE_GLOBAL, SOURCE_MEMORYDB };

static const char *const source_kind_names[] = {
	[SOURCE_NONE] = "", [SOURCE_RDS] = "rds", [SOURCE_ELASTICACHE] = "elasticache",
	[SOURCE_ELASTICACHE_GLOBAL] = "elasticache-global", [SOURCE_MEMORYDB] = "memorydb"};

#define SOURCE_FORMS "rds:ID, elasticache:ID, elasticache-global:ID or memorydb:NAME"

/* The kind named before the colon; SOURCE_NONE when there is no colon or the kind is unknown. */
static enum source_kind source_kind_of(const char *source)
{
	const char *colon = source ? strchr(source, ':') : NULL;

	if (colon == NULL)
		return SOURCE_NONE;
	for (size_t i = 1; i < ARRAY_LEN(source_kind_names); i++) {
		size_t len = strlen(source_kind_names[i]);
		if ((size_t)(colon - source) == len && strncmp(source, source_kind_names[i], len) == 0)
			return (enum source_kind)i;
	}
	return SOURCE_NONE;
}

/* AWS identifiers and service names: letters, digits, '-', '_' and '.'. */
static bool is_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.';
}

static bool all_name_chars(const char *s)
{
	for (; *s; s++)
		if (!is_name_char(*s))
			return false;
	return true;
}

/* Extra checks for string keys: false with the reason (after "key: ") in why. */
typedef bool (*value_check)(const char *value, char *why, size_t whylen);

static bool check_source(const char *value, char *why, size_t whylen)
{
	const char *colon = strchr(value, ':');

	if (colon == NULL) {
		snprintf(why, whylen, "expected " SOURCE_FORMS ", got '%s'", value);
		return false;
	}
	if (source_kind_of(value) == SOURCE_NONE) {
		snprintf(why, whylen, "unknown kind '%.*s' in '%s'; expected " SOURCE_FORMS,
			 (int)(colon - value), value, value);
		return false;
	}
	if (colon[1] == '\0') {
		snprintf(why, whylen, "missing the ID after '%.*s'", (int)(colon - value + 1), value);
		return false;
	}
	if (!all_name_chars(colon + 1)) {
		snprintf(why, whylen, "bad character in '%s'; IDs use letters, digits, '-', '_' and '.'",
			 value);
		return false;
	}
	return true;
}

/* What a Redis IAM token names: elasticache:ID, elasticache-serverless:NAME or memorydb:NAME. */
static bool check_iam_resource(const char *value, char *why, size_t whylen)
{
	static const char *const kinds[] = {"elasticache:", "elasticache-serverless:", "memorydb:"};

	for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
		size_t len = strlen(kinds[i]);
		if (strncmp(value, kinds[i], len) == 0 && value[len] != '\0' && all_name_chars(value + len))
			return true;
	}
	snprintf(why, whylen, "expected elasticache:ID, elasticache-serverless:NAME or memorydb:NAME (letters, "
			      "digits, '-', '_', '.'), got '%s'", value);
	return false;
}

static bool check_readable(const char *value, char *why, size_t whylen)
{
	if (access(value, R_OK) != 0) {
		snprintf(why, whylen, "cannot read '%s': %s", value, strerror(errno));
		return false;
	}
	return true;
}

/* A secret: a literal, env:NAME (set now), file:/PATH (readable now), secretsmanager:ID[#KEY]
 * (fetched at run time). Messages never quote the value: it may be the secret itself. */
static bool check_secret(const char *value, bool iam_ok, char *why, size_t whylen)
{
	struct secret_ref r;

	if (!secret_ref_parse(value, &r, why, whylen))
		return false;
	switch (r.kind) {
	case SECRET_IAM:
		if (!iam_ok) {
			snprintf(why, whylen, "iam is for probe_password and member_password (IAM tokens for the members)");
			return false;
		}
		return true;
	case SECRET_ENV:
		if (getenv(r.arg) == NULL) {
			snprintf(why, whylen, "env:%s is not set", r.arg);
			return false;
		}
		return true;
	case SECRET_FILE:
		if (access(r.arg, R_OK) != 0) {
			snprintf(why, whylen, "file:%s: cannot read it: %s", r.arg, strerror(errno));
			return false;
		}
		return true;
	case SECRET_LITERAL:
	case SECRET_SECRETSMANAGER:
		return true;
	}
	return true;
}

static bool check_member_secret(const char *value, char *why, size_t whylen)
{
	return check_secret(value, true, why, whylen);
}

static bool check_admin_token(const char *value, char *why, size_t whylen)
{
	return check_secret(value, false, why, whylen);
}

static bool check_shard(const char *value, char *why, size_t whylen)
{
	if (!all_name_chars(value)) {
		snprintf(why, whylen, "expected a node group ID like 0001, got '%s'", value);
		return false;
	}
	return true;
}

static bool check_region(const char *value, char *why, size_t whylen)
{
	for (const char *s = value; *s; s++) {
		if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-')) {
			snprintf(why, whylen, "expected a region name like us-east-1, got '%s'", value);
			return false;
		}
	}
	return true;
}

static bool check_url(const char *value, char *why, size_t whylen)
{
	static const char *const schemes[] = {"http://", "https://"};

	for (size_t i = 0; i < ARRAY_LEN(schemes); i++) {
		size_t len = strlen(schemes[i]);
		if (strncasecmp(value, schemes[i], len) == 0 && value[len] != '\0' &&
		    strpbrk(value, " \t") == NULL)
			return true;
	}
	snprintf(why, whylen, "expected an http:// or https:// URL, got '%s'", value);
	return false;
}

/* ---- the key table ---- */

enum section_kind { SECTION_NONE, SECTION_REPOINT, SECTION_AWS, SECTION_SERVICE, SECTION_SKIP };

enum key_type {
	TYPE_DURATION,      /* int64_t milliseconds */
	TYPE_INT,           /* int */
	TYPE_BOOL,          /* bool */
	TYPE_STRING,        /* char *; empty means the default (NULL unless the default says otherwise) */
	TYPE_ENUM,          /* int-sized enum, by name */
	TYPE_HOSTPORT,      /* struct hostport */
	TYPE_HOSTPORT_LIST, /* struct hostport * plus an int count at aux */
};

#define NO_AUX SIZE_MAX

struct key_def {
	enum section_kind section;
	const char *name;
	enum key_type type;
	int64_t min, max;          /* durations: ms; ints: the value */
	const char *def;           /* default as it would be written in the file; NULL for none */
	size_t offset;             /* of the field in struct config, aws_config or service_config */
	size_t aux;                /* hostport: a bool set when given; list: the int count */
	const char *const *names;  /* enum: accepted words, indexed by value */
	value_check check;         /* string: extra validation */
	bool required;
};

#define TOP(f) offsetof(struct config, f)
#define AWS(f) offsetof(struct aws_config, f)
#define SVC(f) offsetof(struct service_config, f)

#define DURATION(sec, key, off, lo, hi, dflt)                                                      \
	{ .section = sec, .name = key, .type = TYPE_DURATION, .min = lo, .max = hi, .def = dflt,   \
	  .offset = off, .aux = NO_AUX }
#define INT(sec, key, off, lo, hi, dflt)                                                           \
	{ .section = sec, .name = key, .type = TYPE_INT, .min = lo, .max = hi, .def = dflt,        \
	  .offset = off, .aux = NO_AUX }
#define STRING(sec, key, off, dflt, chk)                                                           \
	{ .section = sec, .name = key, .type = TYPE_STRING, .def = dflt, .offset = off,            \
	  .aux = NO_AUX, .check = chk }
#define ENUM(sec, key, off, nm, dflt, req)                                                         \
	{ .section = sec, .name = key, .type = TYPE_ENUM, .def = dflt, .offset = off,              \
	  .aux = NO_AUX, .names = nm, .required = req }
#define BOOL(sec, key, off, dflt)                                                                  \
	{ .section = sec, .name = key, .type = TYPE_BOOL, .def = dflt, .offset = off, .aux = NO_AUX }
#define HOSTPORT(sec, key, off, flag, req)                                                         \
	{ .section = sec, .name = key, .type = TYPE_HOSTPORT, .offset = off, .aux = flag,          \
	  .required = req }
#define HOSTPORT_LIST(sec, key, off, count)                                                        \
	{ .section = sec, .name = key, .type = TYPE_HOSTPORT_LIST, .offset = off, .aux = count }

/* Intervals below 10ms would only burn CPU; an hour bounds every wait so a typo ("30m" for
 * "30s") is more likely to be caught than to hang a shutdown. */
#define INTERVAL_MIN 10
#define WAIT_MAX ((int64_t)MS_PER_H)

static const struct key_def keys[] = {
	HOSTPORT(SECTION_REPOINT, "admin", TOP(admin), TOP(has_admin), false),
	HOSTPORT(SECTION_REPOINT, "metrics", TOP(metrics), TOP(has_metrics), false),
	ENUM(SECTION_REPOINT, "log_level", TOP(log_level), log_level_names, "info", false),
	ENUM(SECTION_REPOINT, "log_format", TOP(log_format), log_format_names, "text", false),
	DURATION(SECTION_REPOINT, "shutdown_timeout", TOP(shutdown_timeout_ms), 0, WAIT_MAX, "10s"),
	STRING(SECTION_REPOINT, "admin_token", TOP(admin_token), NULL, check_admin_token),
	DURATION(SECTION_REPOINT, "secret_refresh", TOP(secret_refresh_ms), MS_PER_S, 24 * (int64_t)MS_PER_H, "5m"),

	STRING(SECTION_AWS, "region", AWS(region), NULL, check_region),
	STRING(SECTION_AWS, "profile", AWS(profile), NULL, NULL),
	STRING(SECTION_AWS, "endpoint_url", AWS(endpoint_url), NULL, check_url),
	DURATION(SECTION_AWS, "poll_interval", AWS(poll_interval_ms), INTERVAL_MIN, WAIT_MAX, "5s"),
	DURATION(SECTION_AWS, "failover_poll_interval", AWS(failover_poll_interval_ms), INTERVAL_MIN,
		 WAIT_MAX, "1s"),
	DURATION(SECTION_AWS, "request_timeout", AWS(request_timeout_ms), 100, WAIT_MAX, "10s"),
	INT(SECTION_AWS, "max_attempts", AWS(max_attempts), 1, 20, "5"),

	ENUM(SECTION_SERVICE, "protocol", SVC(protocol), protocol_names, NULL, true),
	HOSTPORT(SECTION_SERVICE, "listen", SVC(listen), NO_AUX, true),
	ENUM(SECTION_SERVICE, "route", SVC(route), route_names, "writer", false),
	HOSTPORT_LIST(SECTION_SERVICE, "members", SVC(members), SVC(nmembers)),
	STRING(SECTION_SERVICE, "source", SVC(source), NULL, check_source),
	STRING(SECTION_SERVICE, "shard", SVC(shard), NULL, check_shard),
	DURATION(SECTION_SERVICE, "probe_interval", SVC(probe_interval_ms), INTERVAL_MIN, WAIT_MAX,
		 "250ms"),
	DURATION(SECTION_SERVICE, "probe_timeout", SVC(probe_timeout_ms), 1, WAIT_MAX, "1s"),
	DURATION(SECTION_SERVICE, "failover_probe_interval", SVC(failover_probe_interval_ms),
		 INTERVAL_MIN, WAIT_MAX, "50ms"),
	INT(SECTION_SERVICE, "down_after", SVC(down_after), 1, 100, "3"),
	BOOL(SECTION_SERVICE, "probes", SVC(probes), "on"),
	BOOL(SECTION_SERVICE, "multiplex", SVC(multiplex), "off"),
	ENUM(SECTION_SERVICE, "cluster", SVC(cluster), cluster_names, "off", false),
	ENUM(SECTION_SERVICE, "io", SVC(io), io_names, "epoll", false),
	STRING(SECTION_SERVICE, "probe_user", SVC(probe_user), NULL, NULL),
	STRING(SECTION_SERVICE, "probe_password", SVC(probe_password), "", check_member_secret),
	STRING(SECTION_SERVICE, "probe_database", SVC(probe_database), NULL, NULL),
	ENUM(SECTION_SERVICE, "tls", SVC(tls), tls_mode_names, "off", false),
	STRING(SECTION_SERVICE, "tls_ca_file", SVC(tls_ca_file), NULL, check_readable),
	STRING(SECTION_SERVICE, "tls_server_name", SVC(tls_server_name), NULL, NULL),
	STRING(SECTION_SERVICE, "tls_cert_file", SVC(tls_cert_file), NULL, check_readable),
	STRING(SECTION_SERVICE, "tls_key_file", SVC(tls_key_file), NULL, check_readable),
	ENUM(SECTION_SERVICE, "listen_tls", SVC(listen_tls), listen_tls_names, "off", false),
	STRING(SECTION_SERVICE, "listen_tls_cert_file", SVC(listen_tls_cert_file), NULL, check_readable),
	STRING(SECTION_SERVICE, "listen_tls_key_file", SVC(listen_tls_key_file), NULL, check_readable),
	ENUM(SECTION_SERVICE, "auth", SVC(auth), auth_names, "passthrough", false),
	STRING(SECTION_SERVICE, "auth_file", SVC(auth_file), NULL, check_readable),
	ENUM(SECTION_SERVICE, "client_auth", SVC(client_auth), client_auth_names, "scram-sha-256", false),
	STRING(SECTION_SERVICE, "member_user", SVC(member_user), NULL, NULL),
	STRING(SECTION_SERVICE, "member_password", SVC(member_password), NULL, check_member_secret),
	DURATION(SECTION_SERVICE, "reauth_interval", SVC(reauth_interval_ms), MS_PER_S, 12 * (int64_t)MS_PER_H, "11h"),
	STRING(SECTION_SERVICE, "iam_resource", SVC(iam_resource), NULL, check_iam_resource),
	DURATION(SECTION_SERVICE, "hold_timeout", SVC(hold_timeout_ms), 0, WAIT_MAX, "30s"),
	ENUM(SECTION_SERVICE, "drain", SVC(drain), drain_names, "graceful", false),
	DURATION(SECTION_SERVICE, "drain_timeout", SVC(drain_timeout_ms), 0, WAIT_MAX, "10s"),
	DURATION(SECTION_SERVICE, "connect_timeout", SVC(connect_timeout_ms), 1, WAIT_MAX, "5s"),
	DURATION(SECTION_SERVICE, "resolve_interval", SVC(resolve_interval_ms), 0, WAIT_MAX, "30s"),
	INT(SECTION_SERVICE, "max_clients", SVC(max_clients), 1, 1000000, "10000"),
	INT(SECTION_SERVICE, "pool_size", SVC(pool_size), 0, 100000, "20"),
	DURATION(SECTION_SERVICE, "server_idle_timeout", SVC(server_idle_timeout_ms), MS_PER_S, 24 * (int64_t)MS_PER_H, "10m"),
	DURATION(SECTION_SERVICE, "server_lifetime", SVC(server_lifetime_ms), MS_PER_S, 7 * 24 * (int64_t)MS_PER_H, "1h"),
};

#define NKEYS ARRAY_LEN(keys)

static int key_index(enum section_kind section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].section == section && strcmp(keys[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* ---- parser state ---- */

struct key_seen {
	int line;   /* where the key was given; 0 when absent */
	bool valid; /* and whether its value was accepted */
};

struct service_state {
	struct service_config *svc;
	struct key_seen seen[NKEYS];
};

struct config_error {
	int line; /* 0 for messages about the whole file */
	size_t seq;
	char *msg;
};

struct parser {
	const char *name; /* file name in messages */
	struct config *cfg;
	int line; /* the line inih is working on */

	/* The section the reader opened last, and where its keys go. */
	enum section_kind section;
	void *base;
	struct key_seen *seen;
	struct service_config *svc;

	int repoint_line, aws_line; /* their headers, 0 when absent */
	struct key_seen top_seen[NKEYS];
	int service_headers; /* [service ...] headers seen, accepted or not */
	struct service_state *services;
	size_t nservices, services_cap;
	struct service_config **tail;

	struct config_error *errors;
	size_t nerrors, errors_cap;
	bool oom;

	/* Input: a file or a string. */
	FILE *fp;
	const char *text;
	size_t pos;
	char *buf;
	size_t bufcap;
	int read_errno;
};

static void add_error(struct parser *p, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_error(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	char *msg;
	int n;

	if (p->nerrors == p->errors_cap) {
		size_t cap = p->errors_cap ? p->errors_cap * 2 : 8;
		struct config_error *e = realloc(p->errors, cap * sizeof(*e));
		if (e == NULL) {
			p->oom = true;
			return;
		}
		p->errors = e;
		p->errors_cap = cap;
	}
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		p->oom = true;
		return;
	}
	p->errors[p->nerrors] = (struct config_error){.line = line, .seq = p->nerrors, .msg = msg};
	p->nerrors++;
}

static char *xstrdup(struct parser *p, const char *s)
{
	char *d = strdup(s);
	if (d == NULL)
		p->oom = true;
	return d;
}



/* "[repoint]", "[aws]", "[service orders]" for messages. */
static const char *section_label(enum section_kind kind, const char *service, char *buf, size_t len)
{
	switch (kind) {
	case SECTION_REPOINT:
		return "[repoint]";
	case SECTION_AWS:
		return "[aws]";
	case SECTION_SERVICE:
		snprintf(buf, len, "[service %s]", service ? service : "NAME");
		return buf;
	case SECTION_NONE:
	case SECTION_SKIP:
		break;
	}
	return "(no section)";
}

/* "10ms", "1s", "2m", "1h": the largest unit that divides the value. */
static const char *format_ms(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % MS_PER_H == 0)
		snprintf(buf, len, "%" PRId64 "h", ms / MS_PER_H);
	else if (ms != 0 && ms % MS_PER_M == 0)
		snprintf(buf, len, "%" PRId64 "m", ms / MS_PER_M);
	else if (ms != 0 && ms % MS_PER_S == 0)
		snprintf(buf, len, "%" PRId64 "s", ms / MS_PER_S);
	else
		snprintf(buf, len, "%" PRId64 "ms", ms);
	return buf;
}

/* "postgres, mysql or redis" */
static void format_choices(const char *const *names, char *buf, size_t len)
{
	size_t n = 0, used = 0;

	while (names[n] != NULL)
		n++;
	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
		int w = snprintf(buf + used, len - used, "%s%s", sep, names[i]);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* Levenshtein distance, for "did you mean"; INT_MAX for names too long to bother with. */
static int edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int row[SUGGEST_MAX_LEN + 1];

	if (la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN)
		return INT_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int up = row[j];
			int best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static bool hostport_eq(const struct hostport *a, const struct hostport *b)
{
	return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

/* Whether two listen addresses would fight over one port: the same address, or a wildcard that
 * covers the other (0.0.0.0 covers IPv4 hosts, :: covers everything as it is dual-stack). */
static bool hostport_overlaps(const struct hostport *a, const struct hostport *b)
{
	if (a->port != b->port)
		return false;
	if (strcasecmp(a->host, b->host) == 0 || strcmp(a->host, "::") == 0 ||
	    strcmp(b->host, "::") == 0)
		return true;
	if (strcmp(a->host, "0.0.0.0") == 0)
		return strchr(b->host, ':') == NULL;
	if (strcmp(b->host, "0.0.0.0") == 0)
		return strchr(a->host, ':') == NULL;
	return false;
}

/* ---- values ---- */

static bool parse_int(const char *s, long *out)
{
	char *end;
	const char *digits = *s == '-' ? s + 1 : s;

	if (!isdigit((unsigned char)*digits))
		return false;
	for (const char *c = digits; *c; c++)
		if (!isdigit((unsigned char)*c))
			return false;
	errno = 0;
	*out = strtol(s, &end, 10);
	if (errno == ERANGE)
		*out = *s == '-' ? LONG_MIN : LONG_MAX; /* out of range either way */
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* "a:1, b:2": every entry a HOST:PORT, none twice. Reports every bad entry. */
static bool parse_hostport_list(struct parser *p, const struct key_def *k, const char *value,
				struct hostport **out, int *count)
{
	struct hostport *list = NULL;
	int n = 0;
	bool ok = true;
	char *copy, *item, *next;

	if (*value == '\0') {
		add_error(p, p->line, "%s: expected HOST:PORT, HOST:PORT ..., got ''", k->name);
		return false;
	}
	copy = xstrdup(p, value);
	if (copy == NULL)
		return false;
	for (item = copy; item != NULL; item = next) {
		struct hostport hp;
		char why[512], shown[300];
		char *entry;

		next = strchr(item, ',');
		if (next != NULL)
			*next++ = '\0';
		entry = str_trim(item);
		if (*entry == '\0') {
			add_error(p, p->line, "%s: empty entry in '%s'", k->name, value);
			ok = false;
			continue;
		}
		if (!parse_hostport(entry, &hp, why, sizeof(why))) {
			add_error(p, p->line, "%s: %s", k->name, why);
			ok = false;
			continue;
		}
		bool twice = false;
		for (int i = 0; i < n && !twice; i++)
			twice = hostport_eq(&list[i], &hp);
		if (twice) {
			add_error(p, p->line, "%s: %s is listed twice", k->name,
				  hostport_str(&hp, shown, sizeof(shown)));
			ok = false;
			continue;
		}
		struct hostport *grown = realloc(list, (size_t)(n + 1) * sizeof(*list));
		if (grown == NULL) {
			p->oom = true;
			ok = false;
			break;
		}
		list = grown;
		list[n++] = hp;
	}
	free(copy);
	if (!ok) {
		free(list);
		return false;
	}
	free(*out);
	*out = list;
	*count = n;
	return true;
}

static bool range_error(struct parser *p, const struct key_def *k, const char *value, int64_t v)
{
	char lo[32], hi[32];

	if (k->type == TYPE_DURATION) {
		if (v < k->min && k->min == 1)
			add_error(p, p->line, "%s: must be greater than 0, got '%s'", k->name, value);
		else if (v < k->min)
			add_error(p, p->line, "%s: must be at least %s, got '%s'", k->name,
				  format_ms(k->min, lo, sizeof(lo)), value);
		else
			add_error(p, p->line, "%s: must be at most %s, got '%s'", k->name,
				  format_ms(k->max, hi, sizeof(hi)), value);
	} else {
		add_error(p, p->line, "%s: must be between %" PRId64 " and %" PRId64 ", got '%s'",
			  k->name, k->min, k->max, value);
	}
	return false;
}

/* Parses value as key k into the struct at base; reports at the current line. */
static bool set_value(struct parser *p, const struct key_def *k, void *base, const char *value)
{
	char *field = (char *)base + k->offset;
	char why[512], choices[128];

	switch (k->type) {
	case TYPE_DURATION: {
		int64_t ms;
		if (!parse_duration_ms(value, &ms)) {
			add_error(p, p->line, "%s: expected a duration like 250ms, 1s or 2m, got '%s'",
				  k->name, value);
			return false;
		}
		if (ms < k->min || ms > k->max)
			return range_error(p, k, value, ms);
		*(int64_t *)(void *)field = ms;
		return true;
	}
	case TYPE_INT: {
		long v;
		if (!parse_int(value, &v)) {
			add_error(p, p->line, "%s: expected a whole number, got '%s'", k->name, value);
			return false;
		}
		if (v < k->min || v > k->max)
			return range_error(p, k, value, v);
		*(int *)(void *)field = (int)v;
		return true;
	}
	case TYPE_BOOL: {
		bool b;
		if (!parse_bool(value, &b)) {
			add_error(p, p->line, "%s: expected true or false, got '%s'", k->name, value);
			return false;
		}
		*(bool *)(void *)field = b;
		return true;
	}
	case TYPE_STRING: {
		char **slot = (char **)(void *)field;
		char *copy = NULL;
		if (*value == '\0' && k->def == NULL) {
			/* empty means "not set": NULL, and the default applies */
		} else if (k->check != NULL && !k->check(value, why, sizeof(why))) {
			add_error(p, p->line, "%s: %s", k->name, why);
			return false;
		} else if ((copy = xstrdup(p, value)) == NULL) {
			return false;
		}
		free(*slot);
		*slot = copy;
		return true;
	}
	case TYPE_ENUM:
		/* Words as people write them: log_level = INFO, protocol = Redis. */
		for (int i = 0; k->names[i] != NULL; i++) {
			if (strcasecmp(value, k->names[i]) == 0) {
				*(int *)(void *)field = i;
				return true;
			}
		}
		format_choices(k->names, choices, sizeof(choices));
		add_error(p, p->line, "%s: expected %s, got '%s'", k->name, choices, value);
		return false;
	case TYPE_HOSTPORT: {
		struct hostport hp;
		if (!parse_hostport(value, &hp, why, sizeof(why))) {
			add_error(p, p->line, "%s: %s", k->name, why);
			return false;
		}
		*(struct hostport *)(void *)field = hp;
		if (k->aux != NO_AUX)
			*(bool *)(void *)((char *)base + k->aux) = true;
		return true;
	}
	case TYPE_HOSTPORT_LIST:
		return parse_hostport_list(p, k, value, (struct hostport **)(void *)field,
					   (int *)(void *)((char *)base + k->aux));
	}
	return false;
}

/* Every key of a section starts at its default (written in the table as text). */
static void apply_defaults(struct parser *p, enum section_kind section, void *base)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (keys[i].section != section || keys[i].def == NULL)
			continue;
		if (!set_value(p, &keys[i], base, keys[i].def))
			add_error(p, p->line, "internal error: bad default for %s", keys[i].name);
	}
}

/* ---- sections ---- */

static void open_service(struct parser *p, const char *name)
{
	struct service_config *svc;
	struct service_state *st;

	p->service_headers++;
	p->section = SECTION_SKIP; /* until the name is accepted: its keys would only add noise */
	if (*name == '\0') {
		add_error(p, p->line, "empty service name: expected [service NAME]");
		return;
	}
	if (strlen(name) > SERVICE_NAME_MAX) {
		add_error(p, p->line, "service name '%s' is too long (at most %d characters)", name,
			  SERVICE_NAME_MAX);
		return;
	}
	if (!all_name_chars(name)) {
		add_error(p, p->line,
			  "bad service name '%s': use letters, digits, '_', '.' and '-'", name);
		return;
	}
	for (size_t i = 0; i < p->nservices; i++) {
		if (strcmp(p->services[i].svc->name, name) == 0) {
			add_error(p, p->line, "duplicate [service %s] (first at line %d)", name,
				  p->services[i].svc->line);
			return;
		}
	}
	if (p->nservices == p->services_cap) {
		size_t cap = p->services_cap ? p->services_cap * 2 : 4;
		st = realloc(p->services, cap * sizeof(*st));
		if (st == NULL) {
			p->oom = true;
			return;
		}
		p->services = st;
		p->services_cap = cap;
	}
	svc = calloc(1, sizeof(*svc));
	if (svc == NULL || (svc->name = xstrdup(p, name)) == NULL) {
		free(svc);
		p->oom = true;
		return;
	}
	svc->line = p->line;
	*p->tail = svc;
	p->tail = &svc->next;
	p->cfg->nservices++;
	st = &p->services[p->nservices++];
	memset(st, 0, sizeof(*st));
	st->svc = svc;
	apply_defaults(p, SECTION_SERVICE, svc);

	p->section = SECTION_SERVICE;
	p->base = svc;
	p->seen = st->seen;
	p->svc = svc;
}

static void open_single(struct parser *p, enum section_kind kind, int *header_line, void *base)
{
	if (*header_line != 0) {
		add_error(p, p->line, "duplicate section %s (first at line %d)",
			  section_label(kind, NULL, NULL, 0), *header_line);
		p->section = SECTION_SKIP;
		return;
	}
	*header_line = p->line;
	p->section = kind;
	p->base = base;
	p->seen = p->top_seen;
	p->svc = NULL;
}

/* header: the text between the brackets, trimmed. */
static void open_section(struct parser *p, char *header)
{
	static const char *const kinds[] = {"repoint", "aws", "service"};
	size_t wordlen = strcspn(header, " \t");
	char *rest = str_trim(header + wordlen);
	const char *best = NULL;
	int best_distance = SUGGEST_DISTANCE + 1;
	char word[SUGGEST_MAX_LEN + 1];

	if (strcmp(header, "repoint") == 0) {
		open_single(p, SECTION_REPOINT, &p->repoint_line, p->cfg);
		return;
	}
	if (strcmp(header, "aws") == 0) {
		open_single(p, SECTION_AWS, &p->aws_line, &p->cfg->aws);
		return;
	}
	if (wordlen == strlen("service") && strncmp(header, "service", wordlen) == 0) {
		open_service(p, rest);
		return;
	}

	p->section = SECTION_SKIP;
	if (wordlen <= SUGGEST_MAX_LEN) {
		memcpy(word, header, wordlen);
		word[wordlen] = '\0';
		for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
			int d = edit_distance(word, kinds[i]);
			if (d < best_distance) {
				best_distance = d;
				best = kinds[i];
			}
		}
	}
	if (best != NULL && strcmp(best, "service") == 0)
		add_error(p, p->line, "unknown section [%s]: did you mean [service %s]?", header,
			  *rest ? rest : "NAME");
	else if (best != NULL)
		add_error(p, p->line, "unknown section [%s]: did you mean [%s]?", header, best);
	else
		add_error(p, p->line, "unknown section [%s]: expected [repoint], [aws] or [service NAME]",
			  header);
}

/* ---- the inih side ---- */

/* Where inih's own scan for `chars` stops on this line: at one of them, at an inline comment
 * (';' after white space) or at the end. Kept in step with inih so that what we accept here is
 * exactly what inih will then split. */
static char *scan_line(char *s, const char *chars)
{
	bool was_space = false;

	for (; *s; s++) {
		if (chars != NULL && strchr(chars, *s) != NULL)
			break;
		if (was_space && *s == ';')
			break;
		was_space = isspace((unsigned char)*s);
	}
	return s;
}

/* Classifies one line before inih sees it: opens sections, reports lines inih would reject.
 * Returns false when the line must not reach inih. */
static bool check_line(struct parser *p, char *line)
{
	char *s = line, *end, *header, *rest;

	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0' || *s == ';' || *s == '#')
		return true;
	if (*s == '[') {
		end = scan_line(s + 1, "]");
		if (*end != ']') {
			add_error(p, p->line, "expected ']' to close the section header, got '%s'",
				  str_trim(s));
			p->section = SECTION_SKIP;
			return false;
		}
		rest = str_trim(end + 1);
		if (*rest != '\0' && *rest != ';' && *rest != '#') {
			add_error(p, p->line, "unexpected text after ']': '%s'", rest);
			p->section = SECTION_SKIP;
			return false;
		}
		header = strndup(s + 1, (size_t)(end - s - 1));
		if (header == NULL) {
			p->oom = true;
			p->section = SECTION_SKIP;
			return false;
		}
		open_section(p, str_trim(header));
		free(header);
		return true;
	}
	/* "key = value": inih would also split at ':', which only ever hides a missing '=' here
	 * (addresses are full of colons), so that is an error too. */
	end = scan_line(s, "=:");
	if (*end != '=') {
		/* The line itself is not shown: it may be a secret that lost its "key =". Its first word
		 * is, when it names a key of this section. */
		char word[64];
		size_t n = strspn(str_trim(s), "abcdefghijklmnopqrstuvwxyz_");
		snprintf(word, sizeof(word), "%.*s", (int)(n < sizeof(word) ? n : sizeof(word) - 1), str_trim(s));
		if (n > 0 && n < sizeof(word) && key_index(p->section, word) >= 0)
			add_error(p, p->line, "expected 'key = value', '[section]' or a comment: '%s' without '='",
				  word);
		else
			add_error(p, p->line,
				  "expected 'key = value', '[section]' or a comment (the line is not shown: it may hold a secret)");
		return false;
	}
	return true;
}

/* The next line into p->buf without its line break; false at the end of input. */
static bool next_line(struct parser *p, size_t *len)
{
	if (p->fp != NULL) {
		ssize_t n = getline(&p->buf, &p->bufcap, p->fp);
		if (n < 0) {
			if (ferror(p->fp))
				p->read_errno = errno ? errno : EIO;
			return false;
		}
		*len = (size_t)n;
	} else {
		const char *start = p->text + p->pos, *nl;
		if (*start == '\0')
			return false;
		nl = strchr(start, '\n');
		*len = nl ? (size_t)(nl - start) + 1 : strlen(start);
		if (*len + 1 > p->bufcap) {
			char *b = realloc(p->buf, *len + 1);
			if (b == NULL) {
				p->oom = true;
				return false;
			}
			p->buf = b;
			p->bufcap = *len + 1;
		}
		memcpy(p->buf, start, *len);
		p->buf[*len] = '\0';
		p->pos += *len;
	}
	while (*len > 0 && (p->buf[*len - 1] == '\n' || p->buf[*len - 1] == '\r'))
		p->buf[--*len] = '\0';
	return true;
}

/* A line we could not read was reported; if it looks like a section header, the keys below it
 * must not land in the section before it. */
static void unreadable_line(struct parser *p, const char *line)
{
	while (isspace((unsigned char)*line))
		line++;
	if (*line == '[')
		p->section = SECTION_SKIP;
}

/* inih's fgets-style reader: one whole line per call, counted, checked, and blanked out when it
 * was reported here (so inih neither sees it nor stops at it). */
static char *line_reader(char *out, int num, void *stream)
{
	struct parser *p = stream;
	size_t len;
	char *s;

	if (num < 2 || !next_line(p, &len))
		return NULL;
	p->line++;
	s = p->buf;
	if (p->line == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0) {
		s += 3;
		len -= 3;
	}
	out[0] = '\0';
	if (strlen(s) != len) {
		add_error(p, p->line, "line contains a NUL byte");
		unreadable_line(p, s);
	} else if (len + 2 > (size_t)num) {
		add_error(p, p->line, "line is too long (at most %d characters)", num - 2);
		unreadable_line(p, s);
	} else if (check_line(p, s)) {
		memcpy(out, s, len);
		memcpy(out + len, "\n", 2);
	}
	return out;
}

static void unknown_key(struct parser *p, const char *name)
{
	char buf[SERVICE_NAME_MAX + 16], other[SERVICE_NAME_MAX + 16], list[2048];
	const char *label = section_label(p->section, p->svc ? p->svc->name : NULL, buf, sizeof(buf));
	const char *best = NULL;
	int best_distance = SUGGEST_DISTANCE + 1;
	size_t used = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		if (keys[i].section != p->section && strcmp(keys[i].name, name) == 0) {
			add_error(p, p->line, "unknown key '%s' in %s: it belongs in %s", name, label,
				  section_label(keys[i].section, NULL, other, sizeof(other)));
			return;
		}
	}
	for (size_t i = 0; i < NKEYS; i++) {
		int d;
		if (keys[i].section != p->section)
			continue;
		d = edit_distance(name, keys[i].name);
		if (d < best_distance) {
			best_distance = d;
			best = keys[i].name;
		}
	}
	if (best != NULL) {
		add_error(p, p->line, "unknown key '%s' in %s: did you mean '%s'?", name, label, best);
		return;
	}
	list[0] = '\0';
	for (size_t i = 0; i < NKEYS && used < sizeof(list); i++) {
		int w;
		if (keys[i].section != p->section)
			continue;
		w = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", keys[i].name);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	add_error(p, p->line, "unknown key '%s' in %s; allowed keys: %s", name, label, list);
}

/* inih's handler. `section` is ignored: the reader has already opened it for us, including the
 * cases inih cannot tell apart (a section repeated, a header we rejected). */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;
	struct key_seen *seen;
	int i;

	(void)section;
	if (p->section == SECTION_SKIP)
		return 1;
	if (*name == '\0') {
		add_error(p, p->line, "missing key name before '='");
		return 1;
	}
	if (p->section == SECTION_NONE) {
		add_error(p, p->line,
			  "'%s' is outside any section; put it under [repoint], [aws] or [service NAME]",
			  name);
		return 1;
	}
	i = key_index(p->section, name);
	if (i < 0) {
		unknown_key(p, name);
		return 1;
	}
	seen = &p->seen[i];
	if (seen->line != 0) {
		add_error(p, p->line, "%s: given twice in this section (first at line %d)", name,
			  seen->line);
		return 1;
	}
	seen->line = p->line;
	seen->valid = set_value(p, &keys[i], p->base, value);
	/* we report every error ourselves; a 0 here would only make inih remember the line */
	return 1;
}

/* inih's knobs are process-wide variables in this build: set ours for one parse and put the
 * caller's back afterwards. Config loading happens before any thread starts. */
struct ini_knobs {
	bool multiline, inline_comments, no_value, stop_on_first_error, use_stack;
	int max_line;
	char *start_prefixes, *inline_prefixes;
};

static struct ini_knobs ini_knobs_set(void)
{
	static char start_prefixes[] = ";#";
	static char inline_prefixes[] = ";";
	struct ini_knobs saved = {
		.multiline = ini_allow_multiline,
		.inline_comments = ini_allow_inline_comments,
		.no_value = ini_allow_no_value,
		.stop_on_first_error = ini_stop_on_first_error,
		.use_stack = ini_use_stack,
		.max_line = ini_max_line,
		.start_prefixes = ini_start_comment_prefixes,
		.inline_prefixes = ini_inline_comment_prefixes,
	};

	/* Without this an indented "key = value" would be glued to the previous value. */
	ini_allow_multiline = false;
	ini_allow_inline_comments = true;
	ini_inline_comment_prefixes = inline_prefixes;
	ini_start_comment_prefixes = start_prefixes;
	ini_allow_no_value = false;
	ini_stop_on_first_error = false;
	/* Debian's r55 then puts a line buffer of ini_max_line bytes on the stack and offers the
	 * reader that much; the reader never writes more than it is offered, so even a build that
	 * ignored these two would only report long lines sooner. */
	ini_use_stack = true;
	ini_max_line = CONFIG_MAX_LINE;
	return saved;
}

static void ini_knobs_restore(const struct ini_knobs *saved)
{
	ini_allow_multiline = saved->multiline;
	ini_allow_inline_comments = saved->inline_comments;
	ini_allow_no_value = saved->no_value;
	ini_stop_on_first_error = saved->stop_on_first_error;
	ini_use_stack = saved->use_stack;
	ini_max_line = saved->max_line;
	ini_start_comment_prefixes = saved->start_prefixes;
	ini_inline_comment_prefixes = saved->inline_prefixes;
}

/* ---- checks across keys and services, after the whole file is read ---- */

static void check_service(struct parser *p, size_t idx)
{
	struct service_state *st = &p->services[idx];
	struct service_config *svc = st->svc;
	const struct key_seen *members = &st->seen[key_index(SECTION_SERVICE, "members")];
	const struct key_seen *source = &st->seen[key_index(SECTION_SERVICE, "source")];
	const struct key_seen *shard = &st->seen[key_index(SECTION_SERVICE, "shard")];
	const struct key_seen *listen = &st->seen[key_index(SECTION_SERVICE, "listen")];
	const struct key_seen *multiplex = &st->seen[key_index(SECTION_SERVICE, "multiplex")];
	const struct key_seen *protocol = &st->seen[key_index(SECTION_SERVICE, "protocol")];
	const struct key_seen *admin = &p->top_seen[key_index(SECTION_REPOINT, "admin")];
	enum source_kind kind = source_kind_of(svc->source);
	/* a rejected source was reported already; don't pile on as if it were absent */
	bool bad_source = source->line != 0 && !source->valid;
	char a[300], b[300];

	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].section == SECTION_SERVICE && keys[i].required && st->seen[i].line == 0)
			add_error(p, svc->line, "service '%s': missing '%s'", svc->name, keys[i].name);
	if (members->line == 0 && svc->source == NULL && !bad_source)
		add_error(p, svc->line, "service '%s': missing 'members' (or 'source')", svc->name);
	if (members->line != 0 && svc->source != NULL)
		add_error(p, source->line, "source: cannot be used together with 'members' (line %d)",
			  members->line);

	if (kind != SOURCE_NONE && protocol->valid) {
		bool redis = svc->protocol == PROTOCOL_REDIS;
		if (kind == SOURCE_RDS && redis)
			add_error(p, source->line,
				  "source: rds needs protocol postgres or mysql, but this service is %s",
				  protocol_name(svc->protocol));
		else if (kind != SOURCE_RDS && !redis)
			add_error(p, source->line,
				  "source: %s needs protocol redis, but this service is %s",
				  source_kind_names[kind], protocol_name(svc->protocol));
	}
	/* Redis: multiplexed unless the file says otherwise (a client that needs a connection of its
	 * own still gets one); the others cannot share. */
	if (multiplex->line == 0 && protocol->valid && svc->protocol == PROTOCOL_REDIS)
		svc->multiplex = true;
	if (multiplex->valid && svc->multiplex && protocol->valid && svc->protocol != PROTOCOL_REDIS)
		add_error(p, multiplex->line,
			  "multiplex: only redis sessions can share a server connection, but this service is %s",
			  protocol_name(svc->protocol));
	{
		const struct key_seen *tls = &st->seen[key_index(SECTION_SERVICE, "tls")];
		svc->tls_given = tls->line != 0;
		const struct key_seen *ltls = &st->seen[key_index(SECTION_SERVICE, "listen_tls")];
		if (ltls->valid && svc->listen_tls != LISTEN_TLS_OFF && svc->listen_tls_cert_file == NULL)
			add_error(p, ltls->line, "listen_tls: needs listen_tls_cert_file (and listen_tls_key_file "
						 "unless the key is in it)");
	}
	{
		const struct key_seen *auth = &st->seen[key_index(SECTION_SERVICE, "auth")];
		const struct key_seen *cauth = &st->seen[key_index(SECTION_SERVICE, "client_auth")];
		const struct key_seen *afile = &st->seen[key_index(SECTION_SERVICE, "auth_file")];
		const struct key_seen *muser = &st->seen[key_index(SECTION_SERVICE, "member_user")];
		const struct key_seen *mpw = &st->seen[key_index(SECTION_SERVICE, "member_password")];
		bool own = svc->auth == AUTH_REPOINT;
		bool redis = protocol->valid && svc->protocol == PROTOCOL_REDIS;
		/* Redis: repoint logs in to the members; whoever reaches the listener is trusted. */
		bool mysql = protocol->valid && svc->protocol == PROTOCOL_MYSQL;
		if (own && redis && !cauth->line)
			svc->client_auth = CLIENT_AUTH_TRUST;
		if (own && mysql && !cauth->line)
			svc->client_auth = CLIENT_AUTH_MYSQL_NATIVE;
		if (auth->valid && own && mysql && svc->client_auth != CLIENT_AUTH_TRUST &&
		    svc->client_auth != CLIENT_AUTH_MYSQL_NATIVE)
			add_error(p, cauth->line, "client_auth: mysql clients prove themselves with mysql_native_password (or "
						  "are trusted on loopback: trust); %s is for postgres",
				  client_auth_names[svc->client_auth]);
		else if (auth->valid && own && !mysql && protocol->valid && svc->client_auth == CLIENT_AUTH_MYSQL_NATIVE)
			add_error(p, cauth->line, "client_auth: mysql_native_password is for mysql, but this service is %s",
				  protocol_name(svc->protocol));
		else if (auth->valid && own && redis && svc->client_auth != CLIENT_AUTH_TRUST)
			add_error(p, cauth->line, "client_auth: redis clients are trusted on loopback (trust); %s is for "
						  "postgres", client_auth_names[svc->client_auth]);
		else if (auth->valid && own && redis && svc->member_password == NULL)
			add_error(p, auth->line, "auth: repoint logs in to the redis members itself: set member_password "
						 "(and member_user for an ACL user)");
		else if (auth->valid && own && svc->client_auth != CLIENT_AUTH_TRUST && svc->auth_file == NULL)
			add_error(p, cauth->line ? cauth->line : auth->line,
				  "client_auth: %s needs auth_file (the users and their passwords, SCRAM verifiers, md5 "
				  "secrets or mysql_native_password hashes)", client_auth_names[svc->client_auth]);
		else if (auth->valid && own && svc->client_auth == CLIENT_AUTH_TRUST && listen->valid &&
			 !host_is_loopback(svc->listen.host))
			add_error(p, cauth->line ? cauth->line : auth->line,
				  "client_auth: trust is for loopback listeners only, but this service listens on %s",
				  svc->listen.host[0] ? svc->listen.host : "every address");
		if (!own && (cauth->line || afile->line))
			add_error(p, cauth->line ? cauth->line : afile->line, "%s: only with auth = repoint",
				  cauth->line ? "client_auth" : "auth_file");
		const struct key_seen *psize = &st->seen[key_index(SECTION_SERVICE, "pool_size")];
		if (psize->line && svc->pool_size > 0 && (!own || redis))
			add_error(p, psize->line, "pool_size: server connections are kept for postgres and mysql services "
						  "with auth = repoint (repoint logs them in, so any client of the same start "
						  "can take one)");
		const struct key_seen *ires = &st->seen[key_index(SECTION_SERVICE, "iam_resource")];
		if (ires->line && protocol->valid && !redis)
			add_error(p, ires->line, "iam_resource: names an ElastiCache or MemoryDB resource (redis services), "
						 "but this service is %s", protocol_name(svc->protocol));
		if ((!own || (protocol->valid && !redis)) && muser->line)
			add_error(p, muser->line, "member_user: only for redis services with auth = repoint (postgres logs in "
						  "as the client's user)");
		else if (!own && mpw->line)
			add_error(p, mpw->line, "member_password: only with auth = repoint (redis: repoint's login; postgres, "
						"mysql: the members' logins instead of auth_file's secrets)");
	}
	{
		/* Redis Cluster: commands go by slot, each on its shard primary's shared connection. */
		const struct key_seen *cl = &st->seen[key_index(SECTION_SERVICE, "cluster")];
		const struct key_seen *route = &st->seen[key_index(SECTION_SERVICE, "route")];
		if (cl->valid && svc->cluster && protocol->valid && svc->protocol != PROTOCOL_REDIS)
			add_error(p, cl->line, "cluster: Redis Cluster is for redis services, but this service is %s",
				  protocol_name(svc->protocol));
		else if (cl->valid && svc->cluster && svc->source != NULL && kind != SOURCE_ELASTICACHE &&
			 kind != SOURCE_MEMORYDB)
			add_error(p, cl->line, "cluster: a cluster's nodes come from static members or from an elasticache: "
					       "(cluster mode) or memorydb: source, not from %s", svc->source);
		else if (cl->valid && svc->cluster && svc->shard != NULL)
			add_error(p, shard->valid ? shard->line : cl->line,
				  "shard: pins one node group, but cluster = on serves every shard behind one listener: "
				  "choose one");
		else if (cl->valid && svc->cluster && !svc->multiplex)
			add_error(p, multiplex->line ? multiplex->line : cl->line,
				  "cluster: commands travel on each shard primary's shared connections: it needs multiplex = on");
		else if (cl->valid && svc->cluster && svc->route != ROUTE_WRITER)
			add_error(p, route->line ? route->line : cl->line,
				  "cluster: commands go to their shard's primary: it needs route = writer");
		else if (cl->valid && svc->cluster && !svc->probes)
			add_error(p, cl->line, "cluster: the slot map and every shard's primary come from probes: it needs probes = on");
	}
	if (shard->valid && svc->shard != NULL && kind == SOURCE_RDS)
		add_error(p, shard->line, "shard: only applies to elasticache and memorydb sources, "
					  "not rds");
	else if (shard->valid && svc->shard != NULL && svc->source == NULL && !bad_source)
		add_error(p, shard->line, "shard: needs an elasticache or memorydb source");

	if (listen->valid) {
		for (int m = 0; m < svc->nmembers; m++)
			if (hostport_overlaps(&svc->members[m], &svc->listen))
				add_error(p, members->line,
					  "members: %s is this service's own listen address (a loop)",
					  hostport_str(&svc->members[m], a, sizeof(a)));
		if (p->cfg->has_admin && hostport_overlaps(&svc->listen, &p->cfg->admin))
			add_error(p, listen->line, "listen %s is already used by the admin API (line %d)",
				  hostport_str(&svc->listen, a, sizeof(a)), admin->line);
		if (p->cfg->has_metrics && hostport_overlaps(&svc->listen, &p->cfg->metrics))
			add_error(p, listen->line, "listen %s is already used by metrics (line %d)",
				  hostport_str(&svc->listen, a, sizeof(a)),
				  p->top_seen[key_index(SECTION_REPOINT, "metrics")].line);
		for (size_t j = 0; j < idx; j++) {
			const struct service_state *o = &p->services[j];
			const struct key_seen *olisten = &o->seen[key_index(SECTION_SERVICE, "listen")];
			if (!olisten->valid || !hostport_overlaps(&svc->listen, &o->svc->listen))
				continue;
			if (hostport_eq(&svc->listen, &o->svc->listen))
				add_error(p, listen->line,
					  "listen %s is already used by service '%s' (line %d)",
					  hostport_str(&svc->listen, a, sizeof(a)), o->svc->name,
					  olisten->line);
			else
				add_error(p, listen->line,
					  "listen %s overlaps %s of service '%s' (line %d)",
					  hostport_str(&svc->listen, a, sizeof(a)),
					  hostport_str(&o->svc->listen, b, sizeof(b)), o->svc->name,
					  olisten->line);
			break;
		}
	}

	{
		const struct key_seen *pw = &st->seen[key_index(SECTION_SERVICE, "probe_password")];
		const struct key_seen *tls = &st->seen[key_index(SECTION_SERVICE, "tls")];
		struct secret_ref r;
		char why[200];

		svc->probe_user_given = svc->probe_user != NULL;
		const struct key_seen *mpw = &st->seen[key_index(SECTION_SERVICE, "member_password")];
		const struct {
			const char *key, *user_key, *value, *user;
			const struct key_seen *seen;
		} iam[] = {{"probe_password", "probe_user", svc->probe_password, svc->probe_user, pw},
			   {"member_password", "member_user", svc->member_password, svc->member_user, mpw}};
		for (size_t i = 0; i < ARRAY_LEN(iam); i++) {
			if (!iam[i].seen->valid || iam[i].value == NULL ||
			    !secret_ref_parse(iam[i].value, &r, why, sizeof(why)) || r.kind != SECRET_IAM)
				continue;
			if (protocol->valid && svc->protocol == PROTOCOL_REDIS && config_iam_resource(svc) == NULL)
				add_error(p, iam[i].seen->line, "%s: iam on redis signs an ElastiCache or MemoryDB token, "
								"which names the replication group or cluster: it needs "
								"iam_resource, or source = elasticache:ID or memorydb:NAME",
					  iam[i].key);
			else if (protocol->valid && svc->protocol == PROTOCOL_REDIS &&
				 (iam[i].user == NULL || iam[i].user[0] == '\0'))
				add_error(p, iam[i].seen->line, "%s: iam logs in as an IAM-enabled ACL user: set %s",
					  iam[i].key, iam[i].user_key);
			else if ((tls->line == 0 || tls->valid) && svc->tls != TLS_VERIFY_FULL)
				add_error(p, iam[i].seen->line, "%s: iam sends an IAM token, a password valid for 15 "
								"minutes, in the clear: it needs tls = verify-full (this "
								"service has tls = %s%s)", iam[i].key, tls_mode_names[svc->tls],
					  tls->line ? "" : ", the default");
		}
	}

	/* Protocol-dependent defaults: a probe has to log in as someone. */
	if (svc->probe_user == NULL && svc->protocol == PROTOCOL_POSTGRES)
		svc->probe_user = xstrdup(p, "postgres");
	else if (svc->probe_user == NULL && svc->protocol == PROTOCOL_MYSQL)
		svc->probe_user = xstrdup(p, "root");
	if (svc->probe_database == NULL && svc->protocol == PROTOCOL_POSTGRES)
		svc->probe_database = xstrdup(p, "postgres");
}

const char *config_iam_resource(const struct service_config *svc)
{
	enum source_kind k = source_kind_of(svc->source);

	if (svc->iam_resource != NULL)
		return svc->iam_resource;
	return k == SOURCE_ELASTICACHE || k == SOURCE_MEMORYDB ? svc->source : NULL;
}

static int error_order(const void *a, const void *b)
{
	const struct config_error *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* All messages, in line order, one per line, into err (truncated to errlen). */
static void write_errors(struct parser *p, char *err, size_t errlen)
{
	size_t used = 0;

	if (err == NULL || errlen == 0)
		return;
	err[0] = '\0';
	if (p->oom) {
		snprintf(err, errlen, "%s: out of memory", p->name);
		return;
	}
	qsort(p->errors, p->nerrors, sizeof(*p->errors), error_order);
	for (size_t i = 0; i < p->nerrors && used < errlen; i++) {
		const char *sep = i ? "\n" : "";
		int w;
		if (p->errors[i].line > 0)
			w = snprintf(err + used, errlen - used, "%s%s:%d: %s", sep, p->name,
				     p->errors[i].line, p->errors[i].msg);
		else
			w = snprintf(err + used, errlen - used, "%s%s: %s", sep, p->name,
				     p->errors[i].msg);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* What is valid but unwise, said by `repoint -t` and logged at start: secrets written in the
 * file. Formatted as the errors are ("file:line: ..."), through the same list, once it is known
 * to hold no error. */
static void collect_warnings(struct parser *p)
{
	static const char advice[] = "prefer env:NAME, file:/PATH or secretsmanager:ID (the file may be read by "
				     "more people than the secret should be)";
	const struct key_seen *at = &p->top_seen[key_index(SECTION_REPOINT, "admin_token")];
	struct secret_ref r;
	char why[200], text[8192];

	if (p->cfg->admin_token != NULL && secret_ref_parse(p->cfg->admin_token, &r, why, sizeof(why)) &&
	    r.kind == SECRET_LITERAL)
		add_error(p, at->line, "admin_token: the token is written in the file; %s", advice);
	for (size_t i = 0; i < p->nservices; i++) {
		const struct service_config *svc = p->services[i].svc;
		const struct key_seen *pw = &p->services[i].seen[key_index(SECTION_SERVICE, "probe_password")];
		if (svc->probe_password[0] != '\0' && secret_ref_parse(svc->probe_password, &r, why, sizeof(why)) &&
		    r.kind == SECRET_LITERAL)
			add_error(p, pw->line, "probe_password of service %s: the password is written in the file; %s",
				  svc->name, advice);
		const struct key_seen *mpw = &p->services[i].seen[key_index(SECTION_SERVICE, "member_password")];
		if (svc->member_password != NULL && secret_ref_parse(svc->member_password, &r, why, sizeof(why)) &&
		    r.kind == SECRET_LITERAL)
			add_error(p, mpw->line, "member_password of service %s: the password is written in the file; %s",
				  svc->name, advice);
		/* auth_file: plaintext passwords (a SCRAM verifier or a reference needs none in it). */
		const struct key_seen *af = &p->services[i].seen[key_index(SECTION_SERVICE, "auth_file")];
		struct auth_users *u;
		if (svc->auth == AUTH_REPOINT && svc->auth_file != NULL &&
		    (u = auth_users_load(svc->auth_file, why, sizeof(why))) != NULL) {
			size_t n = 0;
			const char *first = NULL;
			for (size_t k = 0; k < auth_users_count(u); k++)
				if (auth_users_at(u, k)->password != NULL && n++ == 0)
					first = auth_users_at(u, k)->name;
			if (n > 0)
				add_error(p, af->line, "auth_file of service %s: %zu password(s) written in %s (user \"%s\"%s); "
							"prefer SCRAM verifiers (no password at all) or env:NAME, file:/PATH or "
							"secretsmanager:ID", svc->name, n, svc->auth_file, first,
					  n > 1 ? " and others" : "");
			auth_users_unref(u);
		}
	}
	if (p->nerrors > 0) {
		write_errors(p, text, sizeof(text));
		p->cfg->warnings = xstrdup(p, text);
	}
}

static struct config *parse(struct parser *p, char *err, size_t errlen)
{
	struct config *cfg;
	struct ini_knobs saved;
	int rc;

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || (cfg->path = strdup(p->name)) == NULL) {
		free(cfg);
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: out of memory", p->name);
		return NULL;
	}
	p->cfg = cfg;
	p->tail = &cfg->services;
	p->section = SECTION_NONE;
	apply_defaults(p, SECTION_REPOINT, cfg);
	apply_defaults(p, SECTION_AWS, &cfg->aws);

	saved = ini_knobs_set();
	rc = ini_parse_stream(line_reader, p, on_key, p);
	ini_knobs_restore(&saved);

	if (p->read_errno != 0) {
		/* whatever else we found is about a file we did not see whole: this is the message */
		for (size_t i = 0; i < p->nerrors; i++)
			free(p->errors[i].msg);
		p->nerrors = 0;
		add_error(p, 0, "cannot read: %s", strerror(p->read_errno));
	} else if (rc > 0) {
		/* inih rejected a line we let through: never accept a file we did not fully read */
		bool reported = false;
		for (size_t i = 0; i < p->nerrors && !reported; i++)
			reported = p->errors[i].line == rc;
		if (!reported)
			add_error(p, rc, "cannot parse this line");
	} else if (rc < 0) {
		p->oom = true;
	}

	if (p->read_errno == 0) {
		for (size_t i = 0; i < p->nservices; i++)
			check_service(p, i);
		if (p->service_headers == 0)
			add_error(p, 0, "no services: add a [service NAME] section");
		if (cfg->has_admin && cfg->has_metrics && hostport_overlaps(&cfg->admin, &cfg->metrics))
			add_error(p, p->top_seen[key_index(SECTION_REPOINT, "metrics")].line,
				  "metrics: the admin API listens there already (it serves /metrics too)");
	}

	if (p->nerrors > 0 || p->oom) {
		write_errors(p, err, errlen);
		config_free(cfg);
		cfg = NULL;
	} else {
		if (err != NULL && errlen > 0)
			err[0] = '\0';
		collect_warnings(p);
	}
	for (size_t i = 0; i < p->nerrors; i++)
		free(p->errors[i].msg);
	free(p->errors);
	free(p->services);
	free(p->buf);
	return cfg;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct parser p = {.name = path};
	struct config *cfg;

	p.fp = fopen(path, "r");
	if (p.fp == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	cfg = parse(&p, err, errlen);
	fclose(p.fp);
	return cfg;
}

struct config *config_load_string(const char *text, const char *name, char *err, size_t errlen)
{
	struct parser p = {.name = name, .text = text};

	return parse(&p, err, errlen);
}

void config_free(struct config *cfg)
{
	struct service_config *svc, *next;

	if (cfg == NULL)
		return;
	for (svc = cfg->services; svc != NULL; svc = next) {
		next = svc->next;
		free(svc->name);
		free(svc->members);
		free(svc->probe_user);
		if (svc->probe_password != NULL)
			explicit_bzero(svc->probe_password, strlen(svc->probe_password));
		free(svc->probe_password);
		free(svc->probe_database);
		free(svc->tls_ca_file);
		free(svc->tls_server_name);
		free(svc->tls_cert_file);
		free(svc->tls_key_file);
		free(svc->auth_file);
		free(svc->member_user);
		free(svc->iam_resource);
		if (svc->member_password != NULL)
			explicit_bzero(svc->member_password, strlen(svc->member_password));
		free(svc->member_password);
		free(svc->listen_tls_cert_file);
		free(svc->listen_tls_key_file);
		free(svc->source);
		free(svc->shard);
		free(svc);
	}
	if (cfg->admin_token != NULL)
		explicit_bzero(cfg->admin_token, strlen(cfg->admin_token));
	free(cfg->admin_token);
	free(cfg->warnings);
	free(cfg->aws.region);
	free(cfg->aws.profile);
	free(cfg->aws.endpoint_url);
	free(cfg->path);
	free(cfg);
}
