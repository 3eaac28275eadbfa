/* admin.c - GET /status and GET /metrics over evhttp; failover drills under /drills. */
#include "admin.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>

#include "config.h"
#include "drill/drill.h"
#include "log.h"
#include "secret.h"
#include "service.h"

/* Finished drills kept for GET /drills/ID; the oldest go first. */
#define ADMIN_KEEP_DRILLS 16
/* A client waiting for a drill (?wait=1) may wait this much longer than the drill can take. */
#define ADMIN_WAIT_SLACK_S 60

struct admin_waiter {
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	LIST_ENTRY(admin_waiter) link;
};

struct admin_drill {
	struct admin *a;
	struct drill *d;
	LIST_HEAD(, admin_waiter) waiters;   /* POST /drills?wait=1 requests to answer when done */
	TAILQ_ENTRY(admin_drill) link;
};

/* What one request may send: drill options are a few hundred bytes. libevent 2.1's server reads
 * a body before any callback sees the request, so the token is checked after at most this much. */
#define ADMIN_MAX_HEADERS (16 * 1024)
#define ADMIN_MAX_BODY (8 * 1024)
/* A request (or an idle connection) that takes longer is closed. */
#define ADMIN_TIMEOUT_S 5
/* Admin connections open at once; more wait in the listen backlog (the data path keeps its fds). */
#define ADMIN_MAX_CONNS 32

struct admin {
	struct evhttp *http;
	struct event_base *base;
	struct service *const *svcs;
	int nsvcs;
	int64_t started_ms;
	const struct config *cfg;            /* admin_token, [aws] for the drills */
	struct secret *token;                /* admin_token through hooks.secrets; NULL: as written */
	TAILQ_HEAD(, admin_drill) drills;    /* oldest first */
	int ndrills;
	struct admin_hooks hooks;            /* POST /reload */
	struct evconnlistener *listener;     /* paused while ADMIN_MAX_CONNS connections are open */
	struct evhttp *metrics_http;         /* [repoint] metrics: /metrics alone, on an address of its own */
	struct evconnlistener *metrics_listener;  /* paused with the other (one cap for both) */
	struct bufferevent *conns[ADMIN_MAX_CONNS];  /* open admin connections (conns_reap) */
	int nconns;
	struct event *reap;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "%s\n", text);
	reply(req, code, reason, "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

static void status_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	json_t *o = json_object(), *arr = json_array();
	struct evbuffer *b = evbuffer_new();
	char *text;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		reply_text(req, 405, "Method Not Allowed", "use GET");
		evbuffer_free(b);
		json_decref(o);
		json_decref(arr);
		return;
	}
	for (int i = 0; i < a->nsvcs; i++)
		json_array_append_new(arr, service_status_json(a->svcs[i]));
	json_object_set_new(o, "version", json_string(PACKAGE_VERSION));
	json_object_set_new(o, "uptime_ms", json_integer(now_ms() - a->started_ms));
	json_object_set_new(o, "services", arr);
	text = json_dumps(o, JSON_INDENT(2));
	evbuffer_add(b, text, strlen(text));
	evbuffer_add(b, "\n", 1);
	reply(req, 200, "OK", "application/json", b);
	free(text);
	json_decref(o);
	evbuffer_free(b);
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	struct evbuffer *b = evbuffer_new();

	service_metrics(a->svcs, a->nsvcs, b);
	reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
	evbuffer_free(b);
}


/* ---- health: /live, /ready, /startup (Kubernetes probes; HEAD works too) -------------------------- */

static bool health_method(struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
		return true;
	reply_text(req, 405, "Method Not Allowed", "use GET or HEAD");
	return false;
}

/* The loop answers: that is all liveness means. */
static void live_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (health_method(req))
		reply_text(req, 200, "OK", "live");
}

/* 200 when every service would route a new client now; 503 with one line per reason otherwise. */
static void ready_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	struct evbuffer *b;
	bool ok = true;
	char why[256];

	if (!health_method(req))
		return;
	b = evbuffer_new();
	for (int i = 0; i < a->nsvcs; i++) {
		if (!service_ready(a->svcs[i], why, sizeof(why))) {
			evbuffer_add_printf(b, "%s\n", why);
			ok = false;
		}
	}
	if (ok)
		evbuffer_add_printf(b, "ready\n");
	reply(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

/* 200 once every member of every service has been probed once. */
static void startup_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;

	if (!health_method(req))
		return;
	for (int i = 0; i < a->nsvcs; i++) {
		if (!service_started(a->svcs[i])) {
			reply_text(req, 503, "Service Unavailable", "starting: members not probed yet");
			return;
		}
	}
	reply_text(req, 200, "OK", "started");
}

