/* proto/resp_cluster.c - what a cluster = on service answers itself (see proto.h).
 *
 * repoint shows a cluster-aware client one node that serves every slot -- itself -- so that the
 * client sends everything to the sidecar, and repoint routes by slot. The commands that ask about
 * the cluster are answered as such a node would; the dataset-wide and connection-state commands
 * repoint does not route yet get an error that says so, in order, instead of a wrong answer.
 * Transactions and blocking commands go on a connection of the session's own (resp_cluster_own). */
#include "proto/proto.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "proto/resp_internal.h"
#include "proto/slots.h"

/* Commands without keys that one shard's primary answers for the whole cluster as well as any
 * other would (they read nothing of the data set, or, PUBLISH, the cluster bus carries them). */
bool resp_cluster_keyless_ok(const uint8_t *p, size_t n)
{
	static const char *const ok[] = {"ping", "echo", "time", "command", "info", "publish", "hello", "select",
					 "lastsave", "role", "lolwut"};
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1)
		return false;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (resp_word_is(rq.arg[0], rq.arg_len[0], ok[i]))
			return true;
	return false;
}

int resp_command_len(const uint8_t *p, size_t n, size_t max, size_t *len)
{
	struct resp_request rq;

	return resp_request(p, n, max, 1u << 20, &rq, len);
}

bool resp_cluster_pins(const uint8_t *p, size_t n)
{
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1)
		return false;
	return resp_word_is(rq.arg[0], rq.arg_len[0], "subscribe") || resp_word_is(rq.arg[0], rq.arg_len[0], "psubscribe") ||
	       resp_word_is(rq.arg[0], rq.arg_len[0], "ssubscribe");
}

enum resp_own resp_cluster_own(const uint8_t *p, size_t n)
{
	static const struct {
		const char *name;
		enum resp_own kind;
	} own[] = {
		{"multi", RESP_OWN_MULTI},       {"exec", RESP_OWN_EXEC},         {"discard", RESP_OWN_DISCARD},
		{"watch", RESP_OWN_WATCH},       {"unwatch", RESP_OWN_UNWATCH},   {"blpop", RESP_OWN_BLOCKING},
		{"brpop", RESP_OWN_BLOCKING},    {"brpoplpush", RESP_OWN_BLOCKING}, {"blmove", RESP_OWN_BLOCKING},
		{"blmpop", RESP_OWN_BLOCKING},   {"bzpopmin", RESP_OWN_BLOCKING}, {"bzpopmax", RESP_OWN_BLOCKING},
		{"bzmpop", RESP_OWN_BLOCKING},   {"xread", RESP_OWN_BLOCKING},    {"xreadgroup", RESP_OWN_BLOCKING},
	};
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1)
		return RESP_OWN_NONE;
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (resp_word_is(rq.arg[0], rq.arg_len[0], own[i].name))
			return own[i].kind;
	return RESP_OWN_NONE;
}

/* An error reply (at p, k bytes) that a cluster gives while a slot moves or a shard fails over
 * (a primary turned replica unblocks its blocked clients so: the command popped nothing). */
static bool moving_error(const uint8_t *p, size_t k)
{
	static const char *const codes[] = {"MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ", "READONLY ",
					    "UNBLOCKED force unblock from blocking operation, instance state changed"};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		size_t l = strlen(codes[i]);
		if (k > l && memcmp(p + 1, codes[i], l) == 0)
			return true;
	}
	return false;
}

bool resp_cluster_tx_moved(const uint8_t *p, size_t n, uint32_t count)
{
	static const char abort_code[] = "-EXECABORT ", because[] = "because of: ";
	size_t at = 0, k = 0;
	bool moving = false;

	for (uint32_t i = 0; i < count; i++) {
		struct proto_state st;
		uint64_t got = 0;

		resp_replies_init(&st);
		k = at < n ? resp_replies_scan(&st, p + at, n - at, 1, &got) : 0;
		if (k == (size_t)-1 || got != 1)
			return false;
		if (p[at] == '-' && moving_error(p + at, k))
			moving = true;
		if (i + 1 < count)
			at += k;
	}
	if (count == 1)
		return moving && at + k == n;
	if (k <= sizeof(abort_code) - 1 || memcmp(p + at, abort_code, sizeof(abort_code) - 1) != 0)
		return false;
	if (!moving) {
		/* "-EXECABORT Transaction discarded because of: MOVED 866 127.0.0.1:7001" (EXEC refused) */
		for (size_t j = at; j + sizeof(because) - 1 < at + k; j++)
			if (memcmp(p + j, because, sizeof(because) - 1) == 0) {
				size_t c = j + sizeof(because) - 1 - 1;  /* as if an error began there */
				moving = moving_error(p + c, at + k - c);
				break;
			}
	}
	return moving;
}

