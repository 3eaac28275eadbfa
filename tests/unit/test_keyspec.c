/* test_keyspec.c - Redis Cluster routing pieces: key positions from a real Redis 7.0 COMMAND reply
 * (tests/unit/data/redis7-command.resp, recorded from Debian 12's redis-server 7.0.15), checked against
 * what that server's COMMAND GETKEYS found in the same commands (redis7-getkeys.tsv, redis7-record.py)
 * and by hand, malformed commands and hostile COMMAND replies; the shards of cluster.c, and the
 * answers repoint gives itself in cluster mode. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "proto/keyspec.h"
#include "proto/proto.h"
#include "proto/slots.h"
#include "sources/engine.h"
#include "testdata.h"

/* One reply, through the probes' reader (its caps: the reader repoint asks COMMAND with). */
static redisReply *parse_n(const char *resp, size_t n)
{
	redisReader *rd = engine_rd_reader_new();
	void *reply = NULL;

	ck_assert(rd != NULL);
	ck_assert_int_eq(redisReaderFeed(rd, resp, n), REDIS_OK);
	ck_assert_int_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
	ck_assert(reply != NULL);
	engine_rd_reader_free(rd);
	return reply;
}

static struct keyspec *real(void)
{
	size_t n;
	char *text = testdata_load("../redis7-command.resp", &n);
	redisReply *r = parse_n(text, n);
	char why[200];
	struct keyspec *ks = keyspec_from_command(r, why, sizeof(why));

	ck_assert_msg(ks != NULL, "%s", why);
	freeReplyObject(r);
	free(text);
	return ks;
}

/* A command as RESP, from its words ("<empty>" for ""). */
static size_t request(char *buf, size_t cap, int argc, const char *const *argv)
{
	size_t off = (size_t)snprintf(buf, cap, "*%d\r\n", argc);

	for (int i = 0; i < argc; i++) {
		const char *a = strcmp(argv[i], "<empty>") == 0 ? "" : argv[i];
		off += (size_t)snprintf(buf + off, cap - off, "$%zu\r\n%s\r\n", strlen(a), a);
		ck_assert_uint_lt(off, cap);
	}
	return off;
}

/* The slot of a command given as one string of space-separated words. */
static int slot_of(const struct keyspec *ks, const char *words)
{
	char copy[512], buf[2048], *save, *w;
	const char *argv[64];
	int argc = 0;

	snprintf(copy, sizeof(copy), "%s", words);
	for (w = strtok_r(copy, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	return keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), argc, argv));
}

static int key(const char *k)
{
	return slots_key_slot((const uint8_t *)k, strlen(k));
}

#define SLOT(ks, words, want) ck_assert_msg(slot_of(ks, words) == (want), "%s: %d, want %d", words, slot_of(ks, words), want)

