/* session.c - a client paired with an upstream: hold, connect, pump, drain, refuse, close.
 *
 * Ownership and freeing: a session is freed by session_destroy() only. Every function that may free
 * the session returns true when it did, and its callers return at once without touching it again.
 * libevent keeps bufferevents alive while their own callbacks run, so freeing one from inside its
 * callback is safe; the session struct itself is never used after session_destroy().
 */
#include "net/session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"
#include "service.h"
#include "util.h"

/* Pause reading a side while the other side's output holds this much. */
#define SESSION_HIGH_WATER (256 * 1024)
/* What a held client may send before we stop reading it (its bytes wait in the kernel then). */
#define SESSION_HELD_INPUT_MAX (256 * 1024)
/* How long a refused client gets to read its error (or finish a negotiation step). */
#define SESSION_REFUSE_TIMEOUT_MS 5000
/* How long a closing session may take to flush what it owes the client. */
#define SESSION_FLUSH_TIMEOUT_MS 10000

/* The largest request kept for a retry on the new writer. */
#define SESSION_RETRY_MAX (16 * 1024)
/* Read-only refusals retried in a row before the error is passed on (the new writer refuses too). */
#define SESSION_RETRY_STREAK_MAX 3

static uint64_t session_next_id = 1;

static const char *const state_names[] = {
	[SESSION_HELD] = "held",
	[SESSION_CONNECTING] = "connecting",
	[SESSION_ACTIVE] = "active",
	[SESSION_DRAINING] = "draining",
	[SESSION_REFUSING] = "refusing",
	[SESSION_CLOSING] = "closing",
};

const char *session_state_name(enum session_state st)
{
	return state_names[st];
}

static const char *subject(const struct session *s, char *buf, size_t len)
{
	snprintf(buf, len, "%s client#%llu %s", service_name(s->svc), (unsigned long long)s->id, s->peer);
	return buf;
}

/* The one place a session changes state; transitions that matter to an operator are logged at
 * info, the everyday ones at debug. */
static void set_state(struct session *s, enum session_state st, const char *why)
{
	char subj[160];
	enum log_level lvl = LOG_DEBUG;

	if (st == SESSION_DRAINING || st == SESSION_REFUSING ||
	    (st == SESSION_HELD && s->state != SESSION_HELD) ||
	    (s->state == SESSION_HELD && st == SESSION_CONNECTING && s->member >= 0))
		lvl = LOG_INFO;
	if (log_enabled(lvl))
		log_msg(lvl, subject(s, subj, sizeof(subj)), "%s -> %s%s%s", state_names[s->state],
			state_names[st], why ? " " : "", why ? why : "");
	s->state = st;
}

static void arm_timer(struct session *s, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
}

void session_destroy(struct session *s)
{
	if (s->in_held)
		service_unhold(s->svc, s);
	if (s->member >= 0)
		service_detach(s->svc, s);
	if (s->upstream != NULL)
		bufferevent_free(s->upstream);
	if (s->client != NULL)
		bufferevent_free(s->client);
	event_free(s->timer);
	service_session_closed(s->svc, s);
	free(s->retry);
	free(s);
}

static void drop_upstream(struct session *s)
{
	if (s->upstream != NULL) {
		bufferevent_free(s->upstream);
		s->upstream = NULL;
	}
	if (s->member >= 0)
		service_detach(s->svc, s);
}

/* Close the session once the client has read what it is owed. Returns true when freed now. */
static bool close_after_flush(struct session *s, const char *why)
{
	drop_upstream(s);
	if (s->in_held)
		service_unhold(s->svc, s);
	if (s->state != SESSION_CLOSING)
		set_state(s, SESSION_CLOSING, why);
	if (evbuffer_get_length(bufferevent_get_output(s->client)) == 0) {
		session_destroy(s);
		return true;
	}
	/* Stop reading; the write callback frees the session once the output is flushed. */
	bufferevent_disable(s->client, EV_READ);
	bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
	evtimer_del(s->timer);
	arm_timer(s, SESSION_FLUSH_TIMEOUT_MS);
	return false;
}

