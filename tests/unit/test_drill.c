/* test_drill.c - the drill's numbers (outage, per-client gaps, percentiles, gate), its JSON report
 * and text, the SVG timeline, the error classification and the option parsing. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libxml/parser.h>

#include "drill/conn.h"
#include "drill/drill.h"
#include "drill/report.h"
#include "drill/svg.h"
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