/* ---- /drills ------------------------------------------------------------------------------------ */

static void reply_json(struct evhttp_request *req, int code, const char *reason, json_t *o)
{
	struct evbuffer *b = evbuffer_new();
	char *text = json_dumps(o, JSON_INDENT(2));

	if (text != NULL) {
		evbuffer_add(b, text, strlen(text));
		evbuffer_add(b, "\n", 1);
	}
	reply(req, code, reason, "application/json", b);
	free(text);
	evbuffer_free(b);
	json_decref(o);
}

static void reply_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	reply_json(req, code, reason, json_pack("{s:s}", "error", msg));
}

/* Compares without stopping at the first difference: the token is a secret. */
static bool token_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;

	for (size_t i = 0; i < la; i++)
		diff |= (unsigned char)(a[i] ^ b[i % (lb > 0 ? lb : 1)]);
	return diff == 0;
}

/* The request carries the configured admin_token: 1 yes, 0 no, -1 the token cannot be read now
 * (a secretsmanager: one not fetched yet; why says so). */
static int authorized(const struct admin *a, struct evhttp_request *req, char *why, size_t whylen)
{
	const char *h;
	char *want;
	int ok;

	if (a->cfg == NULL || a->cfg->admin_token == NULL)
		return 1;
	want = a->token != NULL ? secret_get(a->token, NULL, NULL, why, whylen) : strdup(a->cfg->admin_token);
	if (want == NULL) {
		if (a->token == NULL)
			snprintf(why, whylen, "out of memory");
		return -1;
	}
	h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	ok = h != NULL && strncmp(h, "Bearer ", 7) == 0 && token_equal(h + 7, want);
	secret_value_free(want);
	return ok;
}

/* Requests that change something (start or cancel a drill) need admin_token configured and
 * presented: without one configured they are refused (403) with how to enable them, with a wrong
 * or missing one 401, and 503 while the token itself cannot be read. True when the request may go
 * on; otherwise it has been answered. */
static bool may_change(const struct admin *a, struct evhttp_request *req, const char *what)
{
	char msg[300], why[200] = "";
	int auth;

	if (a->cfg == NULL || a->cfg->admin_token == NULL) {
		snprintf(msg, sizeof(msg),
			 "%s changes the cluster: set admin_token in [repoint] and send \"Authorization: Bearer "
			 "TOKEN\" (repoint drill does so from the same configuration)", what);
		reply_error(req, 403, "Forbidden", msg);
		return false;
	}
	auth = authorized(a, req, why, sizeof(why));
	if (auth < 0) {
		snprintf(msg, sizeof(msg), "%s needs the admin token, which cannot be read now: %s", what, why);
		reply_error(req, 503, "Service Unavailable", msg);
		return false;
	}
	if (auth == 0) {
		snprintf(msg, sizeof(msg), "%s needs the admin token (Authorization: Bearer ...)", what);
		reply_error(req, 401, "Unauthorized", msg);
		return false;
	}
	return true;
}


static json_t *drill_entry_json(const struct admin_drill *ad, bool full)
{
	json_t *p = drill_progress_json(ad->d);
	json_t *o = json_pack("{s:s, s:s, s:O}", "id", drill_id(ad->d), "service", drill_service_name(ad->d), "status",
			      json_object_get(p, "status"));

	json_object_set_new(o, "href", json_sprintf("/drills/%s", drill_id(ad->d)));
	if (full) {
		json_object_set(o, "progress", p);
		json_object_set(o, "report", drill_finished(ad->d) ? drill_report(ad->d) : json_null());
	}
	json_decref(p);
	return o;
}

static void drill_entry_free(struct admin_drill *ad)
{
	struct admin_waiter *w;

	while ((w = LIST_FIRST(&ad->waiters)) != NULL) {
		LIST_REMOVE(w, link);
		free(w);
	}
	drill_free(ad->d);
	free(ad);
}

/* Keeps the list bounded: the oldest finished drills go. */
static void drills_trim(struct admin *a)
{
	struct admin_drill *ad, *next;

	for (ad = TAILQ_FIRST(&a->drills); ad != NULL && a->ndrills > ADMIN_KEEP_DRILLS; ad = next) {
		next = TAILQ_NEXT(ad, link);
		if (!drill_finished(ad->d) || !LIST_EMPTY(&ad->waiters))
			continue;
		TAILQ_REMOVE(&a->drills, ad, link);
		a->ndrills--;
		drill_entry_free(ad);
	}
}

