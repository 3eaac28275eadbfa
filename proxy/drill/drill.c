/* drill/drill.c - one failover drill on a runtime's loop.
 *
 *   PREFLIGHT ──(writer known, target checked, AWS Describe*)──▶ SETUP ──▶ WARMUP ──▶ FAILOVER
 *       │ refused / dry run                                                            │
 *       ▼                                                         recovered ◀──────────┤ failed /
 *     DONE ◀──────────── AFTER (load kept --duration-after) ◀──────────┘               │ timeout
 *       ▲───────────────────────────────────────────────────────────────────────────────┘
 *
 * Whatever the path, drill_finish() alone stops the load, reads the counters, builds the report
 * and schedules the callback (from a deferred event, so that the owner may free the drill). */
#include "drill/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>

#include "log.h"
#include "proto/slots.h"
#include "secret.h"

static void drill_finish(struct drill *d, const char *status);
static void drill_enter(struct drill *d, enum drill_phase ph, int64_t deadline_ms);
static void drill_check_recovered(struct drill *d);

static const char *const phase_names[] = {
	[DRILL_PH_PREFLIGHT] = "preflight",
	[DRILL_PH_SETUP] = "setup",
	[DRILL_PH_WARMUP] = "warm-up",
	[DRILL_PH_FAILOVER] = "failing over",
	[DRILL_PH_AFTER] = "recovered",
	[DRILL_PH_DONE] = "done",
};

/* How long the preflight waits for the service to know its writer and members. */
#define DRILL_PREFLIGHT_MS 15000
/* ... and, once it knows the writer, for every member's role to settle. */
#define DRILL_ROLES_SETTLE_MS 3000
#define DRILL_POLL_MS 50






/* ---- load -------------------------------------------------------------------------------------- */

static void client_tick_cb(evutil_socket_t fd, short what, void *arg);

/* Room for one '?' expanded: a number, and (cluster = on) a hash tag. */
#define DRILL_ARG_ROOM 40

/* cluster = on: the shard serving the slot of the word of stmt around position at (the key). */
static int key_shard(const struct drill *d, const char *stmt, size_t at)
{
	size_t b = at, e = at;

	while (b > 0 && stmt[b - 1] != ' ' && stmt[b - 1] != '\t')
		b--;
	while (stmt[e] != '\0' && stmt[e] != ' ' && stmt[e] != '\t')
		e++;
	return service_slot_shard(d->svc, slots_key_slot((const uint8_t *)stmt + b, e - b));
}

/* The write with each '?' replaced: the first by the client's number, the others by its
 * sequence number. On a cluster service the first also gets the hash tag of the client's shard,
 * and the request counts for the shard serving its word's slot (cl->req_shard). */
static const char *client_stmt(struct drill_client *cl)
{
	const char *t = cl->d->write_tmpl;
	int tag = cl->shard >= 0 ? cl->d->tags[cl->shard] : -1;
	size_t n = 0, key = 0;
	int q = 0;

	for (; *t != '\0' && n + DRILL_ARG_ROOM < cl->stmt_len; t++) {
		if (*t != '?') {
			cl->stmt[n++] = *t;
			continue;
		}
		if (q++ > 0) {
			n += (size_t)snprintf(cl->stmt + n, cl->stmt_len - n, "%ld", cl->seq);
			continue;
		}
		key = n;
		if (tag >= 0)
			n += (size_t)snprintf(cl->stmt + n, cl->stmt_len - n, "%ld{%d}", (long)cl->index, tag);
		else
			n += (size_t)snprintf(cl->stmt + n, cl->stmt_len - n, "%ld", (long)cl->index);
	}
	cl->stmt[n] = '\0';
	cl->req_shard = cl->shard >= 0 && q > 0 ? key_shard(cl->d, cl->stmt, key) : -1;
	return cl->stmt;
}

static void record(struct drill *d, const struct drill_record *r)
{
	if (d->nrecs == d->caprecs) {
		size_t cap = d->caprecs ? d->caprecs * 2 : 4096;
		struct drill_record *grown;
		if (cap > DRILL_MAX_RECORDS || (grown = realloc(d->recs, cap * sizeof(*grown))) == NULL) {
			d->records_truncated = true;
			free((char *)r->message);
			return;
		}
		d->recs = grown;
		d->caprecs = cap;
	}
	d->recs[d->nrecs++] = *r;
}

static void client_schedule(struct drill_client *cl, int64_t delay_us)
{
	struct timeval tv = {.tv_sec = delay_us / 1000000, .tv_usec = delay_us % 1000000};

	if (delay_us < 0)
		tv.tv_sec = tv.tv_usec = 0;
	evtimer_add(cl->tick, &tv);
}

