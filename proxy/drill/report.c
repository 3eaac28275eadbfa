/* drill/report.c - outage, gaps, percentiles, gate, JSON report and text summary (pure). */
#include "drill/report.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "service.h"

static int64_t us_to_ms(int64_t us)
{
	return us < 0 ? -1 : (us + 500) / 1000;
}

void drill_iso8601(int64_t wall_ms, char *buf, size_t len)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
}

/* ---- numbers ---------------------------------------------------------------------------------- */

static bool rec_bad(const struct drill_record *r, int64_t slow_us)
{
	return r->kind != DRILL_OK || r->end_us - r->start_us > slow_us;
}

void drill_outage_compute(const struct drill_record *r, size_t n, int64_t from_us, int64_t slow_us,
			  struct drill_outage *out)
{
	int64_t last_bad_end = -1, last_end = -1;

	memset(out, 0, sizeof(*out));
	out->start_us = out->end_us = out->first_error_us = out->last_error_us = -1;
	out->first_success_after_us = -1;
	out->recovered = true;
	if (from_us < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (r[i].end_us < from_us)
			continue;
		if (r[i].end_us > last_end)
			last_end = r[i].end_us;
		if (!rec_bad(&r[i], slow_us))
			continue;
		out->any = true;
		if (out->start_us < 0 || r[i].start_us < out->start_us)
			out->start_us = r[i].start_us;
		if (r[i].end_us > last_bad_end)
			last_bad_end = r[i].end_us;
		if (r[i].kind != DRILL_OK) {
			out->errors++;
			if (out->first_error_us < 0 || r[i].end_us < out->first_error_us)
				out->first_error_us = r[i].end_us;
			if (r[i].end_us > out->last_error_us)
				out->last_error_us = r[i].end_us;
		} else {
			out->blocked++;
		}
	}
	if (!out->any)
		return;
	/* Recovered once a request that began after the last trouble went through at normal speed:
	 * a success that overlapped the trouble says nothing about the service afterwards. */
	for (size_t i = 0; i < n; i++) {
		if (rec_bad(&r[i], slow_us) || r[i].start_us < last_bad_end)
			continue;
		if (out->first_success_after_us < 0 || r[i].end_us < out->first_success_after_us)
			out->first_success_after_us = r[i].end_us;
	}
	out->recovered = out->first_success_after_us >= 0;
	out->end_us = out->recovered ? out->first_success_after_us : last_end;
	out->duration_us = out->end_us - out->start_us;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* drill_client_gap() and drill_shard_gap(): the records of one client, or of one shard. */
static int64_t success_gap(const struct drill_record *r, size_t n, bool by_shard, int which, int64_t from_us,
			   int64_t until_us, int64_t *gap_start, int64_t *gap_end, bool *recovered)
{
	int64_t *ends = malloc((n > 0 ? n : 1) * sizeof(*ends));
	size_t k = 0;
	int64_t best = 0, prev = -1;
	bool after = false;

	*gap_start = *gap_end = -1;
	*recovered = true;
	if (ends == NULL)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((by_shard ? r[i].shard : r[i].client) == which && r[i].kind == DRILL_OK)
			ends[k++] = r[i].end_us;
	qsort(ends, k, sizeof(*ends), cmp_i64);
	for (size_t i = 0; i < k; i++) {
		if (ends[i] > from_us) {
			/* A client that had no success before the request is counted from it. */
			int64_t start = prev >= 0 ? prev : from_us;
			after = true;
			if (ends[i] - start > best) {
				best = ends[i] - start;
				*gap_start = start;
				*gap_end = ends[i];
			}
		}
		prev = ends[i];
	}
	if (!after && from_us >= 0 && until_us > from_us) {
		int64_t start = prev >= 0 ? prev : from_us;
		*recovered = false;
		best = until_us - start;
		*gap_start = start;
		*gap_end = until_us;
	}
	free(ends);
	return best;
}

int64_t drill_client_gap(const struct drill_record *r, size_t n, int client, int64_t from_us, int64_t until_us,
			 int64_t *gap_start, int64_t *gap_end, bool *recovered)
{
	return success_gap(r, n, false, client, from_us, until_us, gap_start, gap_end, recovered);
}

int64_t drill_shard_gap(const struct drill_record *r, size_t n, int shard, int64_t from_us, int64_t until_us,
			int64_t *gap_start, int64_t *gap_end, bool *recovered)
{
	return success_gap(r, n, true, shard, from_us, until_us, gap_start, gap_end, recovered);
}

int64_t drill_percentile(const int64_t *v, size_t n, double p)
{
	int64_t *s, out;
	size_t idx;
	double rank;

	if (n == 0)
		return -1;
	s = malloc(n * sizeof(*s));
	if (s == NULL)
		return -1;
	memcpy(s, v, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_i64);
	if (p <= 0)
		p = 0;
	if (p >= 100)
		p = 100;
	/* Nearest rank: the smallest value with at least p% of the values at or below it. */
	rank = p / 100.0 * (double)n;
	idx = (size_t)rank;
	if ((double)idx < rank)
		idx++;
	if (idx > 0)
		idx--;
	if (idx >= n)
		idx = n - 1;
	out = s[idx];
	free(s);
	return out;
}

static void appendf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t len, const char *fmt, ...)
{
	size_t off = strlen(buf);
	va_list ap;

	if (off + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + off, len - off, fmt, ap);
	va_end(ap);
}