static bool refuse(struct session *s, enum session_refusal why)
{
	const struct proto_ops *proto = service_proto(s->svc);
	enum proto_refuse_step step;
	char msg[256];

	if (why == REFUSE_SHUTDOWN)
		snprintf(msg, sizeof(msg), "repoint: service \"%s\" is shutting down", service_name(s->svc));
	else
		snprintf(msg, sizeof(msg), "repoint: no writer for service \"%s\" within %lld ms",
			 service_name(s->svc), (long long)service_config(s->svc)->hold_timeout_ms);
	s->refusal = why;

	drop_upstream(s);
	if (s->in_held)
		service_unhold(s->svc, s);
	if (s->state != SESSION_REFUSING)
		set_state(s, SESSION_REFUSING, msg);
	evtimer_del(s->timer);
	step = proto->refuse(bufferevent_get_input(s->client), bufferevent_get_output(s->client), msg);
	if (step == PROTO_REFUSE_DONE)
		return close_after_flush(s, "refused");
	/* A negotiation step (Postgres SSLRequest -> 'N'): wait for the client's next packet. */
	bufferevent_setwatermark(s->client, EV_READ, 0, SESSION_HELD_INPUT_MAX);
	bufferevent_enable(s->client, EV_READ);
	arm_timer(s, SESSION_REFUSE_TIMEOUT_MS);
	return false;
}

static bool hold_timeout_refuse(struct session *s)
{
	service_counters(s->svc)->hold_timeouts++;
	return refuse(s, REFUSE_HOLD_TIMEOUT);
}

static bool route(struct session *s);

static bool hold(struct session *s, const char *why)
{
	int64_t left = s->hold_deadline_ms - now_ms();

	if (service_stopping(s->svc))
		return refuse(s, REFUSE_SHUTDOWN);
	if (left <= 0)
		return hold_timeout_refuse(s);
	if (s->state != SESSION_HELD)
		set_state(s, SESSION_HELD, why);
	if (!s->in_held) {
		service_hold(s->svc, s);
		service_counters(s->svc)->held_total++;
	}
	evtimer_del(s->timer);
	arm_timer(s, left);
	return false;
}

static void retry_append(struct session *s, const uint8_t *p, size_t n)
{
	if (!s->retry_valid)
		return;
	if ((size_t)s->retry_len + n > SESSION_RETRY_MAX) {
		s->retry_valid = false;
		return;
	}
	if (s->retry_len + n > s->retry_cap) {
		uint32_t cap = s->retry_cap ? s->retry_cap : 64;
		uint8_t *r;
		while (cap < s->retry_len + n)
			cap *= 2;
		r = realloc(s->retry, cap);
		if (r == NULL) {
			s->retry_valid = false;
			return;
		}
		s->retry = r;
		s->retry_cap = cap;
	}
	memcpy(s->retry + s->retry_len, p, n);
	s->retry_len += (uint32_t)n;
}

enum pump_result {
	PUMP_OK,
	PUMP_READONLY,   /* moved, and the reply said the server is read-only: tell the service */
	PUMP_RETRY,      /* a read-only refusal of the one request in flight was kept back: migrate */
};

/* Move what `src` received into `dst`'s output, letting the protocol tracker see every byte. */
static enum pump_result pump(struct session *s, enum proto_dir dir)
{
	const struct proto_ops *proto = service_proto(s->svc);
	struct bufferevent *src = dir == PROTO_CLIENT_TO_SERVER ? s->client : s->upstream;
	struct bufferevent *dst = dir == PROTO_CLIENT_TO_SERVER ? s->upstream : s->client;
	struct evbuffer *in = bufferevent_get_input(src);
	struct evbuffer *out = bufferevent_get_output(dst);
	struct evbuffer_iovec vec[16];
	struct evbuffer_ptr pos;
	size_t len = evbuffer_get_length(in), seen = 0;
	struct service_counters *c = service_counters(s->svc);
	enum pump_result res = PUMP_OK;
	bool capture = false;

