/* proto/resp_share.c - which Redis commands may share a server connection, and where they end.
 *
 * A command may travel on a connection shared with other clients when it has exactly one reply,
 * reads or writes only keys (of database 0, the shared connection's), never blocks the connection
 * and leaves nothing behind in it. The list below is of such data commands; everything else --
 * AUTH, HELLO, SELECT, CLIENT, MULTI/EXEC, WATCH, (UN)SUBSCRIBE, the blocking B* pops, XREAD(GROUP)
 * (BLOCK), WAIT, MONITOR, QUIT, RESET, administration, and any name not listed -- gives its
 * session a connection of its own. Being conservative costs only the sharing, never correctness.
 *
 * The scan is over a contiguous buffer and touches each header byte once; bulk payloads are
 * skipped by their length.
 */
#include "proto/proto.h"
#include "proto/resp_internal.h"

#include <stdint.h>
#include <string.h>

#define SHARE_NAME_MAX 24
/* A request array of more arguments than this is not shared (its header alone could be huge). */
#define SHARE_MAX_ARGS (1u << 20)

/* In alphabetical order, for the reader; looked up through share_table. */
static const char *const shareable[] = {
	"append", "bitcount", "bitfield", "bitfield_ro", "bitop", "bitpos", "command", "copy", "dbsize",
	"decr", "decrby", "del", "dump", "echo", "eval", "eval_ro", "evalsha", "evalsha_ro", "exists",
	"expire", "expireat", "expiretime", "fcall", "fcall_ro", "geoadd", "geodist", "geohash", "geopos",
	"georadius", "georadius_ro", "georadiusbymember", "georadiusbymember_ro", "geosearch",
	"geosearchstore", "get", "getbit", "getdel", "getex", "getrange", "getset", "hdel", "hexists",
	"hexpire", "hget", "hgetall", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset",
	"hpersist", "hpexpire", "hpttl", "hrandfield", "hscan", "hset", "hsetnx", "hstrlen", "httl",
	"hvals", "incr", "incrby", "incrbyfloat", "info", "keys", "lcs", "lindex", "linsert", "llen",
	"lmove", "lmpop", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "mget",
	"move", "mset", "msetnx", "object", "persist", "pexpire", "pexpireat", "pexpiretime", "pfadd",
	"pfcount", "pfmerge", "ping", "psetex", "pttl", "publish", "pubsub", "randomkey", "rename",
	"renamenx", "restore", "rpop", "rpoplpush", "rpush", "rpushx", "sadd", "scan", "scard", "sdiff",
	"sdiffstore", "set", "setbit", "setex", "setnx", "setrange", "sinter", "sintercard",
	"sinterstore", "sismember", "smembers", "smismember", "smove", "sort", "sort_ro", "spop",
	"spublish", "srandmember", "srem", "sscan", "strlen", "substr", "sunion", "sunionstore", "time",
	"touch", "ttl", "type", "unlink", "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup",
	"xinfo", "xlen", "xpending", "xrange", "xrevrange", "xsetid", "xtrim", "zadd", "zcard", "zcount",
	"zdiff", "zdiffstore", "zincrby", "zinter", "zintercard", "zinterstore", "zlexcount", "zmpop",
	"zmscore", "zpopmax", "zpopmin", "zrandmember", "zrange", "zrangebylex", "zrangebyscore",
	"zrangestore", "zrank", "zrem", "zremrangebylex", "zremrangebyrank", "zremrangebyscore",
	"zrevrange", "zrevrangebylex", "zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion",
	"zunionstore",
};

/* Of those, the ones that never write and never replicate (Redis's COMMAND flags: no `write`, no
 * `may-replicate`): CLIENT PAUSE WRITE -- which Redis's own FAILOVER uses -- does not hold them,
 * so they travel on a shared connection of their own, where a paused write cannot hold them up.
 * Everything else shareable (EVAL and FCALL too: a script may write) counts as a write. */
static const char *const readonly_names[] = {
	"bitcount", "bitfield_ro", "bitpos", "command", "dbsize", "dump", "echo", "eval_ro", "evalsha_ro",
	"exists", "expiretime", "fcall_ro", "geodist", "geohash", "geopos", "georadius_ro",
	"georadiusbymember_ro", "geosearch", "get", "getbit", "getrange", "hexists", "hget", "hgetall",
	"hkeys", "hlen", "hmget", "hpttl", "hrandfield", "hscan", "hstrlen", "httl", "hvals", "info", "keys",
	"lcs", "lindex", "llen", "lpos", "lrange", "mget", "object", "pexpiretime", "ping", "pttl", "pubsub",
	"randomkey", "scan", "scard", "sdiff", "sinter", "sintercard", "sismember", "smembers", "smismember",
	"sort_ro", "srandmember", "sscan", "strlen", "substr", "sunion", "time", "touch", "ttl", "type",
	"xinfo", "xlen", "xpending", "xrange", "xrevrange", "zcard", "zcount", "zdiff", "zinter",
	"zintercard", "zlexcount", "zmscore", "zrandmember", "zrange", "zrangebylex", "zrangebyscore",
	"zrank", "zrevrange", "zrevrangebylex", "zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion",
};

/* Looked up in an open-addressing hash table built on first use: the lookup runs once per command
 * on the hot path (a bsearch with strcmp cost ~330 instructions per command, measured with
 * callgrind; this costs about 40). */
#define SHARE_SLOTS 512u

static const char *share_table[SHARE_SLOTS];
static uint8_t share_len[SHARE_SLOTS];
static bool share_write[SHARE_SLOTS];
static bool share_built;

static uint32_t name_hash(const uint8_t *low, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ low[i]) * 16777619u;
	return h;
}

