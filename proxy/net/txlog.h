/* txlog.h - what a transaction's requests were answered, to check a replay of it against.
 *
 * An old writer that turns read-only refuses the rest of a transaction it had begun (MySQL/MariaDB
 * refuse the COMMIT of a transaction that wrote: error 1290): nothing of it was committed there.
 * Its requests may then run again, one at a time, on the new writer -- but the client may go on
 * only if each is answered there exactly as it was answered before (the same rows, the same
 * affected counts, the same status). The log keeps the answers the client has had since the
 * transaction's idle point, byte for byte, and where each ends; a replay is compared with it as it
 * arrives. Bounded: past TXLOG_MAX bytes or TXLOG_REPLIES answers the transaction is not replayable.
 */
#ifndef REPOINT_TXLOG_H
#define REPOINT_TXLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TXLOG_MAX (16 * 1024)
#define TXLOG_REPLIES 16

struct txlog {
	uint8_t *buf;
	uint32_t len, cap;
	uint32_t ends[TXLOG_REPLIES];  /* where each complete answer ends in buf */
	uint8_t nends;
	bool valid;                    /* every answer since the idle point is here, each at its end */
};

/* From an idle point on: nothing kept yet, and everything from here will be. */
void txlog_reset(struct txlog *tl);
/* Server bytes the client got; `answered`: the tracker says they end an answer (nothing else in
 * flight). Bytes that end an answer and start another are not kept apart: the log gives up. */
void txlog_reply(struct txlog *tl, const uint8_t *p, size_t n, bool answered);
/* A replay's bytes p[0..n), answered or not at their end, against the log from *pos, answer *idx:
 * false as soon as they differ (or run past the answer they belong to, or it ends elsewhere);
 * else *pos and *idx move on. */
bool txlog_match(const struct txlog *tl, uint32_t *pos, uint8_t *idx, const uint8_t *p, size_t n, bool answered);
void txlog_free(struct txlog *tl);

#endif
