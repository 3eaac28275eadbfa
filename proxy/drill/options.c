/* drill/options.c - `repoint drill` options: the command line, and the JSON a drill carries to
 * another repoint's admin API. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "drill/drill.h"
#include "util.h"

const char drill_usage_text[] =
	"Usage: repoint drill -c FILE --service NAME [options]\n"
	"\n"
	"Fails over the cluster behind a service while clients write through the service's listener,\n"
	"and reports what they saw: the outage, the errors by kind, the timeline of the failover.\n"
	"When a repoint answers on the configuration's admin address the drill runs inside it\n"
	"(POST /drills); otherwise this command starts the configuration's services itself.\n"
	"\n"
	"What to fail over:\n"
	"  -c, --config FILE        repoint configuration\n"
	"  -s, --service NAME       the [service NAME] to drill\n"
	"      --target X           static members: the member to promote (host:port; default a healthy\n"
	"                           reader); rds: the instance to promote; elasticache-global: the\n"
	"                           replication group to make primary\n"
	"      --shard ID           elasticache / memorydb: the node group / shard (default the service's\n"
	"                           shard, else 0001); cluster = on: the shard to fail over (CLUSTER\n"
	"                           FAILOVER on a replica of it, --target picks which), numbered as GET\n"
	"                           /status's cluster.shards shows them (default 0)\n"
	"      --target-region R    elasticache-global: the region to make primary\n"
	"Load:\n"
	"      --clients N          clients (default 4; cluster = on: for each shard, writing its keys)\n"
	"      --rate R             requests per second per client (default 50)\n"
	"      --mode M             long | per-request | both (default both: half keep a connection,\n"
	"                           half connect for each request)\n"
	"      --write STMT         the write (default: Postgres SELECT txid_current(); MariaDB REPLACE\n"
	"                           INTO repoint_drill (id, v) VALUES (?, ?); Redis SET repoint:drill:? ? EX 3600);\n"
	"                           each '?' becomes the client number, then the request's sequence number;\n"
	"                           cluster = on: the first must be in the key, where it gets the {hash tag}\n"
	"                           of the client's shard (the report counts each request for its key's shard)\n"
	"      --warmup D           load before the failover is requested (default 1s)\n"
	"      --duration-after D   load kept after the recovery (default 3s)\n"
	"      --timeout D          longest wait from the request to the recovery (default 120s)\n"
	"      --request-timeout D  per request (default 10s)\n"
	"      --slow D             a request slower than this counts as blocked (default 500ms)\n"
	"Runs and gates:\n"
	"      --runs N             drills in a row (default 1), with --pause D between (default 10s)\n"
	"      --max-outage D       exit 1 when the outage of a run exceeds D\n"
	"      --max-errors N       exit 1 when a run has more than N client errors\n"
	"Safety and output:\n"
	"      --dry-run            check and print the exact calls; change nothing\n"
	"      --yes                really fail over (required for anything but --dry-run)\n"
	"      --local              never hand the drill to a running repoint\n"
	"      --json FILE          the report as JSON (schema: proxy/drill/REPORT.md)\n"
	"      --svg FILE           the timeline as SVG\n"
	"      --ledger FILE        TestFailover/FailoverShard ledger (default\n"
	"                           $XDG_STATE_HOME/repoint/testfailover.json)\n"
	"      --quiet              no progress line\n"
	"Engine credentials (static members): the service's probe_user/probe_password, unless\n"
	"      --promote-user U     user for the promotion statements (password from\n"
	"                           $REPOINT_DRILL_PROMOTE_PASSWORD)\n"
	"      --repl-user U        MariaDB: user the old writer replicates as (password from\n"
	"                           $REPOINT_DRILL_REPL_PASSWORD; default the promote user)\n"
	"  -h, --help               this help\n"
	"  -V, --version            print the version and exit\n"
	"\n"
	"Exit status: 0 done and within the gates, 1 a gate was breached (or no recovery), 2 usage or\n"
	"configuration error, 3 the drill could not run (refused, AWS error, ...).\n"
	"\n"
	"Reference (what each kind of cluster does, the JSON report, the admin API): " DOCDIR "/drill.md\n";

const char *drill_mode_name(enum drill_mode m)
{
	switch (m) {
	case DRILL_MODE_LONG:
		return "long";
	case DRILL_MODE_PER_REQUEST:
		return "per-request";
	case DRILL_MODE_BOTH:
		break;
	}
	return "both";
}

static bool mode_parse(const char *s, enum drill_mode *m)
{
	if (strcmp(s, "both") == 0)
		*m = DRILL_MODE_BOTH;
	else if (strcmp(s, "long") == 0)
		*m = DRILL_MODE_LONG;
	else if (strcmp(s, "per-request") == 0 || strcmp(s, "per_request") == 0)
		*m = DRILL_MODE_PER_REQUEST;
	else
		return false;
	return true;
}

void drill_options_init(struct drill_options *o)
{
	memset(o, 0, sizeof(*o));
	o->clients = 4;
	o->rate = 50;
	o->mode = DRILL_MODE_BOTH;
	o->duration_after_ms = 3000;
	o->timeout_ms = 120000;
	o->warmup_ms = 1000;
	o->request_timeout_ms = 10000;
	o->slow_ms = 500;
	o->runs = 1;
	o->pause_ms = 10000;
	o->max_outage_ms = -1;
	o->max_errors = -1;
}

void drill_options_free(struct drill_options *o)
{
	char **strs[] = {&o->config_path, &o->service, &o->target, &o->shard, &o->target_region, &o->write,
			 &o->json_path, &o->svg_path, &o->ledger_path, &o->promote_user, &o->promote_password,
			 &o->repl_user, &o->repl_password};

	for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
		if (*strs[i] != NULL && (strs[i] == &o->promote_password || strs[i] == &o->repl_password))
			explicit_bzero(*strs[i], strlen(*strs[i]));
		free(*strs[i]);
		*strs[i] = NULL;
	}
}

static bool set_str(char **slot, const char *v)
{
	char *c = strdup(v);

	if (c == NULL)
		return false;
	free(*slot);
	*slot = c;
	return true;
}

static bool parse_count(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

enum {
	OPT_TARGET = 256, OPT_SHARD, OPT_TARGET_REGION, OPT_CLIENTS, OPT_RATE, OPT_MODE, OPT_WRITE, OPT_AFTER,
	OPT_TIMEOUT, OPT_RUNS, OPT_PAUSE, OPT_MAX_OUTAGE, OPT_MAX_ERRORS, OPT_DRY_RUN, OPT_YES, OPT_JSON, OPT_SVG,
	OPT_QUIET, OPT_WARMUP, OPT_REQ_TIMEOUT, OPT_SLOW, OPT_LEDGER, OPT_PROMOTE_USER, OPT_REPL_USER, OPT_LOCAL,
};

int drill_options_parse(int argc, char **argv, struct drill_options *o, char *err, size_t errlen)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"service", required_argument, NULL, 's'},
		{"target", required_argument, NULL, OPT_TARGET},
		{"shard", required_argument, NULL, OPT_SHARD},
		{"target-region", required_argument, NULL, OPT_TARGET_REGION},
		{"clients", required_argument, NULL, OPT_CLIENTS},
		{"rate", required_argument, NULL, OPT_RATE},
		{"mode", required_argument, NULL, OPT_MODE},
		{"write", required_argument, NULL, OPT_WRITE},
		{"duration-after", required_argument, NULL, OPT_AFTER},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"warmup", required_argument, NULL, OPT_WARMUP},
		{"request-timeout", required_argument, NULL, OPT_REQ_TIMEOUT},
		{"slow", required_argument, NULL, OPT_SLOW},
		{"runs", required_argument, NULL, OPT_RUNS},
		{"pause", required_argument, NULL, OPT_PAUSE},
		{"max-outage", required_argument, NULL, OPT_MAX_OUTAGE},
		{"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
		{"dry-run", no_argument, NULL, OPT_DRY_RUN},
		{"yes", no_argument, NULL, OPT_YES},
		{"local", no_argument, NULL, OPT_LOCAL},
		{"json", required_argument, NULL, OPT_JSON},
		{"svg", required_argument, NULL, OPT_SVG},
		{"ledger", required_argument, NULL, OPT_LEDGER},
		{"quiet", no_argument, NULL, OPT_QUIET},
		{"promote-user", required_argument, NULL, OPT_PROMOTE_USER},
		{"repl-user", required_argument, NULL, OPT_REPL_USER},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int c;
	long n;
	int64_t ms;
	char *end;
	double rate;
	const char *env;

	/* getopt keeps its position across calls (tests parse many command lines). */
	optind = 0;
	opterr = 0;
	err[0] = '\0';
	int idx = -1;
	char name[64];

	while ((c = getopt_long(argc, argv, ":c:s:hV", opts, &idx)) != -1) {
		bool ok = true;

		/* Named as typed: the long name when getopt found one, else the word itself. */
		if (idx >= 0 && c != ':' && c != '?')
			snprintf(name, sizeof(name), "--%s", opts[idx].name);
		else
			snprintf(name, sizeof(name), "%s", optind > 0 && optind <= argc ? argv[optind - 1] : "?");
		idx = -1;
		switch (c) {
		case 'c': ok = set_str(&o->config_path, optarg); break;
		case 's': ok = set_str(&o->service, optarg); break;
		case OPT_TARGET: ok = set_str(&o->target, optarg); break;
		case OPT_SHARD: ok = set_str(&o->shard, optarg); break;
		case OPT_TARGET_REGION: ok = set_str(&o->target_region, optarg); break;
		case OPT_WRITE:
			if (optarg[0] == '\0') {
				snprintf(err, errlen, "--write: empty statement");
				return -1;
			}
			ok = set_str(&o->write, optarg);
			break;
		case OPT_JSON: ok = set_str(&o->json_path, optarg); break;
		case OPT_SVG: ok = set_str(&o->svg_path, optarg); break;
		case OPT_LEDGER: ok = set_str(&o->ledger_path, optarg); break;
		case OPT_PROMOTE_USER: ok = set_str(&o->promote_user, optarg); break;
		case OPT_REPL_USER: ok = set_str(&o->repl_user, optarg); break;
		case OPT_CLIENTS:
			if (!parse_count(optarg, 1, 1000, &n)) {
				snprintf(err, errlen, "--clients: expected a number from 1 to 1000, got '%s'", optarg);
				return -1;
			}
			o->clients = (int)n;
			break;
		case OPT_RUNS:
			if (!parse_count(optarg, 1, 1000, &n)) {
				snprintf(err, errlen, "--runs: expected a number from 1 to 1000, got '%s'", optarg);
				return -1;
			}
			o->runs = (int)n;
			break;
		case OPT_MAX_ERRORS:
			if (!parse_count(optarg, 0, 1000000000L, &n)) {
				snprintf(err, errlen, "--max-errors: expected a number of errors (0 or more), got '%s'",
					 optarg);
				return -1;
			}
			o->max_errors = n;
			break;
		case OPT_RATE:
			errno = 0;
			rate = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !isfinite(rate) || rate < 0.1 || rate > 10000) {
				snprintf(err, errlen, "--rate: expected requests per second from 0.1 to 10000, got '%s'",
					 optarg);
				return -1;
			}
			o->rate = rate;
			break;
		case OPT_MODE:
			if (!mode_parse(optarg, &o->mode)) {
				snprintf(err, errlen, "--mode: expected long, per-request or both, got '%s'", optarg);
				return -1;
			}
			break;
		case OPT_AFTER:
		case OPT_TIMEOUT:
		case OPT_WARMUP:
		case OPT_REQ_TIMEOUT:
		case OPT_SLOW:
		case OPT_PAUSE:
		case OPT_MAX_OUTAGE:
			if (!parse_duration_ms(optarg, &ms) ||
			    ((c == OPT_TIMEOUT || c == OPT_REQ_TIMEOUT || c == OPT_SLOW) && ms <= 0)) {
				snprintf(err, errlen, "%s: expected a duration like 250ms, 3s or 2m, got '%s'", name, optarg);
				return -1;
			}
			if (c == OPT_AFTER) o->duration_after_ms = ms;
			else if (c == OPT_TIMEOUT) o->timeout_ms = ms;
			else if (c == OPT_WARMUP) o->warmup_ms = ms;
			else if (c == OPT_REQ_TIMEOUT) o->request_timeout_ms = ms;
			else if (c == OPT_SLOW) o->slow_ms = ms;
			else if (c == OPT_PAUSE) o->pause_ms = ms;
			else o->max_outage_ms = ms;
			break;
		case OPT_DRY_RUN: o->dry_run = true; break;
		case OPT_YES: o->yes = true; break;
		case OPT_LOCAL: o->local = true; break;
		case OPT_QUIET: o->quiet = true; break;
		case 'h':
			fputs(drill_usage_text, stdout);
			return 1;
		case 'V':
			printf("repoint %s\n", PACKAGE_VERSION);
			return 1;
		case ':':
			snprintf(err, errlen, "%s needs a value", name);
			return -1;
		default:
			snprintf(err, errlen, "unknown option '%s'", name);
			return -1;
		}
		if (!ok) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s'", argv[optind]);
		return -1;
	}
	if (o->config_path == NULL) {
		snprintf(err, errlen, "no configuration given (-c FILE)");
		return -1;
	}
	if (o->service == NULL) {
		snprintf(err, errlen, "no service given (--service NAME)");
		return -1;
	}
	if (o->dry_run && o->runs > 1) {
		snprintf(err, errlen, "--dry-run makes no sense with --runs");
		return -1;
	}
	if (!o->dry_run && !o->yes) {
		snprintf(err, errlen, "a real drill fails over service %s's cluster: add --yes (or --dry-run to see "
				      "what it would do)", o->service);
		return -1;
	}
	/* The password goes with the user it belongs to: without --promote-user the probe
	 * credentials are used whole. */
	if (o->promote_user != NULL && (env = getenv("REPOINT_DRILL_PROMOTE_PASSWORD")) != NULL &&
	    o->promote_password == NULL && !set_str(&o->promote_password, env))
		return -1;
	if ((env = getenv("REPOINT_DRILL_REPL_PASSWORD")) != NULL && o->repl_password == NULL &&
	    !set_str(&o->repl_password, env))
		return -1;
	return 0;
}

