/* secret.h - where a secret named in the configuration comes from (probe_password, admin_token).
 *
 *   VALUE                 the value itself, written in the file (repoint -t warns about it)
 *   env:NAME              the environment variable NAME
 *   file:/PATH            the file's content (trailing line breaks dropped), read again when the file
 *                         changes (mtime, size or inode: an atomic rename or a Kubernetes secret
 *                         update); looked at at most once a second, and at once after a failed login
 *   secretsmanager:ID[#KEY]
 *                         AWS Secrets Manager GetSecretValue (JSON 1.1, through aws/http, signed
 *                         with the [aws] credentials; region from an ARN, else [aws]'s) of the
 *                         name or ARN ID, AWSCURRENT. SecretString is the value; with #KEY, that
 *                         member of the JSON object it holds; without, an RDS-managed secret
 *                         ({"username": .., "password": ..}) gives its password (and its username,
 *                         which the probe uses when probe_user is not set). Cached; fetched again
 *                         every secret_refresh, and at once when a login with it fails (at most
 *                         every SECRET_RETRY_MIN_MS); a failed fetch keeps the value it had
 *   iam                   an IAM auth token signed with the [aws] credentials: RDS (for the member's
 *                         host and port and the user), or ElastiCache and MemoryDB (the group or
 *                         cluster and the user); one token serves every connection for
 *                         SECRET_CACHE_TOKEN_REUSE_MS
 *
 * Values never reach a log line, /status, /metrics or a message: what is shown of a secret is its
 * kind and reference (env:NAME, the path, the secret's name or ARN, its version id), never the
 * value; a literal is shown as "literal" only. Values handed out are copies to wipe with
 * secret_value_free().
 */
#ifndef REPOINT_SECRET_H
#define REPOINT_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct aws_config;
struct config;
typedef struct json_t json_t;

/* Failed logins ask for a new fetch at most this often (a rotation half done keeps failing). */
#define SECRET_RETRY_MIN_MS 5000
/* A file is looked at (stat) at most this often. */
#define SECRET_FILE_CHECK_MS 1000
/* Values (files, SecretString) larger than this are refused. */
#define SECRET_MAX_BYTES 65536

enum secret_kind { SECRET_LITERAL, SECRET_ENV, SECRET_FILE, SECRET_SECRETSMANAGER, SECRET_IAM };
const char *secret_kind_name(enum secret_kind k);

/* A reference taken apart (pure). */
struct secret_ref {
	enum secret_kind kind;
	char arg[1024];     /* env: the name; file: the path; secretsmanager: the name or ARN */
	char key[256];      /* secretsmanager: #KEY, "" when none */
	char region[32];    /* secretsmanager: the ARN's region, "" for a name */
};

/* Classifies `value` (anything that is not one of the forms above is a literal). False with the
 * reason in why (which never quotes the value) for a malformed reference: "env:" without a valid
 * name, a relative path, a secretsmanager id or ARN that cannot be one. */
bool secret_ref_parse(const char *value, struct secret_ref *out, char *why, size_t whylen);

/* A GetSecretValue reply -> the value (SecretString; with key, that member of the JSON object it
 * holds; without, an RDS-managed secret's "password" and its "username" in *user, else the whole
 * string), both malloc'ed (*user may be NULL), and the VersionId (printable, cut to vlen). False
 * with the reason in why (never the value). Pure: the fuzzer and the unit tests feed it. */
bool secret_parse_reply(const char *body, size_t len, const char *key, char **value, char **user, char *version,
                        size_t vlen, char *why, size_t whylen);

/* ---- on the loop ---- */

/* One per running configuration: the secrets it reads, shared by reference (two services naming
 * the same secret cause one fetch), and the AWS client and credentials they need (made when the
 * first secretsmanager: or iam secret is opened; [aws] is read then and needs a restart). */
struct secrets;
struct secrets *secrets_new(struct event_base *base, const struct aws_config *aws, int64_t refresh_ms);
void secrets_set_refresh(struct secrets *r, int64_t refresh_ms);
/* After every secret is closed. */
void secrets_free(struct secrets *r);

struct secret;
/* The secret `ref` names (a reference to it, shared with every other opener of the same ref);
 * secretsmanager: starts fetching at once. NULL only when out of memory or for a malformed ref
 * (config_load refuses those first). */
struct secret *secret_open(struct secrets *r, const char *ref);
void secret_close(struct secret *s);
enum secret_kind secret_kind(const struct secret *s);

/* What an iam token is for: an RDS member (host, port) or, with resource set, an ElastiCache
 * replication group ("elasticache:ID") or MemoryDB cluster ("memorydb:NAME"), for user. */
struct secret_target {
	const char *host;
	uint16_t port;
	const char *user;
	const char *resource;
};

/* An IAM token is made again once it is this old (they are valid 15 minutes; the connection it
 * logs in stays in after that), or at once after a login with it was refused; at most
 * SECRET_TOKEN_CACHE of them (members x users) are kept. */
#define SECRET_CACHE_TOKEN_REUSE_MS (10 * 60 * 1000)
#define SECRET_TOKEN_CACHE 16

/* The current value (malloc'ed; free with secret_value_free), or NULL with the reason in why:
 * "secretsmanager:ID: not fetched yet", "env:NAME is not set", "no AWS credentials: ...". t is
 * needed for iam only. user, when not NULL, gets the username an RDS-managed secret carries
 * (malloc'ed, or NULL when there is none). */
char *secret_get(struct secret *s, const struct secret_target *t, char **user, char *why, size_t whylen);
void secret_value_free(char *v);
/* A login with the value was refused: look again now (file), fetch again soon (secretsmanager). */
void secret_login_failed(struct secret *s);
/* {"kind", "ref" (not for a literal), "version", "fetched_at", "fetches", "failures",
 * "last_error"}: never the value. */
json_t *secret_status_json(const struct secret *s);

/* For a command line (repoint drill talking to a running repoint): the value of `ref` now, with
 * the configuration's [aws] for a secretsmanager: reference (the fetch runs on a loop of its own,
 * at most timeout_ms). NULL with the reason in why. */
char *secret_fetch_once(const struct config *cfg, const char *ref, int64_t timeout_ms, char *why, size_t whylen);

#endif
