/* sources/aws_source.c - follow a cluster through the AWS control plane.
 *
 * A poll is a short chain of API calls, one at a time, driven by their callbacks:
 *
 *   rds                 DescribeDBClusters ─▶ DescribeDBInstances (Marker pages) ─▶ done
 *   elasticache         DescribeReplicationGroups ─▶ [DescribeCacheClusters] ─▶ done
 *   elasticache-global  DescribeGlobalReplicationGroups ─▶ (the PRIMARY's region and group)
 *                       DescribeReplicationGroups ─▶ [DescribeCacheClusters] ─▶ done
 *   memorydb            DescribeClusters (NextToken pages until the cluster is seen) ─▶ done
 *
 * Each call first takes usable credentials from aws/creds (at once when it has them, else through
 * its callback); a reply saying they are expired or unknown invalidates them and repeats the call
 * once. Replies go through the parsers of sources/cloud into one scratch cloud_view; a failed
 * parse ends the poll and the scratch view is simply dropped, so nothing half-read is ever handed
 * on.
 *
 * The outcome (a view or an error) reaches the service's callbacks through one deferred event,
 * never from inside an aws/http or aws/creds callback: the service may then do anything from its
 * callback, aws_source_free() included. The next poll is scheduled before that callback runs, and
 * only when a poll has ended, so that two polls never overlap. */
#include "sources/aws_source.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "aws/creds.h"
#include "aws/http.h"
#include "log.h"
#include "sources/cloud.h"
#include "util.h"

#define RDS_VERSION "2014-10-31"
#define EC_VERSION "2015-02-02"

/* Defaults when the [aws] section (or a test) leaves the intervals at 0, as in config.c. */
#define AWS_SOURCE_DEFAULT_POLL_MS 5000
#define AWS_SOURCE_DEFAULT_FAST_MS 1000
/* poll_interval is spread by +-this percentage so that many proxies started together do not
 * poll in step (the control plane throttles per account). */
#define AWS_SOURCE_JITTER_PCT 20
/* A paginated listing longer than this is not a reply we can use; it also bounds a hostile or
 * broken endpoint that hands out markers forever. */
#define AWS_SOURCE_MAX_PAGES 100
/* DescribeCacheClusters is asked member by member when no more than this many members need it
 * (a pinned shard: one call each), else as the region's paged listing, which costs one call per
 * hundred cache clusters whatever the size of the group. */
#define AWS_SOURCE_EC_PER_MEMBER_MAX 3

enum step {
	STEP_NONE,
	STEP_RDS_CLUSTERS,
	STEP_RDS_INSTANCES,
	STEP_EC_GROUPS,
	STEP_EC_NODES,
	STEP_GLOBAL,
	STEP_MEMORYDB,
};

struct aws_source {
	struct event_base *base;
	char source[200];     /* as configured, for status and logs */
	char subject[128];
	enum cloud_kind kind;
	char id[128];
	char *shard;
	char *endpoint_url;
	char *profile;
	char *region_cfg;
	struct aws_http_options http_opts;  /* [aws] request_timeout, max_attempts */
	int64_t poll_ms, fast_ms;
	aws_source_view_cb view_cb;
	aws_source_error_cb err_cb;
	void *arg;

	struct aws_http *http;
	struct aws_creds *creds;
	char region[32];
	struct event *timer;    /* the next poll */
	struct event *deliver;  /* hands a poll's outcome to the callbacks */
	bool started, fast, polling;
	int64_t last_end_ms;    /* monotonic; when the last poll ended, 0 before any */
	int64_t next_due_ms;    /* monotonic; when the timer fires */
	uint64_t rng;

	/* the poll under way */
	enum step step;
	struct aws_http_req *req;
	bool waiting_creds;
	bool creds_retried;     /* once per poll */
	int pages;              /* of the current step */
	char token[1024];       /* Marker / NextToken to send, "" for the first page */
	char call_region[32];   /* what the calls of this poll are signed for */
	char group[128];        /* the replication group asked for (global: the PRIMARY's) */
	char global_status[48];
	bool nodes_listing;     /* STEP_EC_NODES: paged listing rather than member by member */
	bool nodes_lacking;     /* ... started because members had no endpoint */
	int targets[AWS_SOURCE_EC_PER_MEMBER_MAX];
	int ntargets, next_target;
	struct cloud_view work;

	/* the outcome waiting for the deliver event */
	bool outcome_ok;
	char out_code[64];
	char out_msg[512];
	struct aws_source_member *members;
	int nmembers;
	struct aws_source_view view;

	/* what status and metrics report */
	char status[48];          /* the cluster's last status, "" before any */
	int64_t last_poll_wall;   /* wall ms of the last successful poll, 0 before any */
	uint64_t polls, failures;
	bool has_error;
	char err_code[64];
	char err_msg[512];
	int64_t err_wall;
	char logged_code[64];     /* the error last warned about; "" while polls succeed */
	char summary[512];        /* the last view in a line, to log changes only */
};