int drill_gate_check(const struct drill_gate *g, int64_t worst_outage_ms, long worst_errors, bool all_recovered,
		     char *why, size_t whylen)
{
	int rc = 0;

	if (whylen > 0)
		why[0] = '\0';
	if (g->max_outage_ms >= 0 && worst_outage_ms > g->max_outage_ms) {
		appendf(why, whylen, "%soutage %" PRId64 " ms exceeds --max-outage %" PRId64 " ms", rc ? "\n" : "",
			worst_outage_ms, g->max_outage_ms);
		rc = 1;
	}
	if (g->max_errors >= 0 && worst_errors > g->max_errors) {
		appendf(why, whylen, "%s%ld client errors exceed --max-errors %ld", rc ? "\n" : "", worst_errors,
			g->max_errors);
		rc = 1;
	}
	if ((g->max_outage_ms >= 0 || g->max_errors >= 0) && !all_recovered) {
		appendf(why, whylen, "%sthe clients did not recover", rc ? "\n" : "");
		rc = 1;
	}
	return rc;
}

/* ---- the JSON report -------------------------------------------------------------------------- */

static json_t *ms_or_null(int64_t us)
{
	return us >= 0 ? json_integer(us_to_ms(us)) : json_null();
}

static json_t *str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static json_t *counters_json(const struct service_counters *c)
{
	if (c == NULL)
		return json_null();
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "accepted", (json_int_t)c->accepted,
			 "closed", (json_int_t)c->closed, "held_total", (json_int_t)c->held_total, "hold_timeouts",
			 (json_int_t)c->hold_timeouts, "drained", (json_int_t)c->drained, "drained_idle",
			 (json_int_t)c->drained_idle, "drained_timeout", (json_int_t)c->drained_timeout,
			 "upstream_connect_failures", (json_int_t)c->upstream_connect_failures, "migrated",
			 (json_int_t)c->migrated, "retried", (json_int_t)c->retried);
}

static json_int_t delta(uint64_t before, uint64_t after)
{
	return after >= before ? (json_int_t)(after - before) : 0;
}

struct timeline_item {
	const char *name;
	int64_t at_us;
	const char *detail;
};

static int cmp_item(const void *a, const void *b)
{
	const struct timeline_item *x = a, *y = b;

	return x->at_us < y->at_us ? -1 : x->at_us > y->at_us;
}

static json_t *timeline_json(const struct drill_run_info *in, const struct drill_outage *o, json_t **events_map)
{
	size_t n = in->nevents + 3, k = 0;
	struct timeline_item *items = calloc(n, sizeof(*items));
	json_t *arr = json_array(), *map = json_object();
	char iso[40], first[200], last[200], after[40];

	*events_map = map;
	if (items == NULL)
		return arr;
	for (size_t i = 0; i < in->nevents; i++)
		if (in->events[i].at_us >= 0)
			items[k++] = (struct timeline_item){in->events[i].name, in->events[i].at_us, in->events[i].detail};
	/* The derived moments say which client and what it saw. */
	first[0] = last[0] = after[0] = '\0';
	for (size_t i = 0; i < in->nrecords; i++) {
		const struct drill_record *r = &in->records[i];
		if (r->kind != DRILL_OK && r->end_us == o->first_error_us && first[0] == '\0')
			snprintf(first, sizeof(first), "client %d, %s: %s", r->client, drill_kind_name(r->kind),
				 r->message != NULL ? r->message : "");
		if (r->kind != DRILL_OK && r->end_us == o->last_error_us)
			snprintf(last, sizeof(last), "client %d, %s: %s", r->client, drill_kind_name(r->kind),
				 r->message != NULL ? r->message : "");
		if (r->kind == DRILL_OK && r->end_us == o->first_success_after_us && after[0] == '\0')
			snprintf(after, sizeof(after), "client %d", r->client);
	}
	if (o->first_error_us >= 0)
		items[k++] = (struct timeline_item){"first_client_error", o->first_error_us, first};
	if (o->last_error_us >= 0)
		items[k++] = (struct timeline_item){"last_client_error", o->last_error_us, last};
	if (o->any && o->recovered)
		items[k++] = (struct timeline_item){"first_success_after", o->first_success_after_us, after};
	qsort(items, k, sizeof(*items), cmp_item);
	for (size_t i = 0; i < k; i++) {
		drill_iso8601(in->t0_wall_ms + items[i].at_us / 1000, iso, sizeof(iso));
		json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s}", "name", items[i].name, "at_ms",
						     (json_int_t)us_to_ms(items[i].at_us), "at", iso, "detail",
						     items[i].detail != NULL ? items[i].detail : ""));
		if (json_object_get(map, items[i].name) == NULL)
			json_object_set_new(map, items[i].name, json_integer(us_to_ms(items[i].at_us)));
	}
	free(items);
	return arr;
}

