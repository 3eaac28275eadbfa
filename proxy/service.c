/* service.c - the runtime of one [service NAME]: listener, members, probes, topology, sessions.
 *
 *   probe ──result──▶ topo_observe() ──events──▶ react(): hold (nothing to do: service_pick()
 *                                                 says -1), drain the lost writer's sessions,
 *                                                 release held sessions when a writer is confirmed
 *
 * Held sessions are released from a deferred event, never from inside the code that confirmed the
 * writer: a session callback that reports a failure can then not re-enter itself.
 */
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "log.h"
#include "cluster.h"
#include "auth/auth.h"
#include "net/conn.h"
#include "net/session.h"
#include "net/shared.h"
#include "proto/proto.h"
#include "proto/keyspec.h"
#include "proto/slots.h"
#include "secret.h"
#include "sources/aws_source.h"
#include "sources/probe.h"
#include "util.h"

/* Members are allocated one by one: probes and timers point at them, and a control plane may add
 * or remove members while those pointers live. */
struct member {
	struct service *svc;
	int index;                        /* in svc->members; changes when the membership does */
	char str[280];                    /* "host:port" */
	char id[128];                     /* the control plane's name for it, "" for static members */
	struct hostport hp;
	struct sockaddr_storage sa;
	socklen_t salen;
	bool resolved;                    /* sa holds its address (a name that did not resolve is
	                                     tried again at each probe, and never routed to) */
	int64_t resolve_tried_ms;
	int64_t resolved_ms;              /* when its name was last looked up (names only; resolve_interval) */
	bool reresolving;                 /* the next check connects afresh and looks the name up again */
	struct probe *probe;
	struct event *timer;              /* next probe */
	int64_t probe_started_ms;         /* when the check under way (or the last one) started */
	int64_t confirm_after_ms;         /* sessions wait for the member's own word on its role from a
	                                     check started at or after this time; 0 when none waits */
	bool probe_again;                 /* check again as soon as the one under way ends */
	unsigned sessions;                /* sessions attached */
	struct probe_result last;         /* last probe result */
	uint64_t probes, probe_failures;
	struct shared *shared[4];         /* multiplex: the connections sessions share, by
	                                     SHARED_INDEX(resp3, write): RESP2 and RESP3 (after HELLO 3),
	                                     each for reads and for writes; NULL if none */
	int64_t shared_failed_ms;         /* when one last failed to connect (monotonic) */
	int64_t shared_opened_ms[4];      /* when each began connecting (the connect histogram) */
	TAILQ_HEAD(pool_list, pooled) pool; /* pool_size: idle logged-in server connections, newest last */
	int npool;
};

/* A server connection a client left, kept for the next client of the same start. Its read event
 * (with server_idle_timeout) drops it when the server says anything or closes, or it idled too long. */
struct pooled {
	TAILQ_ENTRY(pooled) link;
	struct member *m;
	struct session_pooled p;
	uint8_t *startup;
	size_t startup_len;
	struct event *ev;
	bool resetting;                   /* its reset is under way: not to be taken yet */
	uint8_t answer[1024];             /* ... the server's answer so far */
	size_t answer_len;
};

/* How long a kept connection's reset (DISCARD ALL) may take. */
#define POOL_RESET_TIMEOUT_MS 5000

#define SHARED_INDEX(resp3, write) ((resp3 ? 1 : 0) | (write ? 2 : 0))

/* After a shared connection failed to connect, the next attempt waits this long. */
#define SHARED_RETRY_MS 50

struct service {
	const struct service_config *cfg;
	const struct aws_config *aws;
	struct secrets *secrets;          /* the runtime's; NULL: probe_password is taken as written */
	struct secret *probe_secret;      /* probe_password, opened through secrets */
	struct secret *member_secret;     /* member_password (auth = repoint, Redis); NULL: none or as written */
	bool held_writerless;             /* a client was held because there was no writer */
	/* auth_file's secrets written as references: one opened secret per such user of `users`
	 * (users_gen says which users object they were opened for). */
	struct user_secret *user_secrets;
	size_t nuser_secrets;
	uint64_t users_gen, user_secrets_gen;
	struct event_base *base;
	const struct proto_ops *proto;
	struct evconnlistener *listener;
	bool accepting_paused;            /* out of file descriptors: the listener waits (accept_ev) */
	struct event *accept_ev;          /* resumes accepting */
	int64_t accept_backoff_ms;
	uint64_t refused_fds, refused_max;  /* connections refused: no fd left / past max_clients */
	uint64_t refused_logged;          /* ... of them already in the log */
	int64_t refused_log_ms;           /* when the last such line was written */
	bool stopping;
	struct topology topo;             /* the writer election (a cluster's: one per shard, in cl) */
	/* cluster = on: the shards (cluster.h); the slot map's parse buffer; the commands' key
	 * positions (from a member's COMMAND); when a member was last asked for the map. */
	struct cluster *cl;
	struct slots_map *map_buf;
	struct keyspec *keys;
	int64_t map_asked_ms;
	bool map_stale;                   /* a role changed: the next probe asks for the map */
	char map_error[600];              /* the last map that could not be taken, "" when the last was */
	struct hostport *seeds;           /* ... a source's nodes: seeds, as static members are */
	char (*seed_groups)[64];          /* ... and the node group (shard) the source puts each in */
	int nseeds;
	bool map_by_slots;                /* a member did not answer CLUSTER SHARDS (before 7.0, an ACL):
	                                     the map is asked with CLUSTER SLOTS */
	bool cluster_pending;             /* cluster = auto: no member has said yet whether it is in a
	                                     Redis Cluster (new clients are held) */
	unsigned next_keyless;            /* round robin of keyless commands over the shards */
	struct member **members;
	int nmembers;
	struct aws_source *source;        /* `source = ...`; NULL for static members */
	char source_error[300];           /* last control-plane error, "" when the last poll worked */
	int api_writer;                   /* the writer by the control plane's last word, -1 if none */
	struct session_list sessions;
	struct session_list held;
	unsigned nsessions;
	unsigned nheld;
	unsigned barriers;                /* multiplex: sessions pinning with a command not yet handed
	                                     to their own connection (shared sends wait for them) */
	unsigned next_pick;               /* round robin among equals */
	struct event *release_ev;         /* deferred release of held sessions */
	struct session_host host;         /* what its sessions see of it (their counters too) */
	char subject[200];                /* "service NAME" */
	bool paused;                      /* POST /services/NAME/pause: new clients held, sessions drained */
	struct histogram failover_time;   /* writer lost -> new writer confirmed (seconds) */
	uint64_t failovers_seen;          /* topo.failovers already in failover_time */
	service_observer observer;
	void *observer_arg;
	const char *via;                  /* what made the observation being handled */
	struct net_tls *tls;              /* to the members; NULL: plain */
	struct net_tls *listen_tls;       /* clients' TLS; NULL: listen_tls = off */
	struct auth_users *users;         /* auth = repoint: auth_file's users (NULL without one) */
	struct timespec users_mtime;      /* of auth_file when it was read */
	int64_t users_checked_ms;         /* when it was last looked at (a changed file is read again) */
	bool opaque_logged;               /* service_opaque_session said it once */
	struct timespec listen_tls_mtime[2];  /* of the certificate and key files it was made from */
	int64_t listen_tls_checked_ms;    /* when they were last looked at (rotation) */
};

static void emit(struct service *svc, enum service_event_kind kind, int member, const char *role, unsigned count);
static const struct session_host_ops host_ops;
/* What sessions reach through host_ops (net/session.h), and the service itself. */
static int service_pick(struct service *svc);
static struct net_tls *service_listen_tls(struct service *svc);
static enum listen_tls_mode service_listen_tls_mode(const struct service *svc);
static bool service_stopping(const struct service *svc);
static void service_upstream_failed(struct service *svc, int member, const char *why);
static void service_confirm_role(struct service *svc, int member);
static void service_kick_held(struct service *svc);
static void service_probe_soon(struct service *svc, int member);
static void service_session_opened(struct service *svc, struct session *s);
static void service_hold(struct service *svc, struct session *s);
static void service_unhold(struct service *svc, struct session *s);
static void service_attach(struct service *svc, struct session *s, int member);
static void service_detach(struct service *svc, struct session *s);
static void service_session_closed(struct service *svc, struct session *s);
static const struct session *service_session_by_key(const struct service *svc, const struct session *except,
						    const uint8_t *key, size_t keylen);
static void service_barrier(struct service *svc, bool on);
static bool service_barred(const struct service *svc);
static struct shared *service_shared(struct service *svc, int member, bool resp3, bool write);
static void service_opaque_session(struct service *svc);

static const struct proto_ops *proto_for(enum protocol p)
{
	switch (p) {
	case PROTOCOL_POSTGRES:
		return &proto_postgres;
	case PROTOCOL_MYSQL:
		return &proto_mysql;
	case PROTOCOL_REDIS:
		return &proto_redis;
	}
	return &proto_redis;
}

/* --- accessors for sessions --- */

const struct service_config *service_config(const struct service *svc)
{
	return svc->cfg;
}



const char *service_name(const struct service *svc)
{
	return svc->cfg->name;
}

static bool service_stopping(const struct service *svc)
{
	return svc->stopping;
}

struct service_counters *service_counters(struct service *svc)
{
	return &svc->host.counters;
}

const struct sockaddr *service_member_addr(const struct service *svc, int member, socklen_t *len)
{
	*len = svc->members[member]->salen;
	return (const struct sockaddr *)&svc->members[member]->sa;
}

const char *service_member_str(const struct service *svc, int member)
{
	if (member < 0 || member >= svc->nmembers)
		return "none";
	return svc->members[member]->str;
}

unsigned service_nsessions(const struct service *svc)
{
	return svc->nsessions;
}

/* --- probes and topology --- */

/* Asked for again at most this often (from one member at a time): a failover needs no new map (a
 * shard keeps its members), a resharding does. */
#define CLUSTER_MAP_REFRESH_MS 2000

/* The topology member `member` is observed in: the service's, or (cluster = on) its shard's --
 * NULL when it is in no shard (a seed the slot map does not list). */
static struct topology *topo_of(const struct service *svc, int member)
{
	if (svc->cl == NULL)
		return (struct topology *)&svc->topo;
	return cluster_topo_of(svc->cl, member);
}

static bool failing_over(const struct service *svc)
{
	if (svc->cfg->route != ROUTE_WRITER)
		return false;
	if (svc->cl != NULL) {
		for (int k = 0; k < svc->cl->nshards; k++)
			if (topo_writer_ready(&svc->cl->shards[k].topo) < 0 || svc->cl->shards[k].topo.conflict)
				return true;
		return svc->cl->nshards == 0;
	}
	return topo_writer_ready(&svc->topo) < 0 || svc->topo.conflict;
}

static void schedule_probe(struct member *m, int64_t delay_ms)
{
	if (m->probe == NULL)
		return;  /* probes = off: the control plane alone speaks for the members */
	struct timeval tv = {.tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000};

	evtimer_add(m->timer, &tv);
}

static int64_t probe_interval(const struct service *svc)
{
	return failing_over(svc) ? svc->cfg->failover_probe_interval_ms : svc->cfg->probe_interval_ms;
}

/* Probe every member that is not being probed right now at the fast pace. */
static void speed_up_probes(struct service *svc)
{
	for (int i = 0; i < svc->nmembers; i++) {
		struct member *m = svc->members[i];
		if (m->probe != NULL && !probe_busy(m->probe))
			schedule_probe(m, 0);
	}
}

static void kick_held(struct service *svc)
{
	if (svc->nheld > 0)
		event_active(svc->release_ev, EV_TIMEOUT, 0);
}

static void service_kick_held(struct service *svc)
{
	if (svc->cl != NULL || service_pick(svc) >= 0)
		kick_held(svc);
}

static void release_cb(evutil_socket_t fd, short what, void *arg)
{
	struct service *svc = arg;
	struct session *s, *next;

	(void)fd;
	(void)what;
	/* Route each held session once; a session that is held again goes to the back. */
	unsigned n = svc->nheld, released = 0;
	int writer = service_pick(svc);
	for (s = TAILQ_FIRST(&svc->held); s != NULL && n > 0; s = next, n--) {
		next = TAILQ_NEXT(s, held);
		/* A cluster's held sessions each wait for their own shard: each is tried. */
		if (svc->cl == NULL && service_pick(svc) < 0)
			break;
		session_release(s);
		released++;
	}
	if (released > 0) {
		if (svc->held_writerless)
			log_info(svc->subject, "released %u held client(s)", released);
		else
			log_debug(svc->subject, "released %u held client(s)", released);
		svc->held_writerless = svc->nheld > 0 && svc->held_writerless;
		emit(svc, SERVICE_EV_HELD_RELEASED, writer, NULL, released);
	}
}

static void emit(struct service *svc, enum service_event_kind kind, int member, const char *role, unsigned count)
{
	struct service_event e = {
		.kind = kind,
		.at_ms = now_ms(),
		.member = member >= 0 && member < svc->nmembers ? svc->members[member]->str : NULL,
		.role = role,
		.via = svc->via,
		.count = count,
	};

	if (svc->observer != NULL)
		svc->observer(svc->observer_arg, &e);
}

void service_set_observer(struct service *svc, service_observer fn, void *arg)
{
	svc->observer = fn;
	svc->observer_arg = arg;
}

int service_nmembers(const struct service *svc)
{
	return svc->nmembers;
}

enum role service_member_role(const struct service *svc, int member)
{
	const struct topology *t = topo_of(svc, member);

	return t != NULL ? topo_member_role(t, member) : ROLE_UNKNOWN;
}

static void retire_shared(struct member *m)
{
	for (int k = 0; k < 4; k++) {
		if (m->shared[k] != NULL)
			shared_retire(m->shared[k]);
		m->shared[k] = NULL;
	}
}

static void drain_member_as(struct service *svc, int member, const char *why, enum drain_mode mode)
{
	struct session *s, *next;
	unsigned n = 0;

	/* No new commands go to it; sessions with commands in flight finish them there. */
	retire_shared(svc->members[member]);

	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, all);
		if (s->member == member)
			n++;
	}
	if (n == 0)
		return;
	log_info(svc->subject, "draining %u session(s) on %s (%s, %s)", n, svc->members[member]->str, why,
		 drain_mode_name(mode));
	emit(svc, SERVICE_EV_DRAIN_STARTED, member, NULL, n);
	/* session_drain may free the session; `next` is taken before and sessions never free others. */
	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, all);
		if (s->member == member)
			session_drain(s, mode, svc->cfg->drain_timeout_ms);
	}
}

static void drain_member(struct service *svc, int member, const char *why)
{
	drain_member_as(svc, member, why, svc->cfg->drain);
}

void service_drain_all(struct service *svc, const char *why)
{
	/* Graceful: each session at its next idle point (a Redis session moves on, a Postgres or MySQL
	 * one is closed there), at the latest after drain_timeout. */
	for (int i = 0; i < svc->nmembers; i++)
		drain_member_as(svc, i, why, DRAIN_GRACEFUL);
}

void service_pause(struct service *svc, bool on)
{
	if (svc->paused == on)
		return;
	svc->paused = on;
	if (on) {
		log_info(svc->subject, "paused through the admin API: new clients are held, sessions drained at idle points");
		service_drain_all(svc, "paused");
		return;
	}
	log_info(svc->subject, "resumed through the admin API");
	service_kick_held(svc);
}

bool service_paused(const struct service *svc)
{
	return svc->paused;
}