static void drill_done(void *arg, struct drill *d)
{
	struct admin_drill *ad = arg;
	struct admin_waiter *w;

	(void)d;
	while ((w = LIST_FIRST(&ad->waiters)) != NULL) {
		LIST_REMOVE(w, link);
		reply_json(w->req, 200, "OK", drill_entry_json(ad, true));
		free(w);
	}
}

/* A client that waited for a drill went away: forget its request (libevent frees it). */
static void waiter_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct admin *a = arg;
	struct admin_drill *ad;
	struct admin_waiter *w, *next;

	TAILQ_FOREACH(ad, &a->drills, link) {
		for (w = LIST_FIRST(&ad->waiters); w != NULL; w = next) {
			next = LIST_NEXT(w, link);
			if (w->evcon == evcon) {
				LIST_REMOVE(w, link);
				free(w);
			}
		}
	}
}

static struct admin_drill *find_drill(struct admin *a, const char *id)
{
	struct admin_drill *ad;

	TAILQ_FOREACH(ad, &a->drills, link)
		if (strcmp(drill_id(ad->d), id) == 0)
			return ad;
	return NULL;
}

static bool query_flag(struct evhttp_request *req, const char *name)
{
	struct evkeyvalq q;
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)), *v;
	bool on = false;

	if (query == NULL || evhttp_parse_query_str(query, &q) != 0)
		return false;
	v = evhttp_find_header(&q, name);
	on = v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0);
	evhttp_clear_headers(&q);
	return on;
}

