/* config.h - repoint's configuration: an INI file read with inih into one struct per service.
 *
 * Every key lives in one table in config.c (type, bounds, default). Errors name the file and line:
 * "conf/repoint.ini:12: probe_interval: expected a duration like 250ms, 1s or 2m, got 'fast'". */
#ifndef REPOINT_CONFIG_H
#define REPOINT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "util.h"

enum protocol { PROTOCOL_POSTGRES, PROTOCOL_MYSQL, PROTOCOL_REDIS };
enum route { ROUTE_WRITER, ROUTE_READER, ROUTE_ANY };
enum drain_mode { DRAIN_GRACEFUL, DRAIN_IMMEDIATE };
/* TLS to the members, in libpq's sslmode words: none; encrypted without checking who answers;
 * a certificate chaining to the CA; and naming the member (or tls_server_name). */
enum tls_mode { TLS_OFF, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };
/* TLS on a service's listener: none; plaintext and TLS clients both; TLS clients only. */
enum listen_tls_mode { LISTEN_TLS_OFF, LISTEN_TLS_ON, LISTEN_TLS_REQUIRE };
enum auth_mode { AUTH_PASSTHROUGH, AUTH_REPOINT };
enum client_auth { CLIENT_AUTH_SCRAM, CLIENT_AUTH_MD5, CLIENT_AUTH_TRUST, CLIENT_AUTH_MYSQL_NATIVE };

const char *protocol_name(enum protocol p);
const char *route_name(enum route r);
const char *drain_mode_name(enum drain_mode d);

enum cluster_mode { CLUSTER_OFF, CLUSTER_ON, CLUSTER_AUTO };
enum io_model { IO_EPOLL, IO_URING };

struct service_config {
	char *name;           /* from "[service NAME]" */
	int line;             /* line of the section header, for messages about the whole section */
	enum protocol protocol;
	struct hostport listen;
	enum route route;
	struct hostport *members;
	int nmembers;
	int64_t probe_interval_ms;       /* default 250ms */
	int64_t probe_timeout_ms;        /* default 1s */
	int64_t failover_probe_interval_ms; /* while failing over; default 50ms */
	int down_after;                  /* consecutive failed probes before a member is down; default 3 */
	bool probes;                     /* ask members their role (default on); off: with `source`,
	                                    the control plane's word alone routes */
	bool multiplex;                  /* redis: stateless commands of all clients share one
	                                    connection per server (default off) */
	enum io_model io;                /* how a session's plain sockets move bytes: epoll (readiness,
	                                    the default) or uring (completions, net/uring.h) */
	enum cluster_mode cluster;       /* redis: on -- the members are seeds of a Redis Cluster;
	                                    every shard's primary is followed, commands go by key
	                                    slot; auto -- the first member's answer decides */
	char *probe_user;                /* default: postgres "postgres", mysql "root", redis NULL */
	bool probe_user_given;           /* probe_user was in the file (else an RDS-managed secret's
	                                    username is used, when probe_password names one) */
	char *probe_password;            /* a secret reference (secret.h: a literal, env:, file:,
	                                    secretsmanager:, iam); default "" (never NULL) */
	char *probe_database;            /* default: postgres "postgres", others NULL */
	enum tls_mode tls;               /* to the members (sessions, shared connections, probes); default off,
	                                    or verify-full when an AWS source says in-transit encryption is on */
	bool tls_given;                  /* `tls` was in the file: it wins over the control plane's word */
	char *tls_ca_file;               /* NULL: the system store */
	char *tls_server_name;           /* NULL: each member's host name */
	char *tls_cert_file;             /* client certificate for mutual TLS; NULL for none */
	char *tls_key_file;              /* its key; NULL: in tls_cert_file */
	enum listen_tls_mode listen_tls; /* clients -> repoint; default off */
	char *listen_tls_cert_file;      /* PEM chain; re-read when it changes (rotation) */
	char *listen_tls_key_file;       /* NULL: in listen_tls_cert_file */
	enum auth_mode auth;             /* passthrough (default): the member authenticates the client;
	                                    repoint: repoint does, and logs in to members itself */
	char *auth_file;                 /* auth = repoint: users and their secrets (pgbouncer's format) */
	enum client_auth client_auth;    /* auth = repoint: how clients prove who they are */
	char *member_user;               /* auth = repoint, redis: the user repoint logs in to members as */
	char *member_password;           /* its secret (secret.h: a literal, env:, file:, secretsmanager:, iam) */
	int64_t reauth_interval_ms;      /* redis: each server connection logs in again this often; 11h */
	char *iam_resource;              /* redis iam: "elasticache:ID", "elasticache-serverless:NAME",
	                                    "memorydb:NAME"; NULL: from source */
	int64_t hold_timeout_ms;         /* default 30s */
	enum drain_mode drain;           /* default graceful */
	int64_t drain_timeout_ms;        /* default 10s */
	int64_t connect_timeout_ms;      /* upstream connect; default 5s */
	int64_t resolve_interval_ms;     /* members given by name are looked up again this often; default 30s */
	int max_clients;                 /* default 10000 */
	int pool_size;                   /* auth = repoint (postgres): idle server connections kept per member; 20; 0: none */
	int64_t server_idle_timeout_ms;  /* ... one kept longer is closed; default 10m */
	int64_t server_lifetime_ms;      /* ... one older is not kept again; default 1h */
	char *source;                    /* "rds:ID", "elasticache:ID", "elasticache-global:ID",
	                                    "memorydb:NAME"; NULL for static members */
	char *shard;                     /* ElastiCache/MemoryDB node group to pin; NULL for none */
	struct service_config *next;
};