static void poll_step(struct aws_source *src);

/* ------------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* xorshift64*: only for the jitter, which needs no quality beyond "not in step with others". */
static uint32_t next_rand(struct aws_source *src)
{
	uint64_t x = src->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	src->rng = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Statuses in which nothing is changing: anything else polls at the failover interval. Backups
 * and snapshots are routine and long, and a global datastore with no secondary left is steady
 * as "primary-only". */
static bool steady_status(const char *s)
{
	return strcmp(s, "available") == 0 || strcmp(s, "primary-only") == 0 ||
	       strcmp(s, "backing-up") == 0 || strcmp(s, "snapshotting") == 0;
}

/* A member's own status says it serves clients. "" (the API said nothing) counts as serving:
 * the probes then decide. RDS instances keep serving while backed up or reconfigured; a global
 * datastore member is "associated"; "in-sync" is a parameter group's word for the same. */
static bool member_serves(const char *s)
{
	static const char *const ok[] = {"", "available", "in-sync", "associated", "backing-up",
	                                 "snapshotting", "storage-optimization"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(ok); i++)
		if (strcmp(s, ok[i]) == 0)
			return true;
	return strncmp(s, "configuring-", 12) == 0; /* configuring-enhanced-monitoring, ... */
}

static bool has_endpoint(const struct cloud_member *m)
{
	return m->host[0] != '\0' && m->port != 0;
}

/* The service said the signature's credentials are no good: worth fetching them anew once. */
static bool creds_rejected(const struct aws_response *r)
{
	static const char *const codes[] = {"ExpiredToken", "ExpiredTokenException",
	                                    "InvalidClientTokenId", "UnrecognizedClientException"};
	size_t i;

	if (r->status == 0)
		return false; /* no reply: nothing was said about the credentials */
	for (i = 0; i < ARRAY_LEN(codes); i++)
		if (strcmp(r->error_code, codes[i]) == 0)
			return true;
	return strcasestr(r->error_code, "expired") != NULL ||
	       strcasestr(r->error_message, "expired") != NULL;
}

static void iso_time(int64_t wall, char *buf, size_t len)
{
	time_t secs = (time_t)(wall / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall % 1000));
}

static json_t *time_json(int64_t wall)
{
	char buf[80];

	if (wall <= 0)
		return json_null();
	iso_time(wall, buf, sizeof(buf));
	return json_string(buf);
}

/* ------------------------------------------------------------------------------------------------
 * Timers
 * ---------------------------------------------------------------------------------------------- */

static void arm_in(struct aws_source *src, int64_t delay_ms)
{
	struct timeval tv;

	if (delay_ms < 0)
		delay_ms = 0;
	tv.tv_sec = (time_t)(delay_ms / 1000);
	tv.tv_usec = (suseconds_t)((delay_ms % 1000) * 1000);
	src->next_due_ms = now_ms() + delay_ms;
	if (evtimer_add(src->timer, &tv) != 0)
		log_error(src->subject, "cannot arm the poll timer");
}

static bool fast_mode(const struct aws_source *src)
{
	return src->fast || (src->status[0] != '\0' && !steady_status(src->status));
}

/* After a poll: the failover interval while fast, else poll_interval with its jitter. */
static void schedule_next(struct aws_source *src)
{
	int64_t delay;

	if (fast_mode(src)) {
		delay = src->fast_ms;
	} else {
		uint32_t span = 2 * AWS_SOURCE_JITTER_PCT + 1;
		int64_t pct = 100 - AWS_SOURCE_JITTER_PCT + (int64_t)(next_rand(src) % span);
		delay = src->poll_ms * pct / 100;
	}
	arm_in(src, delay);
}

/* ------------------------------------------------------------------------------------------------
 * The end of a poll
 * ---------------------------------------------------------------------------------------------- */

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_source *src = arg;

	(void)fd;
	(void)what;
	/* Nothing of src may be touched after the callback: it may free the source. */
	if (src->outcome_ok) {
		if (src->view_cb != NULL)
			src->view_cb(src->arg, &src->view);
	} else if (src->err_cb != NULL) {
		src->err_cb(src->arg, src->out_code, src->out_msg);
	}
}

static void poll_end(struct aws_source *src)
{
	src->polling = false;
	src->step = STEP_NONE;
	src->req = NULL;
	src->waiting_creds = false;
	cloud_view_free(&src->work);
	src->polls++;
	src->last_end_ms = now_ms();
	schedule_next(src);
	event_active(src->deliver, EV_TIMEOUT, 0);
}

/* True for a word that may carry a credential or an identifier worth hiding: URLs (presigned
 * ones carry a signature), query-string credentials, access key ids, and long hex/UUID ids. */