START_TEST(test_real_reply)
{
	struct keyspec *ks = real();

	/* 240 commands, 126 subcommands; every entry read. */
	ck_assert_uint_eq(keyspec_count(ks), 366);
	ck_assert_uint_eq(keyspec_skipped(ks), 0);

	SLOT(ks, "GET foo", key("foo"));
	SLOT(ks, "get foo", key("foo"));
	SLOT(ks, "gEt foo", key("foo"));
	SLOT(ks, "SET foo v", key("foo"));
	SLOT(ks, "SET {user1}.a v", key("user1"));
	SLOT(ks, "DEL {user1}.a {user1}.b", key("user1"));
	SLOT(ks, "DEL a b", KEYSPEC_CROSSSLOT);
	SLOT(ks, "MGET {user1}.a {user1}.b", key("user1"));
	SLOT(ks, "MGET foo bar", KEYSPEC_CROSSSLOT);
	SLOT(ks, "MSET {u}a 1 {u}b 2", key("u"));
	SLOT(ks, "MSET {u}a 1 b 2", KEYSPEC_CROSSSLOT);
	SLOT(ks, "MSET {u}a b {u}c d", key("u"));        /* values are no keys (step 2) */
	/* EVAL: numkeys (keynum). */
	SLOT(ks, "EVAL s 0", KEYSPEC_NOKEYS);
	SLOT(ks, "EVAL s 0 notakey", KEYSPEC_NOKEYS);
	SLOT(ks, "EVAL s 1 foo", key("foo"));
	SLOT(ks, "EVAL s 2 {x}1 {x}2 notakey", key("x"));
	SLOT(ks, "EVAL s 2 a b", KEYSPEC_CROSSSLOT);
	SLOT(ks, "evalsha abc 1 foo", key("foo"));
	SLOT(ks, "FCALL f 1 foo arg", key("foo"));
	/* ZUNIONSTORE dest numkeys k...: an index spec and a keynum one. */
	SLOT(ks, "ZUNIONSTORE {z}d 2 {z}a {z}b", key("z"));
	SLOT(ks, "ZUNIONSTORE {z}d 2 {z}a b", KEYSPEC_CROSSSLOT);
	SLOT(ks, "ZUNIONSTORE d 2 {z}a {z}b WEIGHTS 1 2", KEYSPEC_CROSSSLOT);
	/* XREAD ... STREAMS: a keyword, then the first half of what follows. */
	SLOT(ks, "XREAD COUNT 1 STREAMS {s}1 {s}2 0 0", key("s"));
	SLOT(ks, "XREAD COUNT 1 STREAMS s1 s2 0 0", KEYSPEC_CROSSSLOT);
	SLOT(ks, "XREAD COUNT 1 STREAMS s1 0", key("s1"));
	SLOT(ks, "xread streams s1 $", key("s1"));
	SLOT(ks, "XREAD COUNT 1 STREAMS s1 s2 0", key("s1"));   /* unbalanced: the first half, as Redis counts it */
	SLOT(ks, "XREAD COUNT 1 STREAMS s1", KEYSPEC_BAD);
	SLOT(ks, "XREAD COUNT 1", KEYSPEC_NOKEYS);              /* no STREAMS: the server says what is wrong */
	SLOT(ks, "XREADGROUP GROUP g c COUNT 1 STREAMS {s}1 {s}2 > >", key("s"));
	SLOT(ks, "LMPOP 2 {l}a {l}b LEFT", key("l"));
	SLOT(ks, "BLMPOP 0 2 {l}a {l}b LEFT COUNT 2", key("l"));
	SLOT(ks, "GEORADIUS {g}k 0 0 1 km STORE {g}d", key("g"));
	SLOT(ks, "GEORADIUS {g}k 0 0 1 km STORE d", KEYSPEC_CROSSSLOT);
	SLOT(ks, "BITOP AND {b}d {b}a {b}c", key("b"));
	SLOT(ks, "SMOVE a b m", KEYSPEC_CROSSSLOT);
	/* Containers: looked up with their subcommand. */
	SLOT(ks, "OBJECT ENCODING foo", key("foo"));
	SLOT(ks, "object encoding foo", key("foo"));
	SLOT(ks, "XINFO STREAM foo", key("foo"));
	SLOT(ks, "MEMORY USAGE foo SAMPLES 5", key("foo"));
	SLOT(ks, "CLIENT LIST", KEYSPEC_NOKEYS);
	SLOT(ks, "CONFIG GET maxmemory", KEYSPEC_NOKEYS);
	SLOT(ks, "OBJECT", KEYSPEC_NOKEYS);
	SLOT(ks, "OBJECT NOSUCH foo", KEYSPEC_UNKNOWN);
	SLOT(ks, "PING", KEYSPEC_NOKEYS);
	SLOT(ks, "NOSUCHCOMMAND foo", KEYSPEC_UNKNOWN);
	SLOT(ks, "GET|x foo", KEYSPEC_UNKNOWN);
	/* SORT's BY/GET/STORE are specs Redis cannot apply: the legacy first key (the member checks STORE's). */
	SLOT(ks, "SORT foo BY x STORE d", key("foo"));
	SLOT(ks, "SORT_RO foo", key("foo"));
	/* MIGRATE: legacy too -- the key argument (argument 3). */
	SLOT(ks, "MIGRATE h 6379 foo 0 1000", key("foo"));
	/* Sharded Pub/Sub: the channels are "not_key" specs, routed by slot as the cluster does. */
	SLOT(ks, "SPUBLISH ch msg", key("ch"));
	SLOT(ks, "SSUBSCRIBE {c}a {c}b", key("c"));
	SLOT(ks, "SSUBSCRIBE a b", KEYSPEC_CROSSSLOT);
	SLOT(ks, "SUNSUBSCRIBE", KEYSPEC_NOKEYS);
	/* Arguments that contradict the spec. */
	SLOT(ks, "GET", KEYSPEC_BAD);
	SLOT(ks, "DEL", KEYSPEC_NOKEYS);                /* an empty "to the end" range */
	SLOT(ks, "EVAL s", KEYSPEC_BAD);
	SLOT(ks, "EVAL s 5 a", KEYSPEC_BAD);           /* more keys than arguments */
	SLOT(ks, "EVAL s 99999999999999999999 a", KEYSPEC_BAD);
	SLOT(ks, "EVAL s x a", KEYSPEC_BAD);
	SLOT(ks, "EVAL s -1 a", KEYSPEC_BAD);
	SLOT(ks, "EVAL s 01 a", KEYSPEC_BAD);          /* as EVAL reads it: no leading zero */
	SLOT(ks, "LCS a", KEYSPEC_BAD);
	keyspec_free(ks);
}
END_TEST

