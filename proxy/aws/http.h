/* aws/http.h - a small AWS API client on the libevent loop.
 *
 * One `struct aws_http` owns a libcurl multi handle driven by libevent: curl tells us which sockets
 * to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it (CURLMOPT_TIMERFUNCTION); we turn those
 * into events and feed readiness back with curl_multi_socket_action(). Nothing here ever blocks the
 * loop, name resolution included (libcurl's threaded resolver).
 *
 * Requests are signed by libcurl itself (CURLOPT_AWS_SIGV4, "aws:amz:REGION:SERVICE"); temporary
 * credentials add the X-Amz-Security-Token header. Two AWS protocols are spoken:
 *   Query     POST application/x-www-form-urlencoded "Action=..&Version=..&k=v", XML replies
 *             (RDS 2014-10-31, ElastiCache 2015-02-02, STS 2011-06-15)
 *   JSON 1.1  POST application/x-amz-json-1.1 with X-Amz-Target "AmazonMemoryDB.DescribeClusters",
 *             "secretsmanager.GetSecretValue"
 *
 * Retries live here so that every caller gets the same policy: throttling codes, HTTP 5xx/429 and
 * transport failures (timeouts included) are retried with exponential backoff and full jitter
 * (base 100 ms, cap 10 s, max_attempts attempts in all); any other error is handed back at once.
 *
 * Secrets (secret key, session token) are handed to libcurl and never logged; their copies, and
 * every reply body (credentials, secret values), are wiped when a request is freed.
 */
#ifndef REPOINT_AWS_HTTP_H
#define REPOINT_AWS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct aws_http;
struct aws_http_req;
struct _xmlDoc;
struct _xmlNode;

#define AWS_BACKOFF_BASE_MS 100
#define AWS_BACKOFF_CAP_MS 10000
#define AWS_DEFAULT_MAX_ATTEMPTS 5
#define AWS_DEFAULT_TIMEOUT_MS 10000
/* Replies larger than this are cut off with an error: no AWS reply we read comes near it. */
#define AWS_MAX_RESPONSE_BYTES (32u << 20)

/* A set of credentials. Long-term keys have no session token and expiration_ms == 0. */
struct aws_credentials {
	char access_key_id[128];
	char secret_access_key[128];
	char session_token[4096];   /* "" for long-term keys; STS tokens run to ~2 KB */
	int64_t expiration_ms;      /* wall clock, ms since the epoch; 0 = does not expire */
};

/* Overwrites the secrets with zeros (for copies about to go out of scope). */
void aws_credentials_wipe(struct aws_credentials *c);

struct aws_http_options {
	int64_t timeout_ms;   /* per attempt; 0: AWS_DEFAULT_TIMEOUT_MS */
	int max_attempts;     /* attempts in all, first included; 0: AWS_DEFAULT_MAX_ATTEMPTS */
	const char *user_agent; /* NULL: "repoint" */
};

/* How the body of an error reply is read for its code and message. */
enum aws_error_format {
	AWS_ERRFMT_NONE,  /* not an AWS API (IMDS, container endpoint): status only */
	AWS_ERRFMT_XML,   /* Query protocol: <ErrorResponse><Error><Code/><Message/></Error> */
	AWS_ERRFMT_JSON,  /* JSON 1.x: {"__type": "ns#Code", "message": "..."} */
};

/* A raw request (what aws_http_call() builds, and what the credential providers use directly). */
struct aws_http_request {
	const char *method;              /* "GET", "POST", "PUT" */
	const char *url;
	const char *const *headers;      /* NULL-terminated "Name: value" lines, or NULL */
	const char *body;                /* NULL for none */
	size_t body_len;
	const char *sigv4_region;        /* with sigv4_service: sign with SigV4; both NULL: unsigned */
	const char *sigv4_service;
	const struct aws_credentials *creds; /* copied; needed when signing */
	int64_t timeout_ms;              /* per attempt; 0: the client's */
	int max_attempts;                /* 0: the client's; 1: no retries */
	enum aws_error_format errfmt;
	bool no_proxy;                   /* link-local endpoints (IMDS, ECS) must not go through a proxy */
	const char *tag;                 /* for logs: "rds DescribeDBClusters"; never a secret */
};

