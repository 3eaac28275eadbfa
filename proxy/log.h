/* log.h - leveled logging to stderr, as text or one JSON object per line.
 * Every line carries a subject: "service orders", "orders client 127.0.0.1:40312", ... */
#ifndef REPOINT_LOG_H
#define REPOINT_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_setup(enum log_level level, enum log_format format);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *subject, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The same line with fields that JSON logs carry as such (text logs say them in the message):
 * an event name, the member, the reason, a duration (-1: none). The subject's service, session and
 * client become fields too. */
struct log_fields {
	const char *event;
	const char *member;
	const char *reason;
	long long duration_ms;
};
void log_event(enum log_level level, const char *subject, const struct log_fields *f, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

const char *log_level_name(enum log_level level);

#define log_debug(subj, ...)                                                                       \
	do {                                                                                       \
		if (log_enabled(LOG_DEBUG))                                                        \
			log_msg(LOG_DEBUG, subj, __VA_ARGS__);                                     \
	} while (0)
#define log_info(subj, ...) log_msg(LOG_INFO, subj, __VA_ARGS__)
#define log_warn(subj, ...) log_msg(LOG_WARN, subj, __VA_ARGS__)
#define log_error(subj, ...) log_msg(LOG_ERROR, subj, __VA_ARGS__)

#endif
