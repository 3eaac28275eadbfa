/* fuzz_slots.c - a member's CLUSTER SLOTS / CLUSTER SHARDS answer, any bytes through hiredis's
 * reader with the probes' caps (the reader a cluster source will read them with), each reply read
 * as both; and the bytes as a key. */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proto/slots.h"
#include "sources/engine.h"

static struct slots_map map;

static void check(bool ok, const char *why)
{
	FUZZ_CHECK(memchr(why, '\0', 200) != NULL);
	if (!ok)
		return;
	FUZZ_CHECK(map.nshards >= 0 && map.nshards <= SLOTS_MAX_SHARDS);
	uint32_t covered = 0;
	for (int i = 0; i < SLOTS_COUNT; i++) {
		FUZZ_CHECK(map.owner[i] >= -1 && map.owner[i] < map.nshards);
		covered += map.owner[i] >= 0;
	}
	FUZZ_CHECK(covered == map.covered);
	for (int s = 0; s < map.nshards; s++)
		FUZZ_CHECK(map.shards[s].primary.port != 0 && map.shards[s].nreplicas <= SLOTS_MAX_REPLICAS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd = engine_rd_reader_new();  /* the probes' reader, with their caps */
	void *reply = NULL;
	char why[200];

	FUZZ_CHECK(slots_key_slot(data, size) < SLOTS_COUNT);
	if (rd == NULL)
		return 0;
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
		for (int n = 0; n < 8 && redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL; n++) {
			memset(why, 0, sizeof(why));
			check(slots_from_cluster_slots(reply, &map, why, sizeof(why)), why);
			memset(why, 0, sizeof(why));
			check(slots_from_cluster_shards(reply, &map, why, sizeof(why)), why);
			freeReplyObject(reply);
			reply = NULL;
			engine_rd_reply_taken(rd);
		}
	}
	engine_rd_reader_free(rd);
	return 0;
}
