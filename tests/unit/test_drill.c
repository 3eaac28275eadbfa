/* test_drill.c - the drill's numbers (outage, per-client and per-shard gaps, percentiles, gate), its
 * JSON report and text, the SVG timeline, the error classification, the option parsing, the
 * refusals of a cluster = on drill that come before anything is asked of the service, and the plan
 * of a static Postgres switchover. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>
#include <libxml/parser.h>

#include "config.h"
#include "drill/conn.h"
#include "drill/drill.h"
#include "drill/internal.h"
#include "drill/report.h"
#include "drill/svg.h"
#include "proto/slots.h"
#include "service.h"

#define MS 1000 /* records are in microseconds */

/* Two clients at 50/s; client 0 fails from 1000 to 1300 ms (closed, then refused), client 1 is
 * blocked once (a held connect of 700 ms) and then fine. The failover is requested at 1000 ms. */
static const struct drill_record scenario[] = {
	{.start_us = 900 * MS, .end_us = 905 * MS, .client = 0, .kind = DRILL_OK},
	{.start_us = 920 * MS, .end_us = 925 * MS, .client = 1, .kind = DRILL_OK},
	{.start_us = 960 * MS, .end_us = 965 * MS, .client = 0, .kind = DRILL_OK},
	{.start_us = 1010 * MS, .end_us = 1020 * MS, .client = 0, .kind = DRILL_ERR_CLOSED, .message = "gone"},
	{.start_us = 1000 * MS, .end_us = 1700 * MS, .client = 1, .kind = DRILL_OK, .connected = true},
	{.start_us = 1040 * MS, .end_us = 1300 * MS, .client = 0, .kind = DRILL_ERR_REFUSED, .message = "no <writer> & co"},
	{.start_us = 1320 * MS, .end_us = 1330 * MS, .client = 0, .kind = DRILL_OK, .connected = true},
	{.start_us = 1720 * MS, .end_us = 1725 * MS, .client = 1, .kind = DRILL_OK},
	{.start_us = 1740 * MS, .end_us = 1745 * MS, .client = 0, .kind = DRILL_OK},
};
#define NSCENARIO (sizeof(scenario) / sizeof(scenario[0]))

START_TEST(test_outage)
{
	struct drill_outage o;

	drill_outage_compute(scenario, NSCENARIO, 1000 * MS, 500 * MS, &o);
	ck_assert(o.any);
	ck_assert(o.recovered);
	ck_assert_int_eq(o.start_us, 1000 * MS);          /* the blocked connect started first */
	ck_assert_int_eq(o.first_error_us, 1020 * MS);
	ck_assert_int_eq(o.last_error_us, 1300 * MS);
	/* the first success that started after the last trouble (the blocked one ended at 1700) */
	ck_assert_int_eq(o.first_success_after_us, 1725 * MS);
	ck_assert_int_eq(o.duration_us, 725 * MS);
	ck_assert_int_eq(o.errors, 2);
	ck_assert_int_eq(o.blocked, 1);

	/* With a higher slow threshold the held connect is not trouble: errors alone count. */
	drill_outage_compute(scenario, NSCENARIO, 1000 * MS, 1000 * MS, &o);
	ck_assert_int_eq(o.start_us, 1010 * MS);
	ck_assert_int_eq(o.first_success_after_us, 1330 * MS);
	ck_assert_int_eq(o.duration_us, 320 * MS);

	/* Nothing after the request: no outage. */
	drill_outage_compute(scenario, 3, 1000 * MS, 500 * MS, &o);
	ck_assert(!o.any);
	ck_assert(o.recovered);
	ck_assert_int_eq(o.duration_us, 0);
	ck_assert_int_eq(o.start_us, -1);

	/* Never requested: nothing to measure. */
	drill_outage_compute(scenario, NSCENARIO, -1, 500 * MS, &o);
	ck_assert(!o.any);

	/* No success after the last error: not recovered, the window runs to the last record. */
	drill_outage_compute(scenario, 6, 1000 * MS, 1000 * MS, &o);
	ck_assert(o.any);
	ck_assert(!o.recovered);
	ck_assert_int_eq(o.end_us, 1700 * MS);
	ck_assert_int_eq(o.duration_us, 690 * MS);
}
END_TEST

START_TEST(test_client_gaps)
{
	int64_t gs, ge, gap;
	bool rec;

	/* Up to the recovery (the first 7 records): the gap that spans the failover. */
	gap = drill_client_gap(scenario, 7, 0, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 365 * MS);                   /* 965 -> 1330 */
	ck_assert_int_eq(gs, 965 * MS);
	ck_assert_int_eq(ge, 1330 * MS);
	ck_assert(rec);
	gap = drill_client_gap(scenario, NSCENARIO, 1, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 775 * MS);                   /* 925 -> 1700 */
	/* Over all records, the longest gap ending after the request wins, whatever caused it. */
	gap = drill_client_gap(scenario, NSCENARIO, 0, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 415 * MS);                   /* 1330 -> 1745 */
	/* Gaps that end before the request do not count. */
	gap = drill_client_gap(scenario, NSCENARIO, 0, 1800 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 2000 * MS - 1745 * MS);      /* no success after: runs to `until` */
	ck_assert(!rec);
	ck_assert_int_eq(ge, 2000 * MS);
	/* A client that never succeeded is measured from the request. */
	gap = drill_client_gap(scenario, NSCENARIO, 7, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 1000 * MS);
	ck_assert(!rec);
}
END_TEST

START_TEST(test_percentiles)
{
	int64_t v[100], one[] = {42}, unsorted[] = {30, 10, 20};

	for (int i = 0; i < 100; i++)
		v[i] = 100 - i;  /* 100 .. 1, not sorted */
	ck_assert_int_eq(drill_percentile(v, 100, 50), 50);
	ck_assert_int_eq(drill_percentile(v, 100, 95), 95);
	ck_assert_int_eq(drill_percentile(v, 100, 100), 100);
	ck_assert_int_eq(drill_percentile(v, 100, 0), 1);
	ck_assert_int_eq(v[0], 100);                       /* the input is left alone */
	ck_assert_int_eq(drill_percentile(one, 1, 95), 42);
	ck_assert_int_eq(drill_percentile(unsorted, 3, 50), 20);
	ck_assert_int_eq(drill_percentile(unsorted, 3, 95), 30);
	ck_assert_int_eq(drill_percentile(NULL, 0, 50), -1);
}
END_TEST

START_TEST(test_gate)
{
	struct drill_gate none = {-1, -1}, g = {.max_outage_ms = 500, .max_errors = 3};
	char why[256];

	ck_assert_int_eq(drill_gate_check(&none, 99999, 99999, false, why, sizeof(why)), 0);
	ck_assert_str_eq(why, "");
	ck_assert_int_eq(drill_gate_check(&g, 500, 3, true, why, sizeof(why)), 0);
	ck_assert_int_eq(drill_gate_check(&g, 501, 3, true, why, sizeof(why)), 1);
	ck_assert_str_eq(why, "outage 501 ms exceeds --max-outage 500 ms");
	ck_assert_int_eq(drill_gate_check(&g, 10, 4, true, why, sizeof(why)), 1);
	ck_assert_str_eq(why, "4 client errors exceed --max-errors 3");
	ck_assert_int_eq(drill_gate_check(&g, 900, 9, false, why, sizeof(why)), 1);
	ck_assert_str_eq(why, "outage 900 ms exceeds --max-outage 500 ms\n9 client errors exceed --max-errors 3\n"
			      "the clients did not recover");
}
END_TEST

