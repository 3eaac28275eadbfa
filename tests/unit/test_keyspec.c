/* test_keyspec.c - Redis Cluster routing pieces: key positions from a real Redis 7.0 COMMAND reply
 * (tests/unit/data/redis7-command.resp, recorded from Debian's redis-server 7.0.15), the shards of
 * cluster.c, and the answers repoint gives itself in cluster mode. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "proto/keyspec.h"
#include "proto/proto.h"
#include "proto/slots.h"
#include "testdata.h"

static redisReply *parse_n(const char *resp, size_t n)
{
	redisReader *rd = redisReaderCreate();
	void *reply = NULL;

	ck_assert(rd != NULL);
	ck_assert_int_eq(redisReaderFeed(rd, resp, n), REDIS_OK);
	ck_assert_int_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
	redisReaderFree(rd);
	return reply;
}

static struct keyspec *real(void)
{
	size_t n;
	char *text = testdata_load("../redis7-command.resp", &n);
	redisReply *r = parse_n(text, n);
	char why[200];
	struct keyspec *ks;

	ck_assert(r != NULL);
	ks = keyspec_from_command(r, why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	freeReplyObject(r);
	free(text);
	return ks;
}

/* The slot of a command given as words. */
static int slot_of(const struct keyspec *ks, int argc, ...)
{
	char buf[4096];
	size_t off = (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", argc);
	va_list ap;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++) {
		const char *a = va_arg(ap, const char *);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "$%zu\r\n%s\r\n", strlen(a), a);
	}
	va_end(ap);
	return keyspec_slot(ks, (const uint8_t *)buf, off);
}

static int key(const char *k)
{
	return slots_key_slot((const uint8_t *)k, strlen(k));
}

START_TEST(test_real_command_reply)
{
	struct keyspec *ks = real();

	ck_assert_uint_gt(keyspec_count(ks), 200);
	ck_assert_int_eq(slot_of(ks, 2, "GET", "foo"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 3, "set", "foo", "v"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 3, "MGET", "{u}a", "{u}b"), key("u"));
	ck_assert_int_eq(slot_of(ks, 3, "MGET", "a", "b"), KEYSPEC_CROSSSLOT);
	ck_assert_int_eq(slot_of(ks, 5, "MSET", "{u}a", "1", "{u}b", "2"), key("u"));
	ck_assert_int_eq(slot_of(ks, 5, "MSET", "{u}a", "1", "b", "2"), KEYSPEC_CROSSSLOT);
	/* MSET's values are not keys: "b" as a value changes nothing */
	ck_assert_int_eq(slot_of(ks, 5, "MSET", "{u}a", "b", "{u}c", "d"), key("u"));
	ck_assert_int_eq(slot_of(ks, 3, "EVAL", "return 1", "0"), KEYSPEC_NOKEYS);
	ck_assert_int_eq(slot_of(ks, 4, "EVAL", "return 1", "1", "foo"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 6, "EVAL", "s", "2", "{x}1", "{x}2", "notakey"), key("x"));
	ck_assert_int_eq(slot_of(ks, 5, "EVAL", "s", "2", "a", "b"), KEYSPEC_CROSSSLOT);
	ck_assert_int_eq(slot_of(ks, 4, "EVAL", "s", "5", "a"), KEYSPEC_BAD);  /* more keys than arguments */
	ck_assert_int_eq(slot_of(ks, 5, "ZUNIONSTORE", "{z}d", "2", "{z}a", "{z}b"), key("z"));
	ck_assert_int_eq(slot_of(ks, 8, "XREAD", "COUNT", "1", "STREAMS", "{s}1", "{s}2", "0", "0"), key("s"));
	ck_assert_int_eq(slot_of(ks, 3, "OBJECT", "ENCODING", "foo"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 3, "object", "encoding", "foo"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 1, "PING"), KEYSPEC_NOKEYS);
	ck_assert_int_eq(slot_of(ks, 2, "NOSUCHCOMMAND", "foo"), KEYSPEC_UNKNOWN);
	ck_assert_int_eq(slot_of(ks, 3, "CONFIG", "GET", "maxmemory"), KEYSPEC_NOKEYS);
	/* malformed */
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)"*2\r\n$3\r\nGET\r\n", 13), KEYSPEC_BAD);
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)"GET foo\r\n", 9), KEYSPEC_BAD);
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)"*1\r\n$3\r\nGET\r\n+", 14), KEYSPEC_BAD);
	keyspec_free(ks);
}
END_TEST