/* ---- JSON ------------------------------------------------------------------------------------- */

json_t *drill_options_json(const struct drill_options *o)
{
	json_t *j = json_object();

#define OPT_STR(key, v)                                                                            \
	do {                                                                                       \
		if ((v) != NULL)                                                                   \
			json_object_set_new(j, key, json_string(v));                               \
	} while (0)
	OPT_STR("service", o->service);
	OPT_STR("target", o->target);
	OPT_STR("shard", o->shard);
	OPT_STR("target_region", o->target_region);
	OPT_STR("write", o->write);
	OPT_STR("ledger", o->ledger_path);
	OPT_STR("promote_user", o->promote_user);
	OPT_STR("promote_password", o->promote_password);
	OPT_STR("repl_user", o->repl_user);
	OPT_STR("repl_password", o->repl_password);
#undef OPT_STR
	json_object_set_new(j, "clients", json_integer(o->clients));
	json_object_set_new(j, "rate", json_real(o->rate));
	json_object_set_new(j, "mode", json_string(drill_mode_name(o->mode)));
	json_object_set_new(j, "duration_after_ms", json_integer(o->duration_after_ms));
	json_object_set_new(j, "timeout_ms", json_integer(o->timeout_ms));
	json_object_set_new(j, "warmup_ms", json_integer(o->warmup_ms));
	json_object_set_new(j, "request_timeout_ms", json_integer(o->request_timeout_ms));
	json_object_set_new(j, "slow_ms", json_integer(o->slow_ms));
	json_object_set_new(j, "dry_run", json_boolean(o->dry_run));
	json_object_set_new(j, "yes", json_boolean(o->yes));
	return j;
}

