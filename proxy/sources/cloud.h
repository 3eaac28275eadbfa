/* sources/cloud.h - AWS control-plane replies -> one "cluster view".
 *
 * Pure parsers (no I/O, no clock): a reply body goes in, a cluster view comes out, or an error
 * with a reason. They are the only code that looks at those bodies, and they assume the bodies
 * are hostile: wrong roots and namespaces, missing fields, absurd ports, huge strings, deep
 * nesting, invalid UTF-8 and XML entity tricks all end in an error, never in a crash or a partial
 * update (a failed parse leaves the view exactly as it was).
 *
 *   RDS          DescribeDBClusters   -> status, engine, members (writer/reader, promotion tier)
 *                DescribeDBInstances  -> each member's endpoint and status (merged, paginated)
 *   ElastiCache  DescribeReplicationGroups -> status, node groups, members (CurrentRole when the
 *                                           group is not in cluster mode; else role unknown)
 *                DescribeCacheClusters (ShowCacheNodeInfo) -> node endpoints (cluster mode has no
 *                                           per-node endpoint in the replication group)
 *                DescribeGlobalReplicationGroups (ShowMemberInfo) -> which region+group is primary
 *   MemoryDB     DescribeClusters (ShowShardDetails, JSON) -> shards and nodes; roles unknown
 *
 * Roles from the control plane are hints for the topology, which still decides with probes;
 * ROLE_UNKNOWN means the API says nothing and probes alone decide.
 *
 * The requests these replies answer (for whoever drives the polling; all POST, see aws/http.h):
 *   rds          Version=2014-10-31  Action=DescribeDBClusters&DBClusterIdentifier=ID
 *                                    Action=DescribeDBInstances&Filters.Filter.1.Name=db-cluster-id
 *                                      &Filters.Filter.1.Values.Value.1=ID[&Marker=...]
 *   elasticache  Version=2015-02-02  Action=DescribeReplicationGroups&ReplicationGroupId=ID
 *                                    Action=DescribeCacheClusters&ShowCacheNodeInfo=true
 *                                      [&CacheClusterId=MEMBER][&Marker=...]
 *                                    Action=DescribeGlobalReplicationGroups
 *                                      &GlobalReplicationGroupId=ID&ShowMemberInfo=true
 *   memorydb     JSON 1.1, X-Amz-Target: AmazonMemoryDB.DescribeClusters
 *                                    {"ClusterName":"NAME","ShowShardDetails":true[,"NextToken":..]}
 */
#ifndef REPOINT_SOURCES_CLOUD_H
#define REPOINT_SOURCES_CLOUD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "topology.h"

enum cloud_kind {
	CLOUD_NONE,
	CLOUD_RDS,                /* Aurora or Multi-AZ DB cluster */
	CLOUD_ELASTICACHE,        /* replication group */
	CLOUD_ELASTICACHE_GLOBAL, /* Global Datastore: members are regional replication groups */
	CLOUD_MEMORYDB,
};
const char *cloud_kind_name(enum cloud_kind k);

struct cloud_member {
	char id[128];         /* RDS DBInstanceIdentifier, ElastiCache CacheClusterId, MemoryDB node
	                         name ("0001-001"), Global Datastore ReplicationGroupId */
	char host[256];       /* "" until known (RDS: after DescribeDBInstances) */
	uint16_t port;        /* 0 until known */
	enum role role;       /* what the control plane says; ROLE_UNKNOWN when it says nothing */
	char status[48];      /* instance / node / membership status, "" when not given */
	int promotion_tier;   /* RDS failover priority (0 first), -1 when not given */
	char region[32];      /* Global Datastore member's region, else "" */
	char group[64];       /* ElastiCache NodeGroupId, MemoryDB shard, Global member's group */
	char node_id[16];     /* ElastiCache CacheNodeId ("0001"), else "" */
	char zone[32];        /* availability zone, "" when not given */
};

