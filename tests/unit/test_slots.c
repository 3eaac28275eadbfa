/* test_slots.c - Redis Cluster's key space: key -> slot, and slot maps from real-shaped replies. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proto/slots.h"

/* Slot values computed with Python's binascii.crc_hqx (CRC-16/XMODEM), as the spec's reference. */
START_TEST(test_key_slots)
{
	static const struct {
		const char *key;
		uint16_t slot;
	} cases[] = {
		{"foo", 12182}, {"bar", 5061}, {"hello", 866},
		{"{user1000}.following", 3443}, {"{user1000}.followers", 3443},   /* the tag only */
		{"foo{}{bar}", 8363},                                              /* empty tag: the whole key */
		{"foo{{bar}}zap", 4015},                                           /* "{bar" */
		{"foo{bar}{zap}", 5061},                                           /* the first tag */
		{"{", 0xcffc & 16383}, {"}", 0xaf3a & 16383}, {"", 0},
	};

	ck_assert_uint_eq(slots_crc16((const uint8_t *)"123456789", 9), 0x31C3);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(slots_key_slot((const uint8_t *)cases[i].key, strlen(cases[i].key)) == cases[i].slot,
			      "%s: %u, want %u", cases[i].key,
			      slots_key_slot((const uint8_t *)cases[i].key, strlen(cases[i].key)), cases[i].slot);
}
END_TEST

