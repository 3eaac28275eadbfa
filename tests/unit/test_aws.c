/* test_aws.c - the AWS client (aws/http), credentials (aws/creds) and reply parsers (sources/cloud).
 *
 * Parsers are fed recorded reply bodies (tests/unit/data/aws/, written after the real shapes) and
 * hostile ones. The client and the credential provider run against a tiny HTTP server (libevent's
 * evhttp) on the same loop, so that the curl-multi path, SigV4 headers, retries and the credential
 * fetches are exercised for real without leaving the process. */
#include <check.h>

#include "testdata.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "aws/creds.h"
#include "aws/http.h"
#include "sources/cloud.h"
#include "util.h"

#define DATA TEST_SRCDIR "/tests/unit/data/aws/"

static char *load(const char *name, size_t *len)
{
	return testdata_load(name, len);
}

/* ================================================================================================
 * aws/http pure helpers
 * ============================================================================================== */

START_TEST(test_form_encode)
{
	const char *params[] = {"DBClusterIdentifier", "orders-pg", "Filters.Filter.1.Name",
	                        "db-cluster-id", "Odd", "a b/c=d&e+f~g_h.i-jé", NULL};
	const char *odd[] = {"Key", NULL, NULL};
	char *s = aws_form_encode("DescribeDBInstances", "2014-10-31", params);

	ck_assert_str_eq(s, "Action=DescribeDBInstances&Version=2014-10-31"
	                    "&DBClusterIdentifier=orders-pg"
	                    "&Filters.Filter.1.Name=db-cluster-id"
	                    "&Odd=a%20b%2Fc%3Dd%26e%2Bf~g_h.i-j%C3%A9");
	free(s);
	s = aws_form_encode("DescribeClusters", NULL, NULL);
	ck_assert_str_eq(s, "Action=DescribeClusters");
	free(s);
	ck_assert_ptr_null(aws_form_encode("X", "1", odd));
}
END_TEST

START_TEST(test_endpoint_url)
{
	char b[128];

	ck_assert(aws_endpoint_url("rds", "eu-west-1", b, sizeof(b)));
	ck_assert_str_eq(b, "https://rds.eu-west-1.amazonaws.com/");
	ck_assert(aws_endpoint_url("elasticache", "us-east-1", b, sizeof(b)));
	ck_assert_str_eq(b, "https://elasticache.us-east-1.amazonaws.com/");
	ck_assert(aws_endpoint_url("memorydb", "us-west-2", b, sizeof(b)));
	ck_assert_str_eq(b, "https://memory-db.us-west-2.amazonaws.com/");
	ck_assert(aws_endpoint_url("sts", "cn-north-1", b, sizeof(b)));
	ck_assert_str_eq(b, "https://sts.cn-north-1.amazonaws.com.cn/");
	/* a region from a config file ends up in a URL and a signing scope: plain names only */
	ck_assert(!aws_endpoint_url("rds", "eu-west-1.evil.com/x", b, sizeof(b)));
	ck_assert(!aws_endpoint_url("rds", "", b, sizeof(b)));
	ck_assert(!aws_endpoint_url("rds", "EU-WEST-1", b, sizeof(b)));
	ck_assert(!aws_endpoint_url("rds", "eu-west-1", b, 10));
}
END_TEST

START_TEST(test_copy_text)
{
	char b[6];

	/* "aé€" is 1+2+3 bytes: a 6-byte buffer holds 5, which would cut the euro sign */
	ck_assert_uint_eq(aws_copy_text(b, sizeof(b), "a\xc3\xa9\xe2\x82\xac"), 6);
	ck_assert_str_eq(b, "a\xc3\xa9");
	aws_copy_text(b, sizeof(b), "x\ny\x1b");
	ck_assert_str_eq(b, "x y ");
	aws_copy_text(b, sizeof(b), NULL);
	ck_assert_str_eq(b, "");
}
END_TEST

START_TEST(test_error_extraction)
{
	char code[64], msg[128];
	size_t n;
	char *body;
	const char *lit;

	body = load("err_rds_cluster_not_found.xml", &n);
	ck_assert(aws_parse_error(AWS_ERRFMT_XML, body, n, code, sizeof(code), msg, sizeof(msg)));
	ck_assert_str_eq(code, "DBClusterNotFoundFault");
	ck_assert_str_eq(msg, "DBCluster orders-pgx not found.");
	free(body);

	body = load("err_throttling.xml", &n);
	ck_assert(aws_parse_error(AWS_ERRFMT_XML, body, n, code, sizeof(code), msg, sizeof(msg)));
	ck_assert_str_eq(code, "Throttling");
	ck_assert_str_eq(msg, "Rate exceeded");
	free(body);

	body = load("err_ec_rg_not_found.xml", &n);
	ck_assert(aws_parse_error(AWS_ERRFMT_XML, body, n, code, sizeof(code), msg, sizeof(msg)));
	ck_assert_str_eq(code, "ReplicationGroupNotFoundFault");
	free(body);

	body = load("err_memorydb_cluster_not_found.json", &n);
	ck_assert(aws_parse_error(AWS_ERRFMT_JSON, body, n, code, sizeof(code), msg, sizeof(msg)));
	ck_assert_str_eq(code, "ClusterNotFoundFault");
	ck_assert_str_eq(msg, "Cluster ledgr not found");
	free(body);

	/* "Message" spelled the other way, no namespace prefix */
	lit = "{\"__type\":\"ThrottlingException\",\"Message\":\"slow down\"}";
	ck_assert(aws_parse_error(AWS_ERRFMT_JSON, lit, strlen(lit), code, sizeof(code), msg,
	                          sizeof(msg)));
	ck_assert_str_eq(code, "ThrottlingException");
	ck_assert_str_eq(msg, "slow down");
	/* x-amzn-ErrorType style suffix */
	lit = "{\"__type\":\"InvalidParameterValueException:http://internal.amazon.com/coral/\"}";
	ck_assert(aws_parse_error(AWS_ERRFMT_JSON, lit, strlen(lit), code, sizeof(code), msg,
	                          sizeof(msg)));
	ck_assert_str_eq(code, "InvalidParameterValueException");
	/* EC2-style Query errors */
	lit = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>m</Message>"
	      "</Error></Errors><RequestID>x</RequestID></Response>";
	ck_assert(aws_parse_error(AWS_ERRFMT_XML, lit, strlen(lit), code, sizeof(code), msg,
	                          sizeof(msg)));
	ck_assert_str_eq(code, "RequestLimitExceeded");
	/* not errors at all */
	lit = "<html><body>502 Bad Gateway</body></html>";
	ck_assert(!aws_parse_error(AWS_ERRFMT_XML, lit, strlen(lit), code, sizeof(code), msg,
	                           sizeof(msg)));
	ck_assert_str_eq(code, "");
	lit = "[1,2]";
	ck_assert(!aws_parse_error(AWS_ERRFMT_JSON, lit, strlen(lit), code, sizeof(code), msg,
	                           sizeof(msg)));
	ck_assert(!aws_parse_error(AWS_ERRFMT_JSON, "", 0, code, sizeof(code), msg, sizeof(msg)));
	lit = "{\"__type\": 42}";
	ck_assert(!aws_parse_error(AWS_ERRFMT_JSON, lit, strlen(lit), code, sizeof(code), msg,
	                           sizeof(msg)));
}
END_TEST

START_TEST(test_retry_classify)
{
	ck_assert_int_eq(aws_retry_classify(200, false, false, ""), AWS_RETRY_NO);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "Throttling"), AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "ThrottlingException"),
	                 AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "RequestLimitExceeded"),
	                 AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "APICallRateForCustomerExceeded"),
	                 AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "TooManyRequestsException"),
	                 AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(429, false, false, "HTTP 429"), AWS_RETRY_THROTTLE);
	ck_assert_int_eq(aws_retry_classify(500, false, false, "InternalFailure"),
	                 AWS_RETRY_TRANSIENT);
	ck_assert_int_eq(aws_retry_classify(503, false, false, "HTTP 503"), AWS_RETRY_TRANSIENT);
	ck_assert_int_eq(aws_retry_classify(0, true, false, "Timeout"), AWS_RETRY_TRANSIENT);
	ck_assert_int_eq(aws_retry_classify(0, true, true, "Transport"), AWS_RETRY_NO);
	ck_assert_int_eq(aws_retry_classify(404, false, false, "DBClusterNotFoundFault"),
	                 AWS_RETRY_NO);
	ck_assert_int_eq(aws_retry_classify(403, false, false, "AccessDenied"), AWS_RETRY_NO);
	ck_assert_int_eq(aws_retry_classify(400, false, false, "InvalidParameterValue"),
	                 AWS_RETRY_NO);
	ck_assert(!aws_is_throttle_code(NULL));
	ck_assert(!aws_is_throttle_code("throttling")); /* codes are case-sensitive */
}
END_TEST

START_TEST(test_backoff_schedule)
{
	/* With the largest random value, the ceiling itself: 100, 200, 400 ... capped at 10 s. */
	const int64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000};
	size_t i;

	for (i = 0; i < ARRAY_LEN(want); i++) {
		ck_assert_int_eq(aws_backoff_ms((int)i, UINT32_MAX), want[i]);
		ck_assert_int_eq(aws_backoff_ms((int)i, 0), 0);
		/* full jitter: half the random range gives about half the ceiling */
		ck_assert_int_le(llabs(aws_backoff_ms((int)i, UINT32_MAX / 2) - want[i] / 2), 1);
	}
	ck_assert_int_eq(aws_backoff_ms(1000, UINT32_MAX), 10000); /* no overflow */
	ck_assert_int_eq(aws_backoff_ms(-3, UINT32_MAX), 100);
}
END_TEST

