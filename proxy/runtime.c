/* runtime.c - services + admin on one loop, and the graceful stop. */
#include "runtime.h"

#include <systemd/sd-daemon.h>

#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "secret.h"
#include "service.h"
#include "util.h"

static unsigned open_sessions(const struct runtime *rt)
{
	unsigned n = 0;

	for (int i = 0; i < rt->nsvcs; i++)
		n += service_nsessions(rt->svcs[i]);
	for (int i = 0; i < rt->nretired; i++)
		n += service_nsessions(rt->retired[i]);
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
	unsigned nopen = open_sessions(rt);

	rt->stopping = true;
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: sessions may finish");
	rt->stop_deadline_ms = now_ms() + rt->cfg->shutdown_timeout_ms;
	if (rt->admin != NULL) {
		admin_free(rt->admin);
		rt->admin = NULL;
	}
	for (int i = 0; i < rt->nsvcs; i++)
		service_shutdown(rt->svcs[i], rt->cfg->shutdown_timeout_ms);
	/* Said once the listeners are closed: from this line on, new clients are refused. */
	log_info("repoint", "stopping; listeners closed, %u connection(s) may finish for up to %lld ms", nopen,
		 (long long)rt->cfg->shutdown_timeout_ms);
	rt->tick = event_new(rt->base, -1, EV_PERSIST, tick_cb, rt);
	event_add(rt->tick, &tv);
	tick_cb(-1, 0, rt);
}

static bool grow(void *arrp, int n, size_t size)
{
	void **arr = arrp;
	void *p = realloc(*arr, (size_t)(n + 1) * size);

	if (p == NULL)
		return false;
	*arr = p;
	return true;
}

static struct service *find_service(struct service **svcs, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (svcs[i] != NULL && strcmp(service_name(svcs[i]), name) == 0)
			return svcs[i];
	return NULL;
}

static void log_lines(enum log_level lvl, const char *prefix, const char *text)
{
	while (*text != '\0') {
		const char *nl = strchr(text, '\n');
		int len = nl != NULL ? (int)(nl - text) : (int)strlen(text);
		log_msg(lvl, "repoint", "%s%.*s", prefix, len, text);
		text += len + (nl != NULL);
	}
}

static bool runtime_reload_now(struct runtime *rt);

bool runtime_reload(struct runtime *rt)
{
	bool ok;

	if (rt->stopping)
		return false;
	sd_notify(0, "RELOADING=1");
	ok = runtime_reload_now(rt);
	sd_notify(0, "READY=1");
	return ok;
}

static bool runtime_reload_now(struct runtime *rt)
{
	char err[8192], why[512];
	struct config *cfg;
	struct service **next;
	int n = 0, added = 0, changed = 0, removed = 0, kept = 0;
	bool admin_moved;

	cfg = config_load(rt->cfg->path, err, sizeof(err));
	if (cfg == NULL) {
		rt->reload_failures++;
		log_error("repoint", "reload of %s refused; the running configuration stays:", rt->cfg->path);
		log_lines(LOG_ERROR, "  ", err);
		return false;
	}
	next = calloc((size_t)(cfg->nservices > 0 ? cfg->nservices : 1), sizeof(*next));
	if (next == NULL || !grow(&rt->old_cfgs, rt->nold_cfgs, sizeof(*rt->old_cfgs))) {
		log_error("repoint", "reload: out of memory; the running configuration stays");
		free(next);
		config_free(cfg);
		return false;
	}
	log_setup(cfg->log_level, cfg->log_format);
	log_lines(LOG_WARN, "warning: ", cfg->warnings != NULL ? cfg->warnings : "");
	secrets_set_refresh(rt->secrets, cfg->secret_refresh_ms);
	for (struct service_config *sc = cfg->services; sc != NULL; sc = sc->next) {
		struct service *svc = find_service(rt->svcs, rt->nsvcs, sc->name);
		if (svc != NULL) {
			if (service_reconfigure(svc, sc, why, sizeof(why)))
				changed++;
			else {
				log_warn("repoint", "reload: service %s: %s", sc->name, why);
				kept++;
			}
			next[n++] = svc;
			continue;
		}
		svc = service_new(rt->base, sc, &cfg->aws, rt->secrets);
		if (svc == NULL || !service_start(svc)) {
			log_error("repoint", "reload: service %s could not start (see above); it is left out", sc->name);
			service_free(svc);
			continue;
		}
		next[n++] = svc;
		added++;
	}
	for (int i = 0; i < rt->nsvcs; i++) {
		if (find_service(next, n, service_name(rt->svcs[i])) != NULL)
			continue;
		if (!grow(&rt->retired, rt->nretired, sizeof(*rt->retired))) {
			/* Cannot keep track of it: it goes on serving as before, under no name. */
			log_error("repoint", "reload: out of memory retiring service %s", service_name(rt->svcs[i]));
			continue;
		}
		log_info("repoint", "reload: service %s removed: draining its sessions", service_name(rt->svcs[i]));
		service_retire(rt->svcs[i], cfg->shutdown_timeout_ms);
		rt->retired[rt->nretired++] = rt->svcs[i];
		removed++;
	}
	free(rt->svcs);
	rt->svcs = next;
	rt->nsvcs = n;
	/* The previous configuration stays alive: services kept as they were, and retired ones, read it. */
	rt->old_cfgs[rt->nold_cfgs++] = rt->cfg == rt->boot_cfg ? NULL : rt->cfg;
	rt->cfg = cfg;
	admin_moved = cfg->has_admin != rt->boot_has_admin || cfg->has_metrics != rt->boot_has_metrics ||
		      (cfg->has_admin && (cfg->admin.port != rt->boot_admin.port ||
					  strcmp(cfg->admin.host, rt->boot_admin.host) != 0)) ||
		      (cfg->has_metrics && (cfg->metrics.port != rt->boot_metrics.port ||
					    strcmp(cfg->metrics.host, rt->boot_metrics.host) != 0));
	if (admin_moved) {
		admin_free(rt->admin);
		rt->admin = NULL;
		if (cfg->has_admin || cfg->has_metrics)
			rt->admin = admin_start(rt->base, cfg, rt->svcs, rt->nsvcs, &rt->admin_hooks);
		rt->boot_admin = cfg->admin;
		rt->boot_metrics = cfg->metrics;
		rt->boot_has_admin = cfg->has_admin;
		rt->boot_has_metrics = cfg->has_metrics;
	} else if (rt->admin != NULL) {
		admin_reconfigure(rt->admin, cfg, rt->svcs, rt->nsvcs);
	}
	rt->reloads++;
	log_info("repoint", "configuration reloaded from %s: %d service(s) changed in place, %d added, %d removed, %d kept as they were",
		 cfg->path, changed, added, removed, kept);
	return true;
}