static json_t *scenario_report(const char *status)
{
	static const char *const modes[] = {"long", "per-request"};
	struct drill_event ev[] = {
		{.name = "new_writer_confirmed", .at_us = 1250 * MS, .detail = "10.0.0.2:5432 (seen by the probe)"},
		{.name = "failover_requested", .at_us = 1000 * MS, .detail = "pg_promote"},
		{.name = "old_writer_drained", .at_us = 1240 * MS, .detail = "1 session(s) <drained> & \"co\""},
	};
	struct service_counters before = {.accepted = 10, .drained = 1, .held_total = 2};
	struct service_counters after = {.accepted = 30, .drained = 3, .held_total = 7};
	json_t *fo = json_pack("{s:s, s:s, s:[s]}", "method", "pg_promote", "to", "10.0.0.2:5432", "calls",
			       "10.0.0.2:5432: SELECT pg_promote(true, 30)");
	json_t *opts = json_pack("{s:i, s:f, s:s, s:s}", "clients", 2, "rate", 50.0, "mode", "both", "write",
				 "SELECT txid_current()");
	struct drill_run_info in = {
		.id = "t-1",
		.service = "orders",
		.protocol = "postgres",
		.listen = "127.0.0.1:6432",
		.kind = "static",
		.status = status,
		.t0_wall_ms = 1700000000000LL,
		.duration_us = 2000 * MS,
		.requested_us = 1000 * MS,
		.slow_us = 500 * MS,
		.options = opts,
		.failover = fo,
		.records = scenario,
		.nrecords = NSCENARIO,
		.nclients = 2,
		.client_modes = modes,
		.events = ev,
		.nevents = 3,
		.before = &before,
		.after = &after,
	};
	json_t *r = drill_report_build(&in);

	json_decref(fo);
	json_decref(opts);
	return r;
}

START_TEST(test_report_shape)
{
	json_t *r = scenario_report("completed"), *tl, *e, *b;
	const char *prev_name = NULL;
	json_int_t prev = -1, sum = 0;
	size_t i;
	const char *key;
	json_t *v;

	ck_assert_str_eq(json_string_value(json_object_get(r, "schema")), DRILL_SCHEMA);
	ck_assert_str_eq(json_string_value(json_object_get(r, "status")), "completed");
	ck_assert(json_is_null(json_object_get(r, "error")));
	ck_assert_str_eq(json_string_value(json_object_get(r, "started_at")), "2023-11-14T22:13:20.000Z");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "duration_ms")), 2000);
	/* The timeline is in time order and includes the moments derived from the records. */
	tl = json_object_get(r, "timeline");
	ck_assert_int_eq(json_array_size(tl), 6);
	json_array_foreach(tl, i, e) {
		json_int_t at = json_integer_value(json_object_get(e, "at_ms"));
		ck_assert_msg(at >= prev, "timeline out of order at %s", json_string_value(json_object_get(e, "name")));
		ck_assert(json_is_string(json_object_get(e, "at")));
		prev = at;
		prev_name = json_string_value(json_object_get(e, "name"));
	}
	ck_assert_str_eq(prev_name, "first_success_after");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r, "events"), "failover_requested")), 1000);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r, "events"), "first_client_error")), 1020);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r, "events"), "last_client_error")), 1300);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(tl, 1), "detail")), "client 0, closed: gone");
	/* Outage and the per-client view. */
	v = json_object_get(r, "outage");
	ck_assert_int_eq(json_integer_value(json_object_get(v, "overall_ms")), 725);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "start_ms")), 1000);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "end_ms")), 1725);
	ck_assert(json_is_true(json_object_get(v, "recovered")));
	ck_assert_int_eq(json_integer_value(json_object_get(v, "max_client_ms")), 775);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "worst_client")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(v, "per_client")), 2);
	e = json_array_get(json_object_get(v, "per_client"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(e, "mode")), "long");
	ck_assert_int_eq(json_integer_value(json_object_get(e, "requests")), 6);
	ck_assert_int_eq(json_integer_value(json_object_get(e, "errors")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(e, "reconnects")), 0);  /* one connect only */
	/* Errors by kind add up; the samples carry the messages. */
	v = json_object_get(r, "errors");
	ck_assert_int_eq(json_integer_value(json_object_get(v, "total")), 2);
	json_object_foreach(json_object_get(v, "by_kind"), key, e)
		sum += json_integer_value(e);
	ck_assert_int_eq(sum, 2);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(v, "by_kind"), "refused")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(v, "samples")), 2);
	v = json_object_get(r, "requests");
	ck_assert_int_eq(json_integer_value(json_object_get(v, "total")), (json_int_t)NSCENARIO);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "slow")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "ok")), 6);
	/* Counters over the drill. */
	v = json_object_get(r, "connections");
	ck_assert_int_eq(json_integer_value(json_object_get(v, "held")), 5);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "drained")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "accepted")), 20);
	/* Buckets of 100 ms over the whole run, per client too. */
	b = json_object_get(r, "buckets");
	ck_assert_int_eq(json_integer_value(json_object_get(b, "width_ms")), 100);
	ck_assert_int_eq(json_array_size(json_object_get(b, "ok")), 21);
	ck_assert_int_eq(json_array_size(json_object_get(b, "errors")), 21);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(b, "errors"), 10)), 1);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(b, "slow"), 17)), 1);
	ck_assert_int_eq(json_array_size(json_object_get(b, "per_client")), 2);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "failover"), "method")), "pg_promote");
	json_decref(r);
}
END_TEST

START_TEST(test_result_and_exit_codes)
{
	struct drill_gate none = {-1, -1}, tight = {.max_outage_ms = 100, .max_errors = -1},
			  loose = {.max_outage_ms = 5000, .max_errors = 10};
	json_t *runs, *res, *sum;

	runs = json_array();
	json_array_append_new(runs, scenario_report("completed"));
	json_array_append_new(runs, scenario_report("completed"));
	res = drill_result_new("orders", runs);
	ck_assert_int_eq(drill_result_decide(res, &none), 0);
	sum = json_object_get(res, "summary");
	ck_assert_int_eq(json_integer_value(json_object_get(sum, "runs")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sum, "outage_ms"), "p50")), 725);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sum, "outage_ms"), "max")), 725);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sum, "errors"), "total")), 4);
	ck_assert(json_is_true(json_object_get(json_object_get(res, "gate"), "passed")));
	ck_assert_int_eq(drill_result_decide(res, &tight), 1);
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(json_object_get(res, "gate"), "breaches"), 0)),
			 "outage 725 ms exceeds --max-outage 100 ms");
	ck_assert_int_eq(json_integer_value(json_object_get(res, "exit_code")), 1);
	ck_assert_int_eq(drill_result_decide(res, &loose), 0);
	json_decref(res);

	runs = json_array();
	json_array_append_new(runs, scenario_report("not_recovered"));
	res = drill_result_new("orders", runs);
	ck_assert_int_eq(drill_result_decide(res, &none), 1);
	json_decref(res);

	runs = json_array();
	json_array_append_new(runs, scenario_report("completed"));
	json_array_append_new(runs, scenario_report("failed"));
	res = drill_result_new("orders", runs);
	ck_assert_int_eq(drill_result_decide(res, &loose), 3);
	json_decref(res);

	runs = json_array();
	json_array_append_new(runs, scenario_report("dry_run"));
	res = drill_result_new("orders", runs);
	ck_assert_int_eq(drill_result_decide(res, &tight), 0);
	json_decref(res);
}
END_TEST