START_TEST(test_xml_reader_limits)
{
	char err[200];
	size_t n;
	char *body;

	body = load("hostile_entity_bomb.xml", &n);
	ck_assert_ptr_null(aws_xml_read(body, n, err, sizeof(err)));
	ck_assert_msg(strstr(err, "DTD") != NULL, "%s", err);
	free(body);
	body = load("hostile_xxe.xml", &n);
	ck_assert_ptr_null(aws_xml_read(body, n, err, sizeof(err)));
	free(body);
	/* an undeclared entity is not well-formed, and nothing is fetched or expanded */
	ck_assert_ptr_null(aws_xml_read("<a>&undeclared;</a>", 19, err, sizeof(err)));
	ck_assert_ptr_null(aws_xml_read("", 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_xml_read("<a>\xff\xfe</a>", 9, err, sizeof(err)));
	ck_assert_msg(strstr(err, "malformed") != NULL, "%s", err);
}
END_TEST

/* ================================================================================================
 * sources/cloud: recorded replies
 * ============================================================================================== */

static bool parse_rds_file(const char *name, const char *id, struct cloud_view *v, char *err,
                           size_t errlen)
{
	size_t n;
	char *body = load(name, &n);
	bool ok = cloud_parse_rds_clusters(body, n, id, v, err, errlen);
	free(body);
	return ok;
}

START_TEST(test_rds_aurora)
{
	struct cloud_view v;
	char err[256];
	int w;

	cloud_view_init(&v);
	ck_assert_msg(parse_rds_file("rds_clusters_aurora_pg.xml", "orders-pg", &v, err, sizeof(err)),
	              "%s", err);
	ck_assert_int_eq(v.kind, CLOUD_RDS);
	ck_assert_str_eq(v.id, "orders-pg");
	ck_assert_str_eq(v.status, "available");
	ck_assert_str_eq(v.engine, "aurora-postgresql");
	ck_assert_str_eq(v.engine_version, "15.4");
	ck_assert_str_eq(v.endpoint, "orders-pg.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com");
	ck_assert_int_eq(v.port, 5432);
	ck_assert(v.multi_az);
	ck_assert_int_eq(v.nmembers, 3);
	w = cloud_view_writer(&v);
	ck_assert_int_eq(w, 0);
	ck_assert_str_eq(v.members[0].id, "orders-pg-1");
	ck_assert_int_eq(v.members[0].promotion_tier, 1);
	ck_assert_int_eq(v.members[1].role, ROLE_READER);
	ck_assert_int_eq(v.members[1].promotion_tier, 0);
	ck_assert_int_eq(v.members[2].role, ROLE_READER);
	ck_assert_int_eq(v.members[2].promotion_tier, 15);
	ck_assert_str_eq(v.members[2].host, ""); /* endpoints come from DescribeDBInstances */
	ck_assert_int_eq(v.members[2].port, 5432);
	ck_assert_int_eq(cloud_view_find(&v, "ORDERS-PG-3"), 2);
	ck_assert_int_eq(cloud_view_find(&v, "orders-pg-9"), -1);
	/* no id: the first cluster */
	ck_assert(parse_rds_file("rds_clusters_aurora_pg.xml", NULL, &v, err, sizeof(err)));
	ck_assert_str_eq(v.id, "orders-pg");
	/* a cluster that is not in the reply leaves the view as it was */
	ck_assert(!parse_rds_file("rds_clusters_aurora_pg.xml", "billing", &v, err, sizeof(err)));
	ck_assert_msg(strstr(err, "billing") != NULL, "%s", err);
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert_str_eq(v.id, "orders-pg");
	cloud_view_free(&v);
	ck_assert_int_eq(v.nmembers, 0);
	ck_assert_ptr_null(v.members);
	cloud_view_free(&v); /* twice is harmless */
}
END_TEST

START_TEST(test_rds_failing_over)
{
	struct cloud_view v;
	char err[256];
	int i;

	cloud_view_init(&v);
	ck_assert_msg(parse_rds_file("rds_clusters_failing_over.xml", "orders-pg", &v, err,
	                             sizeof(err)), "%s", err);
	ck_assert_str_eq(v.status, "failing-over");
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert_int_eq(cloud_view_writer(&v), -1);
	for (i = 0; i < v.nmembers; i++)
		ck_assert_int_eq(v.members[i].role, ROLE_READER);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_rds_multiaz)
{
	struct cloud_view v;
	char err[256];

	cloud_view_init(&v);
	ck_assert_msg(parse_rds_file("rds_clusters_multiaz.xml", "billing-maz", &v, err, sizeof(err)),
	              "%s", err);
	ck_assert_str_eq(v.engine, "mysql");
	ck_assert_int_eq(v.port, 3306);
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert_int_eq(cloud_view_writer(&v), 1);
	ck_assert_str_eq(v.members[1].id, "billing-maz-instance-2");
	ck_assert_int_eq(v.members[0].promotion_tier, -1); /* not given */
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_rds_instances_paginated)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body;

	cloud_view_init(&v);
	ck_assert(parse_rds_file("rds_clusters_aurora_pg.xml", "orders-pg", &v, err, sizeof(err)));
	body = load("rds_instances_page1.xml", &n);
	ck_assert_msg(cloud_parse_rds_instances(body, n, &v, err, sizeof(err)), "%s", err);
	free(body);
	ck_assert_str_eq(v.next_token, "eyJNYXJrZXIiOiBudWxsLCAiYm90b190cnVuY2F0ZV9hbW91bnQiOiAyfQ==");
	ck_assert_str_eq(v.members[0].host, "orders-pg-1.c9akciq32xyz.eu-west-1.rds.amazonaws.com");
	ck_assert_int_eq(v.members[0].port, 5432);
	ck_assert_str_eq(v.members[0].status, "available");
	ck_assert_str_eq(v.members[1].zone, "eu-west-1b");
	ck_assert_str_eq(v.members[2].host, "");
	body = load("rds_instances_page2.xml", &n);
	ck_assert_msg(cloud_parse_rds_instances(body, n, &v, err, sizeof(err)), "%s", err);
	free(body);
	ck_assert_str_eq(v.next_token, "");
	ck_assert_str_eq(v.members[2].host, "orders-pg-3.c9akciq32xyz.eu-west-1.rds.amazonaws.com");
	ck_assert_str_eq(v.members[2].status, "rebooting");
	ck_assert_int_eq(v.nmembers, 3); /* reporting-pg-1 is not a member: ignored */
	/* the roles from DescribeDBClusters survive the merge */
	ck_assert_int_eq(cloud_view_writer(&v), 0);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_ec_cluster_mode_disabled)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body = load("ec_rg_cmd.xml", &n);

	cloud_view_init(&v);
	ck_assert_msg(cloud_parse_ec_replication_groups(body, n, "sessions", NULL, &v, err,
	                                                sizeof(err)), "%s", err);
	ck_assert_int_eq(v.kind, CLOUD_ELASTICACHE);
	ck_assert_str_eq(v.status, "available");
	ck_assert_str_eq(v.engine, "redis");
	ck_assert(!v.cluster_mode);
	ck_assert(v.multi_az);
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert_int_eq(v.ngroups, 1);
	ck_assert_str_eq(v.groups[0].id, "0001");
	ck_assert_str_eq(v.groups[0].primary_host, "master.sessions.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_int_eq(v.groups[0].nmembers, 3);
	ck_assert_int_eq(cloud_view_writer(&v), 1);
	ck_assert_str_eq(v.members[1].id, "sessions-002");
	ck_assert_str_eq(v.members[1].node_id, "0001");
	ck_assert_str_eq(v.members[1].host, "sessions-002.sessions.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_int_eq(v.members[1].port, 6379);
	ck_assert_str_eq(v.members[1].zone, "eu-west-1b");
	ck_assert_str_eq(v.members[1].group, "0001");
	ck_assert_int_eq(v.members[0].role, ROLE_READER);
	ck_assert_int_eq(v.members[2].role, ROLE_READER);
	/* shard filter */
	ck_assert(cloud_parse_ec_replication_groups(body, n, "sessions", "0001", &v, err,
	                                            sizeof(err)));
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert(!cloud_parse_ec_replication_groups(body, n, "sessions", "0007", &v, err,
	                                             sizeof(err)));
	ck_assert_msg(strstr(err, "0007") != NULL, "%s", err);
	ck_assert(!cloud_parse_ec_replication_groups(body, n, "sessionz", NULL, &v, err,
	                                             sizeof(err)));
	ck_assert_int_eq(v.nmembers, 3);
	free(body);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_ec_cluster_mode_enabled)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body = load("ec_rg_cme.xml", &n), *cc;
	int i;

	cloud_view_init(&v);
	ck_assert_msg(cloud_parse_ec_replication_groups(body, n, "carts", NULL, &v, err, sizeof(err)),
	              "%s", err);
	ck_assert(v.cluster_mode);
	ck_assert_str_eq(v.engine, "valkey");
	ck_assert_str_eq(v.endpoint, "clustercfg.carts.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_int_eq(v.port, 6379);
	ck_assert_int_eq(v.ngroups, 2);
	ck_assert_int_eq(v.nmembers, 4);
	ck_assert_str_eq(v.groups[1].status, "modifying");
	/* no CurrentRole in cluster mode: the probes decide */
	for (i = 0; i < v.nmembers; i++) {
		ck_assert_int_eq(v.members[i].role, ROLE_UNKNOWN);
		ck_assert_str_eq(v.members[i].host, "");
	}
	ck_assert_int_eq(cloud_view_writer(&v), -1);
	/* node endpoints come from DescribeCacheClusters */
	cc = load("ec_cache_clusters_cme.xml", &n);
	ck_assert_msg(cloud_parse_ec_cache_clusters(cc, n, &v, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(v.members[0].host, "carts-0001-001.carts.x1y2z3.euw1.cache.amazonaws.com");
	ck_assert_int_eq(v.members[3].port, 6379);
	ck_assert_str_eq(v.members[3].status, "modifying");
	ck_assert_str_eq(v.members[3].zone, "eu-west-1c");
	ck_assert_str_eq(v.next_token, "");
	free(cc);

	/* one shard only */
	n = strlen(body);
	ck_assert(cloud_parse_ec_replication_groups(body, n, "carts", "0002", &v, err, sizeof(err)));
	ck_assert_int_eq(v.nmembers, 2);
	ck_assert_int_eq(v.ngroups, 1);
	ck_assert_str_eq(v.members[0].id, "carts-0002-001");
	ck_assert_str_eq(v.members[0].group, "0002");
	free(body);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_ec_global)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body = load("ec_global.xml", &n);
	int w;

	cloud_view_init(&v);
	ck_assert_msg(cloud_parse_ec_global_groups(body, n, "ldgnf-profiles", &v, err, sizeof(err)),
	              "%s", err);
	ck_assert_int_eq(v.kind, CLOUD_ELASTICACHE_GLOBAL);
	ck_assert_str_eq(v.status, "available");
	ck_assert_int_eq(v.nmembers, 2);
	w = cloud_view_writer(&v);
	ck_assert_int_eq(w, 1);
	ck_assert_str_eq(v.members[w].region, "eu-west-1");
	ck_assert_str_eq(v.members[w].group, "profiles-euw1");
	ck_assert_str_eq(v.members[0].region, "us-east-1");
	ck_assert_int_eq(v.members[0].role, ROLE_READER);
	ck_assert_str_eq(v.members[0].status, "associated");
	ck_assert(!cloud_parse_ec_global_groups(body, n, "nope", &v, err, sizeof(err)));
	free(body);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_memorydb)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body = load("memorydb_clusters.json", &n);
	int i;

	cloud_view_init(&v);
	ck_assert_msg(cloud_parse_memorydb_clusters(body, n, "ledger", NULL, &v, err, sizeof(err)),
	              "%s", err);
	ck_assert_int_eq(v.kind, CLOUD_MEMORYDB);
	ck_assert_str_eq(v.status, "available");
	ck_assert_str_eq(v.engine, "valkey");
	ck_assert(v.cluster_mode);
	ck_assert(v.multi_az);
	ck_assert_str_eq(v.next_token, "AAMA-EFRSN-PmYsS3lD9tPnaaCw1wLm5xWDE2Zw");
	ck_assert_int_eq(v.ngroups, 2);
	ck_assert_int_eq(v.nmembers, 4);
	for (i = 0; i < v.nmembers; i++)
		ck_assert_int_eq(v.members[i].role, ROLE_UNKNOWN);
	ck_assert_str_eq(v.members[2].id, "ledger-0002-001");
	ck_assert_str_eq(v.members[2].group, "0002");
	ck_assert_str_eq(v.members[2].host,
	                 "ledger-0002-001.ledger.abcde1.memorydb.us-west-2.amazonaws.com");
	ck_assert_int_eq(v.members[2].port, 6379);
	ck_assert_str_eq(v.members[3].zone, "us-west-2c");
	ck_assert(cloud_parse_memorydb_clusters(body, n, "ledger", "0001", &v, err, sizeof(err)));
	ck_assert_int_eq(v.nmembers, 2);
	ck_assert_str_eq(v.members[1].id, "ledger-0001-002");
	ck_assert(!cloud_parse_memorydb_clusters(body, n, "ledger", "0009", &v, err, sizeof(err)));
	ck_assert(!cloud_parse_memorydb_clusters(body, n, "other", NULL, &v, err, sizeof(err)));
	ck_assert_int_eq(v.nmembers, 2);
	free(body);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_error_bodies_to_parsers)
{
	struct cloud_view v;
	char err[256];
	size_t n;
	char *body;

	cloud_view_init(&v);
	body = load("err_rds_cluster_not_found.xml", &n);
	ck_assert(!cloud_parse_rds_clusters(body, n, "orders-pgx", &v, err, sizeof(err)));
	ck_assert_str_eq(err, "AWS error DBClusterNotFoundFault: DBCluster orders-pgx not found.");
	free(body);
	body = load("err_throttling.xml", &n);
	ck_assert(!cloud_parse_rds_instances(body, n, &v, err, sizeof(err)));
	ck_assert_str_eq(err, "AWS error Throttling: Rate exceeded");
	free(body);
	body = load("err_ec_rg_not_found.xml", &n);
	ck_assert(!cloud_parse_ec_replication_groups(body, n, "sessionz", NULL, &v, err,
	                                             sizeof(err)));
	ck_assert_msg(strstr(err, "ReplicationGroupNotFoundFault") != NULL, "%s", err);
	free(body);
	body = load("err_memorydb_cluster_not_found.json", &n);
	ck_assert(!cloud_parse_memorydb_clusters(body, n, "ledgr", NULL, &v, err, sizeof(err)));
	ck_assert_str_eq(err, "AWS error ClusterNotFoundFault: Cluster ledgr not found");
	free(body);
	ck_assert_int_eq(v.nmembers, 0);
}
END_TEST

/* ================================================================================================
 * sources/cloud: hostile replies
 * ============================================================================================== */

/* A DescribeDBClusters reply with one member, with pieces replaceable. */
#define RDS_REPLY_FMT \
		"<DescribeDBClustersResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\">" \
		"<DescribeDBClustersResult><DBClusters><DBCluster>" \
		"<DBClusterIdentifier>c1</DBClusterIdentifier><Status>%s</Status>%s" \
		"<DBClusterMembers><DBClusterMember><DBInstanceIdentifier>%s</DBInstanceIdentifier>" \
		"<IsClusterWriter>true</IsClusterWriter></DBClusterMember></DBClusterMembers>" \
		"</DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>"

static char *rds_reply(const char *status, const char *member_id, const char *extra)
{
	size_t n = strlen(RDS_REPLY_FMT) + strlen(status) + strlen(member_id) + strlen(extra) + 1;
	char *s = malloc(n);

	ck_assert_ptr_nonnull(s);
	snprintf(s, n, RDS_REPLY_FMT, status, extra, member_id);
	return s;
}

#define INST_REPLY_FMT \
		"<DescribeDBInstancesResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\">" \
		"<DescribeDBInstancesResult><DBInstances><DBInstance>" \
		"<DBInstanceIdentifier>i1</DBInstanceIdentifier>" \
		"<Endpoint><Address>%s</Address><Port>%s</Port></Endpoint>" \
		"</DBInstance></DBInstances></DescribeDBInstancesResult></DescribeDBInstancesResponse>"

static char *instances_reply(const char *addr, const char *port)
{
	size_t n = strlen(INST_REPLY_FMT) + strlen(addr) + strlen(port) + 1;
	char *s = malloc(n);

	ck_assert_ptr_nonnull(s);
	snprintf(s, n, INST_REPLY_FMT, addr, port);
	return s;
}

static bool try_rds(const char *body, struct cloud_view *v, char *err, size_t errlen)
{
	return cloud_parse_rds_clusters(body, strlen(body), NULL, v, err, errlen);
}

START_TEST(test_hostile_xml_files)
{
	static const char *const files[] = {"hostile_truncated.xml", "hostile_wrong_ns.xml",
	                                    "hostile_entity_bomb.xml", "hostile_xxe.xml",
	                                    "rds_instances_page1.xml" /* wrong root */,
	                                    "ec_rg_cmd.xml" /* wrong service */};
	struct cloud_view v;
	char err[256];
	size_t i, n;

	cloud_view_init(&v);
	ck_assert(parse_rds_file("rds_clusters_aurora_pg.xml", NULL, &v, err, sizeof(err)));
	for (i = 0; i < ARRAY_LEN(files); i++) {
		char *body = load(files[i], &n);
		int64_t t0 = now_ms();
		ck_assert_msg(!cloud_parse_rds_clusters(body, n, NULL, &v, err, sizeof(err)), "%s",
		              files[i]);
		ck_assert_msg(err[0] != '\0', "%s: no reason", files[i]);
		ck_assert_msg(now_ms() - t0 < 1000, "%s took too long", files[i]);
		/* the view from before is intact */
		ck_assert_int_eq(v.nmembers, 3);
		ck_assert_str_eq(v.id, "orders-pg");
		free(body);
	}
	/* the namespace check names the culprit */
	{
		char *body = load("hostile_wrong_ns.xml", &n);
		ck_assert(!cloud_parse_rds_clusters(body, n, NULL, &v, err, sizeof(err)));
		ck_assert_msg(strstr(err, "namespace") != NULL, "%s", err);
		free(body);
	}
	/* an ElastiCache reply under the RDS namespace is refused too */
	{
		char *body = load("ec_rg_cmd.xml", &n);
		ck_assert(!cloud_parse_rds_instances(body, n, &v, err, sizeof(err)));
		free(body);
	}
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_hostile_huge_strings)
{
	struct cloud_view v;
	char err[256];
	size_t big = 1 << 20;
	char *huge = malloc(big + 1), *body;

	cloud_view_init(&v);
	memset(huge, 'x', big);
	huge[big] = '\0';
	/* 1 MB of status: free text, cut */
	body = rds_reply(huge, "m1", "");
	ck_assert_msg(try_rds(body, &v, err, sizeof(err)), "%s", err);
	ck_assert_uint_eq(strlen(v.status), sizeof(v.status) - 1);
	free(body);
	/* 1 MB of identifier: an identifier is never cut */
	body = rds_reply("available", huge, "");
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	ck_assert_msg(strstr(err, "too long") != NULL, "%s", err);
	free(body);
	/* a status of multi-byte characters is cut on a character boundary */
	{
		char s[200] = "";
		int i;
		for (i = 0; i < 30; i++)
			strcat(s, "\xc3\xa9"); /* é */
		body = rds_reply(s, "m1", "");
		ck_assert(try_rds(body, &v, err, sizeof(err)));
		ck_assert_uint_eq(strlen(v.status) % 2, 0);
		ck_assert_uint_eq(strlen(v.status), 46);
		free(body);
	}
	/* a huge AWS error message */
	{
#define ERR_FMT \
	"<ErrorResponse><Error><Code>Throttling</Code><Message>%s</Message></Error></ErrorResponse>"
		size_t n = strlen(ERR_FMT) + big;
		char code[64], msg[128];
		body = malloc(n);
		snprintf(body, n, ERR_FMT, huge);
		ck_assert(aws_parse_error(AWS_ERRFMT_XML, body, strlen(body), code, sizeof(code), msg,
		                          sizeof(msg)));
		ck_assert_str_eq(code, "Throttling");
		ck_assert_uint_eq(strlen(msg), sizeof(msg) - 1);
		free(body);
	}
	/* 1 MB JSON string */
	{
#define MDB_FMT "{\"Clusters\":[{\"Name\":\"%s\",\"Status\":\"available\"}]}"
		size_t n = strlen(MDB_FMT) + big;
		body = malloc(n);
		snprintf(body, n, MDB_FMT, huge);
		ck_assert(!cloud_parse_memorydb_clusters(body, strlen(body), NULL, NULL, &v, err,
		                                         sizeof(err)));
		free(body);
	}
	free(huge);
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_hostile_values)
{
	struct cloud_view v;
	char err[256];
	char *body;
	size_t i;
	static const char *const bad_ports[] = {"0", "70000", "-1", "abc", "", "99999999999999999999",
	                                        "6379x"};
	static const char *const bad_hosts[] = {"evil host.example.com", "a<b>.com", "x\ny", "",
	                                        "h%41.example.com"};

	cloud_view_init(&v);
	ck_assert(parse_rds_file("rds_clusters_aurora_pg.xml", NULL, &v, err, sizeof(err)));
	for (i = 0; i < ARRAY_LEN(bad_ports); i++) {
		body = instances_reply("i1.example.com", bad_ports[i]);
		ck_assert_msg(!cloud_parse_rds_instances(body, strlen(body), &v, err, sizeof(err)),
		              "port '%s' accepted", bad_ports[i]);
		free(body);
	}
	for (i = 0; i < ARRAY_LEN(bad_hosts); i++) {
		body = instances_reply(bad_hosts[i], "5432");
		ck_assert_msg(!cloud_parse_rds_instances(body, strlen(body), &v, err, sizeof(err)),
		              "host '%s' accepted", bad_hosts[i]);
		free(body);
	}
	body = instances_reply("fd00:ec2::10", "5432"); /* an IPv6 literal is a host */
	ck_assert_msg(cloud_parse_rds_instances(body, strlen(body), &v, err, sizeof(err)), "%s", err);
	free(body);

	/* IsClusterWriter that is not a boolean; nested junk in a leaf; missing fields */
	body = rds_reply("available", "m1", "");
	{
		char *p = strstr(body, "true</IsClusterWriter>");
		memcpy(p, "yes!", 4);
	}
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	free(body);
	body = rds_reply("<b>available</b>", "m1", "");
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	free(body);
	body = rds_reply("available", "m1", "<Port>99999</Port>");
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	free(body);
	body = rds_reply("available", "", "");
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	free(body);
	ck_assert(!try_rds("<DescribeDBClustersResponse xmlns=\"http://rds.amazonaws.com/doc/"
	                   "2014-10-31/\"><DescribeDBClustersResult><DBClusters><DBCluster>"
	                   "<Status>available</Status></DBCluster></DBClusters>"
	                   "</DescribeDBClustersResult></DescribeDBClustersResponse>",
	                   &v, err, sizeof(err)));
	ck_assert_msg(strstr(err, "DBClusterIdentifier") != NULL, "%s", err);
	ck_assert(!try_rds("<DescribeDBClustersResponse xmlns=\"http://rds.amazonaws.com/doc/"
	                   "2014-10-31/\"><DescribeDBClustersResult><DBClusters/>"
	                   "</DescribeDBClustersResult></DescribeDBClustersResponse>",
	                   &v, err, sizeof(err)));
	/* the same member twice */
	{
		const char *dup =
			"<DescribeDBClustersResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\">"
			"<DescribeDBClustersResult><DBClusters><DBCluster>"
			"<DBClusterIdentifier>c1</DBClusterIdentifier><Status>available</Status>"
			"<DBClusterMembers>"
			"<DBClusterMember><DBInstanceIdentifier>m1</DBInstanceIdentifier>"
			"<IsClusterWriter>true</IsClusterWriter></DBClusterMember>"
			"<DBClusterMember><DBInstanceIdentifier>M1</DBInstanceIdentifier>"
			"<IsClusterWriter>false</IsClusterWriter></DBClusterMember>"
			"</DBClusterMembers></DBCluster></DBClusters></DescribeDBClustersResult>"
			"</DescribeDBClustersResponse>";
		ck_assert(!try_rds(dup, &v, err, sizeof(err)));
		ck_assert_msg(strstr(err, "twice") != NULL, "%s", err);
	}
	/* invalid UTF-8 */
	body = rds_reply("avail\xff\xfe", "m1", "");
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	free(body);
	/* throughout: the good view is untouched */
	ck_assert_int_eq(v.nmembers, 3);
	ck_assert_str_eq(v.members[0].id, "orders-pg-1");
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_hostile_nesting)
{
	struct cloud_view v;
	char err[256];
	size_t depth = 100000, i, n;
	char *body = malloc(depth * 7 + 64), *p;

	cloud_view_init(&v);
	/* deeply nested XML */
	p = body;
	for (i = 0; i < depth; i++)
		p += sprintf(p, "<a>");
	*p = '\0';
	ck_assert(!try_rds(body, &v, err, sizeof(err)));
	/* deeply nested JSON */
	p = body;
	p += sprintf(p, "{\"Clusters\":");
	for (i = 0; i < depth; i++)
		*p++ = '[';
	*p = '\0';
	n = (size_t)(p - body);
	ck_assert(!cloud_parse_memorydb_clusters(body, n, NULL, NULL, &v, err, sizeof(err)));
	free(body);
	/* many members: bounded */
	{
		size_t cap = (CLOUD_MAX_MEMBERS + 1) * 120 + 512;
		char *b = malloc(cap);
		int k;
		p = b;
		p += sprintf(p, "{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"available\",\"Shards\":"
		                "[{\"Name\":\"0001\",\"Nodes\":[");
		for (k = 0; k <= CLOUD_MAX_MEMBERS; k++)
			p += sprintf(p, "%s{\"Name\":\"n%d\"}", k ? "," : "", k);
		p += sprintf(p, "]}]}]}");
		ck_assert(!cloud_parse_memorydb_clusters(b, (size_t)(p - b), NULL, NULL, &v, err,
		                                         sizeof(err)));
		ck_assert_msg(strstr(err, "more than") != NULL, "%s", err);
		free(b);
	}
	cloud_view_free(&v);
}
END_TEST

START_TEST(test_hostile_json)
{
	static const char *const bad[] = {
		"",
		"{",
		"[]",
		"null",
		"{\"Clusters\":{}}",
		"{\"Clusters\":[1]}",
		"{\"Clusters\":[]}",
		"{\"Clusters\":[{\"Name\":7,\"Status\":\"available\"}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":[]}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Shards\":{}}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Shards\":[\"x\"]}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Shards\":[{\"Name\":\"1\","
		"\"Nodes\":[{\"Name\":\"n\",\"Endpoint\":{\"Address\":\"h\",\"Port\":6379.5}}]}]}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Shards\":[{\"Name\":\"1\","
		"\"Nodes\":[{\"Name\":\"n\",\"Endpoint\":{\"Address\":\"h\",\"Port\":0}}]}]}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Shards\":[{\"Name\":\"1\","
		"\"Nodes\":[{\"Name\":\"n\",\"Endpoint\":\"h:6379\"}]}]}]}",
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\",\"Name\":\"d\"}]}", /* duplicate key */
		"{\"Clusters\":[{\"Name\":\"c\\u0000d\",\"Status\":\"ok\"}]}",        /* NUL */
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"\xff\"}]}",              /* bad UTF-8 */
		"{\"Clusters\":[{\"Name\":\"c\",\"Status\":\"ok\"}],\"NextToken\":5}",
	};
	struct cloud_view v;
	char err[256];
	size_t i, n;
	char *body = load("hostile_memorydb_types.json", &n);

	cloud_view_init(&v);
	ck_assert(!cloud_parse_memorydb_clusters(body, n, NULL, NULL, &v, err, sizeof(err)));
	ck_assert_msg(strstr(err, "Port") != NULL, "%s", err);
	free(body);
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		ck_assert_msg(!cloud_parse_memorydb_clusters(bad[i], strlen(bad[i]), NULL, NULL, &v, err,
		                                             sizeof(err)),
		              "accepted: %s", bad[i]);
		ck_assert(err[0] != '\0');
	}
	ck_assert(!cloud_parse_memorydb_clusters(NULL, 0, NULL, NULL, &v, err, sizeof(err)));
	ck_assert_int_eq(v.nmembers, 0);
	cloud_view_free(&v);
}
END_TEST