static void client_done(void *arg, const struct drill_result *r)
{
	struct drill_client *cl = arg;
	struct drill *d = cl->d;
	int64_t end = drill_now(d), interval = (int64_t)(1e6 / d->o.rate);
	struct drill_record rec = {
		.start_us = cl->started_us,
		.end_us = end,
		.client = cl->index,
		.kind = r->kind,
		.connected = r->connected,
		.shard = cl->req_shard,
	};

	if (r->kind != DRILL_OK) {
		d->err_count++;
		if (d->nmessages < DRILL_MAX_MESSAGES) {
			rec.message = strdup(r->message);
			d->nmessages++;
		}
	} else {
		d->ok_count++;
		cl->last_ok_us = end;
	}
	record(d, &rec);
	cl->started_us = -1;
	if (cl->per_request)
		drill_conn_reset(cl->conn);  /* a connection per request: closed politely now */
	if (!cl->running)
		return;
	/* Paced from the start of the request just done, so a slow one is not followed by a burst. */
	client_schedule(cl, rec.start_us + interval - end);
	if (d->phase == DRILL_PH_FAILOVER && r->kind == DRILL_OK)
		drill_check_recovered(d);
}

static void client_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill_client *cl = arg;

	(void)fd;
	(void)what;
	if (!cl->running || drill_conn_busy(cl->conn))
		return;
	cl->seq++;
	cl->started_us = drill_now(cl->d);
	drill_conn_run(cl->conn, client_stmt(cl), cl->d->o.request_timeout_ms);
}

static bool load_start(struct drill *d)
{
	int nlong = d->o.mode == DRILL_MODE_LONG ? d->o.clients
		    : d->o.mode == DRILL_MODE_PER_REQUEST ? 0
							 : (d->o.clients + 1) / 2;
	size_t qs = 0;
	int64_t interval = (int64_t)(1e6 / d->o.rate);
	int groups = d->nshards > 0 ? 0 : 1;

	/* cluster = on: the clients asked for, for each shard (that serves slots), each writing keys of
	 * its shard only: a client held on the drilled shard must not hold back the others' load. */
	for (int k = 0; k < d->nshards; k++)
		groups += d->tags[k] >= 0;
	for (const char *t = d->write_tmpl; *t; t++)
		qs += *t == '?';
	d->clients = calloc((size_t)(d->o.clients * groups), sizeof(*d->clients));
	if (d->clients == NULL)
		return false;
	d->nclients = d->o.clients * groups;
	for (int i = 0; i < d->nclients; i++) {
		struct drill_client *cl = &d->clients[i];
		int group = i / d->o.clients;
		cl->d = d;
		cl->index = i;
		cl->per_request = i % d->o.clients >= nlong;
		cl->started_us = -1;
		cl->shard = cl->req_shard = -1;
		for (int k = 0, g = 0; k < d->nshards && cl->shard < 0; k++)
			if (d->tags[k] >= 0 && g++ == group)
				cl->shard = k;
		cl->last_ok_us = -1;
		cl->stmt_len = strlen(d->write_tmpl) + DRILL_ARG_ROOM * (qs + 1) + 1;
		cl->stmt = malloc(cl->stmt_len);
		cl->conn = drill_conn_new(d->base, &d->listen_ep, client_done, cl);
		cl->tick = evtimer_new(d->base, client_tick_cb, cl);
		if (cl->stmt == NULL || cl->conn == NULL || cl->tick == NULL)
			return false;
		cl->running = true;
		/* Spread the clients over one interval rather than firing together. */
		client_schedule(cl, interval * i / d->nclients);
	}
	return true;
}

/* Stops every client; a request in flight is dropped unrecorded (the load has ended for it). */
static void load_stop(struct drill *d)
{
	for (int i = 0; i < d->nclients; i++) {
		struct drill_client *cl = &d->clients[i];
		cl->running = false;
		if (cl->tick != NULL)
			evtimer_del(cl->tick);
		if (cl->conn != NULL)
			drill_conn_reset(cl->conn);
	}
}

static void load_free(struct drill *d)
{
	for (int i = 0; i < d->nclients; i++) {
		struct drill_client *cl = &d->clients[i];
		drill_conn_free(cl->conn);
		if (cl->tick != NULL)
			event_free(cl->tick);
		free(cl->stmt);
	}
	free(d->clients);
	d->clients = NULL;
	d->nclients = 0;
}

/* ---- the service's view ------------------------------------------------------------------------ */

static const char *const ev_names[] = {
	[SERVICE_EV_SUSPECT] = "suspect",
	[SERVICE_EV_RECOVERED] = "recovered",
	[SERVICE_EV_WRITER_LOST] = "writer_lost",
	[SERVICE_EV_WRITER_CONFIRMED] = "writer_confirmed",
	[SERVICE_EV_CONFLICT] = "conflict",
	[SERVICE_EV_ROLE_CHANGED] = "role_changed",
	[SERVICE_EV_HELD_RELEASED] = "held_released",
	[SERVICE_EV_DRAIN_STARTED] = "drain_started",
};

/* cluster = on: whether `member` is in the drilled shard (always, for other services). A cluster's
 * other shards' events are kept in service_events, but make no moment of the timeline. */
static bool in_drilled_shard(const struct drill *d, const char *member)
{
	if (d->shard < 0)
		return true;
	for (int i = 0; i < d->nmembers; i++)
		if (strcmp(d->members[i].str, member) == 0)
			return d->members[i].shard == d->shard;
	return false;
}

