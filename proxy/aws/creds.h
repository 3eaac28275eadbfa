/* aws/creds.h - where AWS credentials come from: the SDKs' default chain, asynchronously.
 *
 * The first source that is configured wins, in the order the AWS SDKs (botocore, Java v2) use:
 *   1. environment      AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN]
 *   2. web identity     AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN [+ AWS_ROLE_SESSION_NAME]
 *                       -> STS AssumeRoleWithWebIdentity (unsigned Query call; endpoint from
 *                       AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL, else regional STS)  [EKS IRSA]
 *   3. shared files     AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials, "[NAME]") over
 *                       AWS_CONFIG_FILE (~/.aws/config, "[profile NAME]" / "[default]");
 *                       static keys, or role_arn + web_identity_token_file (as 2.)
 *   4. container        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (http://169.254.170.2...) or
 *                       AWS_CONTAINER_CREDENTIALS_FULL_URI, with
 *                       AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
 *                       or AWS_CONTAINER_AUTHORIZATION_TOKEN as the Authorization header [ECS, EKS
 *                       Pod Identity]
 *   5. EC2 IMDSv2       PUT /latest/api/token,
 *                       GET /latest/meta-data/iam/security-credentials/[ROLE];
 *                       AWS_EC2_METADATA_SERVICE_ENDPOINT overrides the endpoint,
 *                       AWS_EC2_METADATA_DISABLED=true skips it
 * Once chosen, the source stays: its failures are reported, never papered over by another identity.
 * Temporary credentials are refreshed ahead of their expiry (5 minutes before, or halfway through
 * a shorter life); while a refresh fails, the old credentials are used until they expire.
 *
 * Everything that decides (which source, the profile files, the replies, the refresh deadline) is
 * a pure function below, unit-tested without a network.
 */
#ifndef REPOINT_AWS_CREDS_H
#define REPOINT_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/http.h"

/* Credentials are treated as expired this long before their Expiration. */
#define AWS_CREDS_EXPIRY_MARGIN_MS (60 * 1000)
/* Refresh this long before the expiry... */
#define AWS_CREDS_REFRESH_AHEAD_MS (5 * 60 * 1000)

/* Looks up an environment variable; tests inject their own. NULL or "" mean unset. */
typedef const char *(*aws_getenv_fn)(void *arg, const char *name);

enum aws_creds_source {
	AWS_CREDS_NONE,
	AWS_CREDS_ENV,
	AWS_CREDS_WEB_IDENTITY,
	AWS_CREDS_PROFILE,
	AWS_CREDS_CONTAINER,
	AWS_CREDS_IMDS,
};
const char *aws_creds_source_name(enum aws_creds_source s);

/* One profile, merged from the config file and the credentials file (the latter wins). */
struct aws_profile {
	bool found;                  /* a section for it exists in either file */
	char name[64];
	char access_key_id[128];
	char secret_access_key[128];
	char session_token[4096];
	char region[32];
	char role_arn[256];
	char web_identity_token_file[1024];
	char role_session_name[64];
	char unsupported[64];        /* first key of a kind repoint cannot use (source_profile,
	                                credential_process, sso_*...), "" when none */
};

/* Parses the two files' contents (either may be NULL) for `profile`. False with "name:line: ..."
 * in err when a file is malformed. Lines of any length are accepted (inih's own limit is 200). */
bool aws_profile_parse(const char *credentials_text, const char *config_text, const char *profile,
                       struct aws_profile *out, char *err, size_t errlen);
/* The same from files; a missing file is not an error (NULL path: skipped). */
bool aws_profile_load(const char *credentials_path, const char *config_path, const char *profile,
                      struct aws_profile *out, char *err, size_t errlen);

/* The decision: which source, with everything needed to use it. */
struct aws_creds_plan {
	enum aws_creds_source source;
	char profile[64];
	char region[32];                 /* override, AWS_REGION, AWS_DEFAULT_REGION, profile; or "" */
	struct aws_credentials creds;    /* ENV and static PROFILE */
	/* WEB_IDENTITY */
	char role_arn[256];
	char role_session_name[64];
	char token_file[1024];
	char sts_endpoint[512];
	/* CONTAINER */
	char container_url[1024];
	char container_token[2048];      /* AWS_CONTAINER_AUTHORIZATION_TOKEN */
	char container_token_file[1024]; /* ..._TOKEN_FILE: read at each fetch (it is rotated) */
	/* IMDS */
	char imds_endpoint[256];         /* no trailing slash */
};