START_TEST(test_hostile_command_replies)
{
	static const char *bad[] = {
		"-ERR unknown command\r\n", "*0\r\n", ":1\r\n",
		"*1\r\n*6\r\n:1\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n",                  /* a name that is no string */
		"*1\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n$1\r\n1\r\n:1\r\n:1\r\n",       /* first key no integer */
	};
	char why[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		redisReply *r = parse_n(bad[i], strlen(bad[i]));
		ck_assert_msg(keyspec_from_command(r, why, sizeof(why)) == NULL, "%zu taken", i);
		freeReplyObject(r);
	}
	/* A spec with a keystep of 0 or an absurd index: that entry skipped, the rest taken. */
	static const char some[] =
		"*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n"
		"*10\r\n$4\r\nmget\r\n:-2\r\n*0\r\n:1\r\n:-1\r\n:1\r\n*0\r\n*0\r\n"
		"*1\r\n*6\r\n$5\r\nflags\r\n*0\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n"
		"$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:0\r\n$5\r\nlimit\r\n:0\r\n"
		"*0\r\n";
	redisReply *r = parse_n(some, sizeof(some) - 1);
	struct keyspec *ks = keyspec_from_command(r, why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 1);
	ck_assert_uint_eq(keyspec_skipped(ks), 1);
	ck_assert_int_eq(slot_of(ks, 2, "get", "foo"), key("foo"));
	ck_assert_int_eq(slot_of(ks, 3, "mget", "a", "b"), KEYSPEC_UNKNOWN);
	keyspec_free(ks);
	freeReplyObject(r);
}
END_TEST

static int reacted;
static void count_react(void *arg, int shard, unsigned ev, int member)
{
	(void)arg;
	(void)shard;
	(void)member;
	if (ev != 0)
		reacted++;
}

static void observe(struct cluster *c, int member, enum role role, int64_t now)
{
	struct topo_observation o = {.member = member, .ok = true, .role = role, .now_ms = now};
	topo_observe(cluster_topo_of(c, member), &o);
}

START_TEST(test_shards_keep_identity)
{
	struct cluster c;
	int16_t owner[SLOTS_COUNT];
	int map[4] = {-1, -1, -1, -1}, in_shard[4] = {0, 0, 1, 1};
	bool oom;

	cluster_init(&c, 1);
	ck_assert(cluster_remap(&c, 4, map, 0, count_react, NULL));
	for (int s = 0; s < SLOTS_COUNT; s++)
		owner[s] = s < 8192 ? 0 : 1;
	ck_assert(cluster_apply(&c, 2, in_shard, owner, 1, count_react, NULL, &oom));
	ck_assert_int_eq(c.nshards, 2);
	ck_assert_str_eq(c.shards[0].ranges, "0-8191");
	ck_assert_int_eq(cluster_slot_writer(&c, 5), -1);
	observe(&c, 0, ROLE_WRITER, 2);
	observe(&c, 1, ROLE_READER, 2);
	observe(&c, 2, ROLE_WRITER, 2);
	observe(&c, 3, ROLE_READER, 2);
	/* Two writers, but in two shards: no conflict, each its shard's primary. */
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 0);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	ck_assert(cluster_ready(&c));
	ck_assert(!c.shards[0].topo.conflict && !c.shards[1].topo.conflict);
	/* The next map lists the shards the other way round, with slots moved: same shards, same primaries. */
	int swapped[4] = {1, 1, 0, 0};
	for (int s = 0; s < SLOTS_COUNT; s++)
		owner[s] = s < 100 ? 1 : 0;
	ck_assert(cluster_apply(&c, 2, swapped, owner, 3, count_react, NULL, &oom));
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 0);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	ck_assert_int_eq(cluster_slot_writer(&c, 150), 2);
	/* A switchover in shard of member 0: its replica, member 1, takes over; shard 2's untouched. */
	observe(&c, 0, ROLE_READER, 4);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), -1);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	observe(&c, 1, ROLE_WRITER, 5);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 1);
	/* The same map again changes nothing. */
	ck_assert(!cluster_apply(&c, 2, swapped, owner, 6, count_react, NULL, &oom));
	cluster_free(&c);
}
END_TEST

START_TEST(test_local_answers)
{
	struct evbuffer *out = evbuffer_new();
	struct resp_cluster_self self = {.host = "127.0.0.1", .port = 6379};
	static const char slots[] = "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
	static const char dbsize[] = "*1\r\n$6\r\nDBSIZE\r\n";
	static const char ro[] = "*1\r\n$8\r\nreadonly\r\n";

	resp_cluster_answer((const uint8_t *)slots, sizeof(slots) - 1, &self, out);
	redisReply *r = parse_n((const char *)evbuffer_pullup(out, -1), evbuffer_get_length(out));
	ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
	ck_assert_int_eq(r->elements, 1);
	ck_assert_int_eq(r->element[0]->element[1]->integer, 16383);
	ck_assert_str_eq(r->element[0]->element[2]->element[0]->str, "127.0.0.1");
	ck_assert_int_eq(r->element[0]->element[2]->element[1]->integer, 6379);
	freeReplyObject(r);
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_answer((const uint8_t *)dbsize, sizeof(dbsize) - 1, &self, out);
	ck_assert(evbuffer_get_length(out) > 0 && *evbuffer_pullup(out, 1) == '-');
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_answer((const uint8_t *)ro, sizeof(ro) - 1, &self, out);
	ck_assert_int_eq(evbuffer_get_length(out), 5);
	ck_assert(!resp_cluster_keyless_ok((const uint8_t *)dbsize, sizeof(dbsize) - 1));
	ck_assert(resp_cluster_keyless_ok((const uint8_t *)"*1\r\n$4\r\nPING\r\n", 14));
	evbuffer_free(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("keyspec");
	TCase *tc = tcase_create("all");

	tcase_add_test(tc, test_real_command_reply);
	tcase_add_test(tc, test_hostile_command_replies);
	tcase_add_test(tc, test_shards_keep_identity);
	tcase_add_test(tc, test_local_answers);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
