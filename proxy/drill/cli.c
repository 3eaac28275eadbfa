/* drill/cli.c - `repoint drill`: where the drill runs, runs in a row, progress, outputs, gate.
 *
 * A repoint already serving the configuration owns the listener the load must go through, so the
 * drill is handed to it (POST /drills on its admin address, then GET /drills/ID until done).
 * Otherwise the configuration's services are started here (runtime_start) and the drill runs on
 * that loop, after which they are stopped. Either way the reports come back as JSON and are
 * rendered here: text on stdout, --json, --svg. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "config.h"
#include "drill/drill.h"
#include "drill/report.h"
#include "drill/svg.h"
#include "log.h"
#include "runtime.h"
#include "secret.h"
#include "service.h"
#include "util.h"

/* How long the admin address gets to say a repoint is there. */
#define CLI_ADMIN_PROBE_MS 1500
#define CLI_POLL_MS 250
/* How long a secretsmanager: admin_token may take to fetch. */
#define CLI_SECRET_MS 15000

struct cli {
	struct config *cfg;
	char *admin_token;         /* admin_token's value (env:, file:, secretsmanager: read once) */
	struct drill_options *o;
	bool tty;
	bool progress_shown;
	int64_t last_plain_ms;
	json_t *runs;
	/* local mode */
	struct runtime *rt;
	struct service *svc;
	struct drill *cur;
	struct drill *finished;    /* freed after its callback has returned */
	struct event *progress, *pause, *reap;
	int run;
};

static void cli_progress(struct cli *c, const json_t *p)
{
	char line[256];
	int64_t now = now_ms();

	if (c->o->quiet || p == NULL)
		return;
	drill_progress_line(p, line, sizeof(line));
	if (c->tty) {
		fprintf(stderr, "\r%s\033[K", line);
		c->progress_shown = true;
	} else if (now - c->last_plain_ms >= 1000) {
		/* Not a terminal: a plain line a second is enough for a log. */
		fprintf(stderr, "%s\n", line);
		c->last_plain_ms = now;
	}
	fflush(stderr);
}

static void cli_progress_end(struct cli *c)
{
	if (c->progress_shown)
		fputc('\n', stderr);
	c->progress_shown = false;
}

/* Whether another run follows a run that ended this way. */
static bool cli_continue(const json_t *report)
{
	const char *st = json_string_value(json_object_get(report, "status"));

	return st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "not_recovered") == 0);
}

/* ---- local: the services run here -------------------------------------------------------------- */

static void local_start_run(struct cli *c);

static void local_progress_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cli *c = arg;
	json_t *p;

	(void)fd;
	(void)what;
	if (c->cur == NULL)
		return;
	p = drill_progress_json(c->cur);
	cli_progress(c, p);
	json_decref(p);
}

static void local_pause_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	local_start_run(arg);
}

static void local_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cli *c = arg;

	(void)fd;
	(void)what;
	drill_free(c->finished);
	c->finished = NULL;
}

static void local_done(void *arg, struct drill *d)
{
	struct cli *c = arg;
	json_t *report = drill_report(d);
	struct timeval tv = {.tv_sec = c->o->pause_ms / 1000, .tv_usec = (c->o->pause_ms % 1000) * 1000};

	local_progress_cb(-1, 0, c);
	cli_progress_end(c);
	json_array_append(c->runs, report);
	c->cur = NULL;
	c->finished = d;
	/* Not freed inside its own callback: from the loop, right after. */
	event_active(c->reap, EV_TIMEOUT, 1);
	if (c->run < c->o->runs && cli_continue(report)) {
		if (!c->o->quiet)
			fprintf(stderr, "drill %s: run %d/%d done; next in %lld ms\n", c->o->service, c->run, c->o->runs,
				(long long)c->o->pause_ms);
		evtimer_add(c->pause, &tv);
		return;
	}
	runtime_stop(c->rt);
}

static void local_start_run(struct cli *c)
{
	c->run++;
	c->cur = drill_new(c->rt->base, c->svc, &c->cfg->aws, c->o, local_done, c);
	if (c->cur == NULL) {
		fprintf(stderr, "repoint drill: out of memory\n");
		runtime_stop(c->rt);
		return;
	}
	drill_begin(c->cur);
}