/* Commands with more arguments than keyspec.c keeps places of: walked to. */
START_TEST(test_long_commands)
{
	struct keyspec *ks = real();
	static char buf[1 << 16];
	const char *argv[1100];
	static char words[1100][16];
	int n;

	/* MSET with 500 pairs: every other argument a key, all tagged {t}; then one key moved. */
	argv[0] = "MSET";
	for (n = 1; n < 1001; n++) {
		snprintf(words[n], sizeof(words[n]), n % 2 ? "{t}%d" : "v%d", n);
		argv[n] = words[n];
	}
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("t"));
	argv[999] = "elsewhere";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_CROSSSLOT);
	argv[1000] = "elsewhere";  /* a value: not a key */
	argv[999] = "{t}x";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("t"));

	/* XREAD STREAMS with 60 streams and their ids: the streams are arguments 3..62. */
	argv[0] = "XREAD";
	argv[1] = "STREAMS";
	for (n = 2; n < 62; n++) {
		snprintf(words[n], sizeof(words[n]), "{x}%d", n);
		argv[n] = words[n];
	}
	for (; n < 122; n++)
		argv[n] = "0";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("x"));
	argv[121] = "notakey-an-id";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("x"));
	argv[61] = "other";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_CROSSSLOT);

	/* EVAL with 40 keys and 40 arguments. */
	argv[0] = "EVAL";
	argv[1] = "return 1";
	argv[2] = "40";
	for (n = 3; n < 83; n++) {
		snprintf(words[n], sizeof(words[n]), n < 43 ? "{e}%d" : "arg%d", n);
		argv[n] = words[n];
	}
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("e"));
	argv[42] = "last-key";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_CROSSSLOT);
	argv[42] = "{e}";
	argv[2] = "81";  /* past the end */
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_BAD);

	/* GEORADIUS with 40 options, then STORE: three specs, two keyword searches over the whole command. */
	const char *geo[] = {"GEORADIUS", "{g}k", "0", "0", "1", "km"};
	memcpy(argv, geo, sizeof(geo));
	for (n = 6; n < 46; n++)
		argv[n] = "WITHDIST";
	argv[n++] = "STORE";
	argv[n++] = "{g}d";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("g"));
	argv[n - 1] = "d";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_CROSSSLOT);
	argv[n - 2] = "STOREDIST";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), KEYSPEC_CROSSSLOT);
	argv[n - 1] = "{g}d";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), n, argv)), key("g"));

	/* A name longer than any the table holds. */
	char longname[300];
	memset(longname, 'g', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	argv[0] = longname;
	argv[1] = "foo";
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), 2, argv)), KEYSPEC_UNKNOWN);
	argv[0] = "OBJECT";
	argv[1] = longname;
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), 2, argv)), KEYSPEC_UNKNOWN);
	keyspec_free(ks);
}
END_TEST

/* What the server itself found in 1,500-odd commands (COMMAND GETKEYS), as redis7-record.py wrote it. */
START_TEST(test_server_getkeys)
{
	struct keyspec *ks = real();
	char *text = testdata_load("../redis7-getkeys.tsv", NULL), *save, *line;
	static char buf[1 << 14];
	int lines = 0;

	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		const char *argv[64];
		char *s2, *w, *want = strtok_r(line, "\t", &s2);
		int argc = 0, got;
		while ((w = strtok_r(NULL, "\t", &s2)) != NULL && argc < 64)
			argv[argc++] = w;
		got = keyspec_slot(ks, (const uint8_t *)buf, request(buf, sizeof(buf), argc, argv));
		if (strcmp(want, "cross") == 0)
			ck_assert_msg(got == KEYSPEC_CROSSSLOT, "line %d (%s): %d", lines + 1, argv[0], got);
		else if (strcmp(want, "nokeys") == 0)
			ck_assert_msg(got == KEYSPEC_NOKEYS, "line %d (%s): %d", lines + 1, argv[0], got);
		else if (strcmp(want, "none") == 0)
			/* [] is also EVAL's answer for a numkeys EVAL itself refuses ("x", "-1", too many) */
			ck_assert_msg(got == KEYSPEC_NOKEYS || got == KEYSPEC_BAD, "line %d (%s): %d", lines + 1, argv[0], got);
		else if (strcmp(want, "invalid") == 0)
			ck_assert_msg(got != KEYSPEC_UNKNOWN && got != KEYSPEC_CROSSSLOT, "line %d (%s): %d", lines + 1, argv[0], got);
		else
			ck_assert_msg(got == atoi(want), "line %d (%s): %d, want %s", lines + 1, argv[0], got, want);
		lines++;
	}
	ck_assert_int_gt(lines, 1500);
	free(text);
	keyspec_free(ks);
}
END_TEST