static void react_in(struct service *svc, const struct topology *t, uint64_t *failovers_seen, unsigned ev,
		     int member)
{
	if ((ev & TOPO_EV_ROLES_CHANGED) && member >= 0) {
		const struct member *m = svc->members[member];
		log_info(svc->subject, "member %s is %s (%s)", m->str, role_name(topo_member_role(t, member)),
			 m->last.detail);
		emit(svc, SERVICE_EV_ROLE_CHANGED, member, role_name(topo_member_role(t, member)), 0);
	}
	if (ev & TOPO_EV_SUSPECT) {
		log_warn(svc->subject, "writer %s failed a probe (%s): holding new clients",
			 svc->members[t->writer]->str, svc->members[t->writer]->last.detail);
		emit(svc, SERVICE_EV_SUSPECT, t->writer, NULL, 0);
	}
	if (ev & TOPO_EV_RECOVERED) {
		log_info(svc->subject, "writer %s answers again", svc->members[t->writer]->str);
		emit(svc, SERVICE_EV_RECOVERED, t->writer, NULL, 0);
	}
	if (ev & TOPO_EV_WRITER_LOST) {
		int lost = t->last_writer;
		emit(svc, SERVICE_EV_WRITER_LOST, lost, NULL, 0);
		log_event(LOG_WARN, svc->subject,
			  &(struct log_fields){.event = "writer_lost", .member = service_member_str(svc, lost),
					       .reason = lost >= 0 ? svc->members[lost]->last.detail : NULL, .duration_ms = -1},
			  "writer %s lost (%s): failing over, new clients are held", service_member_str(svc, lost),
			  lost >= 0 ? svc->members[lost]->last.detail : "");
		if (lost >= 0 && svc->cfg->route == ROUTE_WRITER)
			drain_member(svc, lost, "writer lost");
	}
	if (ev & TOPO_EV_CONFLICT) {
		char list[1024] = "";
		size_t off = 0;
		for (int i = 0; i < t->nmembers; i++) {
			if (topo_member_healthy(t, i) && t->members[i].reported == ROLE_WRITER)
				off += (size_t)snprintf(list + off, off < sizeof(list) ? sizeof(list) - off : 0, "%s%s",
						off ? ", " : "", svc->members[i]->str);
			if (off >= sizeof(list))
				off = sizeof(list) - 1;
		}
		log_error(svc->subject, "conflict: several members claim to be writer (%s); %s", list,
			  t->writer >= 0 ? "keeping the current writer" : "holding clients until one remains");
		emit(svc, SERVICE_EV_CONFLICT, t->writer, NULL, 0);
	}
	if ((ev & TOPO_EV_WRITER_CONFIRMED) && t->failovers != *failovers_seen) {
		*failovers_seen = t->failovers;
		hist_observe(&svc->failover_time, (double)(t->last.confirmed_ms - t->last.started_ms) / 1000.0);
	}
	if (ev & TOPO_EV_WRITER_CONFIRMED) {
		emit(svc, SERVICE_EV_WRITER_CONFIRMED, t->writer, NULL, 0);
		if (t->last.started_ms > 0 && t->last.confirmed_ms > 0 && t->last.to == t->writer &&
		    (ev & TOPO_EV_WRITER_CHANGED) && t->last.from >= 0)
			log_event(LOG_WARN, svc->subject,
				  &(struct log_fields){.event = "failover", .member = svc->members[t->writer]->str,
						       .duration_ms = t->last.confirmed_ms - t->last.started_ms},
				  "new writer %s confirmed, failover from %s took %lld ms", svc->members[t->writer]->str,
				  service_member_str(svc, t->last.from), (long long)(t->last.confirmed_ms - t->last.started_ms));
		else
			log_info(svc->subject, "writer is %s", svc->members[t->writer]->str);
	}
	if (ev & (TOPO_EV_FAILOVER_STARTED | TOPO_EV_SUSPECT | TOPO_EV_CONFLICT))
		speed_up_probes(svc);
	if (svc->cl != NULL && (ev & (TOPO_EV_ROLES_CHANGED | TOPO_EV_WRITER_CHANGED)))
		svc->map_stale = true;  /* worth a look at the map (a failover needs none, a new node does) */
	if (svc->cl != NULL ? !svc->paused && topo_writer_ready(t) >= 0 : service_pick(svc) >= 0)
		kick_held(svc);
}

static void react(struct service *svc, unsigned ev, int member)
{
	react_in(svc, &svc->topo, &svc->failovers_seen, ev, member);
}

/* A shard's topology raised events (cluster.h). */
static void cluster_react(void *arg, int shard, unsigned ev, int member)
{
	struct service *svc = arg;
	struct cluster_shard *sh = &svc->cl->shards[shard];

	react_in(svc, &sh->topo, &sh->failovers_seen, ev, member);
}

static void observe(struct service *svc, int member, bool ok, enum role role, int64_t epoch, const char *via)
{
	struct topo_observation o = {
		.member = member, .ok = ok, .role = role, .epoch = epoch, .now_ms = now_ms()};
	struct topology *t = topo_of(svc, member);
	unsigned ev;

	if (t == NULL)
		return;  /* in no shard (cluster = on): its answers are kept in its status only */
	ev = topo_observe(t, &o);
	svc->via = via;
	if (ev == 0)
		return;
	if (svc->cl != NULL)
		cluster_react(svc, svc->cl->member_shard[member], ev, member);
	else
		react(svc, ev, member);
}

static bool resolve(const struct hostport *hp, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);

static bool is_ip_literal(const char *host)
{
	struct in6_addr a;

	return inet_pton(AF_INET, host, &a) == 1 || inet_pton(AF_INET6, host, &a) == 1;
}

/* Whether the member has an address to connect to. A name that did not resolve is taken from the
 * probe once it reaches the node (its lookup runs off the loop); without probes it is tried again
 * here, at most every few seconds (a blocking lookup). */
static bool member_resolved(struct member *m)
{
	char err[200];

	if (m->resolved)
		return true;
	if (m->probe != NULL) {
		if (!m->last.ok || !probe_address(m->probe, &m->sa, &m->salen))
			return false;
	} else {
		if (now_ms() - m->resolve_tried_ms < 5000)
			return false;
		m->resolve_tried_ms = now_ms();
		if (!resolve(&m->hp, &m->sa, &m->salen, err, sizeof(err))) {
			snprintf(m->last.detail, sizeof(m->last.detail), "cannot resolve: %.120s", err);
			return false;
		}
	}
	m->resolved_ms = now_ms();
	log_info(m->svc->subject, "member %s resolved", m->str);
	m->resolved = true;
	return true;
}

static void answer_confirmations(struct member *m, enum role role);

static void probe_done(void *arg, const struct probe_result *r)
{
	struct member *m = arg;
	struct service *svc = m->svc;

	/* A refused login shows in the status at every probe; the log says so when it starts and ends. */
	if (r->auth_failed && !m->last.auth_failed) {
		enum secret_kind k = svc->probe_secret != NULL ? secret_kind(svc->probe_secret) : SECRET_LITERAL;
		log_warn(svc->subject, "%s refused the probe's login as %s (probe_password %s): %s", m->str,
			 !svc->cfg->probe_user_given && k == SECRET_SECRETSMANAGER ? "the secret's user"
			 : svc->cfg->probe_user != NULL                          ? svc->cfg->probe_user
										 : "the default user",
			 secret_kind_name(k), r->detail);
	} else if (m->last.auth_failed && !r->auth_failed && (r->ok || r->busy)) {
		log_info(svc->subject, "%s takes the probe's login again", m->str);
	}
	m->last = *r;
	m->probes++;
	if (r->auth_failed && svc->probe_secret != NULL)
		secret_login_failed(svc->probe_secret);
	if (m->reresolving && r->ok) {
		/* The name looked up again: sessions from now on go where it points now. */
		struct sockaddr_storage sa;
		socklen_t salen;
		m->reresolving = false;
		if (probe_address(m->probe, &sa, &salen) && (salen != m->salen || memcmp(&sa, &m->sa, salen) != 0)) {
			char was[INET6_ADDRSTRLEN + 8] = "", now[INET6_ADDRSTRLEN + 8] = "";
			getnameinfo((struct sockaddr *)&m->sa, m->salen, was, sizeof(was), NULL, 0, NI_NUMERICHOST);
			getnameinfo((struct sockaddr *)&sa, salen, now, sizeof(now), NULL, 0, NI_NUMERICHOST);
			m->sa = sa;
			m->salen = salen;
			log_info(svc->subject, "member %s now resolves to %s (was %s)", m->str, now, was);
			/* New shared sessions go to the new address; those with commands in flight finish. */
			for (int k = 0; k < 4; k++) {
				if (m->shared[k] != NULL)
					shared_retire(m->shared[k]);
				m->shared[k] = NULL;
			}
		}
	}
	if (!member_resolved(m)) {
		m->last.ok = false;
		m->last.busy = false;
		r = &m->last;
	}
	if (r->busy) {
		/* Alive. Running a script, it keeps the role it last reported (it cannot change while the
		 * script runs): taken as that -- a writer whose probes timed out before the server began
		 * answering -BUSY (busy-reply-threshold) comes back, so that SCRIPT KILL gets through.
		 * Loading its data: no word on its role, and no failure either. */
		const struct topology *t = topo_of(svc, m->index);
		enum role last = t != NULL ? t->members[m->index].reported : ROLE_UNKNOWN;
		log_debug(svc->subject, "probe %s: busy: %s", m->str, r->detail);
		if (!r->loading && (last == ROLE_WRITER || last == ROLE_READER))
			observe(svc, m->index, true, last, t->members[m->index].epoch, "probe");
	} else {
		if (!r->ok) {
			m->probe_failures++;
			log_debug(svc->subject, "probe %s failed: %s", m->str, r->detail);
		}
		observe(svc, m->index, r->ok, r->role, r->epoch, "probe");
	}
	if (m->confirm_after_ms != 0 && m->probe_started_ms >= m->confirm_after_ms)
		answer_confirmations(m, r->busy ? ROLE_UNKNOWN : r->ok ? r->role : ROLE_DOWN);
	schedule_probe(m, m->probe_again ? 0 : probe_interval(svc));
	m->probe_again = false;
}

static void probe_lost(void *arg)
{
	struct member *m = arg;

	log_debug(m->svc->subject, "probe connection to %s closed by the peer: checking it now", m->str);
	service_probe_soon(m->svc, m->index);
}

/* Tell the sessions waiting for `m`'s word what it is: ROLE_WRITER or ROLE_READER from its own
 * answer, ROLE_UNKNOWN when alive but it could not say (busy), ROLE_DOWN when the check failed. */
static void answer_confirmations(struct member *m, enum role role)
{
	struct service *svc = m->svc;
	struct session *s, *next;

	m->confirm_after_ms = 0;
	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, all);
		if (s->confirming && s->confirm_member == m->index)
			session_confirmed(s, role, topo_of(svc, m->index) != NULL && topo_of(svc, m->index)->writer == m->index);
	}
}

static bool set_members(struct service *svc, const struct hostport *hps, const char *const *ids, int n);

/* cluster = on: what this member's next check asks besides its role -- the commands' key positions
 * until they are known, the slot map until there is one, then again when a role changed and every
 * CLUSTER_MAP_REFRESH_MS (one member at a time). */
static void cluster_ask(struct member *m)
{
	struct service *svc = m->svc;
	int64_t now = now_ms();
	enum probe_cluster_reply map = PROBE_CLUSTER_COMMANDS;  /* no map this time */

	if (svc->cl->nshards == 0 || svc->map_stale || now - svc->map_asked_ms >= CLUSTER_MAP_REFRESH_MS) {
		map = svc->map_by_slots ? PROBE_CLUSTER_SLOTS : PROBE_CLUSTER_SHARDS;
		svc->map_stale = false;
		svc->map_asked_ms = now;
	}
	probe_want(m->probe, map, svc->keys == NULL);
}

/* A slot map `m` reported (in svc->map_buf): every node it names becomes a member (the seeds --
 * static members, a source's nodes -- stay too, and so does `m`: it is inside its own probe's
 * callback), each in its shard. */
static void cluster_take_map(struct service *svc, struct member *m)
{
	const struct slots_map *map = svc->map_buf;
	int cap = svc->cfg->nmembers + svc->nseeds + 1, n = 0;
	struct hostport *hps = NULL;
	const char **ids = NULL;
	int *in_shard = NULL;
	int16_t *owner = NULL;
	bool oom = false;
	char mid[sizeof(m->id)];
	char (*kept_ids)[sizeof(m->id)] = NULL;

	snprintf(mid, sizeof(mid), "%s", m->id);  /* set_members writes ids into members, m's too */

	cap += svc->nmembers;
	for (int j = 0; j < map->nshards; j++)
		cap += 1 + map->shards[j].nreplicas;
	hps = calloc((size_t)cap, sizeof(*hps));
	ids = calloc((size_t)cap, sizeof(*ids));
	in_shard = calloc((size_t)cap, sizeof(*in_shard));
	owner = calloc(SLOTS_COUNT, sizeof(*owner));
	kept_ids = calloc((size_t)(svc->nmembers > 0 ? svc->nmembers : 1), sizeof(*kept_ids));
	if (hps == NULL || ids == NULL || in_shard == NULL || owner == NULL || kept_ids == NULL)
		goto out;
	/* Shards' nodes first, in the map's order, then seeds and the reporter if they are not in it. */
	for (int j = 0; j < map->nshards; j++) {
		const struct slots_shard *sh = &map->shards[j];
		for (int r = -1; r < sh->nreplicas; r++) {
			const struct slots_node *nd = r < 0 ? &sh->primary : &sh->replicas[r];
			struct hostport hp = {.port = nd->port};
			char a[300], b[300];
			bool dup = false;
			if (nd->host[0] == '\0' || nd->port == 0)
				continue;
			snprintf(hp.host, sizeof(hp.host), "%s", nd->host);
			hostport_str(&hp, a, sizeof(a));
			for (int i = 0; i < n && !dup; i++)
				dup = strcmp(hostport_str(&hps[i], b, sizeof(b)), a) == 0;
			if (dup)
				continue;
			in_shard[n] = j;
			hps[n] = hp;
			ids[n++] = nd->id;
		}
	}
	for (int i = -1; i < svc->cfg->nmembers + svc->nseeds; i++) {
		const struct hostport *hp = i < 0 ? &m->hp : i < svc->cfg->nmembers ? &svc->cfg->members[i]
										: &svc->seeds[i - svc->cfg->nmembers];
		char a[300], b[300];
		bool dup = false;
		hostport_str(hp, a, sizeof(a));
		for (int k = 0; k < n && !dup; k++)
			dup = strcmp(hostport_str(&hps[k], b, sizeof(b)), a) == 0;
		if (!dup) {
			in_shard[n] = -1;
			ids[n] = i < 0 ? mid : "";
			hps[n++] = *hp;
		}
	}
	/* A shard's confirmed primary the map leaves out stays a member, in no shard until a map lists
	 * it: a node's map read in the middle of a failover may not list the new primary yet (CI saw
	 * it), and removing the member would close every session on it with its commands in flight;
	 * its shard waits for the next map instead. */
	for (int j = 0; svc->cl != NULL && j < svc->nmembers; j++) {
		char b[300];
		bool writer = false, listed = false;
		for (int k = 0; k < svc->cl->nshards && !writer; k++)
			writer = topo_writer_ready(&svc->cl->shards[k].topo) == j;
		for (int k = 0; k < n && writer && !listed; k++)
			listed = strcmp(hostport_str(&hps[k], b, sizeof(b)), svc->members[j]->str) == 0;
		if (writer && !listed && n < cap) {
			snprintf(kept_ids[j], sizeof(kept_ids[j]), "%s", svc->members[j]->id);
			in_shard[n] = -1;
			ids[n] = kept_ids[j];
			hps[n++] = svc->members[j]->hp;
		}
	}
	/* set_members keeps the order: member i is hps[i]. */
	if (!set_members(svc, hps, ids, n))
		goto out;
	for (int sl = 0; sl < SLOTS_COUNT; sl++)
		owner[sl] = map->owner[sl];
	svc->via = "slot map";
	if (cluster_apply(svc->cl, map->nshards, in_shard, owner, now_ms(), cluster_react, svc, &oom)) {
		char line[1024];
		size_t off = 0;
		for (int k = 0; k < svc->cl->nshards && off < sizeof(line); k++) {
			int w = topo_writer_ready(&svc->cl->shards[k].topo);
			off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%d: %s %s", k ? "; " : "", k,
						svc->cl->shards[k].ranges, w >= 0 ? svc->members[w]->str : "(no primary yet)");
		}
		log_info(svc->subject, "slot map from %s: %d shard(s), %u of %d slots served (%s)", m->str,
			 svc->cl->nshards, map->covered, SLOTS_COUNT, line);
		kick_held(svc);
	}
out:
	if (oom)
		log_warn(svc->subject, "slot map from %s: out of memory, the last map stays", m->str);
	free(hps);
	free(ids);
	free(in_shard);
	free(owner);
	free(kept_ids);
}

/* From now on a Redis Cluster: the shards, the slot map's buffer, every member in no shard yet
 * (the first map puts them in theirs). False on allocation failure (nothing changed). */
static bool cluster_start(struct service *svc)
{
	struct cluster *cl = malloc(sizeof(*cl));
	struct slots_map *buf = malloc(sizeof(*buf));
	int *map = malloc((size_t)(svc->nmembers > 0 ? svc->nmembers : 1) * sizeof(*map));

	if (cl == NULL || buf == NULL || map == NULL)
		goto fail;
	cluster_init(cl, svc->cfg->down_after);
	for (int i = 0; i < svc->nmembers; i++)
		map[i] = -1;
	if (!cluster_remap(cl, svc->nmembers, map, now_ms(), cluster_react, svc)) {
		cluster_free(cl);
		goto fail;
	}
	free(map);
	svc->cl = cl;
	svc->map_buf = buf;
	svc->cluster_pending = false;
	svc->host.cluster = true;
	return true;
fail:
	free(cl);
	free(buf);
	free(map);
	return false;
}

/* The replies cluster_ask asked for. They come from a member: hostile input, read by parsers that
 * refuse what is not the shape they expect; a map that cannot be taken leaves the last one. */
