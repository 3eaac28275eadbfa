/* txlog.c - a transaction's answers, kept to check a replay of it against (see txlog.h). */
#include "net/txlog.h"

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
	if (n > TXLOG_MAX - tl->len || (answered && tl->nends == TXLOG_REPLIES)) {
		tl->valid = false;
		return;
	}
	if (tl->len + n > tl->cap) {
		uint32_t cap = tl->cap ? tl->cap : 256;
		while (cap < tl->len + n)
			cap *= 2;
		uint8_t *b = realloc(tl->buf, cap);
		if (b == NULL) {
			tl->valid = false;
			return;
		}
		tl->buf = b;
		tl->cap = cap;
	}
	memcpy(tl->buf + tl->len, p, n);
	tl->len += (uint32_t)n;
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