static void on_service_event(void *arg, const struct service_event *e)
{
	struct drill *d = arg;
	int64_t at_us = e->at_ms * 1000 - d->t0_us;
	const char *via = e->via != NULL ? e->via : "?";
	const char *member = e->member != NULL ? e->member : "";
	size_t before = d->nevents;

	if (d->finished)
		return;
	json_array_append_new(d->service_events,
			      json_pack("{s:I, s:s, s:s, s:o, s:s, s:i}", "at_ms", (json_int_t)(at_us / 1000), "event",
					(unsigned)e->kind < ARRAY_LEN(ev_names) ? ev_names[e->kind] : "?", "member",
					member, "role", e->role != NULL ? json_string(e->role) : json_null(), "via", via,
					"count", (int)e->count));
	if (d->requested_us < 0 || (e->kind != SERVICE_EV_HELD_RELEASED && !in_drilled_shard(d, member)))
		return;
	switch (e->kind) {
	case SERVICE_EV_ROLE_CHANGED:
		drill_mark(d, "role_change_seen", false, "%s is %s (seen by the %s)", member, e->role ? e->role : "?",
			   via);
		break;
	case SERVICE_EV_WRITER_LOST:
		drill_mark(d, "writer_lost", false, "%s (seen by the %s)", member, via);
		break;
	case SERVICE_EV_WRITER_CONFIRMED:
		if (e->member != NULL && strcmp(e->member, d->old_writer) != 0 && !d->new_writer_seen) {
			d->new_writer_seen = true;
			d->confirmed_us = drill_now(d);
			snprintf(d->new_writer, sizeof(d->new_writer), "%s", e->member);
			json_object_set_new(d->failover, "new_writer", json_string(e->member));
			drill_mark(d, "new_writer_confirmed", false, "%s (seen by the %s)", member, via);
			if (d->fo_kind == DRILL_FO_STATIC && d->failover_done)
				drill_cluster_available(d, "the new writer is confirmed and the old one follows it");
		}
		break;
	case SERVICE_EV_HELD_RELEASED:
		/* A cluster's held clients each go to their own shard's primary: no one member. */
		if (member[0] != '\0')
			drill_mark(d, "held_released", false, "%u held client(s) sent to %s", e->count, member);
		else
			drill_mark(d, "held_released", false, "%u held client(s) sent on", e->count);
		break;
	case SERVICE_EV_DRAIN_STARTED:
		if (strcmp(member, d->old_writer) == 0)
			drill_mark(d, "old_writer_drained", false, "%u session(s) on %s drained", e->count, member);
		break;
	default:
		break;
	}
	if (d->nevents != before && d->phase == DRILL_PH_FAILOVER)
		drill_check_recovered(d);
}

