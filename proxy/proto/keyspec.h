/* proto/keyspec.h - which arguments of a Redis command are keys, as the server itself says in its
 * COMMAND reply, not from a hand-kept table (issue 12: Redis Cluster routing sends a command to
 * the shard that serves its keys' slot). A pure module: no I/O, no global state.
 *
 * Each COMMAND entry (RESP2: [name, arity, flags, first, last, step, acl_categories, tips,
 * key_specs, subcommands]) gives its keys as Redis 7's key specs, applied as Redis applies them
 * (getKeysUsingKeySpecs):
 *
 *   begin_search  index n                 -> keys start at argument n
 *                 keyword K, startfrom s   -> after the first K found from argument s on
 *                                             (s < 0: backwards from argc+s); none: no keys here
 *   find_keys     range lastkey l, keystep t, limit m
 *                                          -> every t-th argument to start+l (l < 0: argc+l;
 *                                             m > 0: the first 1/m of what is left)
 *                 keynum keynumidx i, firstkey f, keystep t
 *                                          -> argument start+i says how many keys, from start+f
 *
 * SET k v, DEL k1 k2, MSET k v k v, EVAL s 2 k1 k2, ZUNIONSTORE d 2 a b, XREAD ... STREAMS a b 0 0,
 * LMPOP 2 a b LEFT; sharded Pub/Sub channels (SPUBLISH: "not_key" specs) count, as the cluster
 * routes them. Container commands are looked up with their subcommand ("object|encoding",
 * "xinfo|stream", "config|get"). An entry with a spec Redis itself cannot apply ("unknown" search
 * or find, or flagged "incomplete": SORT's BY/STORE, MIGRATE's KEYS) falls back to the legacy
 * first/last/step (SORT k ... routes by k, MIGRATE by its key argument; the member checks the
 * rest), KEYSPEC_UNKNOWN without usable ones. An entry without key specs (6.x) has the legacy
 * positions only: first 0 is no keys, unless it is flagged movablekeys (6.x's EVAL): unknown.
 *
 * The COMMAND reply comes from a member: hostile input. Every shape is checked; an entry that
 * cannot be read (a wrong type, a number out of bounds, keystep 0) is skipped and counted, never
 * half taken. Lookups go through an open-addressing hash table over the lower-case names, built
 * once; keyspec_slot allocates nothing and reads nothing outside p[0..n). */
#ifndef REPOINT_PROTO_KEYSPEC_H
#define REPOINT_PROTO_KEYSPEC_H

#include <stddef.h>
#include <stdint.h>

struct keyspec;
struct redisReply;

/* The key positions a COMMAND reply describes. NULL with why (no part of the reply quoted) when it
 * is not one: not an array, or not one entry in it could be read; or out of memory. */
struct keyspec *keyspec_from_command(const struct redisReply *r, char *why, size_t whylen)
	__attribute__((warn_unused_result));
void keyspec_free(struct keyspec *ks);
size_t keyspec_count(const struct keyspec *ks);      /* commands and subcommands taken */
size_t keyspec_skipped(const struct keyspec *ks);    /* entries that could not be read */

/* The slot (0..16383) of the keys of the one complete command array at p[0..n) -- the same framing
 * resp_request (resp_internal.h) reads, nothing after it -- or: */
enum {
	KEYSPEC_NOKEYS = -1,     /* it has no keys (PING, CONFIG GET, EVAL s 0) */
	KEYSPEC_CROSSSLOT = -2,  /* its keys are in more than one slot */
	KEYSPEC_UNKNOWN = -3,    /* a command (or subcommand) the reply did not describe, or whose keys it cannot tell */
	KEYSPEC_BAD = -4,        /* not one complete command array, or its arguments contradict its spec (a numkeys
				  * that is no number or counts past the end, a key position past the end) */
};
int keyspec_slot(const struct keyspec *ks, const uint8_t *p, size_t n);

#endif