static char *render(void (*fn)(const json_t *, FILE *), const json_t *res)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(f);
	fn(res, f);
	fclose(f);
	return buf;
}

static void text_adapter(const json_t *res, FILE *out)
{
	drill_report_text(res, out);
}

START_TEST(test_text_summary)
{
	json_t *runs = json_array(), *res;
	struct drill_gate tight = {.max_outage_ms = 100, .max_errors = -1};
	char *text;

	json_array_append_new(runs, scenario_report("completed"));
	res = drill_result_new("orders", runs);
	drill_result_decide(res, &tight);
	text = render(text_adapter, res);
	ck_assert_ptr_nonnull(strstr(text, "service orders (postgres, listener 127.0.0.1:6432), run 1/1: completed"));
	ck_assert_ptr_nonnull(strstr(text, "failover requested"));
	ck_assert_ptr_nonnull(strstr(text, "outage     725 ms overall (1000 -> 1725 ms); worst client 775 ms"));
	ck_assert_ptr_nonnull(strstr(text, "closed 1, refused 1") != NULL ? strstr(text, "closed 1, refused 1")
									  : strstr(text, "refused 1, closed 1"));
	ck_assert_ptr_nonnull(strstr(text, "GATE BREACHED: outage 725 ms exceeds --max-outage 100 ms"));
	free(text);
	json_decref(res);
}
END_TEST

START_TEST(test_svg)
{
	json_t *runs = json_array(), *res;
	char *svg;
	xmlDocPtr doc;

	json_array_append_new(runs, scenario_report("completed"));
	json_array_append_new(runs, scenario_report("completed"));
	res = drill_result_new("orders", runs);
	drill_result_decide(res, &(struct drill_gate){-1, -1});
	svg = render(drill_svg_write, res);
	/* Well-formed XML (messages and details are escaped)... */
	doc = xmlReadMemory(svg, (int)strlen(svg), "drill.svg", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR);
	ck_assert_msg(doc != NULL, "the SVG is not well-formed");
	ck_assert_str_eq((const char *)xmlDocGetRootElement(doc)->name, "svg");
	xmlFreeDoc(doc);
	/* ...self-contained, with the events, the outage window and one panel per run. */
	ck_assert_ptr_null(strstr(svg, "<script"));
	ck_assert_ptr_null(strstr(svg, "href="));
	ck_assert_ptr_nonnull(strstr(svg, "failover requested"));
	ck_assert_ptr_nonnull(strstr(svg, "new writer confirmed"));
	ck_assert_ptr_nonnull(strstr(svg, "first client error"));
	ck_assert_ptr_nonnull(strstr(svg, "class=\"outage\""));
	ck_assert_ptr_nonnull(strstr(svg, "outage 725 ms"));
	ck_assert_ptr_nonnull(strstr(svg, "&lt;drained&gt; &amp; &quot;co&quot;"));
	ck_assert_ptr_nonnull(strstr(svg, "run 2/2"));
	free(svg);
	json_decref(res);

	/* No run at all still gives a valid picture. */
	res = drill_result_new("orders", json_array());
	svg = render(drill_svg_write, res);
	doc = xmlReadMemory(svg, (int)strlen(svg), "empty.svg", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR);
	ck_assert_ptr_nonnull(doc);
	xmlFreeDoc(doc);
	free(svg);
	json_decref(res);
}
END_TEST

START_TEST(test_classification)
{
	ck_assert_int_eq(drill_classify_pg("25006", "cannot execute INSERT in a read-only transaction", false),
			 DRILL_ERR_READ_ONLY);
	ck_assert_int_eq(drill_classify_pg("XX000", "cannot assign TransactionIds during recovery", false),
			 DRILL_ERR_READ_ONLY);
	ck_assert_int_eq(drill_classify_pg(NULL, "server closed the connection unexpectedly", false),
			 DRILL_ERR_CLOSED);
	ck_assert_int_eq(drill_classify_pg("57P01", "terminating connection due to administrator command", false),
			 DRILL_ERR_CLOSED);
	ck_assert_int_eq(drill_classify_pg("42601", "syntax error", false), DRILL_ERR_SERVER);
	ck_assert_int_eq(drill_classify_pg(NULL, "Connection refused Is the server running", true), DRILL_ERR_REFUSED);
	ck_assert_int_eq(drill_classify_pg(NULL, "FATAL: repoint: no writer for service", true), DRILL_ERR_REFUSED);
	ck_assert_int_eq(drill_classify_pg(NULL, "server closed the connection unexpectedly", true), DRILL_ERR_CLOSED);
	ck_assert_int_eq(drill_classify_pg("57014", "canceling statement due to statement timeout", false),
			 DRILL_ERR_TIMEOUT);
	ck_assert_int_eq(drill_classify_mysql(1290, false), DRILL_ERR_READ_ONLY);
	ck_assert_int_eq(drill_classify_mysql(1836, false), DRILL_ERR_READ_ONLY);
	ck_assert_int_eq(drill_classify_mysql(2013, false), DRILL_ERR_CLOSED);
	ck_assert_int_eq(drill_classify_mysql(2003, true), DRILL_ERR_REFUSED);
	ck_assert_int_eq(drill_classify_mysql(1045, true), DRILL_ERR_REFUSED);
	ck_assert_int_eq(drill_classify_mysql(1062, false), DRILL_ERR_SERVER);
	ck_assert_int_eq(drill_classify_redis("READONLY You can't write against a read only replica."),
			 DRILL_ERR_READ_ONLY);
	ck_assert_int_eq(drill_classify_redis("ERR repoint: no writer"), DRILL_ERR_SERVER);
	ck_assert_str_eq(drill_kind_name(DRILL_ERR_READ_ONLY), "read_only");
	ck_assert_int_eq(drill_kind_parse("server_error"), DRILL_ERR_SERVER);
	ck_assert_int_eq(drill_kind_parse("nope"), -1);
}
END_TEST

static int parse(struct drill_options *o, char *err, size_t errlen, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;
	const char *a;
	int rc;

	argv[argc++] = (char *)"drill";
	va_start(ap, errlen);
	while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	drill_options_init(o);
	rc = drill_options_parse(argc, argv, o, err, errlen);
	return rc;
}

#define PARSE_ERR(expect, ...)                                                                     \
	do {                                                                                       \
		struct drill_options po_;                                                          \
		char perr_[512];                                                                   \
		ck_assert_int_eq(parse(&po_, perr_, sizeof(perr_), __VA_ARGS__, NULL), -1);        \
		ck_assert_msg(strstr(perr_, expect) != NULL, "expected '%s' in '%s'", expect, perr_); \
		drill_options_free(&po_);                                                          \
	} while (0)