static void share_build(void)
{
	_Static_assert(sizeof(shareable) / sizeof(shareable[0]) < SHARE_SLOTS / 2, "keep the table sparse");
	for (size_t i = 0; i < sizeof(shareable) / sizeof(shareable[0]); i++) {
		size_t len = strlen(shareable[i]);
		uint32_t h = name_hash((const uint8_t *)shareable[i], len) & (SHARE_SLOTS - 1);
		while (share_table[h] != NULL)
			h = (h + 1) & (SHARE_SLOTS - 1);
		share_table[h] = shareable[i];
		share_len[h] = (uint8_t)len;
		share_write[h] = true;
		for (size_t j = 0; j < sizeof(readonly_names) / sizeof(readonly_names[0]); j++)
			if (strcmp(readonly_names[j], shareable[i]) == 0)
				share_write[h] = false;
	}
	share_built = true;
}

/* The last name found, as it was spelled: clients send the same few commands over and over. */
static uint8_t last_name[SHARE_NAME_MAX];
static size_t last_len;
static bool last_write;

/* Shareable? And (in *write, when not NULL) whether a write pause holds it. */
static bool shareable_name(const uint8_t *name, size_t len, bool *write)
{
	uint8_t low[SHARE_NAME_MAX];
	uint32_t h;

	if (len == 0 || len > SHARE_NAME_MAX)
		return false;
	if (len == last_len && memcmp(name, last_name, len) == 0) {
		if (write != NULL)
			*write = last_write;
		return true;
	}
	if (!share_built)
		share_build();
	for (size_t i = 0; i < len; i++) {
		uint8_t c = name[i];
		low[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
	}
	for (h = name_hash(low, len) & (SHARE_SLOTS - 1); share_table[h] != NULL; h = (h + 1) & (SHARE_SLOTS - 1))
		if (share_len[h] == len && memcmp(share_table[h], low, len) == 0) {
			memcpy(last_name, name, len);
			last_len = len;
			last_write = share_write[h];
			if (write != NULL)
				*write = last_write;
			return true;
		}
	return false;
}

bool resp_shareable_name(const uint8_t *name, size_t len)
{
	return shareable_name(name, len, NULL);
}

/* Commands not on the list that are still harmless in some forms (see special_form). */
enum special { SPECIAL_NONE, SPECIAL_SELECT, SPECIAL_HELLO, SPECIAL_CLIENT };

static enum special special_name(const uint8_t *p, size_t n)
{
	if (resp_word_is(p, n, "select"))
		return SPECIAL_SELECT;
	if (resp_word_is(p, n, "hello"))
		return SPECIAL_HELLO;
	if (resp_word_is(p, n, "client"))
		return SPECIAL_CLIENT;
	return SPECIAL_NONE;
}

/* The forms of those that change nothing a shared connection keeps, or nothing the server needs:
 *   SELECT 0           the shared connection's database already;
 *   HELLO              the server's description, no change;
 *   HELLO 2, HELLO 3   the protocol only: RESP_SHARE_HELLO2/3, the session decides (a RESP3
 *                      session goes on a RESP3 shared connection);
 *   CLIENT SETINFO a v the library name and version clients send on connecting (redis-py 5,
 *                      Jedis 5): informational only, answered +OK by repoint. */
static enum resp_share special_form(enum special sp, uint64_t nargs, const uint8_t *arg1, size_t len1)
{
	switch (sp) {
	case SPECIAL_SELECT:
		return nargs == 2 && resp_word_is(arg1, len1, "0") ? RESP_SHARE_YES : RESP_SHARE_NO;
	case SPECIAL_HELLO:
		if (nargs == 1)
			return RESP_SHARE_YES;
		if (nargs == 2 && resp_word_is(arg1, len1, "2"))
			return RESP_SHARE_HELLO2;
		return nargs == 2 && resp_word_is(arg1, len1, "3") ? RESP_SHARE_HELLO3 : RESP_SHARE_NO;
	case SPECIAL_CLIENT:
		return nargs == 4 && resp_word_is(arg1, len1, "setinfo") ? RESP_SHARE_LOCAL : RESP_SHARE_NO;
	default:
		return RESP_SHARE_NO;
	}
}

static enum resp_share scan(const uint8_t *p, size_t n, size_t max, size_t *len, bool *write)
{
	struct resp_request rq;
	enum special sp = SPECIAL_NONE;
	int k = resp_request(p, n, max, SHARE_MAX_ARGS, &rq, len);

	*write = false;
	if (k < 0)
		return RESP_SHARE_NO;
	/* The name is the first argument: refuse early what will never be shared. */
	if (rq.seen >= 1 && !shareable_name(rq.arg[0], rq.arg_len[0], write)) {
		sp = special_name(rq.arg[0], rq.arg_len[0]);
		if (sp == SPECIAL_NONE)
			return RESP_SHARE_NO;
	}
	if (k == 0)
		return RESP_SHARE_MORE;
	if (sp == SPECIAL_NONE)
		return RESP_SHARE_YES;
	return special_form(sp, rq.nargs, rq.seen >= 2 ? rq.arg[1] : NULL, rq.seen >= 2 ? rq.arg_len[1] : 0);
}

enum resp_share resp_share_scan(const uint8_t *p, size_t n, size_t max, size_t *len, bool *write)
{
	bool w;
	enum resp_share r = scan(p, n, max, len, &w);

	if (write != NULL)
		*write = (r == RESP_SHARE_YES || r == RESP_SHARE_MORE) && w;

	/* More is needed: at least one byte more than there is. */
	if (r == RESP_SHARE_MORE && *len <= n)
		*len = n + 1;
	return r;
}