static void drills_post(struct admin *a, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	struct drill_options o;
	struct service *svc = NULL;
	struct admin_drill *ad;
	json_error_t jerr;
	json_t *body;
	char err[300], *text;
	bool wait = query_flag(req, "wait");

	if (!may_change(a, req, "a drill"))
		return;
	if (len > 64 * 1024) {
		reply_error(req, 413, "Payload Too Large", "drill options are a small JSON object");
		return;
	}
	text = malloc(len + 1);
	if (text == NULL) {
		reply_error(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	evbuffer_copyout(in, text, len);
	text[len] = '\0';
	body = json_loads(text, 0, &jerr);
	explicit_bzero(text, len);
	free(text);
	if (body == NULL) {
		snprintf(err, sizeof(err), "the body is not JSON: %s", jerr.text);
		reply_error(req, 400, "Bad Request", err);
		return;
	}
	drill_options_init(&o);
	if (!drill_options_from_json(body, &o, err, sizeof(err))) {
		json_decref(body);
		drill_options_free(&o);
		reply_error(req, 400, "Bad Request", err);
		return;
	}
	json_decref(body);
	for (int i = 0; i < a->nsvcs; i++)
		if (strcmp(service_name(a->svcs[i]), o.service) == 0)
			svc = a->svcs[i];
	if (svc == NULL) {
		snprintf(err, sizeof(err), "no service named '%s'", o.service);
		drill_options_free(&o);
		reply_error(req, 404, "Not Found", err);
		return;
	}
	TAILQ_FOREACH(ad, &a->drills, link) {
		if (!drill_finished(ad->d) && strcmp(drill_service_name(ad->d), o.service) == 0) {
			snprintf(err, sizeof(err), "drill %s of service %s is running", drill_id(ad->d), o.service);
			drill_options_free(&o);
			reply_error(req, 409, "Conflict", err);
			return;
		}
	}
	ad = calloc(1, sizeof(*ad));
	if (ad == NULL || (ad->d = drill_new(a->base, svc, a->cfg != NULL ? &a->cfg->aws : NULL, &o, drill_done, ad)) == NULL) {
		free(ad);
		drill_options_free(&o);
		reply_error(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	ad->a = a;
	LIST_INIT(&ad->waiters);
	TAILQ_INSERT_TAIL(&a->drills, ad, link);
	a->ndrills++;
	drills_trim(a);
	log_info("admin", "drill %s of service %s started%s", drill_id(ad->d), o.service, o.dry_run ? " (dry run)" : "");
	if (wait) {
		struct admin_waiter *w = calloc(1, sizeof(*w));
		struct evhttp_connection *evcon = evhttp_request_get_connection(req);
		if (w != NULL && evcon != NULL) {
			w->req = req;
			w->evcon = evcon;
			LIST_INSERT_HEAD(&ad->waiters, w, link);
			evhttp_connection_set_closecb(evcon, waiter_closed_cb, a);
			/* The drill may outlast the admin API's usual timeout. */
			evhttp_connection_set_timeout(evcon, (int)((o.warmup_ms + o.timeout_ms + o.duration_after_ms) / 1000 +
								   ADMIN_WAIT_SLACK_S));
		} else {
			free(w);
			wait = false;
		}
	}
	drill_options_free(&o);
	drill_begin(ad->d);
	if (!wait) {
		struct evbuffer *b = evbuffer_new();
		json_t *entry = drill_entry_json(ad, false);
		char *t = json_dumps(entry, JSON_INDENT(2));
		evhttp_add_header(evhttp_request_get_output_headers(req), "Location",
				  json_string_value(json_object_get(entry, "href")));
		evbuffer_add_printf(b, "%s\n", t != NULL ? t : "{}");
		reply(req, 202, "Accepted", "application/json", b);
		free(t);
		json_decref(entry);
		evbuffer_free(b);
	}
}

static void drills_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	struct admin_drill *ad;
	json_t *arr;

	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_POST:
		drills_post(a, req);
		return;
	case EVHTTP_REQ_GET:
		arr = json_array();
		TAILQ_FOREACH(ad, &a->drills, link)
			json_array_append_new(arr, drill_entry_json(ad, false));
		reply_json(req, 200, "OK", json_pack("{s:o}", "drills", arr));
		return;
	default:
		reply_error(req, 405, "Method Not Allowed", "use GET or POST");
		return;
	}
}

/* /drills/ID: GET the progress and the report, DELETE to cancel a running drill. */
static void drill_item(struct admin *a, struct evhttp_request *req, const char *id)
{
	struct admin_drill *ad = find_drill(a, id);

	if (ad == NULL) {
		reply_error(req, 404, "Not Found", "no such drill");
		return;
	}
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		reply_json(req, 200, "OK", drill_entry_json(ad, true));
		return;
	case EVHTTP_REQ_DELETE:
		if (!may_change(a, req, "cancelling a drill"))
			return;
		drill_cancel(ad->d, "cancelled through the admin API");
		reply_json(req, 200, "OK", drill_entry_json(ad, false));
		return;
	default:
		reply_error(req, 405, "Method Not Allowed", "use GET or DELETE");
		return;
	}
}

/* POST /services/NAME/pause | resume | drain. */
static void service_action(struct admin *a, struct evhttp_request *req, const char *rest)
{
	const char *slash = strchr(rest, '/');
	struct service *svc = NULL;
	char name[128], what[64];
	const char *action;

	if (slash == NULL || (size_t)(slash - rest) >= sizeof(name)) {
		reply_error(req, 404, "Not Found", "use POST /services/NAME/pause, /resume or /drain");
		return;
	}
	memcpy(name, rest, (size_t)(slash - rest));
	name[slash - rest] = '\0';
	action = slash + 1;
	if (strcmp(action, "pause") != 0 && strcmp(action, "resume") != 0 && strcmp(action, "drain") != 0) {
		reply_error(req, 404, "Not Found", "use POST /services/NAME/pause, /resume or /drain");
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		reply_error(req, 405, "Method Not Allowed", "use POST");
		return;
	}
	snprintf(what, sizeof(what), "%s a service", action);
	if (!may_change(a, req, what))
		return;
	for (int i = 0; i < a->nsvcs; i++)
		if (strcmp(service_name(a->svcs[i]), name) == 0)
			svc = a->svcs[i];
	if (svc == NULL) {
		reply_error(req, 404, "Not Found", "no such service");
		return;
	}
	if (strcmp(action, "drain") == 0)
		service_drain_all(svc, "drained through the admin API");
	else
		service_pause(svc, strcmp(action, "pause") == 0);
	reply_json(req, 200, "OK", json_pack("{s:s, s:b}", "service", name, "paused", service_paused(svc)));
}

static void notfound_cb(struct evhttp_request *req, void *arg)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	if (path != NULL && strncmp(path, "/services/", 10) == 0) {
		service_action(arg, req, path + 10);
		return;
	}
	if (path != NULL && strncmp(path, "/drills/", 8) == 0 && path[8] != '\0' && strchr(path + 8, '/') == NULL) {
		drill_item(arg, req, path + 8);
		return;
	}
	reply_text(req, 404, "Not Found", "not found: try /status, /metrics, /clients, /live, /ready, /startup, /drills, /reload or /services/NAME/pause");
}