START_TEST(test_options)
{
	struct drill_options o;
	char err[512];

	ck_assert_int_eq(parse(&o, err, sizeof(err), "-c", "x.ini", "--service", "orders", "--target", "10.0.0.2:5432",
			       "--clients", "6", "--rate", "12.5", "--mode", "per-request", "--duration-after", "1.5s",
			       "--timeout", "2m", "--runs", "3", "--pause", "500ms", "--max-outage", "2s",
			       "--max-errors", "0", "--yes", "--json", "r.json", "--svg", "r.svg", "--quiet", NULL),
			 0);
	ck_assert_str_eq(o.service, "orders");
	ck_assert_str_eq(o.target, "10.0.0.2:5432");
	ck_assert_int_eq(o.clients, 6);
	ck_assert(o.rate > 12.4 && o.rate < 12.6);
	ck_assert_int_eq(o.mode, DRILL_MODE_PER_REQUEST);
	ck_assert_int_eq(o.duration_after_ms, 1500);
	ck_assert_int_eq(o.timeout_ms, 120000);
	ck_assert_int_eq(o.runs, 3);
	ck_assert_int_eq(o.pause_ms, 500);
	ck_assert_int_eq(o.max_outage_ms, 2000);
	ck_assert_int_eq(o.max_errors, 0);
	ck_assert(o.yes && o.quiet && !o.dry_run);
	drill_options_free(&o);

	ck_assert_int_eq(parse(&o, err, sizeof(err), "-c", "x.ini", "-s", "orders", "--dry-run", NULL), 0);
	ck_assert_int_eq(o.clients, 4);
	ck_assert(o.rate > 49.9 && o.rate < 50.1);
	ck_assert_int_eq(o.mode, DRILL_MODE_BOTH);
	ck_assert_int_eq(o.duration_after_ms, 3000);
	ck_assert_int_eq(o.max_outage_ms, -1);
	drill_options_free(&o);

	PARSE_ERR("add --yes", "-c", "x.ini", "--service", "orders");
	PARSE_ERR("no configuration given", "--service", "orders", "--yes");
	PARSE_ERR("no service given", "-c", "x.ini", "--yes");
	PARSE_ERR("unknown option '--bogus'", "-c", "x.ini", "-s", "a", "--yes", "--bogus");
	PARSE_ERR("--clients: expected a number from 1 to 1000, got '0'", "-c", "x", "-s", "a", "--yes", "--clients", "0");
	PARSE_ERR("--clients: expected", "-c", "x", "-s", "a", "--yes", "--clients", "3x");
	PARSE_ERR("--rate: expected", "-c", "x", "-s", "a", "--yes", "--rate", "fast");
	PARSE_ERR("--mode: expected long, per-request or both, got 'some'", "-c", "x", "-s", "a", "--yes", "--mode",
		  "some");
	PARSE_ERR("--max-outage: expected a duration", "-c", "x", "-s", "a", "--yes", "--max-outage", "soon");
	PARSE_ERR("--timeout: expected a duration", "-c", "x", "-s", "a", "--yes", "--timeout", "0");
	PARSE_ERR("--max-errors: expected", "-c", "x", "-s", "a", "--yes", "--max-errors", "-1");
	PARSE_ERR("needs a value", "-c", "x", "-s", "a", "--yes", "--target");
	PARSE_ERR("unexpected argument 'extra'", "-c", "x", "-s", "a", "--yes", "extra");
	PARSE_ERR("--dry-run makes no sense with --runs", "-c", "x", "-s", "a", "--dry-run", "--runs", "2");
	PARSE_ERR("--write: empty statement", "-c", "x", "-s", "a", "--yes", "--write", "");
}
END_TEST

START_TEST(test_options_json)
{
	struct drill_options o, back;
	char err[256];
	json_t *j, *bad;

	drill_options_init(&o);
	o.service = strdup("orders");
	o.target = strdup("pg2");
	o.clients = 7;
	o.mode = DRILL_MODE_LONG;
	o.duration_after_ms = 1234;
	o.yes = true;
	j = drill_options_json(&o);
	drill_options_init(&back);
	ck_assert(drill_options_from_json(j, &back, err, sizeof(err)));
	ck_assert_str_eq(back.service, "orders");
	ck_assert_str_eq(back.target, "pg2");
	ck_assert_int_eq(back.clients, 7);
	ck_assert_int_eq(back.mode, DRILL_MODE_LONG);
	ck_assert_int_eq(back.duration_after_ms, 1234);
	ck_assert(back.yes);
	drill_options_free(&back);
	json_decref(j);
	drill_options_free(&o);

	bad = json_pack("{s:s, s:i}", "service", "a", "clientz", 3);
	drill_options_init(&back);
	ck_assert(!drill_options_from_json(bad, &back, err, sizeof(err)));
	ck_assert_str_eq(err, "unknown option 'clientz'");
	json_decref(bad);
	bad = json_pack("{s:s, s:s}", "service", "a", "duration_after", "later");
	ck_assert(!drill_options_from_json(bad, &back, err, sizeof(err)));
	ck_assert_str_eq(err, "duration_after: expected milliseconds or a duration like 3s");
	json_decref(bad);
	drill_options_free(&back);
	drill_options_init(&back);
	bad = json_pack("{s:i}", "clients", 3);
	ck_assert(!drill_options_from_json(bad, &back, err, sizeof(err)));
	ck_assert_str_eq(err, "service: missing");
	json_decref(bad);
	bad = json_pack("{s:s, s:s}", "service", "a", "duration_after", "2s");
	ck_assert(drill_options_from_json(bad, &back, err, sizeof(err)));
	ck_assert_int_eq(back.duration_after_ms, 2000);
	json_decref(bad);
	drill_options_free(&back);
}
END_TEST


/* ---- cluster = on: a row per shard ------------------------------------------------------------ */

/* A 3-shard cluster, shard 1 drilled; the failover is requested at 1000 ms. Clients 0 and 1 write
 * shard 0's keys, 2 and 3 shard 1's; shard 2 serves no slot (no client writes it) and client 4 sent
 * nothing. Client 1's first request and client 3's at 1630 ms found their key's slot served by no
 * shard (-1). */
static const struct drill_record cluster_recs[] = {
	{.start_us = 800 * MS, .end_us = 805 * MS, .client = 1, .kind = DRILL_ERR_SERVER, .message = "CLUSTERDOWN", .shard = -1},
	{.start_us = 900 * MS, .end_us = 905 * MS, .client = 0, .kind = DRILL_OK, .connected = true, .shard = 0},
	{.start_us = 910 * MS, .end_us = 915 * MS, .client = 2, .kind = DRILL_OK, .connected = true, .shard = 1},
	{.start_us = 950 * MS, .end_us = 955 * MS, .client = 1, .kind = DRILL_OK, .shard = 0},
	{.start_us = 960 * MS, .end_us = 965 * MS, .client = 3, .kind = DRILL_OK, .shard = 1},
	{.start_us = 1010 * MS, .end_us = 1020 * MS, .client = 2, .kind = DRILL_ERR_CLOSED, .message = "gone", .shard = 1},
	{.start_us = 1000 * MS, .end_us = 1600 * MS, .client = 3, .kind = DRILL_OK, .connected = true, .shard = 1},
	{.start_us = 1100 * MS, .end_us = 1105 * MS, .client = 0, .kind = DRILL_OK, .shard = 0},
	{.start_us = 1200 * MS, .end_us = 1300 * MS, .client = 1, .kind = DRILL_OK, .shard = 0},
	{.start_us = 1050 * MS, .end_us = 1400 * MS, .client = 2, .kind = DRILL_ERR_REFUSED, .message = "no writer", .shard = 1},
	{.start_us = 1420 * MS, .end_us = 1425 * MS, .client = 2, .kind = DRILL_OK, .connected = true, .shard = 1},
	{.start_us = 1500 * MS, .end_us = 1505 * MS, .client = 0, .kind = DRILL_OK, .shard = 0},
	{.start_us = 1610 * MS, .end_us = 1615 * MS, .client = 3, .kind = DRILL_OK, .shard = 1},
	{.start_us = 1630 * MS, .end_us = 1640 * MS, .client = 3, .kind = DRILL_ERR_SERVER, .message = "CLUSTERDOWN", .shard = -1},
	{.start_us = 1680 * MS, .end_us = 1685 * MS, .client = 3, .kind = DRILL_OK, .shard = 1},
	{.start_us = 1700 * MS, .end_us = 1705 * MS, .client = 2, .kind = DRILL_OK, .shard = 1},
};
#define NCLUSTER (sizeof(cluster_recs) / sizeof(cluster_recs[0]))

