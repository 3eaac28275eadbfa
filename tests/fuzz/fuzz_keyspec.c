/* fuzz_keyspec.c - a member's COMMAND answer (any bytes through the probes' hiredis reader, with
 * their caps) read as key positions, and the bytes as a command against both that table and one
 * built from a real Redis 7.0 reply (the seed corpus carries it): a slot in range or a KEYSPEC_
 * code, never a read outside the command; and repoint's own cluster-mode answers to the bytes. */
#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proto/keyspec.h"
#include "proto/proto.h"
#include "proto/slots.h"
#include "sources/engine.h"

static void slot_ok(int s)
{
	FUZZ_CHECK((s >= 0 && s < SLOTS_COUNT) || s == KEYSPEC_NOKEYS || s == KEYSPEC_CROSSSLOT ||
		   s == KEYSPEC_UNKNOWN || s == KEYSPEC_BAD);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd = engine_rd_reader_new();
	void *reply = NULL;
	char why[200];
	size_t len;
	struct evbuffer *out = evbuffer_new();

	if (rd == NULL || out == NULL)
		abort();
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK &&
	    redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL) {
		struct keyspec *ks = keyspec_from_command(reply, why, sizeof(why));
		if (ks != NULL) {
			FUZZ_CHECK(keyspec_count(ks) > 0);
			/* Whatever follows the reply, as a command against it. */
			const uint8_t *rest = data + size / 2;
			slot_ok(keyspec_slot(ks, rest, size - size / 2));
			slot_ok(keyspec_slot(ks, data, size));
			keyspec_free(ks);
		} else {
			FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
		}
		freeReplyObject(reply);
	}
	engine_rd_reader_free(rd);
	/* The bytes as a client's command in cluster mode. */
	if (resp_command_len(data, size, size, &len) == 1) {
		FUZZ_CHECK(len <= size);
		resp_cluster_answer(data, len, &(struct resp_cluster_self){.host = "127.0.0.1", .port = 6379}, out);
		FUZZ_CHECK(evbuffer_get_length(out) > 0);
		(void)resp_cluster_keyless_ok(data, len);
	}
	evbuffer_free(out);
	return 0;
}
