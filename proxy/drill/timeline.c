/* drill/timeline.c - what a drill records as it goes (moments, failover steps, the answer of the
 * failover's initiator) and the notifications the initiators (promote.c, aws.c) send back. The
 * notifications that move the drill on go through d->flow, which drill.c sets: the initiators and
 * this file never call drill.c, which calls them. */
#include "drill/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "log.h"

void drill_subject(const struct drill *d, char *buf, size_t len)
{
	snprintf(buf, len, "drill %s", d->id);
}

int64_t drill_now(const struct drill *d)
{
	return now_us() - d->t0_us;
}

bool drill_marked(const struct drill *d, const char *name)
{
	for (size_t i = 0; i < d->nevents; i++)
		if (strcmp(d->events[i].name, name) == 0)
			return true;
	return false;
}

void drill_mark(struct drill *d, const char *name, bool repeat, const char *fmt, ...)
{
	struct drill_event *e;
	char subj[64];
	va_list ap;

	if ((!repeat && drill_marked(d, name)) || d->nevents >= DRILL_MAX_EVENTS)
		return;
	e = &d->events[d->nevents++];
	e->name = name;
	e->at_us = drill_now(d);
	e->detail[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
		va_end(ap);
	}
	drill_subject(d, subj, sizeof(subj));
	log_info(subj, "%s%s%s", name, e->detail[0] ? ": " : "", e->detail);
}

void drill_step(struct drill *d, const char *member, const char *command, bool ok, const char *result)
{
	json_t *steps = json_object_get(d->failover, "steps");

	if (steps == NULL) {
		steps = json_array();
		json_object_set_new(d->failover, "steps", steps);
	}
	json_array_append_new(steps, json_pack("{s:I, s:s, s:s, s:b, s:s}", "at_ms", (json_int_t)(drill_now(d) / 1000),
					       "member", member != NULL ? member : "", "command", command, "ok", ok,
					       "result", result != NULL ? result : ""));
}

void drill_requested(struct drill *d)
{
	d->requested_us = drill_now(d);
	drill_mark(d, "failover_requested", false, "%s", json_string_value(json_object_get(d->failover, "method")));
}

void drill_answered(struct drill *d, const char *request_id, const char *detail)
{
	d->answered = true;
	if (request_id != NULL && request_id[0] != '\0')
		json_object_set_new(d->failover, "request_id", json_string(request_id));
	drill_mark(d, "api_answered", false, "%s%s%s", detail != NULL ? detail : "",
		   request_id != NULL && request_id[0] ? " request id " : "", request_id != NULL ? request_id : "");
	d->flow->check_recovered(d);
}

void drill_fail(struct drill *d, const char *status, const char *code, const char *fmt, ...)
{
	char subj[64];
	va_list ap;

	if (d->finished)
		return;
	snprintf(d->err_code, sizeof(d->err_code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(d->err_msg, sizeof(d->err_msg), fmt, ap);
	va_end(ap);
	drill_subject(d, subj, sizeof(subj));
	log_warn(subj, "%s: %s: %s", status, d->err_code, d->err_msg);
	d->flow->finish(d, status);
}

void drill_failover_done(struct drill *d)
{
	d->failover_done = true;
	if (d->fo_kind == DRILL_FO_STATIC && d->new_writer_seen)
		drill_cluster_available(d, "the new writer is confirmed and the old one follows it");
	d->flow->check_recovered(d);
}

void drill_cluster_available(struct drill *d, const char *detail)
{
	if (d->cluster_available)
		return;
	d->cluster_available = true;
	drill_mark(d, "cluster_available", false, "%s", detail);
	d->flow->check_recovered(d);
}


void drill_preflight_ok(struct drill *d)
{
	d->flow->preflight_ok(d);
}
