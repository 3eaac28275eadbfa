/* fuzz_keyspec.c - a member's COMMAND answer and clients' commands, for proto/keyspec.c:
 *   - the bytes as a COMMAND reply (the probes' hiredis reader, with their caps) read into key
 *     positions, and whatever follows that reply as a command against them;
 *   - the bytes as a command against the table of a real Redis 7.0.15 reply
 *     (tests/unit/data/redis7-command.resp), raw, and as words after a command name the first
 *     bytes pick from that reply (every command and subcommand reachable), re-framed as RESP:
 *     a slot or a KEYSPEC_ code, the same whatever the name's case, BAD for the command cut
 *     short or with a byte more; never a read outside the command (exact-size copies);
 *   - the bytes as a client's command in cluster mode: repoint's own answers (resp_cluster.c). */
#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proto/keyspec.h"
#include "proto/proto.h"
#include "proto/slots.h"
#include "sources/engine.h"

static struct keyspec *real;
static redisReply *real_reply;

static void slot_ok(int s)
{
	FUZZ_CHECK((s >= 0 && s < SLOTS_COUNT) || s == KEYSPEC_NOKEYS || s == KEYSPEC_CROSSSLOT || s == KEYSPEC_UNKNOWN ||
		   s == KEYSPEC_BAD);
}