/* Reads the members as the service sees them now. */
static bool read_members(struct drill *d)
{
	json_t *st = service_status_json(d->svc), *arr = json_object_get(st, "members"), *m, *v;
	int n = service_nmembers(d->svc);
	const char *w = json_string_value(json_object_get(st, "writer"));
	size_t i;

	free(d->members);
	d->members = calloc((size_t)(n > 0 ? n : 1), sizeof(*d->members));
	d->nmembers = 0;
	if (d->members == NULL) {
		json_decref(st);
		return false;
	}
	json_array_foreach(arr, i, m) {
		struct drill_member *dm;
		const struct sockaddr *sa;
		socklen_t salen;
		char err[128];
		if ((int)i >= n)
			break;
		dm = &d->members[d->nmembers];
		snprintf(dm->str, sizeof(dm->str), "%s", service_member_str(d->svc, (int)i));
		if (!parse_hostport(dm->str, &dm->hp, err, sizeof(err)))
			continue;
		sa = service_member_addr(d->svc, (int)i, &salen);
		if (getnameinfo(sa, salen, dm->ep.host, sizeof(dm->ep.host), NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		dm->ep.port = dm->hp.port;
		dm->ep.protocol = d->scfg->protocol;
		/* Statements to a member (static promotions) go as the service's own connections do. */
		dm->ep.tls = service_tls(d->svc);
		snprintf(dm->ep.tls_name, sizeof(dm->ep.tls_name), "%s", service_member_tls_name(d->svc, (int)i));
		dm->role = ROLE_UNKNOWN;
		{
			const char *r = json_string_value(json_object_get(m, "role"));
			if (r != NULL && strcmp(r, "writer") == 0)
				dm->role = ROLE_WRITER;
			else if (r != NULL && strcmp(r, "reader") == 0)
				dm->role = ROLE_READER;
			else if (r != NULL && strcmp(r, "down") == 0)
				dm->role = ROLE_DOWN;
		}
		dm->healthy = json_is_true(json_object_get(m, "healthy"));
		dm->epoch = json_integer_value(json_object_get(m, "epoch"));
		v = json_object_get(m, "shard");
		dm->shard = json_is_integer(v) ? (int)json_integer_value(v) : -1;
		d->nmembers++;
	}
	snprintf(d->old_writer, sizeof(d->old_writer), "%s", w != NULL ? w : "");
	json_decref(st);
	return true;
}

/* cluster = on: the shards as the service sees them now. The drilled one must be among them and
 * serve slots (else the drill is refused: false); its primary is the writer the drill replaces.
 * Each shard gets the hash tag that sends a load request's key to it: the smallest number whose
 * slot it serves. */
static bool read_shards(struct drill *d)
{
	json_t *st = service_status_json(d->svc), *sh;
	json_t *arr = json_object_get(json_object_get(st, "cluster"), "shards");
	const char *primary;
	size_t k;
	int found = 0;

	d->nshards = (int)json_array_size(arr);
	if (d->shard >= d->nshards) {
		json_decref(st);
		drill_fail(d, "refused", "NoSuchShard",
			   "--shard %d: service %s has shards 0 to %d (GET /status: cluster.shards)", d->shard,
			   d->scfg->name, d->nshards - 1);
		return false;
	}
	d->tags = malloc((size_t)d->nshards * sizeof(*d->tags));
	d->shards = json_array();
	if (d->tags == NULL || d->shards == NULL) {
		json_decref(st);
		drill_fail(d, "failed", "Internal", "out of memory");
		return false;
	}
	json_array_foreach(arr, k, sh) {
		d->tags[k] = -1;
		/* "failovers" holds the count so far until the drill ends (shards_after). */
		json_array_append_new(d->shards, json_pack("{s:i, s:b, s:O, s:O, s:O}", "shard", (int)k, "drilled",
							   (int)k == d->shard, "slots", json_object_get(sh, "slots"),
							   "primary_before", json_object_get(sh, "primary"), "failovers",
							   json_object_get(sh, "failovers")));
	}
	primary = json_string_value(json_object_get(json_array_get(arr, (size_t)d->shard), "primary"));
	snprintf(d->old_writer, sizeof(d->old_writer), "%s", primary != NULL ? primary : "");
	json_decref(st);
	for (int n = 0; found < d->nshards && n < SLOTS_COUNT * 64; n++) {
		char tag[16];
		int len = snprintf(tag, sizeof(tag), "%d", n);
		int s = service_slot_shard(d->svc, slots_key_slot((const uint8_t *)tag, (size_t)len));
		if (s >= 0 && s < d->nshards && d->tags[s] < 0) {
			d->tags[s] = n;
			found++;
		}
	}
	if (d->tags[d->shard] < 0) {
		drill_fail(d, "refused", "EmptyShard",
			   "shard %d of service %s serves no slot: no request would show its failover", d->shard,
			   d->scfg->name);
		return false;
	}
	return true;
}

/* cluster = on: each shard's primary now, and its failovers since the preflight. */
static void shards_after(struct drill *d)
{
	json_t *st, *arr, *sh;
	size_t k;

	if (d->shards == NULL)
		return;
	st = service_status_json(d->svc);
	arr = json_object_get(json_object_get(st, "cluster"), "shards");
	json_array_foreach(d->shards, k, sh) {
		const json_t *now = json_array_get(arr, k);
		json_int_t before = json_integer_value(json_object_get(sh, "failovers"));
		json_object_set(sh, "primary_after", now != NULL ? json_object_get(now, "primary") : json_null());
		json_object_set_new(sh, "failovers",
				    json_integer(json_integer_value(json_object_get(now, "failovers")) - before));
	}
	json_decref(st);
}

/* ---- phases ------------------------------------------------------------------------------------ */

static void timer_cb(evutil_socket_t fd, short what, void *arg);

static void drill_enter(struct drill *d, enum drill_phase ph, int64_t deadline_ms)
{
	struct timeval tv = {.tv_sec = deadline_ms / 1000, .tv_usec = (deadline_ms % 1000) * 1000};

	d->phase = ph;
	d->phase_deadline_us = drill_now(d) + deadline_ms * 1000;
	evtimer_del(d->timer);
	if (deadline_ms >= 0)
		evtimer_add(d->timer, &tv);
}

static void start_failover(struct drill *d)
{
	d->before = *service_counters(d->svc);
	d->have_before = true;
	drill_enter(d, DRILL_PH_FAILOVER, d->o.timeout_ms);
	if (d->fo_kind == DRILL_FO_STATIC)
		drill_promote_start(d);
	else
		drill_aws_start(d);
}






/* Recovered: the failover ended on our side, the service confirmed a new writer, the cluster
 * says it is available, and every client has gone through since the confirmation (cluster = on:
 * every client of the drilled shard; the others' never waited for it). */
static void drill_check_recovered(struct drill *d)
{
	if (d->phase != DRILL_PH_FAILOVER || !d->answered || !d->failover_done || !d->new_writer_seen ||
	    !d->cluster_available)
		return;
	for (int i = 0; i < d->nclients; i++)
		if ((d->shard < 0 || d->clients[i].shard == d->shard) && d->clients[i].last_ok_us < d->confirmed_us)
			return;
	drill_mark(d, "recovered", false, "every client succeeded after the new writer was confirmed");
	drill_enter(d, DRILL_PH_AFTER, d->o.duration_after_ms);
}

static void begin_load(struct drill *d)
{
	if (!load_start(d)) {
		drill_fail(d, "failed", "Internal", "out of memory starting the load");
		return;
	}
	drill_enter(d, DRILL_PH_WARMUP, d->o.warmup_ms);
}

static void setup_done(void *arg, const struct drill_result *r)
{
	struct drill *d = arg;

	if (r->kind != DRILL_OK) {
		drill_fail(d, "refused", "SetupFailed", "creating the drill's table through %s: %s (%s)", d->listen_str,
			   r->message, drill_kind_name(r->kind));
		return;
	}
	begin_load(d);
}


/* Preflight: the service must know its writer (and, briefly, every member's role). */
static void preflight_poll(struct drill *d)
{
	json_t *st = service_status_json(d->svc);
	bool ready = json_is_true(json_object_get(st, "writer_ready"));
	bool conflict = json_is_true(json_object_get(st, "conflict"));
	bool settled = true;
	json_t *m;
	size_t i;
	int64_t now = drill_now(d);
	char err[512];

	json_array_foreach(json_object_get(st, "members"), i, m) {
		const char *r = json_string_value(json_object_get(m, "role"));
		if (r == NULL || strcmp(r, "unknown") == 0)
			settled = false;
	}
	json_decref(st);
	if (!ready || (!settled && now < DRILL_ROLES_SETTLE_MS * 1000)) {
		if (now >= DRILL_PREFLIGHT_MS * 1000) {
			drill_fail(d, "refused", conflict ? "WriterConflict" : "NoWriter",
				   conflict ? "several members of service %s claim the writer role: fix that before a drill"
					    : "service %s has no confirmed writer (see GET /status)",
				   d->scfg->name);
			return;
		}
		drill_enter(d, DRILL_PH_PREFLIGHT, DRILL_POLL_MS);
		return;
	}
	if (conflict && d->fo_kind == DRILL_FO_STATIC) {
		drill_fail(d, "refused", "WriterConflict",
			   "several members of service %s claim the writer role: exactly one writer must be known "
			   "(a former Postgres primary left on an older timeline must rejoin as a standby first)",
			   d->scfg->name);
		return;
	}
	if (!read_members(d)) {
		drill_fail(d, "failed", "Internal", "out of memory");
		return;
	}
	if (d->shard >= 0 && !read_shards(d))
		return;
	evtimer_del(d->timer);
	if (d->fo_kind == DRILL_FO_STATIC) {
		if (!drill_promote_plan(d, err, sizeof(err))) {
			drill_fail(d, "refused", "PreflightFailed", "%s", err);
			return;
		}
		drill_preflight_ok(d);
		return;
	}
	drill_aws_preflight(d);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill *d = arg;

	(void)fd;
	(void)what;
	switch (d->phase) {
	case DRILL_PH_PREFLIGHT:
		preflight_poll(d);
		return;
	case DRILL_PH_SETUP:
		return;
	case DRILL_PH_WARMUP:
		start_failover(d);
		return;
	case DRILL_PH_FAILOVER:
		drill_finish(d, "not_recovered");
		return;
	case DRILL_PH_AFTER:
		drill_finish(d, "completed");
		return;
	case DRILL_PH_DONE:
		return;
	}
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct drill *d = arg;

	(void)fd;
	(void)what;
	d->done_called = true;
	if (d->cb != NULL)
		d->cb(d->cb_arg, d);
}

static json_t *failover_kind_json(const struct drill *d)
{
	static const char *const names[] = {
		[DRILL_FO_STATIC] = "static",
		[DRILL_FO_RDS] = "rds",
		[DRILL_FO_ELASTICACHE] = "elasticache",
		[DRILL_FO_GLOBAL] = "elasticache-global",
		[DRILL_FO_MEMORYDB] = "memorydb",
	};
	return json_string(names[d->fo_kind]);
}

/* The one way out: stop the load, read the counters, build the report, tell the owner. */
static void drill_finish(struct drill *d, const char *status)
{
	const char **modes;
	json_t *kind;
	struct drill_run_info in;

	if (d->finished)
		return;
	d->finished = true;
	d->status = status;
	d->end_us = drill_now(d);
	evtimer_del(d->timer);
	load_stop(d);
	if (d->setup != NULL)
		drill_conn_reset(d->setup);
	service_set_observer(d->svc, NULL, NULL);
	if (d->nclients > 0)
		drill_mark(d, "load_stopped", false, "%ld ok, %ld errors", d->ok_count, d->err_count);
	d->after = *service_counters(d->svc);
	shards_after(d);
	d->phase = DRILL_PH_DONE;
	if (d->records_truncated)
		json_array_append_new(json_object_get(d->failover, "notes"),
				      json_string("the request log was full: later requests are not in this report"));
	modes = calloc((size_t)(d->nclients > 0 ? d->nclients : 1), sizeof(*modes));
	for (int i = 0; modes != NULL && i < d->nclients; i++)
		modes[i] = d->clients[i].per_request ? "per-request" : "long";
	kind = failover_kind_json(d);
	in = (struct drill_run_info){
		.id = d->id,
		.service = d->scfg->name,
		.protocol = protocol_name(d->scfg->protocol),
		.listen = d->listen_str,
		.kind = json_string_value(kind),
		.status = status,
		.error_code = d->err_code[0] ? d->err_code : NULL,
		.error_message = d->err_msg,
		.t0_wall_ms = d->t0_wall_ms,
		.duration_us = d->end_us,
		.requested_us = d->requested_us,
		.slow_us = d->o.slow_ms * 1000,
		.options = d->options_json,
		.failover = d->failover,
		.records = d->recs,
		.nrecords = d->nrecs,
		.nclients = modes != NULL ? d->nclients : 0,
		.client_modes = modes,
		.events = d->events,
		.nevents = d->nevents,
		.service_events = d->service_events,
		.before = d->have_before ? &d->before : NULL,
		.after = d->have_before ? &d->after : NULL,
		.shards = d->shards,
	};
	d->report = drill_report_build(&in);
	json_decref(kind);
	free(modes);
	event_active(d->done_ev, EV_TIMEOUT, 1);
}

/* ---- public ------------------------------------------------------------------------------------ */

static bool parse_source(struct drill *d)
{
	static const struct {
		const char *prefix;
		enum drill_kind_of_failover kind;
	} kinds[] = {
		{"rds:", DRILL_FO_RDS},
		{"elasticache-global:", DRILL_FO_GLOBAL},
		{"elasticache:", DRILL_FO_ELASTICACHE},
		{"memorydb:", DRILL_FO_MEMORYDB},
	};
	const char *src = d->scfg->source;

	d->fo_kind = DRILL_FO_STATIC;
	if (src == NULL)
		return true;
	for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
		size_t n = strlen(kinds[i].prefix);
		if (strncmp(src, kinds[i].prefix, n) == 0) {
			d->fo_kind = kinds[i].kind;
			d->source_id = src + n;
			return true;
		}
	}
	return false;
}

/* The probes' credentials as they are now (a secret read, an IAM token for the writer): the load
 * through the listener and the promotion statements log in with them. */
static bool drill_credentials(struct drill *d)
{
	char why[300];
	int w = -1;

	for (int i = 0; i < service_nmembers(d->svc) && w < 0; i++)
		if (service_member_role(d->svc, i) == ROLE_WRITER)
			w = i;
	d->probe_password = service_probe_credentials(d->svc, w, &d->probe_user, why, sizeof(why));
	if (d->probe_password == NULL) {
		drill_fail(d, "refused", "Credentials", "probe_password of service %s: %s", d->scfg->name, why);
		return false;
	}
	return true;
}

/* The listener as a client reaches it: a wildcard address means this host. */
static bool listen_endpoint(struct drill *d)
{
	const struct hostport *hp = &d->scfg->listen;
	struct evutil_addrinfo hints, *res = NULL;
	char port[8];
	const char *host = hp->host;

	if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0)
		host = "::1";
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", hp->port);
	/* The service resolved the same name when it bound it: a local name, answered at once. */
	if (evutil_getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return false;
	if (getnameinfo(res->ai_addr, (socklen_t)res->ai_addrlen, d->listen_ep.host, sizeof(d->listen_ep.host),
			NULL, 0, NI_NUMERICHOST) != 0) {
		evutil_freeaddrinfo(res);
		return false;
	}
	evutil_freeaddrinfo(res);
	d->listen_ep.port = hp->port;
	d->listen_ep.protocol = d->scfg->protocol;
	d->listen_ep.user = d->probe_user != NULL ? d->probe_user : d->scfg->probe_user;
	d->listen_ep.password = d->probe_password;
	d->listen_ep.database = d->scfg->probe_database;
	if (d->scfg->listen_tls == LISTEN_TLS_REQUIRE) {
		/* The load comes as a TLS client then: encrypted, not verified (it is repoint's own
		 * listener, on this host). */
		struct net_tls_settings st = {.mode = NET_TLS_REQUIRE};
		char err[200];
		d->listen_tls = net_tls_new(&st, err, sizeof(err));
		if (d->listen_tls == NULL)
			return false;
		d->listen_ep.tls = d->listen_tls;
	}
	hostport_str(hp, d->listen_str, sizeof(d->listen_str));
	return true;
}

/* cluster = on: --shard is repoint's number of the shard to fail over (default 0), and the load
 * needs a '?' in its key, where each client's requests get the hash tag of its shard. */
static bool cluster_options(struct drill *d)
{
	const char *s = d->o.shard != NULL ? d->o.shard : "0";
	char *end;
	long k;

	if (d->fo_kind == DRILL_FO_ELASTICACHE || d->fo_kind == DRILL_FO_MEMORYDB) {
		/* The control plane's failover takes its own name of the shard: the node group (shard)
		 * whose nodes are in one of the service's shards. */
		s = d->o.shard != NULL ? d->o.shard : "0001";
		if ((d->shard = service_group_shard(d->svc, s)) < 0) {
			drill_fail(d, "refused", "NoSuchShard",
				   "--shard %s: no node of %s %s's node group (shard) %s is in a shard of service %s "
				   "(GET /status: cluster.shards)", s,
				   d->fo_kind == DRILL_FO_MEMORYDB ? "cluster" : "replication group", d->source_id, s,
				   d->scfg->name);
			return false;
		}
	} else {
		errno = 0;
		k = strtol(s, &end, 10);
		if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || k >= SLOTS_MAX_SHARDS) {
			drill_fail(d, "refused", "BadShard",
				   "--shard %s: the shards of cluster service %s are numbered 0, 1, ... as GET /status's "
				   "cluster.shards shows them", s, d->scfg->name);
			return false;
		}
		d->shard = (int)k;
	}
	if (strchr(d->write_tmpl, '?') == NULL) {
		drill_fail(d, "refused", "NoKeyPlaceholder",
			   "--write %s: cluster service %s needs '?' in the key, where each client's requests get the "
			   "hash tag of its shard", d->write_tmpl, d->scfg->name);
		return false;
	}
	return true;
}