START_TEST(test_malformed_requests)
{
	struct keyspec *ks = real();
	static const char *const bad[] = {
		"",
		"*",
		"*2\r\n$3\r\nGET\r\n",                          /* an argument short */
		"*2\r\n$3\r\nGET\r\n$3\r\nfo",                 /* cut in an argument */
		"*1\r\n$3\r\nGET\r\n+",                        /* more after it */
		"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1\r\n$4\r\nPING\r\n",  /* two commands */
		"GET foo\r\n",                                 /* inline */
		"*0\r\n",
		"*-1\r\n",
		"*2\r\n$3\r\nGET\r\n$-1\r\n",
		"*2\r\n$3\r\nGET\r\n$4\r\nfoo\r\n",            /* a length that lies */
		"*2\r\n$3\r\nGET\r\n$3\r\nfooXY",              /* no CRLF after it */
		"*2\r\n$3\r\nGET\r\n:3\r\n",
		"*99999999999999999999\r\n$3\r\nGET\r\n",
		"*2\r\n$3\r\nGET\r\n$99999999999999999999\r\nfoo\r\n",
		"*2\r\n$ 3\r\nGET\r\n$3\r\nfoo\r\n",
		"*2\n$3\nGET\n$3\nfoo\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* An exact-size copy: a read past the end is ASan's. */
		size_t n = strlen(bad[i]);
		uint8_t *p = malloc(n > 0 ? n : 1);
		memcpy(p, bad[i], n);
		ck_assert_msg(keyspec_slot(ks, p, n) == KEYSPEC_BAD, "%zu: %d", i, keyspec_slot(ks, p, n));
		free(p);
	}
	/* Every cut of a good command is BAD; the whole of it is its slot. */
	static const char good[] = "*3\r\n$6\r\nOBJECT\r\n$8\r\nENCODING\r\n$3\r\nfoo\r\n";
	for (size_t n = 0; n < sizeof(good) - 1; n++) {
		uint8_t *p = malloc(n > 0 ? n : 1);
		memcpy(p, good, n);
		ck_assert_int_eq(keyspec_slot(ks, p, n), KEYSPEC_BAD);
		free(p);
	}
	ck_assert_int_eq(keyspec_slot(ks, (const uint8_t *)good, sizeof(good) - 1), key("foo"));
	/* Binary keys and names: bytes, not C strings. */
	static const uint8_t bin[] = "*2\r\n$3\r\nGET\r\n$3\r\n\0{\xff\r\n";
	ck_assert_int_eq(keyspec_slot(ks, bin, sizeof(bin) - 1), slots_key_slot((const uint8_t *)"\0{\xff", 3));
	static const uint8_t nul[] = "*2\r\n$4\r\nGET\0\r\n$3\r\nfoo\r\n";
	ck_assert_int_eq(keyspec_slot(ks, nul, sizeof(nul) - 1), KEYSPEC_UNKNOWN);
	ck_assert_int_eq(keyspec_slot(NULL, (const uint8_t *)good, sizeof(good) - 1), KEYSPEC_UNKNOWN);
	keyspec_free(ks);
}
END_TEST

/* ---- hostile replies, written compactly: [ ] an array, :N an integer, +w a status, -w an error,
 * _ nil, "a b" a string with spaces ("" the empty one), any other word a string. ---- */

static size_t compact(const char **s, char *out, size_t off, size_t cap)
{
	while (**s == ' ')
		(*s)++;
	if (**s == '[') {
		char *count = out + off;
		size_t n = 0, at;
		(*s)++;
		off += (size_t)snprintf(out + off, cap - off, "*%-10s", "");  /* patched below */
		for (;;) {
			while (**s == ' ')
				(*s)++;
			if (**s == ']') {
				(*s)++;
				break;
			}
			off = compact(s, out, off, cap);
			n++;
		}
		/* "*<n>" and spaces would not be RESP: rewrite it in place, the rest moved up. */
		char head[16];
		int hl = snprintf(head, sizeof(head), "*%zu\r\n", n);
		at = (size_t)(count - out);
		memmove(out + at + (size_t)hl, out + at + 11, off - at - 11);
		memcpy(out + at, head, (size_t)hl);
		return off - 11 + (size_t)hl;
	}
	const char *w = *s;
	size_t len;
	bool quoted = *w == '"';
	if (quoted) {  /* "a quoted string", spaces and all */
		w++;
		len = strcspn(w, "\"");
		*s = w + len + (w[len] == '"');
	} else {
		len = strcspn(w, " []");
		*s += len;
	}
	ck_assert_uint_lt(off + len + 32, cap);
	if (!quoted && (w[0] == ':' || w[0] == '+' || w[0] == '-'))
		return off + (size_t)snprintf(out + off, cap - off, "%.*s\r\n", (int)len, w);
	if (!quoted && len == 1 && w[0] == '_')
		return off + (size_t)snprintf(out + off, cap - off, "$-1\r\n");
	return off + (size_t)snprintf(out + off, cap - off, "$%zu\r\n%.*s\r\n", len, (int)len, w);
}

static redisReply *reply(const char *text)
{
	static char buf[1 << 14];
	size_t n = compact(&text, buf, 0, sizeof(buf));

	return parse_n(buf, n);
}

static struct keyspec *from(const char *text, char *why, size_t whylen)
{
	redisReply *r = reply(text);
	struct keyspec *ks = keyspec_from_command(r, why, whylen);

	freeReplyObject(r);
	return ks;
}

/* Key specs as Redis 7 writes them. */
#define RANGE(idx, last, step, limit) \
	"[flags [+RW] begin_search [type index spec [index :" #idx "]] find_keys [type range spec [lastkey :" #last \
	" keystep :" #step " limit :" #limit "]]]"
#define GOOD_GET "[get :2 [+readonly] :1 :1 :1 [] [] [" RANGE(1, 0, 1, 0) "] []]"