static void bulk(struct evbuffer *out, const char *s)
{
	evbuffer_add_printf(out, "$%zu\r\n%s\r\n", strlen(s), s);
}

static void node_id(const struct resp_cluster_self *self, char id[41])
{
	/* Stable for a listener, 40 hex digits as a node id is: "repoint" in hex, then the port. */
	snprintf(id, 41, "7265706f696e74%026x", (unsigned)self->port);
}

void resp_cluster_answer(const uint8_t *p, size_t n, const struct resp_cluster_self *self, struct evbuffer *out)
{
	struct resp_request rq;
	size_t len;
	char id[41], text[600], name[40];

	node_id(self, id);
	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1) {
		resp_error(out, "ERR", "Protocol error: repoint reads commands as RESP arrays in cluster mode");
		return;
	}
	const uint8_t *a0 = rq.arg[0], *a1 = rq.seen >= 2 ? rq.arg[1] : NULL;
	size_t l0 = rq.arg_len[0], l1 = rq.seen >= 2 ? rq.arg_len[1] : 0;

	if (resp_word_is(a0, l0, "readonly") || resp_word_is(a0, l0, "readwrite") || resp_word_is(a0, l0, "asking")) {
		evbuffer_add(out, "+OK\r\n", 5);
		return;
	}
	if (resp_word_is(a0, l0, "select")) {
		resp_error(out, "ERR", "SELECT is not allowed in cluster mode");
		return;
	}
	if (resp_word_is(a0, l0, "cluster") && a1 != NULL) {
		if (resp_word_is(a1, l1, "slots") && rq.nargs == 2) {
			evbuffer_add_printf(out, "*1\r\n*3\r\n:0\r\n:%d\r\n*3\r\n", SLOTS_COUNT - 1);
			bulk(out, self->host);
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)self->port);
			bulk(out, id);
			return;
		}
		if (resp_word_is(a1, l1, "shards") && rq.nargs == 2) {
			evbuffer_add_printf(out, "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:%d\r\n$5\r\nnodes\r\n*1\r\n*14\r\n",
					    SLOTS_COUNT - 1);
			bulk(out, "id");
			bulk(out, id);
			bulk(out, "port");
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)self->port);
			bulk(out, "ip");
			bulk(out, self->host);
			bulk(out, "endpoint");
			bulk(out, self->host);
			bulk(out, "role");
			bulk(out, "master");
			bulk(out, "replication-offset");
			evbuffer_add(out, ":0\r\n", 4);
			bulk(out, "health");
			bulk(out, "online");
			return;
		}
		if (resp_word_is(a1, l1, "nodes") && rq.nargs == 2) {
			snprintf(text, sizeof(text), "%s %s:%u@%u myself,master - 0 0 1 connected 0-%d\n", id, self->host,
				 (unsigned)self->port, (unsigned)self->port, SLOTS_COUNT - 1);
			bulk(out, text);
			return;
		}
		if (resp_word_is(a1, l1, "info") && rq.nargs == 2) {
			snprintf(text, sizeof(text),
				 "cluster_state:ok\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\n"
				 "cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n"
				 "cluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
				 SLOTS_COUNT, SLOTS_COUNT);
			bulk(out, text);
			return;
		}
		if (resp_word_is(a1, l1, "myid") && rq.nargs == 2) {
			bulk(out, id);
			return;
		}
		if (resp_word_is(a1, l1, "keyslot") && rq.nargs == 3 && rq.seen == 3) {
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)slots_key_slot(rq.arg[2], rq.arg_len[2]));
			return;
		}
	}
	/* The name, printable and short, for the error. */
	size_t k = 0;
	for (size_t i = 0; i < l0 && k + 1 < sizeof(name); i++)
		name[k++] = a0[i] >= 0x21 && a0[i] < 0x7f ? (char)a0[i] : '?';
	name[k] = '\0';
	if (a1 != NULL && resp_word_is(a0, l0, "cluster")) {
		snprintf(text, sizeof(text), "repoint serves the whole cluster as one node: CLUSTER %.*s is not answered",
			 (int)(l1 < 32 ? l1 : 32), (const char *)a1);
		for (char *c = text; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
	} else {
		snprintf(text, sizeof(text), "repoint does not route '%s' to a cluster's shards (cluster = on): "
					     "only commands on the keys of one slot, and a few without keys", name);
	}
	resp_error(out, "ERR", text);
}