static bool json_ms(const json_t *j, const char *key, int64_t lo, int64_t *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(j, key);
	int64_t ms;

	if (v == NULL || json_is_null(v))
		return true;
	if (json_is_integer(v)) {
		ms = json_integer_value(v);
	} else if (json_is_string(v)) {
		if (!parse_duration_ms(json_string_value(v), &ms)) {
			snprintf(err, errlen, "%s: expected milliseconds or a duration like 3s", key);
			return false;
		}
	} else {
		snprintf(err, errlen, "%s: expected milliseconds or a duration like 3s", key);
		return false;
	}
	if (ms < lo || ms > 24LL * 3600 * 1000) {
		snprintf(err, errlen, "%s: out of range", key);
		return false;
	}
	*out = ms;
	return true;
}

bool drill_options_from_json(const json_t *j, struct drill_options *o, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		size_t off;
	} strs[] = {
		{"service", offsetof(struct drill_options, service)},
		{"target", offsetof(struct drill_options, target)},
		{"shard", offsetof(struct drill_options, shard)},
		{"target_region", offsetof(struct drill_options, target_region)},
		{"write", offsetof(struct drill_options, write)},
		{"ledger", offsetof(struct drill_options, ledger_path)},
		{"promote_user", offsetof(struct drill_options, promote_user)},
		{"promote_password", offsetof(struct drill_options, promote_password)},
		{"repl_user", offsetof(struct drill_options, repl_user)},
		{"repl_password", offsetof(struct drill_options, repl_password)},
	};
	const json_t *v;
	const char *key;

	if (!json_is_object(j)) {
		snprintf(err, errlen, "expected a JSON object of drill options");
		return false;
	}
	json_object_foreach((json_t *)j, key, v) {
		static const char *const known[] = {
			"service", "target", "shard", "target_region", "write", "ledger", "promote_user",
			"promote_password", "repl_user", "repl_password", "clients", "rate", "mode",
			"duration_after_ms", "timeout_ms", "warmup_ms", "request_timeout_ms", "slow_ms", "dry_run",
			"yes", "duration_after", "timeout", "warmup", "request_timeout", "slow"};
		bool found = false;
		for (size_t i = 0; i < ARRAY_LEN(known) && !found; i++)
			found = strcmp(known[i], key) == 0;
		if (!found) {
			snprintf(err, errlen, "unknown option '%s'", key);
			return false;
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
		v = json_object_get(j, strs[i].key);
		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_string(v) || json_string_length(v) == 0) {
			snprintf(err, errlen, "%s: expected a non-empty string", strs[i].key);
			return false;
		}
		if (!set_str((char **)((char *)o + strs[i].off), json_string_value(v))) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
	}
	if ((v = json_object_get(j, "clients")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000) {
			snprintf(err, errlen, "clients: expected a number from 1 to 1000");
			return false;
		}
		o->clients = (int)json_integer_value(v);
	}
	if ((v = json_object_get(j, "rate")) != NULL) {
		if (!json_is_number(v) || json_number_value(v) < 0.1 || json_number_value(v) > 10000) {
			snprintf(err, errlen, "rate: expected requests per second from 0.1 to 10000");
			return false;
		}
		o->rate = json_number_value(v);
	}
	if ((v = json_object_get(j, "mode")) != NULL && (!json_is_string(v) || !mode_parse(json_string_value(v), &o->mode))) {
		snprintf(err, errlen, "mode: expected long, per-request or both");
		return false;
	}
	if (!json_ms(j, "duration_after_ms", 0, &o->duration_after_ms, err, errlen) ||
	    !json_ms(j, "duration_after", 0, &o->duration_after_ms, err, errlen) ||
	    !json_ms(j, "timeout_ms", 1, &o->timeout_ms, err, errlen) ||
	    !json_ms(j, "timeout", 1, &o->timeout_ms, err, errlen) ||
	    !json_ms(j, "warmup_ms", 0, &o->warmup_ms, err, errlen) ||
	    !json_ms(j, "warmup", 0, &o->warmup_ms, err, errlen) ||
	    !json_ms(j, "request_timeout_ms", 1, &o->request_timeout_ms, err, errlen) ||
	    !json_ms(j, "request_timeout", 1, &o->request_timeout_ms, err, errlen) ||
	    !json_ms(j, "slow_ms", 1, &o->slow_ms, err, errlen) || !json_ms(j, "slow", 1, &o->slow_ms, err, errlen))
		return false;
	if ((v = json_object_get(j, "dry_run")) != NULL) {
		if (!json_is_boolean(v)) {
			snprintf(err, errlen, "dry_run: expected true or false");
			return false;
		}
		o->dry_run = json_is_true(v);
	}
	if ((v = json_object_get(j, "yes")) != NULL) {
		if (!json_is_boolean(v)) {
			snprintf(err, errlen, "yes: expected true or false");
			return false;
		}
		o->yes = json_is_true(v);
	}
	if (o->service == NULL) {
		snprintf(err, errlen, "service: missing");
		return false;
	}
	return true;
}