struct cloud_group {      /* ElastiCache node group / MemoryDB shard */
	char id[64];
	char status[48];
	char primary_host[256];  /* ElastiCache PrimaryEndpoint (cluster mode disabled), else "" */
	uint16_t primary_port;
	int nmembers;
};

struct cloud_view {
	enum cloud_kind kind;
	char id[128];             /* the cluster / replication group / global datastore / cluster */
	char status[48];          /* "available", "failing-over", "modifying", ... */
	char engine[32];          /* "aurora-postgresql", "postgres", "redis", "valkey", ... */
	char engine_version[32];
	bool cluster_mode;        /* ElastiCache ClusterEnabled; MemoryDB always */
	bool multi_az;
	bool tls;                 /* in-transit encryption on: ElastiCache TransitEncryptionEnabled,
	                             MemoryDB TLSEnabled */
	char endpoint[256];       /* RDS cluster (writer) endpoint, ElastiCache configuration
	                             endpoint, MemoryDB cluster endpoint; "" when none */
	uint16_t port;            /* its port (RDS: the cluster's), 0 when not given */
	int nmembers;
	struct cloud_member *members;   /* owned */
	int ngroups;
	struct cloud_group *groups;     /* owned */
	char next_token[1024];    /* Marker / NextToken of the last page parsed, "" on the last page */
};

/* Limits that keep a hostile reply from making us allocate without bound. */
#define CLOUD_MAX_MEMBERS 1024
#define CLOUD_MAX_GROUPS 512

/* An empty view (also what cloud_view_free leaves behind). */
void cloud_view_init(struct cloud_view *v);
/* Frees what the view owns and empties it. */
void cloud_view_free(struct cloud_view *v);

/* Index of the only member reported as writer, -1 when none or several. */
int cloud_view_writer(const struct cloud_view *v);
/* Index of the member with this id (case-insensitive, as AWS identifiers are), or -1. */
int cloud_view_find(const struct cloud_view *v, const char *id);

/* Every parser returns true on success; false with a reason in err (and v untouched). An AWS
 * error body is recognized as such: "AWS error DBClusterNotFoundFault: ...". */

/* RDS DescribeDBClusters: replaces v with the cluster `cluster_id` (NULL: the first one). */
bool cloud_parse_rds_clusters(const char *body, size_t len, const char *cluster_id,
                              struct cloud_view *v, char *err, size_t errlen);
/* RDS DescribeDBInstances (one page): merges endpoint, status and zone into the members with the
 * same identifier (others ignored); sets v->next_token from <Marker>. */
bool cloud_parse_rds_instances(const char *body, size_t len, struct cloud_view *v, char *err,
                               size_t errlen);

/* ElastiCache DescribeReplicationGroups: replaces v with group `group_id` (NULL: the first);
 * with shard != NULL only that node group's members are kept (an unknown shard is an error). */
bool cloud_parse_ec_replication_groups(const char *body, size_t len, const char *group_id,
                                       const char *shard, struct cloud_view *v, char *err,
                                       size_t errlen);
/* ElastiCache DescribeCacheClusters with ShowCacheNodeInfo (one page): merges node endpoints,
 * node status and zone by CacheClusterId (+CacheNodeId); sets v->next_token from <Marker>. */
bool cloud_parse_ec_cache_clusters(const char *body, size_t len, struct cloud_view *v, char *err,
                                   size_t errlen);
/* ElastiCache DescribeGlobalReplicationGroups with ShowMemberInfo: replaces v with the global
 * datastore `global_id` (NULL: the first); one member per regional replication group, role
 * WRITER for the PRIMARY one. */
bool cloud_parse_ec_global_groups(const char *body, size_t len, const char *global_id,
                                  struct cloud_view *v, char *err, size_t errlen);

/* MemoryDB DescribeClusters with ShowShardDetails (JSON 1.1): replaces v with cluster `name`
 * (NULL: the first); shard as for ElastiCache; sets v->next_token from NextToken. */
bool cloud_parse_memorydb_clusters(const char *body, size_t len, const char *name,
                                   const char *shard, struct cloud_view *v, char *err,
                                   size_t errlen);

#endif