/* ---- commands over keys of several slots, split per key ---- */

/* The arguments of the complete command array p[0..n): each one's place in (off, len) up to max;
 * their number, or -1 when malformed. */
static long args_of(const uint8_t *p, size_t n, size_t *off, size_t *len, size_t max)
{
	size_t at = 1;
	uint64_t argc, v;

	if (n < 4 || p[0] != '*' || resp_length_line(p, n, &at, max, &argc) != 1 || argc == 0 || argc > max)
		return -1;
	for (uint64_t i = 0; i < argc; i++) {
		if (at >= n || p[at] != '$')
			return -1;
		at++;
		if (resp_length_line(p, n, &at, n, &v) != 1 || v + 2 > n - at)
			return -1;
		off[i] = at;
		len[i] = (size_t)v;
		at += (size_t)v + 2;
	}
	return at == n ? (long)argc : -1;
}

static void bulk_n(struct evbuffer *out, const uint8_t *p, size_t n)
{
	evbuffer_add_printf(out, "$%zu\r\n", n);
	evbuffer_add(out, p, n);
	evbuffer_add(out, "\r\n", 2);
}

enum resp_split resp_cluster_split(const uint8_t *p, size_t n, struct evbuffer *out, uint32_t *count)
{
	enum { MAXARGS = 65536 };
	static size_t off[MAXARGS], len[MAXARGS];
	long argc = args_of(p, n, off, len, MAXARGS);
	const uint8_t *name;
	size_t nl;
	enum resp_split kind;

	*count = 0;
	if (argc < 2)
		return RESP_SPLIT_NONE;
	name = p + off[0];
	nl = len[0];
	if (resp_word_is(name, nl, "mget"))
		kind = RESP_SPLIT_MGET;
	else if (resp_word_is(name, nl, "mset"))
		kind = RESP_SPLIT_MSET;
	else if (resp_word_is(name, nl, "del") || resp_word_is(name, nl, "unlink") || resp_word_is(name, nl, "exists") ||
		 resp_word_is(name, nl, "touch"))
		kind = RESP_SPLIT_SUM;
	else
		return RESP_SPLIT_NONE;
	if (kind == RESP_SPLIT_MSET && (argc - 1) % 2 != 0)
		return RESP_SPLIT_NONE;
	for (long i = 1; i < argc; i += kind == RESP_SPLIT_MSET ? 2 : 1) {
		if (kind == RESP_SPLIT_MGET) {
			evbuffer_add(out, "*2\r\n$3\r\nGET\r\n", 13);
		} else if (kind == RESP_SPLIT_MSET) {
			evbuffer_add(out, "*3\r\n$3\r\nSET\r\n", 13);
		} else {
			evbuffer_add(out, "*2\r\n", 4);
			bulk_n(out, name, nl);
		}
		bulk_n(out, p + off[i], len[i]);
		if (kind == RESP_SPLIT_MSET)
			bulk_n(out, p + off[i + 1], len[i + 1]);
		(*count)++;
	}
	return kind;
}

/* The number of a reply's first line ("*12\r\n", ":3\r\n") within its k bytes; -1 for a nil ("*-1"). */
static long long head_number(const uint8_t *r, size_t k)
{
	long long v = 0;

	if (k > 1 && r[1] == '-')
		return -1;
	for (size_t j = 1; j < k && r[j] >= '0' && r[j] <= '9' && v < (1LL << 40); j++)
		v = v * 10 + (r[j] - '0');
	return v;
}

static bool is_nil(const uint8_t *r, size_t k)
{
	return r[0] == '_' || ((r[0] == '$' || r[0] == '*') && head_number(r, k) < 0);
}

/* SCRIPT EXISTS: elems holds the first shard's answers (":1\r\n" each), and(i) clears those a later
 * shard answers 0 (the i-th of its array r[0..k)). */