START_TEST(test_hostile_replies)
{
	char why[200];
	struct keyspec *ks;

	/* Not COMMAND replies at all. */
	static const char *const refused[] = {
		"-ERR unknown command", ":1", "_", "+OK", "[]", "[:1 :2]", "[[]]",
		"[[get :2 [] :1 :1]]",                             /* too short */
		"[[:1 :2 [] :1 :1 :1]]",                           /* a name that is no string */
		"[[get :2 [] 1 :1 :1]]",                           /* first key no integer */
		"[[\"\" :2 [] :1 :1 :1]]",                         /* an empty name */
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		memset(why, 'x', sizeof(why));
		ck_assert_msg(from(refused[i], why, sizeof(why)) == NULL, "%s taken", refused[i]);
		ck_assert(memchr(why, '\0', sizeof(why)) != NULL && strncmp(why, "COMMAND: ", 9) == 0);
	}

	/* Entries that cannot be read are skipped whole; GET beside each still works. */
	static const char *const skipped[] = {
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(1, -1, 0, 0) "] []]",          /* keystep 0 */
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(0, -1, 1, 0) "] []]",          /* index 0: the name */
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(1, -2, 1, 2) "] []]",          /* a limit with lastkey -2 */
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(1, 99999999999, 1, 0) "] []]", /* a huge lastkey */
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(1, -1, 1, -1) "] []]",         /* a negative limit */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags [+RW] begin_search [type index spec [index x]] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",          /* a string for an integer */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags [+RW] begin_search [type index] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",          /* a search without its spec */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags [+RW] begin_search [type index spec [index :1]]]] []]", /* no find */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags +RW begin_search [type index spec [index :1]] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",          /* flags not an array */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags [:1] begin_search [type index spec [index :1]] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",          /* a flag not a string */
		"[mget :-2 [] :1 :-1 :1 [] [] [[flags [] begin_search [type index spec [index :1]] find_keys]] []]",
		"[mget :-2 [] :1 :-1 :1 [] [] [[begin_search [type keyword spec [keyword :1 startfrom :1]] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",          /* a keyword not a string */
		"[mget :-2 [] :1 :-1 :1 [] [] [[begin_search [type keyword spec [keyword "
		"AVERYLONGKEYWORDTHATNOCOMMANDHASANDNEVERWILL startfrom :1]] find_keys "
		"[type range spec [lastkey :0 keystep :1 limit :0]]]] []]",
		"[mget :-2 [] :1 :-1 :1 [] [] [[begin_search [type index spec [index :1]] find_keys "
		"[type keynum spec [keynumidx :0 firstkey :1 keystep :0]]]] []]",    /* keynum's keystep 0 */
		"[mget :-2 [] :1 :-1 :1 [] [] [[begin_search [type index spec [index :1]] find_keys "
		"[type keynum spec [keynumidx :-1 firstkey :1 keystep :1]]]] []]",
		"[mget :-2 [] :1 :-1 :1 [] [] " RANGE(1, -1, 1, 0) " []]",           /* key_specs: one spec, unwrapped */
		"[mget :-2 [] :1 :-1 :1 [] [] +x []]",                                 /* key_specs not an array */
		"[mget :-2 [] :1 :-1 :1 [] [] [] +x]",                                 /* subcommands not an array */
		"[mget :-2 [] :-1 :-1 :1 [] [] [] []]",                                /* a negative first key */
		"[mget :-2 [] :1 :-1 :-1 [] [] [] []]",                                /* a negative step */
		"[mget :-2 [] :4294967297 :-1 :1 [] [] [] []]",
		"[mget :-2 +x :1 :-1 :1 [] [] [] []]",                                 /* flags not an array */
		"[mget x [] :1 :-1 :1 [] [] [] []]",                                   /* arity not an integer */
		"[\"m get\" :-2 [] :1 :-1 :1 [] [] [] []]",                            /* a space in the name */
		"[m|get :-2 [] :1 :-1 :1 [] [] [] []]",                                /* a '|' in a command's name */
		"[mget_with_a_name_longer_than_any_command_redis_has_or_will_have_at_all :-2 [] :1 :-1 :1 [] [] [] []]",
		"[mget :-2 [] :1 :-1 :1 [] [] [" RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0)
		RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0) RANGE(1, -1, 1, 0)
		RANGE(1, -1, 1, 0) "] []]",                                             /* nine specs */
		"_",
		":7",
	};
	for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++) {
		char text[4096];
		snprintf(text, sizeof(text), "[%s %s]", GOOD_GET, skipped[i]);
		ks = from(text, why, sizeof(why));
		ck_assert_msg(ks != NULL, "%zu: %s", i, why);
		ck_assert_msg(keyspec_count(ks) == 1 && keyspec_skipped(ks) == 1, "%zu: %zu taken, %zu skipped", i,
			      keyspec_count(ks), keyspec_skipped(ks));
		SLOT(ks, "GET foo", key("foo"));
		SLOT(ks, "MGET a b", KEYSPEC_UNKNOWN);
		SLOT(ks, "M|GET a b", KEYSPEC_UNKNOWN);
		keyspec_free(ks);
	}

	/* Subcommands: named after their container, one level deep; a bad one skipped alone. */
	ks = from("[[object :-2 [] :0 :0 :0 [] [] [] ["
		  "[object|encoding :3 [] :2 :2 :1 [] [] [" RANGE(2, 0, 1, 0) "] []]"
		  "[encoding :3 [] :2 :2 :1 [] [] [" RANGE(2, 0, 1, 0) "] []]"             /* no container name */
		  "[xinfo|stream :3 [] :2 :2 :1 [] [] [" RANGE(2, 0, 1, 0) "] []]"         /* another's */
		  "[object| :3 [] :2 :2 :1 [] [] [] []]"                                   /* empty */
		  "[object|a|b :3 [] :2 :2 :1 [] [] [] []]"
		  "[object|freq :3 [] :2 :2 :1 [] [] [" RANGE(2, 0, 1, 0) "] [[object|freq|x :3 [] :0 :0 :0 [] [] [] []]]]"
		  "]]]",
		  why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 2);
	ck_assert_uint_eq(keyspec_skipped(ks), 5);
	SLOT(ks, "OBJECT ENCODING foo", key("foo"));
	SLOT(ks, "OBJECT FREQ foo", KEYSPEC_UNKNOWN);
	SLOT(ks, "OBJECT", KEYSPEC_NOKEYS);
	keyspec_free(ks);

	/* A container whose own entry is bad is skipped with its subcommands. */
	ks = from("[" GOOD_GET "[object x [] :0 :0 :0 [] [] [] [[object|encoding :3 [] :2 :2 :1 [] [] [] []]]]]", why,
		  sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 1);
	SLOT(ks, "OBJECT ENCODING foo", KEYSPEC_UNKNOWN);
	keyspec_free(ks);

	/* The first entry of a name stands; the second is counted out. */
	ks = from("[" GOOD_GET "[GET :2 [] :0 :0 :0 [] [] [] []]]", why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 1);
	ck_assert_uint_eq(keyspec_skipped(ks), 1);
	SLOT(ks, "GET foo", key("foo"));
	keyspec_free(ks);

	/* Specs Redis cannot apply: the legacy positions when there are some, else UNKNOWN; entries
	 * without key specs (6.x): the legacy positions, NOKEYS without, UNKNOWN when movablekeys. */
	ks = from("[" GOOD_GET
		  "[sortish :-2 [] :1 :1 :1 [] [] [" RANGE(1, 0, 1, 0)
		  "[begin_search [type unknown spec []] find_keys [type unknown spec []]]] []]"
		  "[nolegacy :-2 [] :0 :0 :0 [] [] [" RANGE(1, 0, 1, 0)
		  "[begin_search [type unknown spec []] find_keys [type unknown spec []]]] []]"
		  "[partial :-2 [] :2 :2 :1 [] [] [[flags [+RW +INCOMPLETE] begin_search [type index spec [index :1]] "
		  "find_keys [type range spec [lastkey :-1 keystep :1 limit :0]]]] []]"
		  "[newer :-2 [] :0 :0 :0 [] [] [[begin_search [type index spec [index :1]] find_keys [type regex spec []]]] []]"
		  "[redis6mget :-2 [+readonly] :1 :-1 :1 [@read]]"
		  "[redis6ping :-1 [+fast] :0 :0 :0 [@connection]]"
		  "[redis6eval :-3 [+noscript +movablekeys] :0 :0 :0 [@scripting]]"
		  "]",
		  why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 8);
	SLOT(ks, "SORTISH foo BY bar STORE baz", key("foo"));
	SLOT(ks, "NOLEGACY foo", KEYSPEC_UNKNOWN);
	SLOT(ks, "PARTIAL a {x}b", key("x"));
	SLOT(ks, "NEWER foo", KEYSPEC_UNKNOWN);
	SLOT(ks, "REDIS6MGET {r}a {r}b", key("r"));
	SLOT(ks, "REDIS6MGET a b", KEYSPEC_CROSSSLOT);
	SLOT(ks, "REDIS6MGET", KEYSPEC_NOKEYS);
	SLOT(ks, "REDIS6PING", KEYSPEC_NOKEYS);
	SLOT(ks, "REDIS6EVAL s 1 foo", KEYSPEC_UNKNOWN);
	keyspec_free(ks);

	/* At most 8192 entries are taken. */
	size_t cap = 1u << 20, off;
	char *big = malloc(cap);
	off = (size_t)snprintf(big, cap, "*8200\r\n");
	for (int i = 0; i < 8200; i++)
		off += (size_t)snprintf(big + off, cap - off, "*6\r\n$6\r\nc%05d\r\n:1\r\n*0\r\n:0\r\n:0\r\n:0\r\n", i);
	redisReply *r = parse_n(big, off);
	ks = keyspec_from_command(r, why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	ck_assert_uint_eq(keyspec_count(ks), 8192);
	ck_assert_uint_eq(keyspec_skipped(ks), 8);
	SLOT(ks, "C08191 x", KEYSPEC_NOKEYS);
	SLOT(ks, "C08192 x", KEYSPEC_UNKNOWN);
	keyspec_free(ks);
	freeReplyObject(r);
	free(big);

	/* Keyword specs: from startfrom forwards, or backwards from the end; 0 finds nothing. */
	ks = from("[[fwd :-2 [] :0 :0 :0 [] [] [[begin_search [type keyword spec [keyword K startfrom :2]] "
		  "find_keys [type range spec [lastkey :0 keystep :1 limit :0]]]] []]"
		  "[back :-2 [] :0 :0 :0 [] [] [[begin_search [type keyword spec [keyword K startfrom :-2]] "
		  "find_keys [type range spec [lastkey :-1 keystep :1 limit :0]]]] []]"
		  "[zero :-2 [] :0 :0 :0 [] [] [[begin_search [type keyword spec [keyword K startfrom :0]] "
		  "find_keys [type range spec [lastkey :0 keystep :1 limit :0]]]] []]"
		  "[steps :-2 [] :0 :0 :0 [] [] [[begin_search [type index spec [index :1]] "
		  "find_keys [type keynum spec [keynumidx :0 firstkey :2 keystep :2]]]] []]]",
		  why, sizeof(why));
	ck_assert_msg(ks != NULL, "%s", why);
	SLOT(ks, "FWD k a", KEYSPEC_NOKEYS);               /* before startfrom */
	SLOT(ks, "FWD x K a K b", key("a"));               /* the first from 2 on */
	SLOT(ks, "FWD x y K", KEYSPEC_NOKEYS);             /* the last argument is never the keyword */
	SLOT(ks, "BACK x K a K {t}b {t}c", key("t"));      /* the last one from argc-2 back */
	SLOT(ks, "BACK K a", KEYSPEC_NOKEYS);              /* argument 1 is never the keyword */
	SLOT(ks, "BACK x y K a", key("a"));
	SLOT(ks, "ZERO K a", KEYSPEC_NOKEYS);
	SLOT(ks, "STEPS 2 x {s}a v {s}b v", key("s"));
	SLOT(ks, "STEPS 2 x {s}a v b v", KEYSPEC_CROSSSLOT);
	SLOT(ks, "STEPS 2 x {s}a v", KEYSPEC_BAD);
	keyspec_free(ks);
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
	int k0 = c.member_shard[0], k2 = c.member_shard[2];
	ck_assert(cluster_apply(&c, 2, swapped, owner, 3, count_react, NULL, &oom));
	/* ... and each keeps its number, whatever its place in the reply */
	ck_assert_int_eq(c.member_shard[0], k0);
	ck_assert_int_eq(c.member_shard[2], k2);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 0);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	ck_assert_int_eq(cluster_slot_writer(&c, 150), 2);
	/* A switchover in shard of member 0: its replica, member 1, takes over; shard 2's untouched. */
	observe(&c, 0, ROLE_READER, 4);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), -1);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	observe(&c, 1, ROLE_WRITER, 5);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 1);
	/* A MOVED during a resharding: one slot to the other shard, ranges follow. */
	cluster_move_slot(&c, 5, c.member_shard[2]);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), 2);
	ck_assert_int_eq(cluster_slot_writer(&c, 6), 1);
	cluster_move_slot(&c, 99999, 0);   /* out of range: nothing */
	cluster_move_slot(&c, 5, c.member_shard[0]);
		/* The same map again changes nothing. */
	ck_assert(!cluster_apply(&c, 2, swapped, owner, 6, count_react, NULL, &oom));
	/* A map seen mid-failover that leaves a shard's nodes out (not online, two masters): the shard is
	 * still the one serving those slots, and keeps what its topology knows. */
	unsigned f = c.shards[c.owner[5]].topo.failovers;
	int gone[4] = {-1, -1, 0, 0};
	ck_assert_uint_eq(f, 1);
	ck_assert(cluster_apply(&c, 2, gone, owner, 7, count_react, NULL, &oom));
	ck_assert(cluster_apply(&c, 2, swapped, owner, 8, count_react, NULL, &oom));
	ck_assert_uint_eq(c.shards[c.owner[5]].topo.failovers, f);
	ck_assert_uint_eq(c.shards[c.owner[9000]].topo.failovers, 0);
	/* A map that leaves a shard out altogether (its slots served by no shard of the map), or lists
	 * none at all: the shards left out stay as they were -- number, slots, members, primary, failovers. */
	int k5 = c.owner[5], k9 = c.owner[9000], w5 = cluster_slot_writer(&c, 5);
	int16_t *part = malloc(SLOTS_COUNT * sizeof(*part));
	int only[4];
	ck_assert(part != NULL);
	for (int i = 0; i < 4; i++)
		only[i] = c.member_shard[i] == k9 ? 0 : -1;
	for (int s = 0; s < SLOTS_COUNT; s++)
		part[s] = c.owner[s] == k9 ? 0 : -1;
	cluster_apply(&c, 1, only, part, 9, count_react, NULL, &oom);
	ck_assert(!oom);
	ck_assert_int_eq(c.nshards, 2);
	ck_assert_int_eq(c.owner[5], k5);
	ck_assert_int_eq(c.owner[9000], k9);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), w5);
	ck_assert_uint_eq(c.shards[k5].topo.failovers, f);
	int none[4] = {-1, -1, -1, -1};
	for (int s = 0; s < SLOTS_COUNT; s++)
		part[s] = -1;
	ck_assert(!cluster_apply(&c, 0, none, part, 10, count_react, NULL, &oom));   /* nothing changes */
	ck_assert(!oom);
	ck_assert_int_eq(c.nshards, 2);
	ck_assert_int_eq(cluster_slot_writer(&c, 5), w5);
	ck_assert_int_eq(cluster_slot_writer(&c, 9000), 2);
	ck_assert_uint_eq(c.shards[k5].topo.failovers, f);
	free(part);
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