/* Forget the admin connections evhttp has freed. libevent 2.1 tells nothing when it frees one,
 * so each is held by a reference of ours (conn_new) and known gone once bufferevent_free has
 * cleared its callbacks (a live evhttp connection always has its event callback); dropping our
 * reference then frees it and closes its socket. */
static void conns_reap(struct admin *a)
{
	bufferevent_event_cb ev;

	for (int i = 0; i < a->nconns;) {
		bufferevent_getcb(a->conns[i], NULL, NULL, &ev, NULL);
		if (ev != NULL) {
			i++;
			continue;
		}
		bufferevent_decref(a->conns[i]);
		a->conns[i] = a->conns[--a->nconns];
	}
	if (a->nconns < ADMIN_MAX_CONNS && a->listener != NULL)
		evconnlistener_enable(a->listener);
	if (a->nconns < ADMIN_MAX_CONNS && a->metrics_listener != NULL)
		evconnlistener_enable(a->metrics_listener);
	if (a->nconns > 0 && !evtimer_pending(a->reap, NULL)) {
		struct timeval tv = {0, 200 * 1000};
		evtimer_add(a->reap, &tv);
	}
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conns_reap(arg);
}

/* evhttp asks for each accepted connection's bufferevent. At ADMIN_MAX_CONNS the listener pauses
 * (evconnlistener accepts no more once disabled, even within one callback). */
static struct bufferevent *conn_new(struct event_base *base, void *arg)
{
	struct admin *a = arg;
	struct bufferevent *bev;

	conns_reap(a);
	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	/* What evhttp has not consumed stays bounded (it stops reading beyond; also after evhttp freed
	 * the connection and before conns_reap drops the last reference). */
	bufferevent_setwatermark(bev, EV_READ, 0, ADMIN_MAX_HEADERS + ADMIN_MAX_BODY);
	if (a->nconns < ADMIN_MAX_CONNS) {
		bufferevent_incref(bev);
		a->conns[a->nconns++] = bev;
	}
	if (a->nconns >= ADMIN_MAX_CONNS && a->listener != NULL)
		evconnlistener_disable(a->listener);
	if (a->nconns >= ADMIN_MAX_CONNS && a->metrics_listener != NULL)
		evconnlistener_disable(a->metrics_listener);
	if (!evtimer_pending(a->reap, NULL)) {
		struct timeval tv = {0, 200 * 1000};
		evtimer_add(a->reap, &tv);
	}
	return bev;
}

/* GET /clients[?service=NAME]: every session. */
static void clients_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	struct evkeyvalq q;
	const char *only;
	json_t *all;

	if (!health_method(req))
		return;
	all = json_array();
	TAILQ_INIT(&q);
	evhttp_parse_query_str(evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)) != NULL
				       ? evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req))
				       : "",
			       &q);
	only = evhttp_find_header(&q, "service");
	for (int i = 0; all != NULL && i < a->nsvcs; i++) {
		json_t *s;
		if (only != NULL && strcmp(only, service_name(a->svcs[i])) != 0)
			continue;
		s = service_clients_json(a->svcs[i]);
		if (s != NULL)
			json_array_extend(all, s);
		json_decref(s);
	}
	evhttp_clear_headers(&q);
	reply_json(req, 200, "OK", json_pack("{s:o}", "clients", all != NULL ? all : json_array()));
}

/* POST /reload: the file is checked now; a valid one is applied from the loop right after. */
static void reload_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	char err[8192];

	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		reply_error(req, 405, "Method Not Allowed", "use POST");
		return;
	}
	if (!may_change(a, req, "a reload"))
		return;
	if (a->hooks.reload == NULL) {
		reply_error(req, 503, "Service Unavailable", "reloads are not possible here");
		return;
	}
	if (!a->hooks.reload(a->hooks.arg, err, sizeof(err))) {
		reply_error(req, 400, "Bad Request", err);
		return;
	}
	reply_json(req, 202, "Accepted",
		   json_pack("{s:s, s:s}", "status", "reloading", "message",
			     "the configuration is valid and is being applied now (the log says what changed)"));
}

/* An HTTP server on addr with the admin API's bounds (headers, bodies, time, connections). NULL when
 * it cannot listen there. */
static struct evhttp *http_on(struct admin *a, const struct hostport *addr, struct evconnlistener **listener)
{
	struct evhttp *http = evhttp_new(a->base);
	struct evhttp_bound_socket *bound = NULL;
	char buf[300];