START_TEST(test_shard_gaps)
{
	int64_t gs, ge, gap;
	bool rec;

	/* The drilled shard: its successes, whichever client had them (965 by client 3 -> 1425 by
	 * client 2); the errors in between do not end the gap. */
	gap = drill_shard_gap(cluster_recs, NCLUSTER, 1, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 460 * MS);
	ck_assert_int_eq(gs, 965 * MS);
	ck_assert_int_eq(ge, 1425 * MS);
	ck_assert(rec);
	/* Shard 0 never failed, but each of its clients waited longer than the shard did: 1300 (client
	 * 1) -> 1505 (client 0), while client 0 alone had 1105 -> 1505. */
	gap = drill_shard_gap(cluster_recs, NCLUSTER, 0, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 205 * MS);
	ck_assert_int_eq(gs, 1300 * MS);
	ck_assert_int_eq(ge, 1505 * MS);
	ck_assert(rec);
	ck_assert_int_eq(drill_client_gap(cluster_recs, NCLUSTER, 0, 1000 * MS, 2000 * MS, &gs, &ge, &rec), 400 * MS);
	ck_assert_int_eq(drill_client_gap(cluster_recs, NCLUSTER, 1, 1000 * MS, 2000 * MS, &gs, &ge, &rec), 345 * MS);
	/* No success of the shard after `from`: the gap runs from its last success to `until`. */
	gap = drill_shard_gap(cluster_recs, NCLUSTER, 1, 1705 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 295 * MS);
	ck_assert_int_eq(gs, 1705 * MS);
	ck_assert_int_eq(ge, 2000 * MS);
	ck_assert(!rec);
	/* Only the first records (shard 1 failing, nothing of it ended since): not recovered, the gap
	 * runs from its last success to `until`, while shard 0 is not concerned. */
	gap = drill_shard_gap(cluster_recs, 6, 1, 1000 * MS, 1410 * MS, &gs, &ge, &rec);
	ck_assert(!rec);
	ck_assert_int_eq(gap, 445 * MS);                   /* 965 -> 1410 */
	ck_assert_int_eq(gs, 965 * MS);
	ck_assert_int_eq(ge, 1410 * MS);
	/* A shard no request went to is measured from the request. */
	gap = drill_shard_gap(cluster_recs, NCLUSTER, 2, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 1000 * MS);
	ck_assert_int_eq(gs, 1000 * MS);
	ck_assert_int_eq(ge, 2000 * MS);
	ck_assert(!rec);
	/* Never requested: nothing to measure. */
	gap = drill_shard_gap(cluster_recs, NCLUSTER, 2, -1, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 0);
	ck_assert_int_eq(gs, -1);
	ck_assert_int_eq(ge, -1);
	ck_assert(rec);
	gap = drill_shard_gap(NULL, 0, 0, 1000 * MS, 2000 * MS, &gs, &ge, &rec);
	ck_assert_int_eq(gap, 1000 * MS);
	ck_assert(!rec);
}
END_TEST

/* What drill.c hands over for a cluster: each shard as /status showed it, primary_after and the
 * failovers during the drill filled in at the end. */
static json_t *cluster_shards_in(void)
{
	return json_pack("[{s:i, s:b, s:i, s:s, s:s, s:i}, {s:i, s:b, s:i, s:s, s:s, s:i},"
			 " {s:i, s:b, s:i, s:s, s:s, s:i}]",
			 "shard", 0, "drilled", 0, "slots", 8192, "primary_before", "10.0.0.11:6379", "primary_after",
			 "10.0.0.11:6379", "failovers", 0, "shard", 1, "drilled", 1, "slots", 8192, "primary_before",
			 "10.0.0.12:6379", "primary_after", "10.0.0.22:6379", "failovers", 1, "shard", 2, "drilled", 0,
			 "slots", 0, "primary_before", "10.0.0.13:6379", "primary_after", "10.0.0.13:6379",
			 "failovers", 0);
}

static json_t *cluster_report(json_t *shards, int64_t requested_us)
{
	static const char *const modes[] = {"long", "per-request", "long", "per-request", "long"};
	struct drill_event ev[] = {
		{.name = "failover_requested", .at_us = 1000 * MS, .detail = "redis cluster failover"},
		{.name = "new_writer_confirmed", .at_us = 1410 * MS, .detail = "10.0.0.22:6379 (seen by the probe)"},
	};
	json_t *fo = json_pack("{s:s, s:i, s:s, s:s, s:[s, s]}", "method", "redis cluster failover", "shard", 1,
			       "from", "10.0.0.12:6379", "to", "10.0.0.22:6379", "calls",
			       "10.0.0.22:6379: CLUSTER FAILOVER", "10.0.0.22:6379: INFO replication  (until role:master)");
	json_t *opts = json_pack("{s:i, s:f, s:s, s:s, s:s}", "clients", 2, "rate", 50.0, "mode", "both", "write",
				 "SET repoint:drill:? ? EX 3600", "shard", "1");
	struct drill_run_info in = {
		.id = "c-1",
		.service = "cache",
		.protocol = "redis",
		.listen = "127.0.0.1:6379",
		.kind = "static",
		.status = "completed",
		.t0_wall_ms = 1700000000000LL,
		.duration_us = 2000 * MS,
		.requested_us = requested_us,
		.slow_us = 500 * MS,
		.options = opts,
		.failover = fo,
		.records = cluster_recs,
		.nrecords = NCLUSTER,
		.nclients = 5,
		.client_modes = modes,
		.events = ev,
		.nevents = 2,
		.shards = shards,
	};
	json_t *r = drill_report_build(&in);

	json_decref(fo);
	json_decref(opts);
	return r;
}

static json_int_t jget(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	ck_assert_msg(json_is_integer(v), "%s: not an integer", key);
	return json_integer_value(v);
}

