/* log.c - leveled logging to stderr, text or JSON lines. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include <jansson.h>

static enum log_level min_level = LOG_INFO;
static enum log_format format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, enum log_format fmt)
{
	min_level = level;
	format = fmt;
}

bool log_enabled(enum log_level level)
{
	return level >= min_level;
}

const char *log_level_name(enum log_level level)
{
	return level_names[level];
}

/* What a subject says, as fields: "service NAME" -> service; "NAME client#ID PEER" -> service,
 * session, client. */
static void subject_fields(json_t *o, const char *subject)
{
	char name[128];
	unsigned long long id;
	int n = 0;

	if (strncmp(subject, "service ", 8) == 0) {
		json_object_set_new(o, "service", json_string(subject + 8));
		return;
	}
	if (sscanf(subject, "%127s client#%llu %n", name, &id, &n) == 2 && n > 0) {
		json_object_set_new(o, "service", json_string(name));
		json_object_set_new(o, "session", json_integer((json_int_t)id));
		json_object_set_new(o, "client", json_string(subject + n));
	}
}

static void log_line(enum log_level level, const char *subject, const struct log_fields *f, const char *fmt,
		     va_list ap)
{
	char msg[2048], ts[96];
	struct timespec now;
	struct tm tm;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);

	if (format == LOG_FORMAT_JSON) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level],
				      "subject", subject ? subject : "repoint", "msg", msg);
		char *line;
		if (o != NULL && subject != NULL)
			subject_fields(o, subject);
		if (o != NULL && f != NULL) {
			if (f->event != NULL)
				json_object_set_new(o, "event", json_string(f->event));
			if (f->member != NULL)
				json_object_set_new(o, "member", json_string(f->member));
			if (f->reason != NULL)
				json_object_set_new(o, "reason", json_string(f->reason));
			if (f->duration_ms >= 0)
				json_object_set_new(o, "duration_ms", json_integer((json_int_t)f->duration_ms));
		}
		line = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (line != NULL) {
			fprintf(stderr, "%s\n", line);
			free(line);
		}
		json_decref(o);
	} else {
		fprintf(stderr, "%s %-5s %s: %s\n", ts, level_names[level], subject ? subject : "repoint", msg);
	}
}

void log_msg(enum log_level level, const char *subject, const char *fmt, ...)
{
	va_list ap;

	if (level < min_level)
		return;
	va_start(ap, fmt);
	log_line(level, subject, NULL, fmt, ap);
	va_end(ap);
}

void log_event(enum log_level level, const char *subject, const struct log_fields *f, const char *fmt, ...)
{
	va_list ap;

	if (level < min_level)
		return;
	va_start(ap, fmt);
	log_line(level, subject, f, fmt, ap);
	va_end(ap);
}