static void probe_cluster_done(void *arg, enum probe_cluster_reply kind, const struct redisReply *r)
{
	struct member *m = arg;
	struct service *svc = m->svc;
	char why[200];

	enum slots_membership said = kind != PROBE_CLUSTER_COMMANDS ? slots_membership(r) : SLOTS_UNKNOWN;

	if (said == SLOTS_NO_SHARDS && kind == PROBE_CLUSTER_SHARDS) {
		if (!svc->map_by_slots)
			log_info(svc->subject, "%s does not answer CLUSTER SHARDS (Redis before 7.0, or an ACL): the slot map "
					       "is asked with CLUSTER SLOTS", m->str);
		svc->map_by_slots = true;
		svc->map_stale = true;
		return;
	}
	if (svc->cluster_pending && kind != PROBE_CLUSTER_COMMANDS) {
		/* cluster = auto: a server outside a cluster refuses every CLUSTER command so. Anything
		 * but that or an answer (LOADING, a refused login) leaves the question to the next check. */
		if (said == SLOTS_NOT_CLUSTER) {
			svc->cluster_pending = false;
			log_info(svc->subject, "%s is not in a Redis Cluster (cluster = auto): served as one server", m->str);
			kick_held(svc);
			return;
		}
		if (said != SLOTS_IN_CLUSTER)
			return;
		if (!cluster_start(svc)) {
			log_error(svc->subject, "out of memory following a Redis Cluster (cluster = auto): asked again");
			return;
		}
		log_info(svc->subject, "%s is in a Redis Cluster (cluster = auto): every shard's primary is followed", m->str);
	}
	if (svc->cl == NULL)
		return;

	if (kind == PROBE_CLUSTER_COMMANDS) {
		struct keyspec *ks;
		if (svc->keys != NULL)
			return;
		if ((ks = keyspec_from_command(r, why, sizeof(why))) == NULL) {
			log_warn(svc->subject, "COMMAND from %s: %s (asked again)", m->str, why);
			return;
		}
		svc->keys = ks;
		log_info(svc->subject, "key positions of %zu commands learned from %s", keyspec_count(ks), m->str);
		kick_held(svc);
		return;
	}
	if (!(kind == PROBE_CLUSTER_SLOTS ? slots_from_cluster_slots : slots_from_cluster_shards)(r, svc->map_buf, why,
											      sizeof(why))) {
		if (strstr(svc->map_error, why) == NULL)  /* said once while it lasts */
			log_warn(svc->subject, "%s from %s: %s (the last map stays)",
				 kind == PROBE_CLUSTER_SLOTS ? "CLUSTER SLOTS" : "CLUSTER SHARDS", m->str, why);
		snprintf(svc->map_error, sizeof(svc->map_error), "%s: %s", m->str, why);
		return;
	}
	svc->map_error[0] = '\0';
	cluster_take_map(svc, m);
}

static void probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct member *m = arg;

	(void)fd;
	(void)what;
	if (m->probe == NULL) {
		/* probes = off: nobody can ask the member; the topology's word is all there is. */
		if (m->confirm_after_ms != 0)
			answer_confirmations(m, topo_member_healthy(topo_of(m->svc, m->index), m->index)
							? topo_member_role(topo_of(m->svc, m->index), m->index)
							: ROLE_DOWN);
		return;
	}
	m->probe_started_ms = now_ms();
	/* Sessions wait for the member's word on what they just saw (a close, a read-only refusal):
	 * from a new connection, so that it cannot predate what they saw. */
	if (m->confirm_after_ms != 0)
		probe_fresh(m->probe);
	/* A member given by name: looked up again every resolve_interval (a new connection looks it up,
	 * off the loop); the address it gives is taken once the member answers there. */
	if (m->resolved && !is_ip_literal(m->hp.host) && m->svc->cfg->resolve_interval_ms > 0 &&
	    m->probe_started_ms - m->resolved_ms >= m->svc->cfg->resolve_interval_ms) {
		m->resolved_ms = m->probe_started_ms;
		m->reresolving = true;
		probe_fresh(m->probe);
	}
	if (m->svc->cl != NULL)
		cluster_ask(m);
	else if (m->svc->cluster_pending)
		probe_want(m->probe, m->svc->map_by_slots ? PROBE_CLUSTER_SLOTS : PROBE_CLUSTER_SHARDS,
			   false);  /* cluster = auto: the map's question answers this one */
	probe_run(m->probe);
}

static void service_confirm_role(struct service *svc, int member)
{
	struct member *m;
	int64_t now = now_ms();

	if (member < 0 || member >= svc->nmembers)
		return;
	m = svc->members[member];
	if (m->confirm_after_ms == 0)
		m->confirm_after_ms = now;
	if (m->probe == NULL) {
		struct timeval tv = {0, 0};
		evtimer_add(m->timer, &tv);
	} else if (probe_busy(m->probe)) {
		m->probe_again = true;   /* the check under way started before the question */
	} else {
		schedule_probe(m, 0);
	}
}

static void service_upstream_failed(struct service *svc, int member, const char *why)
{
	if (member < 0 || member >= svc->nmembers)
		return;
	log_warn(svc->subject, "cannot connect to %s: %s", svc->members[member]->str, why);
	/* A name may point elsewhere now: its next check looks it up again (resolve_interval). */
	svc->members[member]->resolved_ms = INT64_MIN / 2;
	snprintf(svc->members[member]->last.detail, sizeof(svc->members[member]->last.detail), "data path: %s", why);
	observe(svc, member, false, ROLE_UNKNOWN, 0, "data path");
	service_probe_soon(svc, member);
}

static void service_probe_soon(struct service *svc, int member)
{
	struct member *m;

	if (member < 0 || member >= svc->nmembers)
		return;
	m = svc->members[member];
	if (m->probe != NULL && !probe_busy(m->probe))
		schedule_probe(m, 0);
}

static void shared_ready_cb(void *arg, struct shared *c)
{
	struct member *m = arg;

	for (int k = 0; k < 4; k++)
		if (m->shared[k] == c && m->shared_opened_ms[k] != 0)
			hist_observe(&m->svc->host.counters.connect_time,
				     (double)(now_ms() - m->shared_opened_ms[k]) / 1000.0);
	log_debug(m->svc->subject, "shared connection to %s is up", m->str);
	kick_held(m->svc);
}

static void shared_lost_cb(void *arg, struct shared *c, bool was_ready, const char *why)
{
	struct member *m = arg;
	struct service *svc = m->svc;

	for (int k = 0; k < 4; k++)
		if (m->shared[k] == c)
			m->shared[k] = NULL;
	if (!was_ready && shared_login_refused(c)) {
		/* Said by shared_refused_cb; the member's health is not in question. */
		m->shared_failed_ms = now_ms();
		return;
	}
	if (!was_ready) {
		m->shared_failed_ms = now_ms();
		svc->host.counters.upstream_connect_failures++;
		service_upstream_failed(svc, m->index, why);
		return;
	}
	log_info(svc->subject, "shared connection to %s lost: %s", m->str, why);
	service_probe_soon(svc, m->index);
}

static int service_member_login(struct service *svc, int member, struct evbuffer *out, char *why, size_t whylen);
static void service_member_login_refused(struct service *svc, int member, const char *why);

static int shared_login_cb(void *arg, struct evbuffer *out)
{
	struct member *m = arg;
	char why[256];
	int r = service_member_login(m->svc, m->index, out, why, sizeof(why));

	if (r < 0)
		log_warn(m->svc->subject, "shared connection to %s: cannot log in again now: %s", m->str, why);
	else if (r > 0)
		m->svc->host.counters.relogins++;
	return r;
}

static void shared_refused_cb(void *arg, const char *why)
{
	struct member *m = arg;

	service_member_login_refused(m->svc, m->index, why);
}

static struct shared *service_shared(struct service *svc, int member, bool resp3, bool write)
{
	static const char hello3[] = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
	struct member *m = svc->members[member];
	static const struct shared_owner_ops owners = {.reply = session_shared_reply, .owed = session_owed,
						       .lost = session_shared_lost, .unsent = session_shared_unsent};
	struct shared_hooks hooks = {.owners = &owners, .ready = shared_ready_cb, .lost = shared_lost_cb,
				     .login = shared_login_cb, .refused = shared_refused_cb,
				     .relogin_ms = svc->cfg->reauth_interval_ms, .arg = m};
	int k = SHARED_INDEX(resp3, write);
	char label[512], why[256];
	struct evbuffer *login;
	int r;

	if (m->shared[k] != NULL)
		return m->shared[k];
	if (m->shared_failed_ms != 0 && now_ms() - m->shared_failed_ms < SHARED_RETRY_MS)
		return NULL;
	if ((login = evbuffer_new()) == NULL)
		return NULL;
	r = service_member_login(svc, member, login, why, sizeof(why));
	if (r < 0) {
		/* No credential now: tried again in a moment; the sessions wait meanwhile. */
		log_warn(svc->subject, "shared connection to %s: cannot log in now: %s", m->str, why);
		m->shared_failed_ms = now_ms();
		evbuffer_free(login);
		return NULL;
	}
	snprintf(label, sizeof(label), "%s shared%s%s %s", svc->subject, resp3 ? " RESP3" : "",
		 write ? "" : " reads", m->str);
	struct shared_target to = {.sa = (const struct sockaddr *)&m->sa, .salen = m->salen, .tls = svc->tls,
				   .tls_name = service_member_tls_name(svc, member), .resume_key = m->str};
	m->shared_opened_ms[k] = now_ms();
	m->shared[k] = shared_open(svc->base, &to, svc->cfg->connect_timeout_ms, label, &hooks,
				   r > 0 ? evbuffer_pullup(login, -1) : NULL, evbuffer_get_length(login),
				   resp3 ? (const uint8_t *)hello3 : NULL, resp3 ? sizeof(hello3) - 1 : 0);
	evbuffer_free(login);
	return m->shared[k];
}

static int service_pick(struct service *svc)
{
	const struct topology *t = &svc->topo;
	int best = -1, n = svc->nmembers;

	if (svc->paused || svc->cluster_pending)
		return -1;  /* held until resumed, or until it is known to be a cluster or not (at most
		               hold_timeout, as always) */
	if (svc->cfg->route == ROUTE_WRITER)
		return topo_writer_ready(t);
	/* Readers (or any healthy member): the one with the fewest sessions, round robin among equals. */
	for (int k = 0; k < n; k++) {
		int i = (int)((svc->next_pick + (unsigned)k) % (unsigned)n);
		enum role r = topo_member_role(t, i);
		if (!topo_member_healthy(t, i))
			continue;
		if (svc->cfg->route == ROUTE_READER ? r != ROLE_READER : (r != ROLE_READER && r != ROLE_WRITER))
			continue;
		if (best < 0 || svc->members[i]->sessions < svc->members[best]->sessions)
			best = i;
	}
	if (best >= 0) {
		svc->next_pick = (unsigned)best + 1;
		return best;
	}
	return topo_writer_ready(t);
}

/* cluster = on: the member a command for `slot` goes to now (-1: hold it); slot -1 (a command
 * without keys): any shard's primary, in turn. */
static int service_pick_slot(struct service *svc, int slot)
{
	if (svc->paused || svc->keys == NULL || svc->cl == NULL)
		return -1;
	if (slot >= 0)
		return cluster_slot_writer(svc->cl, slot);
	for (int k = 0; k < svc->cl->nshards; k++) {
		int w = topo_writer_ready(&svc->cl->shards[(svc->next_keyless + (unsigned)k) % (unsigned)svc->cl->nshards].topo);
		if (w >= 0) {
			svc->next_keyless += (unsigned)k + 1;
			return w;
		}
	}
	return -1;
}

/* cluster = on: the slot of the complete command p[0..n) (keyspec.h's codes when none); KEYSPEC_UNKNOWN
 * until the key positions are known. */
static int service_slot(const struct service *svc, const uint8_t *p, size_t n)
{
	if (svc->keys == NULL)
		return KEYSPEC_UNKNOWN;
	return keyspec_slot(svc->keys, p, n);
}

/* A redirection p[0..n) `member` answered -- "-MOVED <slot> <ip>:<port>\r\n" or "-ASK ..." (`code`,
 * with its space) -- to another shard's confirmed primary: that member (*slot the slot), -1 for any
 * other (within the shard it is a failover, which the member's own word settles). */
static int redirect_target(struct service *svc, int member, const uint8_t *p, size_t n, const char *code, long *slot)
{
	char line[400], *sp, *colon, *end;
	size_t cl = strlen(code);
	long port;
	struct hostport hp = {0};
	char str[300];

	if (svc->cl == NULL || member < 0 || member >= svc->nmembers || n < cl + 3 || n >= sizeof(line))
		return -1;
	memcpy(line, p, n);
	line[n] = '\0';
	/* IPv6 addresses come unbracketed: the port is after the last ':' */
	if (strncmp(line, code, cl) != 0)
		return -1;
	*slot = strtol(line + cl, &sp, 10);
	if (sp == line + cl || *sp != ' ' || *slot < 0 || *slot >= SLOTS_COUNT)
		return -1;
	sp++;
	if ((end = strchr(sp, '\r')) == NULL || (colon = memrchr(sp, ':', (size_t)(end - sp))) == NULL)
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\r' || port <= 0 || port > 65535 || (size_t)(colon - sp) >= sizeof(hp.host))
		return -1;
	memcpy(hp.host, sp, (size_t)(colon - sp));
	hp.port = (uint16_t)port;
	hostport_str(&hp, str, sizeof(str));
	for (int i = 0; i < svc->nmembers; i++) {
		int k = svc->cl->member_shard[i];
		if (strcmp(svc->members[i]->str, str) != 0)
			continue;
		if (k < 0 || k == svc->cl->member_shard[member] || topo_writer_ready(&svc->cl->shards[k].topo) != i)
			return -1;
		return i;
	}
	return -1;
}

static bool service_slot_moved(struct service *svc, int member, const uint8_t *p, size_t n)
{
	long slot;
	int to;

	if (svc->cl == NULL)
		return false;
	svc->map_stale = true;  /* whatever it said, the map is worth asking for again */
	if ((to = redirect_target(svc, member, p, n, "-MOVED ", &slot)) < 0)
		return false;
	log_debug(svc->subject, "slot %ld moved to shard %d (%s), as %s says", slot, svc->cl->member_shard[to],
		  svc->members[to]->str, svc->members[member]->str);
	cluster_move_slot(svc->cl, (int)slot, svc->cl->member_shard[to]);
	return true;
}

bool service_ready(const struct service *svc, char *why, size_t len)
{
	const struct topology *t = &svc->topo;

	if (svc->stopping) {
		snprintf(why, len, "service %s: stopping", svc->cfg->name);
		return false;
	}
	if (svc->paused) {
		snprintf(why, len, "service %s: paused (new clients are held)", svc->cfg->name);
		return false;
	}
	if (svc->cluster_pending) {
		snprintf(why, len, "service %s: cluster = auto: no member has said yet whether it is in a Redis Cluster "
				   "(new clients are held)", svc->cfg->name);
		return false;
	}
	if (svc->cl != NULL) {
		if (svc->keys != NULL && cluster_ready(svc->cl))
			return true;
		snprintf(why, len, "service %s: %s", svc->cfg->name,
			 svc->cl->nshards == 0 ? "no slot map yet (new clients are held)"
			 : svc->keys == NULL   ? "the commands' key positions are not known yet (new clients are held)"
					       : "a shard has no confirmed primary, or slots no shard (their commands are held)");
		return false;
	}
	if (svc->cfg->route == ROUTE_WRITER) {
		if (topo_writer_ready(t) >= 0)
			return true;
		snprintf(why, len, "service %s: %s", svc->cfg->name,
			 t->conflict ? "several members claim the writer role" : "no confirmed writer (new clients are held)");
		return false;
	}
	for (int i = 0; i < svc->nmembers; i++) {
		enum role r = topo_member_role(t, i);
		if (topo_member_healthy(t, i) &&
		    (svc->cfg->route == ROUTE_READER ? r == ROLE_READER : (r == ROLE_READER || r == ROLE_WRITER)))
			return true;
	}
	snprintf(why, len, "service %s: no healthy %s", svc->cfg->name,
		 svc->cfg->route == ROUTE_READER ? "reader" : "member");
	return false;
}

bool service_started(const struct service *svc)
{
	for (int i = 0; i < svc->nmembers; i++)
		if (svc->members[i]->probe != NULL && svc->members[i]->probes == 0)
			return false;
	return svc->nmembers > 0;
}

static void service_barrier(struct service *svc, bool on)
{
	struct session *s, *next;

	if (on) {
		svc->barriers++;
		return;
	}
	if (svc->barriers == 0 || --svc->barriers > 0)
		return;
	/* Lifted: the shared sessions that waited behind it go on, in the order they came. */
	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, all);
		if (s->shared && s->state == SESSION_ACTIVE)
			session_shared_kick(s);
	}
}

static bool service_barred(const struct service *svc)
{
	return svc->barriers > 0;
}

/* --- session bookkeeping --- */

