/* proto/keyspec.h - which arguments of a Redis command are keys, as the server itself says in its
 * COMMAND reply (Redis 7's key specs: begin_search index/keyword, find_keys range/keynum; the
 * legacy first/last/step for entries without them), not from a hand-kept table. Redis Cluster
 * routing sends a command to the shard serving its keys' slot.
 *
 * The COMMAND reply comes from a member: hostile input. Every shape is checked; an entry that is
 * not understood is skipped (its command is then KEYSPEC_UNKNOWN), never half-taken. */
#ifndef REPOINT_PROTO_KEYSPEC_H
#define REPOINT_PROTO_KEYSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keyspec;
struct redisReply;

/* From a COMMAND reply (RESP2 array of [name, arity, flags, first, last, step, acl, tips,
 * key_specs, subcommands]); NULL with why when it is not one. */
struct keyspec *keyspec_from_command(const struct redisReply *r, char *why, size_t whylen);
void keyspec_free(struct keyspec *ks);
size_t keyspec_count(const struct keyspec *ks);      /* commands and subcommands taken */
size_t keyspec_skipped(const struct keyspec *ks);    /* entries not understood */

/* The slot of the keys of the complete command array at p[0..n), or: */
enum {
	KEYSPEC_NOKEYS = -1,     /* it has none */
	KEYSPEC_CROSSSLOT = -2,  /* they are in different slots */
	KEYSPEC_UNKNOWN = -3,    /* a command the reply did not describe, or whose keys it cannot tell */
	KEYSPEC_BAD = -4,        /* not a complete command array, or its arguments contradict its spec */
};
int keyspec_slot(const struct keyspec *ks, const uint8_t *p, size_t n);

#endif
