/* resp_internal.h - pieces of the RESP scanners shared by resp.c and resp_share.c. */
#ifndef REPOINT_RESP_INTERNAL_H
#define REPOINT_RESP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decimal length line "<digits>\r\n" at p[*at..n): its value in *val and *at moved past the LF.
 * 1: done, 0: more bytes needed, -1: malformed (no digits, a sign, a bare CR) or above `limit`. */
static inline int resp_length_line(const uint8_t *p, size_t n, size_t *at, uint64_t limit, uint64_t *val)
{
	uint64_t v = 0;
	size_t i = *at, digits = 0;

	/* Nearly every length in a command is one or two digits. */
	if (i + 3 < n && p[i] >= '0' && p[i] <= '9') {
		if (p[i + 1] == '\r' && p[i + 2] == '\n' && (uint64_t)(p[i] - '0') <= limit) {
			*val = (uint64_t)(p[i] - '0');
			*at = i + 3;
			return 1;
		}
		if (p[i + 1] >= '0' && p[i + 1] <= '9' && p[i + 2] == '\r' && p[i + 3] == '\n' &&
		    (uint64_t)((p[i] - '0') * 10 + (p[i + 1] - '0')) <= limit) {
			*val = (uint64_t)((p[i] - '0') * 10 + (p[i + 1] - '0'));
			*at = i + 4;
			return 1;
		}
	}
	for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
		v = v * 10 + (uint64_t)(p[i] - '0');
		if (v > limit)
			return -1;
	}
	if (i == n)
		return 0;
	if (digits == 0 || p[i] != '\r')
		return -1;
	if (i + 1 == n)
		return 0;
	if (p[i + 1] != '\n')
		return -1;
	*at = i + 2;
	*val = v;
	return 1;
}

/* Whether p[0..n) is the word `lower` (lower case), in any case. */
static inline bool resp_word_is(const uint8_t *p, size_t n, const char *lower)
{
	size_t i = 0;

	for (; i < n; i++)
		if (lower[i] == '\0' || (p[i] >= 'A' && p[i] <= 'Z' ? p[i] + ('a' - 'A') : p[i]) != (uint8_t)lower[i])
			return false;
	return lower[i] == '\0';
}

/* The first arguments of a request, as resp_request finds them. */
#define RESP_REQ_ARGS 3
struct resp_request {
	uint64_t nargs;
	unsigned seen;                        /* complete arguments recorded, at most RESP_REQ_ARGS */
	const uint8_t *arg[RESP_REQ_ARGS];
	size_t arg_len[RESP_REQ_ARGS];
};

/* One request array ("*<n>\r\n", then n times "$<len>\r\n<bytes>\r\n") at the start of p[0..n),
 * at most `max` bytes and `max_args` arguments; its first arguments are recorded as they are found.
 * 1: complete, *len its length; 0: more bytes needed, *len a lower bound of its length; -1: not such
 * an array (inline, malformed, empty) or over a limit. */
static inline int resp_request(const uint8_t *p, size_t n, size_t max, uint64_t max_args, struct resp_request *rq,
			       size_t *len)
{
	size_t at = 1;
	uint64_t blen;
	int k;

	rq->nargs = 0;
	rq->seen = 0;
	*len = 1;
	if (n == 0)
		return 0;
	if (p[0] != '*')
		return -1;
	if ((k = resp_length_line(p, n, &at, max_args, &rq->nargs)) <= 0) {
		*len = at + 1;
		return k;
	}
	if (rq->nargs == 0)
		return -1;
	for (uint64_t i = 0; i < rq->nargs; i++) {
		if (at >= n) {
			*len = at + 1;
			return at >= max ? -1 : 0;
		}
		if (p[at] != '$')
			return -1;
		at++;
		if ((k = resp_length_line(p, n, &at, max, &blen)) <= 0) {
			*len = at + 1;
			return k;
		}
		if (at > max || blen + 2 > max - at)
			return -1;
		if (blen + 2 > n - at) {
			*len = at + (size_t)blen + 2;
			return 0;
		}
		if (p[at + blen] != '\r' || p[at + blen + 1] != '\n')
			return -1;
		if (i < RESP_REQ_ARGS) {
			rq->arg[i] = p + at;
			rq->arg_len[i] = (size_t)blen;
			rq->seen = (unsigned)i + 1;
		}
		at += (size_t)blen + 2;
	}
	*len = at;
	return 1;
}

#endif
