/* main.c - repoint's command line: run a configuration, check one, print help or version. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "service.h"
#include "util.h"

#define EXIT_CONFIG 2

static const char usage_text[] =
	"Usage: repoint -c FILE          run in the foreground, logging to stderr\n"
	"       repoint -t -c FILE       check FILE and exit (0 valid, 2 invalid)\n"
	"       repoint --version | --help\n"
	"\n"
	"repoint keeps applications pointed at the current writer of their Postgres, MySQL/MariaDB\n"
	"and Redis clusters. Each [service NAME] of FILE listens on a local address and forwards\n"
	"every client connection to the member its route selects (writer, reader or any), learned by\n"
	"probing each member's role. When the writer changes, new clients are held (not refused)\n"
	"until exactly one writer is confirmed, and clients of the old writer are drained.\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE   configuration file (INI; see the example installed as repoint.ini)\n"
	"  -t, --test          validate the configuration and exit\n"
	"  -V, --version       print the version and exit\n"
	"  -h, --help          print this help and exit\n"
	"\n"
	"Signals: SIGTERM or SIGINT stop accepting, let connections finish (each is closed at its\n"
	"next idle point) for up to [repoint] shutdown_timeout, then exit 0; a second signal exits\n"
	"at once.\n";

struct runtime {
	struct event_base *base;
	struct config *cfg;
	struct service **svcs;
	int nsvcs;
	struct admin *admin;
	struct event *sigterm, *sigint, *tick;
	bool stopping;
	int64_t stop_deadline_ms;
};

static unsigned open_sessions(const struct runtime *rt)
{
	unsigned n = 0;

	for (int i = 0; i < rt->nsvcs; i++)
		n += service_nsessions(rt->svcs[i]);
	return n;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runtime *rt = arg;
	unsigned n = open_sessions(rt);

	(void)fd;
	(void)what;
	if (n == 0) {
		log_info("repoint", "all connections finished");
		event_base_loopbreak(rt->base);
	} else if (now_ms() >= rt->stop_deadline_ms) {
		log_warn("repoint", "shutdown_timeout reached with %u connection(s) open: closing them", n);
		event_base_loopbreak(rt->base);
	}
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct runtime *rt = arg;
	struct timeval tv = {0, 50 * 1000};

	(void)what;
	if (rt->stopping) {
		log_warn("repoint", "%s again: exiting now", strsignal((int)sig));
		event_base_loopbreak(rt->base);
		return;
	}
	rt->stopping = true;
	rt->stop_deadline_ms = now_ms() + rt->cfg->shutdown_timeout_ms;
	log_info("repoint", "%s: stopping; %u connection(s) may finish for up to %lld ms", strsignal((int)sig),
		 open_sessions(rt), (long long)rt->cfg->shutdown_timeout_ms);
	if (rt->admin != NULL) {
		admin_free(rt->admin);
		rt->admin = NULL;
	}
	for (int i = 0; i < rt->nsvcs; i++)
		service_shutdown(rt->svcs[i], rt->cfg->shutdown_timeout_ms);
	rt->tick = event_new(rt->base, -1, EV_PERSIST, tick_cb, rt);
	event_add(rt->tick, &tv);
	tick_cb(-1, 0, rt);
}

static int run(struct config *cfg)
{
	struct runtime rt;
	struct service_config *sc;
	int rc = 0, i = 0;

	memset(&rt, 0, sizeof(rt));
	rt.cfg = cfg;
	signal(SIGPIPE, SIG_IGN);
	rt.base = event_base_new();
	rt.svcs = calloc((size_t)cfg->nservices, sizeof(*rt.svcs));
	if (rt.base == NULL || rt.svcs == NULL) {
		log_error("repoint", "out of memory");
		return 1;
	}
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		struct service *svc = service_new(rt.base, sc);
		if (svc == NULL) {
			log_error("repoint", "out of memory");
			rc = 1;
			goto out;
		}
		rt.svcs[i++] = svc;
		rt.nsvcs = i;
		if (!service_start(svc)) {
			rc = 1;
			goto out;
		}
	}
	if (cfg->has_admin) {
		rt.admin = admin_start(rt.base, &cfg->admin, rt.svcs, rt.nsvcs);
		if (rt.admin == NULL) {
			rc = 1;
			goto out;
		}
	}
	rt.sigterm = evsignal_new(rt.base, SIGTERM, signal_cb, &rt);
	rt.sigint = evsignal_new(rt.base, SIGINT, signal_cb, &rt);
	evsignal_add(rt.sigterm, NULL);
	evsignal_add(rt.sigint, NULL);
	log_info("repoint", "repoint %s running with %d service(s) from %s", PACKAGE_VERSION, rt.nsvcs, cfg->path);
	event_base_dispatch(rt.base);
	log_info("repoint", "stopped");
out:
	admin_free(rt.admin);
	for (i = 0; i < rt.nsvcs; i++)
		service_free(rt.svcs[i]);
	free(rt.svcs);
	if (rt.sigterm)
		event_free(rt.sigterm);
	if (rt.sigint)
		event_free(rt.sigint);
	if (rt.tick)
		event_free(rt.tick);
	event_base_free(rt.base);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"test", no_argument, NULL, 't'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	bool test = false;
	char err[8192];
	struct config *cfg;
	int c, rc;

	while ((c = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'V':
			printf("repoint %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "repoint: unexpected argument '%s'\n%s", argv[optind], usage_text);
		return EXIT_CONFIG;
	}
	if (path == NULL) {
		fprintf(stderr, "repoint: no configuration given (-c FILE)\n%s", usage_text);
		return EXIT_CONFIG;
	}
	cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s%s", err, err[0] && err[strlen(err) - 1] != '\n' ? "\n" : "");
		return EXIT_CONFIG;
	}
	if (test) {
		printf("repoint: %s is valid (%d service(s))\n", path, cfg->nservices);
		config_free(cfg);
		return 0;
	}
	log_setup(cfg->log_level, cfg->log_format);
	rc = run(cfg);
	config_free(cfg);
	return rc;
}