static size_t bucket_of(const struct drill_record *r, size_t nb)
{
	size_t b = r->end_us < 0 ? 0 : (size_t)(r->end_us / (DRILL_BUCKET_MS * 1000));

	return b < nb ? b : nb - 1;
}

/* Successes and errors in each bucket, per client or (cluster = on) per shard: the picture's strips. */
static json_t *buckets_per(const struct drill_run_info *in, size_t nb, size_t nkeys, bool by_shard)
{
	json_t *per = json_array();
	long *c_ok = calloc(nb * (nkeys > 0 ? nkeys : 1), sizeof(long));
	long *c_err = calloc(nb * (nkeys > 0 ? nkeys : 1), sizeof(long));

	if (c_ok != NULL && c_err != NULL) {
		for (size_t i = 0; i < in->nrecords; i++) {
			const struct drill_record *r = &in->records[i];
			int key = by_shard ? r->shard : r->client;
			if (key < 0 || (size_t)key >= nkeys)
				continue;
			if (r->kind != DRILL_OK)
				c_err[(size_t)key * nb + bucket_of(r, nb)]++;
			else
				c_ok[(size_t)key * nb + bucket_of(r, nb)]++;
		}
		for (size_t c = 0; c < nkeys; c++) {
			json_t *a = json_array(), *e = json_array();
			for (size_t b = 0; b < nb; b++) {
				json_array_append_new(a, json_integer(c_ok[c * nb + b]));
				json_array_append_new(e, json_integer(c_err[c * nb + b]));
			}
			json_array_append_new(per, json_pack("{s:o, s:o}", "ok", a, "errors", e));
		}
	}
	free(c_ok);
	free(c_err);
	return per;
}

static json_t *buckets_json(const struct drill_run_info *in)
{
	int64_t span_us = in->duration_us;
	size_t nb;
	json_t *o = json_object(), *ok = json_array(), *err = json_array(), *slow = json_array();
	long *c_ok, *c_err, *c_slow;

	for (size_t i = 0; i < in->nrecords; i++)
		if (in->records[i].end_us > span_us)
			span_us = in->records[i].end_us;
	nb = (size_t)(span_us / (DRILL_BUCKET_MS * 1000)) + 1;
	c_ok = calloc(nb, sizeof(long));
	c_err = calloc(nb, sizeof(long));
	c_slow = calloc(nb, sizeof(long));
	if (c_ok != NULL && c_err != NULL && c_slow != NULL) {
		for (size_t i = 0; i < in->nrecords; i++) {
			const struct drill_record *r = &in->records[i];
			size_t b = bucket_of(r, nb);
			if (r->kind != DRILL_OK)
				c_err[b]++;
			else if (r->end_us - r->start_us > in->slow_us)
				c_slow[b]++;
			else
				c_ok[b]++;
		}
		for (size_t b = 0; b < nb; b++) {
			json_array_append_new(ok, json_integer(c_ok[b]));
			json_array_append_new(err, json_integer(c_err[b]));
			json_array_append_new(slow, json_integer(c_slow[b]));
		}
	}
	free(c_ok);
	free(c_err);
	free(c_slow);
	json_object_set_new(o, "width_ms", json_integer(DRILL_BUCKET_MS));
	json_object_set_new(o, "ok", ok);
	json_object_set_new(o, "slow", slow);
	json_object_set_new(o, "errors", err);
	json_object_set_new(o, "per_client", buckets_per(in, nb, in->nclients > 0 ? (size_t)in->nclients : 0, false));
	if (in->shards != NULL)
		json_object_set_new(o, "per_shard", buckets_per(in, nb, json_array_size(in->shards), true));
	return o;
}

/* cluster = on: what the service saw of each shard, with its requests, errors and longest gap
 * without a success (the outage of its keys) since the failover was requested. */
