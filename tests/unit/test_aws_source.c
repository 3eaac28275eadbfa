/* test_aws_source.c - the AWS source poller (sources/aws_source) on a real loop.
 *
 * A fake control plane (libevent's evhttp on 127.0.0.1:0, in this process, on the same loop)
 * answers the Query and JSON 1.1 calls with the recorded bodies of tests/unit/data/aws/; the
 * sources reach it through [aws] endpoint_url, signed with static keys from the environment. Every
 * wait runs the loop until a condition holds or a deadline passes: never a fixed sleep. */
#include <check.h>

#include "testdata.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "aws/creds.h"
#include "config.h"
#include "sources/aws_source.h"
#include "util.h"


static char *load(const char *name)
{
	return testdata_load(name, NULL);
}

/* A copy of s with the first `from` replaced by `to` (which must be there). */
static char *replace_once(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
	char *out = malloc(n);

	ck_assert_msg(p != NULL, "'%s' not found", from);
	ck_assert_ptr_nonnull(out);
	snprintf(out, n, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
	return out;
}

/* ================================================================================================
 * The fake control plane
 * ============================================================================================== */

enum action { A_DBCLUSTERS, A_DBINSTANCES, A_RGROUPS, A_CCLUSTERS, A_GLOBAL, A_MEMDB, A_OTHER,
              NACT };

struct fake {
	struct evhttp *http;
	char url[64];
	int hits[NACT];
	char auth[NACT][512];       /* the last Authorization header per action */
	char last[NACT][1024];      /* the last request body per action */
	char target[128];
	char cc_log[4096];          /* DescribeCacheClusters bodies, ' | '-joined */
	char *body[NACT];           /* overrides (owned); NULL: the recorded default */
	int code[NACT];             /* with an override: its HTTP status (0: 200) */
	int fail_next;              /* the next this many requests get a 500 */
	int throttle_next;          /* ... a Throttling error */
	int expired_next;           /* ... an ExpiredToken error */
	bool hang;                  /* never answer */
	bool mdb_paged;             /* MemoryDB: a first page without the cluster */
};

static void reply(struct evhttp_request *req, int code, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, body, strlen(body));
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
	evbuffer_free(b);
}

static void reply_file(struct evhttp_request *req, int code, const char *name)
{
	char *b = load(name);

	reply(req, code, b);
	free(b);
}

static enum action action_of(const char *body, const char *target)
{
	static const char *const names[] = {
		[A_DBCLUSTERS] = "Action=DescribeDBClusters&",
		[A_DBINSTANCES] = "Action=DescribeDBInstances&",
		[A_RGROUPS] = "Action=DescribeReplicationGroups&",
		[A_CCLUSTERS] = "Action=DescribeCacheClusters&",
		[A_GLOBAL] = "Action=DescribeGlobalReplicationGroups&",
	};
	int i;

	if (strcmp(target, "AmazonMemoryDB.DescribeClusters") == 0)
		return A_MEMDB;
	for (i = 0; i < A_MEMDB; i++)
		if (strncmp(body, names[i], strlen(names[i])) == 0)
			return (enum action)i;
	return A_OTHER;
}

static void fake_handler(struct evhttp_request *req, void *arg)
{
	struct fake *f = arg;
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	const char *auth = evhttp_find_header(h, "Authorization");
	const char *target = evhttp_find_header(h, "X-Amz-Target");
	char body[1024];
	size_t n = evbuffer_get_length(in);
	enum action a;

	if (n >= sizeof(body))
		n = sizeof(body) - 1;
	evbuffer_copyout(in, body, n);
	body[n] = '\0';
	snprintf(f->target, sizeof(f->target), "%s", target ? target : "");
	a = action_of(body, f->target);
	f->hits[a]++;
	snprintf(f->auth[a], sizeof(f->auth[a]), "%s", auth ? auth : "");
	snprintf(f->last[a], sizeof(f->last[a]), "%s", body);
	if (a == A_CCLUSTERS) {
		size_t l = strlen(f->cc_log);
		snprintf(f->cc_log + l, sizeof(f->cc_log) - l, "%s%s", l ? " | " : "", body);
	}

	if (f->hang)
		return; /* the request stays open until the server goes away */
	if (f->fail_next > 0) {
		f->fail_next--;
		reply(req, 500, "<html>internal trouble</html>");
		return;
	}
	if (f->throttle_next > 0) {
		f->throttle_next--;
		reply_file(req, 400, "err_throttling.xml");
		return;
	}
	if (f->expired_next > 0) {
		f->expired_next--;
		reply(req, 403, "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>"
		                "<Message>The security token included in the request is expired"
		                "</Message></Error></ErrorResponse>");
		return;
	}
	if (f->body[a] != NULL) {
		reply(req, f->code[a] ? f->code[a] : 200, f->body[a]);
		return;
	}
	switch (a) {
	case A_DBCLUSTERS:
		reply_file(req, 200, "rds_clusters_aurora_pg.xml");
		break;
	case A_DBINSTANCES:
		reply_file(req, 200, strstr(body, "&Marker=") ? "rds_instances_page2.xml"
		                                              : "rds_instances_page1.xml");
		break;
	case A_RGROUPS:
		if (strstr(body, "ReplicationGroupId=sessions") != NULL) {
			reply_file(req, 200, "ec_rg_cmd.xml");
		} else if (strstr(body, "ReplicationGroupId=carts") != NULL) {
			reply_file(req, 200, "ec_rg_cme.xml");
		} else if (strstr(body, "ReplicationGroupId=profiles-euw1") != NULL) {
			/* the Global Datastore's primary group: the recorded group under its name */
			char *b = load("ec_rg_cmd.xml");
			char *g = replace_once(b, "<ReplicationGroupId>sessions<",
			                       "<ReplicationGroupId>profiles-euw1<");
			reply(req, 200, g);
			free(g);
			free(b);
		} else {
			reply_file(req, 404, "err_ec_rg_not_found.xml");
		}
		break;
	case A_CCLUSTERS:
		reply_file(req, 200, "ec_cache_clusters_cme.xml");
		break;
	case A_GLOBAL:
		reply_file(req, 200, "ec_global.xml");
		break;
	case A_MEMDB:
		if (f->mdb_paged && strstr(body, "\"NextToken\"") == NULL)
			reply(req, 200, "{\"Clusters\":[{\"Name\":\"other\",\"Status\":\"available\"}],"
			                "\"NextToken\":\"page-2\"}");
		else
			reply_file(req, 200, "memorydb_clusters.json");
		break;
	default:
		reply(req, 400, "<ErrorResponse><Error><Code>InvalidAction</Code><Message>?</Message>"
		                "</Error></ErrorResponse>");
	}
}

