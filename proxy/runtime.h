/* runtime.h - the running proxy: one event loop, the services of a configuration, the admin API,
 * and the graceful stop on SIGTERM/SIGINT. `repoint -c` runs one; `repoint drill` runs one too
 * when no repoint serves the configuration yet. */
#ifndef REPOINT_RUNTIME_H
#define REPOINT_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct event_base;
struct service;
struct admin;
struct event;

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

/* Starts every service of cfg (listeners bound, probes running) and the admin API when configured.
 * NULL (logged) on failure. The runtime does not own cfg. */
struct runtime *runtime_start(struct config *cfg);
/* Runs the loop until a signal has stopped everything (or runtime_stop / event_base_loopbreak). */
void runtime_run(struct runtime *rt);
/* Begins the graceful stop a SIGTERM would. */
void runtime_stop(struct runtime *rt);
struct service *runtime_service(const struct runtime *rt, const char *name);
void runtime_free(struct runtime *rt);

#endif
