/* drill/drill.h - failover drills: initiate a failover of a service's cluster, drive load through
 * the service's own listener while it happens, and report what the application saw.
 *
 *   repoint drill (cli.c) ──▶ a repoint answering on [repoint] admin?  ── yes ─▶ POST /drills there
 *                                                                      └─ no ──▶ runtime_start() here
 *   admin.c: POST /drills ──▶ drill_new() on that repoint's loop
 *
 *   drill (drill.c): preflight ─▶ setup ─▶ warm-up load ─▶ failover (failover.c: AWS API or the
 *                    engine's own promotion) ─▶ watch (service observer, Describe* polls) until
 *                    recovered ─▶ load for --duration-after ─▶ report (report.c, svg.c)
 *
 * Everything runs on the loop of the runtime that owns the service: the load clients (conn.c), the
 * promotion statements, the AWS calls. A drill sets itself as the service's observer for its
 * duration (one drill per service at a time). */
#ifndef REPOINT_DRILL_H
#define REPOINT_DRILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct service;
struct aws_config;
typedef struct json_t json_t;

enum drill_mode { DRILL_MODE_BOTH, DRILL_MODE_LONG, DRILL_MODE_PER_REQUEST };
const char *drill_mode_name(enum drill_mode m);

/* Exit codes of `repoint drill`. */
#define DRILL_EXIT_OK 0
#define DRILL_EXIT_BREACH 1
#define DRILL_EXIT_USAGE 2
#define DRILL_EXIT_NOT_RUN 3

struct drill_options {
	char *config_path;
	char *service;
	char *target;               /* static: member address; rds: instance id; global: group id */
	char *shard;                /* ElastiCache node group / MemoryDB shard */
	char *target_region;        /* Global Datastore: the region to promote */
	int clients;                /* default 4 */
	double rate;                /* requests per client per second, default 50 */
	enum drill_mode mode;       /* default both */
	char *write;                /* NULL: the engine's default; '?' placeholders: client, then seq */
	int64_t duration_after_ms;  /* load kept after recovery, default 3s */
	int64_t timeout_ms;         /* failover to recovery, default 120s */
	int64_t warmup_ms;          /* load before the failover is requested, default 1s */
	int64_t request_timeout_ms; /* per request, default 10s */
	int64_t slow_ms;            /* a request slower than this counts as blocked, default 500ms */
	int runs;                   /* default 1 */
	int64_t pause_ms;           /* between runs, default 10s */
	int64_t max_outage_ms;      /* gate, -1: none */
	long max_errors;            /* gate, -1: none */
	bool dry_run, yes, quiet, local;
	char *json_path, *svg_path;
	char *ledger_path;          /* TestFailover/FailoverShard ledger; NULL: the default */
	char *promote_user;         /* engine promotions; NULL: probe_user */
	char *promote_password;     /* NULL: $REPOINT_DRILL_PROMOTE_PASSWORD, else probe_password */
	char *repl_user;            /* MariaDB CHANGE MASTER; NULL: the promote user */
	char *repl_password;        /* NULL: $REPOINT_DRILL_REPL_PASSWORD, else the promote password */
};

/* Defaults everywhere, nothing allocated. */
void drill_options_init(struct drill_options *o);
void drill_options_free(struct drill_options *o);
/* Parses `repoint drill ...` (argv[0] is "drill"). 0: ready; 1: --help was printed to stdout;
 * -1: a usage error, described in err. */
int drill_options_parse(int argc, char **argv, struct drill_options *o, char *err, size_t errlen);
/* The options a drill carries to another repoint (POST /drills), and back. from_json fills o over
 * its current values; false with a reason in err on a bad field. Durations are milliseconds. */
json_t *drill_options_json(const struct drill_options *o);
bool drill_options_from_json(const json_t *j, struct drill_options *o, char *err, size_t errlen);
extern const char drill_usage_text[];

/* ---- one drill on a loop ---- */

struct drill;
typedef void (*drill_done_cb)(void *arg, struct drill *d);

/* A drill of svc (whose runtime runs on base). aws is the [aws] section (for `source = ...`).
 * Nothing starts before drill_begin(). o is copied. NULL when out of memory. */
struct drill *drill_new(struct event_base *base, struct service *svc, const struct aws_config *aws,
			const struct drill_options *o, drill_done_cb cb, void *arg);
/* Starts it; cb runs once, later, from the loop, when the report is ready (whatever the outcome). */
void drill_begin(struct drill *d);
/* Ends it now: the load stops, a promotion under way is left to finish its safety steps only when
 * the loop keeps running; the report says "cancelled". cb still runs (later, from the loop). */
void drill_cancel(struct drill *d, const char *why);
bool drill_finished(const struct drill *d);
const char *drill_id(const struct drill *d);
const char *drill_service_name(const struct drill *d);
/* The report of the run (borrowed; NULL before it is finished). */
json_t *drill_report(const struct drill *d);
/* Where it stands: {"phase", "elapsed_ms", "ok", "errors", "outage_ms", "status"}. New reference. */
json_t *drill_progress_json(const struct drill *d);
/* One line for a terminal: "drill orders  3.2s  failing over  ok 640  errors 12". */
void drill_progress_line(const json_t *progress, char *buf, size_t len);
/* Not from inside its own callback unless it is the last thing done with it. */
void drill_free(struct drill *d);

/* `repoint drill ...`: argv[0] is "drill". Returns the process exit code. */
int drill_main(int argc, char **argv);

#endif
