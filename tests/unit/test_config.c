/* test_config.c - config_load / config_load_string: values, defaults, and every message byte for
 * byte (the messages are the user interface of a config file). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "secret.h"

static char err[8192];

/* A service that is complete on its own, for tests that are about something else. */
#define OK_SERVICE                                                                                 \
	"[service ok]\n"                                                                           \
	"protocol = postgres\n"                                                                    \
	"listen = 127.0.0.1:7000\n"                                                                \
	"members = 127.0.0.1:7001\n"

static struct config *load(const char *text)
{
	err[0] = 'X'; /* must be overwritten either way */
	err[1] = '\0';
	return config_load_string(text, "test.ini", err, sizeof(err));
}

static struct config *load_ok(const char *text)
{
	struct config *cfg = load(text);
	ck_assert_msg(cfg != NULL, "unexpected errors:\n%s", err);
	ck_assert_str_eq(err, "");
	return cfg;
}

/* Fails unless loading text fails with exactly `expected`. */
static void expect_errors(const char *text, const char *expected)
{
	struct config *cfg = load(text);
	if (cfg != NULL)
		config_free(cfg);
	ck_assert_msg(cfg == NULL, "config accepted, expected:\n%s", expected);
	ck_assert_str_eq(err, expected);
}

static void assert_hostport(const struct hostport *hp, const char *host, unsigned port)
{
	ck_assert_str_eq(hp->host, host);
	ck_assert_uint_eq(hp->port, port);
}

/* ---- valid configs ---- */

START_TEST(test_full)
{
	struct config *cfg = load_ok("[repoint]\n"
				     "admin = 127.0.0.1:9901\n"
				     "log_level = debug\n"
				     "log_format = json\n"
				     "shutdown_timeout = 20s\n"
				     "\n"
				     "[aws]\n"
				     "region = eu-west-1\n"
				     "profile = staging\n"
				     "endpoint_url = http://127.0.0.1:4566\n"
				     "poll_interval = 2s\n"
				     "failover_poll_interval = 500ms\n"
				     "\n"
				     "[service orders]\n"
				     "protocol = postgres\n"
				     "listen = 127.0.0.1:6432\n"
				     "route = reader\n"
				     "members = 127.0.0.1:25432, 127.0.0.1:25433,[::1]:25434\n"
				     "probe_interval = 100ms\n"
				     "probe_timeout = 400ms\n"
				     "failover_probe_interval = 20ms\n"
				     "down_after = 5\n"
				     "probe_user = checker\n"
				     "probe_password = s3cret\n"
				     "probe_database = app\n"
				     "hold_timeout = 1m\n"
				     "drain = immediate\n"
				     "drain_timeout = 3s\n"
				     "connect_timeout = 2s\n"
				     "max_clients = 500\n"
				     "\n"
				     "[service cache]\n"
				     "protocol = redis\n"
				     "listen = 0.0.0.0:6379\n"
				     "route = any\n"
				     "source = elasticache:my-group\n"
				     "shard = 0002\n");
	struct service_config *s = cfg->services;

	ck_assert_str_eq(cfg->path, "test.ini");
	ck_assert(cfg->has_admin);
	assert_hostport(&cfg->admin, "127.0.0.1", 9901);
	ck_assert_int_eq(cfg->log_level, LOG_DEBUG);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_JSON);
	ck_assert_int_eq(cfg->shutdown_timeout_ms, 20000);
	ck_assert_str_eq(cfg->aws.region, "eu-west-1");
	ck_assert_str_eq(cfg->aws.profile, "staging");
	ck_assert_str_eq(cfg->aws.endpoint_url, "http://127.0.0.1:4566");
	ck_assert_int_eq(cfg->aws.poll_interval_ms, 2000);
	ck_assert_int_eq(cfg->aws.failover_poll_interval_ms, 500);
	ck_assert_int_eq(cfg->nservices, 2);

	ck_assert_str_eq(s->name, "orders");
	ck_assert_int_eq(s->line, 14);
	ck_assert_int_eq(s->protocol, PROTOCOL_POSTGRES);
	assert_hostport(&s->listen, "127.0.0.1", 6432);
	ck_assert_int_eq(s->route, ROUTE_READER);
	ck_assert_int_eq(s->nmembers, 3);
	assert_hostport(&s->members[0], "127.0.0.1", 25432);
	assert_hostport(&s->members[1], "127.0.0.1", 25433);
	assert_hostport(&s->members[2], "::1", 25434);
	ck_assert_int_eq(s->probe_interval_ms, 100);
	ck_assert_int_eq(s->probe_timeout_ms, 400);
	ck_assert_int_eq(s->failover_probe_interval_ms, 20);
	ck_assert_int_eq(s->down_after, 5);
	ck_assert_str_eq(s->probe_user, "checker");
	ck_assert_str_eq(s->probe_password, "s3cret");
	ck_assert_str_eq(s->probe_database, "app");
	ck_assert_int_eq(s->hold_timeout_ms, 60000);
	ck_assert_int_eq(s->drain, DRAIN_IMMEDIATE);
	ck_assert_int_eq(s->drain_timeout_ms, 3000);
	ck_assert_int_eq(s->connect_timeout_ms, 2000);
	ck_assert_int_eq(s->max_clients, 500);
	ck_assert_ptr_null(s->source);
	ck_assert_ptr_null(s->shard);

	s = s->next;
	ck_assert_str_eq(s->name, "cache");
	ck_assert_int_eq(s->line, 32);
	ck_assert_int_eq(s->protocol, PROTOCOL_REDIS);
	assert_hostport(&s->listen, "0.0.0.0", 6379);
	ck_assert_int_eq(s->route, ROUTE_ANY);
	ck_assert_int_eq(s->nmembers, 0);
	ck_assert_ptr_null(s->members);
	ck_assert_str_eq(s->source, "elasticache:my-group");
	ck_assert_str_eq(s->shard, "0002");
	ck_assert_ptr_null(s->next);
	config_free(cfg);
}
END_TEST

