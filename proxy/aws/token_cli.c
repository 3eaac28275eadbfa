/* aws/token_cli.c - `repoint iam-token`: print an IAM auth token, like `aws rds
 * generate-db-auth-token`, from the credentials repoint itself would use. */
#include "aws/token_cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "aws/creds.h"
#include "aws/http.h"
#include "aws/presign.h"
#include "config.h"
#include "log.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
/* Web identity, container and IMDS credentials take a request or three. */
#define CREDS_TIMEOUT_S 20

static const char usage_text[] =
	"Usage: repoint iam-token --engine postgres|mysql --host HOST [--port PORT] --user USER [options]\n"
	"       repoint iam-token --engine redis (--cache-name NAME [--serverless] | --cluster-name NAME)\n"
	"                         --user USER [options]\n"
	"\n"
	"Prints an IAM authentication token: a password valid for 15 minutes, signed (SigV4, presigned)\n"
	"with the AWS credentials repoint finds the way the AWS SDKs do (environment, web identity,\n"
	"shared files, ECS/EKS container endpoint, EC2 IMDSv2).\n"
	"  postgres, mysql  an RDS/Aurora token for HOST:PORT and the database user USER, as\n"
	"                   `aws rds generate-db-auth-token` prints it (service rds-db)\n"
	"  redis            an ElastiCache token for the replication group or serverless cache NAME\n"
	"                   (--cache-name), or a MemoryDB token for the cluster NAME (--cluster-name),\n"
	"                   for the ACL user USER (AUTH USER TOKEN)\n"
	"\n"
	"Options:\n"
	"  --engine E          postgres | mysql | redis\n"
	"  --host HOST         the endpoint the client connects to (postgres, mysql)\n"
	"  --port PORT         its port (default 5432 for postgres, 3306 for mysql)\n"
	"  --user USER         the database or ACL user\n"
	"  --cache-name NAME   redis: ElastiCache replication group id or serverless cache name\n"
	"  --serverless        redis: NAME is an ElastiCache Serverless cache\n"
	"  --cluster-name NAME redis: MemoryDB cluster name\n"
	"  --region R          default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region\n"
	"  --profile P         shared-file profile (default: AWS_PROFILE or \"default\")\n"
	"  -h, --help          print this help and exit\n"
	"\n"
	"Exit status: 0 printed, 1 no credentials or no token, 2 usage.\n"
	"For tests only: REPOINT_TEST_TIME=SECONDS (since the epoch, UTC) signs as if the clock said so.\n";

struct token_opts {
	const char *engine, *host, *user, *cache, *cluster, *region, *profile;
	long port;
	bool serverless;
};

struct creds_wait {
	struct event_base *base;
	struct aws_credentials creds;
	bool done, ok;
	char err[256];
};

static void creds_cb(void *arg, const struct aws_credentials *c, const char *err)
{
	struct creds_wait *w = arg;

	w->done = true;
	if (c != NULL) {
		w->creds = *c;
		w->ok = true;
	} else {
		snprintf(w->err, sizeof(w->err), "%s", err != NULL ? err : "no credentials");
	}
	event_base_loopbreak(w->base);
}

/* The time to sign at: the clock, or REPOINT_TEST_TIME (tests pin it to compare with botocore). */
static bool sign_time(int64_t *out)
{
	const char *t = getenv("REPOINT_TEST_TIME");
	char *end;
	long long v;

	if (t == NULL || *t == '\0') {
		*out = (int64_t)time(NULL);
		return true;
	}
	errno = 0;
	v = strtoll(t, &end, 10);
	if (errno != 0 || end == t || *end != '\0' || v < 0)
		return false;
	*out = v;
	return true;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "repoint iam-token: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(repoint iam-token --help lists the options)\n");
	return EXIT_USAGE;
}

