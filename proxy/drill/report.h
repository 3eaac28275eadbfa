/* drill/report.h - what a drill measured, turned into numbers and a report.
 *
 * Pure functions (no I/O but the FILE they are given, no clock): the drill engine hands over its
 * request records and timeline, and everything a reader sees -- the outage, the per-client gaps,
 * the percentiles over runs, the gate decision, the JSON report, the text summary -- is computed
 * here, so that each rule is unit-tested. The text summary and the SVG (drill/svg.h) are drawn
 * from the JSON alone, so that a report fetched from another repoint's admin API renders the same
 * way as one made in-process. The JSON schema is documented in proxy/drill/REPORT.md. */
#ifndef REPOINT_DRILL_REPORT_H
#define REPOINT_DRILL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "drill/conn.h"

typedef struct json_t json_t;
struct service_counters;

#define DRILL_SCHEMA "repoint.drill/1"
#define DRILL_BUCKET_MS 100
/* Error samples kept in a report (the counts cover every error). */
#define DRILL_MAX_SAMPLES 50

/* One request of the load: times in microseconds from the drill's start (monotonic). */
struct drill_record {
	int64_t start_us, end_us;
	int client;
	enum drill_kind kind;
	bool connected;          /* this request opened a new connection */
	const char *message;     /* errors: what the client library said (may be NULL) */
	int shard;               /* cluster = on: the shard serving its key's slot when it was sent (-1:
	                            none); unused otherwise */
};

/* The client-visible outage of one run. Times in microseconds from the drill's start, -1 when
 * there was none. A request is "failed or blocked" when it failed, or took longer than slow_us
 * (held by the proxy, stuck on a dying server). */
struct drill_outage {
	bool any;                      /* a request failed or was blocked after `from` */
	bool recovered;                /* a success followed the last failed/blocked request */
	int64_t start_us;              /* start of the first failed/blocked request */
	int64_t end_us;                /* end of the first success that started after the last
	                                  failed/blocked request ended (the last record's end when
	                                  none did) */
	int64_t first_error_us;        /* end of the first failed request (blocked ones excluded) */
	int64_t last_error_us;         /* end of the last failed request */
	int64_t first_success_after_us;
	int64_t duration_us;           /* end - start, 0 when !any */
	long errors;                   /* failed requests that ended after `from` */
	long blocked;                  /* successful but slow ones */
};

/* Considers the records that ended at or after from_us (the failover request). */
void drill_outage_compute(const struct drill_record *r, size_t n, int64_t from_us, int64_t slow_us,
			  struct drill_outage *out);

/* The longest gap between two consecutive successes of `client` (success end to success end)
 * that ends after from_us; when the client never succeeded again, the gap runs to `until_us` and
 * *recovered is false. Returns the gap (0 when none) and its bounds in *gap_start and *gap_end
 * (-1 when none). */
int64_t drill_client_gap(const struct drill_record *r, size_t n, int client, int64_t from_us, int64_t until_us,
			 int64_t *gap_start, int64_t *gap_end, bool *recovered);
/* The same for the requests of one shard (cluster = on): how long no key of it was written. */
int64_t drill_shard_gap(const struct drill_record *r, size_t n, int shard, int64_t from_us, int64_t until_us,
			int64_t *gap_start, int64_t *gap_end, bool *recovered);

/* Nearest-rank percentile (p in 0..100) of n values (not modified); -1 when n is 0. */
int64_t drill_percentile(const int64_t *v, size_t n, double p);

/* The gate: limits set by --max-outage / --max-errors (-1: not set). */
struct drill_gate {
	int64_t max_outage_ms;
	long max_errors;
};
/* 0 when within the limits, 1 when one is breached (or a run did not recover while a limit is
 * set), with one line per breach in why ("" when within). */
int drill_gate_check(const struct drill_gate *g, int64_t worst_outage_ms, long worst_errors, bool all_recovered,
		     char *why, size_t whylen);

/* A named moment of the timeline. */
struct drill_event {
	const char *name;        /* "failover_requested", ... (static strings) */
	int64_t at_us;
	char detail[240];
};

/* Everything one run's report is built from. Strings may be NULL where they make no sense. */
struct drill_run_info {
	const char *id;
	const char *service, *protocol, *listen;
	const char *kind;              /* "static", "rds", "elasticache", "elasticache-global", "memorydb" */
	const char *status;            /* "completed", "not_recovered", "failed", "refused", "dry_run",
	                                  "cancelled" */
	const char *error_code, *error_message;
	int64_t t0_wall_ms;            /* wall clock at the drill's start */
	int64_t duration_us;           /* from start to the end of the run */
	int64_t requested_us;          /* failover requested; -1 when it never was */
	int64_t slow_us;
	json_t *options;               /* borrowed: the options as run */
	json_t *failover;              /* borrowed: method, call, steps, request id, notes */
	const struct drill_record *records;
	size_t nrecords;
	int nclients;
	const char *const *client_modes;   /* per client: "long" or "per-request" */
	const struct drill_event *events;  /* milestones, any order */
	size_t nevents;
	json_t *service_events;        /* borrowed: the raw service events */
	const struct service_counters *before, *after;  /* NULL when not read */
	json_t *shards;                /* borrowed: cluster = on, what the service saw of each shard, in
	                                  the order of the records' shard numbers ({"shard", "drilled",
	                                  "slots", "primary_before", "primary_after", "failovers"}); the
	                                  report adds each one's requests and outage. NULL otherwise. */
};

/* The report of one run (schema in REPORT.md). New reference. */
json_t *drill_report_build(const struct drill_run_info *in);

/* The file written by `repoint drill --json`: {"schema", "service", "runs": [...], "summary",
 * "gate", "exit_code"}. runs is taken over (stolen). exit_code and the gate come from
 * drill_result_decide(). */
json_t *drill_result_new(const char *service, json_t *runs);
/* Fills "summary" and "gate" of a result from its runs and g; returns the exit code:
 * 0 within, 1 breached, 3 when a run could not be carried out (failed/refused/cancelled). */
int drill_result_decide(json_t *result, const struct drill_gate *g);

/* The readable summary of a result (every run, then the summary and the gate). */
void drill_report_text(const json_t *result, FILE *out);

/* "2024-05-01T12:34:56.789Z" for wall ms. */
void drill_iso8601(int64_t wall_ms, char *buf, size_t len);

/* The human label of a timeline event ("failover_requested" -> "failover requested"). */
const char *drill_event_label(const char *name);

#endif