static bool secret_word(const char *w, size_t n)
{
	static const char *const marks[] = { "://", "X-Amz-", "Signature", "Credential", "Token=",
		                             "AKIA", "ASIA", "RequestId", "requestid", "request-id" };
	char buf[AWS_ERROR_TEXT_MAX + 1];
	size_t hex = 0;

	if (n > AWS_ERROR_TEXT_MAX)
		return true;
	memcpy(buf, w, n);
	buf[n] = '\0';
	for (size_t i = 0; i < ARRAY_LEN(marks); i++)
		if (strstr(buf, marks[i]) != NULL)
			return true;
	for (size_t i = 0; i < n; i++)
		if (isxdigit((unsigned char)w[i]))
			hex++;
	/* 4a3f0c7e-..., or any long run of hex and dashes: request/trace ids. */
	return n >= 16 && hex + 4 >= n && strspn(buf, "0123456789abcdefABCDEF-") == n;
}

void aws_source_error_text(char *dst, size_t len, const char *msg)
{
	size_t out = 0, cap;
	bool after_request_id = false;

	if (len == 0)
		return;
	cap = len - 1 < AWS_ERROR_TEXT_MAX ? len - 1 : AWS_ERROR_TEXT_MAX;
	if (msg == NULL)
		msg = "";
	while (*msg != '\0' && out < cap) {
		size_t n = 0;
		const char *word;

		if (*msg == ' ' || (unsigned char)*msg < 0x20 || (unsigned char)*msg >= 0x7f) {
			unsigned char ch = (unsigned char)*msg++;
			/* Spaces and control characters collapse to one space; other bytes are '?'. */
			if (ch >= 0x80 && ch != 0x7f)
				dst[out++] = '?';
			else if (out > 0 && dst[out - 1] != ' ')
				dst[out++] = ' ';
			continue;
		}
		word = msg;
		while (word[n] > 0x20 && word[n] < 0x7f)
			n++;
		msg += n;
		if (after_request_id || secret_word(word, n)) {
			word = "[redacted]";
			n = strlen(word);
		}
		/* "Request ID: abc": the id is the next word. */
		after_request_id = (n >= 3 && strncasecmp(word + n - 3, "ID:", 3) == 0 &&
		                    out >= 8 && strncasecmp(dst + out - 8, "Request ", 8) == 0);
		if (n > cap - out)
			n = cap - out;
		memcpy(dst + out, word, n);
		out += n;
	}
	while (out > 0 && dst[out - 1] == ' ')
		out--;
	dst[out] = '\0';
}

static void poll_fail(struct aws_source *src, const char *code, const char *msg)
{
	aws_copy_text(src->out_code, sizeof(src->out_code), code);
	aws_source_error_text(src->out_msg, sizeof(src->out_msg), msg);
	src->outcome_ok = false;
	src->failures++;
	src->has_error = true;
	memcpy(src->err_code, src->out_code, sizeof(src->err_code));
	memcpy(src->err_msg, src->out_msg, sizeof(src->err_msg));
	src->err_wall = wall_ms();
	/* A control plane that keeps failing the same way would otherwise fill the log. */
	if (strcmp(src->logged_code, src->out_code) != 0) {
		log_warn(src->subject, "%s: poll failed: %s: %s (keeping the last view; retrying every "
		         "poll, reporting this error once)", src->source, src->out_code, src->out_msg);
		memcpy(src->logged_code, src->out_code, sizeof(src->logged_code));
	} else {
		log_debug(src->subject, "%s: poll failed again: %s: %s", src->source, src->out_code,
		          src->out_msg);
	}
	poll_end(src);
}

static int member_cmp(const void *a, const void *b)
{
	const struct aws_source_member *x = a, *y = b;
	int c = strcmp(x->id, y->id);

	if (c == 0)
		c = strcmp(x->host, y->host);
	if (c == 0)
		c = (int)x->port - (int)y->port;
	return c;
}

/* The scratch view becomes the outcome: members with an endpoint, sorted by id so that the
 * service sees the same order whatever order the API used. */