START_TEST(test_defaults)
{
	struct config *cfg = load_ok("[service pg]\n"
				     "protocol = postgres\n"
				     "listen = 127.0.0.1:6432\n"
				     "members = 127.0.0.1:25432\n"
				     "[service my]\n"
				     "protocol = mysql\n"
				     "listen = 127.0.0.1:3306\n"
				     "members = 127.0.0.1:23306\n"
				     "[service rd]\n"
				     "protocol = redis\n"
				     "listen = 127.0.0.1:6379\n"
				     "members = 127.0.0.1:26379\n");
	struct service_config *s = cfg->services;

	ck_assert(!cfg->has_admin);
	ck_assert_int_eq(cfg->log_level, LOG_INFO);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_TEXT);
	ck_assert_int_eq(cfg->shutdown_timeout_ms, 10000);
	ck_assert_ptr_null(cfg->aws.region);
	ck_assert_ptr_null(cfg->aws.profile);
	ck_assert_ptr_null(cfg->aws.endpoint_url);
	ck_assert_int_eq(cfg->aws.poll_interval_ms, 5000);
	ck_assert_int_eq(cfg->aws.failover_poll_interval_ms, 1000);
	ck_assert_int_eq(cfg->nservices, 3);

	ck_assert_int_eq(s->route, ROUTE_WRITER);
	ck_assert_int_eq(s->probe_interval_ms, 250);
	ck_assert_int_eq(s->probe_timeout_ms, 1000);
	ck_assert_int_eq(s->failover_probe_interval_ms, 50);
	ck_assert_int_eq(s->down_after, 3);
	ck_assert_str_eq(s->probe_user, "postgres");
	ck_assert_str_eq(s->probe_password, "");
	ck_assert_str_eq(s->probe_database, "postgres");
	ck_assert_int_eq(s->hold_timeout_ms, 30000);
	ck_assert_int_eq(s->drain, DRAIN_GRACEFUL);
	ck_assert_int_eq(s->drain_timeout_ms, 10000);
	ck_assert_int_eq(s->connect_timeout_ms, 5000);
	ck_assert_int_eq(s->max_clients, 10000);
	ck_assert_ptr_null(s->source);
	ck_assert_ptr_null(s->shard);

	s = s->next;
	ck_assert_int_eq(s->protocol, PROTOCOL_MYSQL);
	ck_assert_str_eq(s->probe_user, "root");
	ck_assert_str_eq(s->probe_password, "");
	ck_assert_ptr_null(s->probe_database);

	s = s->next;
	ck_assert_int_eq(s->protocol, PROTOCOL_REDIS);
	ck_assert_ptr_null(s->probe_user);
	ck_assert_str_eq(s->probe_password, "");
	ck_assert_ptr_null(s->probe_database);
	config_free(cfg);
}
END_TEST

/* An empty string value means "the default". */
START_TEST(test_empty_strings)
{
	struct config *cfg = load_ok("[aws]\n"
				     "region =\n"
				     "endpoint_url =\n"
				     "[service pg]\n"
				     "protocol = postgres\n"
				     "listen = 127.0.0.1:6432\n"
				     "members = 127.0.0.1:25432\n"
				     "probe_user =\n"
				     "probe_password =\n");

	ck_assert_ptr_null(cfg->aws.region);
	ck_assert_ptr_null(cfg->aws.endpoint_url);
	ck_assert_str_eq(cfg->services->probe_user, "postgres");
	ck_assert_str_eq(cfg->services->probe_password, "");
	config_free(cfg);
}
END_TEST

START_TEST(test_comments)
{
	struct config *cfg = load_ok("\xEF\xBB\xBF; a comment\r\n"
				     "# another comment\n"
				     "   ; an indented comment\n"
				     "\n"
				     "[repoint] ; the proxy itself\n"
				     "log_level = warn   ; inline comment\n"
				     "[service a]   # trailing\n"
				     "protocol = redis\r\n"
				     "  listen = 127.0.0.1:6379\n"
				     "\tmembers = 127.0.0.1:26379 ; the only one\n"
				     "probe_password = a;b#c ; the comment needs a space before ';'\n"
				     "probe_interval = 250ms ; comment\n"
				     "probe_user=u\n");
	struct service_config *s = cfg->services;

	ck_assert_int_eq(cfg->log_level, LOG_WARN);
	ck_assert_str_eq(s->name, "a");
	ck_assert_int_eq(s->line, 7);
	/* indented keys are keys of their own, not continuations of the previous value */
	assert_hostport(&s->listen, "127.0.0.1", 6379);
	ck_assert_int_eq(s->nmembers, 1);
	assert_hostport(&s->members[0], "127.0.0.1", 26379);
	ck_assert_str_eq(s->probe_password, "a;b#c");
	ck_assert_int_eq(s->probe_interval_ms, 250);
	ck_assert_str_eq(s->probe_user, "u");
	config_free(cfg);
}
END_TEST

START_TEST(test_durations)
{
	static const struct {
		const char *text;
		int64_t ms;
	} cases[] = {
		{"10ms", 10}, {"250ms", 250}, {"1s", 1000}, {"1.5s", 1500}, {"2m", 120000},
		{"1h", 3600000}, {"750", 750}, {"0.5m", 30000},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		struct config *cfg;
		snprintf(text, sizeof(text), OK_SERVICE "probe_interval = %s\n", cases[i].text);
		cfg = load_ok(text);
		ck_assert_msg(cfg->services->probe_interval_ms == cases[i].ms, "%s: got %lld",
			      cases[i].text, (long long)cfg->services->probe_interval_ms);
		config_free(cfg);
	}
}
END_TEST

START_TEST(test_sources)
{
	struct config *cfg = load_ok("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\n"
				     "source = rds:my-cluster\n"
				     "[service b]\nprotocol = mysql\nlisten = 127.0.0.1:2\n"
				     "source = rds:maria.1\n"
				     "[service c]\nprotocol = redis\nlisten = 127.0.0.1:3\n"
				     "source = elasticache-global:ldgnf-global\nshard = 0001\n"
				     "[service d]\nprotocol = redis\nlisten = 127.0.0.1:4\n"
				     "source = memorydb:my_db\nshard = 0003\n");
	struct service_config *s = cfg->services;

	/* no [aws] at all is fine: the region can come from the environment */
	ck_assert_ptr_null(cfg->aws.region);
	ck_assert_str_eq(s->source, "rds:my-cluster");
	ck_assert_int_eq(s->nmembers, 0);
	ck_assert_str_eq(s->next->source, "rds:maria.1");
	ck_assert_str_eq(s->next->next->source, "elasticache-global:ldgnf-global");
	ck_assert_str_eq(s->next->next->shard, "0001");
	ck_assert_str_eq(s->next->next->next->source, "memorydb:my_db");
	config_free(cfg);
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(protocol_name(PROTOCOL_POSTGRES), "postgres");
	ck_assert_str_eq(protocol_name(PROTOCOL_MYSQL), "mysql");
	ck_assert_str_eq(protocol_name(PROTOCOL_REDIS), "redis");
	ck_assert_str_eq(protocol_name((enum protocol)42), "unknown");
	ck_assert_str_eq(route_name(ROUTE_WRITER), "writer");
	ck_assert_str_eq(route_name(ROUTE_READER), "reader");
	ck_assert_str_eq(route_name(ROUTE_ANY), "any");
	ck_assert_str_eq(route_name((enum route)-1), "unknown");
	ck_assert_str_eq(drain_mode_name(DRAIN_GRACEFUL), "graceful");
	ck_assert_str_eq(drain_mode_name(DRAIN_IMMEDIATE), "immediate");
	ck_assert_str_eq(drain_mode_name((enum drain_mode)2), "unknown");
}
END_TEST

/* ---- errors ---- */

START_TEST(test_err_unknown_section)
{
	expect_errors(OK_SERVICE "[servce x]\nprotocol = redis\n",
		      "test.ini:5: unknown section [servce x]: did you mean [service x]?");
	expect_errors(OK_SERVICE "[repoimt]\n",
		      "test.ini:5: unknown section [repoimt]: did you mean [repoint]?");
	expect_errors(OK_SERVICE "[database]\n",
		      "test.ini:5: unknown section [database]: expected [repoint], [aws] or "
		      "[service NAME]");
	expect_errors(OK_SERVICE "[aws east]\n",
		      "test.ini:5: unknown section [aws east]: did you mean [aws]?");
}
END_TEST