static void service_session_opened(struct service *svc, struct session *s)
{
	TAILQ_INSERT_TAIL(&svc->sessions, s, all);
	svc->nsessions++;

}

static void service_hold(struct service *svc, struct session *s)
{
	if (s->in_held)
		return;
	/* Waiting for a writer is worth saying when it ends; waiting for a connection is not. */
	if (service_pick(svc) < 0)
		svc->held_writerless = true;
	TAILQ_INSERT_TAIL(&svc->held, s, held);
	s->in_held = true;
	svc->nheld++;
}

static void service_unhold(struct service *svc, struct session *s)
{
	if (!s->in_held)
		return;
	TAILQ_REMOVE(&svc->held, s, held);
	s->in_held = false;
	svc->nheld--;
}

static void service_attach(struct service *svc, struct session *s, int member)
{
	s->member = member;
	svc->members[member]->sessions++;
}

static void service_detach(struct service *svc, struct session *s)
{
	if (s->member < 0)
		return;
	svc->members[s->member]->sessions--;
	s->member = -1;
}

static const struct session *service_session_by_key(const struct service *svc, const struct session *except,
						    const uint8_t *key, size_t keylen)
{
	const struct session *s;
	uint8_t k[PROTO_KEY_MAX];
	size_t klen;

	if (svc->proto->session_key == NULL)
		return NULL;
	TAILQ_FOREACH(s, &svc->sessions, all) {
		if (s == except || s->member < 0 || !svc->proto->session_key(&s->ps, k, &klen))
			continue;
		if (klen == keylen && memcmp(k, key, keylen) == 0)
			return s;
	}
	return NULL;
}

static void service_session_closed(struct service *svc, struct session *s)
{
	TAILQ_REMOVE(&svc->sessions, s, all);
	svc->nsessions--;
	svc->host.counters.closed++;

}

/* --- lifecycle --- */

/* One descriptor kept in reserve for the whole process: with none left, it is given up for a
 * moment to accept a waiting client and close it at once (refused, not left hanging). */
static int reserve_fd = -1;

static void reserve_take(void)
{
	if (reserve_fd < 0)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Refusals are logged once a second at most, with their count. */
static void log_refusals(struct service *svc)
{
	uint64_t n = svc->refused_fds + svc->refused_max;

	if (n == svc->refused_logged || now_ms() - svc->refused_log_ms < 1000)
		return;
	log_warn(svc->subject, "%llu connection(s) refused so far (%llu: out of file descriptors, %llu: max_clients %d reached)",
		 (unsigned long long)n, (unsigned long long)svc->refused_fds, (unsigned long long)svc->refused_max,
		 svc->cfg->max_clients);
	svc->refused_logged = n;
	svc->refused_log_ms = now_ms();
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct service *svc = arg;

	(void)l;
	(void)salen;
	svc->accept_backoff_ms = 0;
	if (svc->nsessions >= (unsigned)svc->cfg->max_clients) {
		/* Refused at once rather than left in the backlog until the client's own timeout. */
		evutil_closesocket(fd);
		svc->refused_max++;
		log_refusals(svc);
		return;
	}
	session_accept(&svc->host, fd, sa);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct service *svc = arg;

	(void)fd;
	(void)what;
	reserve_take();
	if (svc->accepting_paused && !svc->stopping && svc->listener != NULL)
		evconnlistener_enable(svc->listener);
	svc->accepting_paused = false;
	log_refusals(svc);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct service *svc = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv;

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_error(svc->subject, "accept: %s", evutil_socket_error_to_string(err));
		return;
	}
	/* Out of descriptors: refuse the clients that are waiting (accepted with the reserve's
	 * descriptor and closed at once), then stop accepting for a moment -- the listener would be
	 * readable again at once, and spin. */
	if (reserve_fd >= 0) {
		close(reserve_fd);
		reserve_fd = -1;
		for (int i = 0; i < 1024; i++) {
			int fd = accept4(evconnlistener_get_fd(l), NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				break;
			close(fd);
			svc->refused_fds++;
		}
		reserve_take();
	} else {
		svc->refused_fds++;
	}
	svc->accept_backoff_ms = svc->accept_backoff_ms == 0 ? 20 : svc->accept_backoff_ms * 2;
	if (svc->accept_backoff_ms > 200)
		svc->accept_backoff_ms = 200;
	evconnlistener_disable(l);
	svc->accepting_paused = true;
	tv.tv_sec = svc->accept_backoff_ms / 1000;
	tv.tv_usec = (svc->accept_backoff_ms % 1000) * 1000;
	evtimer_add(svc->accept_ev, &tv);
	log_refusals(svc);
}

static bool resolve(const struct hostport *hp, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
	struct evutil_addrinfo hints, *res = NULL;
	char port[8];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(port, sizeof(port), "%u", hp->port);
	rc = evutil_getaddrinfo(hp->host, port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, errlen, "%s", evutil_gai_strerror(rc));
		return false;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = (socklen_t)res->ai_addrlen;
	evutil_freeaddrinfo(res);
	return true;
}

static void pooled_free(struct pooled *e)
{
	TAILQ_REMOVE(&e->m->pool, e, link);
	e->m->npool--;
	if (e->ev != NULL)
		event_free(e->ev);
	net_conn_close(&e->p.conn);
	evbuffer_free(e->p.params);
	free(e->startup);
	free(e);
}

/* The server spoke (a shutdown's FATAL, an idle-session timeout) or closed, or it idled too long;
 * or, while it is being reset, its answer. */
static void pooled_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pooled *e = arg;
	const struct service_config *cfg = e->m->svc->cfg;

	(void)fd;
	if (e->resetting && (what & EV_READ)) {
		ssize_t r = e->p.conn.ops->read(&e->p.conn, e->answer + e->answer_len, sizeof(e->answer) - e->answer_len);
		int done = r > 0 ? e->m->svc->proto->login->reset_answer(e->answer, e->answer_len + (size_t)r) : -1;
		if (r > 0)
			e->answer_len += (size_t)r;
		if (r == -2 || done == 0) {
			if (e->answer_len < sizeof(e->answer)) {
				struct timeval tv = {POOL_RESET_TIMEOUT_MS / 1000, 0};
				event_add(e->ev, &tv);
				return;
			}
		} else if (done == 1) {
			struct timeval tv = {.tv_sec = cfg->server_idle_timeout_ms / 1000,
					     .tv_usec = (cfg->server_idle_timeout_ms % 1000) * 1000};
			e->resetting = false;
			event_add(e->ev, &tv);
			return;
		}
	}
	log_debug(e->m->svc->subject, "a kept server connection to %s closed (%s)", e->m->str,
		  what & EV_TIMEOUT ? "server_idle_timeout" : "the server spoke or closed");
	pooled_free(e);
}

static void pool_flush(struct member *m)
{
	while (!TAILQ_EMPTY(&m->pool))
		pooled_free(TAILQ_FIRST(&m->pool));
}

static bool service_pool_put(struct service *svc, int member, const uint8_t *startup, size_t n,
			     struct session_pooled *p)
{
	const struct service_config *cfg = svc->cfg;
	struct timeval tv = {.tv_sec = cfg->server_idle_timeout_ms / 1000, .tv_usec = (cfg->server_idle_timeout_ms % 1000) * 1000};
	struct member *m;
	struct pooled *e;

	if (cfg->pool_size <= 0 || member < 0 || member >= svc->nmembers || service_pick(svc) != member ||
	    now_ms() - p->born_ms >= cfg->server_lifetime_ms || p->conn.fd < 0)
		return false;
	m = svc->members[member];
	if (m->npool >= cfg->pool_size)
		pooled_free(TAILQ_FIRST(&m->pool));  /* the oldest makes room */
	if ((e = calloc(1, sizeof(*e))) == NULL || (e->startup = malloc(n)) == NULL ||
	    (e->ev = event_new(svc->base, p->conn.fd, EV_READ, pooled_cb, e)) == NULL) {
		if (e != NULL)
			free(e->startup);
		free(e);
		return false;
	}
	memcpy(e->startup, startup, n);
	e->startup_len = n;
	e->m = m;
	e->p = *p;
	if (p->reset != NULL) {
		/* The reset first; the entry is taken once the server said it is done (pooled_cb). */
		size_t len = evbuffer_get_length(p->reset);
		if (e->p.conn.ops->write(&e->p.conn, evbuffer_pullup(p->reset, -1), len) != (ssize_t)len) {
			event_free(e->ev);
			free(e->startup);
			free(e);
			return false;
		}
		evbuffer_free(p->reset);
		e->p.reset = NULL;
		e->resetting = true;
		tv = (struct timeval){POOL_RESET_TIMEOUT_MS / 1000, 0};
	}
	event_add(e->ev, &tv);
	TAILQ_INSERT_TAIL(&m->pool, e, link);
	m->npool++;
	return true;
}

static bool service_pool_take(struct service *svc, int member, const uint8_t *startup, size_t n,
			      struct session_pooled *out)
{
	struct member *m;
	struct pooled *e;

	if (member < 0 || member >= svc->nmembers)
		return false;
	m = svc->members[member];
	/* The newest first: the one most likely still warm. */
	TAILQ_FOREACH_REVERSE(e, &m->pool, pool_list, link) {
		if (e->resetting || e->startup_len != n || memcmp(e->startup, startup, n) != 0)
			continue;
		*out = e->p;
		net_conn_init(&e->p.conn, -1);
		e->p.params = NULL;
		TAILQ_REMOVE(&m->pool, e, link);
		m->npool--;
		event_free(e->ev);
		free(e->startup);
		free(e);
		return true;
	}
	return false;
}

static bool service_pool_params(struct service *svc, int member, struct evbuffer *params)
{
	struct pooled *e;

	if (member < 0 || member >= svc->nmembers)
		return false;
	TAILQ_FOREACH_REVERSE(e, &svc->members[member]->pool, pool_list, link)
		if (!e->resetting && e->p.params != NULL)
			return evbuffer_add(params, evbuffer_pullup(e->p.params, -1), evbuffer_get_length(e->p.params)) == 0;
	return false;
}

static void member_free(struct member *m)
{
	if (m == NULL)
		return;
	pool_flush(m);
	retire_shared(m);
	if (m->probe != NULL)
		probe_free(m->probe);
	if (m->timer != NULL)
		event_free(m->timer);
	free(m);
}

/* The name the member's certificate must carry: tls_server_name, else its host name. */
static const char *member_tls_name(const struct member *m)
{
	const char *name = m->svc->cfg->tls_server_name;

	return name != NULL && name[0] != '\0' ? name : m->hp.host;
}

/* The member's probe, with the service's current probe settings (the probe copies them). */
static bool member_probe_start(struct member *m)
{
	const struct service_config *cfg = m->svc->cfg;
	struct probe_params pp = {
		.protocol = cfg->protocol,
		.host = m->hp.host,
		.port = m->hp.port,
		.user = cfg->probe_user,
		.password = cfg->probe_password,
		.password_secret = m->svc->probe_secret,
		.user_from_secret = !cfg->probe_user_given,
		.iam_resource = cfg->protocol == PROTOCOL_REDIS ? config_iam_resource(cfg) : NULL,
		.database = cfg->probe_database,
		.timeout_ms = cfg->probe_timeout_ms,
		.tls = m->svc->tls,
		.tls_name = member_tls_name(m),
	};

	m->probe = probe_new(m->svc->base, &pp, probe_done, m);
	if (m->probe == NULL)
		return false;
	probe_on_idle_lost(m->probe, probe_lost);
	if (m->svc->cl != NULL || m->svc->cluster_pending)
		probe_on_cluster(m->probe, probe_cluster_done);
	return true;
}

/* No more probes for this member (until member_probe_start). */
static void member_probe_stop(struct member *m)
{
	evtimer_del(m->timer);
	if (m->probe != NULL)
		probe_free(m->probe);
	m->probe = NULL;
}

static struct member *member_new(struct service *svc, const struct hostport *hp, const char *id)
{
	const struct service_config *cfg = svc->cfg;
	struct member *m = calloc(1, sizeof(*m));
	char err[256];

	if (m == NULL)
		return NULL;
	m->svc = svc;
	m->hp = *hp;
	TAILQ_INIT(&m->pool);
	hostport_str(hp, m->str, sizeof(m->str));
	snprintf(m->id, sizeof(m->id), "%s", id ? id : "");
	snprintf(m->last.detail, sizeof(m->last.detail), cfg->probes ? "not probed yet" : "probes off");
	/* Resolved when the member appears: members are IP literals or names that resolve locally
	 * (VPC DNS). A name that does not resolve now is reported and tried again at each probe; the
	 * member counts as failing until it resolves (it is never routed to). */
	if (!resolve(hp, &m->sa, &m->salen, err, sizeof(err))) {
		log_warn(svc->subject, "member %s: cannot resolve: %s (trying again at each probe)", m->str, err);
		snprintf(m->last.detail, sizeof(m->last.detail), "cannot resolve: %.120s", err);
	} else {
		m->resolved = true;
	}
	m->timer = evtimer_new(svc->base, probe_timer_cb, m);
	if (m->timer == NULL) {
		member_free(m);
		return NULL;
	}
	if (cfg->probes && !member_probe_start(m)) {
		member_free(m);
		return NULL;
	}
	return m;
}

/* Make the membership exactly `hps` (in that order): kept members keep their probe, sessions and
 * what the topology knows of them; new ones start unknown; sessions on removed ones are closed.
 * Returns false when nothing could be changed (out of memory, unresolvable address). */
static bool set_members(struct service *svc, const struct hostport *hps, const char *const *ids, int n)
{
	struct member **next = calloc((size_t)(n > 0 ? n : 1), sizeof(*next));
	int *map = calloc((size_t)(n > 0 ? n : 1), sizeof(*map));
	int *old2new = calloc((size_t)(svc->nmembers > 0 ? svc->nmembers : 1), sizeof(*old2new));
	struct session *s, *nx_all;
	bool changed = n != svc->nmembers;
	unsigned ev;

	if (next == NULL || map == NULL || old2new == NULL)
		goto fail;
	for (int j = 0; j < svc->nmembers; j++)
		old2new[j] = -1;
	for (int i = 0; i < n; i++) {
		char str[280];
		map[i] = -1;
		hostport_str(&hps[i], str, sizeof(str));
		for (int j = 0; j < svc->nmembers; j++) {
			if (old2new[j] < 0 && strcmp(svc->members[j]->str, str) == 0) {
				map[i] = j;
				old2new[j] = i;
				break;
			}
		}
		if (map[i] != i)
			changed = true;
		if (map[i] >= 0) {
			next[i] = svc->members[map[i]];
			if (ids != NULL)
				snprintf(next[i]->id, sizeof(next[i]->id), "%s", ids[i]);
		} else if ((next[i] = member_new(svc, &hps[i], ids ? ids[i] : NULL)) == NULL) {
			goto fail;
		}
	}
	if (!changed) {
		free(next);
		free(map);
		free(old2new);
		return true;
	}
	/* Sessions on members that leave are closed now: their index is about to mean nothing. */
	for (int j = 0; j < svc->nmembers; j++) {
		struct session *nx;
		if (old2new[j] >= 0)
			continue;
		log_warn(svc->subject, "member %s left the cluster", svc->members[j]->str);
		for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = nx) {
			nx = TAILQ_NEXT(s, all);
			if (s->member == j)
				session_drain(s, DRAIN_IMMEDIATE, 0);
		}
	}
	TAILQ_FOREACH(s, &svc->sessions, all) {
		if (s->member >= 0)
			s->member = old2new[s->member];
		if (s->confirming && s->confirm_member >= 0)
			s->confirm_member = old2new[s->confirm_member];
	}
	for (int j = 0; j < svc->nmembers; j++)
		if (old2new[j] < 0)
			member_free(svc->members[j]);
	free(svc->members);
	svc->members = next;
	svc->nmembers = n;
	for (int i = 0; i < n; i++) {
		next[i]->index = i;
		if (map[i] < 0) {
			log_info(svc->subject, "member %s%s%s%s joined", next[i]->str, next[i]->id[0] ? " (" : "",
				 next[i]->id, next[i]->id[0] ? ")" : "");
			if (svc->cfg->probes)
				schedule_probe(next[i], 0);
		}
	}
	ev = topo_remap(&svc->topo, n, map, now_ms());
	if (svc->cl != NULL && !cluster_remap(svc->cl, n, map, now_ms(), cluster_react, svc))
		log_error(svc->subject, "out of memory following the membership: the shards may be out of date");
	free(map);
	free(old2new);
	/* Sessions waiting for the word of a member that left: it will not come. */
	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = nx_all) {
		nx_all = TAILQ_NEXT(s, all);
		if (s->confirming && s->confirm_member < 0)
			session_confirmed(s, ROLE_DOWN, false);
	}
	svc->via = "control plane";
	if (ev != 0 && svc->cl == NULL)
		react(svc, ev, -1);
	return true;