static const char *default_write(enum protocol p)
{
	switch (p) {
	case PROTOCOL_POSTGRES:
		/* Assigning a transaction id fails on a standby. */
		return "SELECT txid_current()";
	case PROTOCOL_MYSQL:
		return "REPLACE INTO repoint_drill (id, v) VALUES (?, ?)";
	case PROTOCOL_REDIS:
		return "SET repoint:drill:? ? EX 3600";  /* the drill leaves nothing behind for long */
	}
	return "";
}

static char *dup_opt(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* What the initiators' notifications (timeline.c) move on. */
static void flow_preflight_ok(struct drill *d)
{
	if (d->o.dry_run) {
		drill_finish(d, "dry_run");
		return;
	}
	if (d->scfg->protocol == PROTOCOL_MYSQL && d->o.write == NULL) {
		/* The default write needs its table, made before the drill through the writer. */
		d->setup = drill_conn_new(d->base, &d->listen_ep, setup_done, d);
		if (d->setup == NULL) {
			drill_fail(d, "failed", "Internal", "out of memory");
			return;
		}
		drill_enter(d, DRILL_PH_SETUP, -1);
		drill_conn_run(d->setup, "CREATE TABLE IF NOT EXISTS repoint_drill (id INT PRIMARY KEY, v BIGINT)",
			       d->o.request_timeout_ms);
		return;
	}
	begin_load(d);
}

static const struct drill_flow drill_flow_ops = {
	.preflight_ok = flow_preflight_ok,
	.check_recovered = drill_check_recovered,
	.finish = drill_finish,
};

struct drill *drill_new(struct event_base *base, struct service *svc, const struct aws_config *aws,
			const struct drill_options *o, drill_done_cb cb, void *arg)
{
	static unsigned seq;
	struct drill *d = calloc(1, sizeof(*d));
	json_t *opts;

	if (d == NULL)
		return NULL;
	d->base = base;
	d->flow = &drill_flow_ops;
	d->svc = svc;
	d->scfg = service_config(svc);
	d->aws = aws;
	d->cb = cb;
	d->cb_arg = arg;
	d->requested_us = -1;
	d->confirmed_us = -1;
	d->old_idx = d->target_idx = -1;
	d->shard = -1;
	d->o = *o;
	/* Own copies of every string: the caller's options may go away. */
	d->o.config_path = dup_opt(o->config_path);
	d->o.service = dup_opt(o->service);
	d->o.target = dup_opt(o->target);
	d->o.shard = dup_opt(o->shard);
	d->o.target_region = dup_opt(o->target_region);
	d->o.write = dup_opt(o->write);
	d->o.json_path = dup_opt(o->json_path);
	d->o.svg_path = dup_opt(o->svg_path);
	d->o.ledger_path = dup_opt(o->ledger_path);
	d->o.promote_user = dup_opt(o->promote_user);
	d->o.promote_password = dup_opt(o->promote_password);
	d->o.repl_user = dup_opt(o->repl_user);
	d->o.repl_password = dup_opt(o->repl_password);
	snprintf(d->id, sizeof(d->id), "%s-%lld-%u", d->scfg->name, (long long)(wall_ms() / 1000), ++seq);
	d->write_tmpl = strdup(o->write != NULL ? o->write : default_write(d->scfg->protocol));
	d->service_events = json_array();
	d->failover = json_object();
	json_object_set_new(d->failover, "calls", json_array());
	json_object_set_new(d->failover, "steps", json_array());
	json_object_set_new(d->failover, "notes", json_array());
	d->timer = evtimer_new(base, timer_cb, d);
	d->done_ev = event_new(base, -1, 0, done_cb, d);
	opts = drill_options_json(&d->o);
	/* Secrets never reach a report. */
	json_object_del(opts, "promote_password");
	json_object_del(opts, "repl_password");
	json_object_del(opts, "yes");
	json_object_set_new(opts, "write", json_string(d->write_tmpl != NULL ? d->write_tmpl : ""));
	d->options_json = opts;
	if (d->write_tmpl == NULL || d->timer == NULL || d->done_ev == NULL || d->failover == NULL ||
	    d->service_events == NULL || d->options_json == NULL) {
		drill_free(d);
		return NULL;
	}
	return d;
}

void drill_begin(struct drill *d)
{
	d->t0_us = now_us();
	d->t0_wall_ms = wall_ms();
	service_set_observer(d->svc, on_service_event, d);
	if (!parse_source(d)) {
		drill_fail(d, "refused", "UnsupportedSource", "source '%s' cannot be drilled", d->scfg->source);
		return;
	}
	if (!drill_credentials(d))
		return;
	if (!listen_endpoint(d)) {
		drill_fail(d, "refused", "BadListener", "cannot reach the listener of service %s", d->scfg->name);
		return;
	}
	if (service_is_cluster(d->svc) && !cluster_options(d))
		return;
	if (d->scfg->protocol == PROTOCOL_POSTGRES && d->scfg->source == NULL && d->o.runs > 1) {
		/* pg_promote leaves the old primary on its own timeline, and the other standbys still
		 * following it; only pg_rewind (or a new base backup) on the old primary's own host makes
		 * it a standby again, which repoint, a client of the cluster, cannot do. A second run
		 * would promote a standby of the old timeline. */
		drill_fail(d, "refused", "OneRunAtATime",
			   "--runs %d: a static Postgres drill promotes a standby (pg_promote) and leaves the old primary on "
			   "its timeline; rejoin it as a standby (pg_rewind on its host) and repoint the other standbys "
			   "before the next run: run the drills one at a time", d->o.runs);
		return;
	}
	if (d->scfg->protocol == PROTOCOL_MYSQL && d->o.write == NULL &&
	    (d->scfg->probe_database == NULL || d->scfg->probe_database[0] == '\0')) {
		drill_fail(d, "refused", "NoDatabase",
			   "service %s has no probe_database: the drill's table repoint_drill needs one (or give --write)",
			   d->scfg->name);
		return;
	}
	drill_enter(d, DRILL_PH_PREFLIGHT, 0);
}

void drill_cancel(struct drill *d, const char *why)
{
	if (d->finished)
		return;
	snprintf(d->err_code, sizeof(d->err_code), "Cancelled");
	snprintf(d->err_msg, sizeof(d->err_msg), "%s", why != NULL ? why : "cancelled");
	drill_finish(d, "cancelled");
}

bool drill_finished(const struct drill *d)
{
	return d->finished;
}

const char *drill_id(const struct drill *d)
{
	return d->id;
}

const char *drill_service_name(const struct drill *d)
{
	return d->scfg->name;
}

json_t *drill_report(const struct drill *d)
{
	return d->report;
}

json_t *drill_progress_json(const struct drill *d)
{
	int64_t now = d->finished ? d->end_us : drill_now(d);
	int64_t outage = -1;

	/* The outage so far: from the first trouble since the request to now, while no client has
	 * gone through since. */
	if (d->requested_us >= 0 && d->err_count > 0) {
		struct drill_outage o;
		drill_outage_compute(d->recs, d->nrecs, d->requested_us, d->o.slow_ms * 1000, &o);
		if (o.any)
			outage = o.recovered ? o.duration_us : now - o.start_us;
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:s}", "id", d->id, "service", d->scfg->name, "phase",
			 phase_names[d->phase], "elapsed_ms", (json_int_t)(now / 1000), "ok", (json_int_t)d->ok_count,
			 "errors", (json_int_t)d->err_count,
			 "outage_ms", outage >= 0 ? json_integer(outage / 1000) : json_null(), "status",
			 d->finished ? d->status : "running");
}