static void all_and(uint8_t *flags, uint32_t nflags, const uint8_t *r, size_t k)
{
	uint32_t i = 0;

	for (size_t j = 1; j + 1 < k && i < nflags; j++)
		if (r[j] == '\n' && r[j + 1] == ':') {
			if (j + 2 < k && r[j + 2] == '0')
				flags[i] = 0;
			i++;
		}
}

void resp_cluster_merge(enum resp_split kind, const uint8_t *p, size_t n, uint32_t count, bool resp3,
			struct evbuffer *out)
{
	size_t at = 0;
	long long sum = 0;
	const uint8_t *err = NULL, *first = NULL;
	size_t errlen = 0, firstlen = 0;
	uint8_t flags[1024];
	uint32_t nflags = 0;
	struct evbuffer *elems = evbuffer_new();

	if (elems == NULL) {
		resp_error(out, "ERR", "repoint: out of memory merging the replies of a command split over slots");
		return;
	}
	for (uint32_t i = 0; i < count; i++) {
		struct proto_state st;
		uint64_t got = 0;
		size_t k;

		resp_replies_init(&st);
		k = at < n ? resp_replies_scan(&st, p + at, n - at, 1, &got) : 0;
		if (k == (size_t)-1 || got != 1) {
			evbuffer_free(elems);
			resp_error(out, "ERR", "repoint: a reply to a command split over slots could not be read");
			return;
		}
		const uint8_t *r = p + at;
		if (r[0] == '-' && kind == RESP_SPLIT_MGET && k > 10 && memcmp(r, "-WRONGTYPE", 10) == 0) {
			/* MGET answers a key of another type with nil */
			evbuffer_add(elems, resp3 ? "_\r\n" : "$-1\r\n", resp3 ? 3 : 5);
		} else if (r[0] == '-') {
			if (err == NULL) {
				err = r;
				errlen = k;
			}
		} else if (kind == RESP_SPLIT_MGET) {
			evbuffer_add(elems, r, k);
		} else if (kind == RESP_SPLIT_SUM && r[0] == ':') {
			/* ":<digits>\r\n" (its count of keys: small, never negative) */
			sum += head_number(r, k);
		} else if (kind == RESP_SPLIT_KEYS && r[0] == '*' && head_number(r, k) > 0) {
			const uint8_t *nl = memchr(r, '\n', k);
			sum += head_number(r, k);
			evbuffer_add(elems, nl + 1, k - (size_t)(nl + 1 - r));
		} else if (kind == RESP_SPLIT_FIRST && first == NULL && !is_nil(r, k)) {
			first = r;
			firstlen = k;
		} else if (kind == RESP_SPLIT_ALL && r[0] == '*') {
			if (i == 0) {
				long long m = head_number(r, k);
				nflags = m > 0 && m <= (long long)sizeof(flags) ? (uint32_t)m : 0;
				memset(flags, 1, nflags);
			}
			all_and(flags, nflags, r, k);
		}
		at += k;
	}
	if (err != NULL) {
		evbuffer_add(out, err, errlen);
	} else if (kind == RESP_SPLIT_MGET) {
		evbuffer_add_printf(out, "*%u\r\n", count);
		evbuffer_add_buffer(out, elems);
	} else if (kind == RESP_SPLIT_MSET || kind == RESP_SPLIT_OK) {
		evbuffer_add(out, "+OK\r\n", 5);
	} else if (kind == RESP_SPLIT_KEYS) {
		evbuffer_add_printf(out, "*%lld\r\n", sum);
		evbuffer_add_buffer(out, elems);
	} else if (kind == RESP_SPLIT_FIRST && first != NULL) {
		evbuffer_add(out, first, firstlen);
	} else if (kind == RESP_SPLIT_FIRST) {
		evbuffer_add(out, resp3 ? "_\r\n" : "$-1\r\n", resp3 ? 3 : 5);
	} else if (kind == RESP_SPLIT_ALL) {
		evbuffer_add_printf(out, "*%u\r\n", nflags);
		for (uint32_t i = 0; i < nflags; i++)
			evbuffer_add(out, flags[i] ? ":1\r\n" : ":0\r\n", 4);
	} else {
		evbuffer_add_printf(out, ":%lld\r\n", sum);
	}
	evbuffer_free(elems);
}

