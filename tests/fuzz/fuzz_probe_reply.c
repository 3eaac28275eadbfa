/* fuzz_probe_reply.c - what a member answers to the role check: bytes of a Redis reply through the
 * probes' hiredis reader in any chunking (with their caps on a reply's size, ENGINE_RD_MAX_REPLY,
 * and on its array elements, ENGINE_RD_MAX_ELEMENTS),
 * each reply read as ROLE's answer; and the Postgres / MariaDB row values as their client libraries
 * hand them over (any text, or NULL). Input: [selector][cut count N][N cut bytes][payload]. */
#include <hiredis/read.h>
#include <string.h>

#include "fuzz_common.h"
#include "sources/engine.h"
#include "sources/probe.h"

static void check(const struct probe_result *r)
{
	FUZZ_CHECK(memchr(r->detail, '\0', sizeof(r->detail)) != NULL);
	FUZZ_CHECK(!r->ok || r->role == ROLE_WRITER || r->role == ROLE_READER);
	FUZZ_CHECK(!(r->ok && r->busy));
	FUZZ_CHECK(!r->loading || r->busy);
}

/* Two NUL-separated values of the payload; a value starting with 0xff is SQL NULL. */
static void two_values(const uint8_t *p, size_t n, char **a, char **b)
{
	char *text = malloc(n + 2);
	const char *sep;

	memcpy(text, p, n);
	text[n] = '\0';
	text[n + 1] = '\0';
	sep = memchr(text, '\0', n + 1);
	*a = text;
	*b = (char *)sep + 1;
	if (sep == text + n)
		*b = text + n + 1;  /* one value only: the second is empty */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct probe_result r;
	size_t ncuts, k = 0;

	if (size < 2)
		return 0;
	uint8_t sel = data[0] % 3;
	ncuts = data[1] % 64;
	data += 2;
	size -= 2;
	if (ncuts > size)
		ncuts = size;
	const uint8_t *cuts = data, *p = data + ncuts;
	size_t n = size - ncuts;

	if (sel == 0) {
		redisReader *rd = engine_rd_reader_new();
		size_t fed = 0;
		FUZZ_CHECK(rd != NULL);
		while (n > 0) {
			size_t len = ncuts > 0 ? (size_t)(cuts[k++ % ncuts] & 63) + 1 : n;
			void *reply = NULL;
			if (len > n)
				len = n;
			if (redisReaderFeed(rd, (const char *)p, len) != REDIS_OK)
				break;
			fed += len;
			p += len;
			n -= len;
			for (;;) {
				if (redisReaderGetReply(rd, &reply) != REDIS_OK)
					goto out;  /* a protocol error: the probe fails the check */
				if (reply == NULL)
					break;
				probe_read_redis(reply, &r);
				check(&r);
				freeReplyObject(reply);
				fed = rd->len - rd->pos;
				engine_rd_reply_taken(rd);
			}
			if (fed > ENGINE_RD_MAX_REPLY)
				break;  /* the probe cuts such a node off */
		}
out:
		engine_rd_reader_free(rd);
		return 0;
	}
	char *a, *b;
	two_values(p, n, &a, &b);
	const char *va = (uint8_t)a[0] == 0xff ? NULL : a, *vb = (uint8_t)b[0] == 0xff ? NULL : b;
	if (sel == 1) {
		/* the third column: NULL, "t", or the second value again (anything) */
		const char *vc = n == 0 || p[n - 1] % 3 == 0 ? NULL : p[n - 1] % 3 == 1 ? "t" : vb;
		probe_read_postgres(va, vb, vc, &r);
		check(&r);
		FUZZ_CHECK(!r.ok || r.role != ROLE_WRITER || r.epoch > 0);
	} else {
		probe_read_mysql(va, vb, &r);
		check(&r);
	}
	free(a);
	return 0;
}
