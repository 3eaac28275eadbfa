/* main.c - repoint's command line: run a configuration, check one, print help or version. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "admin.h"
#include "aws/token_cli.h"
#include "config.h"
#include "drill/drill.h"
#include "log.h"
#include "runtime.h"
#include "util.h"

#define EXIT_CONFIG 2

static const char usage_text[] =
	"Usage: repoint -c FILE          run in the foreground, logging to stderr\n"
	"       repoint -t -c FILE       check FILE and exit (0 valid, 2 invalid)\n"
	"       repoint drill -c FILE --service NAME [options]   (repoint drill --help)\n"
	"       repoint iam-token --engine E --user U ...        print an IAM auth token\n"
	"                                                         (repoint iam-token --help)\n"
	"       repoint --version | --help\n"
	"\n"
	"repoint keeps applications pointed at the current writer of their Postgres, MySQL/MariaDB\n"
	"and Redis clusters. Each [service NAME] of FILE listens on a local address and forwards\n"
	"every client connection to the member its route selects (writer, reader or any), learned by\n"
	"probing each member's role. When the writer changes, new clients are held (not refused)\n"
	"until exactly one writer is confirmed, and clients of the old writer are drained.\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE   configuration file (INI: man 5 repoint.ini; make install puts an example\n"
	"                      in " SYSCONFDIR "/repoint/repoint.ini)\n"
	"  -t, --test          validate the configuration and exit (warnings: an admin\n"
	"                      address beyond loopback, a member name that does not resolve,\n"
	"                      a secret written in the file instead of env:, file:, secretsmanager:)\n"
	"  -V, --version       print the version and exit\n"
	"  -h, --help          print this help and exit\n"
	"\n"
	"Signals: SIGTERM or SIGINT close the listeners, let connections finish (each is closed at its\n"
	"next idle point) for up to [repoint] shutdown_timeout, then exit 0; a second signal exits\n"
	"at once. SIGHUP re-reads the configuration and applies it without closing sessions it does\n"
	"not concern; a file that fails the check is refused (logged with file:line) and the running\n"
	"configuration stays.\n";

static int run(struct config *cfg)
{
	struct runtime *rt = runtime_start(cfg);

	if (rt == NULL)
		return 1;
	runtime_run(rt);
	runtime_free(rt);
	return 0;
}

/* -t: what is valid but likely a mistake, said as warnings (the exit status stays 0). */
static void test_warnings(const struct config *cfg)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;

	/* file:line warnings from the check itself (secrets written in the file) */
	for (const char *w = cfg->warnings; w != NULL && *w != '\0';) {
		size_t n = strcspn(w, "\n");
		printf("repoint: warning: %.*s\n", (int)n, w);
		w += n + (w[n] == '\n');
	}
	if (cfg->has_admin && !host_is_loopback(cfg->admin.host))
		printf("repoint: warning: admin listens on %s, beyond loopback: /status, /metrics and /clients are "
		       "readable from the network%s\n",
		       cfg->admin.host,
		       cfg->admin_token == NULL ? "; drills and reloads stay refused until admin_token is set" : "");
	for (const struct service_config *sc = cfg->services; sc != NULL; sc = sc->next)
		for (int i = 0; i < sc->nmembers; i++) {
			int rc = getaddrinfo(sc->members[i].host, NULL, &hints, &ai);
			if (rc != 0) {
				printf("repoint: warning: service %s: member %s does not resolve now (%s); repoint starts "
				       "anyway and tries again at each probe\n",
				       sc->name, sc->members[i].host, gai_strerror(rc));
				continue;
			}
			freeaddrinfo(ai);
		}
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

	if (argc > 1 && strcmp(argv[1], "drill") == 0)
		return drill_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "iam-token") == 0)
		return iam_token_main(argc - 1, argv + 1);
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
		test_warnings(cfg);
		config_free(cfg);
		return 0;
	}
	log_setup(cfg->log_level, cfg->log_format);
	rc = run(cfg);
	config_free(cfg);
	return rc;
}