	if (len == 0)
		return PUMP_OK;
	if (dir == PROTO_CLIENT_TO_SERVER && proto->retryable != NULL) {
		/* Keep every byte from an idle point on, while it stays one small request. */
		if (proto->is_idle(&s->ps)) {
			s->retry_len = 0;
			s->retry_valid = true;
		}
		capture = s->retry_valid;
	}
	if (dir == PROTO_SERVER_TO_CLIENT && proto->readonly_reply != NULL) {
		int n = evbuffer_peek(in, -1, NULL, vec, 1);
		size_t ro = n > 0 ? proto->readonly_reply(vec[0].iov_base, vec[0].iov_len) : 0;
		if (ro == 0) {
			s->retry_streak = 0;
		} else if (ro == len && proto->retryable != NULL && s->retry_valid && s->retry_len > 0 &&
			   proto->retryable(&s->ps) && s->retry_streak < SESSION_RETRY_STREAK_MAX) {
			/* The server refused the only request in flight without running it: the client
			 * need not hear of it. The request goes to the new writer instead. */
			evbuffer_drain(in, len);
			s->retry_streak++;
			c->retried++;
			return PUMP_RETRY;
		} else {
			res = PUMP_READONLY;
		}
	}
	evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
	while (seen < len) {
		int n = evbuffer_peek(in, (ev_ssize_t)(len - seen), &pos, vec, (int)ARRAY_LEN(vec));
		int used = n < (int)ARRAY_LEN(vec) ? n : (int)ARRAY_LEN(vec);
		size_t step = 0;

		if (n <= 0)
			break;
		for (int i = 0; i < used; i++) {
			size_t l = vec[i].iov_len;
			if (step + l > len - seen)
				l = len - seen - step;
			proto->feed(&s->ps, dir, vec[i].iov_base, l);
			if (capture)
				retry_append(s, vec[i].iov_base, l);
			step += l;
		}
		seen += step;
		if (seen < len && evbuffer_ptr_set(in, &pos, step, EVBUFFER_PTR_ADD) < 0)
			break;
	}
	if (dir == PROTO_CLIENT_TO_SERVER)
		c->bytes_client_to_server += len;
	else
		c->bytes_server_to_client += len;
	evbuffer_add_buffer(out, in);

	/* Backpressure: stop reading this side until the other side has written most of it. */
	if (evbuffer_get_length(out) >= SESSION_HIGH_WATER) {
		bufferevent_disable(src, EV_READ);
		bufferevent_setwatermark(dst, EV_WRITE, SESSION_HIGH_WATER / 2, 0);
	}
	return res;
}

/* Move an idle (or retryable) session to whatever member the service picks now, without the
 * client noticing: a fresh connection replaces the old one, and with `replay` the request the old
 * server refused is sent first. Returns true when the session was freed. */
static bool migrate(struct session *s, const char *why, bool replay)
{
	struct service_counters *c = service_counters(s->svc);
	char reason[160];

	c->migrated++;
	s->migrations++;
	snprintf(reason, sizeof(reason), "(moving: %s)", why);
	drop_upstream(s);
	service_proto(s->svc)->init(&s->ps);
	s->replay = replay && s->retry_valid && s->retry_len > 0;
	if (!s->replay)
		s->retry_len = 0;
	s->retry_valid = false;
	s->upstream_eof = false;
	s->hold_deadline_ms = now_ms() + service_config(s->svc)->hold_timeout_ms;
	bufferevent_setwatermark(s->client, EV_READ, 0, SESSION_HELD_INPUT_MAX);
	return hold(s, reason);
}

static bool can_migrate(const struct session *s)
{
	const struct proto_ops *proto = service_proto(s->svc);

	return proto->can_migrate != NULL && service_config(s->svc)->route == ROUTE_WRITER &&
	       !service_stopping(s->svc) && proto->can_migrate(&s->ps);
}