/* ================================================================================================
 * aws/creds: pure parts
 * ============================================================================================== */

START_TEST(test_iso8601)
{
	int64_t t;

	ck_assert(aws_parse_iso8601("1970-01-01T00:00:00Z", &t));
	ck_assert_int_eq(t, 0);
	ck_assert(aws_parse_iso8601("2024-05-08T11:21:17Z", &t));
	ck_assert_int_eq(t, 1715167277000LL);
	ck_assert(aws_parse_iso8601("2024-05-08T11:21:17.250Z", &t));
	ck_assert_int_eq(t, 1715167277250LL);
	ck_assert(aws_parse_iso8601("2024-05-08T13:21:17+02:00", &t));
	ck_assert_int_eq(t, 1715167277000LL);
	ck_assert(aws_parse_iso8601("2024-05-08T06:21:17-0500", &t));
	ck_assert_int_eq(t, 1715167277000LL);
	ck_assert(aws_parse_iso8601("2024-02-29T00:00:00Z", &t)); /* leap day */
	ck_assert_int_eq(t, 1709164800000LL);
	ck_assert(aws_parse_iso8601("2000-03-01T00:00:00.1Z", &t));
	ck_assert_int_eq(t, 951868800100LL);
	ck_assert(!aws_parse_iso8601("2023-02-29T00:00:00Z", &t));
	ck_assert(!aws_parse_iso8601("2024-05-08T11:21:17", &t)); /* no zone */
	ck_assert(!aws_parse_iso8601("2024-05-08 junk", &t));
	ck_assert(!aws_parse_iso8601("2024-13-08T11:21:17Z", &t));
	ck_assert(!aws_parse_iso8601("2024-05-08T24:00:00Z", &t));
	ck_assert(!aws_parse_iso8601("2024-05-08T11:21:17Zjunk", &t));
	ck_assert(!aws_parse_iso8601("", &t));
	ck_assert(!aws_parse_iso8601(NULL, &t));
}
END_TEST