START_TEST(test_report_shards)
{
	json_t *in = cluster_shards_in(), *r = cluster_report(in, 1000 * MS), *shards, *sh, *pc, *b, *ps;
	json_int_t sum = 0;
	size_t i, nb;

	/* The input is copied, not filled in. */
	ck_assert_ptr_null(json_object_get(json_array_get(in, 0), "requests"));
	shards = json_object_get(r, "shards");
	ck_assert(json_is_array(shards));
	ck_assert_int_eq(json_array_size(shards), 3);
	/* The drilled shard: what the service saw of it, its requests (the slow success among the ok)
	 * and its keys' longest gap since the request. */
	sh = json_array_get(shards, 1);
	ck_assert_int_eq(jget(sh, "shard"), 1);
	ck_assert(json_is_true(json_object_get(sh, "drilled")));
	ck_assert_int_eq(jget(sh, "slots"), 8192);
	ck_assert_str_eq(json_string_value(json_object_get(sh, "primary_before")), "10.0.0.12:6379");
	ck_assert_str_eq(json_string_value(json_object_get(sh, "primary_after")), "10.0.0.22:6379");
	ck_assert_int_eq(jget(sh, "failovers"), 1);
	ck_assert_int_eq(jget(sh, "requests"), 9);
	ck_assert_int_eq(jget(sh, "ok"), 7);
	ck_assert_int_eq(jget(sh, "errors"), 2);
	ck_assert_int_eq(jget(sh, "outage_ms"), 460);
	ck_assert_int_eq(jget(sh, "gap_start_ms"), 965);
	ck_assert_int_eq(jget(sh, "gap_end_ms"), 1425);
	ck_assert(json_is_true(json_object_get(sh, "recovered")));
	sh = json_array_get(shards, 0);
	ck_assert(json_is_false(json_object_get(sh, "drilled")));
	ck_assert_int_eq(jget(sh, "requests"), 5);
	ck_assert_int_eq(jget(sh, "errors"), 0);
	ck_assert_int_eq(jget(sh, "outage_ms"), 205);
	ck_assert_int_eq(jget(sh, "gap_start_ms"), 1300);
	ck_assert_int_eq(jget(sh, "gap_end_ms"), 1505);
	/* A shard no request went to: no outage to tell (null, not 0), and nothing to recover from. */
	sh = json_array_get(shards, 2);
	ck_assert_int_eq(jget(sh, "requests"), 0);
	ck_assert_int_eq(jget(sh, "ok"), 0);
	ck_assert_int_eq(jget(sh, "errors"), 0);
	ck_assert(json_is_null(json_object_get(sh, "outage_ms")));
	ck_assert(json_is_null(json_object_get(sh, "gap_start_ms")));
	ck_assert(json_is_null(json_object_get(sh, "gap_end_ms")));
	ck_assert(json_is_true(json_object_get(sh, "recovered")));
	/* The requests whose slot no shard served count for none, but for the run they are errors. */
	json_array_foreach(shards, i, sh)
		sum += jget(sh, "requests");
	ck_assert_int_eq(sum, (json_int_t)NCLUSTER - 2);
	ck_assert_int_eq(jget(json_object_get(r, "errors"), "total"), 4);

	/* Each client's row says its shard: that of its last request (client 1's first and client 3's
	 * one before the last went to no shard); a client that sent nothing has none. */
	pc = json_object_get(json_object_get(r, "outage"), "per_client");
	ck_assert_int_eq(json_array_size(pc), 5);
	ck_assert_int_eq(jget(json_array_get(pc, 0), "shard"), 0);
	ck_assert_int_eq(jget(json_array_get(pc, 1), "shard"), 0);
	ck_assert_int_eq(jget(json_array_get(pc, 2), "shard"), 1);
	ck_assert_int_eq(jget(json_array_get(pc, 3), "shard"), 1);
	ck_assert_ptr_nonnull(json_object_get(json_array_get(pc, 4), "shard"));
	ck_assert(json_is_null(json_object_get(json_array_get(pc, 4), "shard")));
	ck_assert_int_eq(jget(json_array_get(pc, 2), "outage_ms"), 510);   /* 915 -> 1425, its own */

	/* buckets.per_shard: a strip per shard, as long as the others, by request end. */
	b = json_object_get(r, "buckets");
	nb = json_array_size(json_object_get(b, "ok"));
	ck_assert_int_eq(nb, 21);
	ps = json_object_get(b, "per_shard");
	ck_assert_int_eq(json_array_size(ps), 3);
	json_array_foreach(ps, i, sh) {
		ck_assert_int_eq(json_array_size(json_object_get(sh, "ok")), nb);
		ck_assert_int_eq(json_array_size(json_object_get(sh, "errors")), nb);
	}
	sh = json_array_get(ps, 1);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "errors"), 10)), 1);  /* 1020 */
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "errors"), 14)), 1);  /* 1400 */
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "ok"), 16)), 3);      /* 1600, 1615, 1685 */
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "errors"), 16)), 0);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "ok"), 9)), 2);       /* 915, 965 */
	sh = json_array_get(ps, 0);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "ok"), 9)), 2);       /* 905, 955 */
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "ok"), 16)), 0);
	sh = json_array_get(ps, 2);
	for (size_t k = 0; k < nb; k++) {
		ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "ok"), k)), 0);
		ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sh, "errors"), k)), 0);
	}
	/* ...while the run's own errors have the requests no shard served. */
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(b, "errors"), 16)), 1);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(b, "errors"), 8)), 1);
	ck_assert_int_eq(json_array_size(json_object_get(b, "per_client")), 5);
	json_decref(r);

	/* Never requested (refused after the shards were read): the shards are there, without a gap. */
	r = cluster_report(in, -1);
	sh = json_array_get(json_object_get(r, "shards"), 1);
	ck_assert_int_eq(jget(sh, "requests"), 9);
	ck_assert_int_eq(jget(sh, "outage_ms"), 0);
	ck_assert(json_is_null(json_object_get(sh, "gap_start_ms")));
	ck_assert(json_is_true(json_object_get(sh, "recovered")));
	ck_assert(json_is_null(json_object_get(json_array_get(json_object_get(r, "shards"), 2), "outage_ms")));
	json_decref(r);

	/* No shard at all (an empty cluster.shards): an empty array, not none. */
	json_decref(in);
	in = json_array();
	r = cluster_report(in, 1000 * MS);
	ck_assert(json_is_array(json_object_get(r, "shards")));
	ck_assert_int_eq(json_array_size(json_object_get(r, "shards")), 0);
	ck_assert_int_eq(json_array_size(json_object_get(json_object_get(r, "buckets"), "per_shard")), 0);
	json_decref(r);
	json_decref(in);

	/* Not a cluster: none of the cluster fields. */
	r = scenario_report("completed");
	ck_assert_ptr_null(json_object_get(r, "shards"));
	ck_assert_ptr_null(json_object_get(json_object_get(r, "buckets"), "per_shard"));
	json_array_foreach(json_object_get(json_object_get(r, "outage"), "per_client"), i, pc)
		ck_assert_ptr_null(json_object_get(pc, "shard"));
	json_decref(r);
}
END_TEST

static json_t *cluster_result(void)
{
	json_t *in = cluster_shards_in(), *runs = json_array(), *res;

	json_array_append_new(runs, cluster_report(in, 1000 * MS));
	json_decref(in);
	res = drill_result_new("cache", runs);
	drill_result_decide(res, &(struct drill_gate){-1, -1});
	return res;
}