void drill_progress_line(const json_t *p, char *buf, size_t len)
{
	const json_t *out = json_object_get(p, "outage_ms");
	char extra[48] = "";

	if (json_is_integer(out))
		snprintf(extra, sizeof(extra), "  outage %lld ms", (long long)json_integer_value(out));
	snprintf(buf, len, "drill %s %6.1fs  %-12s ok %lld  errors %lld%s",
		 json_string_value(json_object_get(p, "service")),
		 (double)json_integer_value(json_object_get(p, "elapsed_ms")) / 1000.0,
		 json_string_value(json_object_get(p, "phase")), (long long)json_integer_value(json_object_get(p, "ok")),
		 (long long)json_integer_value(json_object_get(p, "errors")), extra);
}

void drill_free(struct drill *d)
{
	if (d == NULL)
		return;
	if (d->svc != NULL && !d->finished)
		service_set_observer(d->svc, NULL, NULL);
	load_free(d);
	drill_conn_free(d->setup);
	drill_promote_free(d);
	drill_aws_free(d);
	if (d->timer != NULL)
		event_free(d->timer);
	if (d->done_ev != NULL)
		event_free(d->done_ev);
	for (size_t i = 0; i < d->nrecs; i++)
		free((char *)d->recs[i].message);
	free(d->recs);
	free(d->members);
	free(d->tags);
	json_decref(d->shards);
	net_tls_free(d->listen_tls);
	free(d->write_tmpl);
	secret_value_free(d->probe_password);
	free(d->probe_user);
	json_decref(d->service_events);
	json_decref(d->failover);
	json_decref(d->options_json);
	json_decref(d->report);
	drill_options_free(&d->o);
	free(d);
}