START_TEST(test_err_unknown_key)
{
	expect_errors(OK_SERVICE "probe_intervall = 1s\n",
		      "test.ini:5: unknown key 'probe_intervall' in [service ok]: did you mean "
		      "'probe_interval'?");
	expect_errors(OK_SERVICE "region = us-east-1\n",
		      "test.ini:5: unknown key 'region' in [service ok]: it belongs in [aws]");
	expect_errors("[repoint]\nmax_clients = 3\n" OK_SERVICE,
		      "test.ini:2: unknown key 'max_clients' in [repoint]: it belongs in "
		      "[service NAME]");
	expect_errors("[repoint]\nverbose = yes\n" OK_SERVICE,
		      "test.ini:2: unknown key 'verbose' in [repoint]; allowed keys: admin, "
		      "metrics, log_level, log_format, shutdown_timeout, admin_token, secret_refresh");
	expect_errors("[aws]\nzone = a\n" OK_SERVICE,
		      "test.ini:2: unknown key 'zone' in [aws]; allowed keys: region, profile, "
		      "endpoint_url, poll_interval, failover_poll_interval, request_timeout, max_attempts");
	expect_errors(OK_SERVICE "weight = 3\n",
		      "test.ini:5: unknown key 'weight' in [service ok]; allowed keys: protocol, "
		      "listen, route, members, source, shard, probe_interval, probe_timeout, "
		      "failover_probe_interval, down_after, probes, multiplex, cluster, io, probe_user, probe_password, "
		      "probe_database, tls, tls_ca_file, tls_server_name, tls_cert_file, tls_key_file, listen_tls, "
		      "listen_tls_cert_file, listen_tls_key_file, auth, auth_file, client_auth, member_user, "
		      "member_password, reauth_interval, iam_resource, hold_timeout, drain, drain_timeout, "
		      "connect_timeout, resolve_interval, max_clients, pool_size, server_idle_timeout, server_lifetime");
	expect_errors("log_level = info\n" OK_SERVICE,
		      "test.ini:1: 'log_level' is outside any section; put it under [repoint], "
		      "[aws] or [service NAME]");
	expect_errors(OK_SERVICE "= 3\n", "test.ini:5: missing key name before '='");
}
END_TEST

START_TEST(test_err_bad_values)
{
	expect_errors(OK_SERVICE "probe_interval = fast\n",
		      "test.ini:5: probe_interval: expected a duration like 250ms, 1s or 2m, got "
		      "'fast'");
	expect_errors(OK_SERVICE "probe_timeout = 1 s\n",
		      "test.ini:5: probe_timeout: expected a duration like 250ms, 1s or 2m, got "
		      "'1 s'");
	expect_errors(OK_SERVICE "hold_timeout =\n",
		      "test.ini:5: hold_timeout: expected a duration like 250ms, 1s or 2m, got ''");
	expect_errors(OK_SERVICE "down_after = three\n",
		      "test.ini:5: down_after: expected a whole number, got 'three'");
	expect_errors(OK_SERVICE "max_clients = 10k\n",
		      "test.ini:5: max_clients: expected a whole number, got '10k'");
	expect_errors(OK_SERVICE "route = primary\n",
		      "test.ini:5: route: expected writer, reader or any, got 'primary'");
	expect_errors(OK_SERVICE "drain = soft\n",
		      "test.ini:5: drain: expected graceful or immediate, got 'soft'");
	expect_errors("[repoint]\nlog_level = verbose\nlog_format = xml\n" OK_SERVICE,
		      "test.ini:2: log_level: expected debug, info, warn or error, got 'verbose'\n"
		      "test.ini:3: log_format: expected text or json, got 'xml'");
	expect_errors("[repoint]\nadmin = 9901\n" OK_SERVICE,
		      "test.ini:2: admin: expected HOST:PORT, got '9901'");
	expect_errors("[service a]\nprotocol = redis\nlisten = :6434\nmembers = 127.0.0.1:1\n",
		      "test.ini:3: listen: no host in ':6434': write 127.0.0.1:6434 for this machine only, "
		      "0.0.0.0:6434 for every IPv4 address or [::]:6434 for every address");
	expect_errors("[service a]\nprotocol = pg\nlisten = localhost:70000\n"
		      "members = 127.0.0.1:1\n",
		      "test.ini:2: protocol: expected postgres, mysql or redis, got 'pg'\n"
		      "test.ini:3: listen: port must be 1-65535 in 'localhost:70000'");
	expect_errors(OK_SERVICE "[service b]\nprotocol = redis\nlisten = 127.0.0.1:2\n"
				 "members = 127.0.0.1:3,, ::1:4, host\n",
		      "test.ini:8: members: empty entry in '127.0.0.1:3,, ::1:4, host'\n"
		      "test.ini:8: members: IPv6 addresses need brackets: [ADDR]:PORT, got '::1:4'\n"
		      "test.ini:8: members: expected HOST:PORT, got 'host'");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:2\nmembers =\n",
		      "test.ini:4: members: expected HOST:PORT, HOST:PORT ..., got ''");
	expect_errors("[aws]\nregion = US East\nendpoint_url = localhost:4566\n" OK_SERVICE,
		      "test.ini:2: region: expected a region name like us-east-1, got 'US East'\n"
		      "test.ini:3: endpoint_url: expected an http:// or https:// URL, got "
		      "'localhost:4566'");
}
END_TEST

/* Words as people write them. */
START_TEST(test_words_any_case)
{
	struct config *cfg = load_ok("[repoint]\nlog_level = INFO\nlog_format = Json\n[service a]\n"
				     "protocol = Redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\n"
				     "route = Writer\ndrain = IMMEDIATE\nmultiplex = ON\ntls = Verify-Full\nio = URING\n");
	ck_assert_int_eq(cfg->log_level, LOG_INFO);
	ck_assert_int_eq(cfg->log_format, LOG_FORMAT_JSON);
	ck_assert_int_eq(cfg->services[0].protocol, PROTOCOL_REDIS);
	ck_assert_int_eq(cfg->services[0].drain, DRAIN_IMMEDIATE);
	ck_assert(cfg->services[0].multiplex);
	ck_assert_int_eq(cfg->services[0].tls, TLS_VERIFY_FULL);
	ck_assert_int_eq(cfg->services[0].io, IO_URING);
	config_free(cfg);
}
END_TEST

