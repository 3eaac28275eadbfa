/* resp_internal.h - pieces of the RESP scanners shared by resp.c and resp_share.c. */
#ifndef REPOINT_RESP_INTERNAL_H
#define REPOINT_RESP_INTERNAL_H

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

#endif