static int run_local(struct cli *c)
{
	struct timeval tv = {0, CLI_POLL_MS * 1000};

	c->rt = runtime_start(c->cfg);
	if (c->rt == NULL) {
		fprintf(stderr, "repoint drill: cannot start the services of %s here (see the log above); if a repoint "
				"already runs with it, give it an admin address so that the drill can be handed to it\n",
			c->cfg->path);
		return DRILL_EXIT_NOT_RUN;
	}
	c->svc = runtime_service(c->rt, c->o->service);
	c->progress = event_new(c->rt->base, -1, EV_PERSIST, local_progress_cb, c);
	c->pause = evtimer_new(c->rt->base, local_pause_cb, c);
	c->reap = event_new(c->rt->base, -1, 0, local_reap_cb, c);
	if (c->svc == NULL || c->progress == NULL || c->pause == NULL || c->reap == NULL) {
		fprintf(stderr, "repoint drill: out of memory\n");
		return DRILL_EXIT_NOT_RUN;
	}
	if (!c->o->quiet)
		event_add(c->progress, &tv);
	local_start_run(c);
	runtime_run(c->rt);
	cli_progress_end(c);
	/* A signal stopped the loop before the drill ended: its report says so. */
	if (c->cur != NULL) {
		drill_cancel(c->cur, "interrupted");
		json_array_append(c->runs, drill_report(c->cur));
		drill_free(c->cur);
		c->cur = NULL;
	}
	drill_free(c->finished);
	c->finished = NULL;
	event_free(c->progress);
	event_free(c->pause);
	event_free(c->reap);
	runtime_free(c->rt);
	c->rt = NULL;
	return 0;
}

/* ---- remote: a repoint already runs the configuration ------------------------------------------ */

struct http_body {
	char *data;
	size_t len;
};

static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_body *b = arg;
	size_t n = size * nmemb;
	char *grown;

	if (b->len + n > (16u << 20))
		return 0;  /* no drill report comes near this */
	grown = realloc(b->data, b->len + n + 1);
	if (grown == NULL)
		return 0;
	memcpy(grown + b->len, ptr, n);
	b->data = grown;
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* One request to the admin API (blocking: this process has nothing else to do meanwhile).
 * Returns the HTTP status (0 when no answer) and the body (to free) in *out. */
static long http_call(const struct cli *c, const char *method, const char *path, const char *body,
		      int64_t timeout_ms, char **out)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct http_body b = {NULL, 0};
	char url[400], host[300], auth[600];
	long status = 0;

	*out = NULL;
	if (h == NULL)
		return 0;
	/* An IPv6 literal needs its brackets in a URL. */
	if (strchr(c->cfg->admin.host, ':') != NULL)
		snprintf(host, sizeof(host), "[%s]", c->cfg->admin.host);
	else
		snprintf(host, sizeof(host), "%s", c->cfg->admin.host);
	snprintf(url, sizeof(url), "http://%s:%u%s", host, c->cfg->admin.port, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CLI_ADMIN_PROBE_MS);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body != NULL) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	}
	if (c->admin_token != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->admin_token);
		hdrs = curl_slist_append(hdrs, auth);
		explicit_bzero(auth, sizeof(auth));
	}
	if (hdrs != NULL)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	for (struct curl_slist *l = hdrs; l != NULL; l = l->next)
		explicit_bzero(l->data, strlen(l->data)); /* the token */
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	*out = b.data;
	return status;
}

static bool admin_answers(const struct cli *c)
{
	char *body = NULL;
	long st = http_call(c, "GET", "/status", NULL, CLI_ADMIN_PROBE_MS, &body);
	json_t *j = body != NULL ? json_loads(body, 0, NULL) : NULL;
	bool ok = st == 200 && json_is_array(json_object_get(j, "services"));

	json_decref(j);
	free(body);
	return ok;
}