/* After a migration: connect now if the service already knows where to. */
static void route_if_ready(struct session *s)
{
	if (s->state == SESSION_HELD && service_pick(s->svc) >= 0)
		route(s);
}

static bool drain_now(struct session *s, bool idle)
{
	struct service_counters *c = service_counters(s->svc);

	if (idle && can_migrate(s)) {
		/* Routed from the service's deferred release, not from here: drains run inside loops over
		 * the service's sessions, which a nested connect failure must not disturb. */
		if (!migrate(s, "its server is no longer the writer", false))
			service_kick_held(s->svc);
		return false;
	}
	c->drained++;
	if (idle)
		c->drained_idle++;
	else
		c->drained_timeout++;
	return close_after_flush(s, idle ? "drained at an idle point" : "drained");
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	const struct proto_ops *proto = service_proto(s->svc);

	switch (s->state) {
	case SESSION_HELD:
	case SESSION_CONNECTING:
		/* Kept in the input buffer until an upstream is connected. */
		return;
	case SESSION_DRAINING:
		/* A new request on a session that is idle and draining: close it before the request
		 * reaches the old writer (the client sees a closed connection, not a failed write). */
		if (proto->is_idle(&s->ps)) {
			drain_now(s, true);
			return;
		}
		(void)pump(s, PROTO_CLIENT_TO_SERVER);
		return;
	case SESSION_ACTIVE:
		(void)pump(s, PROTO_CLIENT_TO_SERVER);
		return;
	case SESSION_REFUSING:
		refuse(s, s->refusal);
		return;
	case SESSION_CLOSING:
		evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
		return;
	}
}

static void upstream_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct service *svc = s->svc;
	int member = s->member;
	bool verdict = service_proto(svc)->readonly_is_verdict;

	(void)bev;
	switch (pump(s, PROTO_SERVER_TO_CLIENT)) {
	case PUMP_RETRY:
		/* Detach first, then tell the service (which may drain the member's other sessions), then
		 * go wherever the service says. */
		if (migrate(s, "the server refused a write as read-only", true))
			return;
		service_readonly_seen(svc, member, verdict);
		route_if_ready(s);
		return;
	case PUMP_READONLY:
		if (s->state == SESSION_DRAINING && service_proto(svc)->is_idle(&s->ps) && drain_now(s, true))
			s = NULL;
		/* Last: telling the service may drain (and free) this very session. */
		service_readonly_seen(svc, member, verdict);
		return;
	case PUMP_OK:
		break;
	}
	if (s->state == SESSION_DRAINING && service_proto(svc)->is_idle(&s->ps))
		drain_now(s, true);
}

/* The client's output drained below the low watermark. */
static void client_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (s->state == SESSION_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_destroy(s);
		return;
	}
	if (s->upstream != NULL && !(bufferevent_get_enabled(s->upstream) & EV_READ)) {
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		bufferevent_enable(s->upstream, EV_READ);
	}
}

static void upstream_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (s->client_eof) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_destroy(s);
		return;
	}
	if (!(bufferevent_get_enabled(s->client) & EV_READ) && s->state != SESSION_CLOSING) {
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		bufferevent_enable(s->client, EV_READ);
	}
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	char subj[160];

	(void)bev;
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (what & BEV_EVENT_ERROR)
		log_debug(subject(s, subj, sizeof(subj)), "client error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	if ((s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && s->upstream != NULL &&
	    evbuffer_get_length(bufferevent_get_output(s->upstream)) > 0 && !(what & BEV_EVENT_ERROR)) {
		/* Deliver what the client sent before it left (a Terminate, a QUIT), then close. */
		s->client_eof = true;
		bufferevent_disable(s->client, EV_READ);
		bufferevent_disable(s->upstream, EV_READ);
		bufferevent_setwatermark(s->upstream, EV_WRITE, 0, 0);
		/* A server that never reads must not keep the session forever. */
		evtimer_del(s->timer);
		arm_timer(s, SESSION_FLUSH_TIMEOUT_MS);
		return;
	}
	session_destroy(s);
}

