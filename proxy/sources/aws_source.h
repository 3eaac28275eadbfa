/* sources/aws_source.h - follow a cluster through the AWS control plane.
 *
 * One aws_source per service with `source = KIND:ID`. It polls the control plane on the loop
 * (aws/http: curl multi, SigV4, retries with backoff; aws/creds: the standard credential chain),
 * parses the replies (sources/cloud) and hands the service one cluster view per successful poll:
 * the members with their endpoints and what the control plane says of their roles. It never
 * touches sessions or the topology: the service decides what the view means.
 *
 *   rds:ID                 DescribeDBClusters + DescribeDBInstances (instance endpoints, not the
 *                          cluster DNS name, which lags a failover)
 *   elasticache:ID         DescribeReplicationGroups (+ DescribeCacheClusters in cluster mode);
 *                          `shard` pins one node group
 *   elasticache-global:ID  DescribeGlobalReplicationGroups (ShowMemberInfo): the PRIMARY member's
 *                          region and group, then that group's DescribeReplicationGroups, signed
 *                          for that region
 *   memorydb:NAME          DescribeClusters (ShowShardDetails); `shard` pins one shard; no roles
 *
 * Polling is gentle by default (poll_interval with +-20% jitter) and faster while the service says
 * a failover is under way (aws_source_set_fast) or the cluster reports a status other than
 * "available" (routine "backing-up"/"snapshotting", and a global datastore's "primary-only",
 * count as available here). Polls never overlap: the next is scheduled when one ends. A failed
 * poll keeps the last view (the view callback is simply not called), is reported through the
 * error callback and in status/metrics, and is logged once per distinct error code.
 *
 * Each source owns its AWS client and credential provider. Both callbacks run from the loop,
 * never inside another call of this API nor inside aws/http or aws/creds callbacks, so a callback
 * may call anything here, aws_source_free() of its own source included.
 */
#ifndef REPOINT_SOURCES_AWS_SOURCE_H
#define REPOINT_SOURCES_AWS_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "topology.h"

struct event_base;
struct evbuffer;
typedef struct json_t json_t;
struct aws_source;

struct aws_source_member {
	char id[128];       /* instance / cache cluster / node name */
	char host[256];     /* endpoint address */
	uint16_t port;
	enum role role;     /* the control plane's word: WRITER, READER, or UNKNOWN (MemoryDB, cluster mode) */
	bool available;     /* the member's own status says it serves ("available", "in-sync",
	                       "associated", "backing-up", "configuring-..."; also "" = not said) */
	char status[48];
	char group[64];     /* ElastiCache node group, MemoryDB shard ("" when none) */
};

struct aws_source_view {
	char status[48];                   /* the cluster's status: "available", "failing-over", ... */
	bool tls;                          /* the control plane says in-transit encryption is on */
	int nmembers;                      /* members with a known endpoint, in a stable order */
	const struct aws_source_member *members;
	int64_t polled_ms;                 /* monotonic time the poll completed */
};

/* Called after each successful poll (the view is valid only during the call). */
typedef void (*aws_source_view_cb)(void *arg, const struct aws_source_view *v);
/* Called when a poll fails for good (after the client's retries): AWS error code (or "transport"
 * when no reply came, "parse" for a reply that makes no sense - a global datastore without a
 * single PRIMARY included -, "credentials", "InvalidRequest" for a bad endpoint_url, "Internal"
 * when out of memory) and message. */
typedef void (*aws_source_error_cb)(void *arg, const char *code, const char *message);

/* `source` is "rds:ID" etc. as in the config; `shard` may be NULL. `subject` prefixes log lines. */
struct aws_source *aws_source_new(struct event_base *base, const struct aws_config *aws, const char *source,
				  const char *shard, const char *subject, aws_source_view_cb view_cb,
				  aws_source_error_cb err_cb, void *arg);
/* Starts polling (the first poll at once). False (logged) when the source cannot work at all
 * (e.g. no region anywhere, malformed source, a broken credentials configuration). NULL from
 * aws_source_new only when out of memory. */
bool aws_source_start(struct aws_source *src) __attribute__((warn_unused_result));
/* Poll at failover_poll_interval while `fast` (the service is failing over), else poll_interval. */
void aws_source_set_fast(struct aws_source *src, bool fast);
/* Poll as soon as possible (no-op while a poll is under way). */
void aws_source_poll_now(struct aws_source *src);
/* { "source", ["shard",] "region", "status", "last_poll_at", "last_error": {code, message, at} |
 *   null, "polls", "failures", "throttles", "retries", "last_backoff_ms", "credentials": source
 *   name }; times are ISO 8601 UTC (null before any), last_error stays after a recovery; polls
 *   counts polls ended (failures included), throttles/retries count HTTP attempts. */
json_t *aws_source_status(const struct aws_source *src);
/* Prometheus samples (families written by the caller's table; see service_metrics). */
uint64_t aws_source_polls(const struct aws_source *src);
uint64_t aws_source_failures(const struct aws_source *src);
uint64_t aws_source_throttles(const struct aws_source *src);
uint64_t aws_source_retries(const struct aws_source *src);
int64_t aws_source_last_backoff_ms(const struct aws_source *src);
void aws_source_free(struct aws_source *src);

/* An AWS error message made safe to keep in /status and logs: printable ASCII only, at most
 * AWS_ERROR_TEXT_MAX characters, and no request ids, URLs, signatures or access key ids
 * (each such word becomes "[redacted]"). dst has room for len bytes. */
#define AWS_ERROR_TEXT_MAX 200
void aws_source_error_text(char *dst, size_t len, const char *msg);

#endif