START_TEST(test_refresh_deadline)
{
	const int64_t now = 1715167277000LL, min = 60 * 1000;
	struct aws_credentials c;

	/* an hour left: 5 minutes before the expiry */
	ck_assert_int_eq(aws_creds_refresh_at(now, now + 60 * min), now + 55 * min);
	/* 15 minutes (IMDS's shortest): still 5 minutes ahead */
	ck_assert_int_eq(aws_creds_refresh_at(now, now + 15 * min), now + 10 * min);
	/* short-lived: halfway */
	ck_assert_int_eq(aws_creds_refresh_at(now, now + 6 * min), now + 3 * min);
	ck_assert_int_eq(aws_creds_refresh_at(now, now + 10 * min), now + 5 * min);
	ck_assert_int_eq(aws_creds_refresh_at(now, now - 1), now);
	ck_assert_int_eq(aws_creds_refresh_at(now, 0), INT64_MAX);

	memset(&c, 0, sizeof(c));
	ck_assert(!aws_creds_usable(&c, now));
	strcpy(c.access_key_id, "AKIA");
	strcpy(c.secret_access_key, "s");
	ck_assert(aws_creds_usable(&c, now));
	c.expiration_ms = now + 2 * min;
	ck_assert(aws_creds_usable(&c, now));
	c.expiration_ms = now + 30 * 1000; /* inside the margin */
	ck_assert(!aws_creds_usable(&c, now));
	ck_assert(!aws_creds_usable(NULL, now));
}
END_TEST

