/* drill/aws.c - failing over through the AWS control plane.
 *
 *   preflight   Describe* once: the cluster must be available, the target a replica / the shard
 *               a shard of it; ElastiCache/MemoryDB test failovers are counted against the ledger
 *   failover    FailoverDBCluster | TestFailover | FailoverGlobalReplicationGroup | FailoverShard
 *   watch       Describe* every [aws] failover_poll_interval until the cluster is available again
 *               with another writer (or, where the API names no roles, after it left "available")
 *
 * Requests go through aws/http (curl multi on the loop, SigV4, retries with backoff for
 * throttling and 5xx) with credentials from aws/creds. An error of the failover call ends the
 * drill at once (load stopped, the code and message in the report): nothing was changed, since
 * AWS either starts the failover or refuses it. The ledger is a small JSON file (see
 * drill_ledger_path) because AWS allows 15 node-group test failovers per rolling 24 hours and
 * says so only by refusing. */
#include "drill/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "aws/creds.h"
#include "aws/http.h"
#include "sources/cloud.h"

#define RDS_VERSION "2014-10-31"
#define EC_VERSION "2015-02-02"
#define LEDGER_LIMIT 15
#define LEDGER_WINDOW_MS (24LL * 3600 * 1000)

enum aws_stage { AWS_ST_PREFLIGHT, AWS_ST_FAILOVER, AWS_ST_POLL };

struct drill_aws {
	struct drill *d;
	struct aws_http *http;
	struct aws_creds *creds;
	struct aws_http_req *req;
	enum aws_stage stage;
	char region[32];
	char shard[64];
	char target[128];           /* instance / group to promote, "" for AWS's choice */
	char target_region[32];
	char old_writer[128];       /* the control plane's writer before the failover */
	bool roles_known;           /* the Describe* reply names a writer */
	bool saw_unavailable;
	struct event *poll;
	char ledger[1024];
	const char *ledger_api;     /* "elasticache" / "memorydb" for the ledger, NULL otherwise */
};

/* ---- the ledger ------------------------------------------------------------------------------- */

void drill_ledger_path(const char *opt, char *buf, size_t len)
{
	const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (opt != NULL)
		snprintf(buf, len, "%s", opt);
	else if (state != NULL && state[0] == '/')
		snprintf(buf, len, "%s/repoint/testfailover.json", state);
	else
		snprintf(buf, len, "%s/.local/state/repoint/testfailover.json", home != NULL ? home : "/tmp");
}

static json_t *ledger_load(const char *path)
{
	json_t *j = json_load_file(path, 0, NULL);

	if (!json_is_array(json_object_get(j, "entries"))) {
		json_decref(j);
		j = json_pack("{s:[]}", "entries");
	}
	return j;
}

int drill_ledger_count(const char *path, const char *api, int64_t now_wall_ms)
{
	json_t *j = ledger_load(path), *e;
	size_t i;
	int n = 0;

	json_array_foreach(json_object_get(j, "entries"), i, e) {
		const char *a = json_string_value(json_object_get(e, "api"));
		if (a != NULL && strcmp(a, api) == 0 && json_integer_value(json_object_get(e, "at")) > now_wall_ms - LEDGER_WINDOW_MS)
			n++;
	}
	json_decref(j);
	return n;
}

/* mkdir -p of the directories above path. */
static void ledger_mkdirs(const char *path)
{
	char dir[1024];

	snprintf(dir, sizeof(dir), "%s", path);
	for (char *s = dir + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return;
		*s = '/';
	}
}