static const char *json_error_text(json_t *j, const char *body)
{
	const char *e = json_string_value(json_object_get(j, "error"));

	return e != NULL ? e : body != NULL ? body : "no answer";
}

static volatile sig_atomic_t cli_interrupted;

static void cli_on_signal(int sig)
{
	(void)sig;
	cli_interrupted = 1;
}

/* One run through the admin API. Returns the report (new reference), or NULL with *exit set. */
static json_t *remote_run(struct cli *c, int *exit_code)
{
	json_t *opts = drill_options_json(c->o), *j = NULL, *report = NULL;
	char *text = json_dumps(opts, JSON_COMPACT), *body = NULL, path[300];
	long st;
	const char *id;
	struct timespec ts = {0, CLI_POLL_MS * 1000000L};

	json_decref(opts);
	st = http_call(c, "POST", "/drills", text, 30000, &body);
	if (text != NULL) {
		explicit_bzero(text, strlen(text));
		free(text);
	}
	j = body != NULL ? json_loads(body, 0, NULL) : NULL;
	if (st != 202 && st != 200) {
		fprintf(stderr, "repoint drill: the repoint at %s:%u refused the drill (HTTP %ld): %s\n",
			c->cfg->admin.host, c->cfg->admin.port, st, json_error_text(j, body));
		*exit_code = st == 400 || st == 401 || st == 403 || st == 404 ? DRILL_EXIT_USAGE : DRILL_EXIT_NOT_RUN;
		json_decref(j);
		free(body);
		return NULL;
	}
	id = json_string_value(json_object_get(j, "id"));
	if (id == NULL) {
		fprintf(stderr, "repoint drill: unexpected answer from the admin API: %s\n", body);
		*exit_code = DRILL_EXIT_NOT_RUN;
		json_decref(j);
		free(body);
		return NULL;
	}
	snprintf(path, sizeof(path), "/drills/%s", id);
	free(body);
	json_decref(j);
	if (!c->o->quiet)
		fprintf(stderr, "drill handed to the repoint at %s:%u: %s\n", c->cfg->admin.host, c->cfg->admin.port,
			path);
	for (;;) {
		const char *status;
		nanosleep(&ts, NULL);
		st = http_call(c, "GET", path, NULL, 10000, &body);
		j = body != NULL ? json_loads(body, 0, NULL) : NULL;
		free(body);
		if (st != 200 || j == NULL) {
			json_decref(j);
			if (cli_interrupted) {
				*exit_code = DRILL_EXIT_NOT_RUN;
				return NULL;
			}
			continue;  /* a busy admin API: ask again */
		}
		cli_progress(c, json_object_get(j, "progress"));
		status = json_string_value(json_object_get(j, "status"));
		if (status != NULL && strcmp(status, "running") != 0) {
			report = json_incref(json_object_get(j, "report"));
			json_decref(j);
			break;
		}
		json_decref(j);
		if (cli_interrupted) {
			/* The drill goes on in that repoint: say where to find it. */
			cli_progress_end(c);
			fprintf(stderr, "repoint drill: interrupted; the drill goes on in that repoint: GET %s\n", path);
			*exit_code = DRILL_EXIT_NOT_RUN;
			return NULL;
		}
	}
	cli_progress_end(c);
	if (report == NULL) {
		fprintf(stderr, "repoint drill: the drill ended without a report\n");
		*exit_code = DRILL_EXIT_NOT_RUN;
	}
	return report;
}

