/* admin.h - the HTTP admin API (evhttp on the proxy's loop): GET /status (JSON), GET /metrics
 * (Prometheus text). Off unless [repoint] admin is set; loopback by default. */
#ifndef REPOINT_ADMIN_H
#define REPOINT_ADMIN_H

#include <stdbool.h>

#include "util.h"

struct event_base;
struct service;
struct config;
struct admin;

/* POST /reload asks this of whoever runs the services (the runtime): check the configuration file
 * now (false: err holds its file:line messages) and, when it is valid, apply it from the loop
 * shortly (the admin API may move with it). */
struct secrets;
struct admin_hooks {
	bool (*reload)(void *arg, char *err, size_t errlen);
	void *arg;
	struct secrets *secrets;   /* where admin_token comes from (NULL: taken as written) */
};

struct admin *admin_start(struct event_base *base, const struct config *cfg, struct service *const *svcs,
			  int nsvcs, const struct admin_hooks *hooks);
void admin_free(struct admin *a);
/* Reload: the same listener serves `cfg` (admin_token) and these services from now on. */
void admin_reconfigure(struct admin *a, const struct config *cfg, struct service *const *svcs, int nsvcs);

#endif