static void poll_succeed(struct aws_source *src, const char *status)
{
	const struct cloud_view *w = &src->work;
	struct aws_source_member *m;
	char line[sizeof(src->summary)];
	int i, n = 0;
	size_t off;

	m = realloc(src->members, (size_t)(w->nmembers > 0 ? w->nmembers : 1) * sizeof(*m));
	if (m == NULL) {
		poll_fail(src, "Internal", "out of memory");
		return;
	}
	src->members = m;
	for (i = 0; i < w->nmembers; i++) {
		const struct cloud_member *cm = &w->members[i];
		struct aws_source_member *sm;

		if (!has_endpoint(cm))
			continue; /* being created, or not described yet: nothing to connect to */
		sm = &m[n++];
		memset(sm, 0, sizeof(*sm));
		memcpy(sm->id, cm->id, sizeof(sm->id));
		memcpy(sm->host, cm->host, sizeof(sm->host));
		sm->port = cm->port;
		sm->role = cm->role;
		memcpy(sm->status, cm->status, sizeof(sm->status));
		memcpy(sm->group, cm->group, sizeof(sm->group));
		sm->available = member_serves(cm->status);
	}
	qsort(m, (size_t)n, sizeof(*m), member_cmp);
	src->nmembers = n;
	aws_copy_text(src->status, sizeof(src->status), status);
	src->view = (struct aws_source_view){
		.tls = w->tls,
		.nmembers = n,
		.members = m,
		.polled_ms = now_ms(),
	};
	memcpy(src->view.status, src->status, sizeof(src->view.status));
	src->outcome_ok = true;
	src->last_poll_wall = wall_ms();

	if (src->logged_code[0] != '\0') {
		log_info(src->subject, "%s: the control plane answers again", src->source);
		src->logged_code[0] = '\0';
	}
	/* What changed, once: the status, the writer, the membership. */
	off = (size_t)snprintf(line, sizeof(line), "status %s,", src->status);
	for (i = 0; i < n && off < sizeof(line); i++) {
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %s%s%s", m[i].id,
		                        m[i].role == ROLE_WRITER ? "(writer)" : "",
		                        m[i].available ? "" : "(unavailable)");
	}
	if (n == 0 && off < sizeof(line))
		snprintf(line + off, sizeof(line) - off, " no member with an endpoint");
	if (strcmp(line, src->summary) != 0) {
		log_info(src->subject, "%s: %s", src->source, line);
		memcpy(src->summary, line, sizeof(line));
	}
	poll_end(src);
}

/* ------------------------------------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------------------------------- */

static void http_cb(void *arg, const struct aws_response *r);