START_TEST(test_creds_replies)
{
	struct aws_credentials c;
	char err[200];
	size_t n;
	char *body;
	const char *lit;

	body = load("sts_web_identity.xml", &n);
	ck_assert_msg(aws_creds_parse_sts(body, n, &c, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
	ck_assert_str_eq(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
	ck_assert(strncmp(c.session_token, "IQoJb3JpZ2lu", 12) == 0);
	ck_assert_int_eq(c.expiration_ms, 1715167277000LL);
	free(body);
	body = load("imds_creds.json", &n);
	ck_assert_msg(aws_creds_parse_json(body, n, &c, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(c.access_key_id, "ASIAEXAMPLEIMDSKEY01");
	ck_assert_str_eq(c.session_token, "IQoJb3JpZ2luX2VjEImdsEXAMPLEtoken==");
	ck_assert(c.expiration_ms > 0);
	free(body);
	body = load("ecs_creds.json", &n);
	ck_assert_msg(aws_creds_parse_json(body, n, &c, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(c.secret_access_key, "ecsSecretEXAMPLE+abcdefghijklmnopqrstu");
	free(body);

	/* errors */
	lit = "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"no\"}";
	ck_assert(!aws_creds_parse_json(lit, strlen(lit), &c, err, sizeof(err)));
	ck_assert_str_eq(c.access_key_id, ""); /* nothing half-filled */
	lit = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":5}";
	ck_assert(!aws_creds_parse_json(lit, strlen(lit), &c, err, sizeof(err)));
	lit = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"tomorrow\"}";
	ck_assert(!aws_creds_parse_json(lit, strlen(lit), &c, err, sizeof(err)));
	lit = "{\"AccessKeyId\":\"A\\r\\nX-Evil: 1\",\"SecretAccessKey\":\"S\"}";
	ck_assert(!aws_creds_parse_json(lit, strlen(lit), &c, err, sizeof(err)));
	lit = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\"}"; /* long-term keys: fine */
	ck_assert(aws_creds_parse_json(lit, strlen(lit), &c, err, sizeof(err)));
	ck_assert_int_eq(c.expiration_ms, 0);
	body = load("err_throttling.xml", &n);
	ck_assert(!aws_creds_parse_sts(body, n, &c, err, sizeof(err)));
	free(body);
	body = load("hostile_entity_bomb.xml", &n);
	ck_assert(!aws_creds_parse_sts(body, n, &c, err, sizeof(err)));
	free(body);
}
END_TEST

static char *profile_text(const char *name)
{
	return load(name, NULL);
}

START_TEST(test_profiles)
{
	struct aws_profile p;
	char err[256];
	char *cred = profile_text("credentials.ini"), *conf = profile_text("config.ini");

	ck_assert_msg(aws_profile_parse(cred, conf, "default", &p, err, sizeof(err)), "%s", err);
	ck_assert(p.found);
	ck_assert_str_eq(p.access_key_id, "AKIADEFAULTEXAMPLE01");
	ck_assert_str_eq(p.secret_access_key, "defaultSecretEXAMPLE/abcdefghijklmnopqrst");
	ck_assert_str_eq(p.region, "eu-west-1");

	/* credentials file over config file; inline comment dropped; a 380-byte token line */
	ck_assert_msg(aws_profile_parse(cred, conf, "ops", &p, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(p.access_key_id, "AKIAOPSEXAMPLE000001");
	ck_assert_str_eq(p.secret_access_key, "opsSecretEXAMPLE+abcdefghijklmnopqrstuvw");
	ck_assert_str_eq(p.region, "us-east-2"); /* "[ops]" in the config file does not count */
	ck_assert_uint_gt(strlen(p.session_token), 300); /* inih alone stops at 200 */
	ck_assert(strncmp(p.session_token, "FwoGZXIvYXdzEJr//", 17) == 0);
	ck_assert_int_eq(p.session_token[strlen(p.session_token) - 1], '=');

	ck_assert(aws_profile_parse(cred, conf, "irsa", &p, err, sizeof(err)));
	ck_assert_str_eq(p.role_arn, "arn:aws:iam::123456789012:role/repoint");
	ck_assert_str_eq(p.web_identity_token_file,
	                 "/var/run/secrets/eks.amazonaws.com/serviceaccount/token");
	ck_assert_str_eq(p.role_session_name, "repoint-test");
	ck_assert_str_eq(p.region, "eu-central-1");
	ck_assert_str_eq(p.access_key_id, "");

	ck_assert(aws_profile_parse(cred, conf, "chained", &p, err, sizeof(err)));
	ck_assert_str_eq(p.unsupported, "source_profile");

	ck_assert(aws_profile_parse(cred, conf, "missing", &p, err, sizeof(err)));
	ck_assert(!p.found);
	/* "[profile ops]" in a credentials file is a profile named "profile ops" */
	ck_assert(aws_profile_parse(cred, NULL, "profile ops", &p, err, sizeof(err)));
	ck_assert_str_eq(p.access_key_id, "AKIAWRONGEXAMPLE0001");
	/* "[profile default]" works in the config file, NULL profile means default */
	ck_assert(aws_profile_parse(NULL, "[profile default]\nregion = sa-east-1\n", NULL, &p, err,
	                            sizeof(err)));
	ck_assert_str_eq(p.region, "sa-east-1");
	/* broken files say where */
	ck_assert(!aws_profile_parse("[default]\nthis line is junk\n", NULL, "default", &p, err,
	                             sizeof(err)));
	ck_assert_str_eq(err, "credentials:2: cannot parse this line");
	free(cred);
	free(conf);

	/* the same from files; a missing file is no error */
	ck_assert(aws_profile_load(DATA "credentials.ini", DATA "nope.ini", "ops", &p, err,
	                           sizeof(err)));
	ck_assert_str_eq(p.access_key_id, "AKIAOPSEXAMPLE000001");
	ck_assert_str_eq(p.region, "");
	ck_assert(!aws_profile_load(DATA, NULL, "ops", &p, err, sizeof(err))); /* a directory */
}
END_TEST

/* An environment for tests: NAME, VALUE pairs. */
struct fake_env {
	const char *kv[64];
};

static const char *fake_getenv(void *arg, const char *name)
{
	struct fake_env *e = arg;
	int i;

	for (i = 0; e->kv[i] != NULL; i += 2)
		if (strcmp(e->kv[i], name) == 0)
			return e->kv[i + 1];
	return NULL;
}

#define FILES \
	"AWS_SHARED_CREDENTIALS_FILE", DATA "credentials.ini", "AWS_CONFIG_FILE", DATA "config.ini"

START_TEST(test_plan_precedence)
{
	struct aws_creds_plan pl;
	char err[256];

	/* 1. the environment wins over everything */
	{
		struct fake_env e = {{FILES, "AWS_ACCESS_KEY_ID", "AKIAENV", "AWS_SECRET_ACCESS_KEY",
		                      "envsecret", "AWS_SESSION_TOKEN", "envtoken",
		                      "AWS_WEB_IDENTITY_TOKEN_FILE", "/t", "AWS_ROLE_ARN", "arn:r",
		                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds", NULL}};
		ck_assert_msg(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)), "%s",
		              err);
		ck_assert_int_eq(pl.source, AWS_CREDS_ENV);
		ck_assert_str_eq(pl.creds.access_key_id, "AKIAENV");
		ck_assert_str_eq(pl.creds.session_token, "envtoken");
		ck_assert_str_eq(pl.region, "eu-west-1"); /* from the default profile */
	}
	/* half a key pair is an error, not a silent fallback */
	{
		struct fake_env e = {{FILES, "AWS_ACCESS_KEY_ID", "AKIAENV", NULL}};
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_msg(strstr(err, "AWS_SECRET_ACCESS_KEY") != NULL, "%s", err);
	}
	/* empty values count as unset */
	{
		struct fake_env e = {{FILES, "AWS_ACCESS_KEY_ID", "", "AWS_SECRET_ACCESS_KEY", "", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_PROFILE);
	}
	/* 2. web identity over the shared files */
	{
		struct fake_env e = {{FILES, "AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token",
		                      "AWS_ROLE_ARN", "arn:aws:iam::1:role/r", "AWS_REGION", "ap-south-1",
		                      NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_WEB_IDENTITY);
		ck_assert_str_eq(pl.token_file, "/var/run/token");
		ck_assert_str_eq(pl.role_arn, "arn:aws:iam::1:role/r");
		ck_assert(strncmp(pl.role_session_name, "repoint-", 8) == 0);
		ck_assert_str_eq(pl.region, "ap-south-1");
		ck_assert_str_eq(pl.sts_endpoint, "https://sts.ap-south-1.amazonaws.com/");
	}
	{
		struct fake_env e = {{"AWS_WEB_IDENTITY_TOKEN_FILE", "/t", "AWS_ROLE_ARN", "arn:r",
		                      "AWS_ROLE_SESSION_NAME", "s1", "AWS_ENDPOINT_URL_STS",
		                      "http://127.0.0.1:9/sts", "AWS_EC2_METADATA_DISABLED", "true", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.role_session_name, "s1");
		ck_assert_str_eq(pl.sts_endpoint, "http://127.0.0.1:9/sts");
		ck_assert_str_eq(pl.region, "");
	}
	/* 3. profiles: the [aws] profile over AWS_PROFILE */
	{
		struct fake_env e = {{FILES, "AWS_PROFILE", "irsa", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, "ops", NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_PROFILE);
		ck_assert_str_eq(pl.profile, "ops");
		ck_assert_str_eq(pl.creds.access_key_id, "AKIAOPSEXAMPLE000001");
		ck_assert_uint_gt(strlen(pl.creds.session_token), 300);
		ck_assert_str_eq(pl.region, "us-east-2");
		/* AWS_PROFILE -> a web identity profile */
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_WEB_IDENTITY);
		ck_assert_str_eq(pl.role_session_name, "repoint-test");
		ck_assert_str_eq(pl.sts_endpoint, "https://sts.eu-central-1.amazonaws.com/");
		/* the [aws] region over everything */
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, "us-west-1", &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.region, "us-west-1");
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, "us west", &pl, err, sizeof(err)));
	}
	{
		struct fake_env e = {{FILES, "AWS_PROFILE", "nope", NULL}};
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_msg(strstr(err, "'nope' not found") != NULL, "%s", err);
		ck_assert(!aws_creds_plan(fake_getenv, &e, "chained", NULL, &pl, err, sizeof(err)));
		ck_assert_msg(strstr(err, "source_profile") != NULL, "%s", err);
	}
	/* AWS_REGION over AWS_DEFAULT_REGION over the profile */
	{
		struct fake_env e = {{FILES, "AWS_DEFAULT_REGION", "eu-north-1", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.region, "eu-north-1");
	}
	/* a broken config file does not get in the way of keys from the environment... */
	{
		struct fake_env e = {{"AWS_CONFIG_FILE", DATA "config_broken.ini",
		                      "AWS_ACCESS_KEY_ID", "AKIAENV", "AWS_SECRET_ACCESS_KEY", "s", NULL}};
		ck_assert_msg(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)), "%s",
		              err);
		ck_assert_int_eq(pl.source, AWS_CREDS_ENV);
		/* ...but it does when the chain gets to the files, or the profile was asked for */
		e.kv[2] = NULL;
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_msg(strstr(err, "config_broken.ini:3:") != NULL, "%s", err);
		e.kv[2] = "AWS_ACCESS_KEY_ID";
		ck_assert(!aws_creds_plan(fake_getenv, &e, "default", NULL, &pl, err, sizeof(err)));
	}
	/* ~ expansion through HOME */
	{
		struct fake_env e = {{"HOME", TEST_SRCDIR "/tests/unit/data/aws", "AWS_CONFIG_FILE",
		                      "~/config.ini", "AWS_SHARED_CREDENTIALS_FILE", "~/credentials.ini",
		                      NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, "ops", NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.creds.access_key_id, "AKIAOPSEXAMPLE000001");
	}
}
END_TEST

START_TEST(test_plan_container_imds)
{
	struct aws_creds_plan pl;
	char err[256];

	/* 4. container, relative to the ECS agent */
	{
		struct fake_env e = {{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc",
		                      "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/x", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_CONTAINER);
		ck_assert_str_eq(pl.container_url, "http://169.254.170.2/v2/credentials/abc");
	}
	{
		struct fake_env e = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI",
		                      "http://169.254.170.23/v1/credentials",
		                      "AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer t",
		                      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/pod-token", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.container_url, "http://169.254.170.23/v1/credentials");
		/* the file wins over the value */
		ck_assert_str_eq(pl.container_token_file, "/var/run/pod-token");
		ck_assert_str_eq(pl.container_token, "");
	}
	{
		struct fake_env e = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.8/creds", NULL}};
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
	}
	ck_assert(aws_container_uri_allowed("https://creds.example.com/x"));
	ck_assert(aws_container_uri_allowed("http://127.0.0.1:8080/x"));
	ck_assert(aws_container_uri_allowed("http://localhost/x"));
	ck_assert(aws_container_uri_allowed("http://[::1]:80/x"));
	ck_assert(aws_container_uri_allowed("http://[fd00:ec2::23]/v1"));
	ck_assert(!aws_container_uri_allowed("http://169.254.170.2.evil.com/x"));
	ck_assert(!aws_container_uri_allowed("http://127.0.0.1@evil.com/x"));
	ck_assert(!aws_container_uri_allowed("ftp://127.0.0.1/x"));
	ck_assert(!aws_container_uri_allowed(NULL));

	/* 5. IMDS: default, override, disabled */
	{
		struct fake_env e = {{NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_IMDS);
		ck_assert_str_eq(pl.imds_endpoint, "http://169.254.169.254");
	}
	{
		struct fake_env e = {{"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:8111/", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.imds_endpoint, "http://127.0.0.1:8111");
	}
	{
		struct fake_env e = {{"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6", NULL}};
		ck_assert(aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_str_eq(pl.imds_endpoint, "http://[fd00:ec2::254]");
	}
	{
		struct fake_env e = {{"AWS_EC2_METADATA_DISABLED", "TRUE", NULL}};
		ck_assert(!aws_creds_plan(fake_getenv, &e, NULL, NULL, &pl, err, sizeof(err)));
		ck_assert_int_eq(pl.source, AWS_CREDS_NONE);
		ck_assert_msg(strstr(err, "no AWS credentials") != NULL, "%s", err);
	}
}
END_TEST

/* ================================================================================================
 * On a real loop: aws/http and aws/creds against an in-process HTTP server
 * ============================================================================================== */

struct srv {
	struct event_base *base;
	struct evhttp *http;
	int port;
	char url[64];
	int hits;
	int fail_first;          /* /flaky: this many 500s first */
	char auth[512];
	char token_hdr[128];
	char date_hdr[64];
	char ctype[128];
	char target[128];
	char method[8];
	char body[2048];
	char imds_token_seen[64];
	char container_auth[64];
	int imds_token_puts;
};

static void reply(struct evhttp_request *req, int code, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, body, strlen(body));
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
	evbuffer_free(b);
}

static void copy_hdr(struct evkeyvalq *h, const char *name, char *dst, size_t len)
{
	const char *v = evhttp_find_header(h, name);
	snprintf(dst, len, "%s", v ? v : "");
}

static void iso_in(int64_t secs, char *buf, size_t len)
{
	time_t t = time(NULL) + secs;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void srv_handler(struct evhttp_request *req, void *arg)
{
	struct srv *s = arg;
	const char *uri = evhttp_request_get_uri(req);
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	char exp[32], buf[1024];

	s->hits++;
	if (n >= sizeof(s->body))
		n = sizeof(s->body) - 1;
	evbuffer_copyout(in, s->body, n);
	s->body[n] = '\0';
	copy_hdr(h, "Authorization", s->auth, sizeof(s->auth));
	copy_hdr(h, "X-Amz-Security-Token", s->token_hdr, sizeof(s->token_hdr));
	copy_hdr(h, "X-Amz-Date", s->date_hdr, sizeof(s->date_hdr));
	copy_hdr(h, "Content-Type", s->ctype, sizeof(s->ctype));
	copy_hdr(h, "X-Amz-Target", s->target, sizeof(s->target));
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		strcpy(s->method, "GET");
		break;
	case EVHTTP_REQ_POST:
		strcpy(s->method, "POST");
		break;
	case EVHTTP_REQ_PUT:
		strcpy(s->method, "PUT");
		break;
	default:
		strcpy(s->method, "?");
	}
	iso_in(3600, exp, sizeof(exp));

	if (strcmp(uri, "/ok") == 0) {
		char *b = load("rds_clusters_aurora_pg.xml", NULL);
		reply(req, 200, b);
		free(b);
	} else if (strcmp(uri, "/flaky") == 0) {
		if (s->hits <= s->fail_first)
			reply(req, s->hits % 2 ? 500 : 503, "<html>upstream trouble</html>");
		else
			reply(req, 200, "<ok/>");
	} else if (strcmp(uri, "/throttle") == 0) {
		char *b = load("err_throttling.xml", NULL);
		reply(req, 400, b);
		free(b);
	} else if (strcmp(uri, "/notfound") == 0) {
		char *b = load("err_rds_cluster_not_found.xml", NULL);
		reply(req, 404, b);
		free(b);
	} else if (strcmp(uri, "/memorydb") == 0) {
		char *b = load("err_memorydb_cluster_not_found.json", NULL);
		reply(req, 400, b);
		free(b);
	} else if (strcmp(uri, "/hang") == 0) {
		/* no reply: the client's timeout must fire */
	} else if (strcmp(uri, "/sts") == 0) {
		if (strstr(s->body, "Action=AssumeRoleWithWebIdentity") == NULL ||
		    strstr(s->body, "WebIdentityToken=jwt.header.sig") == NULL) {
			reply(req, 400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
			                "<Message>bad</Message></Error></ErrorResponse>");
			return;
		}
		snprintf(buf, sizeof(buf),
		         "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/"
		         "2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials>"
		         "<SessionToken>stsToken</SessionToken><SecretAccessKey>stsSecret</SecretAccessKey>"
		         "<Expiration>%s</Expiration><AccessKeyId>ASIASTS</AccessKeyId></Credentials>"
		         "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
		         exp);
		reply(req, 200, buf);
	} else if (strcmp(uri, "/latest/api/token") == 0) {
		const char *ttl = evhttp_find_header(h, "X-aws-ec2-metadata-token-ttl-seconds");
		s->imds_token_puts++;
		if (strcmp(s->method, "PUT") != 0 || ttl == NULL)
			reply(req, 400, "");
		else
			reply(req, 200, "IMDSTOKEN123==");
	} else if (strncmp(uri, "/latest/meta-data/iam/security-credentials/", 43) == 0) {
		copy_hdr(h, "X-aws-ec2-metadata-token", s->imds_token_seen,
		         sizeof(s->imds_token_seen));
		if (strcmp(s->imds_token_seen, "IMDSTOKEN123==") != 0) {
			reply(req, 401, "");
		} else if (uri[43] == '\0') {
			reply(req, 200, "repoint-role\n");
		} else if (strcmp(uri + 43, "repoint-role") == 0) {
			snprintf(buf, sizeof(buf),
			         "{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAIMDS\","
			         "\"SecretAccessKey\":\"imdsSecret\",\"Token\":\"imdsToken\","
			         "\"Expiration\":\"%s\"}", exp);
			reply(req, 200, buf);
		} else {
			reply(req, 404, "");
		}
	} else if (strcmp(uri, "/container") == 0) {
		copy_hdr(h, "Authorization", s->container_auth, sizeof(s->container_auth));
		if (strcmp(s->container_auth, "Bearer pod-token") != 0) {
			reply(req, 403, "{\"message\":\"no\"}");
			return;
		}
		snprintf(buf, sizeof(buf),
		         "{\"AccessKeyId\":\"ASIACONT\",\"SecretAccessKey\":\"contSecret\","
		         "\"Token\":\"contToken\",\"Expiration\":\"%s\"}", exp);
		reply(req, 200, buf);
	} else {
		reply(req, 404, "not here");
	}
}

static void srv_start(struct srv *s, struct event_base *base)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(s, 0, sizeof(*s));
	s->base = base;
	s->http = evhttp_new(base);
	ck_assert_ptr_nonnull(s->http);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT);
	evhttp_set_gencb(s->http, srv_handler, s);
	bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
	ck_assert_ptr_nonnull(bs);
	ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
	s->port = ntohs(sin.sin_port);
	snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
}

struct outcome {
	struct event_base *base;
	int calls;
	bool ok;
	long status;
	int attempts;
	bool throttled;
	char code[64];
	char msg[128];
	char body[256];
	size_t body_len;
};

static void outcome_cb(void *arg, const struct aws_response *r)
{
	struct outcome *o = arg;

	o->calls++;
	o->ok = r->ok;
	o->status = r->status;
	o->attempts = r->attempts;
	o->throttled = r->throttled;
	snprintf(o->code, sizeof(o->code), "%s", r->error_code);
	snprintf(o->msg, sizeof(o->msg), "%s", r->error_message);
	snprintf(o->body, sizeof(o->body), "%s", r->body);
	o->body_len = r->body_len;
	event_base_loopbreak(o->base);
}

static uint32_t zero_jitter(void *arg)
{
	(void)arg;
	return 0;
}

static uint32_t max_jitter(void *arg)
{
	int *calls = arg;
	(*calls)++;
	return UINT32_MAX;
}

static void run_loop(struct event_base *base, int secs)
{
	struct timeval tv = {secs, 0};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static struct aws_credentials test_creds(void)
{
	struct aws_credentials c;

	memset(&c, 0, sizeof(c));
	strcpy(c.access_key_id, "AKIDEXAMPLE");
	strcpy(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
	strcpy(c.session_token, "sessionTOKEN/abc=");
	return c;
}

START_TEST(test_http_query_signed)
{
	struct event_base *base = event_base_new();
	struct aws_http *h = aws_http_new(base, NULL);
	struct srv s;
	struct outcome o = {.base = base};
	struct aws_credentials c = test_creds();
	const char *params[] = {"DBClusterIdentifier", "orders-pg", NULL};
	char ep[96];
	struct aws_call call = {
		.service = "rds",
		.region = "eu-west-1",
		.endpoint_url = ep,
		.action = "DescribeDBClusters",
		.version = "2014-10-31",
		.params = params,
		.creds = &c,
	};
	struct cloud_view v;
	char err[200];

	srv_start(&s, base);
	snprintf(ep, sizeof(ep), "%s/ok", s.url);
	ck_assert_ptr_nonnull(aws_http_call(h, &call, outcome_cb, &o));
	ck_assert_int_eq(o.calls, 0); /* never from inside the call */
	run_loop(base, 10);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_msg(o.ok, "%s %s", o.code, o.msg);
	ck_assert_int_eq(o.status, 200);
	ck_assert_int_eq(o.attempts, 1);
	ck_assert_str_eq(s.method, "POST");
	ck_assert_str_eq(s.body, "Action=DescribeDBClusters&Version=2014-10-31"
	                         "&DBClusterIdentifier=orders-pg");
	ck_assert(strncmp(s.ctype, "application/x-www-form-urlencoded", 33) == 0);
	/* SigV4 by libcurl: scope is date/region/service/aws4_request; the token is sent and signed */
	ck_assert_msg(strncmp(s.auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 40) == 0, "%s",
	              s.auth);
	ck_assert_msg(strstr(s.auth, "/eu-west-1/rds/aws4_request") != NULL, "%s", s.auth);
	/* exactly the headers that are sent: an empty "Expect:" once slipped in here, signed but
	 * never sent, which AWS refuses */
	ck_assert_msg(strstr(s.auth, "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,")
	              != NULL, "%s", s.auth);
	ck_assert_msg(strstr(s.auth, "Signature=") != NULL, "%s", s.auth);
	ck_assert(strstr(s.auth, c.secret_access_key) == NULL);
	ck_assert_str_eq(s.token_hdr, "sessionTOKEN/abc=");
	ck_assert_uint_eq(strlen(s.date_hdr), 16); /* 20240508T112117Z */
	/* and the reply parses */
	cloud_view_init(&v);
	ck_assert(aws_http_get_stats(h)->requests == 1);
	{
		char *b = load("rds_clusters_aurora_pg.xml", NULL);
		ck_assert_uint_eq(o.body_len, strlen(b));
		ck_assert(cloud_parse_rds_clusters(b, strlen(b), "orders-pg", &v, err, sizeof(err)));
		free(b);
	}
	cloud_view_free(&v);
	aws_http_free(h);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_http_json_and_errors)
{
	struct event_base *base = event_base_new();
	struct aws_http *h = aws_http_new(base, NULL);
	struct srv s;
	struct outcome o = {.base = base};
	struct aws_credentials c = test_creds();
	char ep[96];
	struct aws_call call = {
		.service = "memorydb",
		.region = "us-west-2",
		.endpoint_url = ep,
		.action = "DescribeClusters",
		.target_prefix = "AmazonMemoryDB",
		.json = "{\"ClusterName\":\"ledgr\",\"ShowShardDetails\":true}",
		.creds = &c,
	};
	const struct aws_http_stats *st;

	srv_start(&s, base);
	snprintf(ep, sizeof(ep), "%s/memorydb", s.url);
	aws_http_call(h, &call, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert_int_eq(o.calls, 1);
	ck_assert(!o.ok);
	ck_assert_int_eq(o.status, 400);
	ck_assert_str_eq(o.code, "ClusterNotFoundFault");
	ck_assert_str_eq(o.msg, "Cluster ledgr not found");
	ck_assert_int_eq(o.attempts, 1); /* not retryable */
	ck_assert_str_eq(s.target, "AmazonMemoryDB.DescribeClusters");
	ck_assert_str_eq(s.ctype, "application/x-amz-json-1.1");
	ck_assert_str_eq(s.body, "{\"ClusterName\":\"ledgr\",\"ShowShardDetails\":true}");
	ck_assert_msg(strstr(s.auth, "/us-west-2/memorydb/aws4_request") != NULL, "%s", s.auth);

	/* a Query fault: returned at once */
	memset(&o, 0, sizeof(o));
	o.base = base;
	call = (struct aws_call){.service = "rds", .region = "eu-west-1", .endpoint_url = ep,
	                         .action = "DescribeDBClusters", .version = "2014-10-31",
	                         .creds = &c};
	snprintf(ep, sizeof(ep), "%s/notfound", s.url);
	aws_http_call(h, &call, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert_str_eq(o.code, "DBClusterNotFoundFault");
	ck_assert_int_eq(o.status, 404);
	ck_assert_int_eq(o.attempts, 1);

	/* malformed calls reach the callback too, later */
	memset(&o, 0, sizeof(o));
	o.base = base;
	call.endpoint_url = NULL;
	call.region = "eu-west-1/../x";
	ck_assert_ptr_nonnull(aws_http_call(h, &call, outcome_cb, &o));
	ck_assert_int_eq(o.calls, 0);
	run_loop(base, 10);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_str_eq(o.code, "InvalidRequest");
	ck_assert_int_eq(o.attempts, 0);
	/* signing without credentials */
	memset(&o, 0, sizeof(o));
	o.base = base;
	{
		struct aws_credentials none;
		memset(&none, 0, sizeof(none));
		call.region = "eu-west-1";
		call.endpoint_url = ep;
		call.creds = &none;
		aws_http_call(h, &call, outcome_cb, &o);
		run_loop(base, 10);
		ck_assert_str_eq(o.code, "NoCredentials");
	}
	/* a header with a line break (a token file with a trailing "\r\nX-Evil: 1") is refused */
	memset(&o, 0, sizeof(o));
	o.base = base;
	{
		const char *bad[] = {"Authorization: Bearer x\r\nX-Evil: 1", NULL};
		struct aws_http_request rq = {.method = "GET", .url = ep, .headers = bad};
		aws_http_send(h, &rq, outcome_cb, &o);
		run_loop(base, 10);
		ck_assert_str_eq(o.code, "InvalidRequest");
		ck_assert_int_eq(o.attempts, 0);
	}
	st = aws_http_get_stats(h);
	ck_assert_int_eq(st->requests, 5);
	ck_assert_int_eq(st->failures, 5);
	ck_assert_int_eq(st->retries, 0);
	ck_assert_int_eq(st->ncodes, 4); /* ClusterNotFound, DBClusterNotFound, Invalid, NoCreds */
	ck_assert_str_eq(st->codes[0].code, "ClusterNotFoundFault");
	ck_assert_int_eq(st->codes[0].count, 1);
	aws_http_free(h);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_http_retries)
{
	struct event_base *base = event_base_new();
	struct aws_http_options opts = {.max_attempts = 4};
	struct aws_http *h = aws_http_new(base, &opts);
	struct srv s;
	struct outcome o = {.base = base};
	char url[96];
	struct aws_http_request rq = {.method = "POST", .url = url, .body = "x=1", .body_len = 3,
	                              .errfmt = AWS_ERRFMT_XML, .tag = "test"};
	const struct aws_http_stats *st;
	int jitter_calls = 0;
	int64_t t0;
	int i;

	srv_start(&s, base);
	aws_http_set_jitter(h, zero_jitter, NULL);
	/* two 5xx, then success: retried inside the client */
	s.fail_first = 2;
	snprintf(url, sizeof(url), "%s/flaky", s.url);
	aws_http_send(h, &rq, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert_msg(o.ok, "%s", o.code);
	ck_assert_int_eq(o.attempts, 3);
	ck_assert_int_eq(s.hits, 3);
	st = aws_http_get_stats(h);
	ck_assert_int_eq(st->retries, 2);
	ck_assert_int_eq(st->attempts, 3);
	ck_assert_int_eq(st->failures, 0);
	ck_assert_int_eq(st->last_backoff_ms, 0);

	/* throttled every time: max_attempts, then the throttle error; backoff 100, 200, 400 ms
	 * with the largest jitter */
	memset(&o, 0, sizeof(o));
	o.base = base;
	aws_http_set_jitter(h, max_jitter, &jitter_calls);
	snprintf(url, sizeof(url), "%s/throttle", s.url);
	t0 = now_ms();
	aws_http_send(h, &rq, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert(!o.ok);
	ck_assert(o.throttled);
	ck_assert_str_eq(o.code, "Throttling");
	ck_assert_int_eq(o.attempts, 4);
	ck_assert_int_eq(jitter_calls, 3);
	ck_assert_int_ge(now_ms() - t0, 700);
	ck_assert_int_eq(st->throttles, 4);
	ck_assert_int_eq(st->last_backoff_ms, 400);
	for (i = 0; i < st->ncodes; i++)
		if (strcmp(st->codes[i].code, "Throttling") == 0)
			ck_assert_int_eq(st->codes[i].count, 4);

	/* a per-attempt timeout, retried, then "Timeout" */
	memset(&o, 0, sizeof(o));
	o.base = base;
	aws_http_set_jitter(h, zero_jitter, NULL);
	snprintf(url, sizeof(url), "%s/hang", s.url);
	rq.timeout_ms = 200;
	rq.max_attempts = 2;
	t0 = now_ms();
	aws_http_send(h, &rq, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert_str_eq(o.code, "Timeout");
	ck_assert_int_eq(o.status, 0);
	ck_assert_int_eq(o.attempts, 2);
	ck_assert_int_ge(now_ms() - t0, 400);
	ck_assert_int_lt(now_ms() - t0, 3000);

	/* nothing listening: transport error, retried */
	memset(&o, 0, sizeof(o));
	o.base = base;
	snprintf(url, sizeof(url), "http://127.0.0.1:1/");
	aws_http_send(h, &rq, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert_str_eq(o.code, "Transport");
	ck_assert_int_eq(o.attempts, 2);
	ck_assert(o.msg[0] != '\0');

	/* a scheme curl must not follow */
	memset(&o, 0, sizeof(o));
	o.base = base;
	snprintf(url, sizeof(url), "file:///etc/passwd");
	aws_http_send(h, &rq, outcome_cb, &o);
	run_loop(base, 10);
	ck_assert(!o.ok);
	ck_assert_int_eq(o.attempts, 1);
	ck_assert_int_eq(o.body_len, 0);

	aws_http_free(h);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_http_cancel)
{
	struct event_base *base = event_base_new();
	struct aws_http *h = aws_http_new(base, NULL);
	struct srv s;
	struct outcome o = {.base = base};
	char url[96];
	struct aws_http_request rq = {.method = "GET", .url = url};
	struct aws_http_req *r;

	srv_start(&s, base);
	snprintf(url, sizeof(url), "%s/hang", s.url);
	r = aws_http_send(h, &rq, outcome_cb, &o);
	ck_assert_ptr_nonnull(r);
	aws_http_cancel(r);
	/* and one left pending when the client goes away */
	aws_http_send(h, &rq, outcome_cb, &o);
	{
		struct timeval tv = {0, 300000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	ck_assert_int_eq(o.calls, 0);
	aws_http_free(h);
	ck_assert_int_eq(o.calls, 0);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

struct creds_outcome {
	struct event_base *base;
	int calls;
	bool ok;
	struct aws_credentials c;
	char err[256];
};

static void creds_cb(void *arg, const struct aws_credentials *c, const char *err)
{
	struct creds_outcome *o = arg;

	o->calls++;
	o->ok = c != NULL;
	if (c)
		o->c = *c;
	snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
	event_base_loopbreak(o->base);
}

static void check_provider(struct fake_env *e, struct srv *s, struct event_base *base,
                           const char *akid, enum aws_creds_source src)
{
	struct aws_http *h = aws_http_new(base, NULL);
	struct aws_creds_options opts = {.getenv = fake_getenv, .getenv_arg = e};
	struct creds_outcome o = {.base = base};
	char err[256];
	struct aws_creds *c = aws_creds_new(h, &opts, err, sizeof(err));
	int64_t left;

	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_int_eq(aws_creds_source(c), src);
	ck_assert(aws_creds_get(c, creds_cb, &o));
	ck_assert_int_eq(o.calls, 0);
	run_loop(base, 10);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_msg(o.ok, "%s", o.err);
	ck_assert_str_eq(o.c.access_key_id, akid);
	left = o.c.expiration_ms - wall_ms();
	ck_assert_int_gt(left, 3500 * 1000);
	ck_assert_int_le(left, 3600 * 1000);
	ck_assert_ptr_nonnull(aws_creds_current(c));
	ck_assert_str_eq(aws_creds_last_error(c), "");
	/* a second ask is answered from the cache, still later from the loop */
	s->hits = 0;
	memset(&o, 0, sizeof(o));
	o.base = base;
	aws_creds_get(c, creds_cb, &o);
	ck_assert_int_eq(o.calls, 0);
	run_loop(base, 10);
	ck_assert_int_eq(o.calls, 1);
	ck_assert(o.ok);
	ck_assert_int_eq(s->hits, 0);
	/* cancelled asks are never answered */
	memset(&o, 0, sizeof(o));
	o.base = base;
	aws_creds_get(c, creds_cb, &o);
	aws_creds_cancel(c, &o);
	{
		struct timeval tv = {0, 100000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	ck_assert_int_eq(o.calls, 0);
	aws_creds_free(c);
	aws_http_free(h);
}

START_TEST(test_creds_web_identity_live)
{
	struct event_base *base = event_base_new();
	struct srv s;
	char sts[96], tokfile[] = "/tmp/repoint-test-token-XXXXXX";
	int fd = mkstemp(tokfile);
	struct fake_env e;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "jwt.header.sig\n", 15), 15);
	close(fd);
	srv_start(&s, base);
	snprintf(sts, sizeof(sts), "%s/sts", s.url);
	e = (struct fake_env){{"AWS_WEB_IDENTITY_TOKEN_FILE", tokfile, "AWS_ROLE_ARN",
	                       "arn:aws:iam::123456789012:role/repoint", "AWS_ENDPOINT_URL_STS", sts,
	                       NULL}};
	check_provider(&e, &s, base, "ASIASTS", AWS_CREDS_WEB_IDENTITY);
	ck_assert_str_eq(s.auth, ""); /* AssumeRoleWithWebIdentity is unsigned */
	unlink(tokfile);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_creds_imds_live)
{
	struct event_base *base = event_base_new();
	struct srv s;
	struct fake_env e;

	srv_start(&s, base);
	e = (struct fake_env){{"AWS_EC2_METADATA_SERVICE_ENDPOINT", s.url, NULL}};
	check_provider(&e, &s, base, "ASIAIMDS", AWS_CREDS_IMDS);
	ck_assert_int_eq(s.imds_token_puts, 1);
	ck_assert_str_eq(s.imds_token_seen, "IMDSTOKEN123==");
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_creds_container_live)
{
	struct event_base *base = event_base_new();
	struct srv s;
	char url[96], tokfile[] = "/tmp/repoint-test-ctok-XXXXXX";
	int fd = mkstemp(tokfile);
	struct fake_env e;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "Bearer pod-token\n", 17), 17);
	close(fd);
	srv_start(&s, base);
	snprintf(url, sizeof(url), "%s/container", s.url);
	e = (struct fake_env){{"AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
	                       "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokfile, NULL}};
	check_provider(&e, &s, base, "ASIACONT", AWS_CREDS_CONTAINER);
	ck_assert_str_eq(s.container_auth, "Bearer pod-token");
	unlink(tokfile);
	evhttp_free(s.http);
	event_base_free(base);
}
END_TEST

START_TEST(test_creds_failure_and_static)
{
	struct event_base *base = event_base_new();
	struct aws_http *h = aws_http_new(base, NULL);
	struct creds_outcome o = {.base = base};
	char err[256];
	struct aws_creds *c;

	/* IMDS nowhere to be found: the error reaches the caller, no credentials */
	{
		struct fake_env e = {{"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", NULL}};
		struct aws_creds_options opts = {.getenv = fake_getenv, .getenv_arg = &e};
		c = aws_creds_new(h, &opts, err, sizeof(err));
		ck_assert_ptr_nonnull(c);
		aws_creds_get(c, creds_cb, &o);
		run_loop(base, 20);
		ck_assert_int_eq(o.calls, 1);
		ck_assert(!o.ok);
		ck_assert_msg(strstr(o.err, "IMDS") != NULL, "%s", o.err);
		ck_assert_ptr_null(aws_creds_current(c));
		ck_assert_str_eq(aws_creds_last_error(c), o.err);
		aws_creds_free(c);
	}
	/* static keys from the environment: at once, no I/O, never expire */
	{
		struct fake_env e = {{"AWS_ACCESS_KEY_ID", "AKIASTATIC", "AWS_SECRET_ACCESS_KEY", "s",
		                      "AWS_REGION", "eu-west-3", NULL}};
		struct aws_creds_options opts = {.getenv = fake_getenv, .getenv_arg = &e};
		c = aws_creds_new(h, &opts, err, sizeof(err));
		ck_assert_ptr_nonnull(c);
		ck_assert_str_eq(aws_creds_region(c), "eu-west-3");
		ck_assert_ptr_nonnull(aws_creds_current(c));
		memset(&o, 0, sizeof(o));
		o.base = base;
		aws_creds_get(c, creds_cb, &o);
		run_loop(base, 10);
		ck_assert(o.ok);
		ck_assert_str_eq(o.c.access_key_id, "AKIASTATIC");
		ck_assert_int_eq(aws_creds_expiration(c), 0);
		aws_creds_invalidate(c); /* nothing to refetch: still usable */
		ck_assert_ptr_nonnull(aws_creds_current(c));
		aws_creds_free(c);
	}
	/* a plan that fails names the problem */
	{
		struct fake_env e = {{"AWS_SECRET_ACCESS_KEY", "s", NULL}};
		struct aws_creds_options opts = {.getenv = fake_getenv, .getenv_arg = &e};
		ck_assert_ptr_null(aws_creds_new(h, &opts, err, sizeof(err)));
		ck_assert_msg(strstr(err, "AWS_ACCESS_KEY_ID") != NULL, "%s", err);
	}
	aws_http_free(h);
	event_base_free(base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("aws");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = tcase_create("http");
	tcase_add_test(tc, test_form_encode);
	tcase_add_test(tc, test_endpoint_url);
	tcase_add_test(tc, test_copy_text);
	tcase_add_test(tc, test_error_extraction);
	tcase_add_test(tc, test_retry_classify);
	tcase_add_test(tc, test_backoff_schedule);
	tcase_add_test(tc, test_xml_reader_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("cloud");
	tcase_add_test(tc, test_rds_aurora);
	tcase_add_test(tc, test_rds_failing_over);
	tcase_add_test(tc, test_rds_multiaz);
	tcase_add_test(tc, test_rds_instances_paginated);
	tcase_add_test(tc, test_ec_cluster_mode_disabled);
	tcase_add_test(tc, test_ec_cluster_mode_enabled);
	tcase_add_test(tc, test_ec_global);
	tcase_add_test(tc, test_memorydb);
	tcase_add_test(tc, test_error_bodies_to_parsers);
	suite_add_tcase(s, tc);

	tc = tcase_create("hostile");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_hostile_xml_files);
	tcase_add_test(tc, test_hostile_huge_strings);
	tcase_add_test(tc, test_hostile_values);
	tcase_add_test(tc, test_hostile_nesting);
	tcase_add_test(tc, test_hostile_json);
	suite_add_tcase(s, tc);

	tc = tcase_create("creds");
	tcase_add_test(tc, test_iso8601);
	tcase_add_test(tc, test_refresh_deadline);
	tcase_add_test(tc, test_creds_replies);
	tcase_add_test(tc, test_profiles);
	tcase_add_test(tc, test_plan_precedence);
	tcase_add_test(tc, test_plan_container_imds);
	suite_add_tcase(s, tc);

	tc = tcase_create("loop");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_http_query_signed);
	tcase_add_test(tc, test_http_json_and_errors);
	tcase_add_test(tc, test_http_retries);
	tcase_add_test(tc, test_http_cancel);
	tcase_add_test(tc, test_creds_web_identity_live);
	tcase_add_test(tc, test_creds_imds_live);
	tcase_add_test(tc, test_creds_container_live);
	tcase_add_test(tc, test_creds_failure_and_static);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