/* keyspec_slot on an exact-size copy. */
static int slot_of(const struct keyspec *ks, const uint8_t *p, size_t n)
{
	uint8_t *copy = malloc(n > 0 ? n : 1);
	int s;

	if (copy == NULL)
		abort();
	memcpy(copy, p, n);
	s = keyspec_slot(ks, copy, n);
	free(copy);
	slot_ok(s);
	return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* scripts/fuzz compiles this file by its path from the top of the tree, and runs from there. */
	static const char path[] = "tests/unit/data/redis7-command.resp";
	static char buf[1 << 20];
	redisReader *rd = redisReaderCreate();
	FILE *f = fopen(path, "rb");
	void *r = NULL;
	char why[200];
	size_t n;

	(void)argc;
	(void)argv;
	if (f == NULL || rd == NULL) {
		fprintf(stderr, "fuzz_keyspec: cannot read %s (run from the top of the tree)\n", path);
		abort();
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (redisReaderFeed(rd, buf, n) != REDIS_OK || redisReaderGetReply(rd, &r) != REDIS_OK || r == NULL ||
	    (real = keyspec_from_command(r, why, sizeof(why))) == NULL) {
		fprintf(stderr, "fuzz_keyspec: %s is no COMMAND reply\n", path);
		abort();
	}
	real_reply = r;
	redisReaderFree(rd);
	return 0;
}

/* A command named by the real reply's entry (and subcommand) that p[0], p[1] pick, with the rest of
 * p split at '\n' as its arguments, framed as RESP into a new buffer of exactly its size. */
static uint8_t *words_command(const uint8_t *p, size_t n, size_t *len)
{
	const redisReply *e, *sub = NULL;
	const uint8_t *w[256];
	size_t wl[256], nw = 0, cap = 64;
	uint8_t *out;

	if (n < 2 || real_reply->elements == 0)
		return NULL;
	e = real_reply->element[p[0] % real_reply->elements];
	if (e->elements >= 10 && e->element[9]->elements > 0)
		sub = e->element[9]->element[p[1] % e->element[9]->elements]->element[0];
	w[nw] = (const uint8_t *)e->element[0]->str;
	wl[nw++] = e->element[0]->len;
	if (sub != NULL) {
		const char *bar = memchr(sub->str, '|', sub->len);
		w[nw] = (const uint8_t *)bar + 1;
		wl[nw++] = sub->len - (size_t)(bar + 1 - sub->str);
	}
	for (size_t at = 2; at <= n && nw < 256;) {
		const uint8_t *nl = memchr(p + at, '\n', n - at);
		size_t end = nl != NULL ? (size_t)(nl - p) : n;
		w[nw] = p + at;
		wl[nw++] = end - at;
		at = end + 1;
	}
	for (size_t i = 0; i < nw; i++)
		cap += wl[i] + 32;
	if ((out = malloc(cap)) == NULL)
		abort();
	*len = (size_t)snprintf((char *)out, cap, "*%zu\r\n", nw);
	for (size_t i = 0; i < nw; i++) {
		*len += (size_t)snprintf((char *)out + *len, cap - *len, "$%zu\r\n", wl[i]);
		memcpy(out + *len, w[i], wl[i]);
		*len += wl[i];
		memcpy(out + *len, "\r\n", 2);
		*len += 2;
	}
	return out;
}

static void words(const uint8_t *p, size_t n)
{
	size_t len;
	uint8_t *cmd = words_command(p, n, &len);
	int s;

	if (cmd == NULL)
		return;
	s = slot_of(real, cmd, len);
	/* A complete command is never BAD for its framing; a cut or a longer one always is. */
	FUZZ_CHECK(slot_of(real, cmd, len - 1) == KEYSPEC_BAD);
	uint8_t *more = malloc(len + 1);
	if (more == NULL)
		abort();
	memcpy(more, cmd, len);
	more[len] = p[n - 1];
	FUZZ_CHECK(slot_of(real, more, len + 1) == KEYSPEC_BAD);
	free(more);
	/* The name in upper case: the same answer. */
	size_t at = 1;
	while (cmd[at] != '\n')
		at++;
	while (cmd[++at] != '\n')
		;
	for (at++; cmd[at] != '\r'; at++)
		if (cmd[at] >= 'a' && cmd[at] <= 'z')
			cmd[at] = (uint8_t)(cmd[at] - 'a' + 'A');
	FUZZ_CHECK(slot_of(real, cmd, len) == s);
	free(cmd);
}

/* What repoint gives a client for a merged answer is one whole reply, nothing after it. */
static void one_reply(struct evbuffer *out)
{
	struct proto_state st;
	uint64_t got = 0;
	size_t n = evbuffer_get_length(out);

	FUZZ_CHECK(n > 0);
	resp_replies_init(&st);
	FUZZ_CHECK(resp_replies_scan(&st, evbuffer_pullup(out, -1), n, 2, &got) == n && got == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd = engine_rd_reader_new();  /* the probes' reader, with their caps */
	struct evbuffer *out = evbuffer_new();
	void *reply = NULL;
	char why[200];
	size_t len;

	if (rd == NULL || out == NULL)
		abort();
	slot_of(real, data, size);
	words(data, size);
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK && redisReaderGetReply(rd, &reply) == REDIS_OK &&
	    reply != NULL) {
		size_t rest = rd->len - rd->pos;
		memset(why, 0, sizeof(why));
		struct keyspec *ks = keyspec_from_command(reply, why, sizeof(why));
		if (ks != NULL) {
			FUZZ_CHECK(keyspec_count(ks) > 0);
			slot_of(ks, data + size - rest, rest);
			slot_of(ks, data, size);
			keyspec_free(ks);
		} else {
			FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL && why[0] != '\0');
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
		(void)resp_cluster_own(data, len);
		(void)resp_cluster_fan(data, len);
		uint64_t cursor;
		if (resp_cluster_scan(data, len, &cursor)) {
			/* ... SCAN with another cursor: a whole command */
			struct evbuffer *scan = evbuffer_new();
			size_t slen;
			if (scan == NULL)
				abort();
			resp_cluster_scan_rewrite(data, len, cursor >> RESP_SCAN_SHIFT, scan);
			FUZZ_CHECK(resp_command_len(evbuffer_pullup(scan, -1), evbuffer_get_length(scan),
						    evbuffer_get_length(scan), &slen) == 1 &&
				   slen == evbuffer_get_length(scan));
			evbuffer_free(scan);
		}
		/* ... split per key when it is MGET/MSET/DEL/...: each piece a whole command */
		struct evbuffer *parts = evbuffer_new();
		uint32_t count = 0;
		if (parts == NULL)
			abort();
		if (resp_cluster_split(data, len, parts, &count) != RESP_SPLIT_NONE) {
			size_t at = 0, plen, total = evbuffer_get_length(parts);
			const uint8_t *pp = evbuffer_pullup(parts, -1);
			for (uint32_t i = 0; i < count; i++) {
				FUZZ_CHECK(resp_command_len(pp + at, total - at, total - at, &plen) == 1);
				at += plen;
			}
			FUZZ_CHECK(at == total && count > 0);
		}
		evbuffer_free(parts);
	}
	/* The bytes as the replies of a split command (or of one sent to every shard), merged: always
	 * one whole reply; as a transaction's replies; as a shard's reply to SCAN. */
	for (int kind = RESP_SPLIT_MGET; kind <= RESP_SPLIT_ALL; kind++) {
		uint32_t count = size > 0 ? data[0] % 8 : 0;
		evbuffer_drain(out, evbuffer_get_length(out));
		resp_cluster_merge((enum resp_split)kind, data, size, count, size % 2, out);
		one_reply(out);
		(void)resp_cluster_tx_moved(data, size, count);
	}
	if (size > 0) {
		struct proto_state st;
		uint64_t got = 0;
		resp_replies_init(&st);
		size_t k = resp_replies_scan(&st, data, size, 1, &got);
		if (k != (size_t)-1 && got == 1) {
			evbuffer_drain(out, evbuffer_get_length(out));
			resp_cluster_scan_reply(data, k, size % 16384, size % 3 == 0 ? -1 : 16383, out);
			one_reply(out);
		}
	}
	evbuffer_free(out);
	return 0;
}
