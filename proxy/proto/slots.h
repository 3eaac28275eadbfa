/* proto/slots.h - Redis Cluster's key space, as a pure module (issue 12's first slice): which slot
 * a key hashes to, and the slot map a node's CLUSTER SHARDS (7.0+) or CLUSTER SLOTS reply
 * describes. Replies come from members, so they are hostile input: every shape is checked, and a
 * reply that is not a slot map is refused with the reason, never half taken.
 *
 *   slot = CRC16-XMODEM(key or its {hash tag}) mod 16384
 *
 * The hash tag is what lies between the first '{' and the first '}' after it, when that is not
 * empty; otherwise the whole key counts (as Redis's keyHashSlot does). */
#ifndef REPOINT_PROTO_SLOTS_H
#define REPOINT_PROTO_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLOTS_COUNT 16384
#define SLOTS_MAX_SHARDS 1024
#define SLOTS_MAX_REPLICAS 16

uint16_t slots_crc16(const uint8_t *p, size_t n);
uint16_t slots_key_slot(const uint8_t *key, size_t n);

struct slots_node {
	char host[256];      /* as the node announces itself (an IP, or a hostname with 7.0's cluster-announce-hostname) */
	uint16_t port;
	char id[41];         /* the node id (40 hex digits), "" when the reply has none */
};

struct slots_shard {
	struct slots_node primary;
	struct slots_node replicas[SLOTS_MAX_REPLICAS];
	int nreplicas;
	uint32_t nslots;     /* how many slots it serves */
};

/* Which shard serves each slot (-1: none: the cluster is not fully covered). */
struct slots_map {
	struct slots_shard shards[SLOTS_MAX_SHARDS];
	int nshards;
	int16_t owner[SLOTS_COUNT];
	uint32_t covered;    /* slots with an owner */
};

struct redisReply;
/* A CLUSTER SLOTS reply ([[start, end, [host, port, id], replicas...], ...]) or a CLUSTER SHARDS
 * reply ([["slots", [start, end, ...], "nodes", [[field, value, ...], ...]], ...]; only nodes with
 * role master/replica and health online count) into m. False with why (no part of the reply
 * quoted beyond a short name) when the reply is not one: a wrong type, a slot out of range, two
 * shards claiming one slot, too many shards. */
bool slots_from_cluster_slots(const struct redisReply *r, struct slots_map *m, char *why, size_t whylen);
bool slots_from_cluster_shards(const struct redisReply *r, struct slots_map *m, char *why, size_t whylen);
/* What a node's reply to CLUSTER SHARDS (or SLOTS) says of it: in a cluster (an array), not in one
 * (the error every CLUSTER command gets from a server with cluster support disabled), no answer to
 * CLUSTER SHARDS (a server before 7.0 does not know it; an ACL may forbid it: ask CLUSTER SLOTS),
 * or nothing yet (LOADING, any other error). */
enum slots_membership { SLOTS_UNKNOWN, SLOTS_IN_CLUSTER, SLOTS_NOT_CLUSTER, SLOTS_NO_SHARDS };
enum slots_membership slots_membership(const struct redisReply *r);

#endif