/* The JSON 1.1 body of MemoryDB DescribeClusters; NULL when out of memory. */
static char *memorydb_body(const struct aws_source *src)
{
	json_t *o = json_pack("{s:s, s:b}", "ClusterName", src->id, "ShowShardDetails", 1);
	char *s;

	if (o == NULL)
		return NULL;
	if (src->token[0] != '\0' && json_object_set_new(o, "NextToken", json_string(src->token)) != 0) {
		json_decref(o);
		return NULL;
	}
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static void send_call(struct aws_source *src, const struct aws_credentials *c)
{
	const char *params[12];
	int np = 0;
	char *json = NULL;
	struct aws_call call = {
		.region = src->call_region,
		.endpoint_url = src->endpoint_url,
		.params = params,
		.creds = c,
	};

#define PARAM(k, v)                                                                                \
	do {                                                                                       \
		params[np++] = (k);                                                                \
		params[np++] = (v);                                                                \
	} while (0)

	switch (src->step) {
	case STEP_RDS_CLUSTERS:
		call.service = "rds";
		call.version = RDS_VERSION;
		call.action = "DescribeDBClusters";
		PARAM("DBClusterIdentifier", src->id);
		break;
	case STEP_RDS_INSTANCES:
		/* Filtered by cluster: the account's other instances are none of our business. */
		call.service = "rds";
		call.version = RDS_VERSION;
		call.action = "DescribeDBInstances";
		PARAM("Filters.Filter.1.Name", "db-cluster-id");
		PARAM("Filters.Filter.1.Values.Value.1", src->id);
		if (src->token[0] != '\0')
			PARAM("Marker", src->token);
		break;
	case STEP_EC_GROUPS:
		call.service = "elasticache";
		call.version = EC_VERSION;
		call.action = "DescribeReplicationGroups";
		PARAM("ReplicationGroupId", src->group);
		break;
	case STEP_EC_NODES:
		call.service = "elasticache";
		call.version = EC_VERSION;
		call.action = "DescribeCacheClusters";
		PARAM("ShowCacheNodeInfo", "true");
		if (!src->nodes_listing)
			PARAM("CacheClusterId", src->work.members[src->targets[src->next_target]].id);
		else if (src->token[0] != '\0')
			PARAM("Marker", src->token);
		break;
	case STEP_GLOBAL:
		call.service = "elasticache";
		call.version = EC_VERSION;
		call.action = "DescribeGlobalReplicationGroups";
		PARAM("GlobalReplicationGroupId", src->id);
		PARAM("ShowMemberInfo", "true");
		break;
	case STEP_MEMORYDB:
		call.service = "memorydb";
		call.action = "DescribeClusters";
		call.target_prefix = "AmazonMemoryDB";
		call.params = NULL;
		json = memorydb_body(src);
		if (json == NULL) {
			poll_fail(src, "Internal", "out of memory");
			return;
		}
		call.json = json;
		break;
	case STEP_NONE:
		return;
	}
#undef PARAM
	params[np] = NULL;
	src->req = aws_http_call(src->http, &call, http_cb, src);
	free(json);
	if (src->req == NULL)
		poll_fail(src, "Internal", "out of memory");
}

static void creds_cb(void *arg, const struct aws_credentials *creds, const char *err)
{
	struct aws_source *src = arg;

	src->waiting_creds = false;
	if (creds == NULL) {
		poll_fail(src, "credentials", err != NULL && err[0] != '\0' ? err : "no credentials");
		return;
	}
	send_call(src, creds);
}

/* Sends the current step's call, with credentials taken just before (a refresh may be due). */
static void poll_step(struct aws_source *src)
{
	const struct aws_credentials *c = aws_creds_current(src->creds);

	if (c != NULL) {
		send_call(src, c);
		return;
	}
	src->waiting_creds = true;
	if (!aws_creds_get(src->creds, creds_cb, src)) {
		src->waiting_creds = false;
		poll_fail(src, "Internal", "out of memory");
	}
}

/* Moves to the next page of a paginated step; false (poll failed) when the pages run away. */
static bool next_page(struct aws_source *src, const char *token)
{
	if (strcmp(token, src->token) == 0) {
		poll_fail(src, "parse", "pagination does not advance (the same marker twice)");
		return false;
	}
	if (++src->pages >= AWS_SOURCE_MAX_PAGES) {
		poll_fail(src, "parse", "more than 100 pages in a listing");
		return false;
	}
	aws_copy_text(src->token, sizeof(src->token), token);
	return true;
}

static void enter_step(struct aws_source *src, enum step s)
{
	src->step = s;
	src->pages = 0;
	src->token[0] = '\0';
}

static int count_lacking(const struct cloud_view *v)
{
	int i, n = 0;

	for (i = 0; i < v->nmembers; i++)
		if (!has_endpoint(&v->members[i]))
			n++;
	return n;
}

/* The final status of a view (global: the datastore's own, unless it is plainly available). */
static const char *view_status(const struct aws_source *src)
{
	if (src->kind == CLOUD_ELASTICACHE_GLOBAL && strcmp(src->global_status, "available") != 0)
		return src->global_status;
	return src->work.status;
}

/* After DescribeReplicationGroups: node endpoints are missing in cluster mode (and for members
 * being created); DescribeCacheClusters has them. */
static void after_ec_groups(struct aws_source *src)
{
	const struct cloud_view *v = &src->work;
	int lacking = count_lacking(v), i, want;

	if (!v->cluster_mode && lacking == 0) {
		poll_succeed(src, view_status(src));
		return;
	}
	if (v->nmembers == 0) {
		poll_succeed(src, view_status(src));
		return;
	}
	src->nodes_lacking = lacking > 0;
	want = lacking > 0 ? lacking : v->nmembers;
	src->nodes_listing = want > AWS_SOURCE_EC_PER_MEMBER_MAX;
	src->ntargets = 0;
	src->next_target = 0;
	for (i = 0; !src->nodes_listing && i < v->nmembers; i++)
		if (lacking == 0 || !has_endpoint(&v->members[i]))
			src->targets[src->ntargets++] = i;
	enter_step(src, STEP_EC_NODES);
	poll_step(src);
}

static void after_ec_nodes(struct aws_source *src)
{
	const struct cloud_view *v = &src->work;

	if (!src->nodes_listing) {
		if (++src->next_target < src->ntargets) {
			poll_step(src);
			return;
		}
	} else if (v->next_token[0] != '\0' && !(src->nodes_lacking && count_lacking(v) == 0)) {
		/* More pages, and still members we have not seen. */
		char token[sizeof(v->next_token)];

		memcpy(token, v->next_token, sizeof(token));
		if (next_page(src, token))
			poll_step(src);
		return;
	}
	poll_succeed(src, view_status(src));
}

/* A MemoryDB page without our cluster: the next one, if the reply names one. */
static void memorydb_not_here(struct aws_source *src, const struct aws_response *r,
                              const char *why)
{
	struct cloud_view scratch;
	char err[256];

	cloud_view_init(&scratch);
	/* The cluster is in the page after all: the shard (or something else) is what failed. */
	if (cloud_parse_memorydb_clusters(r->body, r->body_len, src->id, NULL, &scratch, err,
	                                  sizeof(err)) ||
	    !cloud_parse_memorydb_clusters(r->body, r->body_len, NULL, NULL, &scratch, err,
	                                   sizeof(err)) ||
	    scratch.next_token[0] == '\0') {
		cloud_view_free(&scratch);
		poll_fail(src, "parse", why);
		return;
	}
	if (next_page(src, scratch.next_token))
		poll_step(src);
	cloud_view_free(&scratch);
}

static void http_cb(void *arg, const struct aws_response *r)
{
	struct aws_source *src = arg;
	char err[512];
	bool ok = false;

	src->req = NULL; /* freed by the client once we return */
	if (!r->ok) {
		const char *code = r->error_code[0] != '\0' ? r->error_code : "transport";

		if (creds_rejected(r) && !src->creds_retried) {
			log_info(src->subject, "%s: credentials refused (%s): fetching them anew",
			         src->source, r->error_code);
			src->creds_retried = true;
			aws_creds_invalidate(src->creds);
			poll_step(src);
			return;
		}
		if (strcmp(code, "NoCredentials") == 0) {
			poll_fail(src, "credentials", r->error_message);
		} else if (strcmp(code, "Timeout") == 0 || strcmp(code, "Transport") == 0 ||
		           strcmp(code, "ResponseTooLarge") == 0 || strcmp(code, "transport") == 0) {
			/* no (usable) reply: what the transport said is the message. The status may
			 * be set when the connection broke halfway through a body. */
			snprintf(err, sizeof(err), "%s: %s", code, r->error_message);
			poll_fail(src, "transport", err);
		} else {
			poll_fail(src, code, r->error_message);
		}
		return;
	}

	switch (src->step) {
	case STEP_RDS_CLUSTERS:
		ok = cloud_parse_rds_clusters(r->body, r->body_len, src->id, &src->work, err,
		                              sizeof(err));
		if (!ok)
			break;
		if (src->work.nmembers == 0) {
			poll_succeed(src, view_status(src));
			return;
		}
		enter_step(src, STEP_RDS_INSTANCES);
		poll_step(src);
		return;
	case STEP_RDS_INSTANCES:
		ok = cloud_parse_rds_instances(r->body, r->body_len, &src->work, err, sizeof(err));
		if (!ok)
			break;
		if (src->work.next_token[0] != '\0') {
			char token[sizeof(src->work.next_token)];

			memcpy(token, src->work.next_token, sizeof(token));
			if (next_page(src, token))
				poll_step(src);
			return;
		}
		poll_succeed(src, view_status(src));
		return;
	case STEP_EC_GROUPS:
		ok = cloud_parse_ec_replication_groups(r->body, r->body_len, src->group, src->shard,
		                                       &src->work, err, sizeof(err));
		if (!ok)
			break;
		after_ec_groups(src);
		return;
	case STEP_EC_NODES:
		ok = cloud_parse_ec_cache_clusters(r->body, r->body_len, &src->work, err, sizeof(err));
		if (!ok)
			break;
		after_ec_nodes(src);
		return;
	case STEP_GLOBAL: {
		int w;

		ok = cloud_parse_ec_global_groups(r->body, r->body_len, src->id, &src->work, err,
		                                  sizeof(err));
		if (!ok)
			break;
		w = cloud_view_writer(&src->work);
		if (w < 0) {
			snprintf(err, sizeof(err), "global datastore '%s' has no single PRIMARY member",
			         src->id);
			ok = false;
			break;
		}
		/* The rest of the poll asks the primary's own region about its own group. */
		aws_copy_text(src->group, sizeof(src->group), src->work.members[w].id);
		aws_copy_text(src->call_region, sizeof(src->call_region), src->work.members[w].region);
		memcpy(src->global_status, src->work.status, sizeof(src->global_status));
		cloud_view_free(&src->work);
		enter_step(src, STEP_EC_GROUPS);
		poll_step(src);
		return;
	}
	case STEP_MEMORYDB:
		ok = cloud_parse_memorydb_clusters(r->body, r->body_len, src->id, src->shard,
		                                   &src->work, err, sizeof(err));
		if (!ok) {
			memorydb_not_here(src, r, err);
			return;
		}
		/* With ClusterName, the page that has the cluster is the only one that matters. */
		poll_succeed(src, view_status(src));
		return;
	case STEP_NONE:
		return;
	}
	if (!ok)
		poll_fail(src, "parse", err);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_source *src = arg;

	(void)fd;
	(void)what;
	if (src->polling)
		return;
	src->polling = true;
	src->creds_retried = false;
	cloud_view_free(&src->work);
	memcpy(src->call_region, src->region, sizeof(src->call_region));
	src->global_status[0] = '\0';
	switch (src->kind) {
	case CLOUD_RDS:
		enter_step(src, STEP_RDS_CLUSTERS);
		break;
	case CLOUD_ELASTICACHE:
		aws_copy_text(src->group, sizeof(src->group), src->id);
		enter_step(src, STEP_EC_GROUPS);
		break;
	case CLOUD_ELASTICACHE_GLOBAL:
		enter_step(src, STEP_GLOBAL);
		break;
	case CLOUD_MEMORYDB:
		enter_step(src, STEP_MEMORYDB);
		break;
	case CLOUD_NONE:
		src->polling = false;
		return;
	}
	poll_step(src);
}

/* ------------------------------------------------------------------------------------------------
 * API
 * ---------------------------------------------------------------------------------------------- */

struct aws_source *aws_source_new(struct event_base *base, const struct aws_config *aws,
                                  const char *source, const char *shard, const char *subject,
                                  aws_source_view_cb view_cb, aws_source_error_cb err_cb, void *arg)
{
	struct aws_source *src = calloc(1, sizeof(*src));

	if (src == NULL)
		return NULL;
	src->base = base;
	aws_copy_text(src->source, sizeof(src->source), source ? source : "");
	aws_copy_text(src->subject, sizeof(src->subject), subject ? subject : "aws");
	src->view_cb = view_cb;
	src->err_cb = err_cb;
	src->arg = arg;
	src->poll_ms = aws && aws->poll_interval_ms > 0 ? aws->poll_interval_ms
	                                                 : AWS_SOURCE_DEFAULT_POLL_MS;
	src->fast_ms = aws && aws->failover_poll_interval_ms > 0 ? aws->failover_poll_interval_ms
	                                                          : AWS_SOURCE_DEFAULT_FAST_MS;
	src->shard = dup_or_null(shard);
	if (aws != NULL) {
		src->http_opts.timeout_ms = aws->request_timeout_ms;
		src->http_opts.max_attempts = aws->max_attempts;
		src->endpoint_url = dup_or_null(aws->endpoint_url);
		src->profile = dup_or_null(aws->profile);
		src->region_cfg = dup_or_null(aws->region);
	}
	src->rng = (uint64_t)now_us() ^ ((uint64_t)(uintptr_t)src << 16) ^ 0x9E3779B97F4A7C15ULL;
	if (src->rng == 0)
		src->rng = 1;
	cloud_view_init(&src->work);
	src->timer = evtimer_new(base, timer_cb, src);
	src->deliver = event_new(base, -1, 0, deliver_cb, src);
	if (src->timer == NULL || src->deliver == NULL ||
	    (shard != NULL && shard[0] != '\0' && src->shard == NULL) ||
	    (aws != NULL && aws->endpoint_url != NULL && aws->endpoint_url[0] != '\0' &&
	     src->endpoint_url == NULL) ||
	    (aws != NULL && aws->profile != NULL && aws->profile[0] != '\0' && src->profile == NULL) ||
	    (aws != NULL && aws->region != NULL && aws->region[0] != '\0' && src->region_cfg == NULL)) {
		aws_source_free(src);
		return NULL;
	}
	return src;
}

/* "KIND:ID" -> kind and id; false with a reason. */
static bool parse_source(struct aws_source *src, char *why, size_t whylen)
{
	static const struct {
		const char *name;
		enum cloud_kind kind;
	} kinds[] = {{"rds", CLOUD_RDS},
	             {"elasticache", CLOUD_ELASTICACHE},
	             {"elasticache-global", CLOUD_ELASTICACHE_GLOBAL},
	             {"memorydb", CLOUD_MEMORYDB}};
	const char *colon = strchr(src->source, ':'), *id, *s;
	size_t i;

	if (colon == NULL) {
		snprintf(why, whylen, "expected KIND:ID, got '%s'", src->source);
		return false;
	}
	for (i = 0; i < ARRAY_LEN(kinds); i++)
		if (strlen(kinds[i].name) == (size_t)(colon - src->source) &&
		    strncmp(src->source, kinds[i].name, (size_t)(colon - src->source)) == 0)
			src->kind = kinds[i].kind;
	if (src->kind == CLOUD_NONE) {
		snprintf(why, whylen, "unknown source kind in '%s'", src->source);
		return false;
	}
	id = colon + 1;
	if (id[0] == '\0' || strlen(id) >= sizeof(src->id)) {
		snprintf(why, whylen, "bad ID in '%s'", src->source);
		return false;
	}
	/* The ID goes into request parameters and the JSON body: the config's characters only. */
	for (s = id; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '_' || *s == '.')) {
			snprintf(why, whylen, "bad character in the ID of '%s'", src->source);
			return false;
		}
	memcpy(src->id, id, strlen(id) + 1);
	if (src->shard != NULL && src->kind == CLOUD_RDS) {
		snprintf(why, whylen, "shard does not apply to rds sources");
		return false;
	}
	return true;
}