static int run_remote(struct cli *c)
{
	int exit_code = 0;
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cli_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (int run = 1; run <= c->o->runs; run++) {
		json_t *report = remote_run(c, &exit_code);
		if (report == NULL)
			return exit_code;
		json_array_append_new(c->runs, report);
		if (run == c->o->runs || !cli_continue(report) || cli_interrupted)
			break;
		if (!c->o->quiet)
			fprintf(stderr, "drill %s: run %d/%d done; next in %lld ms\n", c->o->service, run, c->o->runs,
				(long long)c->o->pause_ms);
		for (int64_t until = now_ms() + c->o->pause_ms; now_ms() < until && !cli_interrupted;) {
			struct timespec ts = {0, 50 * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

/* ---- outputs ----------------------------------------------------------------------------------- */

static bool write_file(const char *path, const json_t *result, bool svg)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (f == NULL) {
		fprintf(stderr, "repoint drill: cannot write %s: %m\n", path);
		return false;
	}
	if (svg)
		drill_svg_write(result, f);
	else
		json_dumpf(result, f, JSON_INDENT(2));
	if (!svg)
		fputc('\n', f);
	ok = ferror(f) == 0;
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "repoint drill: cannot write %s: %m\n", path);
		return false;
	}
	return true;
}

static const struct service_config *find_service(const struct config *cfg, const char *name)
{
	for (const struct service_config *s = cfg->services; s != NULL; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

int drill_main(int argc, char **argv)
{
	struct drill_options o;
	struct cli c;
	struct drill_gate gate;
	char err[8192];
	json_t *result;
	int rc, exit_code;

	drill_options_init(&o);
	memset(&c, 0, sizeof(c));
	rc = drill_options_parse(argc, argv, &o, err, sizeof(err));
	if (rc != 0) {
		if (rc < 0)
			fprintf(stderr, "repoint drill: %s\n(repoint drill --help lists the options)\n", err);
		drill_options_free(&o);
		return rc > 0 ? DRILL_EXIT_OK : DRILL_EXIT_USAGE;
	}
	c.cfg = config_load(o.config_path, err, sizeof(err));
	if (c.cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		drill_options_free(&o);
		return DRILL_EXIT_USAGE;
	}
	if (find_service(c.cfg, o.service) == NULL) {
		size_t off = 0;
		err[0] = '\0';
		for (const struct service_config *s = c.cfg->services; s != NULL && off + 1 < sizeof(err); s = s->next)
			off += (size_t)snprintf(err + off, sizeof(err) - off, "%s%s", off ? ", " : "", s->name);
		fprintf(stderr, "repoint drill: no [service %s] in %s (services: %s)\n", o.service, o.config_path, err);
		config_free(c.cfg);
		drill_options_free(&o);
		return DRILL_EXIT_USAGE;
	}
	/* The drill speaks for itself (progress, timeline): the services only when something breaks. */
	log_setup(LOG_ERROR, c.cfg->log_format);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	c.o = &o;
	c.tty = isatty(STDERR_FILENO) == 1;
	c.runs = json_array();
	if (c.cfg->has_admin && !o.local && admin_answers(&c)) {
		/* The running repoint checks the token: read it as it does (env:, file:, secretsmanager:). */
		if (c.cfg->admin_token != NULL &&
		    (c.admin_token = secret_fetch_once(c.cfg, c.cfg->admin_token, CLI_SECRET_MS, err, sizeof(err))) == NULL) {
			fprintf(stderr, "repoint drill: admin_token: %s\n", err);
			exit_code = DRILL_EXIT_NOT_RUN;
		} else {
			exit_code = run_remote(&c);
		}
	} else
		exit_code = run_local(&c);
	gate = (struct drill_gate){.max_outage_ms = o.max_outage_ms, .max_errors = o.max_errors};
	result = drill_result_new(o.service, c.runs);
	if (json_array_size(c.runs) > 0) {
		rc = drill_result_decide(result, &gate);
		if (exit_code == 0)
			exit_code = rc;
		drill_report_text(result, stdout);
		if (o.dry_run)
			printf("dry run: nothing was changed\n");
		fflush(stdout);
		if (o.json_path != NULL && !write_file(o.json_path, result, false) && exit_code == 0)
			exit_code = DRILL_EXIT_NOT_RUN;
		if (o.svg_path != NULL && !write_file(o.svg_path, result, true) && exit_code == 0)
			exit_code = DRILL_EXIT_NOT_RUN;
	} else if (exit_code == 0) {
		exit_code = DRILL_EXIT_NOT_RUN;
	}
	json_decref(result);
	curl_global_cleanup();
	secret_value_free(c.admin_token);
	config_free(c.cfg);
	drill_options_free(&o);
	return exit_code;
}