/* Decides the source from the environment (env) and the shared files they point at. profile and
 * region are the [aws] settings (NULL: from the environment). False with a reason in err when the
 * configuration is broken (half of a key pair, an explicit profile that does not exist, a profile
 * of an unsupported kind, a container URI that is not allowed) or nothing is available at all. */
bool aws_creds_plan(aws_getenv_fn env, void *env_arg, const char *profile, const char *region,
                    struct aws_creds_plan *out, char *err, size_t errlen);

/* AWS_CONTAINER_CREDENTIALS_FULL_URI rule of the SDKs: https anywhere; plain http only to a
 * loopback address or the ECS / EKS Pod Identity link-local agents. */
bool aws_container_uri_allowed(const char *url);

/* STS AssumeRoleWithWebIdentity reply -> credentials (Expiration required). */
bool aws_creds_parse_sts(const char *body, size_t len, struct aws_credentials *out, char *err,
                         size_t errlen);
/* Container / IMDS JSON reply ({"AccessKeyId","SecretAccessKey","Token","Expiration"}; IMDS
 * "Code" must be "Success" when present) -> credentials. */
bool aws_creds_parse_json(const char *body, size_t len, struct aws_credentials *out, char *err,
                          size_t errlen);

/* "2024-05-01T12:34:56Z", with optional fraction and "+hh:mm"/"-hhmm" offset -> ms since epoch. */
bool aws_parse_iso8601(const char *s, int64_t *out_ms);

/* When to refresh credentials expiring at expiration_ms (wall clock), seen at now_ms:
 * AWS_CREDS_REFRESH_AHEAD_MS before the expiry, or halfway through a life shorter than twice
 * that; INT64_MAX for credentials that do not expire; now_ms when already expired. */
int64_t aws_creds_refresh_at(int64_t now_ms, int64_t expiration_ms);
/* True when c can sign a request at now_ms (keys present, not within the expiry margin). */
bool aws_creds_usable(const struct aws_credentials *c, int64_t now_ms);

/* ---- the provider, on the loop ---- */

struct aws_creds;

struct aws_creds_options {
	const char *profile;     /* [aws] profile, NULL: AWS_PROFILE or "default" */
	const char *region;      /* [aws] region, NULL: from the environment / profile */
	aws_getenv_fn getenv;    /* NULL: the process environment */
	void *getenv_arg;
};

/* err is NULL on success, else why there are no credentials; creds NULL then. */
typedef void (*aws_creds_cb)(void *arg, const struct aws_credentials *creds, const char *err);

/* Plans the chain (see aws_creds_plan; failures land in err) and, for a temporary source, starts
 * fetching at once so that credentials are ready by the first call. Requests go through http. */
struct aws_creds *aws_creds_new(struct aws_http *http, const struct aws_creds_options *opts,
                                char *err, size_t errlen);
/* Cancels everything (no callbacks) and wipes the secrets. Not from inside a callback; before
 * aws_http_free() of the client it uses. */
void aws_creds_free(struct aws_creds *c);

/* Asks for usable credentials; cb runs exactly once, later from the loop (never from inside this
 * call), unless cancelled with aws_creds_cancel(). */
bool aws_creds_get(struct aws_creds *c, aws_creds_cb cb, void *arg);
/* Drops every pending aws_creds_get() made with this arg. */
void aws_creds_cancel(struct aws_creds *c, void *arg);
/* The current credentials if usable right now, else NULL (no I/O). */
const struct aws_credentials *aws_creds_current(const struct aws_creds *c);
/* The service said the credentials are expired or invalid (ExpiredToken...): fetch anew. */
void aws_creds_invalidate(struct aws_creds *c);

enum aws_creds_source aws_creds_source(const struct aws_creds *c);
const char *aws_creds_region(const struct aws_creds *c);
const char *aws_creds_last_error(const struct aws_creds *c);   /* "" when none */
int64_t aws_creds_expiration(const struct aws_creds *c);       /* wall ms, 0: none / static */

#endif
