/* admin.c - GET /status and GET /metrics over evhttp. */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "config.h"
#include "log.h"
#include "service.h"

struct admin {
	struct evhttp *http;
	struct service *const *svcs;
	int nsvcs;
	int64_t started_ms;
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

static void notfound_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	reply_text(req, 404, "Not Found", "not found: try /status or /metrics");
}

struct admin *admin_start(struct event_base *base, const struct hostport *addr, struct service *const *svcs,
			  int nsvcs)
{
	struct admin *a = calloc(1, sizeof(*a));
	char buf[300];

	if (a == NULL)
		return NULL;
	a->svcs = svcs;
	a->nsvcs = nsvcs;
	a->started_ms = now_ms();
	a->http = evhttp_new(base);
	if (a->http == NULL || evhttp_bind_socket(a->http, addr->host, addr->port) != 0) {
		log_error("admin", "cannot listen on %s", hostport_str(addr, buf, sizeof(buf)));
		admin_free(a);
		return NULL;
	}
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(a->http, 30);
	evhttp_set_cb(a->http, "/status", status_cb, a);
	evhttp_set_cb(a->http, "/metrics", metrics_cb, a);
	evhttp_set_gencb(a->http, notfound_cb, a);
	log_info("admin", "listening on http://%s", hostport_str(addr, buf, sizeof(buf)));
	return a;
}

void admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->http != NULL)
		evhttp_free(a->http);
	free(a);
}