/* What a callback receives; every pointer is valid only during the callback. */
struct aws_response {
	bool ok;                  /* HTTP 2xx */
	long status;              /* 0 when no HTTP reply came (transport error, timeout) */
	const char *body;         /* NUL-terminated (the NUL is not counted); "" when none */
	size_t body_len;
	const char *error_code;   /* "" on success; the AWS code ("Throttling", "DBClusterNotFoundFault"),
	                             else "Timeout", "Transport", "ResponseTooLarge" or "HTTP 503" */
	const char *error_message;
	const char *request_id;   /* x-amzn-RequestId or <RequestId>, "" when none */
	int attempts;
	bool throttled;           /* the last attempt was throttled */
};

typedef void (*aws_http_cb)(void *arg, const struct aws_response *r);

/* Counters for /metrics. Error codes are counted per failed attempt (throttles included); codes
 * are sanitized to [A-Za-z0-9_.-] and the table is bounded so that a hostile endpoint cannot grow
 * it: codes past the last slot count under "other". */
#define AWS_STATS_CODES 24
struct aws_http_stats {
	uint64_t requests;        /* logical requests submitted */
	uint64_t attempts;        /* HTTP attempts started */
	uint64_t retries;
	uint64_t throttles;       /* attempts answered with a throttling error */
	uint64_t failures;        /* requests handed back with an error, after any retries */
	int64_t last_backoff_ms;  /* the most recent backoff chosen, -1 before any */
	int ncodes;
	struct {
		char code[64];
		uint64_t count;
	} codes[AWS_STATS_CODES];
};

/* Returns a random 32-bit value for the backoff jitter (injectable for tests). */
typedef uint32_t (*aws_jitter_fn)(void *arg);

/* NULL on failure (curl or allocation). opts may be NULL. */
struct aws_http *aws_http_new(struct event_base *base, const struct aws_http_options *opts);
/* Cancels every request (no callbacks) and frees everything. Not from inside a callback. */
void aws_http_free(struct aws_http *h);

struct event_base *aws_http_base(const struct aws_http *h);
const struct aws_http_stats *aws_http_get_stats(const struct aws_http *h);
void aws_http_set_jitter(struct aws_http *h, aws_jitter_fn fn, void *arg);

/* Starts a request. The callback runs exactly once, later, from the loop (never from inside this
 * call), unless the request is cancelled first. Returns NULL only when nothing could be allocated;
 * every other failure reaches the callback. The handle is valid until the callback returns. */
struct aws_http_req *aws_http_send(struct aws_http *h, const struct aws_http_request *rq,
                                   aws_http_cb cb, void *arg);

/* Cancels a pending request: no callback will run. Not from inside its own callback. */
void aws_http_cancel(struct aws_http_req *r);

/* A call to an AWS API. */
struct aws_call {
	const char *service;       /* "rds", "elasticache", "memorydb", "sts": signing name */
	const char *region;        /* "eu-west-1" */
	const char *endpoint_url;  /* override (e.g. "http://127.0.0.1:4566"); NULL: the public one */
	const char *action;        /* "DescribeDBClusters" */
	/* Query protocol */
	const char *version;       /* "2014-10-31" */
	const char *const *params; /* NULL, or {"Key", "value", ..., NULL}: values are url-encoded */
	/* JSON 1.1: a non-NULL target_prefix selects it */
	const char *target_prefix; /* "AmazonMemoryDB" -> X-Amz-Target: AmazonMemoryDB.<action> */
	const char *json;          /* body; NULL: "{}" */
	const struct aws_credentials *creds; /* NULL: unsigned (STS AssumeRoleWithWebIdentity) */
	int64_t timeout_ms;        /* 0: the client's */
	int max_attempts;          /* 0: the client's */
};

/* Builds and sends an API call; same contract as aws_http_send(). A malformed call (bad region,
 * unknown service without endpoint_url) is reported through the callback. */