static void fake_start(struct fake *f, struct event_base *base)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->http = evhttp_new(base);
	ck_assert_ptr_nonnull(f->http);
	evhttp_set_allowed_methods(f->http, EVHTTP_REQ_POST);
	evhttp_set_gencb(f->http, fake_handler, f);
	bs = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
	ck_assert_ptr_nonnull(bs);
	ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/", ntohs(sin.sin_port));
}

static void fake_set(struct fake *f, enum action a, int code, char *body)
{
	free(f->body[a]);
	f->body[a] = body;
	f->code[a] = code;
}

static void fake_stop(struct fake *f)
{
	int i;

	evhttp_free(f->http);
	for (i = 0; i < NACT; i++)
		free(f->body[i]);
}

/* ================================================================================================
 * A source and what it reported
 * ============================================================================================== */

#define MAXM 16
#define MAXT 64

struct rec {
	struct aws_source *src;
	int views, errors;
	char status[48];
	int n;
	struct aws_source_member m[MAXM];
	int64_t polled_ms;
	int64_t at[MAXT];             /* when each view arrived */
	char code[64], msg[512];
	bool free_on_error;           /* free the source from inside err_cb */
};

static void view_cb(void *arg, const struct aws_source_view *v)
{
	struct rec *r = arg;
	int i;

	if (r->views < MAXT)
		r->at[r->views] = now_ms();
	r->views++;
	snprintf(r->status, sizeof(r->status), "%s", v->status);
	r->n = v->nmembers < MAXM ? v->nmembers : MAXM;
	for (i = 0; i < r->n; i++)
		r->m[i] = v->members[i];
	r->polled_ms = v->polled_ms;
}

