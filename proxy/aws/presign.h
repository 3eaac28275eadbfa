/* aws/presign.h - SigV4 query-string presigning, and the IAM auth tokens built on it.
 *
 * The one place repoint signs by hand: libcurl's CURLOPT_AWS_SIGV4 signs requests it sends (an
 * Authorization header), it cannot produce a presigned URL for someone else to present. The
 * algorithm is AWS's "Signature Version 4, authenticating requests with query parameters",
 * laid out exactly as botocore's SigV4QueryAuth does (tests/unit/test_presign.c compares the
 * results byte for byte with botocore's):
 *
 *   canonical request  GET \n / \n sorted, percent-encoded query (no X-Amz-Signature) \n
 *                      host:HOST \n \n host \n SHA-256 of the empty payload
 *   string to sign     AWS4-HMAC-SHA256 \n DATE \n SCOPE \n hex(SHA-256(canonical request))
 *   key                HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request"
 *   query              the operation's parameters in their order, then X-Amz-Algorithm,
 *                      -Credential, -Date, -Expires, -SignedHeaders[, -Security-Token], and
 *                      X-Amz-Signature last
 *
 * Two tokens use it, each a password for 900 s (the scheme stripped):
 *   RDS (generate-db-auth-token)   HOST:PORT/?Action=connect&DBUser=USER&X-Amz-...   rds-db
 *   ElastiCache / MemoryDB         NAME/?Action=connect&User=USER[&ResourceType=ServerlessCache]
 *                                  &X-Amz-...    elasticache | memorydb
 *
 * Pure functions: the caller passes the time, so that tests pin it. Results are malloc'ed and are
 * secrets (a token is a password): free them with aws_presign_free(), which wipes them.
 */
#ifndef REPOINT_AWS_PRESIGN_H
#define REPOINT_AWS_PRESIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/http.h"

#define AWS_AUTH_TOKEN_EXPIRES_S 900

struct aws_presign {
	const char *host;            /* as written in the URL; signed lowercased, without :443 (https) or
	                                :80 (http), as botocore does */
	bool https;                  /* the scheme the URL would have (only the default port depends on it) */
	const char *const *params;   /* {"Action", "connect", "DBUser", "u", NULL}: in this order */
	const char *region;
	const char *service;         /* the signing name: "rds-db", "elasticache", "memorydb" */
	const struct aws_credentials *creds;
	int64_t now_s;               /* seconds since the epoch (UTC) */
	int expires_s;               /* 1..604800 */
};

/* "HOST/?PARAMS&X-Amz-...&X-Amz-Signature=HEX" (path "/", no scheme). NULL with the reason in err
 * (never a secret) when an input is malformed or memory runs out. */
char *aws_presign(const struct aws_presign *p, char *err, size_t errlen);

/* The RDS IAM auth token of `aws rds generate-db-auth-token --hostname HOST --port PORT
 * --username USER --region REGION`. */
char *aws_rds_auth_token(const char *host, uint16_t port, const char *user, const char *region,
                         const struct aws_credentials *creds, int64_t now_s, char *err, size_t errlen);

/* The ElastiCache (service "elasticache": NAME is the replication group or serverless cache) or
 * MemoryDB (service "memorydb": NAME is the cluster) IAM auth token for USER; serverless adds
 * ResourceType=ServerlessCache (ElastiCache Serverless only). */
char *aws_cache_auth_token(const char *service, const char *name, const char *user, bool serverless,
                           const char *region, const struct aws_credentials *creds, int64_t now_s,
                           char *err, size_t errlen);

/* Wipes and frees a token (NULL is fine). */
void aws_presign_free(char *token);

#endif