START_TEST(test_text_shards)
{
	json_t *res = cluster_result();
	char *text = render(text_adapter, res);

	ck_assert_msg(strstr(text, "  failover   redis cluster failover (static) of shard 1 from 10.0.0.12:6379 to "
				   "10.0.0.22:6379\n") != NULL, "%s", text);
	ck_assert_ptr_nonnull(strstr(text, "  load       2 clients (both) for each of 3 shards at 50/s each, write: "
					   "SET repoint:drill:? ? EX 3600\n"));
	ck_assert_ptr_nonnull(strstr(text, "    client 0 (long, shard 0): 3 requests, 0 errors, 0 reconnects, longest gap 400 ms\n"));
	ck_assert_ptr_nonnull(strstr(text, "    client 2 (long, shard 1): 5 requests, 2 errors, 1 reconnects, longest gap 510 ms\n"));
	ck_assert_ptr_nonnull(strstr(text, "    client 4 (long): 0 requests"));
	ck_assert_ptr_nonnull(strstr(text, "  shards     (each request counted for the shard serving its key's slot)\n"));
	ck_assert_ptr_nonnull(strstr(text, "    shard 0: 5 requests, 0 errors, longest gap 205 ms; primary 10.0.0.11:6379\n"));
	ck_assert_ptr_nonnull(strstr(text, "    shard 1 (failed over): 9 requests, 2 errors, longest gap 460 ms; primary "
					   "10.0.0.12:6379 -> 10.0.0.22:6379, 1 failover(s)\n"));
	ck_assert_ptr_nonnull(strstr(text, "    shard 2: 0 requests, 0 errors, no requests; primary 10.0.0.13:6379\n"));
	free(text);
	json_decref(res);

	/* A service that is not a cluster says nothing of shards. */
	res = drill_result_new("orders", json_array());
	json_array_append_new(json_object_get(res, "runs"), scenario_report("completed"));
	drill_result_decide(res, &(struct drill_gate){-1, -1});
	text = render(text_adapter, res);
	ck_assert_ptr_null(strstr(text, "shard"));
	ck_assert_ptr_nonnull(strstr(text, "  load       2 clients (both) at 50/s each"));
	free(text);
	json_decref(res);
}
END_TEST

static size_t count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

START_TEST(test_svg_shards)
{
	json_t *res = cluster_result(), *plain;
	char *svg, *plain_svg;
	xmlDocPtr doc;

	svg = render(drill_svg_write, res);
	doc = xmlReadMemory(svg, (int)strlen(svg), "cluster.svg", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR);
	ck_assert_msg(doc != NULL, "the SVG is not well-formed");
	xmlFreeDoc(doc);
	/* A strip per client, then one per shard, the drilled one marked. */
	ck_assert_int_eq(count_of(svg, "class=\"strip\""), 5 + 3);
	ck_assert_ptr_nonnull(strstr(svg, ">shard 0</text>"));
	ck_assert_ptr_nonnull(strstr(svg, ">shard 1 *</text>"));
	ck_assert_ptr_nonnull(strstr(svg, ">shard 2</text>"));
	ck_assert_ptr_nonnull(strstr(svg, ">c4 long</text>"));

	/* The panel grows by the shards' strips: the same run without them is shorter. */
	plain = json_deep_copy(res);
	json_object_del(json_object_get(json_array_get(json_object_get(plain, "runs"), 0), "buckets"), "per_shard");
	plain_svg = render(drill_svg_write, plain);
	ck_assert_int_eq(count_of(plain_svg, "class=\"strip\""), 5);
	ck_assert_ptr_null(strstr(plain_svg, ">shard 1 *</text>"));
	{
		int h1 = 0, h2 = 0;
		const char *a = strstr(svg, "height=\""), *c = strstr(plain_svg, "height=\"");
		ck_assert_ptr_nonnull(a);
		ck_assert_ptr_nonnull(c);
		h1 = atoi(a + 8);
		h2 = atoi(c + 8);
		ck_assert_int_gt(h1, h2);
	}
	free(plain_svg);
	json_decref(plain);
	free(svg);
	json_decref(res);
}
END_TEST

/* ---- cluster = on: what is refused before the service is asked anything ---------------------- */

struct refusal_run {
	struct event_base *base;
	struct config *cfg;
	struct service *svc;
	struct drill *d;
	int done;
};

static void refusal_done(void *arg, struct drill *d)
{
	struct refusal_run *rr = arg;

	(void)d;
	rr->done++;
}

#define CLUSTER_CFG                                                                                \
	"[service cache]\n"                                                                        \
	"protocol = redis\n"                                                                       \
	"listen = 127.0.0.1:7379\n"                                                                \
	"members = 127.0.0.1:7380, 127.0.0.1:7381\n"

/* A drill of service cache (not started: no listener, no probe) begun with --shard shard and
 * --write write (NULL: the defaults); returns it, finished or not. */
static struct drill *begin_drill(struct refusal_run *rr, const char *cluster, const char *shard, const char *write)
{
	char text[512], err[1024];
	struct drill_options o;

	memset(rr, 0, sizeof(*rr));
	snprintf(text, sizeof(text), CLUSTER_CFG "cluster = %s\n", cluster);
	rr->cfg = config_load_string(text, "drill.ini", err, sizeof(err));
	ck_assert_msg(rr->cfg != NULL, "config: %s", err);
	rr->base = event_base_new();
	ck_assert_ptr_nonnull(rr->base);
	rr->svc = service_new(rr->base, &rr->cfg->services[0], &rr->cfg->aws, NULL);
	ck_assert_ptr_nonnull(rr->svc);
	drill_options_init(&o);
	o.service = (char *)"cache";
	o.shard = (char *)shard;
	o.write = (char *)write;
	o.yes = true;
	rr->d = drill_new(rr->base, rr->svc, &rr->cfg->aws, &o, refusal_done, rr);
	ck_assert_ptr_nonnull(rr->d);
	drill_begin(rr->d);
	return rr->d;
}

