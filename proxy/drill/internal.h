/* drill/internal.h - what drill.c shares with the two ways of failing over: promote.c (static
 * members: the engine's own promotion, statement by statement) and aws.c (the control plane's
 * failover API). Not for other modules. */
#ifndef REPOINT_DRILL_INTERNAL_H
#define REPOINT_DRILL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "drill/conn.h"
#include "drill/drill.h"
#include "drill/report.h"
#include "service.h"
#include "topology.h"
#include "util.h"

struct event;
struct drill_promote;
struct drill_aws;

enum drill_phase {
	DRILL_PH_PREFLIGHT,   /* waiting for the service to know its writer; checking the cluster */
	DRILL_PH_SETUP,       /* MariaDB: the drill's table */
	DRILL_PH_WARMUP,      /* load running, failover not requested yet */
	DRILL_PH_FAILOVER,    /* requested; waiting for the recovery */
	DRILL_PH_AFTER,       /* recovered; load kept for --duration-after */
	DRILL_PH_DONE,
};

enum drill_kind_of_failover {
	DRILL_FO_STATIC,
	DRILL_FO_RDS,
	DRILL_FO_ELASTICACHE,
	DRILL_FO_GLOBAL,
	DRILL_FO_MEMORYDB,
};

struct drill_client {
	struct drill *d;
	int index;
	bool per_request;
	struct drill_conn *conn;
	struct event *tick;
	long seq;
	int64_t started_us;       /* of the request in flight */
	int shard;                /* cluster = on: the shard whose keys it writes, else -1 */
	int req_shard;            /* ... the shard serving the key of the request in flight */
	bool running;
	char *stmt;               /* buffer for the expanded write */
	size_t stmt_len;
	int64_t last_ok_us;       /* end of the last success, -1 before any */
};

/* A member of the service, as the drill saw it at the preflight. */
struct drill_member {
	char str[280];            /* "host:port" as the service names it */
	struct hostport hp;       /* the same, parsed (host as configured) */
	struct drill_endpoint ep; /* numeric address; promotion credentials */
	enum role role;
	bool healthy;
	int64_t epoch;
	int shard;                /* cluster = on: its shard, -1 when in none (or not a cluster) */
};

#define DRILL_MAX_EVENTS 48
#define DRILL_MAX_MESSAGES 2000
#define DRILL_MAX_RECORDS (4u << 20)

/* How the notifications below move the drill on (drill.c's; see timeline.c). */
struct drill_flow {
	void (*preflight_ok)(struct drill *d);
	void (*check_recovered)(struct drill *d);
	void (*finish)(struct drill *d, const char *status);
};

struct drill {
	struct event_base *base;
	const struct drill_flow *flow;
	struct service *svc;
	const struct service_config *scfg;
	const struct aws_config *aws;
	struct drill_options o;
	drill_done_cb cb;
	void *cb_arg;
	char id[40];
	enum drill_phase phase;
	enum drill_kind_of_failover fo_kind;
	const char *source_id;        /* the part of `source` after "kind:" */
	const char *status;
	char err_code[80];
	char err_msg[512];
	int64_t t0_us, t0_wall_ms, end_us;
	int64_t phase_deadline_us;
	int64_t requested_us;         /* -1 until requested */
	int64_t confirmed_us;         /* new writer confirmed, -1 before */

	/* the probes' credentials when the drill began (probe_password's secret read, or an IAM token
	 * for the writer), wiped when the drill is freed; probe_user NULL: the configured one */
	char *probe_password, *probe_user;

	/* load */
	struct drill_endpoint listen_ep;
	struct net_tls *listen_tls;        /* listen_tls = require: the load's TLS client context */
	char listen_str[300];
	char *write_tmpl;
	struct drill_client *clients;
	int nclients;
	struct drill_record *recs;
	size_t nrecs, caprecs;
	size_t nmessages;
	long ok_count, err_count;
	bool records_truncated;
	struct drill_conn *setup;

	/* timeline */
	struct drill_event events[DRILL_MAX_EVENTS];
	size_t nevents;
	json_t *service_events;
	json_t *failover;             /* {method, calls, steps, ...}: built by promote.c / aws.c */
	json_t *options_json;

	/* the cluster */
	struct drill_member *members;
	int nmembers;
	int old_idx, target_idx;      /* into members (static); -1 when not a member */
	/* cluster = on: the shard drilled (--shard, as /status numbers them; -1 when not a cluster), the
	 * shards, and per shard the hash tag that sends a load request's key there (-1: none found) */
	int shard;
	int nshards;
	int *tags;
	json_t *shards;               /* per shard: what the service saw, for the report (report.h) */
	char old_writer[280];
	char new_writer[280];
	bool answered;                /* the API answered / the target was promoted */
	bool failover_done;           /* every step of the failover has ended */
	bool new_writer_seen;
	bool cluster_available;
	struct service_counters before, after;
	bool have_before;

	struct drill_promote *promote;
	struct drill_aws *awsd;

	struct event *timer;          /* the phase's deadline / the preflight's polling */
	struct event *done_ev;
	json_t *report;
	bool finished;
	bool done_called;
};

/* timeline.c: what the drill records, and the initiators' notifications. */
/* "drill ID", the subject of the drill's log lines. */
void drill_subject(const struct drill *d, char *buf, size_t len);
/* Microseconds since the drill's start. */
int64_t drill_now(const struct drill *d);
/* Adds a named moment (the first of each name only, unless repeat); detail is printf-style. */
void drill_mark(struct drill *d, const char *name, bool repeat, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
bool drill_marked(const struct drill *d, const char *name);
/* Records one step of the failover in failover.steps. */
void drill_step(struct drill *d, const char *member, const char *command, bool ok, const char *result);
/* The failover was requested (now). */
void drill_requested(struct drill *d);
/* The API answered / the target was promoted: request_id may be NULL. */
void drill_answered(struct drill *d, const char *request_id, const char *detail);
/* The failover could not be carried out: the drill ends (load stopped) with status "failed", or
 * "refused" during the preflight. */
void drill_fail(struct drill *d, const char *status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Every step of the failover has ended (static promotion: the last REPLICAOF/START SLAVE). */
void drill_failover_done(struct drill *d);
/* The cluster is available again (AWS: Describe* says so). */
void drill_cluster_available(struct drill *d, const char *detail);
/* The preflight of the initiator is done: proceed (dry run: finish). */
void drill_preflight_ok(struct drill *d);

/* promote.c: static members. plan: choose the target and write the calls into d->failover;
 * false with the refusal in err. start: run them. */
bool drill_promote_plan(struct drill *d, char *err, size_t errlen);
void drill_promote_start(struct drill *d);
void drill_promote_free(struct drill *d);

/* aws.c: the control plane. preflight: Describe* (async; ends with drill_preflight_ok or
 * drill_fail); start: the failover call, then polls until available. */
void drill_aws_preflight(struct drill *d);
void drill_aws_start(struct drill *d);
void drill_aws_free(struct drill *d);
/* The ledger of ElastiCache TestFailover / MemoryDB FailoverShard calls (15 per rolling 24 h):
 * count of entries for `api` since now-24h, and appending one. Path: --ledger, else
 * $XDG_STATE_HOME/repoint/testfailover.json, else ~/.local/state/repoint/testfailover.json. */
int drill_ledger_count(const char *path, const char *api, int64_t now_wall_ms);
bool drill_ledger_add(const char *path, const char *api, const char *what, int64_t now_wall_ms);
void drill_ledger_path(const char *opt, char *buf, size_t len);

#endif
