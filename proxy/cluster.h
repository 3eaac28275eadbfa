/* cluster.h - a Redis Cluster service's shards: which shard owns each slot, which shard each member
 * is in, and a topology per shard that decides its primary (cluster = on).
 *
 *   probes ──roles──▶ shard's topology ──events──▶ service     (the same rules as one service's)
 *   a node's CLUSTER SHARDS ──slot map──▶ cluster_apply ──▶ shards, owners, members' shards
 *
 * Every shard's topology spans all the service's members; a member is observed only in its own
 * shard's, so the other shards never see it claim anything. A shard keeps its identity (and what
 * its topology knows: fencing, the last failover) across maps by its members, not by its place in
 * a reply: a failover swaps a shard's primary and replica, a resharding moves slots between
 * shards, neither makes a new shard. Pure state, no sockets, no clock of its own. */
#ifndef REPOINT_CLUSTER_H
#define REPOINT_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/slots.h"
#include "topology.h"

struct cluster_shard {
	struct topology topo;
	uint32_t nslots;
	int first_slot;              /* its lowest slot, -1 when it serves none */
	char ranges[160];            /* "0-5460" or "0-100,200-5460" (cut with "..."), for /status */
	uint64_t failovers_seen;     /* topo.failovers already counted by the service */
};

struct cluster {
	struct cluster_shard *shards;
	int nshards;
	int16_t owner[SLOTS_COUNT];  /* slot -> shard, -1 when no shard serves it */
	int *member_shard;           /* member -> shard, -1 when in none (a seed the map does not list) */
	int nmembers;
	int down_after;
	uint64_t maps;               /* slot maps taken that changed something */
};

/* A shard's topology raised `ev` about `member` (-1: none in particular). */
typedef void (*cluster_react_fn)(void *arg, int shard, unsigned ev, int member);

void cluster_init(struct cluster *c, int down_after);
void cluster_free(struct cluster *c);

/* The service's membership changed (topo_remap's map: new member i was old member map[i], or is
 * new when map[i] < 0): every shard's topology follows. False on allocation failure (nothing
 * changed). */
bool cluster_remap(struct cluster *c, int n, const int *map, int64_t now_ms, cluster_react_fn react, void *arg);

/* Take a slot map of `map_shards` shards: member i is in map shard in_shard[i] (-1: none), slot s
 * is served by map shard owner[s] (-1: none). A member that changes shard leaves the old one as a
 * member that left (losing its writer role there) and starts unknown in the new one. A shard the
 * map leaves out altogether (none of its slots served by a map shard: a map seen mid-failover, or an
 * empty one) stays as it is. Returns whether anything changed; false with *oom on allocation failure (nothing changed). */
bool cluster_apply(struct cluster *c, int map_shards, const int *in_shard, const int16_t *owner, int64_t now_ms,
		   cluster_react_fn react, void *arg, bool *oom);

/* The topology member i is observed in, NULL when it is in no shard. */
struct topology *cluster_topo_of(struct cluster *c, int member);
/* The shard serving `slot` (-1: none), and the member to send its commands to now (-1: hold). */
int cluster_slot_shard(const struct cluster *c, int slot);
int cluster_slot_writer(const struct cluster *c, int slot);
/* A node said `slot` is served by shard k now (a MOVED during a resharding): taken until the next
 * map says otherwise. */
void cluster_move_slot(struct cluster *c, int slot, int k);
/* Every slot has a shard, and every shard a writer ready. */
bool cluster_ready(const struct cluster *c);

#endif