static void end_drill(struct refusal_run *rr)
{
	if (!drill_finished(rr->d))
		drill_cancel(rr->d, "test over");
	event_base_loop(rr->base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(rr->done, 1);
	drill_free(rr->d);
	service_free(rr->svc);
	event_base_free(rr->base);
	config_free(rr->cfg);
}

/* Begun, refused at once with `code`, its message starting with `msg`; refused runs exit 3. */
static void expect_refused(const char *shard, const char *write, const char *code, const char *msg)
{
	struct refusal_run rr;
	struct drill *d = begin_drill(&rr, "on", shard, write);
	json_t *rep, *err, *res, *runs;

	ck_assert_msg(drill_finished(d), "--shard %s --write %s: not refused", shard ? shard : "(none)",
		      write ? write : "(default)");
	rep = drill_report(d);
	ck_assert_ptr_nonnull(rep);
	ck_assert_str_eq(json_string_value(json_object_get(rep, "status")), "refused");
	err = json_object_get(rep, "error");
	ck_assert_str_eq(json_string_value(json_object_get(err, "code")), code);
	ck_assert_msg(strncmp(json_string_value(json_object_get(err, "message")), msg, strlen(msg)) == 0,
		      "message '%s', expected '%s...'", json_string_value(json_object_get(err, "message")), msg);
	/* Refused before the shards were read, the failover planned or a client started. */
	ck_assert_ptr_null(json_object_get(rep, "shards"));
	ck_assert_ptr_null(json_object_get(json_object_get(rep, "failover"), "shard"));
	ck_assert_int_eq(jget(json_object_get(rep, "requests"), "total"), 0);
	runs = json_array();
	json_array_append(runs, rep);
	res = drill_result_new("cache", runs);
	ck_assert_int_eq(drill_result_decide(res, &(struct drill_gate){-1, -1}), DRILL_EXIT_NOT_RUN);
	json_decref(res);
	end_drill(&rr);
}

START_TEST(test_cluster_refusals)
{
	struct refusal_run rr;
	char big[16], msg[200];

	expect_refused("x", NULL, "BadShard",
		       "--shard x: the shards of cluster service cache are numbered 0, 1, ... as GET /status's "
		       "cluster.shards shows them");
	expect_refused("-1", NULL, "BadShard", "--shard -1: ");
	expect_refused("+1", NULL, "BadShard", "--shard +1: ");
	expect_refused("1a", NULL, "BadShard", "--shard 1a: ");
	expect_refused("", NULL, "BadShard", "--shard : ");
	expect_refused("0001x", NULL, "BadShard", "--shard 0001x: ");
	snprintf(big, sizeof(big), "%d", SLOTS_MAX_SHARDS);
	snprintf(msg, sizeof(msg), "--shard %d: ", SLOTS_MAX_SHARDS);
	expect_refused(big, NULL, "BadShard", msg);
	expect_refused("99999999999999999999", NULL, "BadShard", "--shard 99999999999999999999: ");
	/* The key needs a '?' for the hash tag of the client's shard. */
	expect_refused("1", "SET repoint:drill:k 1", "NoKeyPlaceholder",
		       "--write SET repoint:drill:k 1: cluster service cache needs '?' in the key, where each client's "
		       "requests get the hash tag of its shard");
	expect_refused(NULL, "PING", "NoKeyPlaceholder", "--write PING: ");

	/* A shard number that may be there, the default write (its first '?' in the key), no --shard
	 * (shard 0): nothing refused yet, the preflight waits for the service. */
	snprintf(big, sizeof(big), "%d", SLOTS_MAX_SHARDS - 1);
	begin_drill(&rr, "on", big, NULL);
	ck_assert(!drill_finished(rr.d));
	end_drill(&rr);
	begin_drill(&rr, "on", NULL, NULL);
	ck_assert(!drill_finished(rr.d));
	end_drill(&rr);
	begin_drill(&rr, "on", "007", "SET k? ?");
	ck_assert(!drill_finished(rr.d));
	end_drill(&rr);
	/* A service that is not a cluster does not read --shard so (nor needs a '?'). */
	begin_drill(&rr, "off", "x", "PING");
	ck_assert(!drill_finished(rr.d));
	ck_assert_ptr_null(drill_report(rr.d));
	end_drill(&rr);
}
END_TEST

/* The plan of a static Postgres switchover, as the dry run prints it and the report keeps it: the
 * old writer's new transactions become read-only, the writable ones end, the target replays the
 * old writer's WAL, and only then is it promoted; before that, a failure makes the old writer
 * writable again. */
static void check_pg_plan(const char *target, const char *to)
{
	struct service_config scfg = {.name = (char *)"orders", .protocol = PROTOCOL_POSTGRES,
				      .probe_user = (char *)"postgres", .probe_database = (char *)"postgres"};
	struct drill_member members[3];
	struct drill d;
	json_t *calls;
	char err[512], line[600];
	const char *old = "10.0.0.1:5432";
	const char *expected[][2] = {
		{"", "ALTER SYSTEM SET default_transaction_read_only = on"},
		{"", "SELECT pg_reload_conf()"},
		{"", "SHOW default_transaction_read_only  (until on, 10000 ms at most)"},
		{"", "SELECT clock_timestamp()"},
		{"", "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> "
		     "pg_backend_pid() AND xact_start < '<that clock_timestamp()>'::timestamptz  (until 0, 5000 ms at "
		     "most)"},
		{"", "SELECT count(pg_catalog.pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE backend_type = "
		     "'client backend' AND pid <> pg_backend_pid() AND xact_start < '<that clock_timestamp()>'::timestamptz"},
		{"", "SELECT pg_current_wal_lsn()"},
		{"t", "SELECT pg_last_wal_replay_lsn() >= '<the old writer''s pg_current_wal_lsn()>'::pg_lsn  (until t, "
		      "10000 ms at most)"},
		{"t", "SELECT pg_promote(true, 30)"},
		{"u", "ALTER SYSTEM RESET default_transaction_read_only"},
		{"u", "SELECT pg_reload_conf()"},
	};
	size_t n = sizeof(expected) / sizeof(expected[0]);

	memset(members, 0, sizeof(members));
	for (int i = 0; i < 3; i++) {
		snprintf(members[i].str, sizeof(members[i].str), "10.0.0.%d:5432", i + 1);
		snprintf(members[i].hp.host, sizeof(members[i].hp.host), "10.0.0.%d", i + 1);
		members[i].hp.port = 5432;
		members[i].ep.protocol = PROTOCOL_POSTGRES;
		snprintf(members[i].ep.host, sizeof(members[i].ep.host), "10.0.0.%d", i + 1);
		members[i].ep.port = 5432;
		members[i].role = i == 0 ? ROLE_WRITER : ROLE_READER;
		members[i].healthy = true;
		members[i].epoch = 1;
		members[i].shard = -1;
	}
	memset(&d, 0, sizeof(d));
	d.scfg = &scfg;
	drill_options_init(&d.o);
	d.o.target = (char *)target;
	d.members = members;
	d.nmembers = 3;
	d.shard = -1;
	d.old_idx = d.target_idx = -1;
	snprintf(d.old_writer, sizeof(d.old_writer), "%s", old);
	d.failover = json_pack("{s:[], s:[]}", "calls", "notes");
	ck_assert_msg(drill_promote_plan(&d, err, sizeof(err)), "%s", err);
	ck_assert_str_eq(json_string_value(json_object_get(d.failover, "method")), "pg_promote");
	ck_assert_str_eq(json_string_value(json_object_get(d.failover, "from")), old);
	ck_assert_str_eq(json_string_value(json_object_get(d.failover, "to")), to);
	calls = json_object_get(d.failover, "calls");
	ck_assert_int_eq(json_array_size(calls), n);
	for (size_t i = 0; i < n; i++) {
		if (expected[i][0][0] == 'u')
			snprintf(line, sizeof(line), "(on failure before the promotion) %s: %s", old, expected[i][1]);
		else
			snprintf(line, sizeof(line), "%s: %s", expected[i][0][0] == 't' ? to : old, expected[i][1]);
		ck_assert_str_eq(json_string_value(json_array_get(calls, i)), line);
	}
	/* Nothing is said about the old primary before it ran. */
	ck_assert_int_eq(json_array_size(json_object_get(d.failover, "notes")), 0);
	drill_promote_free(&d);
	ck_assert_ptr_null(d.promote);
	json_decref(d.failover);
}

START_TEST(test_pg_plan)
{
	check_pg_plan(NULL, "10.0.0.2:5432");      /* the first healthy reader */
	check_pg_plan("10.0.0.3:5432", "10.0.0.3:5432");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("drill");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_outage);
	tcase_add_test(tc, test_client_gaps);
	tcase_add_test(tc, test_percentiles);
	tcase_add_test(tc, test_gate);
	tcase_add_test(tc, test_report_shape);
	tcase_add_test(tc, test_result_and_exit_codes);
	tcase_add_test(tc, test_text_summary);
	tcase_add_test(tc, test_svg);
	tcase_add_test(tc, test_classification);
	tcase_add_test(tc, test_options);
	tcase_add_test(tc, test_options_json);
	tcase_add_test(tc, test_shard_gaps);
	tcase_add_test(tc, test_report_shards);
	tcase_add_test(tc, test_text_shards);
	tcase_add_test(tc, test_svg_shards);
	tcase_add_test(tc, test_cluster_refusals);
	tcase_add_test(tc, test_pg_plan);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