fail:
	for (int i = 0; next != NULL && i < n; i++)
		if (map != NULL && map[i] < 0)
			member_free(next[i]);
	free(next);
	free(map);
	free(old2new);
	return false;
}

/* A poll of the control plane worked: follow its membership, and its roles when probes are off. */
/* The control plane says in-transit encryption is on and the configuration does not say `tls`:
 * TLS to the members from now on, verifying their certificates and names (the endpoints it
 * reports), against tls_ca_file or the system store (where Amazon's roots are). */
static void tls_from_source(struct service *svc)
{
	struct net_tls_settings st = {.mode = NET_TLS_VERIFY_FULL, .ca_file = svc->cfg->tls_ca_file,
				      .cert_file = svc->cfg->tls_cert_file, .key_file = svc->cfg->tls_key_file};
	char err[300];

	svc->tls = net_tls_new(&st, err, sizeof(err));
	if (svc->tls == NULL) {
		log_error(svc->subject, "the control plane says in-transit encryption is on, but TLS cannot be set up: %s", err);
		return;
	}
	log_info(svc->subject, "the control plane says in-transit encryption is on: tls = verify-full to the members "
			       "(set tls in the configuration to choose)");
	for (int i = 0; i < svc->nmembers; i++) {
		struct member *m = svc->members[i];
		member_probe_stop(m);
		if (svc->cfg->probes && member_probe_start(m))
			schedule_probe(m, 0);
	}
}

/* cluster = on with a source (ElastiCache cluster mode, MemoryDB): the control plane's nodes are
 * seeds. The slot map says which shard each node is in and the probes which is primary (the API
 * has no roles in cluster mode); until a map is known, the seeds are the members that are asked
 * for it. */
static void cluster_seeds(struct service *svc, const struct aws_source_view *v, const struct hostport *hps,
			  const char **ids, int n)
{
	struct hostport *seeds = calloc((size_t)(n > 0 ? n : 1), sizeof(*seeds));
	char (*groups)[64] = calloc((size_t)(n > 0 ? n : 1), sizeof(*groups));

	if (seeds == NULL || groups == NULL) {
		free(seeds);
		free(groups);
		return;  /* the last seeds stay */
	}
	memcpy(seeds, hps, (size_t)n * sizeof(*seeds));
	for (int i = 0; i < n; i++)
		snprintf(groups[i], sizeof(groups[i]), "%s", v->members[i].group);
	free(svc->seeds);
	free(svc->seed_groups);
	svc->seeds = seeds;
	svc->seed_groups = groups;
	svc->nseeds = n;
	if ((svc->cl == NULL || svc->cl->nshards == 0) && n > 0)
		(void)set_members(svc, hps, ids, n);
}

static void source_view(void *arg, const struct aws_source_view *v)
{
	struct service *svc = arg;
	struct hostport *hps = calloc((size_t)(v->nmembers > 0 ? v->nmembers : 1), sizeof(*hps));
	const char **ids = calloc((size_t)(v->nmembers > 0 ? v->nmembers : 1), sizeof(*ids));
	int api_writer = -1, claims = 0;

	svc->source_error[0] = '\0';
	if (hps == NULL || ids == NULL)
		goto out;
	if (v->tls && svc->tls == NULL && !svc->cfg->tls_given)
		tls_from_source(svc);
	for (int i = 0; i < v->nmembers; i++) {
		snprintf(hps[i].host, sizeof(hps[i].host), "%s", v->members[i].host);
		hps[i].port = v->members[i].port;
		ids[i] = v->members[i].id;
	}
	if (svc->cl != NULL || svc->cluster_pending) {
		cluster_seeds(svc, v, hps, ids, v->nmembers);
		aws_source_set_fast(svc->source, failing_over(svc) || strcmp(v->status, "available") != 0);
		goto out;
	}
	if (!set_members(svc, hps, ids, v->nmembers))
		goto out;
	for (int i = 0; i < v->nmembers; i++) {
		if (v->members[i].role == ROLE_WRITER && v->members[i].available) {
			api_writer = i;
			claims++;
		}
	}
	svc->api_writer = claims == 1 ? api_writer : -1;
	if (!svc->cfg->probes) {
		/* The control plane's word routes: demotions first, so that a writer change seen in one
		 * poll reads as "old writer demoted, new one promoted" rather than as two claimants. */
		for (int pass = 0; pass < 2; pass++) {
			for (int i = 0; i < v->nmembers; i++) {
				const struct aws_source_member *m = &v->members[i];
				bool writer = m->role == ROLE_WRITER;
				if ((pass == 0) == writer)
					continue;
				snprintf(svc->members[i]->last.detail, sizeof(svc->members[i]->last.detail),
					 "control plane: %s, %s", m->role == ROLE_WRITER ? "writer" : m->role == ROLE_READER ? "reader" : "role unknown",
					 m->status[0] ? m->status : "no status");
				svc->members[i]->last.ok = m->available && m->role != ROLE_UNKNOWN &&
							   member_resolved(svc->members[i]);
				observe(svc, i, svc->members[i]->last.ok, m->role, 0, "control plane");
			}
		}
	} else if (svc->api_writer >= 0 && svc->api_writer != svc->topo.writer) {
		/* The control plane names another writer: ask the members now rather than at the next
		 * interval (they answer first, and they decide). */
		log_info(svc->subject, "control plane says the writer is %s: probing now", svc->members[svc->api_writer]->str);
		speed_up_probes(svc);
	}
	aws_source_set_fast(svc->source, failing_over(svc) || strcmp(v->status, "available") != 0);
out:
	free(hps);
	free(ids);
}

static void source_error(void *arg, const char *code, const char *message)
{
	struct service *svc = arg;

	char c[64], m[200];

	/* The last known topology stays: the members keep being probed and routed to. What the cloud
	 * API said is shown cut to one printable line of a bounded length (it is foreign text). */
	str_printable(c, sizeof(c), code);
	str_printable(m, sizeof(m), message);
	snprintf(svc->source_error, sizeof(svc->source_error), "%s: %s", c, m);
}

struct service *service_new(struct event_base *base, const struct service_config *cfg,
			    const struct aws_config *aws, struct secrets *secrets)
{
	struct service *svc = calloc(1, sizeof(*svc));

	if (svc == NULL)
		return NULL;
	svc->cfg = cfg;
	svc->aws = aws;
	svc->secrets = secrets;
	if (secrets != NULL && (svc->probe_secret = secret_open(secrets, cfg->probe_password)) == NULL) {
		free(svc);
		return NULL;
	}
	if (secrets != NULL && cfg->member_password != NULL &&
	    (svc->member_secret = secret_open(secrets, cfg->member_password)) == NULL) {
		secret_close(svc->probe_secret);
		free(svc);
		return NULL;
	}
	svc->base = base;
	svc->proto = proto_for(cfg->protocol);
	svc->host = (struct session_host){.ops = &host_ops, .proto = svc->proto, .cfg = cfg, .base = base,
					  .name = cfg->name};
	svc->api_writer = -1;
	snprintf(svc->subject, sizeof(svc->subject), "service %s", cfg->name);
	TAILQ_INIT(&svc->sessions);
	TAILQ_INIT(&svc->held);
	svc->release_ev = event_new(base, -1, 0, release_cb, svc);
	svc->accept_ev = evtimer_new(base, accept_resume_cb, svc);
	reserve_take();
	if (svc->release_ev == NULL || svc->accept_ev == NULL ||
	    !topo_init(&svc->topo, 0, cfg->down_after, cfg->protocol == PROTOCOL_POSTGRES)) {
		service_free(svc);
		return NULL;
	}
	if (cfg->cluster == CLUSTER_ON && !cluster_start(svc)) {
		service_free(svc);
		return NULL;
	}
	svc->cluster_pending = cfg->cluster == CLUSTER_AUTO;
	return svc;
}

/* A listener on `hp`, accepting into this service; NULL with the reason in err. */
static struct evconnlistener *listen_on(struct service *svc, const struct hostport *hp, char *err, size_t errlen)
{
	struct evconnlistener *l;
	struct sockaddr_storage ss;
	socklen_t sslen;
	char why[256], addr[300];

	hostport_str(hp, addr, sizeof(addr));
	if (!resolve(hp, &ss, &sslen, why, sizeof(why))) {
		snprintf(err, errlen, "listen %s: %s", addr, why);
		return NULL;
	}
	l = evconnlistener_new_bind(svc->base, accept_cb, svc,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 4096,
				    (struct sockaddr *)&ss, (int)sslen);
	if (l == NULL) {
		snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
		return NULL;
	}
	evconnlistener_set_error_cb(l, accept_error_cb);
	return l;
}

static bool same_str(const char *a, const char *b)
{
	return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* The TLS context cfg asks for (NULL when tls = off); false with the reason in err. */
static bool tls_setup(const struct service_config *cfg, struct net_tls **out, char *err, size_t errlen)
{
	static const enum net_tls_mode modes[] = {[TLS_OFF] = NET_TLS_OFF, [TLS_REQUIRE] = NET_TLS_REQUIRE,
						  [TLS_VERIFY_CA] = NET_TLS_VERIFY_CA,
						  [TLS_VERIFY_FULL] = NET_TLS_VERIFY_FULL};
	struct net_tls_settings st = {.mode = modes[cfg->tls], .ca_file = cfg->tls_ca_file,
				      .cert_file = cfg->tls_cert_file, .key_file = cfg->tls_key_file};

	*out = NULL;
	if (cfg->tls == TLS_OFF)
		return true;
	*out = net_tls_new(&st, err, errlen);
	return *out != NULL;
}

static bool tls_changed(const struct service_config *a, const struct service_config *b)
{
	return a->tls != b->tls || !same_str(a->tls_ca_file, b->tls_ca_file) ||
	       !same_str(a->tls_cert_file, b->tls_cert_file) || !same_str(a->tls_key_file, b->tls_key_file) ||
	       !same_str(a->tls_server_name, b->tls_server_name);
}

static void service_opaque_session(struct service *svc)
{
	svc->host.counters.opaque_sessions++;
	if (svc->opaque_logged)
		return;
	svc->opaque_logged = true;
	log_warn(svc->subject, "a session is opaque to repoint (its client negotiated TLS or GSS encryption with the "
			       "member itself, or spoke something repoint cannot follow): its bytes pass untouched, "
			       "and repoint cannot see its idle points (no graceful drain, move or retry for it). "
			       "Set tls (and listen_tls) to have repoint make the TLS itself. Said once; "
			       "repoint_opaque_sessions_total counts them");
}


static void file_mtime(const char *path, struct timespec *ts)
{
	struct stat st;

	if (path != NULL && stat(path, &st) == 0)
		*ts = st.st_mtim;
	else
		ts->tv_sec = ts->tv_nsec = 0;
}

/* The listener's TLS context from cfg (NULL when listen_tls = off); false with the reason in err. */
static bool listen_tls_setup(struct service *svc, const struct service_config *cfg, struct net_tls **out,
			     char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->listen_tls == LISTEN_TLS_OFF)
		return true;
	file_mtime(cfg->listen_tls_cert_file, &svc->listen_tls_mtime[0]);
	file_mtime(cfg->listen_tls_key_file, &svc->listen_tls_mtime[1]);
	svc->listen_tls_checked_ms = now_ms();
	*out = net_tls_server_new(cfg->listen_tls_cert_file, cfg->listen_tls_key_file, err, errlen);
	return *out != NULL;
}

static struct net_tls *service_listen_tls(struct service *svc)
{
	const struct service_config *cfg = svc->cfg;
	struct timespec m[2];

	if (svc->listen_tls == NULL)
		return NULL;
	/* Certificate rotation: the files are looked at once a second at most, when clients come. */
	if (now_ms() - svc->listen_tls_checked_ms >= 1000) {
		svc->listen_tls_checked_ms = now_ms();
		file_mtime(cfg->listen_tls_cert_file, &m[0]);
		file_mtime(cfg->listen_tls_key_file, &m[1]);
		if (memcmp(m, svc->listen_tls_mtime, sizeof(m)) != 0) {
			char err[300];
			struct net_tls *t = NULL;
			if (listen_tls_setup(svc, cfg, &t, err, sizeof(err))) {
				net_tls_free(svc->listen_tls);
				svc->listen_tls = t;
				log_info(svc->subject, "listener certificate reloaded from %s", cfg->listen_tls_cert_file);
			} else {
				memcpy(svc->listen_tls_mtime, m, sizeof(m));  /* said once per change */
				log_warn(svc->subject, "listen_tls: %s (the previous certificate stays)", err);
			}
		}
	}
	return svc->listen_tls;
}

/* auth_file's users (NULL when none); false with the reason ("file:line: ...") in err. */
static bool users_setup(struct service *svc, const struct service_config *cfg, struct auth_users **out, char *err,
			size_t errlen)
{
	*out = NULL;
	if (cfg->auth != AUTH_REPOINT || cfg->auth_file == NULL)
		return true;
	file_mtime(cfg->auth_file, &svc->users_mtime);
	svc->users_checked_ms = now_ms();
	*out = auth_users_load(cfg->auth_file, err, errlen);
	return *out != NULL;
}

struct user_secret {
	char name[128];
	struct secret *secret;
	bool missing;          /* its last read gave nothing (said once) */
};

static void user_secrets_close(struct service *svc)
{
	for (size_t i = 0; i < svc->nuser_secrets; i++)
		secret_close(svc->user_secrets[i].secret);
	free(svc->user_secrets);
	svc->user_secrets = NULL;
	svc->nuser_secrets = 0;
}

/* The passwords auth_file gives as references (env:, file:, secretsmanager:), as they read now:
 * opened for the users read last, set into them when they changed. */
static void user_secrets_apply(struct service *svc)
{
	struct auth_users *u = svc->users;

	if (svc->secrets == NULL)
		return;
	if (svc->user_secrets_gen != svc->users_gen) {
		user_secrets_close(svc);
		svc->user_secrets_gen = svc->users_gen;
		size_t n = 0;
		for (size_t i = 0; i < auth_users_count(u); i++)
			n += auth_users_at(u, i)->ref != NULL;
		if (n > 0 && (svc->user_secrets = calloc(n, sizeof(*svc->user_secrets))) == NULL) {
			log_error(svc->subject, "out of memory: auth_file's referenced passwords are not read");
			return;
		}
		for (size_t i = 0; i < auth_users_count(u); i++) {
			const struct auth_user *a = auth_users_at(u, i);
			struct user_secret *us = &svc->user_secrets[svc->nuser_secrets];
			if (a->ref == NULL || (us->secret = secret_open(svc->secrets, a->ref)) == NULL)
				continue;
			snprintf(us->name, sizeof(us->name), "%s", a->name);
			svc->nuser_secrets++;
		}
	}
	for (size_t i = 0; i < svc->nuser_secrets; i++) {
		struct user_secret *us = &svc->user_secrets[i];
		const struct auth_user *a = auth_users_find(u, us->name);
		char why[300];
		char *pw = secret_get(us->secret, NULL, NULL, why, sizeof(why));
		if (pw == NULL && !us->missing)
			log_warn(svc->subject, "auth_file: user \"%s\" cannot log in for now: %s", us->name, why);
		us->missing = pw == NULL;
		bool changed = a != NULL && (pw == NULL ? a->password != NULL
							 : a->password == NULL || strcmp(pw, a->password) != 0);
		if (changed && !auth_users_set_password(u, us->name, pw))
			log_error(svc->subject, "out of memory: user \"%s\" keeps its password", us->name);
		secret_value_free(pw);
	}
}

static struct auth_users *service_users(struct service *svc)
{
	const struct service_config *cfg = svc->cfg;
	struct timespec m;

	if (svc->users == NULL)
		return NULL;
	/* Rotation: the file is looked at once a second at most, when clients come. */
	if (now_ms() - svc->users_checked_ms >= 1000) {
		svc->users_checked_ms = now_ms();
		file_mtime(cfg->auth_file, &m);
		if (memcmp(&m, &svc->users_mtime, sizeof(m)) != 0) {
			char err[300];
			struct auth_users *u = NULL;
			if (users_setup(svc, cfg, &u, err, sizeof(err))) {
				auth_users_unref(svc->users);
				svc->users = u;
				svc->users_gen++;
				log_info(svc->subject, "auth_file %s read again", cfg->auth_file);
			} else {
				svc->users_mtime = m;  /* said once per change */
				log_warn(svc->subject, "auth_file: %s (the users read before stay)", err);
			}
		}
	}
	user_secrets_apply(svc);
	return svc->users;
}

static enum listen_tls_mode service_listen_tls_mode(const struct service *svc)
{
	return svc->listen_tls != NULL ? svc->cfg->listen_tls : LISTEN_TLS_OFF;
}