static void reload_now_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	runtime_reload(arg);
}

/* POST /reload: checked now (its messages go back to the caller), applied from the loop. */
static bool admin_reload(void *arg, char *err, size_t errlen)
{
	struct runtime *rt = arg;
	struct config *cfg;

	if (rt->stopping) {
		snprintf(err, errlen, "repoint is stopping");
		return false;
	}
	cfg = config_load(rt->cfg->path, err, errlen);
	if (cfg == NULL)
		return false;
	config_free(cfg);
	log_info("repoint", "reload asked through the admin API");
	if (event_base_once(rt->base, -1, EV_TIMEOUT, reload_now_cb, rt, NULL) != 0) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	log_info("repoint", "SIGHUP received: reloading the configuration");
	runtime_reload(arg);
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
	rt->boot_cfg = cfg;
	rt->boot_admin = cfg->admin;
	rt->boot_metrics = cfg->metrics;
	rt->boot_has_admin = cfg->has_admin;
	rt->boot_has_metrics = cfg->has_metrics;
	signal(SIGPIPE, SIG_IGN);
	rt->base = event_base_new();
	rt->svcs = calloc((size_t)(cfg->nservices > 0 ? cfg->nservices : 1), sizeof(*rt->svcs));
	/* Secrets are read with the [aws] section the proxy starts with, as sources are. */
	rt->secrets = rt->base != NULL ? secrets_new(rt->base, &cfg->aws, cfg->secret_refresh_ms) : NULL;
	if (rt->base == NULL || rt->svcs == NULL || rt->secrets == NULL) {
		log_error("repoint", "out of memory");
		goto fail;
	}
	log_lines(LOG_WARN, "warning: ", cfg->warnings != NULL ? cfg->warnings : "");
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		struct service *svc = service_new(rt->base, sc, &cfg->aws, rt->secrets);
		if (svc == NULL) {
			log_error("repoint", "out of memory");
			goto fail;
		}
		rt->svcs[i++] = svc;
		rt->nsvcs = i;
		if (!service_start(svc))
			goto fail;
	}
	rt->admin_hooks = (struct admin_hooks){.reload = admin_reload, .arg = rt, .secrets = rt->secrets};
	if (cfg->has_admin || cfg->has_metrics) {
		rt->admin = admin_start(rt->base, cfg, rt->svcs, rt->nsvcs, &rt->admin_hooks);
		if (rt->admin == NULL)
			goto fail;
	}
	rt->sigterm = evsignal_new(rt->base, SIGTERM, signal_cb, rt);
	rt->sigint = evsignal_new(rt->base, SIGINT, signal_cb, rt);
	rt->sighup = evsignal_new(rt->base, SIGHUP, sighup_cb, rt);
	if (rt->sigterm == NULL || rt->sigint == NULL || rt->sighup == NULL)
		goto fail;
	evsignal_add(rt->sigterm, NULL);
	evsignal_add(rt->sigint, NULL);
	evsignal_add(rt->sighup, NULL);
	log_info("repoint", "repoint %s running with %d service(s) from %s", PACKAGE_VERSION, rt->nsvcs, cfg->path);
	/* systemd (Type=notify): every listener is bound and every service started. Without
	 * NOTIFY_SOCKET this does nothing. */
	sd_notifyf(0, "READY=1\nSTATUS=%d service(s) from %s\nMAINPID=%lu", rt->nsvcs, cfg->path,
		   (unsigned long)getpid());
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
	for (int i = 0; i < rt->nretired; i++)
		service_free(rt->retired[i]);
	free(rt->svcs);
	free(rt->retired);
	secrets_free(rt->secrets);  /* after everything that opened one of them */
	if (rt->cfg != rt->boot_cfg)
		config_free(rt->cfg);
	for (int i = 0; i < rt->nold_cfgs; i++)
		config_free(rt->old_cfgs[i]);
	free(rt->old_cfgs);
	if (rt->sighup)
		event_free(rt->sighup);
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
