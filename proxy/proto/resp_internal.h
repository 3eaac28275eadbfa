/* resp_internal.h - pieces of the RESP scanners shared by resp.c and resp_share.c. */
#ifndef REPOINT_RESP_INTERNAL_H
#define REPOINT_RESP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* A decimal length line "<digits>\r\n" at p[*at..n): its value in *val and *at moved past the LF.
 * 1: done, 0: more bytes needed, -1: malformed (no digits, a sign, a bare CR) or above `limit`. */
int resp_length_line(const uint8_t *p, size_t n, size_t *at, uint64_t limit, uint64_t *val);

#endif