static json_t *shards_json(const struct drill_run_info *in, int64_t until)
{
	json_t *arr = json_array(), *sh;
	size_t k;

	json_array_foreach(in->shards, k, sh) {
		json_t *o = json_deep_copy(sh);
		long n = 0, ok = 0;
		int64_t gs = -1, ge = -1, gap = 0;
		bool rec = true;
		for (size_t i = 0; i < in->nrecords; i++) {
			if (in->records[i].shard != (int)k)
				continue;
			n++;
			ok += in->records[i].kind == DRILL_OK;
		}
		if (in->requested_us >= 0 && n > 0)
			gap = drill_shard_gap(in->records, in->nrecords, (int)k, in->requested_us, until, &gs, &ge,
					      &rec);
		json_object_set_new(o, "requests", json_integer(n));
		json_object_set_new(o, "ok", json_integer(ok));
		json_object_set_new(o, "errors", json_integer(n - ok));
		/* A shard no request went to has no outage to tell. */
		json_object_set_new(o, "outage_ms", n > 0 ? json_integer(us_to_ms(gap)) : json_null());
		json_object_set_new(o, "gap_start_ms", ms_or_null(gs));
		json_object_set_new(o, "gap_end_ms", ms_or_null(ge));
		json_object_set_new(o, "recovered", json_boolean(rec));
		json_array_append_new(arr, o);
	}
	return arr;
}

