/* txlog.c - a transaction's answers, kept to check a replay of it against (see txlog.h). */
#include "net/txlog.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

void txlog_reset(struct txlog *tl)
{
	tl->len = 0;
	tl->nends = 0;
	tl->valid = true;
}

void txlog_reply(struct txlog *tl, const uint8_t *p, size_t n, bool answered)
{
	if (!tl->valid)
		return;
	if ((answered && tl->nends == TXLOG_REPLIES) || !bytes_append(&tl->buf, &tl->len, &tl->cap, p, n, 256, TXLOG_MAX)) {
		tl->valid = false;
		return;
	}
	if (answered)
		tl->ends[tl->nends++] = tl->len;
}

bool txlog_match(const struct txlog *tl, uint32_t *pos, uint8_t *idx, const uint8_t *p, size_t n, bool answered)
{
	if (!tl->valid || *idx >= tl->nends)
		return false;
	uint32_t end = tl->ends[*idx];
	if (n > end - *pos || memcmp(tl->buf + *pos, p, n) != 0)
		return false;
	*pos += (uint32_t)n;
	if (answered != (*pos == end))
		return false;
	if (answered)
		(*idx)++;
	return true;
}

void txlog_free(struct txlog *tl)
{
	free(tl->buf);
	tl->buf = NULL;
	tl->len = tl->cap = 0;
	tl->nends = 0;
	tl->valid = false;
}
