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

struct admin *admin_start(struct event_base *base, const struct config *cfg, struct service *const *svcs,
			  int nsvcs);
void admin_free(struct admin *a);
/* Reload: the same listener serves `cfg` (admin_token) and these services from now on. */
void admin_reconfigure(struct admin *a, const struct config *cfg, struct service *const *svcs, int nsvcs);

#endif