bool aws_source_start(struct aws_source *src)
{
	struct aws_creds_options copts = {0};
	char why[512];
	const char *region;

	if (src->started)
		return true;
	if (!parse_source(src, why, sizeof(why))) {
		log_error(src->subject, "source: %s", why);
		return false;
	}
	src->http = aws_http_new(src->base, &src->http_opts);
	if (src->http == NULL) {
		log_error(src->subject, "%s: cannot set up the AWS client", src->source);
		return false;
	}
	copts.profile = src->profile;
	copts.region = src->region_cfg;
	src->creds = aws_creds_new(src->http, &copts, why, sizeof(why));
	if (src->creds == NULL) {
		log_error(src->subject, "%s: no AWS credentials: %s", src->source, why);
		aws_http_free(src->http);
		src->http = NULL;
		return false;
	}
	region = src->region_cfg != NULL ? src->region_cfg : aws_creds_region(src->creds);
	if (region == NULL || region[0] == '\0' || !aws_valid_name(region) ||
	    strlen(region) >= sizeof(src->region)) {
		if (region == NULL || region[0] == '\0')
			log_error(src->subject, "%s: no AWS region: set [aws] region, AWS_REGION or "
			          "the profile's region", src->source);
		else
			log_error(src->subject, "%s: bad AWS region '%s'", src->source, region);
		aws_creds_free(src->creds);
		aws_http_free(src->http);
		src->creds = NULL;
		src->http = NULL;
		return false;
	}
	memcpy(src->region, region, strlen(region) + 1);
	src->started = true;
	log_info(src->subject, "%s: following through the AWS control plane (region %s%s%s, "
	         "credentials from %s, every %lld ms, %lld ms while failing over)",
	         src->source, src->region, src->endpoint_url ? ", endpoint " : "",
	         src->endpoint_url ? src->endpoint_url : "",
	         aws_creds_source_name(aws_creds_source(src->creds)), (long long)src->poll_ms,
	         (long long)src->fast_ms);
	arm_in(src, 0);
	return true;
}