char *service_probe_credentials(struct service *svc, int member, char **user, char *why, size_t whylen)
{
	const struct service_config *cfg = svc->cfg;
	struct secret_target t = {.user = cfg->probe_user};
	char *pw;

	*user = NULL;
	if (member >= 0 && member < svc->nmembers) {
		t.host = svc->members[member]->hp.host;
		t.port = svc->members[member]->hp.port;
	}
	if (svc->probe_secret == NULL) {
		pw = strdup(cfg->probe_password);
		if (pw == NULL)
			snprintf(why, whylen, "out of memory");
		return pw;
	}
	return secret_get(svc->probe_secret, &t, cfg->probe_user_given ? NULL : user, why, whylen);
}

const char *service_member_tls_name(const struct service *svc, int member)
{
	return member_tls_name(svc->members[member]);
}

struct net_tls *service_tls(const struct service *svc)
{
	return svc->tls;
}

bool service_start(struct service *svc)
{
	const struct service_config *cfg = svc->cfg;
	char err[400], addr[300];

	if (!tls_setup(cfg, &svc->tls, err, sizeof(err))) {
		log_error(svc->subject, "tls: %s", err);
		return false;
	}
	if (!listen_tls_setup(svc, cfg, &svc->listen_tls, err, sizeof(err))) {
		log_error(svc->subject, "listen_tls: %s", err);
		return false;
	}
	if (!users_setup(svc, cfg, &svc->users, err, sizeof(err))) {
		log_error(svc->subject, "auth_file: %s", err);
		return false;
	}
	svc->users_gen++;
	(void)service_users(svc);  /* passwords given as references start being read now */

	if (cfg->source == NULL && !cfg->probes) {
		log_error(svc->subject, "probes = off needs a source: with static members only probes tell roles");
		return false;
	}
	if (cfg->nmembers > 0 && !set_members(svc, cfg->members, NULL, cfg->nmembers))
		return false;
	if (cfg->source != NULL) {
		svc->source = aws_source_new(svc->base, svc->aws, cfg->source, cfg->shard, svc->subject, source_view,
					     source_error, svc);
		if (svc->source == NULL || !aws_source_start(svc->source))
			return false;
	}
	svc->listener = listen_on(svc, &cfg->listen, err, sizeof(err));
	if (svc->listener == NULL) {
		log_error(svc->subject, "%s", err);
		return false;
	}
	if (cfg->source != NULL)
		log_info(svc->subject, "listening on %s (%s, route %s, members from %s%s)",
			 hostport_str(&cfg->listen, addr, sizeof(addr)), protocol_name(cfg->protocol),
			 route_name(cfg->route), cfg->source, cfg->probes ? ", confirmed by probes" : "");
	else
		log_info(svc->subject, "listening on %s (%s, route %s, %d member(s))",
			 hostport_str(&cfg->listen, addr, sizeof(addr)), protocol_name(cfg->protocol),
			 route_name(cfg->route), svc->nmembers);
	return true;
}

void service_shutdown(struct service *svc, int64_t timeout_ms)
{
	struct session *s, *next;

	svc->stopping = true;
	/* Closed, not just disabled: the kernel would go on accepting into the backlog, and those
	 * clients would be reset later instead of refused now. */
	if (svc->listener != NULL) {
		evconnlistener_free(svc->listener);
		svc->listener = NULL;
	}
	for (s = TAILQ_FIRST(&svc->held); s != NULL; s = next) {
		next = TAILQ_NEXT(s, held);
		session_refuse(s, REFUSE_SHUTDOWN);
	}
	for (s = TAILQ_FIRST(&svc->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, all);
		session_drain(s, DRAIN_GRACEFUL, timeout_ms);
	}
}

/* --- reload --- */

static bool same_hostport(const struct hostport *a, const struct hostport *b)
{
	return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* Keys whose change the running service cannot take in place (see service.h). */
static const char *needs_restart(const struct service_config *old, const struct service_config *cfg)
{
	if (cfg->protocol != old->protocol)
		return "protocol";
	if (!same_str(cfg->source, old->source))
		return "source";
	if (!same_str(cfg->shard, old->shard))
		return "shard";
	if (cfg->cluster != old->cluster)
		return "cluster";
	return NULL;
}

bool service_reconfigure(struct service *svc, const struct service_config *cfg, char *err, size_t errlen)
{
	const struct service_config *old = svc->cfg;
	struct evconnlistener *l = NULL;
	const char *key = needs_restart(old, cfg);
	bool probes_changed, members_changed = false;
	char addr[300];

	if (key != NULL) {
		snprintf(err, errlen, "%s changed: that needs a restart (the running service is kept as it was)", key);
		return false;
	}
	if (cfg->source == NULL && !cfg->probes) {
		snprintf(err, errlen, "probes = off needs a source: with static members only probes tell roles");
		return false;
	}
	bool tls_new = tls_changed(old, cfg);
	struct net_tls *tls = NULL, *ltls = NULL;
	struct auth_users *users = NULL;
	bool ltls_new = cfg->listen_tls != old->listen_tls ||
			!same_str(cfg->listen_tls_cert_file, old->listen_tls_cert_file) ||
			!same_str(cfg->listen_tls_key_file, old->listen_tls_key_file);
	if (tls_new && !tls_setup(cfg, &tls, err, errlen))
		return false;
	if (ltls_new && !listen_tls_setup(svc, cfg, &ltls, err, errlen)) {
		net_tls_free(tls);
		return false;
	}
	if (!users_setup(svc, cfg, &users, err, errlen)) {
		net_tls_free(tls);
		net_tls_free(ltls);
		return false;
	}
	if (!same_hostport(&cfg->listen, &old->listen) && (l = listen_on(svc, &cfg->listen, err, errlen)) == NULL) {
		net_tls_free(tls);
		net_tls_free(ltls);
		auth_users_unref(users);
		return false;
	}
	/* Another probe_password: its secret is opened now (a secretsmanager: one starts fetching), the
	 * probes move to it below, and the old one is closed once no probe holds it. */
	struct secret *psec = NULL, *msec = NULL;
	bool member_secret_new = svc->secrets != NULL && !same_str(cfg->member_password, old->member_password);
	if ((svc->secrets != NULL && !same_str(cfg->probe_password, old->probe_password) &&
	     (psec = secret_open(svc->secrets, cfg->probe_password)) == NULL) ||
	    (member_secret_new && cfg->member_password != NULL &&
	     (msec = secret_open(svc->secrets, cfg->member_password)) == NULL)) {
		secret_close(psec);
		net_tls_free(tls);
		net_tls_free(ltls);
		auth_users_unref(users);
		if (l != NULL)
			evconnlistener_free(l);
		snprintf(err, errlen, "out of memory");
		return false;
	}
	probes_changed = tls_new || cfg->probes != old->probes || !same_str(cfg->probe_user, old->probe_user) ||
			 cfg->probe_user_given != old->probe_user_given ||
			 !same_str(cfg->probe_password, old->probe_password) ||
			 !same_str(cfg->probe_database, old->probe_database) ||
			 cfg->probe_timeout_ms != old->probe_timeout_ms;
	if (cfg->source == NULL) {
		members_changed = cfg->nmembers != old->nmembers;
		for (int i = 0; !members_changed && i < cfg->nmembers; i++)
			members_changed = !same_hostport(&cfg->members[i], &old->members[i]);
	}
	/* From here on the service runs on `cfg` (new members are probed with its settings); new
	 * connections use the new TLS context, those open keep theirs. */
	struct net_tls *old_tls = svc->tls;
	svc->cfg = cfg;
	svc->host.cfg = cfg;
	svc->host.name = cfg->name;
	if (tls_new)
		svc->tls = tls;
	if (members_changed && !set_members(svc, cfg->members, NULL, cfg->nmembers)) {
		svc->cfg = old;
		svc->host.cfg = old;
		svc->host.name = old->name;
		if (tls_new) {
			svc->tls = old_tls;
			net_tls_free(tls);
		}
		net_tls_free(ltls);
		auth_users_unref(users);
		if (l != NULL)
			evconnlistener_free(l);
		secret_close(psec);
		secret_close(msec);
		snprintf(err, errlen, "the new members cannot be used (see the log): the running service is kept as it was");
		return false;
	}
	if (tls_new)
		net_tls_free(old_tls);
	if (ltls_new) {
		/* New clients get the new certificate (or none); sessions open keep theirs. */
		net_tls_free(svc->listen_tls);
		svc->listen_tls = ltls;
	}
	/* New clients log in with the users read now; sessions already in keep theirs. */
	auth_users_unref(svc->users);
	svc->users = users;
	svc->users_gen++;
	(void)service_users(svc);
	if (l != NULL) {
		/* The new address accepts from now on; sessions accepted on the old one go on. */
		evconnlistener_free(svc->listener);
		svc->listener = l;
		if (svc->accepting_paused || svc->stopping)
			evconnlistener_disable(l);
		log_info(svc->subject, "now listening on %s", hostport_str(&cfg->listen, addr, sizeof(addr)));
	}
	svc->topo.down_after = cfg->down_after < 1 ? 1 : cfg->down_after;
	if (svc->cl != NULL) {
		svc->cl->down_after = svc->topo.down_after;
		for (int k = 0; k < svc->cl->nshards; k++)
			svc->cl->shards[k].topo.down_after = svc->topo.down_after;
	}
	struct secret *old_secret = NULL, *old_member_secret = NULL;
	if (psec != NULL) {
		old_secret = svc->probe_secret;
		svc->probe_secret = psec;
	}
	if (member_secret_new) {
		/* New server connections log in with it; those logged in already stay so. */
		old_member_secret = svc->member_secret;
		svc->member_secret = msec;
	}
	if (probes_changed) {
		for (int i = 0; i < svc->nmembers; i++) {
			struct member *m = svc->members[i];
			member_probe_stop(m);
			if (cfg->probes && member_probe_start(m))
				schedule_probe(m, 0);
		}
	}
	secret_close(old_secret);
	secret_close(old_member_secret);
	return true;
}

void service_retire(struct service *svc, int64_t timeout_ms)
{
	service_shutdown(svc, timeout_ms);
	for (int i = 0; i < svc->nmembers; i++)
		member_probe_stop(svc->members[i]);
	if (svc->source != NULL) {
		aws_source_free(svc->source);
		svc->source = NULL;
	}
}

void service_free(struct service *svc)
{
	struct session *s;

	if (svc == NULL)
		return;
	/* Close what is left without flushing: the loop is gone. */
	while ((s = TAILQ_FIRST(&svc->sessions)) != NULL)
		session_destroy(s);
	if (svc->listener != NULL)
		evconnlistener_free(svc->listener);
	for (int i = 0; i < svc->nmembers; i++)
		member_free(svc->members[i]);
	if (svc->source != NULL)
		aws_source_free(svc->source);
	free(svc->members);
	secret_close(svc->probe_secret);
	secret_close(svc->member_secret);
	user_secrets_close(svc);
	if (svc->release_ev != NULL)
		event_free(svc->release_ev);
	if (svc->accept_ev != NULL)
		event_free(svc->accept_ev);
	topo_free(&svc->topo);
	if (svc->cl != NULL)
		cluster_free(svc->cl);
	free(svc->cl);
	free(svc->map_buf);
	free(svc->seeds);
	free(svc->seed_groups);
	if (svc->keys != NULL)
		keyspec_free(svc->keys);
	net_tls_free(svc->tls);
	net_tls_free(svc->listen_tls);
	auth_users_unref(svc->users);
	free(svc);
}

/* --- status and metrics --- */

static unsigned shared_connections(const struct service *svc)
{
	unsigned n = 0;

	for (int i = 0; i < svc->nmembers; i++)
		for (int k = 0; k < 4; k++)
			if (svc->members[i]->shared[k] != NULL && shared_ready(svc->members[i]->shared[k]))
				n++;
	return n;
}

static json_t *ms_to_wall_json(int64_t mono_ms)
{
	char buf[64];
	time_t secs;
	struct tm tm;
	int64_t wall;

	if (mono_ms <= 0)
		return json_null();
	wall = wall_ms() - (now_ms() - mono_ms);
	secs = (time_t)(wall / 1000);
	gmtime_r(&secs, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall % 1000));
	return json_string(buf);
}

json_t *service_clients_json(const struct service *svc)
{
	json_t *a = json_array();
	const struct session *s;
	int64_t now = now_ms();

	if (a == NULL)
		return NULL;
	TAILQ_FOREACH(s, &svc->sessions, all) {
		/* active_ms is read off the coarse clock: never before the accept */
		int64_t active = s->active_ms > s->accepted_ms ? s->active_ms : s->accepted_ms;
		json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:f, s:f, s:I, s:I, s:b, s:b}", "id", (json_int_t)s->id,
				      "client", s->peer, "service", svc->cfg->name, "state", session_state_name(s->state),
				      "age_s", (double)(now - s->accepted_ms) / 1000.0, "idle_s",
				      (double)(now - active) / 1000.0, "bytes_in", (json_int_t)s->bytes_in,
				      "bytes_out", (json_int_t)s->bytes_out, "tls", s->client.conn.ssl != NULL,
				      "shared", s->shared);
		if (o == NULL)
			continue;
		json_object_set_new(o, "member", s->member >= 0 && s->member < svc->nmembers
							 ? json_string(svc->members[s->member]->str)
							 : json_null());
		char tls[160];
		if (s->upstream.conn.ssl != NULL) {
			net_conn_describe(&s->upstream.conn, tls, sizeof(tls));
			json_object_set_new(o, "member_tls", json_string(tls));
		} else if (s->shared && s->member >= 0 && s->member < svc->nmembers) {
			/* Its commands travel on the member's shared connections: theirs. */
			for (int k = 0; k < 4; k++)
				if (svc->members[s->member]->shared[k] != NULL &&
				    shared_describe_tls(svc->members[s->member]->shared[k], tls, sizeof(tls))) {
					json_object_set_new(o, "member_tls", json_string(tls));
					break;
				}
		}
		json_array_append_new(a, o);
	}
	return a;
}