static void err_cb(void *arg, const char *code, const char *msg)
{
	struct rec *r = arg;

	r->errors++;
	snprintf(r->code, sizeof(r->code), "%s", code);
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
	if (r->free_on_error) {
		aws_source_free(r->src);
		r->src = NULL;
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop until expr holds or ms pass; a short persistent tick keeps each round bounded. */
#define WAIT_UNTIL(base, expr, ms)                                                                 \
	({                                                                                         \
		int64_t dl_ = now_ms() + (ms);                                                     \
		struct event *t_ = event_new((base), -1, EV_PERSIST, tick_cb, NULL);               \
		struct timeval tv_ = {0, 2000};                                                    \
		event_add(t_, &tv_);                                                               \
		while (!(expr) && now_ms() < dl_)                                                  \
			event_base_loop((base), EVLOOP_ONCE);                                      \
		event_free(t_);                                                                    \
		(expr);                                                                            \
	})

static struct aws_config cfg(const struct fake *f, const char *region, int64_t poll_ms,
                             int64_t fast_ms)
{
	return (struct aws_config){
		.region = (char *)region,
		.endpoint_url = (char *)f->url,
		.poll_interval_ms = poll_ms,
		.failover_poll_interval_ms = fast_ms,
	};
}

static struct aws_source *start(struct event_base *base, const struct aws_config *a,
                                const char *source, const char *shard, struct rec *r)
{
	memset(r, 0, sizeof(*r));
	r->src = aws_source_new(base, a, source, shard, "test", view_cb, err_cb, r);
	ck_assert_ptr_nonnull(r->src);
	ck_assert(aws_source_start(r->src));
	return r->src;
}

static const struct aws_source_member *member(const struct rec *r, int i)
{
	ck_assert_int_lt(i, r->n);
	return &r->m[i];
}

static void setup_env(void)
{
	static const char *const unset[] = {
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http_proxy", "HTTP_PROXY", "https_proxy",
		"HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
	size_t i;

	for (i = 0; i < ARRAY_LEN(unset); i++)
		unsetenv(unset[i]);
	setenv("AWS_ACCESS_KEY_ID", "AKIDSOURCETEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "c2VjcmV0LXNvdXJjZS10ZXN0", 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/repoint-test/credentials", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent/repoint-test/config", 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
}

/* ================================================================================================
 * One source per kind
 * ============================================================================================== */

START_TEST(test_rds_view)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	json_t *st;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 60000, 1000);
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert_int_eq(r.views, 0); /* never from inside start */
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_str_eq(r.status, "available");
	ck_assert_int_eq(r.n, 3);
	ck_assert_str_eq(member(&r, 0)->id, "orders-pg-1");
	ck_assert_str_eq(member(&r, 0)->host, "orders-pg-1.c9akciq32xyz.eu-west-1.rds.amazonaws.com");
	ck_assert_int_eq(member(&r, 0)->port, 5432);
	ck_assert_int_eq(member(&r, 0)->role, ROLE_WRITER);
	ck_assert(member(&r, 0)->available);
	ck_assert_str_eq(member(&r, 1)->id, "orders-pg-2");
	ck_assert_int_eq(member(&r, 1)->role, ROLE_READER);
	ck_assert_str_eq(member(&r, 2)->id, "orders-pg-3");
	ck_assert_str_eq(member(&r, 2)->host, "orders-pg-3.c9akciq32xyz.eu-west-1.rds.amazonaws.com");
	ck_assert_str_eq(member(&r, 2)->status, "rebooting");
	ck_assert(!member(&r, 2)->available);
	ck_assert_int_le(r.polled_ms, now_ms());
	/* the request chain: one DescribeDBClusters, two pages of DescribeDBInstances */
	ck_assert_int_eq(f.hits[A_DBCLUSTERS], 1);
	ck_assert_int_eq(f.hits[A_DBINSTANCES], 2);
	ck_assert_str_eq(f.last[A_DBCLUSTERS], "Action=DescribeDBClusters&Version=2014-10-31"
	                                        "&DBClusterIdentifier=orders-pg");
	ck_assert_str_eq(f.last[A_DBINSTANCES],
	                 "Action=DescribeDBInstances&Version=2014-10-31"
	                 "&Filters.Filter.1.Name=db-cluster-id&Filters.Filter.1.Values.Value.1=orders-pg"
	                 "&Marker=eyJNYXJrZXIiOiBudWxsLCAiYm90b190cnVuY2F0ZV9hbW91bnQiOiAyfQ%3D%3D");
	ck_assert_msg(strstr(f.auth[A_DBCLUSTERS], "Credential=AKIDSOURCETEST/") != NULL, "%s",
	              f.auth[A_DBCLUSTERS]);
	ck_assert_msg(strstr(f.auth[A_DBCLUSTERS], "/eu-west-1/rds/aws4_request") != NULL, "%s",
	              f.auth[A_DBCLUSTERS]);

	st = aws_source_status(r.src);
	ck_assert_str_eq(json_string_value(json_object_get(st, "source")), "rds:orders-pg");
	ck_assert_str_eq(json_string_value(json_object_get(st, "status")), "available");
	ck_assert_str_eq(json_string_value(json_object_get(st, "region")), "eu-west-1");
	ck_assert_str_eq(json_string_value(json_object_get(st, "credentials")),
	                 aws_creds_source_name(AWS_CREDS_ENV));
	ck_assert(json_is_string(json_object_get(st, "last_poll_at")));
	ck_assert(json_is_null(json_object_get(st, "last_error")));
	ck_assert_int_eq(json_integer_value(json_object_get(st, "polls")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "failures")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "retries")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "last_backoff_ms")), -1);
	json_decref(st);
	ck_assert_int_eq(aws_source_polls(r.src), 1);

	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_elasticache_views)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	int i;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 60000, 1000);

	/* cluster mode disabled: roles and endpoints in DescribeReplicationGroups alone */
	start(base, &a, "elasticache:sessions", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(r.n, 3);
	ck_assert_str_eq(member(&r, 0)->id, "sessions-001");
	ck_assert_int_eq(member(&r, 0)->role, ROLE_READER);
	ck_assert_str_eq(member(&r, 1)->id, "sessions-002");
	ck_assert_int_eq(member(&r, 1)->role, ROLE_WRITER);
	ck_assert_str_eq(member(&r, 1)->host, "sessions-002.sessions.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_int_eq(member(&r, 1)->port, 6379);
	ck_assert(member(&r, 1)->available);
	ck_assert_int_eq(f.hits[A_RGROUPS], 1);
	ck_assert_int_eq(f.hits[A_CCLUSTERS], 0);
	ck_assert_str_eq(f.last[A_RGROUPS], "Action=DescribeReplicationGroups&Version=2015-02-02"
	                                     "&ReplicationGroupId=sessions");
	ck_assert_msg(strstr(f.auth[A_RGROUPS], "/eu-west-1/elasticache/aws4_request") != NULL,
	              "%s", f.auth[A_RGROUPS]);
	aws_source_free(r.src);

	/* cluster mode: four members without endpoints -> the paged listing of cache clusters */
	start(base, &a, "elasticache:carts", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(r.n, 4);
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(member(&r, i)->role, ROLE_UNKNOWN);
	ck_assert_str_eq(member(&r, 0)->id, "carts-0001-001");
	ck_assert_str_eq(member(&r, 0)->host, "carts-0001-001.carts.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_str_eq(member(&r, 3)->id, "carts-0002-002");
	ck_assert_str_eq(member(&r, 3)->status, "modifying");
	ck_assert(!member(&r, 3)->available);
	ck_assert_int_eq(f.hits[A_CCLUSTERS], 1);
	ck_assert_str_eq(f.cc_log, "Action=DescribeCacheClusters&Version=2015-02-02"
	                           "&ShowCacheNodeInfo=true");
	aws_source_free(r.src);

	/* one shard: its two members are asked for one by one */
	f.cc_log[0] = '\0';
	start(base, &a, "elasticache:carts", "0002", &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(r.n, 2);
	ck_assert_str_eq(member(&r, 0)->id, "carts-0002-001");
	ck_assert_str_eq(member(&r, 1)->id, "carts-0002-002");
	ck_assert_str_eq(f.cc_log,
	                 "Action=DescribeCacheClusters&Version=2015-02-02&ShowCacheNodeInfo=true"
	                 "&CacheClusterId=carts-0002-001 | "
	                 "Action=DescribeCacheClusters&Version=2015-02-02&ShowCacheNodeInfo=true"
	                 "&CacheClusterId=carts-0002-002");
	/* the cluster's status is the replication group's; the shard's own is in the members */
	ck_assert_str_eq(r.status, "available");
	aws_source_free(r.src);

	/* a shard that does not exist is a reply we cannot use */
	start(base, &a, "elasticache:carts", "0009", &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_int_eq(r.views, 0);
	ck_assert_str_eq(r.code, "parse");
	ck_assert_msg(strstr(r.msg, "0009") != NULL, "%s", r.msg);
	aws_source_free(r.src);

	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_global_view_signed_for_primary_region)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;

	fake_start(&f, base);
	/* the proxy lives in us-east-1, where the datastore's SECONDARY is */
	a = cfg(&f, "us-east-1", 60000, 1000);
	start(base, &a, "elasticache-global:ldgnf-profiles", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_str_eq(f.last[A_GLOBAL], "Action=DescribeGlobalReplicationGroups"
	                                    "&Version=2015-02-02"
	                                    "&GlobalReplicationGroupId=ldgnf-profiles"
	                                    "&ShowMemberInfo=true");
	ck_assert_msg(strstr(f.auth[A_GLOBAL], "/us-east-1/elasticache/aws4_request") != NULL, "%s",
	              f.auth[A_GLOBAL]);
	/* then the PRIMARY member's group, asked of its own region (same endpoint_url) */
	ck_assert_str_eq(f.last[A_RGROUPS], "Action=DescribeReplicationGroups&Version=2015-02-02"
	                                     "&ReplicationGroupId=profiles-euw1");
	ck_assert_msg(strstr(f.auth[A_RGROUPS], "/eu-west-1/elasticache/aws4_request") != NULL, "%s",
	              f.auth[A_RGROUPS]);
	/* the view: that group's members and roles */
	ck_assert_str_eq(r.status, "available");
	ck_assert_int_eq(r.n, 3);
	ck_assert_str_eq(member(&r, 1)->id, "sessions-002");
	ck_assert_int_eq(member(&r, 1)->role, ROLE_WRITER);
	ck_assert_int_eq(member(&r, 0)->role, ROLE_READER);

	/* after a global failover, the other region's group */
	{
		char *b = load("ec_global.xml");
		char *b1 = replace_once(b, "<Role>SECONDARY</Role>", "<Role>X</Role>");
		char *b2 = replace_once(b1, "<Role>PRIMARY</Role>", "<Role>SECONDARY</Role>");
		char *b3 = replace_once(b2, "<Role>X</Role>", "<Role>PRIMARY</Role>");
		fake_set(&f, A_GLOBAL, 200, b3);
		free(b);
		free(b1);
		free(b2);
	}
	aws_source_poll_now(r.src);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 2, 5000));
	/* profiles-use1 is not served by the fake: its error, signed for us-east-1 */
	ck_assert_str_eq(r.code, "ReplicationGroupNotFoundFault");
	ck_assert_str_eq(f.last[A_RGROUPS], "Action=DescribeReplicationGroups&Version=2015-02-02"
	                                     "&ReplicationGroupId=profiles-use1");
	ck_assert_msg(strstr(f.auth[A_RGROUPS], "/us-east-1/elasticache/aws4_request") != NULL, "%s",
	              f.auth[A_RGROUPS]);

	/* no PRIMARY at all: nothing to follow */
	{
		char *b = load("ec_global.xml");
		fake_set(&f, A_GLOBAL, 200, replace_once(b, "<Role>PRIMARY</Role>",
		                                         "<Role>SECONDARY</Role>"));
		free(b);
	}
	aws_source_poll_now(r.src);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 3, 5000));
	ck_assert_int_eq(r.views, 1);
	ck_assert_str_eq(r.code, "parse");
	ck_assert_msg(strstr(r.msg, "PRIMARY") != NULL, "%s", r.msg);

	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_memorydb_view)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	int i;

	fake_start(&f, base);
	a = cfg(&f, "us-west-2", 60000, 1000);
	start(base, &a, "memorydb:ledger", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(r.n, 4);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(member(&r, i)->role, ROLE_UNKNOWN);
		ck_assert(member(&r, i)->available);
	}
	ck_assert_str_eq(member(&r, 2)->id, "ledger-0002-001");
	ck_assert_str_eq(member(&r, 2)->host,
	                 "ledger-0002-001.ledger.abcde1.memorydb.us-west-2.amazonaws.com");
	ck_assert_int_eq(member(&r, 2)->port, 6379);
	ck_assert_str_eq(f.target, "AmazonMemoryDB.DescribeClusters");
	ck_assert_str_eq(f.last[A_MEMDB], "{\"ClusterName\":\"ledger\",\"ShowShardDetails\":true}");
	ck_assert_msg(strstr(f.auth[A_MEMDB], "/us-west-2/memorydb/aws4_request") != NULL, "%s",
	              f.auth[A_MEMDB]);
	/* the page with the cluster is the last one asked for, NextToken or not */
	ck_assert_int_eq(f.hits[A_MEMDB], 1);
	aws_source_free(r.src);

	/* one shard; and a first page without the cluster: the next page is asked for */
	f.mdb_paged = true;
	f.hits[A_MEMDB] = 0;
	start(base, &a, "memorydb:ledger", "0001", &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(f.hits[A_MEMDB], 2);
	ck_assert_str_eq(f.last[A_MEMDB], "{\"ClusterName\":\"ledger\",\"ShowShardDetails\":true,"
	                                   "\"NextToken\":\"page-2\"}");
	ck_assert_int_eq(r.n, 2);
	ck_assert_str_eq(member(&r, 0)->id, "ledger-0001-001");
	ck_assert_str_eq(member(&r, 1)->id, "ledger-0001-002");
	aws_source_free(r.src);

	/* a page that keeps handing out the same token is not followed forever */
	fake_set(&f, A_MEMDB, 200,
	         strdup("{\"Clusters\":[{\"Name\":\"other\",\"Status\":\"available\"}],"
	                "\"NextToken\":\"again\"}"));
	start(base, &a, "memorydb:ledger", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_int_eq(r.views, 0);
	ck_assert_str_eq(r.code, "parse");
	aws_source_free(r.src);

	fake_stop(&f);
	event_base_free(base);
}
END_TEST

/* ================================================================================================
 * Changes, failures, timing
 * ============================================================================================== */

START_TEST(test_writer_change)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	char *b, *b1, *b2;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 50, 20);
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views >= 1, 5000));
	ck_assert_int_eq(member(&r, 0)->role, ROLE_WRITER);
	ck_assert_int_eq(member(&r, 1)->role, ROLE_READER);

	/* orders-pg-2 takes over */
	b = load("rds_clusters_aurora_pg.xml");
	b1 = replace_once(b, "<IsClusterWriter>true<", "<IsClusterWriter>X<");
	b2 = replace_once(b1, "<IsClusterWriter>false<", "<IsClusterWriter>true<");
	fake_set(&f, A_DBCLUSTERS, 200, replace_once(b2, "<IsClusterWriter>X<",
	                                             "<IsClusterWriter>false<"));
	free(b);
	free(b1);
	free(b2);
	ck_assert(WAIT_UNTIL(base, r.n == 3 && r.m[1].role == ROLE_WRITER, 5000));
	ck_assert_str_eq(member(&r, 1)->id, "orders-pg-2");
	ck_assert_int_eq(member(&r, 0)->role, ROLE_READER);
	ck_assert_int_eq(member(&r, 2)->role, ROLE_READER);
	ck_assert_int_eq(r.errors, 0);
	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_retries_and_throttles)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	json_t *st;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 60000, 1000);
	/* two 500s, retried inside the client: the poll still ends in a view */
	f.fail_next = 2;
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 10000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(r.n, 3);
	ck_assert_uint_eq(aws_source_retries(r.src), 2);
	ck_assert_uint_eq(aws_source_throttles(r.src), 0);
	ck_assert_int_ge(aws_source_last_backoff_ms(r.src), 0);
	ck_assert_uint_eq(aws_source_failures(r.src), 0);

	/* throttled twice, then served */
	f.throttle_next = 2;
	aws_source_poll_now(r.src);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 2, 10000));
	ck_assert_msg(r.views == 2, "%s: %s", r.code, r.msg);
	ck_assert_uint_eq(aws_source_throttles(r.src), 2);
	ck_assert_uint_eq(aws_source_retries(r.src), 4);
	st = aws_source_status(r.src);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "throttles")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "retries")), 4);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "polls")), 2);
	ck_assert(json_is_null(json_object_get(st, "last_error")));
	json_decref(st);

	/* throttled past the client's attempts: a failed poll with the AWS code */
	f.throttle_next = 100;
	aws_source_poll_now(r.src);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 3, 20000));
	ck_assert_int_eq(r.views, 2);
	ck_assert_str_eq(r.code, "Throttling");
	ck_assert_str_eq(r.msg, "Rate exceeded");
	ck_assert_uint_eq(aws_source_failures(r.src), 1);
	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_permanent_error)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	json_t *st, *le;

	fake_start(&f, base);
	fake_set(&f, A_DBCLUSTERS, 404, load("err_rds_cluster_not_found.xml"));
	a = cfg(&f, "eu-west-1", 60000, 1000);
	start(base, &a, "rds:orders-pgx", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_int_eq(r.views, 0);
	ck_assert_int_eq(r.errors, 1);
	ck_assert_str_eq(r.code, "DBClusterNotFoundFault");
	ck_assert_str_eq(r.msg, "DBCluster orders-pgx not found.");
	ck_assert_int_eq(f.hits[A_DBCLUSTERS], 1); /* not retried */
	ck_assert_int_eq(f.hits[A_DBINSTANCES], 0);
	st = aws_source_status(r.src);
	le = json_object_get(st, "last_error");
	ck_assert(json_is_object(le));
	ck_assert_str_eq(json_string_value(json_object_get(le, "code")), "DBClusterNotFoundFault");
	ck_assert(json_is_string(json_object_get(le, "at")));
	ck_assert(json_is_null(json_object_get(st, "status")));
	ck_assert(json_is_null(json_object_get(st, "last_poll_at")));
	ck_assert_int_eq(json_integer_value(json_object_get(st, "failures")), 1);
	json_decref(st);
	aws_source_free(r.src);

	/* MemoryDB's JSON flavour of the same */
	fake_set(&f, A_MEMDB, 400, load("err_memorydb_cluster_not_found.json"));
	a = cfg(&f, "us-west-2", 60000, 1000);
	start(base, &a, "memorydb:ledgr", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_int_eq(r.views, 0);
	ck_assert_str_eq(r.code, "ClusterNotFoundFault");
	aws_source_free(r.src);

	/* the service may let go of the source from its error callback */
	start(base, &a, "memorydb:ledgr", NULL, &r);
	r.free_on_error = true;
	ck_assert(WAIT_UNTIL(base, r.errors >= 1, 5000));
	ck_assert_ptr_null(r.src);

	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_malformed_replies)
{
	static const struct {
		enum action a;
		const char *source, *file, *literal;
	} cases[] = {
		{A_DBCLUSTERS, "rds:orders-pg", "hostile_truncated.xml", NULL},
		{A_DBCLUSTERS, "rds:orders-pg", "hostile_wrong_ns.xml", NULL},
		{A_DBCLUSTERS, "rds:orders-pg", "hostile_entity_bomb.xml", NULL},
		{A_DBCLUSTERS, "rds:orders-pg", NULL, ""},
		{A_DBINSTANCES, "rds:orders-pg", NULL, "<DescribeDBInstancesResponse"},
		{A_RGROUPS, "elasticache:sessions", NULL, "\x01\x02\xff garbage"},
		{A_CCLUSTERS, "elasticache:carts", "rds_clusters_aurora_pg.xml", NULL},
		{A_GLOBAL, "elasticache-global:ldgnf-profiles", "hostile_xxe.xml", NULL},
		{A_MEMDB, "memorydb:ledger", "hostile_memorydb_types.json", NULL},
		{A_MEMDB, "memorydb:ledger", NULL, "{\"Clusters\": [{\"Name\": \"ledger\""},
		{A_MEMDB, "memorydb:ledger", NULL, "[]"},
	};
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	size_t i;

	fake_start(&f, base);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		a = cfg(&f, cases[i].a == A_MEMDB ? "us-west-2" : "eu-west-1", 60000, 1000);
		fake_set(&f, cases[i].a, 200,
		         cases[i].file ? load(cases[i].file) : strdup(cases[i].literal));
		start(base, &a, cases[i].source, NULL, &r);
		ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
		ck_assert_msg(r.views == 0, "case %zu delivered a view", i);
		ck_assert_msg(strcmp(r.code, "parse") == 0, "case %zu: %s: %s", i, r.code, r.msg);
		ck_assert(r.msg[0] != '\0');
		/* the next good poll works */
		fake_set(&f, cases[i].a, 0, NULL);
		aws_source_poll_now(r.src);
		ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 2, 5000));
		ck_assert_msg(r.views == 1, "case %zu: %s: %s", i, r.code, r.msg);
		ck_assert_int_gt(r.n, 0);
		ck_assert_uint_eq(aws_source_failures(r.src), 1);
		ck_assert_uint_eq(aws_source_polls(r.src), 2);
		aws_source_free(r.src);
	}
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_set_fast)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	int64_t gap;
	int v;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 500, 50);
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views >= 1, 5000));
	/* slow: the next poll comes 400..600 ms later */
	ck_assert(WAIT_UNTIL(base, r.views >= 2, 5000));
	gap = r.at[1] - r.at[0];
	ck_assert_msg(gap >= 380 && gap < 1500, "slow gap %lld ms", (long long)gap);
	/* set_fast moves the pending slow poll up, and the ones after come quickly */
	aws_source_set_fast(r.src, true);
	ck_assert(WAIT_UNTIL(base, r.views >= 5, 5000));
	for (v = 2; v < 5; v++) {
		gap = r.at[v] - r.at[v - 1];
		ck_assert_msg(gap < 300, "fast gap %d: %lld ms", v, (long long)gap);
	}
	/* back to slow */
	aws_source_set_fast(r.src, false);
	v = r.views;
	ck_assert(WAIT_UNTIL(base, r.views >= v + 2, 5000));
	gap = r.at[v + 1] - r.at[v];
	ck_assert_msg(gap >= 380, "slow again gap %lld ms", (long long)gap);
	ck_assert_int_eq(r.errors, 0);
	aws_source_free(r.src);

	/* a cluster that is failing over is polled fast without being told */
	fake_set(&f, A_DBCLUSTERS, 200, load("rds_clusters_failing_over.xml"));
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views >= 4, 5000));
	ck_assert_str_eq(r.status, "failing-over");
	for (v = 1; v < 4; v++) {
		gap = r.at[v] - r.at[v - 1];
		ck_assert_msg(gap < 300, "failing-over gap %d: %lld ms", v, (long long)gap);
	}
	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_no_overlap_and_free_in_flight)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;
	int64_t until;

	fake_start(&f, base);
	f.hang = true;
	a = cfg(&f, "eu-west-1", 20, 20);
	start(base, &a, "rds:orders-pg", NULL, &r);
	aws_source_set_fast(r.src, true);
	ck_assert(WAIT_UNTIL(base, f.hits[A_DBCLUSTERS] >= 1, 5000));
	/* many intervals later, and asked again and again: still the one poll */
	until = now_ms() + 300;
	while (now_ms() < until) {
		aws_source_poll_now(r.src);
		WAIT_UNTIL(base, false, 20);
	}
	ck_assert_int_eq(f.hits[A_DBCLUSTERS], 1);
	ck_assert_int_eq(r.views + r.errors, 0);
	/* freed with the request still out: no callback, nothing left behind (ASan) */
	aws_source_free(r.src);
	WAIT_UNTIL(base, false, 50);
	ck_assert_int_eq(r.views + r.errors, 0);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_expired_credentials_retried_once)
{
	struct event_base *base = event_base_new();
	struct fake f;
	struct rec r;
	struct aws_config a;

	fake_start(&f, base);
	a = cfg(&f, "eu-west-1", 60000, 1000);
	f.expired_next = 1;
	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 5000));
	ck_assert_msg(r.views == 1, "%s: %s", r.code, r.msg);
	ck_assert_int_eq(f.hits[A_DBCLUSTERS], 2);
	/* refused again after the fresh credentials: reported, not retried forever */
	f.expired_next = 100;
	aws_source_poll_now(r.src);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 2, 5000));
	ck_assert_int_eq(r.errors, 1);
	ck_assert_str_eq(r.code, "ExpiredToken");
	ck_assert_int_eq(f.hits[A_DBCLUSTERS], 4);
	aws_source_free(r.src);
	fake_stop(&f);
	event_base_free(base);
}
END_TEST