/* What an ElastiCache/MemoryDB IAM token of this service names: iam_resource, else its source
 * when that is elasticache:ID or memorydb:NAME; NULL when neither. */
const char *config_iam_resource(const struct service_config *svc);

/* [aws]: the control plane used by `source = ...` services. */
struct aws_config {
	char *region;                 /* NULL when not set: AWS_REGION / AWS_DEFAULT_REGION / profile's */
	char *profile;                /* NULL when not set: AWS_PROFILE or "default" */
	char *endpoint_url;           /* override, e.g. http://127.0.0.1:4566; NULL for the real one */
	int64_t poll_interval_ms;     /* default 5s (with jitter) */
	int64_t failover_poll_interval_ms; /* while a failover is under way; default 1s */
	int64_t request_timeout_ms;   /* one attempt of an API call; default 10s */
	int max_attempts;             /* attempts of a call (throttling, 5xx, timeouts retried); default 5 */
};

struct config {
	char *path;
	bool has_admin;
	bool has_metrics;
	struct hostport metrics;            /* [repoint] metrics: /metrics alone on an address of its own */
	struct hostport admin;              /* [repoint] admin; off when absent */
	enum log_level log_level;           /* default info */
	enum log_format log_format;         /* default text */
	int64_t shutdown_timeout_ms;        /* grace period on SIGTERM/SIGINT; default 10s */
	char *admin_token;                  /* bearer token the admin API requires for POST (a secret
	                                       reference, secret.h); NULL: none */
	int64_t secret_refresh_ms;          /* secretsmanager: secrets are fetched again this often; 5m */
	char *warnings;                     /* "file:line: ..." lines (repoint -t prints them), or NULL */
	struct aws_config aws;
	struct service_config *services;    /* in file order */
	int nservices;
};

/* Reads and validates PATH. On success returns a config (and err ""); on failure returns NULL and
 * writes every problem found into err (truncated to errlen): one "file:line: message" per line, in
 * line order, lines joined by '\n' with none at the end; "file: message" for the whole file
 * ("cannot open: ...", "no services: ..."). err may be NULL when errlen is 0.
 * Uses inih's process-wide settings for the duration of the call: not thread-safe. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* The same from a string (for tests); `name` stands in for the file name in messages. */
struct config *config_load_string(const char *text, const char *name, char *err, size_t errlen);

void config_free(struct config *cfg);

#endif