START_TEST(test_err_ranges)
{
	expect_errors(OK_SERVICE "probe_interval = 5ms\n",
		      "test.ini:5: probe_interval: must be at least 10ms, got '5ms'");
	expect_errors(OK_SERVICE "failover_probe_interval = 0\n",
		      "test.ini:5: failover_probe_interval: must be at least 10ms, got '0'");
	expect_errors(OK_SERVICE "probe_timeout = 0s\n",
		      "test.ini:5: probe_timeout: must be greater than 0, got '0s'");
	expect_errors(OK_SERVICE "connect_timeout = 0ms\n",
		      "test.ini:5: connect_timeout: must be greater than 0, got '0ms'");
	expect_errors(OK_SERVICE "hold_timeout = 2h\n",
		      "test.ini:5: hold_timeout: must be at most 1h, got '2h'");
	expect_errors("[aws]\npoll_interval = 1ms\n" OK_SERVICE,
		      "test.ini:2: poll_interval: must be at least 10ms, got '1ms'");
	expect_errors(OK_SERVICE "down_after = 0\n",
		      "test.ini:5: down_after: must be between 1 and 100, got '0'");
	expect_errors(OK_SERVICE "down_after = 101\n",
		      "test.ini:5: down_after: must be between 1 and 100, got '101'");
	expect_errors(OK_SERVICE "max_clients = -5\n",
		      "test.ini:5: max_clients: must be between 1 and 1000000, got '-5'");
	expect_errors(OK_SERVICE "max_clients = 99999999999999999999999\n",
		      "test.ini:5: max_clients: must be between 1 and 1000000, got "
		      "'99999999999999999999999'");

	/* the edges are accepted */
	struct config *cfg = load_ok(OK_SERVICE "probe_interval = 10ms\nprobe_timeout = 1ms\n"
						"hold_timeout = 0\ndrain_timeout = 60m\n"
						"down_after = 100\nmax_clients = 1\n");
	ck_assert_int_eq(cfg->services->probe_interval_ms, 10);
	ck_assert_int_eq(cfg->services->probe_timeout_ms, 1);
	ck_assert_int_eq(cfg->services->hold_timeout_ms, 0);
	ck_assert_int_eq(cfg->services->drain_timeout_ms, 3600000);
	ck_assert_int_eq(cfg->services->down_after, 100);
	ck_assert_int_eq(cfg->services->max_clients, 1);
	config_free(cfg);
}
END_TEST

START_TEST(test_err_duplicates)
{
	expect_errors(OK_SERVICE "probe_interval = 1s\nprobe_interval = 2s\n",
		      "test.ini:6: probe_interval: given twice in this section (first at line 5)");
	expect_errors(OK_SERVICE "[service ok]\nprotocol = redis\n",
		      "test.ini:5: duplicate [service ok] (first at line 1)");
	expect_errors("[repoint]\nlog_level = info\n" OK_SERVICE "[repoint]\nlog_level = warn\n",
		      "test.ini:7: duplicate section [repoint] (first at line 1)");
	expect_errors("[aws]\n[aws]\n" OK_SERVICE,
		      "test.ini:2: duplicate section [aws] (first at line 1)");
}
END_TEST

START_TEST(test_err_service_names)
{
	expect_errors(OK_SERVICE "[service]\nprotocol = redis\n",
		      "test.ini:5: empty service name: expected [service NAME]");
	expect_errors(OK_SERVICE "[service   ]\n",
		      "test.ini:5: empty service name: expected [service NAME]");
	expect_errors(OK_SERVICE "[service my orders]\n",
		      "test.ini:5: bad service name 'my orders': use letters, digits, '_', '.' and "
		      "'-'");
	expect_errors(OK_SERVICE "[service a/b]\n",
		      "test.ini:5: bad service name 'a/b': use letters, digits, '_', '.' and '-'");
	expect_errors(OK_SERVICE "[service "
				 "a123456789a123456789a123456789a123456789a123456789a123456789a1234]\n",
		      "test.ini:5: service name "
		      "'a123456789a123456789a123456789a123456789a123456789a123456789a1234' is too "
		      "long (at most 64 characters)");

	struct config *cfg = load_ok("[service  Orders-eu_1.v2 ]\nprotocol = redis\n"
				     "listen = 127.0.0.1:1\nmembers = 127.0.0.1:2\n");
	ck_assert_str_eq(cfg->services->name, "Orders-eu_1.v2");
	config_free(cfg);
}
END_TEST

START_TEST(test_err_missing)
{
	expect_errors("[repoint]\nlog_level = info\n\n"
		      "[service orders]\n"
		      "route = reader\n",
		      "test.ini:4: service 'orders': missing 'protocol'\n"
		      "test.ini:4: service 'orders': missing 'listen'\n"
		      "test.ini:4: service 'orders': missing 'members' (or 'source')");
	expect_errors("[service orders]\nprotocol = postgres\nmembers = 127.0.0.1:1\n",
		      "test.ini:1: service 'orders': missing 'listen'");
	expect_errors("[service orders]\nprotocol = postgres\nlisten = 127.0.0.1:1\nsource =\n",
		      "test.ini:1: service 'orders': missing 'members' (or 'source')");
	/* a bad value is reported as such, not also as missing */
	expect_errors("[service orders]\nprotocol = postgres\nlisten = 127.0.0.1:1\nsource = x\n",
		      "test.ini:4: source: expected rds:ID, elasticache:ID, elasticache-global:ID "
		      "or memorydb:NAME, got 'x'");
}
END_TEST

START_TEST(test_err_no_services)
{
	expect_errors("", "test.ini: no services: add a [service NAME] section");
	expect_errors("; nothing\n[repoint]\nadmin = 127.0.0.1:9901\n",
		      "test.ini: no services: add a [service NAME] section");
}
END_TEST

START_TEST(test_err_listen)
{
	expect_errors("[repoint]\n"
		      "admin = 127.0.0.1:9901\n"
		      "\n"
		      "[service orders]\n"
		      "protocol = postgres\n"
		      "listen = 127.0.0.1:6432\n"
		      "members = 127.0.0.1:25432\n"
		      "\n"
		      "[service billing]\n"
		      "protocol = postgres\n"
		      "listen = 127.0.0.1:6432\n"
		      "members = 127.0.0.1:25433\n"
		      "\n"
		      "[service api]\n"
		      "protocol = redis\n"
		      "listen = 127.0.0.1:9901\n"
		      "members = 127.0.0.1:26379\n"
		      "\n"
		      "[service all]\n"
		      "protocol = redis\n"
		      "listen = 0.0.0.0:6432\n"
		      "members = 127.0.0.1:26379\n",
		      "test.ini:11: listen 127.0.0.1:6432 is already used by service 'orders' "
		      "(line 6)\n"
		      "test.ini:16: listen 127.0.0.1:9901 is already used by the admin API (line 2)\n"
		      "test.ini:21: listen 0.0.0.0:6432 overlaps 127.0.0.1:6432 of service 'orders' "
		      "(line 6)");
	/* different ports, or IPv4 wildcard against an IPv6 host, are fine */
	struct config *cfg = load_ok("[service a]\nprotocol = redis\nlisten = 0.0.0.0:1\n"
				     "members = 127.0.0.1:9\n"
				     "[service b]\nprotocol = redis\nlisten = [::1]:1\n"
				     "members = 127.0.0.1:9\n"
				     "[service c]\nprotocol = redis\nlisten = 127.0.0.1:2\n"
				     "members = 127.0.0.1:9\n");
	config_free(cfg);
}
END_TEST