bool drill_ledger_add(const char *path, const char *api, const char *what, int64_t now_wall_ms)
{
	json_t *j = ledger_load(path), *kept = json_array(), *e;
	char tmp[1100];
	size_t i;
	bool ok;

	/* Entries older than the window say nothing any more: dropped, so the file stays small. */
	json_array_foreach(json_object_get(j, "entries"), i, e)
		if (json_integer_value(json_object_get(e, "at")) > now_wall_ms - LEDGER_WINDOW_MS)
			json_array_append(kept, e);
	json_array_append_new(kept, json_pack("{s:I, s:s, s:s}", "at", (json_int_t)now_wall_ms, "api", api, "what", what));
	json_object_set_new(j, "entries", kept);
	ledger_mkdirs(path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	ok = json_dump_file(j, tmp, JSON_INDENT(2)) == 0 && rename(tmp, path) == 0;
	json_decref(j);
	return ok;
}

/* ---- calls ------------------------------------------------------------------------------------ */

static void aws_http_done(void *arg, const struct aws_response *r);

static const char *service_of(const struct drill *d)
{
	switch (d->fo_kind) {
	case DRILL_FO_RDS:
		return "rds";
	case DRILL_FO_MEMORYDB:
		return "memorydb";
	default:
		return "elasticache";
	}
}

/* The call of the current stage: action, Query params or a JSON body. */
struct aws_call_spec {
	const char *action;
	const char *params[12];
	char *json;
};

static void call_spec(struct drill_aws *a, struct aws_call_spec *s)
{
	struct drill *d = a->d;
	int np = 0;
	bool describe = a->stage != AWS_ST_FAILOVER;

	memset(s, 0, sizeof(*s));
#define PARAM(k, v)                                                                                \
	do {                                                                                       \
		s->params[np++] = (k);                                                             \
		s->params[np++] = (v);                                                             \
	} while (0)
	switch (d->fo_kind) {
	case DRILL_FO_RDS:
		s->action = describe ? "DescribeDBClusters" : "FailoverDBCluster";
		PARAM("DBClusterIdentifier", d->source_id);
		if (!describe && a->target[0] != '\0')
			PARAM("TargetDBInstanceIdentifier", a->target);
		break;
	case DRILL_FO_ELASTICACHE:
		s->action = describe ? "DescribeReplicationGroups" : "TestFailover";
		PARAM("ReplicationGroupId", d->source_id);
		if (!describe)
			PARAM("NodeGroupId", a->shard);
		break;
	case DRILL_FO_GLOBAL:
		s->action = describe ? "DescribeGlobalReplicationGroups" : "FailoverGlobalReplicationGroup";
		PARAM("GlobalReplicationGroupId", d->source_id);
		if (describe) {
			PARAM("ShowMemberInfo", "true");
		} else {
			PARAM("PrimaryRegion", a->target_region);
			PARAM("PrimaryReplicationGroupId", a->target);
		}
		break;
	case DRILL_FO_MEMORYDB: {
		json_t *b = describe ? json_pack("{s:s, s:b}", "ClusterName", d->source_id, "ShowShardDetails", 1)
				     : json_pack("{s:s, s:s}", "ClusterName", d->source_id, "ShardName", a->shard);
		s->action = describe ? "DescribeClusters" : "FailoverShard";
		s->json = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
		json_decref(b);
		break;
	}
	case DRILL_FO_STATIC:
		break;
	}
#undef PARAM
	s->params[np] = NULL;
}

/* "POST https://rds.us-east-1.amazonaws.com/ Action=...&Version=...&k=v": what the dry run
 * prints and the report keeps. */
static void call_text(struct drill_aws *a, const struct aws_call_spec *s, char *buf, size_t len)
{
	struct drill *d = a->d;
	char url[512];

	if (d->aws != NULL && d->aws->endpoint_url != NULL)
		snprintf(url, sizeof(url), "%s%s", d->aws->endpoint_url,
			 d->aws->endpoint_url[strlen(d->aws->endpoint_url) - 1] == '/' ? "" : "/");
	else if (!aws_endpoint_url(service_of(d), a->region, url, sizeof(url)))
		snprintf(url, sizeof(url), "https://(%s endpoint of %s)/", service_of(d), a->region);
	if (d->fo_kind == DRILL_FO_MEMORYDB) {
		snprintf(buf, len, "POST %s X-Amz-Target: AmazonMemoryDB.%s %s", url, s->action, s->json ? s->json : "{}");
	} else {
		char *form = aws_form_encode(s->action, d->fo_kind == DRILL_FO_RDS ? RDS_VERSION : EC_VERSION, s->params);
		snprintf(buf, len, "POST %s %s", url, form != NULL ? form : "?");
		free(form);
	}
}

static void send_call(struct drill_aws *a, const struct aws_credentials *c)
{
	struct drill *d = a->d;
	struct aws_call_spec s;
	struct aws_call call;

	call_spec(a, &s);
	memset(&call, 0, sizeof(call));
	call.service = service_of(d);
	call.region = a->region;
	call.endpoint_url = d->aws != NULL ? d->aws->endpoint_url : NULL;
	call.action = s.action;
	call.creds = c;
	if (d->fo_kind == DRILL_FO_MEMORYDB) {
		call.target_prefix = "AmazonMemoryDB";
		call.json = s.json;
	} else {
		call.version = d->fo_kind == DRILL_FO_RDS ? RDS_VERSION : EC_VERSION;
		call.params = s.params;
	}
	/* A failover is not retried blindly: a timeout may hide one that started. */
	if (a->stage == AWS_ST_FAILOVER)
		call.max_attempts = 1;
	a->req = aws_http_call(a->http, &call, aws_http_done, a);
	free(s.json);
	if (a->req == NULL)
		drill_fail(d, a->stage == AWS_ST_PREFLIGHT ? "refused" : "failed", "Internal", "out of memory");
}

static void creds_done(void *arg, const struct aws_credentials *creds, const char *err)
{
	struct drill_aws *a = arg;

	if (creds == NULL) {
		drill_fail(a->d, a->stage == AWS_ST_FAILOVER ? "failed" : "refused", "Credentials", "%s",
			   err != NULL && err[0] != '\0' ? err : "no AWS credentials");
		return;
	}
	send_call(a, creds);
}

static void call_now(struct drill_aws *a)
{
	const struct aws_credentials *c = aws_creds_current(a->creds);

	if (c != NULL) {
		send_call(a, c);
		return;
	}
	if (!aws_creds_get(a->creds, creds_done, a))
		drill_fail(a->d, "failed", "Internal", "out of memory");
}

/* ---- the replies ------------------------------------------------------------------------------ */

static bool parse_view(struct drill_aws *a, const struct aws_response *r, struct cloud_view *v, char *err, size_t len)
{
	struct drill *d = a->d;

	switch (d->fo_kind) {
	case DRILL_FO_RDS:
		return cloud_parse_rds_clusters(r->body, r->body_len, d->source_id, v, err, len);
	case DRILL_FO_ELASTICACHE:
		return cloud_parse_ec_replication_groups(r->body, r->body_len, d->source_id, NULL, v, err, len);
	case DRILL_FO_GLOBAL:
		return cloud_parse_ec_global_groups(r->body, r->body_len, d->source_id, v, err, len);
	case DRILL_FO_MEMORYDB:
		return cloud_parse_memorydb_clusters(r->body, r->body_len, d->source_id, NULL, v, err, len);
	case DRILL_FO_STATIC:
		break;
	}
	return false;
}

static bool status_available(const char *st)
{
	/* A global datastore whose secondaries are still joining is "primary-only" yet serves. */
	return strcmp(st, "available") == 0 || strcmp(st, "primary-only") == 0;
}

static bool group_exists(const struct cloud_view *v, const char *id)
{
	for (int i = 0; i < v->ngroups; i++)
		if (strcasecmp(v->groups[i].id, id) == 0)
			return true;
	return v->ngroups == 0;
}

static void group_list(const struct cloud_view *v, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < v->ngroups && off + 1 < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", v->groups[i].id);
}

/* The preflight's checks on the cluster as Describe* shows it; false with the refusal. */
static bool preflight_check(struct drill_aws *a, const struct cloud_view *v, char *err, size_t len)
{
	struct drill *d = a->d;
	int w = cloud_view_writer(v), t;
	char list[600];

	if (!status_available(v->status)) {
		snprintf(err, len, "%s %s is %s, not available: a failover now would be refused or pile up", service_of(d),
			 d->source_id, v->status[0] ? v->status : "in an unknown state");
		return false;
	}
	a->roles_known = w >= 0;
	snprintf(a->old_writer, sizeof(a->old_writer), "%s", w >= 0 ? v->members[w].id : "");
	switch (d->fo_kind) {
	case DRILL_FO_RDS:
		if (a->target[0] == '\0')
			return true;
		t = cloud_view_find(v, a->target);
		if (t < 0) {
			snprintf(err, len, "--target %s is not an instance of cluster %s", a->target, d->source_id);
			return false;
		}
		if (v->members[t].role != ROLE_READER) {
			snprintf(err, len, "--target %s is not a replica of cluster %s (it is the %s)", a->target,
				 d->source_id, role_name(v->members[t].role));
			return false;
		}
		return true;
	case DRILL_FO_ELASTICACHE:
	case DRILL_FO_MEMORYDB:
		if (!group_exists(v, a->shard)) {
			group_list(v, list, sizeof(list));
			snprintf(err, len, "%s %s has no shard %s (shards: %s)", service_of(d), d->source_id, a->shard, list);
			return false;
		}
		return true;
	case DRILL_FO_GLOBAL:
		/* Default: the first secondary member. */
		for (int i = 0; i < v->nmembers; i++) {
			const struct cloud_member *m = &v->members[i];
			bool match = (a->target[0] == '\0' || strcasecmp(m->id, a->target) == 0) &&
				     (a->target_region[0] == '\0' || strcmp(m->region, a->target_region) == 0);
			if (!match)
				continue;
			if (m->role == ROLE_WRITER && a->target[0] == '\0' && a->target_region[0] == '\0')
				continue;  /* no choice given: the first secondary */
			if (m->role == ROLE_WRITER) {
				snprintf(err, len, "%s in %s is the primary of global datastore %s already", m->id, m->region,
					 d->source_id);
				return false;
			}
			snprintf(a->target, sizeof(a->target), "%s", m->id);
			snprintf(a->target_region, sizeof(a->target_region), "%s", m->region);
			return true;
		}
		snprintf(err, len, "global datastore %s has no secondary member%s%s%s%s", d->source_id,
			 a->target[0] ? " " : "", a->target, a->target_region[0] ? " in " : "", a->target_region);
		return false;
	case DRILL_FO_STATIC:
		break;
	}
	return true;
}

static void schedule_poll(struct drill_aws *a)
{
	int64_t ms = a->d->aws != NULL && a->d->aws->failover_poll_interval_ms > 0 ? a->d->aws->failover_poll_interval_ms
										  : 1000;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	evtimer_add(a->poll, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill_aws *a = arg;

	(void)fd;
	(void)what;
	if (!a->d->finished)
		call_now(a);
}

static void on_poll(struct drill_aws *a, const struct aws_response *r)
{
	struct drill *d = a->d;
	struct cloud_view v;
	char err[300], detail[300];
	int w;

	cloud_view_init(&v);
	if (!r->ok || !parse_view(a, r, &v, err, sizeof(err))) {
		/* A failed poll is no verdict: the next one may work (the drill's timeout bounds it). */
		cloud_view_free(&v);
		schedule_poll(a);
		return;
	}
	w = cloud_view_writer(&v);
	if (!status_available(v.status))
		a->saw_unavailable = true;
	if (status_available(v.status) &&
	    ((a->roles_known && w >= 0 && strcasecmp(v.members[w].id, a->old_writer) != 0) ||
	     (!a->roles_known && (a->saw_unavailable || d->new_writer_seen)))) {
		if (w >= 0)
			snprintf(detail, sizeof(detail), "%s %s is %s, writer %s", service_of(d), d->source_id, v.status,
				 v.members[w].id);
		else
			snprintf(detail, sizeof(detail), "%s %s is %s", service_of(d), d->source_id, v.status);
		json_object_set_new(d->failover, "control_plane_writer", w >= 0 ? json_string(v.members[w].id) : json_null());
		cloud_view_free(&v);
		drill_cluster_available(d, detail);
		return;
	}
	cloud_view_free(&v);
	schedule_poll(a);
}

static void aws_http_done(void *arg, const struct aws_response *r)
{
	struct drill_aws *a = arg;
	struct drill *d = a->d;
	struct cloud_view v;
	char err[600], what[300];

	a->req = NULL;
	if (d->finished)
		return;
	switch (a->stage) {
	case AWS_ST_PREFLIGHT:
		if (!r->ok) {
			drill_fail(d, "refused", r->error_code, "%s (Describe* of %s)", r->error_message, d->source_id);
			return;
		}
		cloud_view_init(&v);
		if (!parse_view(a, r, &v, err, sizeof(err)) || !preflight_check(a, &v, err, sizeof(err))) {
			cloud_view_free(&v);
			drill_fail(d, "refused", "PreflightFailed", "%s", err);
			return;
		}
		cloud_view_free(&v);
		{
			struct aws_call_spec s;
			char text[1200];
			a->stage = AWS_ST_FAILOVER;
			call_spec(a, &s);
			call_text(a, &s, text, sizeof(text));
			free(s.json);
			json_array_append_new(json_object_get(d->failover, "calls"), json_string(text));
			json_object_set_new(d->failover, "method", json_string(s.action));
			json_object_set_new(d->failover, "region", json_string(a->region));
			if (a->old_writer[0] != '\0')
				json_object_set_new(d->failover, "from", json_string(a->old_writer));
			if (a->target[0] != '\0')
				json_object_set_new(d->failover, "to", json_string(a->target));
		}
		drill_preflight_ok(d);
		return;
	case AWS_ST_FAILOVER:
		snprintf(what, sizeof(what), "%s", json_string_value(json_object_get(d->failover, "method")));
		if (r->request_id[0] != '\0')
			json_object_set_new(d->failover, "request_id", json_string(r->request_id));
		if (!r->ok) {
			snprintf(err, sizeof(err), "HTTP %ld %s: %s", r->status, r->error_code, r->error_message);
			drill_step(d, NULL, what, false, err);
			drill_mark(d, "api_answered", false, "%s: %s%s%s", r->error_code, r->error_message,
				   r->request_id[0] ? " request id " : "", r->request_id);
			drill_fail(d, "failed", r->error_code, "%s", r->error_message);
			return;
		}
		drill_step(d, NULL, what, true, r->request_id[0] ? r->request_id : "ok");
		if (a->ledger_api != NULL) {
			char entry[300];
			snprintf(entry, sizeof(entry), "%s/%s", d->source_id, a->shard);
			if (!drill_ledger_add(a->ledger, a->ledger_api, entry, wall_ms()))
				json_array_append_new(json_object_get(d->failover, "notes"),
						      json_sprintf("could not update the ledger %s", a->ledger));
		}
		a->stage = AWS_ST_POLL;
		drill_answered(d, r->request_id, "the control plane accepted the failover");
		/* Nothing more to run on our side: the control plane does the rest. */
		drill_failover_done(d);
		schedule_poll(a);
		return;
	case AWS_ST_POLL:
		on_poll(a, r);
		return;
	}
}

void drill_aws_preflight(struct drill *d)
{
	struct drill_aws *a = calloc(1, sizeof(*a));
	struct aws_creds_options copts = {0};
	const char *region;
	char err[512];

	if (a == NULL) {
		drill_fail(d, "refused", "Internal", "out of memory");
		return;
	}
	d->awsd = a;
	a->d = d;
	a->stage = AWS_ST_PREFLIGHT;
	snprintf(a->target, sizeof(a->target), "%s", d->o.target != NULL ? d->o.target : "");
	snprintf(a->target_region, sizeof(a->target_region), "%s", d->o.target_region != NULL ? d->o.target_region : "");
	snprintf(a->shard, sizeof(a->shard), "%s",
		 d->o.shard != NULL ? d->o.shard : d->scfg->shard != NULL ? d->scfg->shard : "0001");
	a->poll = evtimer_new(d->base, poll_cb, a);
	{
		struct aws_http_options ho = {.timeout_ms = d->aws != NULL ? d->aws->request_timeout_ms : 0,
					      .max_attempts = d->aws != NULL ? d->aws->max_attempts : 0};
		a->http = aws_http_new(d->base, &ho);
	}
	if (a->poll == NULL || a->http == NULL) {
		drill_fail(d, "refused", "Internal", "cannot set up the AWS client");
		return;
	}
	copts.profile = d->aws != NULL ? d->aws->profile : NULL;
	copts.region = d->aws != NULL ? d->aws->region : NULL;
	a->creds = aws_creds_new(a->http, &copts, err, sizeof(err));
	if (a->creds == NULL) {
		drill_fail(d, "refused", "Credentials", "no AWS credentials: %s", err);
		return;
	}
	region = copts.region != NULL ? copts.region : aws_creds_region(a->creds);
	if (region == NULL || region[0] == '\0' || !aws_valid_name(region) || strlen(region) >= sizeof(a->region)) {
		drill_fail(d, "refused", "NoRegion", "no AWS region: set [aws] region, AWS_REGION or the profile's region");
		return;
	}
	snprintf(a->region, sizeof(a->region), "%s", region);
	if (d->fo_kind == DRILL_FO_ELASTICACHE || d->fo_kind == DRILL_FO_MEMORYDB) {
		int n;
		a->ledger_api = d->fo_kind == DRILL_FO_ELASTICACHE ? "elasticache" : "memorydb";
		drill_ledger_path(d->o.ledger_path, a->ledger, sizeof(a->ledger));
		n = drill_ledger_count(a->ledger, a->ledger_api, wall_ms());
		json_object_set_new(d->failover, "ledger",
				    json_pack("{s:s, s:i, s:i}", "path", a->ledger, "count_24h", n, "limit", LEDGER_LIMIT));
		if (n >= LEDGER_LIMIT && !d->o.dry_run) {
			drill_fail(d, "refused", "TestFailoverLedgerFull",
				   "%d %s test failovers in the last 24 hours (ledger %s): AWS allows %d per rolling 24 h",
				   n, a->ledger_api, a->ledger, LEDGER_LIMIT);
			return;
		}
	}
	call_now(a);
}

void drill_aws_start(struct drill *d)
{
	struct drill_aws *a = d->awsd;

	drill_requested(d);
	call_now(a);
}

void drill_aws_free(struct drill *d)
{
	struct drill_aws *a = d->awsd;

	if (a == NULL)
		return;
	if (a->req != NULL)
		aws_http_cancel(a->req);
	if (a->creds != NULL) {
		aws_creds_cancel(a->creds, a);
		aws_creds_free(a->creds);
	}
	if (a->http != NULL)
		aws_http_free(a->http);
	if (a->poll != NULL)
		event_free(a->poll);
	free(a);
	d->awsd = NULL;
}