START_TEST(test_transport_failure)
{
	struct event_base *base = event_base_new();
	struct rec r;
	char region[] = "eu-west-1", url[] = "http://127.0.0.1:1/";
	struct aws_config a = {.region = region, .endpoint_url = url, .poll_interval_ms = 60000,
	                       .failover_poll_interval_ms = 1000};

	start(base, &a, "rds:orders-pg", NULL, &r);
	ck_assert(WAIT_UNTIL(base, r.views + r.errors >= 1, 20000));
	ck_assert_int_eq(r.views, 0);
	ck_assert_str_eq(r.code, "transport");
	ck_assert_msg(strncmp(r.msg, "Transport: ", 11) == 0, "%s", r.msg);
	ck_assert_uint_ge(aws_source_retries(r.src), 1);
	aws_source_free(r.src);
	event_base_free(base);
}
END_TEST

START_TEST(test_start_refusals)
{
	struct event_base *base = event_base_new();
	char region[] = "eu-west-1";
	struct aws_config a = {.region = region};
	struct aws_config noregion = {0};
	static const char *const bad[] = {"orders-pg", "redis:orders", "rds:", "rds:a b",
	                                  "memorydb:x\"y"};
	struct aws_source *s;
	json_t *st;
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad); i++) {
		s = aws_source_new(base, &a, bad[i], NULL, "test", view_cb, err_cb, NULL);
		ck_assert_ptr_nonnull(s);
		ck_assert_msg(!aws_source_start(s), "%s started", bad[i]);
		aws_source_free(s);
	}
	/* shard with rds */
	s = aws_source_new(base, &a, "rds:orders-pg", "0001", "test", view_cb, err_cb, NULL);
	ck_assert(!aws_source_start(s));
	aws_source_free(s);
	/* no region anywhere */
	s = aws_source_new(base, &noregion, "rds:orders-pg", NULL, "test", view_cb, err_cb, NULL);
	ck_assert(!aws_source_start(s));
	st = aws_source_status(s);
	ck_assert(json_is_null(json_object_get(st, "region")));
	ck_assert_int_eq(json_integer_value(json_object_get(st, "polls")), 0);
	json_decref(st);
	aws_source_free(s);
	/* ... unless the environment has one */
	setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
	s = aws_source_new(base, NULL, "rds:orders-pg", NULL, "test", view_cb, err_cb, NULL);
	ck_assert(aws_source_start(s));
	st = aws_source_status(s);
	ck_assert_str_eq(json_string_value(json_object_get(st, "region")), "ap-south-1");
	json_decref(st);
	aws_source_free(s);
	unsetenv("AWS_DEFAULT_REGION");
	aws_source_free(NULL);
	event_base_free(base);
}
END_TEST