struct aws_http_req *aws_http_call(struct aws_http *h, const struct aws_call *call, aws_http_cb cb,
                                   void *arg);

/* ---- pure helpers, exposed for the other AWS modules and for the unit tests ---- */

/* "Action=A&Version=V&k1=v1..." with every name and value url-encoded (RFC 3986 unreserved
 * characters kept, as SigV4 expects). params as in struct aws_call.
 * Returns malloc'ed text, or NULL. */
char *aws_form_encode(const char *action, const char *version, const char *const *params);

/* The public endpoint "https://HOST/" of SERVICE in REGION ("memorydb" lives at "memory-db.",
 * China regions under amazonaws.com.cn). False when region/service are not plain identifiers. */
bool aws_endpoint_url(const char *service, const char *region, char *buf, size_t len);

/* True when s is a plausible region or service name: [a-z0-9-], 1..31 characters. */
bool aws_valid_name(const char *s);

/* Extracts the AWS error code and message from an error body. Query XML: the first <Error> under
 * the root (<ErrorResponse> or <Response><Errors>); JSON: "__type" (anything up to '#' stripped;
 * also ":..." suffixes) and "message"/"Message". Returns false when no code was found. */
bool aws_parse_error(enum aws_error_format fmt, const char *body, size_t len, char *code,
                     size_t codelen, char *msg, size_t msglen);

enum aws_retry_class {
	AWS_RETRY_NO,        /* success, or an error that retrying cannot fix */
	AWS_RETRY_THROTTLE,  /* throttled: back off */
	AWS_RETRY_TRANSIENT, /* 5xx, transport error, timeout */
};
/* status 0 means no reply (transport_error then says whether the transport failed for good). */
enum aws_retry_class aws_retry_classify(long status, bool transport_error, bool permanent_transport,
                                        const char *code);
bool aws_is_throttle_code(const char *code);

/* Full-jitter backoff before retry number `retry` (0 = the first retry):
 * a uniform value in [0, min(cap, base * 2^retry)] chosen by rnd
 * (0 -> 0, UINT32_MAX -> the ceiling). */
int64_t aws_backoff_ms(int retry, uint32_t rnd);

/* ---- XML helpers shared by the AWS parsers (one place for the safe parser settings) ---- */

/* Parses an XML reply with a configuration that is safe for hostile input: no network, no DTD
 * loading, no entity substitution, libxml2's default size/depth limits; a document carrying a DTD
 * at all is refused (AWS never sends one, and that is where entity bombs live). NULL with a reason
 * in err on failure. Free with aws_xml_free(). */
struct _xmlDoc *aws_xml_read(const char *body, size_t len, char *err, size_t errlen);
void aws_xml_free(struct _xmlDoc *doc);
/* The root element, or NULL. */
struct _xmlNode *aws_xml_root(struct _xmlDoc *doc);
/* First element child of parent with this local name, in namespace ns (NULL: any namespace). */
struct _xmlNode *aws_xml_child(struct _xmlNode *parent, const char *name, const char *ns);
/* Next element sibling (any name), or NULL; with aws_xml_first() to walk list members. */
struct _xmlNode *aws_xml_first(struct _xmlNode *parent);
struct _xmlNode *aws_xml_next(struct _xmlNode *node);
/* True when node's local name is `name`. */
bool aws_xml_is(const struct _xmlNode *node, const char *name);
/* The namespace URI of node, or "". */
const char *aws_xml_ns(const struct _xmlNode *node);
/* Text content of a leaf element (text and CDATA children only; an element or entity reference
 * inside makes it fail). Returns the full length in bytes (which may exceed len: the copy is then
 * cut at a UTF-8 character boundary), or -1 when node is not a text leaf. */
long aws_xml_text(const struct _xmlNode *node, char *buf, size_t len);

/* Copies src into dst (size len), cutting at a UTF-8 character boundary when too long and
 * replacing control characters with '?'. Returns strlen(src). */
size_t aws_copy_text(char *dst, size_t len, const char *src);

#endif