START_TEST(test_err_members)
{
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:6379\n"
		      "members = 127.0.0.1:26379, 127.0.0.1:26380, 127.0.0.1:26379\n",
		      "test.ini:4: members: 127.0.0.1:26379 is listed twice");
	expect_errors("[service a]\nprotocol = redis\n"
		      "members = 127.0.0.1:26379, LOCALHOST:6379\nlisten = localhost:6379\n",
		      "test.ini:3: members: LOCALHOST:6379 is this service's own listen address "
		      "(a loop)");
	expect_errors("[service a]\nprotocol = redis\nlisten = 0.0.0.0:6379\n"
		      "members = 127.0.0.1:6379\n",
		      "test.ini:4: members: 127.0.0.1:6379 is this service's own listen address "
		      "(a loop)");
}
END_TEST

/* cluster = on | off | auto; a cluster's nodes from members or an elasticache:/memorydb: source,
 * every shard (not one pinned with shard =). */
START_TEST(test_err_cluster)
{
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\ncluster = maybe\n",
		      "test.ini:5: cluster: expected off, on or auto, got 'maybe'");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nsource = elasticache:g\nshard = 0001\n"
		      "cluster = auto\n",
		      "test.ini:5: shard: pins one node group, but cluster = on serves every shard behind one listener: "
		      "choose one");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nsource = elasticache-global:g\ncluster = on\n",
		      "test.ini:5: cluster: a cluster's nodes come from static members or from an elasticache: (cluster "
		      "mode) or memorydb: source, not from elasticache-global:g");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\ncluster = auto\n"
		      "route = reader\n",
		      "test.ini:6: cluster: commands go to their shard's primary: it needs route = writer");
	config_free(load_ok("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nsource = memorydb:m\ncluster = on\n"));
}
END_TEST

START_TEST(test_err_source)
{
	expect_errors("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\n"
		      "source = aurora:my-cluster\n",
		      "test.ini:4: source: unknown kind 'aurora' in 'aurora:my-cluster'; expected "
		      "rds:ID, elasticache:ID, elasticache-global:ID or memorydb:NAME");
	expect_errors("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\nsource = rds:\n",
		      "test.ini:4: source: missing the ID after 'rds:'");
	expect_errors("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\n"
		      "source = rds:a/b\n",
		      "test.ini:4: source: bad character in 'rds:a/b'; IDs use letters, digits, "
		      "'-', '_' and '.'");
	expect_errors("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\n"
		      "members = 127.0.0.1:2\nsource = rds:x\n",
		      "test.ini:5: source: cannot be used together with 'members' (line 4)");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nsource = rds:x\n"
		      "[service b]\nprotocol = mysql\nlisten = 127.0.0.1:2\nsource = memorydb:x\n",
		      "test.ini:4: source: rds needs protocol postgres or mysql, but this service is "
		      "redis\n"
		      "test.ini:8: source: memorydb needs protocol redis, but this service is mysql");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\n"
		      "members = 127.0.0.1:2\nshard = 0001\n",
		      "test.ini:5: shard: needs an elasticache or memorydb source");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\n"
		      "multiplex = maybe\n[service b]\nprotocol = postgres\nlisten = 127.0.0.1:3\n"
		      "members = 127.0.0.1:4\nmultiplex = on\n",
		      "test.ini:5: multiplex: expected true or false, got 'maybe'\n"
		      "test.ini:10: multiplex: only redis sessions can share a server connection, but this "
		      "service is postgres");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\n"
		      "io = poll\n",
		      "test.ini:5: io: expected epoll or uring, got 'poll'");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\n"
		      "tls = verify\ntls_ca_file = /nonexistent/ca.pem\n[service b]\nprotocol = mysql\n"
		      "listen = 127.0.0.1:3\nmembers = 127.0.0.1:4\ntls = require\n",
		      "test.ini:5: tls: expected off, require, verify-ca or verify-full, got 'verify'\n"
		      "test.ini:6: tls_ca_file: cannot read '/nonexistent/ca.pem': No such file or directory");
	{
		/* Redis multiplexes unless told not to; the others never do. */
		struct config *cfg = load_ok("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\n"
					     "members = 127.0.0.1:2\nmultiplex = off\n[service b]\nprotocol = redis\n"
					     "listen = 127.0.0.1:3\nmembers = 127.0.0.1:4\n[service c]\nprotocol = postgres\n"
					     "listen = 127.0.0.1:5\nmembers = 127.0.0.1:6\n");
		ck_assert(!cfg->services->multiplex);
		ck_assert(cfg->services->next->multiplex);
		ck_assert(!cfg->services->next->next->multiplex);
		ck_assert_int_eq(cfg->services->io, IO_EPOLL);  /* readiness unless told otherwise */
		config_free(cfg);
	}
	/* auth = repoint for redis: repoint logs in to the members (member_user, member_password);
	 * iam there names the ElastiCache group or MemoryDB cluster, an ACL user, and needs verify-full. */
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\nauth = repoint\n"
		      "[service b]\nprotocol = redis\nlisten = 127.0.0.1:3\nmembers = 127.0.0.1:4\nauth = repoint\n"
		      "client_auth = scram-sha-256\nmember_password = pw\n"
		      "[service c]\nprotocol = redis\nlisten = 127.0.0.1:5\nmembers = 127.0.0.1:6\nmember_user = u\n"
		      "[service d]\nprotocol = redis\nlisten = 127.0.0.1:7\nmembers = 127.0.0.1:8\nauth = repoint\n"
		      "member_user = u\nmember_password = iam\ntls = verify-full\n"
		      "[service e]\nprotocol = redis\nlisten = 127.0.0.1:9\nsource = elasticache:g\nauth = repoint\n"
		      "member_password = iam\ntls = verify-full\n"
		      "[service f]\nprotocol = redis\nlisten = 127.0.0.1:10\nsource = memorydb:c\nauth = repoint\n"
		      "member_user = u\nmember_password = iam\nprobe_user = p\nprobe_password = iam\n"
		      "[service g]\nprotocol = postgres\nlisten = 127.0.0.1:11\nmembers = 127.0.0.1:12\n"
		      "member_password = x\n",
		      "test.ini:5: auth: repoint logs in to the redis members itself: set member_password (and "
		      "member_user for an ACL user)\n"
		      "test.ini:11: client_auth: redis clients are trusted on loopback (trust); scram-sha-256 is for postgres\n"
		      "test.ini:17: member_user: only for redis services with auth = repoint (postgres logs in as the "
		      "client's user)\n"
		      "test.ini:24: member_password: iam on redis signs an ElastiCache or MemoryDB token, which names the "
		      "replication group or cluster: it needs iam_resource, or source = elasticache:ID or memorydb:NAME\n"
		      "test.ini:31: member_password: iam logs in as an IAM-enabled ACL user: set member_user\n"
		      "test.ini:39: member_password: iam sends an IAM token, a password valid for 15 minutes, in the clear: "
		      "it needs tls = verify-full (this service has tls = off, the default)\n"
		      "test.ini:41: probe_password: iam sends an IAM token, a password valid for 15 minutes, in the clear: "
		      "it needs tls = verify-full (this service has tls = off, the default)\n"
		      "test.ini:46: member_password: only with auth = repoint (redis: repoint's login; postgres, mysql: the "
		      "members' logins instead of auth_file's secrets)");
	{
		struct config *cfg = load_ok("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\nsource = elasticache:grp\n"
					     "auth = repoint\nmember_user = app\nmember_password = iam\ntls = verify-full\n"
					     "reauth_interval = 2s\n");
		ck_assert_int_eq(cfg->services->client_auth, CLIENT_AUTH_TRUST);
		ck_assert_str_eq(cfg->services->member_user, "app");
		ck_assert_int_eq(cfg->services->reauth_interval_ms, 2000);
		ck_assert_str_eq(config_iam_resource(cfg->services), "elasticache:grp");
		config_free(cfg);
	}
	/* auth = repoint: mysql with its own method, plaintext only so far; trust on loopback only, its
	 * keys only with it. */
	expect_errors("[service a]\nprotocol = mysql\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\nauth = repoint\n"
		      "client_auth = md5\n[service b]\nprotocol = postgres\nlisten = 0.0.0.0:3\nmembers = 127.0.0.1:4\n"
		      "auth = repoint\nclient_auth = trust\n[service c]\nprotocol = postgres\nlisten = 127.0.0.1:5\n"
		      "members = 127.0.0.1:6\nauth = repoint\n[service d]\nprotocol = postgres\nlisten = 127.0.0.1:7\n"
		      "members = 127.0.0.1:8\nclient_auth = trust\n",
		      "test.ini:6: client_auth: mysql clients prove themselves with mysql_native_password (or are "
		      "trusted on loopback: trust); md5 is for postgres\n"
		      "test.ini:12: client_auth: trust is for loopback listeners only, but this service listens on 0.0.0.0\n"
		      "test.ini:17: client_auth: scram-sha-256 needs auth_file (the users and their passwords, SCRAM "
		      "verifiers, md5 secrets or mysql_native_password hashes)\n"
		      "test.ini:22: client_auth: only with auth = repoint");
	expect_errors("[service a]\nprotocol = mysql\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\nauth = repoint\n"
		      "auth_file = /dev/null\nclient_auth = scram-sha-256\n[service b]\nprotocol = postgres\nlisten = 127.0.0.1:3\n"
		      "members = 127.0.0.1:4\nauth = repoint\nclient_auth = mysql_native_password\nauth_file = /dev/null\n"
		      "[service c]\nprotocol = mysql\nlisten = 127.0.0.1:5\nmembers = 127.0.0.1:6\nauth = repoint\n",
		      "test.ini:7: client_auth: mysql clients prove themselves with mysql_native_password (or are "
		      "trusted on loopback: trust); scram-sha-256 is for postgres\n"
		      "test.ini:13: client_auth: mysql_native_password is for mysql, but this service is postgres\n"
		      "test.ini:19: client_auth: mysql_native_password needs auth_file (the users and their passwords, "
		      "SCRAM verifiers, md5 secrets or mysql_native_password hashes)");
	{
		struct config *cfg = load_ok("[service a]\nprotocol = mysql\nlisten = 127.0.0.1:1\n"
					     "members = 127.0.0.1:2\nauth = repoint\nauth_file = /dev/null\n");
		ck_assert_int_eq(cfg->services->client_auth, CLIENT_AUTH_MYSQL_NATIVE);
		config_free(cfg);
	}
	{
		struct config *cfg = load_ok("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\n"
					     "members = 127.0.0.1:2\nauth = REPOINT\nclient_auth = trust\n");
		ck_assert_int_eq(cfg->services->auth, AUTH_REPOINT);
		ck_assert_int_eq(cfg->services->client_auth, CLIENT_AUTH_TRUST);
		config_free(cfg);
	}
	expect_errors("[service a]\nprotocol = postgres\nlisten = 127.0.0.1:1\nshard = 0001\n"
		      "source = rds:x\n",
		      "test.ini:4: shard: only applies to elasticache and memorydb sources, not rds");
	expect_errors("[service a]\nprotocol = redis\nlisten = 127.0.0.1:1\n"
		      "source = elasticache:x\nshard = 00 01\n",
		      "test.ini:5: shard: expected a node group ID like 0001, got '00 01'");
}
END_TEST