json_t *drill_report_build(const struct drill_run_info *in)
{
	json_t *o = json_object(), *events_map = NULL, *clients = json_array(), *by_kind = json_object(),
	       *samples = json_array(), *outage = json_object(), *reqs = json_object(), *conns = json_object(),
	       *errors = json_object();
	struct drill_outage out;
	long kinds[DRILL_NKINDS] = {0}, total_ok = 0, total_slow = 0, reconnects_total = 0;
	int64_t *lat = malloc((in->nrecords > 0 ? in->nrecords : 1) * sizeof(int64_t));
	size_t nlat = 0;
	int64_t worst = 0, until = in->duration_us;
	int worst_client = -1;
	char iso[40];

	drill_outage_compute(in->records, in->nrecords, in->requested_us, in->slow_us, &out);
	for (size_t i = 0; i < in->nrecords; i++)
		if (in->records[i].end_us > until)
			until = in->records[i].end_us;
	for (size_t i = 0; i < in->nrecords; i++) {
		const struct drill_record *r = &in->records[i];
		if ((unsigned)r->kind < DRILL_NKINDS)
			kinds[r->kind]++;
		if (r->kind == DRILL_OK) {
			if (lat != NULL)
				lat[nlat++] = r->end_us - r->start_us;
			if (r->end_us - r->start_us > in->slow_us)
				total_slow++;
			else
				total_ok++;
		} else if (json_array_size(samples) < DRILL_MAX_SAMPLES) {
			json_array_append_new(samples, json_pack("{s:i, s:I, s:I, s:s, s:s}", "client", r->client,
								 "start_ms", (json_int_t)us_to_ms(r->start_us), "at_ms",
								 (json_int_t)us_to_ms(r->end_us), "kind",
								 drill_kind_name(r->kind), "message",
								 r->message != NULL ? r->message : ""));
		}
	}
	for (int c = 0; c < in->nclients; c++) {
		long n = 0, ok = 0, err = 0, connects = 0;
		int64_t gs, ge, gap;
		bool rec;
		int shard = -1;
		json_t *row;
		const char *mode = in->client_modes != NULL ? in->client_modes[c] : "long";
		for (size_t i = 0; i < in->nrecords; i++) {
			const struct drill_record *r = &in->records[i];
			if (r->client != c)
				continue;
			n++;
			shard = r->shard;
			if (r->kind == DRILL_OK)
				ok++;
			else
				err++;
			if (r->connected)
				connects++;
		}
		gap = in->requested_us >= 0 ? drill_client_gap(in->records, in->nrecords, c, in->requested_us, until,
								&gs, &ge, &rec)
					    : 0;
		if (in->requested_us < 0) {
			gs = ge = -1;
			rec = true;
		}
		/* A long-lived client connects once; every further connect re-establishes it. */
		if (strcmp(mode, "long") == 0 && connects > 1)
			reconnects_total += connects - 1;
		if (gap > worst) {
			worst = gap;
			worst_client = c;
		}
		row = json_pack("{s:i, s:s, s:i, s:i, s:i, s:i, s:I, s:o, s:o, s:b}", "client", c, "mode", mode, "requests",
				(int)n, "ok", (int)ok, "errors", (int)err, "reconnects",
				(int)(strcmp(mode, "long") == 0 && connects > 1 ? connects - 1 : 0), "outage_ms",
				(json_int_t)us_to_ms(gap), "gap_start_ms", ms_or_null(gs), "gap_end_ms", ms_or_null(ge),
				"recovered", rec);
		/* cluster = on: a client writes the keys of one shard (that of its last request). */
		if (in->shards != NULL)
			json_object_set_new(row, "shard", shard >= 0 ? json_integer(shard) : json_null());
		json_array_append_new(clients, row);
	}
	for (int k = 1; k < DRILL_NKINDS; k++)
		json_object_set_new(by_kind, drill_kind_name((enum drill_kind)k), json_integer(kinds[k]));

	json_object_set_new(outage, "overall_ms", json_integer(us_to_ms(out.duration_us)));
	json_object_set_new(outage, "start_ms", ms_or_null(out.start_us));
	json_object_set_new(outage, "end_ms", ms_or_null(out.end_us));
	json_object_set_new(outage, "recovered", json_boolean(out.recovered));
	json_object_set_new(outage, "blocked", json_integer(out.blocked));
	json_object_set_new(outage, "max_client_ms", json_integer(us_to_ms(worst)));
	json_object_set_new(outage, "worst_client", worst_client >= 0 ? json_integer(worst_client) : json_null());
	json_object_set_new(outage, "per_client", clients);

	json_object_set_new(reqs, "total", json_integer((json_int_t)in->nrecords));
	json_object_set_new(reqs, "ok", json_integer(total_ok));
	json_object_set_new(reqs, "slow", json_integer(total_slow));
	json_object_set_new(reqs, "errors", json_integer((json_int_t)in->nrecords - total_ok - total_slow));
	json_object_set_new(reqs, "slow_ms", json_integer(us_to_ms(in->slow_us)));
	json_object_set_new(reqs, "latency_ms",
			    json_pack("{s:f, s:f, s:f}", "p50", (double)drill_percentile(lat, nlat, 50) / 1000.0, "p95",
				      (double)drill_percentile(lat, nlat, 95) / 1000.0, "max",
				      (double)drill_percentile(lat, nlat, 100) / 1000.0));
	free(lat);

	json_object_set_new(errors, "total", json_integer((json_int_t)in->nrecords - total_ok - total_slow));
	json_object_set_new(errors, "after_request", json_integer(out.errors));
	json_object_set_new(errors, "by_kind", by_kind);
	json_object_set_new(errors, "samples", samples);

	json_object_set_new(conns, "re_established", json_integer(reconnects_total));
	if (in->before != NULL && in->after != NULL) {
		json_object_set_new(conns, "held", json_integer(delta(in->before->held_total, in->after->held_total)));
		json_object_set_new(conns, "drained", json_integer(delta(in->before->drained, in->after->drained)));
		json_object_set_new(conns, "accepted", json_integer(delta(in->before->accepted, in->after->accepted)));
		json_object_set_new(conns, "hold_timeouts",
				    json_integer(delta(in->before->hold_timeouts, in->after->hold_timeouts)));
		json_object_set_new(conns, "migrated", json_integer(delta(in->before->migrated, in->after->migrated)));
		json_object_set_new(conns, "retried", json_integer(delta(in->before->retried, in->after->retried)));
	}
	json_object_set_new(conns, "counters_before", counters_json(in->before));
	json_object_set_new(conns, "counters_after", counters_json(in->after));

	json_object_set_new(o, "schema", json_string(DRILL_SCHEMA));
	json_object_set_new(o, "id", str_or_null(in->id));
	json_object_set_new(o, "service", str_or_null(in->service));
	json_object_set_new(o, "protocol", str_or_null(in->protocol));
	json_object_set_new(o, "listen", str_or_null(in->listen));
	json_object_set_new(o, "kind", str_or_null(in->kind));
	json_object_set_new(o, "status", str_or_null(in->status));
	json_object_set_new(o, "error", in->error_code != NULL
						? json_pack("{s:s, s:s}", "code", in->error_code, "message",
							    in->error_message != NULL ? in->error_message : "")
						: json_null());
	drill_iso8601(in->t0_wall_ms, iso, sizeof(iso));
	json_object_set_new(o, "started_at", json_string(iso));
	drill_iso8601(in->t0_wall_ms + in->duration_us / 1000, iso, sizeof(iso));
	json_object_set_new(o, "finished_at", json_string(iso));
	json_object_set_new(o, "duration_ms", json_integer(us_to_ms(in->duration_us)));
	json_object_set(o, "options", in->options != NULL ? in->options : json_null());
	json_object_set(o, "failover", in->failover != NULL ? in->failover : json_null());
	json_object_set_new(o, "timeline", timeline_json(in, &out, &events_map));
	json_object_set_new(o, "events", events_map);
	json_object_set_new(o, "outage", outage);
	json_object_set_new(o, "requests", reqs);
	json_object_set_new(o, "errors", errors);
	json_object_set_new(o, "connections", conns);
	json_object_set_new(o, "service_events",
			    in->service_events != NULL ? json_incref(in->service_events) : json_array());
	json_object_set_new(o, "buckets", buckets_json(in));
	if (in->shards != NULL)
		json_object_set_new(o, "shards", shards_json(in, until));
	return o;
}

/* ---- the result over runs --------------------------------------------------------------------- */