json_t *service_status_json(const struct service *svc)
{
	const struct topology *t = &svc->topo;
	const struct service_config *cfg = svc->cfg;
	json_t *o = json_object(), *members = json_array(), *last = json_null();
	char addr[300];
	int w = cfg->route == ROUTE_WRITER ? t->writer : topo_writer_ready(t);

	for (int i = 0; i < svc->nmembers; i++) {
		const struct member *m = svc->members[i];
		json_t *mo = json_object();
		json_object_set_new(mo, "address", json_string(m->str));
		if (m->id[0])
			json_object_set_new(mo, "id", json_string(m->id));
		const struct topology *mt = topo_of(svc, i);
		if (mt == NULL) {
			/* cluster = on, in no shard: only what its probe said */
			json_object_set_new(mo, "role", json_string(role_name(m->last.ok ? m->last.role : ROLE_UNKNOWN)));
			json_object_set_new(mo, "healthy", json_boolean(m->last.ok));
			json_object_set_new(mo, "shard", json_null());
		} else {
			json_object_set_new(mo, "role", json_string(role_name(topo_member_role(mt, i))));
			json_object_set_new(mo, "healthy", json_boolean(topo_member_healthy(mt, i)));
			json_object_set_new(mo, "epoch", json_integer(mt->members[i].epoch));
			json_object_set_new(mo, "fenced", json_boolean(mt->members[i].fenced));
			if (svc->cl != NULL)
				json_object_set_new(mo, "shard", json_integer(svc->cl->member_shard[i]));
		}
		json_object_set_new(mo, "clients", json_integer(m->sessions));
		json_object_set_new(mo, "probe", json_pack("{s:b, s:f, s:s, s:I, s:I}", "ok", m->last.ok, "latency_ms",
							    (double)m->last.latency_us / 1000.0, "detail", m->last.detail,
							    "count", (json_int_t)m->probes, "failures",
							    (json_int_t)m->probe_failures));
		json_array_append_new(members, mo);
	}
	if (t->last.started_ms > 0) {
		last = json_object();
		json_object_set_new(last, "from", t->last.from >= 0 ? json_string(svc->members[t->last.from]->str)
								  : json_null());
		json_object_set_new(last, "to", t->last.to >= 0 ? json_string(svc->members[t->last.to]->str) : json_null());
		json_object_set_new(last, "started_at", ms_to_wall_json(t->last.started_ms));
		json_object_set_new(last, "confirmed_at", ms_to_wall_json(t->last.confirmed_ms));
		json_object_set_new(last, "in_progress", json_boolean(t->last.confirmed_ms == 0));
		json_object_set_new(last, "duration_ms", t->last.confirmed_ms > 0
								 ? json_integer(t->last.confirmed_ms - t->last.started_ms)
								 : json_null());
	}
	json_object_set_new(o, "name", json_string(cfg->name));
	json_object_set_new(o, "protocol", json_string(protocol_name(cfg->protocol)));
	json_object_set_new(o, "listen", json_string(hostport_str(&cfg->listen, addr, sizeof(addr))));
	json_object_set_new(o, "route", json_string(route_name(cfg->route)));
	json_object_set_new(o, "state", json_string(topo_state_name(t->state)));
	json_object_set_new(o, "writer", w >= 0 ? json_string(svc->members[w]->str) : json_null());
	json_object_set_new(o, "writer_ready", json_boolean(topo_writer_ready(t) >= 0));
	json_object_set_new(o, "paused", json_boolean(svc->paused));
	json_object_set_new(o, "conflict", json_boolean(t->conflict));
	json_object_set_new(o, "members", members);
	if (svc->cl != NULL) {
		json_t *co = json_object(), *shards = json_array();
		bool ready = svc->keys != NULL && cluster_ready(svc->cl);
		for (int k = 0; k < svc->cl->nshards; k++) {
			const struct cluster_shard *sh = &svc->cl->shards[k];
			int sw = topo_writer_ready(&sh->topo);
			json_t *so = json_pack("{s:i, s:I, s:s, s:s, s:b, s:I}", "shard", k, "slots", (json_int_t)sh->nslots,
					       "ranges", sh->ranges, "state", topo_state_name(sh->topo.state), "primary_ready",
					       sw >= 0, "failovers", (json_int_t)sh->topo.failovers);
			json_object_set_new(so, "primary", sh->topo.writer >= 0 ? json_string(svc->members[sh->topo.writer]->str)
										 : json_null());
			if (sh->topo.last.started_ms > 0 && sh->topo.last.confirmed_ms > 0)
				json_object_set_new(so, "last_failover_ms",
						    json_integer(sh->topo.last.confirmed_ms - sh->topo.last.started_ms));
			json_array_append_new(shards, so);
		}
		json_object_set_new(co, "shards", shards);
		json_object_set_new(co, "ready", json_boolean(ready));
		json_object_set_new(co, "slot_map_updates", json_integer((json_int_t)svc->cl->maps));
		json_object_set_new(co, "commands_known", json_integer(svc->keys != NULL ? (json_int_t)keyspec_count(svc->keys) : 0));
		json_object_set_new(co, "map_error", svc->map_error[0] ? json_string(svc->map_error) : json_null());
		json_object_set_new(o, "cluster", co);
		/* The service as a whole: ready when every shard is. */
		json_object_set_new(o, "writer_ready", json_boolean(ready));
		json_object_set_new(o, "state", json_string(ready ? "STEADY" : svc->cl->nshards == 0 ? "STARTING" : "FAILING_OVER"));
	}
	if (svc->probe_secret != NULL)
		json_object_set_new(o, "probe_password", secret_status_json(svc->probe_secret));
	if (svc->member_secret != NULL)
		json_object_set_new(o, "member_password", secret_status_json(svc->member_secret));
	if (svc->source != NULL) {
		json_t *src = aws_source_status(svc->source);
		json_object_set_new(src, "writer", svc->api_writer >= 0 && svc->api_writer < svc->nmembers
							   ? json_string(svc->members[svc->api_writer]->str)
							   : json_null());
		json_object_set_new(o, "source", src);
	}
	json_object_set_new(o, "clients", json_integer(svc->nsessions));
	json_object_set_new(o, "multiplex", json_boolean(svc->cfg->multiplex));
	json_object_set_new(o, "shared_connections", json_integer(shared_connections(svc)));
	json_object_set_new(o, "held", json_integer(svc->nheld));
	json_object_set_new(o, "failovers", json_integer(t->failovers));
	json_object_set_new(o, "conflicts", json_integer(t->conflicts));
	json_object_set_new(o, "last_failover", last);
	json_object_set_new(o, "counters",
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "accepted",
				      (json_int_t)svc->host.counters.accepted, "closed", (json_int_t)svc->host.counters.closed,
				      "held_total", (json_int_t)svc->host.counters.held_total, "hold_timeouts",
				      (json_int_t)svc->host.counters.hold_timeouts, "drained", (json_int_t)svc->host.counters.drained,
				      "drained_idle", (json_int_t)svc->host.counters.drained_idle, "drained_timeout",
				      (json_int_t)svc->host.counters.drained_timeout, "upstream_connect_failures",
				      (json_int_t)svc->host.counters.upstream_connect_failures, "migrated",
				      (json_int_t)svc->host.counters.migrated, "retried", (json_int_t)svc->host.counters.retried,
				      "restarted", (json_int_t)svc->host.counters.restarted,
				      "bytes_client_to_server",
				      (json_int_t)svc->host.counters.bytes_client_to_server, "bytes_server_to_client",
				      (json_int_t)svc->host.counters.bytes_server_to_client));
	json_object_set_new(json_object_get(o, "counters"), "transactions_replayed",
			    json_integer((json_int_t)svc->host.counters.tx_replayed));
	json_object_set_new(json_object_get(o, "counters"), "shared_commands",
			    json_integer((json_int_t)svc->host.counters.shared_commands));
	json_object_set_new(json_object_get(o, "counters"), "pinned", json_integer((json_int_t)svc->host.counters.pinned));
	json_object_set_new(json_object_get(o, "counters"), "bytes_spliced",
			    json_integer((json_int_t)svc->host.counters.bytes_spliced));
	json_object_set_new(json_object_get(o, "counters"), "member_logins",
			    json_integer((json_int_t)svc->host.counters.member_logins));
	json_object_set_new(json_object_get(o, "counters"), "member_login_failures",
			    json_integer((json_int_t)svc->host.counters.member_login_failures));
	json_object_set_new(json_object_get(o, "counters"), "relogins", json_integer((json_int_t)svc->host.counters.relogins));
	json_object_set_new(json_object_get(o, "counters"), "pooled", json_integer((json_int_t)svc->host.counters.pooled));
	json_object_set_new(json_object_get(o, "counters"), "pool_reused",
			    json_integer((json_int_t)svc->host.counters.pool_reused));
	int idle = 0;
	for (int i = 0; i < svc->nmembers; i++)
		idle += svc->members[i]->npool;
	json_object_set_new(o, "pool_idle", json_integer(idle));
	json_t *unmovable = json_object();
	for (int k = 0; k < SESSION_UNMOVABLE_REASONS && svc->host.counters.unmovable[k].reason != NULL; k++)
		json_object_set_new(unmovable, svc->host.counters.unmovable[k].reason,
				    json_integer((json_int_t)svc->host.counters.unmovable[k].n));
	json_object_set_new(json_object_get(o, "counters"), "unmovable", unmovable);
	json_object_set_new(json_object_get(o, "counters"), "refused_no_fd", json_integer((json_int_t)svc->refused_fds));
	json_object_set_new(json_object_get(o, "counters"), "refused_max_clients",
			    json_integer((json_int_t)svc->refused_max));
	return o;
}

/* One metric family across all services (Prometheus wants a family's samples together). */
struct metric {
	const char *name;
	const char *type;
	const char *help;
	uint64_t (*get)(const struct service *svc);
	bool source_only;  /* shown for services with a source only (no zeros for the others) */
};

#define METRIC_FN(fn, expr)                                                                        \
	static uint64_t fn(const struct service *svc)                                              \
	{                                                                                          \
		return (uint64_t)(expr);                                                           \
	}
METRIC_FN(m_clients, svc->nsessions)
METRIC_FN(m_held, svc->nheld)
/* cluster = on: the service as a whole (every shard ready; any shard in conflict; the sums). */
static uint64_t shards_sum(const struct service *svc, int what)
{
	uint64_t n = 0;

	for (int k = 0; k < svc->cl->nshards; k++) {
		const struct topology *t = &svc->cl->shards[k].topo;
		n += what == 0 ? t->conflict : what == 1 ? t->failovers : t->conflicts;
	}
	return n;
}
METRIC_FN(m_writer_ready, svc->cl != NULL ? svc->keys != NULL && cluster_ready(svc->cl) : topo_writer_ready(&svc->topo) >= 0)
METRIC_FN(m_conflict, svc->cl != NULL ? shards_sum(svc, 0) > 0 : svc->topo.conflict)
METRIC_FN(m_failovers, svc->cl != NULL ? shards_sum(svc, 1) : svc->topo.failovers)
METRIC_FN(m_conflicts, svc->cl != NULL ? shards_sum(svc, 2) : svc->topo.conflicts)
METRIC_FN(m_accepted, svc->host.counters.accepted)
METRIC_FN(m_held_total, svc->host.counters.held_total)
METRIC_FN(m_hold_timeouts, svc->host.counters.hold_timeouts)
METRIC_FN(m_drained, svc->host.counters.drained)
METRIC_FN(m_drained_idle, svc->host.counters.drained_idle)
METRIC_FN(m_drained_timeout, svc->host.counters.drained_timeout)
METRIC_FN(m_connect_failures, svc->host.counters.upstream_connect_failures)
METRIC_FN(m_client_tls_failures, svc->host.counters.client_tls_failures)
METRIC_FN(m_client_auth_failures, svc->host.counters.client_auth_failures)
METRIC_FN(m_outcome_unknown, svc->host.counters.outcome_unknown)
METRIC_FN(m_member_logins, svc->host.counters.member_logins)
METRIC_FN(m_member_login_failures, svc->host.counters.member_login_failures)
METRIC_FN(m_relogins, svc->host.counters.relogins)
METRIC_FN(m_pooled, svc->host.counters.pooled)
METRIC_FN(m_pool_reused, svc->host.counters.pool_reused)
METRIC_FN(m_opaque_sessions, svc->host.counters.opaque_sessions)
METRIC_FN(m_migrated, svc->host.counters.migrated)
METRIC_FN(m_retried, svc->host.counters.retried)
METRIC_FN(m_tx_replayed, svc->host.counters.tx_replayed)
METRIC_FN(m_shared_commands, svc->host.counters.shared_commands)
METRIC_FN(m_pinned, svc->host.counters.pinned)
METRIC_FN(m_shared_connections, shared_connections(svc))
METRIC_FN(m_restarted, svc->host.counters.restarted)
METRIC_FN(m_refused_fds, svc->refused_fds)
METRIC_FN(m_refused_max, svc->refused_max)
METRIC_FN(m_src_polls, svc->source ? aws_source_polls(svc->source) : 0)
METRIC_FN(m_src_failures, svc->source ? aws_source_failures(svc->source) : 0)
METRIC_FN(m_src_throttles, svc->source ? aws_source_throttles(svc->source) : 0)
METRIC_FN(m_src_retries, svc->source ? aws_source_retries(svc->source) : 0)
METRIC_FN(m_bytes_in, svc->host.counters.bytes_client_to_server)
METRIC_FN(m_bytes_out, svc->host.counters.bytes_server_to_client)
METRIC_FN(m_bytes_spliced, svc->host.counters.bytes_spliced)

static const struct metric service_metric_table[] = {
	{"repoint_clients", "gauge", "Client connections open", m_clients, false},
	{"repoint_held_clients", "gauge", "Clients waiting for a writer", m_held, false},
	{"repoint_writer_ready", "gauge", "1 when new clients are sent to a confirmed writer", m_writer_ready, false},
	{"repoint_conflict", "gauge", "1 while several members claim the writer role", m_conflict, false},
	{"repoint_failovers_total", "counter", "Completed failovers", m_failovers, false},
	{"repoint_conflicts_total", "counter", "Times several members claimed the writer role", m_conflicts, false},
	{"repoint_accepted_total", "counter", "Client connections accepted", m_accepted, false},
	{"repoint_held_total", "counter", "Clients that had to wait for a writer", m_held_total, false},
	{"repoint_hold_timeouts_total", "counter", "Clients refused after hold_timeout", m_hold_timeouts, false},
	{"repoint_client_tls_failures_total", "counter", "Clients whose TLS handshake with the listener failed",
	 m_client_tls_failures, false},
	{"repoint_client_auth_failures_total", "counter",
	 "Clients repoint refused at authentication (auth = repoint: unknown user, wrong password, malformed start)",
	 m_client_auth_failures, false},
	{"repoint_member_logins_total", "counter",
	 "Logins repoint made to members itself (auth = repoint, Redis: sessions and shared connections)",
	 m_member_logins, false},
	{"repoint_member_login_failures_total", "counter", "Logins of repoint's that a member refused",
	 m_member_login_failures, false},
	{"repoint_relogins_total", "counter",
	 "Logins again on long-lived server connections (reauth_interval), before the service cuts them",
	 m_relogins, false},
	{"repoint_pool_kept_total", "counter",
	 "Server connections kept when their client left (pool_size, auth = repoint)", m_pooled, false},
	{"repoint_pool_reused_total", "counter", "Kept server connections given to a new client instead of a login",
	 m_pool_reused, false},
	{"repoint_requests_outcome_unknown_total", "counter",
	 "Requests in flight when their server went away, answered 'outcome unknown' while the session moved on "
	 "(auth = repoint)", m_outcome_unknown, false},
	{"repoint_opaque_sessions_total", "counter",
	 "Sessions repoint could not follow (a client's own TLS passed through to the member)", m_opaque_sessions, false},
	{"repoint_drained_total", "counter", "Sessions closed by a drain", m_drained, false},
	{"repoint_drained_idle_total", "counter", "Sessions drained at an idle point", m_drained_idle, false},
	{"repoint_drained_timeout_total", "counter", "Sessions drained at drain_timeout", m_drained_timeout, false},
	{"repoint_upstream_connect_failures_total", "counter", "Failed connections to members",
	 m_connect_failures, false},
	{"repoint_migrated_total", "counter", "Sessions moved to another server without the client noticing",
	 m_migrated, false},
	{"repoint_retried_total", "counter", "Requests refused as read-only by an old writer and sent again",
	 m_retried, false},
	{"repoint_transactions_replayed_total", "counter",
	 "Transactions refused part-way by an old writer turned read-only, run again on the new writer with the same answers",
	 m_tx_replayed, false},
	{"repoint_shared_commands_total", "counter", "Commands sent over shared server connections (multiplex)",
	 m_shared_commands, false},
	{"repoint_pinned_total", "counter", "Sessions that needed a server connection of their own (multiplex)",
	 m_pinned, false},
	{"repoint_shared_connections", "gauge", "Open shared server connections (multiplex)", m_shared_connections, false},
	{"repoint_restarted_total", "counter", "Session starts refused by a server and replayed", m_restarted, false},
	{"repoint_refused_no_fd_total", "counter", "Clients refused at once: no file descriptor left", m_refused_fds, false},
	{"repoint_refused_max_clients_total", "counter", "Clients refused at once: max_clients reached",
	 m_refused_max, false},
	{"repoint_source_polls_total", "counter", "Successful polls of the control plane", m_src_polls, true},
	{"repoint_source_failures_total", "counter", "Failed polls of the control plane (after retries)",
	 m_src_failures, true},
	{"repoint_source_throttles_total", "counter", "Throttled control-plane requests", m_src_throttles, true},
	{"repoint_source_retries_total", "counter", "Retried control-plane requests", m_src_retries, true},
	{"repoint_client_bytes_total", "counter", "Bytes forwarded from clients to servers", m_bytes_in, false},
	{"repoint_server_bytes_total", "counter", "Bytes forwarded from servers to clients", m_bytes_out, false},
	{"repoint_spliced_bytes_total", "counter",
	 "Of the bytes forwarded, those moved by splice(2) without a copy (large values, plain transports)",
	 m_bytes_spliced, false},
};

static const struct histogram *hist_failover(const struct service *svc)
{
	return &svc->failover_time;
}

static const struct histogram *hist_hold_wait(const struct service *svc)
{
	return &svc->host.counters.hold_wait;
}

static const struct histogram *hist_connect(const struct service *svc)
{
	return &svc->host.counters.connect_time;
}

/* One histogram family: cumulative buckets, +Inf, sum and count per service. */
static void hist_family(struct evbuffer *out, const char *name, const char *help, struct service *const *svcs,
			int n, const struct histogram *(*get)(const struct service *svc))
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i < n; i++) {
		const struct histogram *h = get(svcs[i]);
		uint64_t acc = 0;
		for (int b = 0; b < HIST_NBOUNDS; b++) {
			acc += h->buckets[b];
			evbuffer_add_printf(out, "%s_bucket{service=\"%s\",le=\"%g\"} %llu\n", name, svcs[i]->cfg->name,
					    hist_bounds[b], (unsigned long long)acc);
		}
		evbuffer_add_printf(out, "%s_bucket{service=\"%s\",le=\"+Inf\"} %llu\n%s_sum{service=\"%s\"} %.6f\n"
					 "%s_count{service=\"%s\"} %llu\n",
				    name, svcs[i]->cfg->name, (unsigned long long)h->count, name, svcs[i]->cfg->name, h->sum,
				    name, svcs[i]->cfg->name, (unsigned long long)h->count);
	}
}