START_TEST(test_err_syntax)
{
	expect_errors("[service a\nprotocol = redis\n" OK_SERVICE,
		      "test.ini:1: expected ']' to close the section header, got '[service a'");
	expect_errors("[service a ; oops]\n" OK_SERVICE,
		      "test.ini:1: expected ']' to close the section header, got '[service a ; "
		      "oops]'");
	expect_errors("[repoint] x\nlog_level = debug\n" OK_SERVICE,
		      "test.ini:1: unexpected text after ']': 'x'");
	expect_errors(OK_SERVICE "probe_interval 250ms\n",
		      "test.ini:5: expected 'key = value', '[section]' or a comment: 'probe_interval' without '='");
	expect_errors(OK_SERVICE "members 127.0.0.1:1\n",
		      "test.ini:5: expected 'key = value', '[section]' or a comment: 'members' without '='");
	expect_errors(OK_SERVICE "route: any\n",
		      "test.ini:5: expected 'key = value', '[section]' or a comment: 'route' without '='");
	/* A secret that lost its key is never echoed. */
	expect_errors(OK_SERVICE "hunter2-s3cr3t\n",
		      "test.ini:5: expected 'key = value', '[section]' or a comment (the line is not shown: it may "
		      "hold a secret)");
}
END_TEST

START_TEST(test_err_long_line)
{
	size_t len = 5000;
	char *text = malloc(len + 200);
	ck_assert_ptr_nonnull(text);
	strcpy(text, OK_SERVICE "probe_password = ");
	size_t at = strlen(text);
	memset(text + at, 'x', len);
	strcpy(text + at + len, "\nmax_clients = 0\n");
	expect_errors(text, "test.ini:5: line is too long (at most 4094 characters)\n"
			    "test.ini:6: max_clients: must be between 1 and 1000000, got '0'");
	free(text);
}
END_TEST