/* ---- commands over the whole data set ---- */

enum resp_split resp_cluster_fan(const uint8_t *p, size_t n)
{
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1)
		return RESP_SPLIT_NONE;
	const uint8_t *a0 = rq.arg[0], *a1 = rq.seen >= 2 ? rq.arg[1] : NULL;
	size_t l0 = rq.arg_len[0], l1 = rq.seen >= 2 ? rq.arg_len[1] : 0;
	if (resp_word_is(a0, l0, "dbsize") && rq.nargs == 1)
		return RESP_SPLIT_SUM;
	if (resp_word_is(a0, l0, "keys") && rq.nargs == 2)
		return RESP_SPLIT_KEYS;
	if (resp_word_is(a0, l0, "randomkey") && rq.nargs == 1)
		return RESP_SPLIT_FIRST;
	if ((resp_word_is(a0, l0, "flushall") || resp_word_is(a0, l0, "flushdb")) && rq.nargs <= 2)
		return RESP_SPLIT_OK;
	if (resp_word_is(a0, l0, "script") && a1 != NULL) {
		if (resp_word_is(a1, l1, "load") && rq.nargs == 3)
			return RESP_SPLIT_FIRST;
		if (resp_word_is(a1, l1, "flush") && rq.nargs <= 3)
			return RESP_SPLIT_OK;
		if (resp_word_is(a1, l1, "exists") && rq.nargs >= 3 && rq.nargs <= 1026)
			return RESP_SPLIT_ALL;
	}
	return RESP_SPLIT_NONE;
}

bool resp_cluster_scan(const uint8_t *p, size_t n, uint64_t *cursor)
{
	struct resp_request rq;
	size_t len;
	uint64_t v = 0;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 2 || !resp_word_is(rq.arg[0], rq.arg_len[0], "scan") ||
	    rq.arg_len[1] == 0 || rq.arg_len[1] > 20)
		return false;
	for (size_t i = 0; i < rq.arg_len[1]; i++) {
		uint8_t c = rq.arg[1][i];
		if (c < '0' || c > '9' || v > (UINT64_MAX - (c - '0')) / 10)
			return false;
		v = v * 10 + (c - '0');
	}
	*cursor = v;
	return true;
}

void resp_cluster_scan_rewrite(const uint8_t *p, size_t n, uint64_t inner, struct evbuffer *out)
{
	size_t off[64], len[64];
	long argc = args_of(p, n, off, len, 64);
	char c[24];

	if (argc < 2)
		return;
	snprintf(c, sizeof(c), "%llu", (unsigned long long)inner);
	evbuffer_add_printf(out, "*%ld\r\n", argc);
	bulk_n(out, p + off[0], len[0]);
	bulk(out, c);
	for (long i = 2; i < argc; i++)
		bulk_n(out, p + off[i], len[i]);
}

void resp_cluster_scan_reply(const uint8_t *p, size_t n, int slot, int next, struct evbuffer *out)
{
	/* "*2\r\n$<len>\r\n<cursor>\r\n<the keys' array>" */
	size_t at = 4, end;
	uint64_t v = 0, shown;
	char c[24];

	if (n < 8 || memcmp(p, "*2\r\n$", 5) != 0) {
		evbuffer_add(out, p, n);
		return;
	}
	while (at < n && p[at] != '\n')
		at++;
	end = at + 1;
	while (end < n && p[end] >= '0' && p[end] <= '9') {
		v = v * 10 + (uint64_t)(p[end] - '0');
		end++;
	}
	if (end + 2 > n || p[end] != '\r') {
		evbuffer_add(out, p, n);
		return;
	}
	if (v == 0)
		shown = next < 0 ? 0 : (uint64_t)next;  /* the next shard from its start, or the end */
	else if (v >> (64 - RESP_SCAN_SHIFT) != 0) {
		resp_error(out, "ERR", "repoint: a shard's SCAN cursor is too large to carry its shard");
		return;
	} else
		shown = v << RESP_SCAN_SHIFT | (uint64_t)slot;
	snprintf(c, sizeof(c), "%llu", (unsigned long long)shown);
	evbuffer_add(out, "*2\r\n", 4);
	bulk(out, c);
	evbuffer_add(out, p + end + 2, n - end - 2);
}