static int parse_opts(int argc, char **argv, struct token_opts *o)
{
	enum { O_ENGINE = 256, O_HOST, O_PORT, O_USER, O_CACHE, O_CLUSTER, O_SERVERLESS, O_REGION, O_PROFILE };
	static const struct option opts[] = {
		{"engine", required_argument, NULL, O_ENGINE},   {"host", required_argument, NULL, O_HOST},
		{"port", required_argument, NULL, O_PORT},       {"user", required_argument, NULL, O_USER},
		{"cache-name", required_argument, NULL, O_CACHE}, {"cluster-name", required_argument, NULL, O_CLUSTER},
		{"serverless", no_argument, NULL, O_SERVERLESS}, {"region", required_argument, NULL, O_REGION},
		{"profile", required_argument, NULL, O_PROFILE}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_ENGINE: o->engine = optarg; break;
		case O_HOST: o->host = optarg; break;
		case O_PORT:
			errno = 0;
			o->port = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || o->port < 1 || o->port > 65535)
				return usage_error("--port: expected 1..65535, got '%s'", optarg);
			break;
		case O_USER: o->user = optarg; break;
		case O_CACHE: o->cache = optarg; break;
		case O_CLUSTER: o->cluster = optarg; break;
		case O_SERVERLESS: o->serverless = true; break;
		case O_REGION: o->region = optarg; break;
		case O_PROFILE: o->profile = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			return -1;
		default:
			fputs(usage_text, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o->engine == NULL)
		return usage_error("%s", "--engine is required (postgres, mysql or redis)");
	if (o->user == NULL || o->user[0] == '\0')
		return usage_error("%s", "--user is required");
	if (o->region != NULL && !aws_valid_name(o->region))
		return usage_error("--region: expected a region name like us-east-1, got '%s'", o->region);
	if (strcmp(o->engine, "postgres") == 0 || strcmp(o->engine, "mysql") == 0) {
		if (o->host == NULL || o->host[0] == '\0')
			return usage_error("--host is required for %s", o->engine);
		if (o->cache != NULL || o->cluster != NULL || o->serverless)
			return usage_error("--cache-name, --cluster-name and --serverless are for redis, not %s",
			                   o->engine);
		if (o->port == 0)
			o->port = strcmp(o->engine, "postgres") == 0 ? 5432 : 3306;
	} else if (strcmp(o->engine, "redis") == 0) {
		if ((o->cache == NULL) == (o->cluster == NULL))
			return usage_error("%s", "redis needs --cache-name (ElastiCache) or --cluster-name (MemoryDB)");
		if (o->host != NULL || o->port != 0)
			return usage_error("%s", "a redis token names the cache (--cache-name) or the MemoryDB cluster "
			                         "(--cluster-name), not --host/--port");
		if (o->serverless && o->cache == NULL)
			return usage_error("%s", "--serverless goes with --cache-name (ElastiCache Serverless)");
	} else {
		return usage_error("--engine: expected postgres, mysql or redis, got '%s'", o->engine);
	}
	return 0;
}

/* Runs the credential chain on a loop of its own until it answers (or CREDS_TIMEOUT_S). */
static bool fetch_creds(const struct token_opts *o, struct creds_wait *w, char *region, size_t rlen)
{
	struct aws_creds_options copts = {.profile = o->profile, .region = o->region};
	struct aws_http *http;
	struct aws_creds *creds;
	struct timeval tv = {CREDS_TIMEOUT_S, 0};
	const char *r;

	w->base = event_base_new();
	http = w->base != NULL ? aws_http_new(w->base, NULL) : NULL;
	if (http == NULL) {
		snprintf(w->err, sizeof(w->err), "cannot set up the AWS client");
		if (w->base != NULL)
			event_base_free(w->base);
		return false;
	}
	creds = aws_creds_new(http, &copts, w->err, sizeof(w->err));
	if (creds != NULL) {
		r = o->region != NULL ? o->region : aws_creds_region(creds);
		snprintf(region, rlen, "%s", r != NULL ? r : "");
		if (aws_creds_get(creds, creds_cb, w)) {
			event_base_loopexit(w->base, &tv);
			event_base_dispatch(w->base);
		}
		if (!w->done)
			snprintf(w->err, sizeof(w->err), "no AWS credentials: no answer from %s within %d s",
			         aws_creds_source_name(aws_creds_source(creds)), CREDS_TIMEOUT_S);
		aws_creds_free(creds);
	}
	aws_http_free(http);
	event_base_free(w->base);
	return w->ok;
}

int iam_token_main(int argc, char **argv)
{
	struct token_opts o = {0};
	struct creds_wait w = {0};
	char region[64] = "", err[256];
	char *token;
	int64_t now;
	int rc = parse_opts(argc, argv, &o);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (!sign_time(&now)) {
		fprintf(stderr, "repoint iam-token: REPOINT_TEST_TIME: expected seconds since the epoch\n");
		return EXIT_USAGE;
	}
	/* The chain says where it found credentials at info level: a token on stdout is all we print. */
	log_setup(LOG_WARN, LOG_FORMAT_TEXT);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!fetch_creds(&o, &w, region, sizeof(region))) {
		fprintf(stderr, "repoint iam-token: %s\n", w.err);
		aws_credentials_wipe(&w.creds);
		curl_global_cleanup();
		return EXIT_FAILED;
	}
	if (region[0] == '\0') {
		fprintf(stderr, "repoint iam-token: no AWS region: give --region, or set AWS_REGION or the profile's "
		                "region\n");
		aws_credentials_wipe(&w.creds);
		curl_global_cleanup();
		return EXIT_FAILED;
	}
	if (strcmp(o.engine, "redis") != 0)
		token = aws_rds_auth_token(o.host, (uint16_t)o.port, o.user, region, &w.creds, now, err, sizeof(err));
	else
		token = aws_cache_auth_token(o.cache != NULL ? "elasticache" : "memorydb",
		                             o.cache != NULL ? o.cache : o.cluster, o.user, o.serverless, region,
		                             &w.creds, now, err, sizeof(err));
	aws_credentials_wipe(&w.creds);
	curl_global_cleanup();
	if (token == NULL) {
		fprintf(stderr, "repoint iam-token: %s\n", err);
		return EXIT_FAILED;
	}
	printf("%s\n", token);
	aws_presign_free(token);
	return fflush(stdout) == 0 ? 0 : EXIT_FAILED;
}