static redisReply *parse(const char *resp)
{
	redisReader *rd = redisReaderCreate();
	void *reply = NULL;

	ck_assert(rd != NULL);
	ck_assert_int_eq(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
	ck_assert_int_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
	ck_assert(reply != NULL);
	redisReaderFree(rd);
	return reply;
}

/* What a node's answer to CLUSTER SHARDS says: a cluster, not one, ask CLUSTER SLOTS, or nothing. */
START_TEST(test_membership)
{
	static const struct {
		const char *reply;
		enum slots_membership said;
	} cases[] = {
		{"*0\r\n", SLOTS_IN_CLUSTER},
		{"-ERR This instance has cluster support disabled\r\n", SLOTS_NOT_CLUSTER},
		{"-ERR Unknown subcommand or wrong number of arguments for 'SHARDS'. Try CLUSTER HELP.\r\n", SLOTS_NO_SHARDS},
		{"-ERR unknown subcommand 'shards'. Try CLUSTER HELP.\r\n", SLOTS_NO_SHARDS},
		{"-NOPERM User probe has no permissions to run the 'cluster|shards' command\r\n", SLOTS_NO_SHARDS},
		{"-LOADING Redis is loading the dataset in memory\r\n", SLOTS_UNKNOWN},
		{"+OK\r\n", SLOTS_UNKNOWN},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		redisReply *r = parse(cases[i].reply);
		ck_assert_msg(slots_membership(r) == cases[i].said, "%s", cases[i].reply);
		freeReplyObject(r);
	}
}
END_TEST

START_TEST(test_cluster_slots)
{
	/* 3 shards (0-5460, 5461-10922, 10923-16383), each a primary and a replica, as Redis 7.0 answers. */
	static const char three[] =
		"*3\r\n"
		"*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:30001\r\n$40\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
		"*3\r\n$9\r\n127.0.0.1\r\n:30004\r\n$40\r\ndddddddddddddddddddddddddddddddddddddddd\r\n"
		"*4\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:30002\r\n$40\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
		"*3\r\n$9\r\n127.0.0.1\r\n:30005\r\n$40\r\neeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\r\n"
		"*4\r\n:10923\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:30003\r\n$40\r\ncccccccccccccccccccccccccccccccccccccccc\r\n"
		"*3\r\n$9\r\n127.0.0.1\r\n:30006\r\n$40\r\nffffffffffffffffffffffffffffffffffffffff\r\n";
	struct slots_map *m = malloc(sizeof(*m));
	char why[200];
	redisReply *r = parse(three);

	ck_assert_msg(slots_from_cluster_slots(r, m, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(m->nshards, 3);
	ck_assert_uint_eq(m->covered, 16384);
	ck_assert_int_eq(m->shards[m->owner[slots_key_slot((const uint8_t *)"foo", 3)]].primary.port, 30003);
	ck_assert_int_eq(m->shards[m->owner[0]].primary.port, 30001);
	ck_assert_int_eq(m->shards[m->owner[5461]].nreplicas, 1);
	ck_assert_int_eq(m->shards[m->owner[5461]].replicas[0].port, 30005);
	ck_assert_str_eq(m->shards[0].primary.id, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	freeReplyObject(r);

	/* Hostile: overlapping ranges, a slot past 16383, a bad node, not an array. */
	static const char *const bad[][2] = {
		{"*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\nh\r\n:1\r\n*3\r\n:5\r\n:20\r\n*2\r\n$1\r\ni\r\n:2\r\n",
		 "two shards claim the same slot"},
		{"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", "out of 0..16383"},
		{"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:70000\r\n", "not [start, end"},
		{"+OK\r\n", "not an array"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = parse(bad[i][0]);
		ck_assert(!slots_from_cluster_slots(r, m, why, sizeof(why)));
		ck_assert_msg(strstr(why, bad[i][1]) != NULL, "%zu: %s", i, why);
		freeReplyObject(r);
	}
	free(m);
}
END_TEST

START_TEST(test_cluster_shards)
{
	/* Redis 7.0's CLUSTER SHARDS in RESP2: a shard is [slots, [ranges], nodes, [[field, value...]...]]. */
#define SHARD_NODE(id, port, role, health)                                                                   \
	"*14\r\n$2\r\nid\r\n$40\r\n" id "\r\n$4\r\nport\r\n:" port "\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"          \
	"$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$" role "\r\n$18\r\nreplication-offset\r\n:42\r\n"     \
	"$6\r\nhealth\r\n$" health "\r\n"
	static const char two[] =
		"*2\r\n"
		"*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:100\r\n:200\r\n:8191\r\n$5\r\nnodes\r\n*2\r\n"
		SHARD_NODE("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "30001", "6\r\nmaster", "6\r\nonline")
		SHARD_NODE("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "30004", "7\r\nreplica", "6\r\nonline")
		"*4\r\n$5\r\nslots\r\n*4\r\n:101\r\n:199\r\n:8192\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n"
		SHARD_NODE("cccccccccccccccccccccccccccccccccccccccc", "30002", "7\r\nreplica", "7\r\nloading")
		SHARD_NODE("dddddddddddddddddddddddddddddddddddddddd", "30005", "6\r\nmaster", "6\r\nonline");
	struct slots_map *m = malloc(sizeof(*m));
	char why[200];
	redisReply *r = parse(two);

	ck_assert_msg(slots_from_cluster_shards(r, m, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(m->nshards, 2);
	ck_assert_uint_eq(m->covered, 16384);
	ck_assert_int_eq(m->shards[m->owner[150]].primary.port, 30005);
	ck_assert_int_eq(m->shards[m->owner[150]].nreplicas, 0);  /* the loading replica does not count */
	ck_assert_int_eq(m->shards[m->owner[100]].primary.port, 30001);
	ck_assert_int_eq(m->shards[m->owner[100]].replicas[0].port, 30004);
	freeReplyObject(r);
	/* A shard whose only primary is not online: refused, not half taken. */
	static const char down[] =
		"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n"
		SHARD_NODE("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "30001", "6\r\nmaster", "4\r\nfail");
	r = parse(down);
	ck_assert(!slots_from_cluster_shards(r, m, why, sizeof(why)));
	ck_assert_msg(strstr(why, "no online primary") != NULL, "%s", why);
	freeReplyObject(r);
	free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("slots");
	TCase *tc = tcase_create("slots");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_key_slots);
	tcase_add_test(tc, test_cluster_slots);
	tcase_add_test(tc, test_cluster_shards);
	tcase_add_test(tc, test_membership);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