/* Commands over several slots, split per key, and their replies merged back. */
static const char *merged(enum resp_split kind, const char *replies, uint32_t count, bool resp3)
{
	static char text[512];
	struct evbuffer *out = evbuffer_new();
	size_t n;

	resp_cluster_merge(kind, (const uint8_t *)replies, strlen(replies), count, resp3, out);
	n = evbuffer_get_length(out);
	ck_assert_uint_lt(n, sizeof(text));
	evbuffer_remove(out, text, n);
	text[n] = '\0';
	evbuffer_free(out);
	return text;
}

START_TEST(test_split_and_merge)
{
	static const char mget[] = "*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
	static const char mset[] = "*5\r\n$4\r\nmset\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n";
	static const char del[] = "*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n";
	static const char odd[] = "*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n";
	static const char sunion[] = "*3\r\n$6\r\nSUNION\r\n$1\r\na\r\n$1\r\nb\r\n";
	struct evbuffer *out = evbuffer_new();
	uint32_t count;

	ck_assert_int_eq(resp_cluster_split((const uint8_t *)mget, sizeof(mget) - 1, out, &count), RESP_SPLIT_MGET);
	ck_assert_uint_eq(count, 3);
	ck_assert_uint_eq(evbuffer_get_length(out), 3 * 20);
	ck_assert(memcmp(evbuffer_pullup(out, -1), "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n", 40) == 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	ck_assert_int_eq(resp_cluster_split((const uint8_t *)mset, sizeof(mset) - 1, out, &count), RESP_SPLIT_MSET);
	ck_assert_uint_eq(count, 2);
	ck_assert(memcmp(evbuffer_pullup(out, -1), "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n", 27) == 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	ck_assert_int_eq(resp_cluster_split((const uint8_t *)del, sizeof(del) - 1, out, &count), RESP_SPLIT_SUM);
	ck_assert(memcmp(evbuffer_pullup(out, -1), "*2\r\n$3\r\nDEL\r\n$1\r\na\r\n", 19) == 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	ck_assert_int_eq(resp_cluster_split((const uint8_t *)odd, sizeof(odd) - 1, out, &count), RESP_SPLIT_NONE);
	ck_assert_int_eq(resp_cluster_split((const uint8_t *)sunion, sizeof(sunion) - 1, out, &count), RESP_SPLIT_NONE);
	ck_assert_int_eq(resp_cluster_split((const uint8_t *)mget, sizeof(mget) - 2, out, &count), RESP_SPLIT_NONE);
	ck_assert_uint_eq(evbuffer_get_length(out), 0);
	evbuffer_free(out);

	ck_assert_str_eq(merged(RESP_SPLIT_MGET, "$1\r\nx\r\n$-1\r\n-WRONGTYPE Operation against a key\r\n", 3, false),
			 "*3\r\n$1\r\nx\r\n$-1\r\n$-1\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_MGET, "$1\r\nx\r\n-WRONGTYPE Operation\r\n", 2, true), "*2\r\n$1\r\nx\r\n_\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_MGET, "$1\r\nx\r\n-MOVED 3 127.0.0.1:1\r\n", 2, false), "-MOVED 3 127.0.0.1:1\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_MSET, "+OK\r\n+OK\r\n", 2, false), "+OK\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_MSET, "+OK\r\n-OOM no\r\n", 2, false), "-OOM no\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_SUM, ":1\r\n:0\r\n:1\r\n", 3, false), ":2\r\n");
	ck_assert_str_eq(merged(RESP_SPLIT_SUM, ":1\r\n", 2, false)[0] == '-' ? "-" : "?", "-");   /* one missing */
	ck_assert_str_eq(merged(RESP_SPLIT_SUM, ":\r\n\n\n", 1, false), ":0\r\n");               /* hostile */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("keyspec");
	TCase *tc = tcase_create("all");

	tcase_add_test(tc, test_real_reply);
	tcase_add_test(tc, test_long_commands);
	tcase_add_test(tc, test_server_getkeys);
	tcase_add_test(tc, test_malformed_requests);
	tcase_add_test(tc, test_hostile_replies);
	tcase_add_test(tc, test_shards_keep_identity);
	tcase_add_test(tc, test_local_answers);
	tcase_add_test(tc, test_split_and_merge);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