/* Every problem, in line order, even those found only at the end (missing keys, listen). */
START_TEST(test_err_many)
{
	expect_errors("[repoint]\n"                       /* 1 */
		      "admin = 127.0.0.1:9901\n"          /* 2 */
		      "log_level = loud\n"                /* 3 */
		      "\n"                                /* 4 */
		      "[service orders]\n"                /* 5 */
		      "protocol = postgres\n"             /* 6 */
		      "probe_interval = fast\n"           /* 7 */
		      "members = 127.0.0.1:25432\n"       /* 8 */
		      "probe_interval = 1s\n"             /* 9 */
		      "[servce x]\n"                      /* 10 */
		      "listen = 127.0.0.1:1\n"            /* 11: skipped with its section */
		      "[service billing]\n"               /* 12 */
		      "protocol = mysql\n"                /* 13 */
		      "listen = 127.0.0.1:9901\n"         /* 14 */
		      "members = 127.0.0.1:9901\n"        /* 15 */
		      "down_after = 0\n"                  /* 16 */
		      "garbage\n",                        /* 17 */
		      "test.ini:3: log_level: expected debug, info, warn or error, got 'loud'\n"
		      "test.ini:5: service 'orders': missing 'listen'\n"
		      "test.ini:7: probe_interval: expected a duration like 250ms, 1s or 2m, got "
		      "'fast'\n"
		      "test.ini:9: probe_interval: given twice in this section (first at line 7)\n"
		      "test.ini:10: unknown section [servce x]: did you mean [service x]?\n"
		      "test.ini:14: listen 127.0.0.1:9901 is already used by the admin API (line 2)\n"
		      "test.ini:15: members: 127.0.0.1:9901 is this service's own listen address (a "
		      "loop)\n"
		      "test.ini:16: down_after: must be between 1 and 100, got '0'\n"
		      "test.ini:17: expected 'key = value', '[section]' or a comment (the line is not shown: it may "
		      "hold a secret)");
}
END_TEST

START_TEST(test_err_truncated)
{
	char small[40];
	struct config *cfg = config_load_string("[service a]\nprotocol = x\nlisten = 127.0.0.1:1\n"
						"members = 127.0.0.1:2\n", "test.ini", small,
						sizeof(small));
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(small, "test.ini:2: protocol: expected postgres");
	/* no buffer at all is allowed too */
	ck_assert_ptr_null(config_load_string("[service a]\n", "test.ini", NULL, 0));
}
END_TEST

/* ---- files ---- */

/* ---- secrets ---- */

START_TEST(test_secret_refs)
{
	struct secret_ref r;
	char why[200];

	ck_assert(secret_ref_parse("hunter2", &r, why, sizeof(why)) && r.kind == SECRET_LITERAL);
	ck_assert(secret_ref_parse("", &r, why, sizeof(why)) && r.kind == SECRET_LITERAL);
	ck_assert(secret_ref_parse("iam", &r, why, sizeof(why)) && r.kind == SECRET_IAM);
	ck_assert(secret_ref_parse("IAM", &r, why, sizeof(why)) && r.kind == SECRET_LITERAL);
	ck_assert(secret_ref_parse("env:DB_PASS_1", &r, why, sizeof(why)) && r.kind == SECRET_ENV);
	ck_assert_str_eq(r.arg, "DB_PASS_1");
	ck_assert(secret_ref_parse("file:/run/secrets/db", &r, why, sizeof(why)) && r.kind == SECRET_FILE);
	ck_assert_str_eq(r.arg, "/run/secrets/db");
	ck_assert(secret_ref_parse("secretsmanager:prod/orders-db", &r, why, sizeof(why)));
	ck_assert(r.kind == SECRET_SECRETSMANAGER && strcmp(r.arg, "prod/orders-db") == 0 && r.key[0] == '\0' &&
		  r.region[0] == '\0');
	ck_assert(secret_ref_parse("secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-12ab-Xy1z#password",
				   &r, why, sizeof(why)) == false); /* '!' is not in a name */
	ck_assert(secret_ref_parse("secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-Xy1zAb#password",
				   &r, why, sizeof(why)));
	ck_assert_str_eq(r.arg, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-Xy1zAb");
	ck_assert_str_eq(r.key, "password");
	ck_assert_str_eq(r.region, "eu-west-1");

	ck_assert(!secret_ref_parse("env:", &r, why, sizeof(why)));
	ck_assert_str_eq(why, "env: needs a variable name (letters, digits, '_'), as in env:DB_PASSWORD");
	ck_assert(!secret_ref_parse("env:1X", &r, why, sizeof(why)));
	ck_assert(!secret_ref_parse("file:relative/path", &r, why, sizeof(why)));
	ck_assert_str_eq(why, "file: needs an absolute path, as in file:/run/secrets/db-password");
	ck_assert(!secret_ref_parse("secretsmanager:", &r, why, sizeof(why)));
	ck_assert(!secret_ref_parse("secretsmanager:db#", &r, why, sizeof(why)));
	ck_assert(!secret_ref_parse("secretsmanager:arn:aws:s3:::bucket", &r, why, sizeof(why)));
	ck_assert(!secret_ref_parse("secretsmanager:arn:aws:secretsmanager:eu-west-1:1234:secret:x", &r, why, sizeof(why)));
}
END_TEST

START_TEST(test_secrets_in_config)
{
	char path[] = "/tmp/repoint-test-secret-XXXXXX";
	int fd = mkstemp(path);
	char text[2048];
	struct config *cfg;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "pw\n", 3), 3);
	close(fd);
	setenv("REPOINT_TEST_SECRET", "from-env", 1);
	unsetenv("REPOINT_TEST_UNSET");
	snprintf(text, sizeof(text),
		 "[repoint]\nadmin_token = env:REPOINT_TEST_SECRET\nsecret_refresh = 30s\n"
		 "[service a]\nprotocol = postgres\nlisten = 127.0.0.1:7000\nmembers = 127.0.0.1:7001\n"
		 "probe_password = file:%s\n"
		 "[service b]\nprotocol = mysql\nlisten = 127.0.0.1:7002\nmembers = db.example:3306\n"
		 "probe_password = iam\ntls = verify-full\n"
		 "[service c]\nprotocol = redis\nlisten = 127.0.0.1:7004\nmembers = 127.0.0.1:7005\n"
		 "probe_user = app\nprobe_password = secretsmanager:lab/redis#password\n",
		 path);
	cfg = load_ok(text);
	ck_assert_str_eq(cfg->admin_token, "env:REPOINT_TEST_SECRET");
	ck_assert_int_eq(cfg->secret_refresh_ms, 30000);
	ck_assert_ptr_null(cfg->warnings);
	ck_assert(!cfg->services->probe_user_given && cfg->services->next->next->probe_user_given);
	config_free(cfg);

	/* the default refresh, and literals: valid, with warnings that name the line, not the value */
	cfg = load_ok("[repoint]\nadmin_token = tok-en\n" OK_SERVICE "probe_password = s3cret\n");
	ck_assert_int_eq(cfg->secret_refresh_ms, 300000);
	ck_assert_str_eq(cfg->warnings,
			 "test.ini:2: admin_token: the token is written in the file; prefer env:NAME, file:/PATH or "
			 "secretsmanager:ID (the file may be read by more people than the secret should be)\n"
			 "test.ini:7: probe_password of service ok: the password is written in the file; prefer env:NAME, "
			 "file:/PATH or secretsmanager:ID (the file may be read by more people than the secret should be)");
	config_free(cfg);
	cfg = load_ok(OK_SERVICE "probe_password =\n");
	ck_assert_ptr_null(cfg->warnings);
	config_free(cfg);

	snprintf(text, sizeof(text),
		 "[repoint]\nadmin_token = iam\n"
		 "[service a]\nprotocol = postgres\nlisten = 127.0.0.1:7000\nmembers = 127.0.0.1:7001\n"
		 "probe_password = iam\n"
		 "[service b]\nprotocol = mysql\nlisten = 127.0.0.1:7002\nmembers = 127.0.0.1:7003\n"
		 "probe_password = iam\ntls = verify-ca\n"
		 "[service c]\nprotocol = redis\nlisten = 127.0.0.1:7004\nmembers = 127.0.0.1:7005\n"
		 "probe_password = iam\ntls = verify-full\n"
		 "[service d]\nprotocol = postgres\nlisten = 127.0.0.1:7006\nmembers = 127.0.0.1:7007\n"
		 "probe_password = env:REPOINT_TEST_UNSET\n"
		 "[service e]\nprotocol = postgres\nlisten = 127.0.0.1:7008\nmembers = 127.0.0.1:7009\n"
		 "probe_password = file:/nonexistent/repoint-secret\n"
		 "[service f]\nprotocol = postgres\nlisten = 127.0.0.1:7010\nmembers = 127.0.0.1:7011\n"
		 "probe_password = secretsmanager:no spaces\n");
	expect_errors(text,
		      "test.ini:2: admin_token: iam is for probe_password and member_password (IAM tokens for the members)\n"
		      "test.ini:7: probe_password: iam sends an IAM token, a password valid for 15 minutes, in the clear: "
		      "it needs tls = verify-full (this service has tls = off, the default)\n"
		      "test.ini:12: probe_password: iam sends an IAM token, a password valid for 15 minutes, in the clear: "
		      "it needs tls = verify-full (this service has tls = verify-ca)\n"
		      "test.ini:18: probe_password: iam on redis signs an ElastiCache or MemoryDB token, which names the "
		      "replication group or cluster: it needs iam_resource, or source = elasticache:ID or memorydb:NAME\n"
		      "test.ini:24: probe_password: env:REPOINT_TEST_UNSET is not set\n"
		      "test.ini:29: probe_password: file:/nonexistent/repoint-secret: cannot read it: No such file or directory\n"
		      "test.ini:34: probe_password: secretsmanager: expected a secret name (letters, digits, /_+=.@-) or an "
		      "ARN, then optionally #KEY");
	expect_errors("[repoint]\nsecret_refresh = 10ms\n" OK_SERVICE,
		      "test.ini:2: secret_refresh: must be at least 1s, got '10ms'");
	unlink(path);
}
END_TEST