static void on_connected(struct session *s)
{
	char what[128];
	evutil_socket_t fd = bufferevent_getfd(s->upstream);
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evtimer_del(s->timer);
	if (s->in_held)
		service_unhold(s->svc, s);
	snprintf(what, sizeof(what), "(%s)", service_member_str(s->svc, s->member));
	set_state(s, SESSION_ACTIVE, what);
	bufferevent_enable(s->upstream, EV_READ | EV_WRITE);
	bufferevent_setwatermark(s->client, EV_READ, 0, 0);
	bufferevent_enable(s->client, EV_READ);
	if (s->replay) {
		/* The request the old writer refused goes first; it is again the one in flight. */
		service_proto(s->svc)->feed(&s->ps, PROTO_CLIENT_TO_SERVER, s->retry, s->retry_len);
		bufferevent_write(s->upstream, s->retry, s->retry_len);
		s->replay = false;
		s->retry_valid = true;
	}
	(void)pump(s, PROTO_CLIENT_TO_SERVER);
}

static bool connect_failed(struct session *s, const char *why)
{
	int member = s->member;
	char reason[200];

	snprintf(reason, sizeof(reason), "connect to %s: %s", service_member_str(s->svc, member), why);
	service_counters(s->svc)->upstream_connect_failures++;
	drop_upstream(s);
	/* Nothing was sent upstream yet (we forward only once connected): the client's bytes are all
	 * still here, so the session can wait for a writer again as if it had just arrived. */
	if (hold(s, reason))
		return true;
	service_upstream_failed(s->svc, member, why);
	/* The failure may have moved the writer: route again if the service says so. */
	if (s->state == SESSION_HELD && service_pick(s->svc) >= 0)
		return route(s);
	return false;
}

static void upstream_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		on_connected(s);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (s->state == SESSION_CONNECTING) {
		connect_failed(s, (what & BEV_EVENT_ERROR) ? evutil_socket_error_to_string(err)
							     : "closed during connect");
		return;
	}
	/* The server closed (or reset) a session in use. Ask for a probe: a crashed writer shows
	 * itself here first. An idle session that can move does (the client notices nothing);
	 * otherwise the client gets what was already read, then the close. */
	if (s->state == SESSION_ACTIVE && s->member >= 0) {
		int member = s->member;
		struct service *svc = s->svc;
		if (can_migrate(s) && evbuffer_get_length(bufferevent_get_output(s->client)) == 0) {
			if (migrate(s, (what & BEV_EVENT_ERROR) ? "its server reset the connection"
								 : "its server closed the connection",
				    false))
				return;
			service_probe_soon(svc, member);
			route_if_ready(s);
			return;
		}
		service_probe_soon(svc, member);
	}
	s->upstream_eof = true;
	close_after_flush(s, (what & BEV_EVENT_ERROR) ? "upstream error" : "upstream closed");
}