START_TEST(test_error_text)
{
	char b[512];
	char big[2000];

	aws_source_error_text(b, sizeof(b), "User: arn:aws:iam::1:user/x is not authorized");
	ck_assert_str_eq(b, "User: arn:aws:iam::1:user/x is not authorized");
	aws_source_error_text(b, sizeof(b), "bad\r\n\x1b[31mthing\x7f caf\xc3\xa9");
	ck_assert_str_eq(b, "bad [31mthing caf??");
	aws_source_error_text(b, sizeof(b),
	                      "denied (Service: Rds, Status Code: 403, Request ID: abc-1, see "
	                      "https://rds.amazonaws.com/?X-Amz-Credential=AKIAXXXX&X-Amz-Signature=ff "
	                      "key AKIAIOSFODNN7EXAMPLE id 4a3f0c7e-1b2c-4d5e-8f90-1234567890ab");
	ck_assert_str_eq(b, "denied (Service: Rds, Status Code: 403, Request ID: [redacted] see "
	                    "[redacted] key [redacted] id [redacted]");
	aws_source_error_text(b, sizeof(b), "RequestId=7d1e2f3a");
	ck_assert_str_eq(b, "[redacted]");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(big, ' ', 5);
	aws_source_error_text(b, sizeof(b), big);
	ck_assert_uint_le(strlen(b), AWS_ERROR_TEXT_MAX);
	aws_source_error_text(b, sizeof(b), "aaa bbb");
	ck_assert_str_eq(b, "aaa bbb");
	aws_source_error_text(b, 5, "abcdefgh");
	ck_assert_str_eq(b, "abcd");
	aws_source_error_text(b, sizeof(b), NULL);
	ck_assert_str_eq(b, "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("aws_source");
	TCase *tc;
	SRunner *sr;
	int failed;

	setup_env();
	tc = tcase_create("kinds");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rds_view);
	tcase_add_test(tc, test_elasticache_views);
	tcase_add_test(tc, test_global_view_signed_for_primary_region);
	tcase_add_test(tc, test_memorydb_view);
	suite_add_tcase(s, tc);

	tc = tcase_create("polling");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_writer_change);
	tcase_add_test(tc, test_retries_and_throttles);
	tcase_add_test(tc, test_permanent_error);
	tcase_add_test(tc, test_malformed_replies);
	tcase_add_test(tc, test_set_fast);
	tcase_add_test(tc, test_no_overlap_and_free_in_flight);
	tcase_add_test(tc, test_expired_credentials_retried_once);
	tcase_add_test(tc, test_transport_failure);
	tcase_add_test(tc, test_start_refusals);
	tcase_add_test(tc, test_error_text);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