START_TEST(test_load_file)
{
	char path[] = "/tmp/test_config_XXXXXX";
	int fd = mkstemp(path);
	FILE *fp;
	struct config *cfg;

	ck_assert_int_ge(fd, 0);
	fp = fdopen(fd, "w");
	ck_assert_ptr_nonnull(fp);
	fputs("[repoint]\nadmin = 127.0.0.1:9901\n\n[service orders] ; comment\n"
	      "protocol = postgres\nlisten = 127.0.0.1:6432\n"
	      "members = 127.0.0.1:25432, 127.0.0.1:25433\n",
	      fp);
	fclose(fp);

	cfg = config_load(path, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->path, path);
	ck_assert_int_eq(cfg->services->line, 4);
	ck_assert_int_eq(cfg->services->nmembers, 2);
	config_free(cfg);

	/* messages name the file */
	fp = fopen(path, "a");
	ck_assert_ptr_nonnull(fp);
	fputs("down_after = lots\n", fp);
	fclose(fp);
	cfg = config_load(path, err, sizeof(err));
	ck_assert_ptr_null(cfg);
	char expected[256];
	snprintf(expected, sizeof(expected), "%s:8: down_after: expected a whole number, got 'lots'",
		 path);
	ck_assert_str_eq(err, expected);
	unlink(path);
}
END_TEST

/* A NUL byte cannot reach inih (it would end the line early): reported, the rest still read. */
START_TEST(test_load_nul)
{
	char path[] = "/tmp/test_config_XXXXXX";
	static const char text[] = OK_SERVICE "probe_user = a\0b\nmax_clients = 0\n";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	ck_assert_ptr_null(config_load(path, err, sizeof(err)));
	char expected[512];
	snprintf(expected, sizeof(expected),
		 "%s:5: line contains a NUL byte\n"
		 "%s:6: max_clients: must be between 1 and 1000000, got '0'",
		 path, path);
	ck_assert_str_eq(err, expected);
	unlink(path);
}
END_TEST

START_TEST(test_load_missing)
{
	ck_assert_ptr_null(config_load("/nonexistent/repoint.ini", err, sizeof(err)));
	ck_assert_str_eq(err, "/nonexistent/repoint.ini: cannot open: No such file or directory");
	ck_assert_ptr_null(config_load("/tmp", err, sizeof(err)));
	ck_assert_str_eq(err, "/tmp: cannot read: Is a directory");
}
END_TEST

/* The annotated example that `make install` ships must load. */
START_TEST(test_example_config)
{
	struct config *cfg = config_load(TEST_SRCDIR "/conf/repoint.ini", err, sizeof(err));
	const struct service_config *s;

	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert(cfg->has_admin);
	ck_assert_int_eq(cfg->nservices, 3);
	s = cfg->services;
	ck_assert_int_eq(s->protocol, PROTOCOL_POSTGRES);
	ck_assert_int_eq(s->nmembers, 3);
	assert_hostport(&s->members[0], "127.0.0.1", 25432);
	s = s->next;
	ck_assert_int_eq(s->protocol, PROTOCOL_MYSQL);
	assert_hostport(&s->members[0], "127.0.0.1", 23306);
	s = s->next;
	ck_assert_int_eq(s->protocol, PROTOCOL_REDIS);
	assert_hostport(&s->members[0], "127.0.0.1", 26379);
	config_free(cfg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("valid");
	tcase_add_test(tc, test_full);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_strings);
	tcase_add_test(tc, test_comments);
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_sources);
	tcase_add_test(tc, test_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_err_unknown_section);
	tcase_add_test(tc, test_err_unknown_key);
	tcase_add_test(tc, test_err_bad_values);
	tcase_add_test(tc, test_err_ranges);
	tcase_add_test(tc, test_words_any_case);
	tcase_add_test(tc, test_err_duplicates);
	tcase_add_test(tc, test_err_service_names);
	tcase_add_test(tc, test_err_missing);
	tcase_add_test(tc, test_err_no_services);
	tcase_add_test(tc, test_err_listen);
	tcase_add_test(tc, test_err_members);
	tcase_add_test(tc, test_err_source);
	tcase_add_test(tc, test_err_cluster);
	tcase_add_test(tc, test_err_syntax);
	tcase_add_test(tc, test_err_long_line);
	tcase_add_test(tc, test_err_many);
	tcase_add_test(tc, test_err_truncated);
	suite_add_tcase(s, tc);

	tc = tcase_create("secrets");
	tcase_add_test(tc, test_secret_refs);
	tcase_add_test(tc, test_secrets_in_config);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_load_nul);
	tcase_add_test(tc, test_load_missing);
	tcase_add_test(tc, test_example_config);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
