/* runtime.h - the running proxy: one event loop, the services of a configuration, the admin API,
 * and the graceful stop on SIGTERM/SIGINT. `repoint -c` runs one; `repoint drill` runs one too
 * when no repoint serves the configuration yet. */
#ifndef REPOINT_RUNTIME_H
#define REPOINT_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "admin.h"
#include "util.h"

struct config;
struct event_base;
struct service;
struct admin;
struct event;
struct secrets;

struct runtime {
	struct event_base *base;
	struct config *cfg;
	struct service **svcs;
	int nsvcs;
	struct admin *admin;
	struct secrets *secrets;     /* probe_password, admin_token ([aws] of the first configuration) */
	struct event *sigterm, *sigint, *sighup, *tick;
	struct config *boot_cfg;     /* the configuration it started with (the caller's) */
	struct config **old_cfgs;    /* earlier configurations, owned: retired or unchanged services
	                                may still read them */
	int nold_cfgs;
	struct service **retired;    /* removed by a reload: draining, freed with the runtime */
	int nretired;
	unsigned reloads, reload_failures;
	struct admin_hooks admin_hooks;  /* POST /reload */
	struct hostport boot_admin;  /* where the admin API listens */
	struct hostport boot_metrics;  /* where /metrics alone listens ([repoint] metrics) */
	bool boot_has_admin, boot_has_metrics;
	bool stopping;
	int64_t stop_deadline_ms;
};

/* Starts every service of cfg (listeners bound, probes running) and the admin API when configured.
 * NULL (logged) on failure. The runtime does not own cfg; it owns the configurations reloads read. */
struct runtime *runtime_start(struct config *cfg);
/* Runs the loop until a signal has stopped everything (or runtime_stop / event_base_loopbreak). */
void runtime_run(struct runtime *rt);
/* Re-reads the configuration file and applies it in place (SIGHUP): services added, removed
 * (drained) or changed (service_reconfigure), log level and format, the admin API. A file that
 * fails the check changes nothing: its "file:line" messages are logged. True when applied. */
bool runtime_reload(struct runtime *rt);
/* Begins the graceful stop a SIGTERM would. */
void runtime_stop(struct runtime *rt);
struct service *runtime_service(const struct runtime *rt, const char *name);
void runtime_free(struct runtime *rt);

#endif
