/* runtime.c - services + admin on one loop, and the graceful stop. */
#include "runtime.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "service.h"
#include "util.h"

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

void runtime_stop(struct runtime *rt)
{
	struct timeval tv = {0, 50 * 1000};

	if (rt->stopping)
		return;
	rt->stopping = true;
	rt->stop_deadline_ms = now_ms() + rt->cfg->shutdown_timeout_ms;
	log_info("repoint", "stopping; %u connection(s) may finish for up to %lld ms", open_sessions(rt),
		 (long long)rt->cfg->shutdown_timeout_ms);
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

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct runtime *rt = arg;

	(void)what;
	if (rt->stopping) {
		log_warn("repoint", "%s again: exiting now", strsignal((int)sig));
		event_base_loopbreak(rt->base);
		return;
	}
	log_info("repoint", "%s received", strsignal((int)sig));
	runtime_stop(rt);
}

struct runtime *runtime_start(struct config *cfg)
{
	struct runtime *rt = calloc(1, sizeof(*rt));
	struct service_config *sc;
	int i = 0;

	if (rt == NULL)
		return NULL;
	rt->cfg = cfg;
	signal(SIGPIPE, SIG_IGN);
	rt->base = event_base_new();
	rt->svcs = calloc((size_t)(cfg->nservices > 0 ? cfg->nservices : 1), sizeof(*rt->svcs));
	if (rt->base == NULL || rt->svcs == NULL) {
		log_error("repoint", "out of memory");
		goto fail;
	}
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		struct service *svc = service_new(rt->base, sc, &cfg->aws);
		if (svc == NULL) {
			log_error("repoint", "out of memory");
			goto fail;
		}
		rt->svcs[i++] = svc;
		rt->nsvcs = i;
		if (!service_start(svc))
			goto fail;
	}
	if (cfg->has_admin) {
		rt->admin = admin_start(rt->base, cfg, rt->svcs, rt->nsvcs);
		if (rt->admin == NULL)
			goto fail;
	}
	rt->sigterm = evsignal_new(rt->base, SIGTERM, signal_cb, rt);
	rt->sigint = evsignal_new(rt->base, SIGINT, signal_cb, rt);
	if (rt->sigterm == NULL || rt->sigint == NULL)
		goto fail;
	evsignal_add(rt->sigterm, NULL);
	evsignal_add(rt->sigint, NULL);
	log_info("repoint", "repoint %s running with %d service(s) from %s", PACKAGE_VERSION, rt->nsvcs, cfg->path);
	return rt;
fail:
	runtime_free(rt);
	return NULL;
}

void runtime_run(struct runtime *rt)
{
	event_base_dispatch(rt->base);
	log_info("repoint", "stopped");
}

struct service *runtime_service(const struct runtime *rt, const char *name)
{
	for (int i = 0; i < rt->nsvcs; i++)
		if (strcmp(service_name(rt->svcs[i]), name) == 0)
			return rt->svcs[i];
	return NULL;
}

void runtime_free(struct runtime *rt)
{
	if (rt == NULL)
		return;
	admin_free(rt->admin);
	for (int i = 0; i < rt->nsvcs; i++)
		service_free(rt->svcs[i]);
	free(rt->svcs);
	if (rt->sigterm)
		event_free(rt->sigterm);
	if (rt->sigint)
		event_free(rt->sigint);
	if (rt->tick)
		event_free(rt->tick);
	if (rt->base)
		event_base_free(rt->base);
	free(rt);
}
