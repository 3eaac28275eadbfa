/* util.h - small helpers shared by every module: clocks, durations, addresses. */
#ifndef REPOINT_UTIL_H
#define REPOINT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WARN_UNUSED __attribute__((warn_unused_result))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A host (name or IP literal, IPv6 without brackets) and a port. */
struct hostport {
	char host[256];
	uint16_t port;
};

/* Monotonic clock in milliseconds / microseconds (CLOCK_MONOTONIC). */
int64_t now_ms(void);
int64_t now_us(void);
/* Monotonic ms at the clock's coarse resolution (a few ms), without a clock read: for what only
 * shows (a session's idle time), on the data path. */
int64_t now_ms_coarse(void);
/* Wall clock in milliseconds since the epoch (for reports and /status). */
int64_t wall_ms(void);

/* "250ms", "1s", "2m", "1.5s"; a bare number is milliseconds. Result in ms, bounded to [0, 24h].
 * Returns false on anything else. */
bool parse_duration_ms(const char *s, int64_t *out) WARN_UNUSED;

/* "127.0.0.1:5432", "localhost:6379", "[::1]:5432". Returns false (with a reason in err) when malformed. */
bool parse_hostport(const char *s, struct hostport *out, char *err, size_t errlen) WARN_UNUSED;

/* Formats "host:port" (IPv6 hosts in brackets) into buf; returns buf. */
const char *hostport_str(const struct hostport *hp, char *buf, size_t len);
/* Whether an address is this machine only (127.0.0.0/8, ::1, localhost). */
bool host_is_loopback(const char *host);

/* The length of s cut to at most max bytes without splitting a UTF-8 character (clients decode
 * error texts as UTF-8). */
size_t utf8_prefix_len(const char *s, size_t max);

/* Five characters of [0-9A-Z]: an SQLSTATE. */
bool sqlstate_valid(const char *st);

/* Copies the first line of src (NULL: "") into dst with runs of white space folded into one space:
 * library messages come with trailing newlines, tabs and hints on further lines. */
void str_oneline(char *dst, size_t len, const char *src);
/* The same, keeping only printable ASCII (anything else becomes '?'), cut at len - 1 bytes with
 * "..." when longer: for foreign text shown in /status and logs. */
void str_printable(char *dst, size_t len, const char *src);

/* Trim leading and trailing white space in place; returns s. */
char *str_trim(char *s);

/* Appends p[0..n) to the byte buffer *buf (*len used of *cap; NULL/0/0 at first), growing it by
 * doubling from `first` bytes: false, nothing appended, when that would pass `max` bytes or memory
 * runs out. */
bool bytes_append(uint8_t **buf, uint32_t *len, uint32_t *cap, const uint8_t *p, size_t n, uint32_t first,
		  uint32_t max) WARN_UNUSED;

/* A Prometheus histogram of durations in seconds, with fixed buckets from 1 ms to 30 s (counts per
 * bucket, not cumulative; the printer adds them up). */
#define HIST_NBOUNDS 14
extern const double hist_bounds[HIST_NBOUNDS];
struct histogram {
	uint64_t buckets[HIST_NBOUNDS + 1];  /* the last: above every bound */
	uint64_t count;
	double sum;
};
void hist_observe(struct histogram *h, double seconds);

#endif