	if (http == NULL || (bound = evhttp_bind_socket_with_handle(http, addr->host, addr->port)) == NULL) {
		log_error("admin", "cannot listen on %s", hostport_str(addr, buf, sizeof(buf)));
		if (http != NULL)
			evhttp_free(http);
		return NULL;
	}
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_DELETE);
	/* Everything a client sends is bounded before it is read: a request's headers and body by size
	 * (larger: 431/413 and the connection closed, nothing kept), and a request or an idle connection
	 * that dribbles by time. */
	evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(http, ADMIN_MAX_BODY);
	*listener = evhttp_bound_socket_get_listener(bound);
	evhttp_set_bevcb(http, conn_new, a);
	{
		struct timeval tv = {ADMIN_TIMEOUT_S, 0};
		evhttp_set_timeout_tv(http, &tv);
	}
	log_info("admin", "listening on http://%s", hostport_str(addr, buf, sizeof(buf)));
	return http;
}

static void metrics_only_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	reply_text(req, 404, "Not Found", "not found: this address serves /metrics only");
}

struct admin *admin_start(struct event_base *base, const struct config *cfg, struct service *const *svcs,
			  int nsvcs, const struct admin_hooks *hooks)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->svcs = svcs;
	a->nsvcs = nsvcs;
	if (hooks != NULL)
		a->hooks = *hooks;
	a->started_ms = now_ms();
	a->base = base;
	TAILQ_INIT(&a->drills);
	a->cfg = cfg;
	if (a->hooks.secrets != NULL && cfg->admin_token != NULL &&
	    (a->token = secret_open(a->hooks.secrets, cfg->admin_token)) == NULL) {
		admin_free(a);
		return NULL;
	}
	a->reap = evtimer_new(base, reap_cb, a);
	if (a->reap == NULL || (cfg->has_admin && (a->http = http_on(a, &cfg->admin, &a->listener)) == NULL) ||
	    (cfg->has_metrics && (a->metrics_http = http_on(a, &cfg->metrics, &a->metrics_listener)) == NULL)) {
		admin_free(a);
		return NULL;
	}
	if (a->http != NULL) {
		evhttp_set_cb(a->http, "/status", status_cb, a);
		evhttp_set_cb(a->http, "/live", live_cb, a);
		evhttp_set_cb(a->http, "/ready", ready_cb, a);
		evhttp_set_cb(a->http, "/startup", startup_cb, a);
		evhttp_set_cb(a->http, "/metrics", metrics_cb, a);
		evhttp_set_cb(a->http, "/drills", drills_cb, a);
		evhttp_set_cb(a->http, "/reload", reload_cb, a);
		evhttp_set_cb(a->http, "/clients", clients_cb, a);
		evhttp_set_gencb(a->http, notfound_cb, a);
	}
	if (a->metrics_http != NULL) {
		evhttp_set_cb(a->metrics_http, "/metrics", metrics_cb, a);
		evhttp_set_gencb(a->metrics_http, metrics_only_cb, a);
	}
	return a;
}

void admin_free(struct admin *a)
{
	struct admin_drill *ad;

	if (a == NULL)
		return;
	/* First the HTTP side (its connections' close callbacks still see the drills), then the
	 * drills, whose load and promotions stop where they are. */
	a->listener = NULL;  /* freed with the evhttp */
	a->metrics_listener = NULL;
	if (a->http != NULL)
		evhttp_free(a->http);
	if (a->metrics_http != NULL)
		evhttp_free(a->metrics_http);
	for (int i = 0; i < a->nconns; i++)
		bufferevent_decref(a->conns[i]);
	if (a->reap != NULL)
		event_free(a->reap);
	while ((ad = TAILQ_FIRST(&a->drills)) != NULL) {
		TAILQ_REMOVE(&a->drills, ad, link);
		drill_entry_free(ad);
	}
	secret_close(a->token);
	free(a);
}

void admin_reconfigure(struct admin *a, const struct config *cfg, struct service *const *svcs, int nsvcs)
{
	struct secret *token = NULL;

	if (a->hooks.secrets != NULL && cfg->admin_token != NULL) {
		token = secret_open(a->hooks.secrets, cfg->admin_token);
		if (token == NULL) {
			log_error("admin", "reload: out of memory: admin_token stays as it was");
			return;
		}
	}
	secret_close(a->token);
	a->token = token;
	a->cfg = cfg;
	a->svcs = svcs;
	a->nsvcs = nsvcs;
}