json_t *drill_result_new(const char *service, json_t *runs)
{
	json_t *o = json_object();

	json_object_set_new(o, "schema", json_string(DRILL_SCHEMA));
	json_object_set_new(o, "service", str_or_null(service));
	json_object_set_new(o, "runs", runs != NULL ? runs : json_array());
	return o;
}

static bool status_is(const json_t *run, const char *s)
{
	const char *st = json_string_value(json_object_get(run, "status"));

	return st != NULL && strcmp(st, s) == 0;
}

int drill_result_decide(json_t *result, const struct drill_gate *g)
{
	json_t *runs = json_object_get(result, "runs"), *run, *breaches = json_array(), *summary;
	size_t i, n = json_array_size(runs), nout = 0;
	int64_t *outs = calloc(n > 0 ? n : 1, sizeof(int64_t));
	int64_t worst_outage = 0;
	long worst_errors = 0, total_errors = 0;
	bool all_recovered = true, could_not_run = false, all_dry = n > 0;
	int completed = 0, rc = 0;
	char why[1024];

	json_array_foreach(runs, i, run) {
		json_t *outage = json_object_get(run, "outage");
		int64_t ms = json_integer_value(json_object_get(outage, "overall_ms"));
		long errs = (long)json_integer_value(json_object_get(json_object_get(run, "errors"), "total"));
		if (!status_is(run, "dry_run"))
			all_dry = false;
		if (status_is(run, "failed") || status_is(run, "refused") || status_is(run, "cancelled")) {
			could_not_run = true;
			continue;
		}
		if (status_is(run, "dry_run"))
			continue;
		if (status_is(run, "completed"))
			completed++;
		if (status_is(run, "not_recovered") || !json_is_true(json_object_get(outage, "recovered"))) {
			all_recovered = false;
			snprintf(why, sizeof(why), "run %zu did not recover within --timeout", i + 1);
			json_array_append_new(breaches, json_string(why));
		}
		if (outs != NULL)
			outs[nout++] = ms;
		if (ms > worst_outage)
			worst_outage = ms;
		if (errs > worst_errors)
			worst_errors = errs;
		total_errors += errs;
	}
	if (nout > 0 && drill_gate_check(g, worst_outage, worst_errors, true, why, sizeof(why)) != 0) {
		char *line, *save = NULL;
		for (line = strtok_r(why, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
			json_array_append_new(breaches, json_string(line));
	}
	summary = json_pack("{s:i, s:i, s:{s:o, s:o, s:o}, s:{s:I, s:I}}", "runs", (int)n, "completed", completed,
			    "outage_ms", "p50",
			    nout > 0 ? json_integer(drill_percentile(outs, nout, 50)) : json_null(), "p95",
			    nout > 0 ? json_integer(drill_percentile(outs, nout, 95)) : json_null(), "max",
			    nout > 0 ? json_integer(drill_percentile(outs, nout, 100)) : json_null(), "errors", "total",
			    (json_int_t)total_errors, "max", (json_int_t)worst_errors);
	free(outs);
	if (json_array_size(breaches) > 0)
		rc = 1;
	if (could_not_run)
		rc = 3;
	if (all_dry)
		rc = 0;
	json_object_set_new(result, "summary", summary);
	json_object_set_new(result, "gate",
			    json_pack("{s:o, s:o, s:b, s:o}", "max_outage_ms",
				      g->max_outage_ms >= 0 ? json_integer(g->max_outage_ms) : json_null(), "max_errors",
				      g->max_errors >= 0 ? json_integer(g->max_errors) : json_null(), "passed",
				      json_array_size(breaches) == 0 && !could_not_run, "breaches", breaches));
	json_object_set_new(result, "exit_code", json_integer(rc));
	(void)all_recovered;
	return rc;
}

/* ---- text ------------------------------------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : dflt;
}

static json_int_t jint(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

const char *drill_event_label(const char *name)
{
	static const struct {
		const char *name, *label;
	} labels[] = {
		{"failover_requested", "failover requested"},
		{"api_answered", "API answered"},
		{"first_client_error", "first client error"},
		{"role_change_seen", "role change seen"},
		{"writer_lost", "writer lost"},
		{"new_writer_confirmed", "new writer confirmed"},
		{"held_released", "held clients released"},
		{"old_writer_drained", "old-writer clients drained"},
		{"last_client_error", "last client error"},
		{"first_success_after", "first success after"},
		{"cluster_available", "cluster available"},
		{"load_stopped", "load stopped"},
	};

	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
		if (strcmp(labels[i].name, name) == 0)
			return labels[i].label;
	return name;
}

static void text_run(const json_t *run, size_t idx, size_t n, FILE *out)
{
	const json_t *fo = json_object_get(run, "failover"), *opt = json_object_get(run, "options"),
		     *outage = json_object_get(run, "outage"), *reqs = json_object_get(run, "requests"),
		     *errs = json_object_get(run, "errors"), *conns = json_object_get(run, "connections"),
		     *err = json_object_get(run, "error"), *tl = json_object_get(run, "timeline"), *e, *v;
	const char *key;
	size_t i;
	bool first = true;

	fprintf(out, "repoint drill: service %s (%s, listener %s), run %zu/%zu: %s\n", jstr(run, "service", "?"),
		jstr(run, "protocol", "?"), jstr(run, "listen", "?"), idx + 1, n, jstr(run, "status", "?"));
	if (json_is_object(err))
		fprintf(out, "  error      %s: %s\n", jstr(err, "code", "?"), jstr(err, "message", ""));
	if (json_is_object(fo)) {
		fprintf(out, "  failover   %s (%s)", jstr(fo, "method", "not chosen"), jstr(run, "kind", "?"));
		if (json_is_integer(json_object_get(fo, "shard")))
			fprintf(out, " of shard %lld", (long long)jint(fo, "shard"));
		if (json_string_value(json_object_get(fo, "from")) != NULL)
			fprintf(out, " from %s", jstr(fo, "from", "?"));
		if (json_string_value(json_object_get(fo, "to")) != NULL)
			fprintf(out, " to %s", jstr(fo, "to", "?"));
		fputc('\n', out);
		json_array_foreach(json_object_get(fo, "calls"), i, e)
			fprintf(out, "  %s %s\n", i == 0 ? "call      " : "          ", json_string_value(e));
		if (json_string_value(json_object_get(fo, "request_id")) != NULL &&
		    jstr(fo, "request_id", "")[0] != '\0')
			fprintf(out, "  request id %s\n", jstr(fo, "request_id", ""));
		if (json_string_value(json_object_get(fo, "new_writer")) != NULL)
			fprintf(out, "  new writer %s\n", jstr(fo, "new_writer", ""));
		if (json_is_object(json_object_get(fo, "ledger"))) {
			const json_t *l = json_object_get(fo, "ledger");
			fprintf(out, "  ledger     %lld of %lld test failovers in the last 24 h before this drill (%s)\n",
				(long long)jint(l, "count_24h"), (long long)jint(l, "limit"), jstr(l, "path", "?"));
		}
		json_array_foreach(json_object_get(fo, "notes"), i, e)
			fprintf(out, "  note       %s\n", json_string_value(e));
	}
	if (json_is_object(opt)) {
		size_t nshards = json_array_size(json_object_get(run, "shards"));
		char per[48] = "";
		if (nshards > 0)
			snprintf(per, sizeof(per), " for each of %zu shards", nshards);
		fprintf(out, "  load       %d clients (%s)%s at %g/s each, write: %s\n", (int)jint(opt, "clients"),
			jstr(opt, "mode", "?"), per, json_number_value(json_object_get(opt, "rate")),
			jstr(opt, "write", "?"));
	}
	if (json_array_size(tl) > 0) {
		fprintf(out, "  timeline   (ms from the drill's start, UTC)\n");
		json_array_foreach(tl, i, e) {
			const char *at = jstr(e, "at", "");
			const char *t = strchr(at, 'T');
			fprintf(out, "    %7lld  %-12.12s  %-27s %s\n", (long long)jint(e, "at_ms"), t != NULL ? t + 1 : at,
				drill_event_label(jstr(e, "name", "?")), jstr(e, "detail", ""));
		}
	}
	if (json_is_object(outage) && !json_is_null(json_object_get(outage, "start_ms")))
		fprintf(out, "  outage     %lld ms overall (%lld -> %lld ms)%s; worst client %lld ms\n",
			(long long)jint(outage, "overall_ms"), (long long)jint(outage, "start_ms"),
			(long long)jint(outage, "end_ms"),
			json_is_true(json_object_get(outage, "recovered")) ? "" : ", NOT RECOVERED",
			(long long)jint(outage, "max_client_ms"));
	else if (json_is_object(outage) && jint(reqs, "total") > 0 &&
		 (strcmp(jstr(run, "status", ""), "completed") == 0 || strcmp(jstr(run, "status", ""), "not_recovered") == 0))
		fprintf(out, "  outage     none seen by the clients (worst gap %lld ms)\n",
			(long long)jint(outage, "max_client_ms"));
	if (json_is_object(reqs) && jint(reqs, "total") > 0) {
		fprintf(out, "  requests   %lld total, %lld ok, %lld slow (> %lld ms), %lld errors",
			(long long)jint(reqs, "total"), (long long)jint(reqs, "ok"), (long long)jint(reqs, "slow"),
			(long long)jint(reqs, "slow_ms"), (long long)jint(reqs, "errors"));
		json_object_foreach((json_t *)json_object_get(errs, "by_kind"), key, v) {
			if (json_integer_value(v) == 0)
				continue;
			fprintf(out, "%s%s %lld", first ? ": " : ", ", key, (long long)json_integer_value(v));
			first = false;
		}
		fputc('\n', out);
		v = json_object_get(reqs, "latency_ms");
		fprintf(out, "  latency    p50 %.1f ms, p95 %.1f ms, max %.1f ms\n",
			json_number_value(json_object_get(v, "p50")), json_number_value(json_object_get(v, "p95")),
			json_number_value(json_object_get(v, "max")));
		json_array_foreach(json_object_get(outage, "per_client"), i, e) {
			char shard[32] = "";
			if (json_is_integer(json_object_get(e, "shard")))
				snprintf(shard, sizeof(shard), ", shard %lld", (long long)jint(e, "shard"));
			fprintf(out, "    client %lld (%s%s): %lld requests, %lld errors, %lld reconnects, longest gap %lld ms\n",
				(long long)jint(e, "client"), jstr(e, "mode", "?"), shard, (long long)jint(e, "requests"),
				(long long)jint(e, "errors"), (long long)jint(e, "reconnects"),
				(long long)jint(e, "outage_ms"));
		}
		if (json_array_size(json_object_get(run, "shards")) > 0)
			fprintf(out, "  shards     (each request counted for the shard serving its key's slot)\n");
		json_array_foreach(json_object_get(run, "shards"), i, e) {
			const char *before = jstr(e, "primary_before", "?"), *after = jstr(e, "primary_after", "?");
			char gap[48] = "no requests";
			if (!json_is_null(json_object_get(e, "outage_ms")))
				snprintf(gap, sizeof(gap), "longest gap %lld ms", (long long)jint(e, "outage_ms"));
			fprintf(out, "    shard %lld%s: %lld requests, %lld errors, %s; primary %s",
				(long long)jint(e, "shard"), json_is_true(json_object_get(e, "drilled")) ? " (failed over)" : "",
				(long long)jint(e, "requests"), (long long)jint(e, "errors"), gap, before);
			if (strcmp(before, after) != 0)
				fprintf(out, " -> %s", after);
			if (jint(e, "failovers") > 0)
				fprintf(out, ", %lld failover(s)", (long long)jint(e, "failovers"));
			fputc('\n', out);
		}
		json_array_foreach(json_object_get(errs, "samples"), i, e) {
			if (i >= 3)
				break;
			fprintf(out, "    e.g. at %lld ms, client %lld, %s: %s\n", (long long)jint(e, "at_ms"),
				(long long)jint(e, "client"), jstr(e, "kind", "?"), jstr(e, "message", ""));
		}
	}
	if (json_is_object(conns) && json_object_get(conns, "held") != NULL)
		fprintf(out, "  sessions   held %lld, drained %lld, re-established %lld, migrated %lld, retried %lld "
			     "(repoint's counters over the drill; accepted %lld)\n",
			(long long)jint(conns, "held"), (long long)jint(conns, "drained"),
			(long long)jint(conns, "re_established"), (long long)jint(conns, "migrated"),
			(long long)jint(conns, "retried"), (long long)jint(conns, "accepted"));
}

void drill_report_text(const json_t *result, FILE *out)
{
	const json_t *runs = json_object_get(result, "runs"), *run, *sum = json_object_get(result, "summary"),
		     *gate = json_object_get(result, "gate"), *e;
	size_t i, n = json_array_size(runs);

	json_array_foreach(runs, i, run) {
		text_run(run, i, n, out);
		if (i + 1 < n)
			fputc('\n', out);
	}
	if (n > 1 && json_is_object(sum)) {
		const json_t *o = json_object_get(sum, "outage_ms");
		fprintf(out, "\nsummary: %lld runs, %lld completed; outage p50 %lld ms, p95 %lld ms, max %lld ms; "
			     "errors %lld in all, at most %lld in a run\n",
			(long long)jint(sum, "runs"), (long long)jint(sum, "completed"), (long long)jint(o, "p50"),
			(long long)jint(o, "p95"), (long long)jint(o, "max"),
			(long long)jint(json_object_get(sum, "errors"), "total"),
			(long long)jint(json_object_get(sum, "errors"), "max"));
	}
	if (json_is_object(gate)) {
		if (json_array_size(json_object_get(gate, "breaches")) > 0) {
			json_array_foreach(json_object_get(gate, "breaches"), i, e)
				fprintf(out, "GATE BREACHED: %s\n", json_string_value(e));
		} else if (!json_is_null(json_object_get(gate, "max_outage_ms")) ||
			   !json_is_null(json_object_get(gate, "max_errors"))) {
			fprintf(out, "gate passed:");
			if (!json_is_null(json_object_get(gate, "max_outage_ms")))
				fprintf(out, " outage within %lld ms", (long long)jint(gate, "max_outage_ms"));
			if (!json_is_null(json_object_get(gate, "max_errors")))
				fprintf(out, " errors within %lld", (long long)jint(gate, "max_errors"));
			fputc('\n', out);
		}
	}
}