void aws_source_set_fast(struct aws_source *src, bool fast)
{
	bool was = src->fast;

	src->fast = fast;
	/* Only sooner, never later: a poll under way schedules its successor when it ends, and a
	 * pending slow poll moves up to one failover interval after the last. */
	if (!fast || was || !src->started || src->polling)
		return;
	if (src->last_end_ms + src->fast_ms < src->next_due_ms)
		arm_in(src, src->last_end_ms + src->fast_ms - now_ms());
}

void aws_source_poll_now(struct aws_source *src)
{
	if (!src->started || src->polling)
		return;
	arm_in(src, 0);
}

json_t *aws_source_status(const struct aws_source *src)
{
	json_t *o = json_object(), *err;

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "source", json_string(src->source));
	if (src->shard != NULL)
		json_object_set_new(o, "shard", json_string(src->shard));
	json_object_set_new(o, "region", src->region[0] ? json_string(src->region) : json_null());
	json_object_set_new(o, "status", src->status[0] ? json_string(src->status) : json_null());
	json_object_set_new(o, "last_poll_at", time_json(src->last_poll_wall));
	if (src->has_error) {
		err = json_object();
		json_object_set_new(err, "code", json_string(src->err_code));
		json_object_set_new(err, "message", json_string(src->err_msg));
		json_object_set_new(err, "at", time_json(src->err_wall));
		json_object_set_new(o, "last_error", err);
	} else {
		json_object_set_new(o, "last_error", json_null());
	}
	json_object_set_new(o, "polls", json_integer((json_int_t)src->polls));
	json_object_set_new(o, "failures", json_integer((json_int_t)src->failures));
	json_object_set_new(o, "throttles", json_integer((json_int_t)aws_source_throttles(src)));
	json_object_set_new(o, "retries", json_integer((json_int_t)aws_source_retries(src)));
	json_object_set_new(o, "last_backoff_ms", json_integer(aws_source_last_backoff_ms(src)));
	json_object_set_new(o, "credentials",
	                    json_string(aws_creds_source_name(src->creds ? aws_creds_source(src->creds)
	                                                                 : AWS_CREDS_NONE)));
	return o;
}

uint64_t aws_source_polls(const struct aws_source *src)
{
	return src->polls;
}

uint64_t aws_source_failures(const struct aws_source *src)
{
	return src->failures;
}

uint64_t aws_source_throttles(const struct aws_source *src)
{
	return src->http ? aws_http_get_stats(src->http)->throttles : 0;
}

uint64_t aws_source_retries(const struct aws_source *src)
{
	return src->http ? aws_http_get_stats(src->http)->retries : 0;
}

int64_t aws_source_last_backoff_ms(const struct aws_source *src)
{
	return src->http ? aws_http_get_stats(src->http)->last_backoff_ms : -1;
}

void aws_source_free(struct aws_source *src)
{
	if (src == NULL)
		return;
	if (src->timer != NULL)
		event_free(src->timer);
	if (src->deliver != NULL)
		event_free(src->deliver);
	/* The credentials first: they use the client. Both cancel what is pending, callbacks
	 * included. */
	if (src->creds != NULL)
		aws_creds_free(src->creds);
	if (src->http != NULL)
		aws_http_free(src->http);
	cloud_view_free(&src->work);
	free(src->members);
	free(src->shard);
	free(src->endpoint_url);
	free(src->profile);
	free(src->region_cfg);
	free(src);
}