static bool connect_to(struct session *s, int member)
{
	socklen_t salen;
	const struct sockaddr *sa = service_member_addr(s->svc, member, &salen);
	struct event_base *base = service_base(s->svc);
	char what[128];

	s->upstream = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (s->upstream == NULL)
		return hold(s, "(out of memory)");
	bufferevent_setcb(s->upstream, upstream_read_cb, upstream_write_cb, upstream_event_cb, s);
	service_attach(s->svc, s, member);
	snprintf(what, sizeof(what), "(%s)", service_member_str(s->svc, member));
	set_state(s, SESSION_CONNECTING, what);
	evtimer_del(s->timer);
	arm_timer(s, service_config(s->svc)->connect_timeout_ms);
	if (bufferevent_socket_connect(s->upstream, sa, (int)salen) < 0)
		return connect_failed(s, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	return false;
}

static bool route(struct session *s)
{
	int member = service_pick(s->svc);

	if (member < 0)
		return hold(s, "(waiting for a writer)");
	return connect_to(s, member);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	char msg[64];

	(void)fd;
	(void)what;
	switch (s->state) {
	case SESSION_HELD:
		hold_timeout_refuse(s);
		return;
	case SESSION_CONNECTING:
		snprintf(msg, sizeof(msg), "timeout after %lld ms",
			 (long long)service_config(s->svc)->connect_timeout_ms);
		connect_failed(s, msg);
		return;
	case SESSION_DRAINING:
		drain_now(s, false);
		return;
	case SESSION_ACTIVE:
		if (s->client_eof)
			session_destroy(s);
		return;
	case SESSION_REFUSING:
	case SESSION_CLOSING:
		session_destroy(s);
		return;
	}
}

struct session *session_accept(struct service *svc, int fd, const struct sockaddr *peer)
{
	struct event_base *base = service_base(svc);
	struct session *s = calloc(1, sizeof(*s));
	int one = 1;

	if (s == NULL) {
		evutil_closesocket(fd);
		return NULL;
	}
	s->svc = svc;
	s->id = session_next_id++;
	s->member = -1;
	s->state = SESSION_HELD;
	s->accepted_ms = now_ms();
	s->hold_deadline_ms = s->accepted_ms + service_config(svc)->hold_timeout_ms;
	service_proto(svc)->init(&s->ps);
	if (peer->sa_family == AF_INET || peer->sa_family == AF_INET6) {
		struct hostport hp;
		char host[INET6_ADDRSTRLEN];
		const void *a = peer->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)peer)->sin_addr
							   : (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
		evutil_inet_ntop(peer->sa_family, a, host, sizeof(host));
		snprintf(hp.host, sizeof(hp.host), "%s", host);
		hp.port = ntohs(peer->sa_family == AF_INET ? ((const struct sockaddr_in *)peer)->sin_port
							  : ((const struct sockaddr_in6 *)peer)->sin6_port);
		hostport_str(&hp, s->peer, sizeof(s->peer));
	} else {
		snprintf(s->peer, sizeof(s->peer), "unix");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->timer = evtimer_new(base, timer_cb, s);
	if (s->client == NULL || s->timer == NULL) {
		if (s->client != NULL)
			bufferevent_free(s->client);
		else
			evutil_closesocket(fd);
		if (s->timer != NULL)
			event_free(s->timer);
		free(s);
		return NULL;
	}
	bufferevent_setcb(s->client, client_read_cb, client_write_cb, client_event_cb, s);
	/* While held, read at most this much; the rest waits in the kernel (backpressure). */
	bufferevent_setwatermark(s->client, EV_READ, 0, SESSION_HELD_INPUT_MAX);
	bufferevent_enable(s->client, EV_READ | EV_WRITE);
	service_session_opened(svc, s);
	service_counters(svc)->accepted++;
	if (route(s))
		return NULL;
	return s;
}

void session_release(struct session *s)
{
	if (s->state == SESSION_HELD)
		route(s);
}

void session_drain(struct session *s, enum drain_mode mode, int64_t timeout_ms)
{
	switch (s->state) {
	case SESSION_CONNECTING:
		/* Nothing was forwarded yet: wait for the next writer instead. */
		drop_upstream(s);
		hold(s, "(member lost while connecting)");
		return;
	case SESSION_ACTIVE:
		if (mode == DRAIN_IMMEDIATE) {
			drain_now(s, service_proto(s->svc)->is_idle(&s->ps));
			return;
		}
		if (service_proto(s->svc)->is_idle(&s->ps)) {
			drain_now(s, true);
			return;
		}
		set_state(s, SESSION_DRAINING, "(waiting for an idle point)");
		evtimer_del(s->timer);
		arm_timer(s, timeout_ms);
		return;
	case SESSION_DRAINING:
		if (mode == DRAIN_IMMEDIATE)
			drain_now(s, false);
		return;
	case SESSION_HELD:
	case SESSION_REFUSING:
	case SESSION_CLOSING:
		return;
	}
}

void session_refuse(struct session *s, enum session_refusal why)
{
	if (s->state == SESSION_HELD || s->state == SESSION_CONNECTING)
		refuse(s, why);
}