void service_metrics(struct service *const *svcs, int n, struct evbuffer *out)
{
	bool sources = false;

	for (int i = 0; i < n; i++)
		sources = sources || svcs[i]->source != NULL;
	evbuffer_add_printf(out, "# HELP repoint_build_info repoint's version\n# TYPE repoint_build_info gauge\n"
				 "repoint_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	for (size_t k = 0; k < ARRAY_LEN(service_metric_table); k++) {
		const struct metric *m = &service_metric_table[k];
		if (m->source_only && !sources)
			continue;
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
		for (int i = 0; i < n; i++)
			if (!m->source_only || svcs[i]->source != NULL)
				evbuffer_add_printf(out, "%s{service=\"%s\"} %llu\n", m->name, svcs[i]->cfg->name,
						    (unsigned long long)m->get(svcs[i]));
	}
	if (sources) {
		evbuffer_add_printf(out, "# HELP repoint_source_last_backoff_seconds Last backoff before a control-plane "
					 "retry\n# TYPE repoint_source_last_backoff_seconds gauge\n");
		for (int i = 0; i < n; i++)
			if (svcs[i]->source != NULL)
				evbuffer_add_printf(out, "repoint_source_last_backoff_seconds{service=\"%s\"} %.3f\n",
						    svcs[i]->cfg->name,
						    (double)aws_source_last_backoff_ms(svcs[i]->source) / 1000.0);
	}
	evbuffer_add_printf(out, "# HELP repoint_sessions_unmovable_total Sessions closed at a failover because what they "
				 "set on their server cannot be carried to another, by reason\n"
				 "# TYPE repoint_sessions_unmovable_total counter\n");
	for (int i = 0; i < n; i++)
		for (int k = 0; k < SESSION_UNMOVABLE_REASONS && svcs[i]->host.counters.unmovable[k].reason != NULL; k++)
			evbuffer_add_printf(out, "repoint_sessions_unmovable_total{service=\"%s\",reason=\"%s\"} %llu\n",
					    svcs[i]->cfg->name, svcs[i]->host.counters.unmovable[k].reason,
					    (unsigned long long)svcs[i]->host.counters.unmovable[k].n);
	evbuffer_add_printf(out, "# HELP repoint_last_failover_seconds Duration of the last completed failover\n"
				 "# TYPE repoint_last_failover_seconds gauge\n");
	for (int i = 0; i < n; i++) {
		const struct topology *t = &svcs[i]->topo;
		if (t->last.started_ms > 0 && t->last.confirmed_ms > 0)
			evbuffer_add_printf(out, "repoint_last_failover_seconds{service=\"%s\"} %.3f\n",
					    svcs[i]->cfg->name,
					    (double)(t->last.confirmed_ms - t->last.started_ms) / 1000.0);
	}
	hist_family(out, "repoint_failover_duration_seconds", "From the writer's loss to the new writer's confirmation",
		    svcs, n, hist_failover);
	hist_family(out, "repoint_hold_wait_seconds", "How long clients waited for a writer before connecting",
		    svcs, n, hist_hold_wait);
	hist_family(out, "repoint_upstream_connect_seconds", "Connecting to a member (TLS handshake included)",
		    svcs, n, hist_connect);
	evbuffer_add_printf(out, "# HELP repoint_member_up 1 when the member answered its last probe\n"
				 "# TYPE repoint_member_up gauge\n");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < svcs[i]->nmembers; j++)
			evbuffer_add_printf(out, "repoint_member_up{service=\"%s\",member=\"%s\"} %d\n",
					    svcs[i]->cfg->name, svcs[i]->members[j]->str,
					    topo_of(svcs[i], j) != NULL ? topo_member_healthy(topo_of(svcs[i], j), j)
									: svcs[i]->members[j]->last.ok);
	/* The role as a value, not a label: a failover changes values, not series. */
	evbuffer_add_printf(out, "# HELP repoint_member_role The member's role: 2 writer, 1 reader, 0 unknown or down\n"
				 "# TYPE repoint_member_role gauge\n");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < svcs[i]->nmembers; j++) {
			enum role r = service_member_role(svcs[i], j);
			evbuffer_add_printf(out, "repoint_member_role{service=\"%s\",member=\"%s\"} %d\n",
					    svcs[i]->cfg->name, svcs[i]->members[j]->str,
					    r == ROLE_WRITER ? 2 : r == ROLE_READER ? 1 : 0);
		}
	evbuffer_add_printf(out, "# HELP repoint_member_clients Sessions attached to the member\n"
				 "# TYPE repoint_member_clients gauge\n");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < svcs[i]->nmembers; j++)
			evbuffer_add_printf(out, "repoint_member_clients{service=\"%s\",member=\"%s\"} %u\n",
					    svcs[i]->cfg->name, svcs[i]->members[j]->str, svcs[i]->members[j]->sessions);
	evbuffer_add_printf(out, "# HELP repoint_probe_failures_total Failed role probes\n"
				 "# TYPE repoint_probe_failures_total counter\n");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < svcs[i]->nmembers; j++)
			evbuffer_add_printf(out, "repoint_probe_failures_total{service=\"%s\",member=\"%s\"} %llu\n",
					    svcs[i]->cfg->name, svcs[i]->members[j]->str,
					    (unsigned long long)svcs[i]->members[j]->probe_failures);
	evbuffer_add_printf(out, "# HELP repoint_probe_latency_seconds Latency of the last role probe\n"
				 "# TYPE repoint_probe_latency_seconds gauge\n");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < svcs[i]->nmembers; j++)
			evbuffer_add_printf(out, "repoint_probe_latency_seconds{service=\"%s\",member=\"%s\"} %.6f\n",
					    svcs[i]->cfg->name, svcs[i]->members[j]->str,
					    (double)svcs[i]->members[j]->last.latency_us / 1e6);
	/* cluster = on: per shard (shards are numbered as /status lists them). */
	evbuffer_add_printf(out, "# HELP repoint_shard_primary_ready 1 when the shard has a confirmed primary\n"
				 "# TYPE repoint_shard_primary_ready gauge\n");
	for (int i = 0; i < n; i++)
		for (int k = 0; svcs[i]->cl != NULL && k < svcs[i]->cl->nshards; k++)
			evbuffer_add_printf(out, "repoint_shard_primary_ready{service=\"%s\",shard=\"%d\"} %d\n",
					    svcs[i]->cfg->name, k, topo_writer_ready(&svcs[i]->cl->shards[k].topo) >= 0);
	evbuffer_add_printf(out, "# HELP repoint_shard_failovers_total Completed failovers of the shard\n"
				 "# TYPE repoint_shard_failovers_total counter\n");
	for (int i = 0; i < n; i++)
		for (int k = 0; svcs[i]->cl != NULL && k < svcs[i]->cl->nshards; k++)
			evbuffer_add_printf(out, "repoint_shard_failovers_total{service=\"%s\",shard=\"%d\"} %u\n",
					    svcs[i]->cfg->name, k, svcs[i]->cl->shards[k].topo.failovers);
	evbuffer_add_printf(out, "# HELP repoint_shard_slots Slots the shard serves\n"
				 "# TYPE repoint_shard_slots gauge\n");
	for (int i = 0; i < n; i++)
		for (int k = 0; svcs[i]->cl != NULL && k < svcs[i]->cl->nshards; k++)
			evbuffer_add_printf(out, "repoint_shard_slots{service=\"%s\",shard=\"%d\"} %u\n",
					    svcs[i]->cfg->name, k, svcs[i]->cl->shards[k].nslots);
}

/* --- the session host: what sessions see of their service (net/session.h) --- */

static struct service *host_svc(struct session_host *h)
{
	return (struct service *)(void *)((char *)h - offsetof(struct service, host));
}

static int host_pick(struct session_host *h)
{
	return service_pick(host_svc(h));
}

static int host_pick_slot(struct session_host *h, int slot)
{
	return service_pick_slot(host_svc(h), slot);
}

static int host_slot(struct session_host *h, const uint8_t *p, size_t n)
{
	return service_slot(host_svc(h), p, n);
}

static int host_shard_starts(struct session_host *h, int *first, int max)
{
	const struct cluster *cl = host_svc(h)->cl;
	int n = 0;

	for (int k = 0; cl != NULL && k < cl->nshards && n < max; k++) {
		int f = cl->shards[k].first_slot, j = n++;
		if (f < 0) {
			n--;
			continue;
		}
		for (; j > 0 && first[j - 1] > f; j--)
			first[j] = first[j - 1];
		first[j] = f;
	}
	return n;
}

static bool host_slot_moved(struct session_host *h, int member, const uint8_t *p, size_t n)
{
	return service_slot_moved(host_svc(h), member, p, n);
}

static int host_slot_asked(struct session_host *h, int member, const uint8_t *p, size_t n)
{
	long slot;

	return redirect_target(host_svc(h), member, p, n, "-ASK ", &slot);
}

static const struct sockaddr *host_member_addr(struct session_host *h, int member, socklen_t *len)
{
	return service_member_addr(host_svc(h), member, len);
}

static const char *host_member_str(struct session_host *h, int member)
{
	return service_member_str(host_svc(h), member);
}

static const char *host_member_tls_name(struct session_host *h, int member)
{
	return service_member_tls_name(host_svc(h), member);
}

static struct net_tls *host_tls(struct session_host *h)
{
	return host_svc(h)->tls;
}

static struct net_tls *host_listen_tls(struct session_host *h)
{
	return service_listen_tls(host_svc(h));
}

static struct auth_users *host_auth_users(struct session_host *h)
{
	return service_users(host_svc(h));
}

/* auth = repoint, Redis: the command that logs a new connection to `member` in, with
 * member_password as it reads now (a file rotated, a secret fetched again, a fresh IAM token). */
static int service_member_login(struct service *svc, int member, struct evbuffer *out, char *why, size_t whylen)
{
	const struct service_config *cfg = svc->cfg;
	struct secret_target t = {.user = cfg->member_user, .resource = config_iam_resource(cfg)};
	char *pw;
	bool ok;

	if (cfg->auth != AUTH_REPOINT || cfg->member_password == NULL || svc->proto->login_command == NULL)
		return 0;
	if (member >= 0 && member < svc->nmembers) {
		t.host = svc->members[member]->hp.host;
		t.port = svc->members[member]->hp.port;
	}
	pw = svc->member_secret != NULL ? secret_get(svc->member_secret, &t, NULL, why, whylen)
					: strdup(cfg->member_password);
	if (pw == NULL) {
		if (svc->member_secret == NULL)
			snprintf(why, whylen, "out of memory");
		return -1;
	}
	ok = svc->proto->login_command(out, cfg->member_user, pw);
	secret_value_free(pw);
	if (!ok) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	svc->host.counters.member_logins++;
	return 1;
}

/* auth = repoint, Postgres: what a login to `member` as `user` proves itself with, from
 * member_password (iam: an RDS token for that member and user). */
static int service_member_password(struct service *svc, int member, const char *user, char **password, char *why,
				   size_t whylen)
{
	const struct service_config *cfg = svc->cfg;
	struct secret_target t = {.user = user};

	*password = NULL;
	if (cfg->auth != AUTH_REPOINT || cfg->member_password == NULL || svc->proto->login == NULL)
		return 0;
	if (member >= 0 && member < svc->nmembers) {
		t.host = svc->members[member]->hp.host;
		t.port = svc->members[member]->hp.port;
	}
	*password = svc->member_secret != NULL ? secret_get(svc->member_secret, &t, NULL, why, whylen)
					       : strdup(cfg->member_password);
	if (*password == NULL) {
		if (svc->member_secret == NULL)
			snprintf(why, whylen, "out of memory");
		return -1;
	}
	svc->host.counters.member_logins++;
	return 1;
}

static void service_member_login_refused(struct service *svc, int member, const char *why)
{
	svc->host.counters.member_login_failures++;
	log_warn(svc->subject, "%s refused repoint's login as %s (member_password %s): %s",
		 member >= 0 && member < svc->nmembers ? svc->members[member]->str : "a member",
		 svc->cfg->member_user != NULL    ? svc->cfg->member_user
		 : svc->proto->login != NULL ? "the client's user"
					     : "the default user",
		 svc->member_secret != NULL ? secret_kind_name(secret_kind(svc->member_secret)) : "literal", why);
	if (svc->member_secret != NULL)
		secret_login_failed(svc->member_secret);
}

static int host_member_login(struct session_host *h, int member, struct evbuffer *out, char *why, size_t whylen)
{
	return service_member_login(host_svc(h), member, out, why, whylen);
}

static int host_member_password(struct session_host *h, int member, const char *user, char **password, char *why,
				size_t whylen)
{
	return service_member_password(host_svc(h), member, user, password, why, whylen);
}

static bool host_pool_put(struct session_host *h, int member, const uint8_t *startup, size_t n, struct session_pooled *p)
{
	return service_pool_put(host_svc(h), member, startup, n, p);
}

static bool host_pool_params(struct session_host *h, int member, struct evbuffer *params)
{
	return service_pool_params(host_svc(h), member, params);
}

static bool host_pool_take(struct session_host *h, int member, const uint8_t *startup, size_t n,
			   struct session_pooled *out)
{
	return service_pool_take(host_svc(h), member, startup, n, out);
}

static void host_member_login_refused(struct session_host *h, int member, const char *why)
{
	service_member_login_refused(host_svc(h), member, why);
}

static enum listen_tls_mode host_listen_tls_mode(struct session_host *h)
{
	return service_listen_tls_mode(host_svc(h));
}

static struct shared *host_shared(struct session_host *h, int member, bool resp3, bool write)
{
	return service_shared(host_svc(h), member, resp3, write);
}

static const struct session *host_session_by_key(struct session_host *h, const struct session *except,
						 const uint8_t *key, size_t keylen)
{
	return service_session_by_key(host_svc(h), except, key, keylen);
}

static bool host_stopping(struct session_host *h)
{
	return service_stopping(host_svc(h));
}

static void host_upstream_failed(struct session_host *h, int member, const char *why)
{
	service_upstream_failed(host_svc(h), member, why);
}

static void host_confirm_role(struct session_host *h, int member)
{
	service_confirm_role(host_svc(h), member);
}

static void host_probe_soon(struct session_host *h, int member)
{
	service_probe_soon(host_svc(h), member);
}

static void host_opaque(struct session_host *h)
{
	service_opaque_session(host_svc(h));
}

static void host_opened(struct session_host *h, struct session *s)
{
	service_session_opened(host_svc(h), s);
}

static void host_hold(struct session_host *h, struct session *s)
{
	service_hold(host_svc(h), s);
}

static void host_unhold(struct session_host *h, struct session *s)
{
	service_unhold(host_svc(h), s);
}

static void host_attach(struct session_host *h, struct session *s, int member)
{
	service_attach(host_svc(h), s, member);
}

static void host_detach(struct session_host *h, struct session *s)
{
	service_detach(host_svc(h), s);
}

static void host_closed(struct session_host *h, struct session *s)
{
	service_session_closed(host_svc(h), s);
}

static void host_kick_held(struct session_host *h)
{
	service_kick_held(host_svc(h));
}

static void host_barrier(struct session_host *h, bool on)
{
	service_barrier(host_svc(h), on);
}

static bool host_barred(struct session_host *h)
{
	return service_barred(host_svc(h));
}

static const struct session_host_ops host_ops = {
	.pick = host_pick,
	.pick_slot = host_pick_slot,
	.slot = host_slot,
	.slot_moved = host_slot_moved,
	.slot_asked = host_slot_asked,
	.shard_starts = host_shard_starts,
	.member_addr = host_member_addr,
	.member_str = host_member_str,
	.member_tls_name = host_member_tls_name,
	.tls = host_tls,
	.listen_tls = host_listen_tls,
	.auth_users = host_auth_users,
	.member_login = host_member_login,
	.member_login_refused = host_member_login_refused,
	.member_password = host_member_password,
	.pool_put = host_pool_put,
	.pool_take = host_pool_take,
	.pool_params = host_pool_params,
	.listen_tls_mode = host_listen_tls_mode,
	.shared = host_shared,
	.session_by_key = host_session_by_key,
	.stopping = host_stopping,
	.upstream_failed = host_upstream_failed,
	.confirm_role = host_confirm_role,
	.probe_soon = host_probe_soon,
	.opaque = host_opaque,
	.opened = host_opened,
	.hold = host_hold,
	.unhold = host_unhold,
	.attach = host_attach,
	.detach = host_detach,
	.closed = host_closed,
	.kick_held = host_kick_held,
	.barrier = host_barrier,
	.barred = host_barred,
};

/* --- for the drill: which shard a load request goes to --- */

int service_slot_shard(const struct service *svc, int slot)
{
	return svc->cl != NULL ? cluster_slot_shard(svc->cl, slot) : -1;
}

bool service_is_cluster(const struct service *svc)
{
	return svc->cl != NULL;
}

int service_group_shard(const struct service *svc, const char *group)
{
	char str[300];

	for (int i = 0; svc->cl != NULL && group != NULL && i < svc->nseeds; i++) {
		if (strcmp(svc->seed_groups[i], group) != 0)
			continue;
		hostport_str(&svc->seeds[i], str, sizeof(str));
		for (int j = 0; j < svc->nmembers; j++)
			if (strcmp(svc->members[j]->str, str) == 0 && svc->cl->member_shard[j] >= 0)
				return svc->cl->member_shard[j];
	}
	return -1;
}
