/* session.c - a client paired with an upstream: hold, connect, pump, drain, refuse, close.
 *
 * The data path is plain events rather than bufferevents: libevent 2.1's bufferevents read at
 * most 4 KiB per wake-up (after an FIONREAD ioctl each time) and add and remove write interest
 * around every write -- about ten syscalls for one small request, measured with scripts/bench.
 * Here a readable socket gets one recv() of up to 64 KiB into a buffer shared by all sessions, the
 * protocol tracker sees the bytes there, and they are sent to the other socket at once; only what
 * the kernel does not take is queued in that side's evbuffer, with write interest until it drains:
 *
 *   client ──recv──▶ [io buffer] ──send──▶ server     (the rest: upstream.out, EV_WRITE)
 *   server ──recv──▶ [io buffer] ──send──▶ client     (the rest: client.out, EV_WRITE)
 *
 * Ownership and freeing: a session is freed by session_destroy() only. Every function that may free
 * the session returns true when it did, and its callers return at once without touching it again.
 */
#include "net/session.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"
#include "net/transport.h"
#include "net/shared.h"
#include "net/uring.h"
#include "proto/keyspec.h"
#include "proto/slots.h"
#include "util.h"

/* One read takes at most this much. */
#define SESSION_READ_MAX (64 * 1024)
/* Stop reading a side while the other side's output holds this much; resume below half. */
#define SESSION_HIGH_WATER (256 * 1024)
/* A payload at least this large goes by splice(2) where it can (splice_payload); a session that had
 * one reads at most this much at a time that way. Below it a copy costs less than the pipe's two
 * calls (HAProxy made to splice small Redis replies lost 20% of its rate, measured). */
#define SESSION_SPLICE_MIN (16 * 1024)
/* What a held client may send before we stop reading it (its bytes wait in the kernel then). */
#define SESSION_HELD_INPUT_MAX (256 * 1024)
/* How long a refused client gets to read its error (or finish a negotiation step). */
#define SESSION_REFUSE_TIMEOUT_MS 5000
/* How long a closing session may take to flush what it owes the client. */
#define SESSION_FLUSH_TIMEOUT_MS 10000
/* ... and then to close its side after its last words (see linger()). */
#define SESSION_LINGER_MS 1000

/* The largest request kept for a retry on the new writer. */
#define SESSION_RETRY_MAX (16 * 1024)
/* Read-only refusals retried in a row before the error is passed on (the new writer refuses too). */
#define SESSION_RETRY_STREAK_MAX 3
/* Session starts refused with the protocol's documented "not now" (Postgres 57P01/57P03, MySQL
 * 1053) replayed before the refusal is passed on; hold_timeout bounds them in time too. */
#define SESSION_RESTARTS_MAX 8
/* After a member refused a session's start, it is not tried again for this long, doubling with
 * each refusal up to SESSION_AVOID_MAX_MS (its probe may still say writer: a server shutting down
 * keeps the sessions it has, its probe's among them). */
#define SESSION_AVOID_MS 50
/* A request refused "for a moment" (proto->later_reply) is sent again after this long. */
#define SESSION_LATER_MS 20
#define SESSION_AVOID_MAX_MS 2000
/* How long a session waits for its member's own word on its role (a probe's timeout and more). */
#define SESSION_CONFIRM_SLACK_MS 500
/* A refused login (auth = repoint, one-command logins) is tried again on that member after this. */
#define SESSION_LOGIN_RETRY_MS 1000
/* A session busy when it is due to log in again is looked at again this often... */
#define SESSION_RELOGIN_BUSY_MS 1000
/* ... and one whose new login failed (the old one holds meanwhile) after this. */
#define SESSION_RELOGIN_FAILED_MS 60000

enum session_confirm { CONFIRM_NONE, CONFIRM_READONLY, CONFIRM_CLOSE };

/* A server-first TLS upgrade repoint conducts (proto->upgrade: MySQL), step by step. */
enum med_step {
	MED_NONE,
	MED_GREETING,    /* connecting: the member's greeting is read whole */
	MED_HELLO,       /* the client has the greeting: its TLS request or hello is awaited */
	MED_MEMBER_TLS,  /* the hello is in hand: repoint's TLS handshake with the member */
};

static void login_forget(struct session *s);
/* cluster = on: a command over keys of several slots, sent as one command per key: the replies to
 * come that are theirs (`left`), gathered in `acc` until the last, then merged into one. */
struct session_split {
	enum resp_split kind;
	uint32_t count, left;
	struct evbuffer *acc;
	struct proto_state ps;  /* where the replies end */
	/* Or a transaction sent from MULTI to EXEC in one piece (no WATCH): its replies are held until
	 * EXEC's says whether it ran; aborted while the cluster was moving (nothing ran), it is sent
	 * again -- `tx` its bytes, `tx_prefix` when its MULTI was answered by repoint. */
	bool is_tx, tx_prefix;
	struct evbuffer *tx;
	/* Or a data-set-wide command sent to every shard: the copies at the front of client_in go to
	 * the shards whose first slots are fan[fan_next..fan_n), in turn. SCAN: one copy, to the
	 * shard its cursor names (scan_slot), the next one's start scan_next (-1: none). */
	int *fan;
	uint32_t fan_n, fan_next;
	bool scan;
	int scan_slot, scan_next;
};

static void split_free(struct session *s);
static enum resp_share share_scan(struct session *s, const uint8_t *p, size_t n, size_t *len, bool *write);
static void own_drop(struct session *s);
static int tx_first_slot(struct session *s, const uint8_t *p, size_t n);

/* multiplex: the largest command (and average reply) that may share a connection (a partial
 * command waits in client_in until complete), and the commands one session may have in flight
 * before it is not read. Larger ones get a connection of their own: one stream carrying everyone's
 * large values is slower than many (100 KB SETs: 3.0k/s shared, 4.1k/s on own connections; the
 * server reads one connection at most once per event loop pass), and large replies on it hold up
 * everyone else's (pipelined 100 KB GETs: p99 1.9x HAProxy's shared, 1.1x on own connections). */
#define SESSION_SHARE_MAX (32 * 1024)
#define SESSION_SHARED_INFLIGHT_MAX 4096
/* ... and what a shared session may have waiting in client_in before it is not read. */
#define SESSION_SHARED_INPUT_MAX (SESSION_SHARE_MAX + SESSION_READ_MAX)
/* cluster = on: every command travels on its shard primary's shared connection (there is no one
 * server to give a session of its own), so the bound is that of a command's size. */
#define SESSION_CLUSTER_SHARE_MAX (4 * 1024 * 1024)
/* resp_cluster_answer's "which member": answer here, not on a server. */
#define CLUSTER_LOCAL (-2)

static size_t share_max(const struct session *s)
{
	return s->host->cluster ? SESSION_CLUSTER_SHARE_MAX : SESSION_SHARE_MAX;
}

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
	snprintf(buf, len, "%s client#%llu %s", s->host->name, (unsigned long long)s->id, s->peer);
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
	    (s->state == SESSION_HELD && st == SESSION_CONNECTING && s->in_held))
		lvl = LOG_INFO;
	if (log_enabled(lvl)) {
		struct log_fields f = {.event = state_names[st], .reason = why, .duration_ms = -1,
				       .member = s->member >= 0 ? s->host->ops->member_str(s->host, s->member) : NULL};
		log_event(lvl, subject(s, subj, sizeof(subj)), &f, "%s -> %s%s%s", state_names[s->state],
			  state_names[st], why ? " " : "", why ? why : "");
	}
	s->state = st;
}

static void arm_timer(struct session *s, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_del(s->timer);
	evtimer_add(s->timer, &tv);
}

/* --- sides: a socket, its two events and the bytes owed to it --- */

static void side_reading(struct session_side *d, bool on)
{
	if (d->rev == NULL || d->reading == on)
		return;
	if (d->conn.ops->watch != NULL) {
		d->conn.ops->watch(&d->conn, EV_READ, on);  /* completions: the transport says when */
	} else if (on) {
		event_add(d->rev, NULL);
		/* TLS: what is decrypted already raises no socket event. */
		if (d->conn.ops->pending(&d->conn))
			event_active(d->rev, EV_READ, 1);
	} else {
		event_del(d->rev);
	}
	d->reading = on;
}

static void side_writing(struct session_side *d, bool on)
{
	if (d->wev == NULL || d->writing == on)
		return;
	if (d->conn.ops->watch != NULL)
		d->conn.ops->watch(&d->conn, EV_WRITE, on);
	else if (on)
		event_add(d->wev, NULL);
	else
		event_del(d->wev);
	d->writing = on;
}

static size_t side_owed(const struct session_side *d);

static bool side_open(struct session_side *d, struct event_base *base, evutil_socket_t fd, event_callback_fn rcb,
		      event_callback_fn wcb, void *arg)
{
	net_conn_init(&d->conn, fd);
	d->rev = event_new(base, fd, EV_READ | EV_PERSIST, rcb, arg);
	d->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, wcb, arg);
	if (d->out == NULL)
		d->out = evbuffer_new();
	d->reading = d->writing = d->paused = false;
	return d->rev != NULL && d->wev != NULL && d->out != NULL;
}

static void side_close(struct session_side *d)
{
	if (d->rev != NULL)
		event_free(d->rev);
	if (d->wev != NULL)
		event_free(d->wev);
	net_pipe_put(&d->pipe);  /* what it still holds is lost with the socket */
	net_conn_close(&d->conn);
	d->rev = d->wev = NULL;
	d->reading = d->writing = d->paused = false;
	if (d->out != NULL)
		evbuffer_drain(d->out, evbuffer_get_length(d->out));
}

/* The socket leaves the side (its events go, the connection does not close): *out has it. */
static void side_release(struct session_side *d, struct net_conn *out)
{
	*out = d->conn;
	net_conn_init(&d->conn, -1);
	side_close(d);
}

/* Write what `d` is owed now; wait for writability only for what the kernel did not take.
 * False on a write error (the socket is dead). */
static bool side_flush(struct session_side *d)
{
	if (d->handshaking)
		return true;  /* once the client's TLS handshake is done (client_tls_step) */
	if (d->pipe.len > 0) {
		/* The pipe's bytes come first: `out` only holds what came after them. */
		if (d->conn.ops->splice_out(&d->conn, &d->pipe, d->pipe.len) < 0)
			return false;
		if (d->pipe.len > 0) {
			side_writing(d, true);
			return true;
		}
		net_pipe_put(&d->pipe);
	}
	if (d->conn.ops->flush(&d->conn, d->out, NULL) != 0)
		return false;
	side_writing(d, side_owed(d) > 0);
	return true;
}

/* Bytes owed to `d` and not yet taken by its socket (completions: nor by the kernel). */
static size_t side_owed(const struct session_side *d)
{
	return evbuffer_get_length(d->out) + d->pipe.len + (d->conn.ops->queued != NULL ? d->conn.ops->queued(&d->conn) : 0);
}

/* New events for the side's socket (`fd` -1: none, the completion ring makes them active), with the
 * old ones' callbacks; false without memory. */
static bool side_events_new(struct session_side *d, struct event_base *base, evutil_socket_t fd, struct event **rev,
			    struct event **wev)
{
	*rev = event_new(base, fd, (fd < 0 ? 0 : EV_READ) | EV_PERSIST, event_get_callback(d->rev),
			 event_get_callback_arg(d->rev));
	*wev = event_new(base, fd, (fd < 0 ? 0 : EV_WRITE) | EV_PERSIST, event_get_callback(d->wev),
			 event_get_callback_arg(d->wev));
	if (*rev != NULL && *wev != NULL)
		return true;
	if (*rev != NULL)
		event_free(*rev);
	if (*wev != NULL)
		event_free(*wev);
	return false;
}

/* The side's transport moved: its new events take over, with the interest it had. */
static void side_events_swap(struct session_side *d, struct event *rev, struct event *wev, bool reading, bool writing)
{
	event_free(d->rev);  /* (out of the loop with it) */
	event_free(d->wev);
	d->rev = rev;
	d->wev = wev;
	d->reading = d->writing = false;
	side_reading(d, reading);
	side_writing(d, writing);
}

/* io = uring: a plain side moves onto the completion ring. Stays on readiness when the ring cannot
 * be had. */
static void side_uring(struct session *s, struct session_side *d)
{
	struct event *rev, *wev;

	if (s->host->cfg->io != IO_URING || d->conn.ops != &net_plain_ops || d->pipe.len > 0 || d->rev == NULL ||
	    !side_events_new(d, s->host->base, -1, &rev, &wev))
		return;
	if (!net_conn_uring(&d->conn, s->host->base, rev, wev)) {
		event_free(rev);
		event_free(wev);
		return;
	}
	side_events_swap(d, rev, wev, d->reading, d->writing);
}

/* ... and back to readiness (a connection kept for later is watched by epoll): false when it holds
 * bytes either way (or without memory): it stays on the ring. */
static bool side_unring(struct session *s, struct session_side *d)
{
	struct event *rev, *wev;
	bool reading = d->reading, writing = d->writing;

	if (d->conn.u == NULL)
		return true;
	if (!side_events_new(d, s->host->base, d->conn.fd, &rev, &wev))
		return false;
	side_reading(d, false);  /* (the ring's interest ends with it) */
	side_writing(d, false);
	if (!net_conn_unring(&d->conn)) {
		event_free(rev);
		event_free(wev);
		side_reading(d, reading);
		side_writing(d, writing);
		return false;
	}
	side_events_swap(d, rev, wev, reading, writing);
	return true;
}

/* Reads land here first: the loop is single-threaded and a read is handled to the end before the
 * next, so one buffer serves every session. Most reads are then written to the other socket at
 * once, straight from here; only what the kernel does not take is copied into an evbuffer. */
static uint8_t session_io[SESSION_READ_MAX];
/* What of session_io a transaction's replay compares (proto->tx_strip). */
static uint8_t strip_io[SESSION_READ_MAX + 8];

/* One read into session_io: up to SESSION_SPLICE_MIN from a side that sent large payloads (it stops
 * where the next may begin, so that most of it is spliced rather than copied), else as much as
 * session_io holds. Returns the byte count, 0 at EOF, -1 on error, -2 when nothing was there. What
 * the transport holds beyond (TLS) is read at the next turn. */
static ssize_t read_once(struct session_side *d)
{
	ssize_t r = d->conn.ops->read(&d->conn, session_io, d->big ? SESSION_SPLICE_MIN : sizeof(session_io));

	if (r > 0 && d->conn.ssl != NULL && d->reading && d->conn.ops->pending(&d->conn))
		event_active(d->rev, EV_READ, 1);
	return r;
}

/* Send p[0..n) to `d`: straight to the socket when nothing is queued before it, else (and for what
 * the kernel does not take) into d->out with write interest. False on a write error. */
static bool side_send(struct session_side *d, const uint8_t *p, size_t n)
{
	ssize_t w = 0;

	if (d->handshaking) {
		evbuffer_add(d->out, p, n);
		return true;
	}
	if (evbuffer_get_length(d->out) == 0 && d->pipe.len == 0) {
		w = d->conn.ops->write(&d->conn, p, n);
		if (w < 0)
			return false;
		if ((size_t)w == n)
			return true;
	}
	evbuffer_add(d->out, p + w, n - (size_t)w);
	side_writing(d, true);
	return true;
}

/* Bytes of the client's for its member: what they name by an id the member gave otherwise (MySQL's
 * statements prepared again after a move, proto_login_ops.map_request) is rewritten on the way, in
 * p itself (the client's read) or, kept = true, in a copy (a request the session keeps to send
 * again). queue: into upstream.out only (flushed by the caller). False on a write error. */
static bool to_member(struct session *s, const uint8_t *p, size_t n, bool kept, bool queue)
{
	const struct proto_login_ops *lo = s->login != NULL ? s->host->proto->login : NULL;
	uint8_t copy[512], head[4];
	size_t h, m;

	if (lo == NULL || lo->map_request == NULL) {
		if (queue)
			return evbuffer_add(s->upstream.out, p, n) == 0;
		return n == 0 || side_send(&s->upstream, p, n);
	}
	while (n > 0) {
		size_t k = kept && n > sizeof(copy) ? sizeof(copy) : n;
		uint8_t *w = kept ? memcpy(copy, p, k) : (uint8_t *)p;
		m = lo->map_request(s->login, w, k, head, &h);
		if (queue) {
			if (evbuffer_add(s->upstream.out, head, h) < 0 || evbuffer_add(s->upstream.out, w, m) < 0)
				return false;
		} else if ((h > 0 && !side_send(&s->upstream, head, h)) || (m > 0 && !side_send(&s->upstream, w, m))) {
			return false;
		}
		p += k;
		n -= k;
	}
	return true;
}

/* The member's bytes p[0..n) (writable) fed to the tracker on their way to the client, what they name
 * by the member's ids made the client's (proto_login_ops.map_answer). Returns what of p to send, after
 * head[0..*h). */
static size_t answer_feed(struct session *s, uint8_t *p, size_t n, uint8_t *head, size_t *h)
{
	const struct proto_login_ops *lo = s->login != NULL ? s->host->proto->login : NULL;

	if (lo != NULL && lo->map_answer != NULL)
		return lo->map_answer(s->login, &s->ps, p, n, head, h);
	*h = 0;
	s->host->proto->feed(&s->ps, PROTO_SERVER_TO_CLIENT, p, n);
	return n;
}

/* ... and sent (false on a write error, or when answer_feed said SIZE_MAX: nothing goes on). */
static bool answer_send(struct session *s, const uint8_t *head, size_t h, const uint8_t *p, size_t n)
{
	return n != SIZE_MAX && (h == 0 || side_send(&s->client, head, h)) && (n == 0 || side_send(&s->client, p, n));
}

/* The client half-closed: once everything it sent is out (and the greeting of a pinned session
 * answered), the server's side is shut for writing too. */
static void half_close_upstream(struct session *s)
{
	if (s->upstream_shut || s->greet || s->upstream.conn.fd < 0)
		return;
	if (side_owed(&s->upstream) > 0) {
		side_writing(&s->upstream, true);  /* again from its write callback once they are out */
		return;
	}
	s->upstream.conn.ops->shutdown_write(&s->upstream.conn);
	s->upstream_shut = true;
}

/* --- lifecycle --- */

/* The server's last words to an idle session (proto->termination), held back: the client's after
 * all (the close was for it), or forgotten (the session moves). */
static void term_deliver(struct session *s)
{
	if (s->term_held)
		evbuffer_add_buffer(s->client.out, s->held_reply);
	s->term_held = false;
}

static void term_forget(struct session *s)
{
	/* (Kept while a transaction runs again: the client's should it go otherwise.) */
	if (s->term_held && !s->txr_pending)
		evbuffer_drain(s->held_reply, evbuffer_get_length(s->held_reply));
	s->term_held = false;
}

/* The session moves on after its server went away with requests in flight: each is answered with
 * the protocol's "outcome unknown" (they may have run: never sent again). */
static void owed_deliver(struct session *s)
{
	char msg[200];

	if (s->owed == 0)
		return;
	snprintf(msg, sizeof(msg), "repoint: the server went away while this request was in flight: it may or may "
				   "not have run; the session goes on on the new writer");
	for (uint32_t i = 0; i < s->owed; i++)
		s->host->proto->outcome_unknown(s->client.out, msg);
	s->host->counters.outcome_unknown += s->owed;
	s->owed = 0;
	(void)side_flush(&s->client);  /* a dead client shows at its next read */
}

/* This session's pinning command is on its own connection (or will never be): others may send. */
static void barrier_release(struct session *s)
{
	if (!s->barrier)
		return;
	s->barrier = false;
	s->host->ops->barrier(s->host, false);
}

void session_destroy(struct session *s)
{
	barrier_release(s);
	if (s->sh != NULL)
		shared_forget(s->sh, s);
	s->sh = NULL;
	own_drop(s);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	if (s->member >= 0)
		s->host->ops->detach(s->host, s);
	side_close(&s->upstream);
	side_close(&s->client);
	if (s->upstream.out != NULL)
		evbuffer_free(s->upstream.out);
	if (s->client.out != NULL)
		evbuffer_free(s->client.out);
	if (s->client_in != NULL)
		evbuffer_free(s->client_in);
	split_free(s);
	event_free(s->timer);
	if (s->held_reply != NULL)
		evbuffer_free(s->held_reply);
	if (s->greeting != NULL)
		evbuffer_free(s->greeting);
	login_forget(s);
	if (s->relogin_ev != NULL)
		event_free(s->relogin_ev);
	s->host->ops->closed(s->host, s);
	free(s->retry);
	if (s->txlog != NULL) {
		txlog_free(s->txlog);
		free(s->txlog);
	}
	free(s);
}

static void drop_upstream(struct session *s)
{
	side_close(&s->upstream);
	s->txr_replaying = false;  /* a transaction's replay ends with its connection: nothing committed */
	s->tls_asking = false;
	s->upstream.handshaking = false;
	s->med = 0;
	s->relay_on = false;
	s->logging_in = false;
	s->logged_in = false;
	s->login_tls = false;
	s->changing_user = false;
	s->member_authing = false;
	s->member_authed = false;
	if (s->relogging) {
		s->relogging = false;
		s->client.paused = false;
	}
	if (s->relogin_ev != NULL)
		evtimer_del(s->relogin_ev);
	if (s->login_in != NULL)
		evbuffer_drain(s->login_in, evbuffer_get_length(s->login_in));
	if (s->greeting != NULL)
		evbuffer_drain(s->greeting, evbuffer_get_length(s->greeting));
	if (s->sh != NULL)
		shared_forget(s->sh, s);
	s->sh = NULL;
	own_drop(s);
	s->shared_out = 0;
	s->shared_bytes = 0;
	s->shared_reply = 0;
	s->shared_need = 0;
	if (s->member >= 0)
		s->host->ops->detach(s->host, s);
	/* The client may have been paused because the upstream's output was full. */
	if (s->client.paused) {
		s->client.paused = false;
		if (s->state != SESSION_CLOSING)
			side_reading(&s->client, true);
	}
}

/* The client has been sent its last words: our side is shut, and what it still sends is read and
 * dropped until it closes (at most SESSION_LINGER_MS). Closing a socket with unread input makes the
 * kernel reset the connection, and the client would lose those words before reading them. */
static void linger(struct session *s)
{
	s->client.conn.ops->shutdown_write(&s->client.conn);
	side_writing(&s->client, false);
	side_reading(&s->client, true);
	arm_timer(s, SESSION_LINGER_MS);
}

/* Close the session once the client has read what it is owed. Returns true when freed now. */
static bool close_after_flush(struct session *s, const char *why)
{
	size_t owed = side_owed(&s->client);

	barrier_release(s);
	drop_upstream(s);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	if (s->state != SESSION_CLOSING)
		set_state(s, SESSION_CLOSING, why);
	side_reading(&s->client, false);
	if (!side_flush(&s->client) || owed == 0) {
		session_destroy(s);
		return true;
	}
	if (side_owed(&s->client) == 0) {
		linger(s);
		return false;
	}
	/* The write callback lingers once the output is flushed. */
	arm_timer(s, SESSION_FLUSH_TIMEOUT_MS);
	return false;
}

static struct evbuffer *client_input(struct session *s)
{
	if (s->client_in == NULL)
		s->client_in = evbuffer_new();
	return s->client_in;
}

static bool refuse(struct session *s, enum session_refusal why)
{
	const struct proto_ops *proto = s->host->proto;
	enum proto_refuse_step step;
	struct evbuffer *in = client_input(s);
	char msg[256];

	if (why == REFUSE_SHUTDOWN)
		snprintf(msg, sizeof(msg), "repoint: service \"%s\" is shutting down", s->host->name);
	else if (why == REFUSE_TLS_REQUIRED)
		snprintf(msg, sizeof(msg), "repoint: service \"%s\" takes TLS clients only (listen_tls = require)",
			 s->host->name);
	else
		snprintf(msg, sizeof(msg), "repoint: no writer for service \"%s\" within %lld ms",
			 s->host->name, (long long)s->host->cfg->hold_timeout_ms);
	s->refusal = why;

	drop_upstream(s);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	if (s->state != SESSION_REFUSING)
		set_state(s, SESSION_REFUSING, msg);
	evtimer_del(s->timer);
	if (in == NULL) {
		session_destroy(s);
		return true;
	}
	step = proto->refuse(in, s->client.out, msg);
	if (step == PROTO_REFUSE_DONE)
		return close_after_flush(s, "refused");
	/* A negotiation step (Postgres SSLRequest -> 'N'): wait for the client's next packet. */
	if (!side_flush(&s->client)) {
		session_destroy(s);
		return true;
	}
	side_reading(&s->client, true);
	arm_timer(s, SESSION_REFUSE_TIMEOUT_MS);
	return false;
}

static bool hold_timeout_refuse(struct session *s)
{
	s->host->counters.hold_timeouts++;
	return refuse(s, REFUSE_HOLD_TIMEOUT);
}

static bool route(struct session *s);
static bool bind_shared(struct session *s, int member);
static void route_if_ready(struct session *s);
static void client_gone(struct session *s, bool error);
static bool drain_now(struct session *s, bool idle);
static bool session_idle(const struct session *s);
static void count_unmovable(struct session *s, const struct proto_state *st);
static bool pool_donate(struct session *s, const uint8_t *p, size_t n);

static bool hold(struct session *s, const char *why)
{
	int64_t left = s->hold_deadline_ms - now_ms();

	barrier_release(s);  /* waiting for a server: the others do not wait for it */
	if (s->host->ops->stopping(s->host))
		return refuse(s, REFUSE_SHUTDOWN);
	if (left <= 0)
		return hold_timeout_refuse(s);
	if (s->state != SESSION_HELD)
		set_state(s, SESSION_HELD, why);
	if (!s->in_held) {
		s->host->ops->hold(s->host, s);
		s->host->counters.held_total++;
		if (s->held_since_ms == 0)
			s->held_since_ms = now_ms();
	}
	/* Wake up at the deadline, or earlier to try again once a refusing member may be retried. */
	if (s->avoid_member >= 0 && s->avoid_until_ms > now_ms() && s->avoid_until_ms - now_ms() < left)
		left = s->avoid_until_ms - now_ms();
	arm_timer(s, left);
	return false;
}

/* Off its server (if it had one) and waiting again, with a fresh hold_timeout. */
static bool hold_again(struct session *s, const char *why)
{
	drop_upstream(s);
	s->hold_deadline_ms = now_ms() + s->host->cfg->hold_timeout_ms;
	return hold(s, why);
}

static void retry_append(struct session *s, const uint8_t *p, size_t n)
{
	if (s->retry_valid && !bytes_append(&s->retry, &s->retry_len, &s->retry_cap, p, n, 64, SESSION_RETRY_MAX))
		s->retry_valid = false;
}

/* Whether the session keeps its requests from each idle point on: to send one again elsewhere
 * (refused as read-only) or to set again on the next server what it set. Where moving a session
 * takes repoint's own login (Postgres, MySQL), only a session with one does. */
static bool keeps_requests(const struct session *s)
{
	const struct proto_ops *proto = s->host->proto;

	return s->login != NULL || (proto->retryable != NULL && proto->login == NULL);
}

/* The server took the session: its start can no longer be replayed elsewhere. */
static void started(struct session *s)
{
	s->starting = false;
	s->retry_valid = false;
	s->retry_len = 0;
	if (!keeps_requests(s)) {
		/* Nothing else keeps client bytes for this protocol: give the memory back. */
		free(s->retry);
		s->retry = NULL;
		s->retry_cap = 0;
	}
}

/* Client bytes about to go upstream: the tracker sees them, and from an idle point on they are
 * kept (while small) so that a request refused as read-only can be sent to the new writer. */
static void client_bytes(struct session *s, const uint8_t *p, size_t n)
{
	const struct proto_ops *proto = s->host->proto;

	/* From an idle point on, the request is kept while small (keeps_requests). */
	bool keep = keeps_requests(s);
	if (keep && proto->is_idle(&s->ps)) {
		s->retry_len = 0;
		s->retry_valid = true;
		if ((proto->tx_retryable != NULL || proto->tx_idle != NULL) && s->login != NULL) {
			/* ... and the answers too, for a transaction refused part-way. */
			if (s->txlog == NULL)
				s->txlog = calloc(1, sizeof(*s->txlog));
			if (s->txlog != NULL)
				txlog_reset(s->txlog);
			memset(&s->txlog_strip, 0, sizeof(s->txlog_strip));
		}
	}
	proto->feed(&s->ps, PROTO_CLIENT_TO_SERVER, p, n);
	if (keep || s->starting)
		retry_append(s, p, n);
	s->host->counters.bytes_client_to_server += n;
	s->bytes_in += n;
	s->active_ms = now_ms_coarse();
}

/* Forward what the client sent while it had no server. */
static void forward_client_input(struct session *s)
{
	struct evbuffer_iovec vec[8];
	struct evbuffer *in = s->client_in;
	int n;

	if (in == NULL)
		return;
	bool map = s->login != NULL && s->host->proto->login->map_request != NULL;

	while ((n = evbuffer_peek(in, -1, NULL, vec, (int)ARRAY_LEN(vec))) > 0) {
		size_t moved = 0;
		int used = n < (int)ARRAY_LEN(vec) ? n : (int)ARRAY_LEN(vec);
		for (int i = 0; i < used; i++) {
			client_bytes(s, vec[i].iov_base, vec[i].iov_len);
			if (s->relay_on)
				s->relay_on = s->host->proto->upgrade->relay(&s->relay, PROTO_CLIENT_TO_SERVER,
									     vec[i].iov_base, vec[i].iov_len);
			if (map)
				(void)to_member(s, vec[i].iov_base, vec[i].iov_len, false, true);
			moved += vec[i].iov_len;
		}
		if (map)
			evbuffer_drain(in, moved);
		else
			evbuffer_remove_buffer(in, s->upstream.out, moved);
	}
	evbuffer_free(in);
	s->client_in = NULL;
}

/* The session leaves its member for another: its login learns from the tracker what of the
 * server's session is still there to rebuild (before the tracker starts again). */
static void login_leaving(struct session *s)
{
	const struct proto_login_ops *lo = s->login != NULL ? s->host->proto->login : NULL;

	if (lo != NULL && lo->leaving != NULL)
		lo->leaving(s->login, &s->ps);
}

/* Move an idle (or retryable) session to whatever member the service picks now, without the
 * client noticing: a fresh connection replaces the old one, and with `replay` the request the old
 * server refused is sent first. Returns true when the session was freed. */
static bool migrate(struct session *s, const char *why, bool replay)
{
	struct service_counters *c = &s->host->counters;
	char reason[160];

	c->migrated++;
	snprintf(reason, sizeof(reason), "(moving: %s)", why);
	login_leaving(s);
	s->host->proto->init(&s->ps);
	s->replay = replay && s->retry_valid && s->retry_len > 0;
	if (!s->replay)
		s->retry_len = 0;
	s->retry_valid = false;
	return hold_again(s, reason);
}

/* The server refused to start the session (it is shutting down) or closed it before accepting
 * it: nothing ran, so start it again elsewhere, replaying what the client sent. Only for the
 * protocol's documented refusals (startup_refusal), a bounded number of times. Returns true when
 * the session was freed. */
static bool restart(struct session *s, const char *why)
{
	struct session_host *svc = s->host;
	int member = s->member;

	int64_t avoid = SESSION_AVOID_MS << (s->restarts < 6 ? s->restarts : 6);

	s->restarts++;
	svc->counters.restarted++;
	s->avoid_member = member;
	s->avoid_until_ms = now_ms() + (avoid < SESSION_AVOID_MAX_MS ? avoid : SESSION_AVOID_MAX_MS);
	drop_upstream(s);
	svc->proto->init(&s->ps);
	s->replay = s->retry_len > 0;
	if (hold(s, why))
		return true;
	/* The server's own word on itself, yet no observation of the member: its probe decides. */
	svc->ops->probe_soon(svc, member);
	route_if_ready(s);
	return false;
}

static bool can_restart(const struct session *s)
{
	return s->starting && s->retry_valid && s->restarts < SESSION_RESTARTS_MAX && !s->host->ops->stopping(s->host);
}

static bool can_migrate(const struct session *s)
{
	const struct proto_ops *proto = s->host->proto;

	/* A protocol whose login repoint can own moves a session only when repoint owns it. */
	return proto->can_migrate != NULL && (proto->login == NULL || s->login != NULL) && !s->unmovable &&
	       s->host->cfg->route == ROUTE_WRITER &&
	       !s->host->ops->stopping(s->host) && proto->can_migrate(&s->ps);
}

/* Requests the server just answered changed the session in a way sending them again rebuilds (a
 * SET, a prepared statement): kept for the next server, or the session cannot move any more. What
 * was kept is then used up: the next requests are kept from here (the tracker says so only where
 * nothing else of the client's is in flight). */
static void take_replayable(struct session *s)
{
	const struct proto_ops *proto = s->host->proto;
	int kind;

	if (proto->replayable == NULL || (kind = proto->replayable(&s->ps)) == 0)
		return;
	if (!s->retry_valid || s->retry_len == 0 || !proto->login->replay(s->login, kind, s->retry, s->retry_len, &s->ps))
		s->unmovable = true;
	s->retry_len = 0;
}

/* A transaction's `k` requests can run again on another member: every one since its idle point is
 * kept, and the `answered` answers the client had to them are in the log, each whole; the session's
 * login is repoint's and everything it set goes with it (so a transaction begins there as it did). */
static bool tx_kept(const struct session *s, unsigned k, unsigned answered)
{
	const struct proto_ops *proto = s->host->proto;
	unsigned n = 0;

	if (k == 0 || s->login == NULL || s->unmovable || s->txlog == NULL || !s->txlog->valid || !s->retry_valid ||
	    s->txlog->nends != answered || s->client_eof || s->host->cfg->route != ROUTE_WRITER || s->host->ops->stopping(s->host))
		return false;
	for (size_t off = 0, len; off < s->retry_len; off += len, n++)
		if ((len = proto->request_len(s->retry + off, s->retry_len - off)) == 0)
			return false;
	return n == k;
}

/* A transaction refused part-way by a writer turned read-only (the last request in flight) runs
 * again on the new writer. */
static bool tx_replayable(struct session *s)
{
	const struct proto_ops *proto = s->host->proto;
	unsigned k;

	return proto->tx_retryable != NULL && s->retry_streak < SESSION_RETRY_STREAK_MAX &&
	       (k = proto->tx_retryable(&s->ps)) > 0 && tx_kept(s, k, k - 1);
}

/* A session idle inside a transaction (tracker at `st`) outlives its server: the transaction runs
 * again on the next one. */
static bool tx_idle_at(const struct session *s, const struct proto_state *st)
{
	const struct proto_ops *proto = s->host->proto;
	unsigned k;

	return proto->tx_idle != NULL && (k = proto->tx_idle(st)) > 0 && tx_kept(s, k, k);
}

/* Whether a session whose tracker is at `st` can outlive its server connection (auth = repoint):
 * idle with nothing to lose, or with requests in flight whose client can be told their outcome is
 * unknown (*owed of them). */
static bool survives_at(const struct session *s, const struct proto_state *st, uint32_t *owed)
{
	const struct proto_ops *proto = s->host->proto;
	uint32_t n = 0;

	*owed = 0;
	if (s->login == NULL || s->unmovable || s->client_eof || s->host->cfg->route != ROUTE_WRITER ||
	    s->host->ops->stopping(s->host))
		return false;
	if (proto->can_migrate != NULL && proto->can_migrate(st))
		return true;
	if (tx_idle_at(s, st))
		return true;
	if (proto->inflight_lost == NULL || !proto->inflight_lost(st, &n))
		return false;
	*owed = n;
	return true;
}

static bool can_survive(const struct session *s, uint32_t *owed)
{
	*owed = 0;
	return can_migrate(s) || survives_at(s, &s->ps, owed);
}

/* A read that ends with the server's last words (proto->termination) on a session that could move
 * once they are out of the way: what comes before them goes to the client, they are held back
 * (term_held) until the close shows whether they were for the client (upstream_gone). True when
 * the read was handled so. */
static bool held_last_words(struct session *s, size_t n)
{
	const struct proto_ops *proto = s->host->proto;
	size_t at = proto->termination(&s->ps, session_io, n);
	struct proto_state after = s->ps;
	uint32_t owed;

	if (at >= n)
		return false;
	proto->feed(&after, PROTO_SERVER_TO_CLIENT, session_io, at);
	if (!survives_at(s, &after, &owed)) {
		/* Its server ends it at an idle point, and what it set there cannot move: lost for that. */
		if (s->host->cfg->route == ROUTE_WRITER && proto->is_idle(&after))
			count_unmovable(s, &after);
		return false;
	}
	if (s->held_reply == NULL && (s->held_reply = evbuffer_new()) == NULL)
		return false;
	if (evbuffer_add(s->held_reply, session_io + at, n - at) < 0)
		return false;
	s->term_held = true;
	if (at > 0) {
		if (s->txlog != NULL)
			s->txlog->valid = false;
		s->ps = after;
		take_replayable(s);
		s->host->counters.bytes_server_to_client += at;
		s->bytes_out += at;
		if (!side_send(&s->client, session_io, at))
			client_gone(s, true);
	}
	return true;
}

/* After a migration: connect now if the service already knows where to. */
/* cluster = on: the slot of the command the session waits to send (the one to send again first,
 * else the first in client_in), -1 when it has none or it has no keys. */
static int pending_slot(struct session *s)
{
	const uint8_t *p;
	size_t n, len;
	bool write;
	int slot;

	if (s->split != NULL && s->split->fan_next < s->split->fan_n && !s->replay)
		return s->split->fan[s->split->fan_next];  /* a copy of a command for every shard: its shard's */
	if (s->replay && s->retry_len > 0) {
		p = s->retry;
		n = s->retry_len;
	} else if (s->client_in != NULL && (n = evbuffer_get_length(s->client_in)) > 0) {
		p = evbuffer_pullup(s->client_in, -1);
	} else {
		return -1;
	}
	/* A shareable command, or one that pins (SSUBSCRIBE: its channel's shard). */
	if (resp_share_scan(p, n, share_max(s), &len, &write) != RESP_SHARE_YES &&
	    resp_command_len(p, n, share_max(s), &len) != 1)
		return -1;
	if (resp_cluster_own(p, len) == RESP_OWN_MULTI)
		return tx_first_slot(s, p, n) >= 0 ? tx_first_slot(s, p, n) : -1;  /* its first key's */
	slot = s->host->ops->slot(s->host, p, len);
	return slot >= 0 ? slot : -1;
}

/* The member to go to now (-1: hold): the writer, or (cluster = on) its next command's shard's. */
static int route_pick(struct session *s)
{
	if (s->host->cluster && s->ask_member >= 0)
		return s->ask_member;  /* the command an ASK sent elsewhere, once */
	if (s->host->cluster)
		return s->host->ops->pick_slot(s->host, pending_slot(s));
	return s->host->ops->pick(s->host);
}

static void route_if_ready(struct session *s)
{
	if (s->state == SESSION_HELD && route_pick(s) >= 0)
		route(s);
}

/* The server refused the only request in flight as read-only and its own probe has since said it
 * is not a writer: the request did not run, the client need not hear of it, and it goes to the
 * writer instead. */
static void retry_elsewhere(struct session *s)
{
	s->retry_streak++;
	s->host->counters.retried++;
	if (migrate(s, "the server refused a write as read-only", true))
		return;
	route_if_ready(s);
}

static void shared_flow(struct session *s);
static bool pin(struct session *s);

/* Deliver the reply held back while the member's word was awaited, and go on as before. */
static void deliver_held_reply(struct session *s)
{
	size_t n = evbuffer_get_length(s->held_reply);
	uint8_t *p = evbuffer_pullup(s->held_reply, -1);

	if (s->txlog != NULL)
		s->txlog->valid = false;  /* answers the log did not see */
	if (n > 0) {
		uint8_t head[4];
		size_t h = 0, send = n;
		if (!s->shared)
			send = answer_feed(s, p, n, head, &h);
		s->host->counters.bytes_server_to_client += n;
		s->bytes_out += n;
		if (!answer_send(s, head, h, p, send)) {
			evbuffer_drain(s->held_reply, n);
			client_gone(s, true);
			return;
		}
		evbuffer_drain(s->held_reply, n);
	}
	if (s->state == SESSION_DRAINING && session_idle(s)) {
		drain_now(s, true);
		return;
	}
	if (s->shared) {
		if (s->shared_out == 0 && s->unshare)
			pin(s);
		else
			shared_flow(s);
		return;
	}
	if (s->state == SESSION_ACTIVE)
		evtimer_del(s->timer);
	if (!s->client.paused && !s->client_eof)
		side_reading(&s->client, true);
	if (!s->upstream.paused)
		side_reading(&s->upstream, true);
}

/* A read-only refusal of a request that could be sent again: hold the reply back, pause both
 * sides, and ask the member itself (session_confirmed decides). False when it cannot be held
 * (the caller passes the reply on). */
static bool confirm_readonly(struct session *s, int member, const uint8_t *p, size_t n)
{
	if (s->held_reply == NULL && (s->held_reply = evbuffer_new()) == NULL)
		return false;
	if (evbuffer_add(s->held_reply, p, n) < 0)
		return false;
	s->confirming = CONFIRM_READONLY;
	s->confirm_member = member;
	side_reading(&s->client, false);
	side_reading(&s->upstream, false);
	/* A draining session keeps its drain deadline, which bounds the wait too. */
	if (s->state == SESSION_ACTIVE)
		arm_timer(s, s->host->cfg->probe_timeout_ms + SESSION_CONFIRM_SLACK_MS);
	s->host->ops->confirm_role(s->host, member);
	return true;
}

void session_confirmed(struct session *s, enum role role, bool is_writer)
{
	enum session_confirm what = (enum session_confirm)s->confirming;
	char subj[160];

	log_debug(subject(s, subj, sizeof(subj)), "its server's word: %s%s", role_name(role),
		  is_writer ? " (the service's writer)" : "");
	s->confirming = CONFIRM_NONE;
	if (what == CONFIRM_READONLY) {
		/* Sent again only on the member's own word that it is not a writer (then the refusal
		 * was a replica's, and the request did not run), or when it can no longer say and the
		 * service has already left it (a switchover that turned it read-only, then shut it
		 * down before its word came). */
		if ((role == ROLE_READER || (role == ROLE_DOWN && !is_writer)) &&
		    (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING)) {
			/* A transaction's refusal is kept: the client's answer should its replay go otherwise. */
			if (!s->txr_pending)
				evbuffer_drain(s->held_reply, evbuffer_get_length(s->held_reply));
			retry_elsewhere(s);
			return;
		}
		s->txr_pending = false;
		deliver_held_reply(s);
		return;
	}
	if (what == CONFIRM_CLOSE && s->state == SESSION_HELD) {
		/* The server closed an idle session while it is still the healthy writer: that close was
		 * for the client (CLIENT KILL, an idle timeout), who gets it as it would directly. */
		if (role == ROLE_WRITER && is_writer) {
			term_deliver(s);
			s->owed = 0;
			close_after_flush(s, "(closed by its server)");
			return;
		}
		s->host->counters.migrated++;
		term_forget(s);
		owed_deliver(s);
		route_if_ready(s);
	}
}

/* One more session that could not move, for `why` (repoint_sessions_unmovable_total{reason}). */
static void count_unmovable_as(struct session *s, const char *why)
{
	struct service_counters *c = &s->host->counters;

	for (size_t i = 0; i < SESSION_UNMOVABLE_REASONS; i++) {
		if (c->unmovable[i].reason == NULL)
			c->unmovable[i].reason = why;
		if (strcmp(c->unmovable[i].reason, why) == 0) {
			c->unmovable[i].n++;
			return;
		}
	}
}

/* A session that cannot move closes at its idle point: counted by why, when it is of a kind that
 * can move (a protocol that moves sessions, with repoint's own login where it has one). */
static void count_unmovable(struct session *s, const struct proto_state *st)
{
	const struct proto_ops *proto = s->host->proto;
	const char *why;

	if (proto->can_migrate == NULL || (proto->login != NULL && s->login == NULL) || s->shared)
		return;
	why = s->unmovable ? "replay_full" : proto->unmovable_reason != NULL ? proto->unmovable_reason(st) : NULL;
	if (why == NULL)
		return;  /* its state could move: something else kept it (the client leaving, a shutdown) */
	count_unmovable_as(s, why);
}


static bool drain_now(struct session *s, bool idle)
{
	struct service_counters *c = &s->host->counters;

	if (idle && can_migrate(s)) {
		/* Routed from the service's deferred release, not from here: drains run inside loops over
		 * the service's sessions, which a nested connect failure must not disturb. */
		if (!migrate(s, "its server is no longer the writer", false))
			s->host->ops->kick_held(s->host);
		return false;
	}
	c->drained++;
	if (idle && s->host->cfg->route == ROUTE_WRITER)
		count_unmovable(s, &s->ps);
	if (idle)
		c->drained_idle++;
	else
		c->drained_timeout++;
	return close_after_flush(s, idle ? "drained at an idle point" : "drained");
}

/* The client went away (EOF or error): the session is freed, or flushes what the client sent. */
static void client_gone(struct session *s, bool error)
{
	char subj[160];

	if (error)
		log_debug(subject(s, subj, sizeof(subj)), "client error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	if (!error && !s->client_eof && s->state != SESSION_CLOSING && s->state != SESSION_REFUSING &&
	    ((s->upstream.conn.fd >= 0 && (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING)) ||
	     (s->shared && s->shared_out > 0) ||
	     (s->client_in != NULL && evbuffer_get_length(s->client_in) > 0))) {
		/* A half-close: deliver what the client sent (a request, a Terminate, a QUIT), then shut
		 * the server's side for writing too, and pass on what the server still answers until it
		 * closes -- as a direct connection would. Bounded in time. */
		s->client_eof = true;
		side_reading(&s->client, false);
		s->client.paused = false;
		if ((s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && !s->shared)
			half_close_upstream(s);
		if (s->state == SESSION_ACTIVE)
			arm_timer(s, SESSION_FLUSH_TIMEOUT_MS);
		return;
	}
	session_destroy(s);
}

static bool connect_failed(struct session *s, const char *why);

/* The server closed (or reset) a session in use. */
static void upstream_gone(struct session *s, bool error)
{
	const char *why = error ? "upstream error" : "upstream closed";

	/* A cancel request, a client that already left, a session the server never accepted (what
	 * the client sent may be why): the close is the client's, and says nothing of the member. */
	uint32_t owed = 0;

	if (s->cancel || s->client_eof || s->starting || (s->state != SESSION_ACTIVE && s->state != SESSION_DRAINING) ||
	    s->member < 0) {
		term_deliver(s);
		close_after_flush(s, why);
		return;
	}
	/* An idle session that could move: was the close for the client (CLIENT KILL, a timeout), or
	 * is its server gone (a crash, a demotion)? Only the member's own word tells; the client is
	 * held until it comes, then closed or moved. Otherwise the client gets what was already read,
	 * then the close, and the member is probed now (a crashed writer shows itself here first). */
	if (can_survive(s, &owed) && (owed > 0 || side_owed(&s->client) == 0)) {
		struct session_host *svc = s->host;
		int member = s->member;
		bool writer = svc->ops->pick(svc) == member;

		s->owed = owed;
		if (owed == 0 && !can_migrate(s) && tx_idle_at(s, &s->ps)) {
			/* Idle in a transaction: it runs again on the next server, every answer checked. */
			s->txr_pending = s->txr_all = true;
			s->replay = true;
		} else {
			s->retry_len = 0;
			s->retry_valid = false;
		}
		login_leaving(s);
		svc->proto->init(&s->ps);
		if (writer) {
			s->confirming = CONFIRM_CLOSE;
			s->confirm_member = member;
		} else {
			svc->counters.migrated++;
			term_forget(s);
			owed_deliver(s);
		}
		if (hold_again(s, error ? "(its server reset the connection)" : "(its server closed the connection)"))
			return;
		if (writer)
			svc->ops->confirm_role(svc, member);
		else
			route_if_ready(s);
		return;
	}
	/* Idle yet unable to move: lost for what it set on its server. */
	if (s->host->cfg->route == ROUTE_WRITER && s->host->proto->is_idle(&s->ps))
		count_unmovable(s, &s->ps);
	s->host->ops->probe_soon(s->host, s->member);
	term_deliver(s);
	close_after_flush(s, why);
}

/* A write to the server failed: it closed or reset the connection, possibly with a last reply
 * (an error about the request) waiting in the socket. Deliver what can still be read first. */
static void upstream_write_failed(struct session *s)
{
	for (int i = 0; i < 16 && s->upstream.conn.fd >= 0; i++) {
		ssize_t r = read_once(&s->upstream);
		if (r <= 0)
			break;
		uint8_t head[4];
		size_t h = 0, send = (size_t)r;
		if (!s->shared)
			send = answer_feed(s, session_io, (size_t)r, head, &h);
		s->host->counters.bytes_server_to_client += (uint64_t)r;
		s->bytes_out += (uint64_t)r;
		if (!answer_send(s, head, h, session_io, send))
			break;
	}
	upstream_gone(s, true);
}

/* --- multiplex: sessions whose commands travel on a shared connection --- */

/* Nothing in flight and nothing partial either way: the session may close or move. */
static bool session_idle(const struct session *s)
{
	if (s->confirming == CONFIRM_READONLY)
		return false;  /* a reply is held back: not answered yet, as far as the client knows */
	if (s->shared)
		return s->shared_out == 0 && !s->tx_multi && !s->tx_watch;
	return s->host->proto->is_idle(&s->ps);
}

/* Read the client only while it has room: what it is owed, what it has in flight and what waits
 * unsent are all bounded. */
static void shared_flow(struct session *s)
{
	bool stop = s->confirming || s->client_eof || (!s->barrier && s->host->ops->barred(s->host)) ||
		    evbuffer_get_length(s->client.out) >= SESSION_HIGH_WATER ||
		    s->shared_out >= SESSION_SHARED_INFLIGHT_MAX || s->shared_bytes >= SESSION_HIGH_WATER ||
		    (s->client_in != NULL && evbuffer_get_length(s->client_in) >= share_max(s) + SESSION_READ_MAX);

	if (s->state == SESSION_CLOSING || s->state == SESSION_REFUSING)
		return;
	s->client.paused = stop;
	side_reading(&s->client, !stop);
}

/* A command needs a connection of the session's own, and nothing is in flight: from now on the
 * session is like any other, starting with what client_in holds. Returns true when freed. */
static bool pin(struct session *s)
{
	s->host->counters.pinned++;
	s->shared = false;
	s->unshare = false;
	/* Its own connection is greeted first, its reply not passed on: HELLO 3 when its replies so
	 * far were RESP3 (the connection must speak it from the start), else PING. Either way the
	 * server has taken the connection in before the client's command goes: a command another
	 * client sends on the shared connection after it cannot run first (service_barrier). */
	s->greet = true;
	drop_upstream(s);
	s->host->proto->init(&s->ps);
	s->retry_valid = false;
	s->retry_len = 0;
	s->hold_deadline_ms = now_ms() + s->host->cfg->hold_timeout_ms;
	return route(s);
}

/* The connection a shared session's next commands go on, if one can take them now. */
static struct shared *shared_target(struct session *s, bool write)
{
	struct shared *sh;

	if (s->state != SESSION_ACTIVE || s->unshare || s->member < 0)
		return NULL;
	/* With commands in flight, the next ones follow them on the same connection (the client's
	 * order) -- a write only on the writes' connection: it waits for the reads to be answered. */
	if (s->shared_out > 0)
		return shared_retired(s->sh) || (write && !s->sh_write) ? NULL : s->sh;
	sh = s->host->ops->shared(s->host, s->member, s->resp3, write);
	return sh != NULL && shared_ready(sh) ? sh : NULL;
}

/* Whether the first command waiting in client_in writes (or may): which shared connection it
 * needs. A command not complete yet, or none, counts as a read. */
static bool pending_write(struct session *s)
{
	size_t len, n = s->client_in != NULL ? evbuffer_get_length(s->client_in) : 0;
	bool write = false;

	if (s->replay)
		return true;  /* a write a demoted writer refused */
	if (n > 0)
		(void)share_scan(s, evbuffer_pullup(s->client_in, -1), n, &len, &write);
	return write;
}

/* Whether the session's first waiting command needs a connection of its own, with nothing of
 * its own in flight: it will pin without sending anything on a shared connection. */
static bool pending_pins(struct session *s)
{
	size_t len, n = s->client_in != NULL ? evbuffer_get_length(s->client_in) : 0;
	bool write;

	if (n == 0 || s->shared_out > 0 || s->replay)
		return false;
	return !s->host->cluster &&
	       resp_share_scan(evbuffer_pullup(s->client_in, -1), n, share_max(s), &len, &write) == RESP_SHARE_NO;
}


static void split_free(struct session *s)
{
	if (s->split == NULL)
		return;
	evbuffer_free(s->split->acc);
	if (s->split->tx != NULL)
		evbuffer_free(s->split->tx);
	free(s->split->fan);
	free(s->split);
	s->split = NULL;
}

/* The command buf[off..off+len) is answered by several shards -- over keys of several slots (`slot`
 * KEYSPEC_CROSSSLOT) and one that splits per key, or a data-set-wide one sent to every shard, or a
 * SCAN sent to the shard its cursor names: client_in becomes those commands and then
 * buf[off+len..total). 1: done; 0: not such a command; 2: answered here (a SCAN cursor that names
 * no shard); -1: out of memory or the client is gone. */
static int cluster_split(struct session *s, const uint8_t *buf, size_t off, size_t len, size_t total, int slot)
{
	static int starts[SLOTS_COUNT];
	struct evbuffer *nb = evbuffer_new();
	uint32_t count = 0, nfan = 0;
	enum resp_split kind = RESP_SPLIT_NONE;
	int scan_at = -1;
	uint64_t cursor;
	bool scan = false;

	if (nb == NULL)
		return -1;
	if (slot == KEYSPEC_CROSSSLOT) {
		kind = resp_cluster_split(buf + off, len, nb, &count);
	} else if (resp_cluster_scan(buf + off, len, &cursor)) {
		int want = (int)(cursor & ((1u << RESP_SCAN_SHIFT) - 1)), n = s->host->ops->shard_starts(s->host, starts, SLOTS_COUNT);
		for (int i = 0; i < n && scan_at < 0; i++)
			if (cursor == 0 || starts[i] == want)
				scan_at = i;
		if (scan_at < 0) {
			static const char bad[] = "-ERR invalid cursor\r\n";
			evbuffer_free(nb);
			return side_send(&s->client, (const uint8_t *)bad, sizeof(bad) - 1) ? 2 : -1;
		}
		resp_cluster_scan_rewrite(buf + off, len, cursor >> RESP_SCAN_SHIFT, nb);
		kind = RESP_SPLIT_FIRST;
		scan = true;
		count = nfan = 1;
		starts[0] = starts[scan_at];
		scan_at = scan_at + 1 < n ? starts[scan_at + 1] : -1;   /* now: the next shard's start */
	} else if ((kind = resp_cluster_fan(buf + off, len)) != RESP_SPLIT_NONE) {
		nfan = (uint32_t)s->host->ops->shard_starts(s->host, starts, SLOTS_COUNT);
		for (uint32_t i = 0; i < nfan; i++)
			evbuffer_add(nb, buf + off, len);
		count = nfan;
	}
	if (kind == RESP_SPLIT_NONE || count == 0) {
		evbuffer_free(nb);
		return 0;
	}
	if ((s->split == NULL && (s->split = calloc(1, sizeof(*s->split))) == NULL) ||
	    (s->split->acc == NULL && (s->split->acc = evbuffer_new()) == NULL) ||
	    evbuffer_add(nb, buf + off + len, total - off - len) < 0) {
		evbuffer_free(nb);
		return -1;
	}
	free(s->split->fan);
	s->split->fan = NULL;
	s->split->fan_n = s->split->fan_next = 0;
	if (nfan > 0) {
		if ((s->split->fan = malloc(nfan * sizeof(int))) == NULL) {
			evbuffer_free(nb);
			return -1;
		}
		memcpy(s->split->fan, starts, nfan * sizeof(int));
		s->split->fan_n = nfan;
	}
	s->split->scan = scan;
	s->split->scan_slot = scan ? starts[0] : -1;
	s->split->scan_next = scan ? scan_at : -1;
	s->split->kind = kind;
	s->split->is_tx = false;
	s->split->count = s->split->left = count;
	evbuffer_drain(s->split->acc, evbuffer_get_length(s->split->acc));
	resp_replies_init(&s->split->ps);
	if (s->client_in != NULL)
		evbuffer_free(s->client_in);
	s->client_in = nb;
	s->shared_need = 0;
	return 1;
}

/* cluster = on: where the complete shareable command p[0..len) goes -- its slot's primary, -1 when
 * that shard has none now (held), CLUSTER_LOCAL when repoint answers it (keys in several slots; a
 * data-set-wide command without keys). A command without keys stays where the session is. */
static int cluster_target(struct session *s, const uint8_t *p, size_t len)
{
	int slot;

	if (s->split != NULL && s->split->fan_next < s->split->fan_n)
		return s->host->ops->pick_slot(s->host, s->split->fan[s->split->fan_next]);  /* a copy for one shard */
	if (s->ask_member >= 0)
		return s->ask_member;  /* the command an ASK sent elsewhere, once */
	slot = s->host->ops->slot(s->host, p, len);

	if (slot >= 0)
		return s->host->ops->pick_slot(s->host, slot);
	if (slot == KEYSPEC_CROSSSLOT)
		return CLUSTER_LOCAL;
	if (!resp_cluster_keyless_ok(p, len))
		return CLUSTER_LOCAL;
	return s->member >= 0 ? s->member : s->host->ops->pick_slot(s->host, -1);
}

/* cluster = on: the answer repoint gives itself to the command p[0..len), sent to the client (in
 * order: nothing of the session's is in flight). True when the session was freed. */
static bool cluster_answer(struct session *s, const uint8_t *p, size_t len, int slot)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64] = "127.0.0.1";
	uint16_t port = s->host->cfg->listen.port;
	struct evbuffer *out = evbuffer_new();
	bool ok;

	/* The address the client reached repoint at, as a node announces the address it is reached at. */
	if (getsockname(s->client.conn.fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (out == NULL) {
		session_destroy(s);
		return true;
	}
	if (slot == KEYSPEC_CROSSSLOT)
		resp_error(out, "CROSSSLOT", "Keys in request don't hash to the same slot");
	else
		resp_cluster_answer(p, len, &(struct resp_cluster_self){.host = host, .port = port}, out);
	ok = side_send(&s->client, evbuffer_pullup(out, -1), evbuffer_get_length(out));
	evbuffer_free(out);
	if (!ok) {
		session_destroy(s);
		return true;
	}
	return false;
}

/* ---- cluster = on: transactions and blocking commands, on a connection of the session's own ---- */

/* The connection a transaction of a shared cluster session goes on is the session's: what it had
 * on the server (a MULTI queued, a WATCH armed) becomes what the client must hear instead -- the
 * rest of the transaction refused and EXEC aborted, or EXEC answered nil -- so that nothing the
 * client meant to queue runs outside its transaction. */
static void own_gone(struct session *s)
{
	if (s->tx_multi) {
		s->tx_multi = false;
		s->tx_deferred = true;
		s->tx_dirty = true;
		s->tx_lost = true;
	}
	if (s->tx_watch) {
		s->tx_watch = false;
		s->tx_watch_lost = true;
	}
	s->own_member = -1;
}

static void own_drop(struct session *s)
{
	struct shared *c = s->own;

	if (c == NULL)
		return;
	s->own = NULL;
	s->own_at = -1;
	if (s->sh == c) {
		shared_forget(c, s);
		s->sh = NULL;
	}
	shared_retire(c);
	own_gone(s);
}

static void own_ready_cb(void *arg, struct shared *c)
{
	struct session *s = arg;

	if (s->own == c && s->own_active)
		session_shared_kick(s);
}

static void own_lost_cb(void *arg, struct shared *c, bool was_ready, const char *why)
{
	struct session *s = arg;
	int member = s->own_at;

	if (s->own != c)
		return;
	s->own = NULL;
	s->own_at = -1;
	own_gone(s);
	if (!was_ready && !shared_login_refused(c)) {
		s->host->counters.upstream_connect_failures++;
		s->host->ops->upstream_failed(s->host, member, why);
	}
	if (!s->own_active || s->shared_out > 0 || (s->state != SESSION_ACTIVE && s->state != SESSION_DRAINING))
		return;  /* commands in flight: session_shared_lost comes next and answers them */
	/* Nothing in flight: it waits for its member (or its next shard's primary) again. */
	s->avoid_member = member;
	s->avoid_until_ms = now_ms() + SESSION_AVOID_MS;
	if (!hold_again(s, "(its own connection in the cluster failed)"))
		s->host->ops->kick_held(s->host);
}

static int own_login_cb(void *arg, struct evbuffer *out)
{
	struct session *s = arg;
	char why[256];

	return s->host->ops->member_login(s->host, s->own_at, out, why, sizeof(why));
}

static void own_refused_cb(void *arg, const char *why)
{
	struct session *s = arg;

	s->host->ops->member_login_refused(s->host, s->own_at, why);
}

/* A connection of the session's own to `member` (kept if it goes there already), logged in and
 * speaking the session's protocol version as a shared one does. False when it cannot be had now. */
static bool own_open(struct session *s, int member)
{
	static const struct shared_owner_ops owners = {.reply = session_shared_reply, .owed = session_owed,
						       .lost = session_shared_lost, .unsent = session_shared_unsent};
	static const char hello3[] = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
	struct session_host *h = s->host;
	struct shared_hooks hooks = {.owners = &owners, .ready = own_ready_cb, .lost = own_lost_cb,
				     .login = own_login_cb, .refused = own_refused_cb,
				     .relogin_ms = h->cfg->reauth_interval_ms, .arg = s};
	struct shared_target to;
	struct evbuffer *login;
	char label[300], why[256];
	int r;

	if (s->own != NULL && s->own_at == member && !shared_retired(s->own))
		return true;
	own_drop(s);
	if ((login = evbuffer_new()) == NULL)
		return false;
	r = h->ops->member_login(h, member, login, why, sizeof(why));
	if (r < 0) {
		log_warn(h->name, "a connection of a session's own to %s: cannot log in now: %s",
			 h->ops->member_str(h, member), why);
		evbuffer_free(login);
		return false;
	}
	to = (struct shared_target){.tls = h->ops->tls(h), .tls_name = h->ops->member_tls_name(h, member),
				    .resume_key = h->ops->member_str(h, member)};
	to.sa = h->ops->member_addr(h, member, &to.salen);
	snprintf(label, sizeof(label), "%s session %llu's own%s %s", h->name, (unsigned long long)s->id,
		 s->resp3 ? " RESP3" : "", h->ops->member_str(h, member));
	s->own_at = member;
	s->own = shared_open(h->base, &to, h->cfg->connect_timeout_ms, label, &hooks,
			     r > 0 ? evbuffer_pullup(login, -1) : NULL, evbuffer_get_length(login),
			     s->resp3 ? (const uint8_t *)hello3 : NULL, s->resp3 ? sizeof(hello3) - 1 : 0);
	evbuffer_free(login);
	if (s->own == NULL)
		s->own_at = -1;
	return s->own != NULL;
}

/* Whether the transaction (or blocking command) is over: nothing in flight, nothing open. */
static bool own_done(const struct session *s)
{
	return s->shared_out == 0 && !s->tx_multi && !s->tx_watch && !s->tx_deferred && !s->tx_watch_lost;
}

/* The slot of the first command with keys from p[0..n) on, up to the transaction's EXEC or
 * DISCARD: -1 when it ends without one, -2 when the bytes end first. */
static int tx_first_slot(struct session *s, const uint8_t *p, size_t n)
{
	size_t off = 0, len;

	while (off < n && resp_command_len(p + off, n - off, share_max(s), &len) == 1) {
		enum resp_own k = resp_cluster_own(p + off, len);
		int slot = s->host->ops->slot(s->host, p + off, len);
		if (slot >= 0)
			return slot;
		if (k == RESP_OWN_EXEC || k == RESP_OWN_DISCARD)
			return -1;
		off += len;
	}
	return -2;
}

enum own_act { OWN_SEND, OWN_LOCAL, OWN_WAIT };

static const char crossslot_reply[] = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";

/* What becomes of the complete command p[0..len) (rest: the bytes from it to the end of what the
 * client sent) in a transaction: sent on the session's own connection (chosen now if it was not),
 * answered here (*reply, *reply_n; *discard: the server's open MULTI is discarded first), or
 * waited for (its shard has no primary now, or the connection is not up yet: *hold). Nothing of the
 * session changes here but the choice of connection. */
static enum own_act own_decide(struct session *s, const uint8_t *p, size_t len, size_t rest, const char **reply,
			       bool *discard, bool *hold)
{
	struct session_host *h = s->host;
	enum resp_own k = resp_cluster_own(p, len);
	bool in_multi = s->tx_multi || s->tx_deferred;
	int slot = h->ops->slot(h, p, len);

	*reply = NULL;
	*discard = false;
	*hold = false;
	if (k == RESP_OWN_MULTI && in_multi)
		*reply = "-ERR MULTI calls can not be nested\r\n";
	else if (k == RESP_OWN_WATCH && in_multi)
		*reply = "-ERR WATCH inside MULTI is not allowed\r\n";
	else if ((k == RESP_OWN_EXEC || k == RESP_OWN_DISCARD) && !in_multi)
		*reply = k == RESP_OWN_EXEC ? "-ERR EXEC without MULTI\r\n" : "-ERR DISCARD without MULTI\r\n";
	else if (k == RESP_OWN_EXEC && s->tx_dirty)
		*reply = "-EXECABORT Transaction discarded because of previous errors.\r\n";
	else if (k == RESP_OWN_EXEC && s->tx_watch_lost)
		*reply = s->resp3 ? "_\r\n" : "*-1\r\n";  /* as when a watched key changed */
	else if (k == RESP_OWN_EXEC && !s->tx_multi)
		*reply = "*0\r\n";                         /* nothing was queued */
	else if (k == RESP_OWN_DISCARD && !s->tx_multi)
		*reply = "+OK\r\n";
	else if (k == RESP_OWN_UNWATCH && !in_multi && !s->tx_watch)
		*reply = "+OK\r\n";
	else if (s->tx_lost)
		*reply = "-ERR repoint: the connection this transaction was queued on was lost: EXEC will abort it\r\n";
	else if (slot == KEYSPEC_CROSSSLOT || (slot >= 0 && s->own_slot >= 0 && slot != s->own_slot))
		*reply = crossslot_reply;
	else if (slot < 0 && k == RESP_OWN_NONE && !resp_cluster_keyless_ok(p, len))
		return OWN_LOCAL;  /* answered as outside a transaction (cluster_answer) */
	else if (k == RESP_OWN_BLOCKING && slot < 0)
		return OWN_LOCAL;
	if (*reply != NULL) {
		*discard = s->tx_multi && (k == RESP_OWN_EXEC || k == RESP_OWN_DISCARD);
		return OWN_LOCAL;
	}
	if (s->own_member < 0) {
		/* The transaction's connection: to the primary of its first key's slot. */
		int first = slot >= 0 ? slot : tx_first_slot(s, p, rest);
		int member;
		if (first == -2 && k == RESP_OWN_MULTI && !in_multi) {
			*reply = "+OK\r\n";  /* no key yet: MULTI is sent with the first command that has one */
			return OWN_LOCAL;
		}
		if (first < 0)
			member = s->member >= 0 ? s->member : h->ops->pick_slot(h, -1);
		else
			member = h->ops->pick_slot(h, first);
		if (member >= 0 && !own_open(s, member)) {
			s->avoid_member = member;  /* tried again shortly; hold_timeout bounds the wait */
			s->avoid_until_ms = now_ms() + SESSION_AVOID_MS;
			member = -1;
		}
		if (member < 0) {
			*hold = true;
			return OWN_WAIT;
		}
		s->own_member = member;
		s->own_slot = first >= 0 ? first : -1;
		if (member != s->member) {
			h->ops->detach(h, s);
			h->ops->attach(h, s, member);
		}
	} else if (slot >= 0 && s->own_slot < 0) {
		if (h->ops->pick_slot(h, slot) != s->own_member) {
			*reply = crossslot_reply;
			return OWN_LOCAL;
		}
	}
	if (s->own == NULL) {
		*hold = true;
		return OWN_WAIT;
	}
	return shared_ready(s->own) ? OWN_SEND : OWN_WAIT;
}

/* What a command sent on the session's own connection opens or ends on the server. */
static void own_track(struct session *s, const uint8_t *p, size_t len)
{
	int slot = s->host->ops->slot(s->host, p, len);

	if (slot >= 0 && s->own_slot < 0)
		s->own_slot = slot;
	switch (resp_cluster_own(p, len)) {
	case RESP_OWN_MULTI:
		s->tx_multi = true;
		break;
	case RESP_OWN_EXEC:
	case RESP_OWN_DISCARD:
		s->tx_multi = s->tx_watch = false;
		break;
	case RESP_OWN_WATCH:
		s->tx_watch = true;
		break;
	case RESP_OWN_UNWATCH:
		if (!s->tx_multi)
			s->tx_watch = false;
		break;
	default:
		break;
	}
}

/* The transaction p[0..n) (its MULTI answered by repoint when `prefix`), `count` commands, is sent:
 * its replies are held until EXEC's (session_split). -1: out of memory. */
static int tx_hold(struct session *s, const uint8_t *p, size_t n, bool prefix, uint32_t count)
{
	struct session_split *sp = s->split;

	if (sp == NULL && (sp = s->split = calloc(1, sizeof(*sp))) == NULL)
		return -1;
	if ((sp->acc == NULL && (sp->acc = evbuffer_new()) == NULL) || (sp->tx == NULL && (sp->tx = evbuffer_new()) == NULL))
		return -1;
	evbuffer_drain(sp->acc, evbuffer_get_length(sp->acc));
	evbuffer_drain(sp->tx, evbuffer_get_length(sp->tx));
	if (evbuffer_add(sp->tx, p, n) < 0)
		return -1;
	sp->is_tx = true;
	sp->tx_prefix = prefix;
	sp->kind = RESP_SPLIT_NONE;
	sp->count = sp->left = count;
	resp_replies_init(&sp->ps);
	return 0;
}

/* A held transaction's replies are all in: aborted while the cluster was moving (nothing of it
 * ran), it goes again, first, where its slot is served now -- for at most hold_timeout. True when
 * so (or the session was freed). */
static bool tx_again(struct session *s, int member)
{
	struct session_split *sp = s->split;
	struct session_host *h = s->host;
	int64_t now = now_ms();

	if (!resp_cluster_tx_moved(evbuffer_pullup(sp->acc, -1), evbuffer_get_length(sp->acc), sp->count) ||
	    (s->state != SESSION_ACTIVE && s->state != SESSION_DRAINING) || s->client_eof || h->ops->stopping(h) ||
	    (s->later_until_ms != 0 && now >= s->later_until_ms))
		return false;
	if (s->later_until_ms == 0)
		s->later_until_ms = now + h->cfg->hold_timeout_ms;
	if (client_input(s) == NULL || evbuffer_prepend_buffer(s->client_in, sp->tx) < 0) {
		session_destroy(s);
		return true;
	}
	h->counters.retried++;
	s->tx_multi = false;
	s->tx_deferred = sp->tx_prefix;
	s->own_member = -1;
	sp->is_tx = false;
	sp->left = 0;
	evbuffer_drain(sp->acc, evbuffer_get_length(sp->acc));
	s->avoid_member = member;
	s->avoid_until_ms = now + SESSION_LATER_MS;
	if (hold_again(s, "(a transaction the cluster refused while moving: sent again)"))
		return true;
	route_if_ready(s);
	return true;
}

static bool shared_input(struct session *s, const uint8_t *p, size_t n);

/* cluster = on, while a transaction or a blocking command is under way: the session's commands go
 * on its own connection, in order; what repoint answers itself is answered once everything before
 * it is. Once it is over, the session goes on on the shared connections (`fresh`: it starts with the
 * first command in client_in, nothing of it looked at yet). True when freed. */
static bool own_input(struct session *s, bool fresh)
{
	static const char multi[] = "*1\r\n$5\r\nMULTI\r\n", discard[] = "*1\r\n$7\r\nDISCARD\r\n";
	struct evbuffer *in = client_input(s);

	if (in == NULL) {
		session_destroy(s);
		return true;
	}
	for (;;) {
		size_t total = evbuffer_get_length(in), off = 0, len = 0;
		uint32_t ncmds = 0;
		bool prefix = false, hold = false, again = false;
		size_t tx_from = SIZE_MAX, tx_to = 0;  /* a whole transaction in this batch */
		const uint8_t *buf;

		if (!fresh && own_done(s)) {
			s->own_active = false;
			s->own_member = s->own_slot = -1;
			s->tx_dirty = s->tx_lost = false;
			if (total > 0)
				return shared_input(s, NULL, 0);
			shared_flow(s);
			return false;
		}
		if (total == 0)
			break;
		buf = evbuffer_pullup(in, -1);
		while (off < total) {
			const char *reply;
			bool discard_first;
			int k = resp_command_len(buf + off, total - off, share_max(s), &len);
			enum own_act act;
			enum resp_own kind;
			bool ends;

			if (k < 0 && (ncmds > 0 || s->shared_out > 0))
				break;
			if (k < 0) {
				resp_error(s->client.out, "ERR", "Protocol error: repoint reads commands as RESP arrays "
								 "of at most 4 MiB in cluster mode");
				close_after_flush(s, "(a command repoint cannot read in cluster mode)");
				return true;
			}
			if (k == 0)
				break;
			act = own_decide(s, buf + off, len, total - off, &reply, &discard_first, &hold);
			if (act == OWN_WAIT)
				break;
			if (act == OWN_LOCAL) {
				if (ncmds > 0 || s->shared_out > 0)
					break;  /* answered in order, once what is before it is */
				if (discard_first && !shared_send(s->own, NULL, (const uint8_t *)discard, sizeof(discard) - 1, 1)) {
					session_destroy(s);
					return true;
				}
				if (reply == NULL) {
					if (cluster_answer(s, buf + off, len, KEYSPEC_UNKNOWN))
						return true;
					if (s->tx_multi || s->tx_deferred)
						s->tx_dirty = true;  /* refused inside: EXEC aborts, as Redis's */
				} else if (!side_send(&s->client, (const uint8_t *)reply, strlen(reply))) {
					session_destroy(s);
					return true;
				} else {
					bool in_multi = s->tx_multi || s->tx_deferred;
					kind = resp_cluster_own(buf + off, len);
					if ((kind == RESP_OWN_EXEC || kind == RESP_OWN_DISCARD) && in_multi) {
						/* The transaction ends here (and the WATCH with it). */
						s->tx_multi = s->tx_deferred = s->tx_watch = false;
						s->tx_watch_lost = s->tx_dirty = s->tx_lost = false;
					} else if (kind == RESP_OWN_UNWATCH && !in_multi) {
						s->tx_watch_lost = false;
					} else if (kind == RESP_OWN_MULTI && reply[0] == '+') {
						s->tx_deferred = true;
					} else if (in_multi && (reply == crossslot_reply || s->tx_lost)) {
						s->tx_dirty = true;  /* not queued: EXEC aborts, as Redis's does */
					}
				}
				evbuffer_drain(in, off + len);
				again = true;
				break;  /* looked at again from the start */
			}
			kind = resp_cluster_own(buf + off, len);
			ends = kind == RESP_OWN_EXEC;
			if (!s->tx_multi && (s->tx_deferred || kind == RESP_OWN_MULTI) && !s->tx_watch && !s->tx_watch_lost) {
				/* A transaction starts: in a batch of its own, so that, refused while the
				 * cluster moves, it can be sent again whole. */
				if (ncmds > 0)
					break;
				if (s->shared_out == 0 && (s->split == NULL || s->split->left == 0))
					tx_from = off;
			}
			if (s->tx_deferred) {
				/* The MULTI repoint answered goes first; its reply was the client's already. */
				prefix = true;
				s->tx_deferred = false;
				s->tx_multi = true;
			}
			if (kind == RESP_OWN_BLOCKING && ncmds == 0 && !s->tx_multi && !s->tx_deferred && !s->tx_watch &&
			    !s->tx_watch_lost && s->shared_out == 0 && (s->split == NULL || s->split->left == 0)) {
				/* A blocking command alone: refused because its shard failed over (the
				 * old primary unblocks it with MOVED), it waits again at the new one. */
				tx_from = off;
				ends = true;  /* ... and what follows waits for its answer */
			}
			own_track(s, buf + off, len);
			off += len;
			ncmds++;
			if (ends && tx_from != SIZE_MAX && off - tx_from <= SESSION_RETRY_MAX) {
				tx_to = off;
				break;  /* what follows waits for its answer: it may be sent again first */
			}
		}
		if (ncmds > 0) {
			if ((prefix && !shared_send(s->own, NULL, (const uint8_t *)multi, sizeof(multi) - 1, 1)) ||
			    !shared_send(s->own, s, buf, off, ncmds)) {
				session_destroy(s);
				return true;
			}
			/* Never sent again: inside a transaction its place matters, and a blocking
			 * command must not go to a shared connection. */
			s->retry_valid = false;
			s->retry_len = 0;
			if (tx_to > 0 && tx_hold(s, buf + tx_from, tx_to - tx_from, prefix, ncmds) < 0) {
				session_destroy(s);
				return true;
			}
			s->sh = s->own;
			s->sh_write = true;
			s->shared_out += ncmds;
			s->shared_bytes += off;
			s->host->counters.shared_commands += ncmds;
			s->host->counters.bytes_client_to_server += off;
			s->bytes_in += off;
			s->active_ms = now_ms_coarse();
			evbuffer_drain(in, off);
		}
		if (hold && s->shared_out == 0) {
			if (hold_again(s, "(waiting for its transaction's shard)"))
				return true;
			route_if_ready(s);
			return false;
		}
		fresh = false;
		if (!again)
			break;
	}
	shared_flow(s);
	return false;
}

/* resp_share_scan, but a copy of a data-set-wide command for one shard (cluster_split) is sent as
 * any shareable command, a write. */
static enum resp_share share_scan(struct session *s, const uint8_t *p, size_t n, size_t *len, bool *write)
{
	enum resp_share r = resp_share_scan(p, n, share_max(s), len, write);

	if (r == RESP_SHARE_NO && s->split != NULL && s->split->fan_next < s->split->fan_n &&
	    resp_command_len(p, n, share_max(s), len) == 1) {
		*write = true;
		return RESP_SHARE_YES;
	}
	return r;
}

/* Client bytes of a shared session (p may be NULL: look at client_in again): the complete
 * commands at the front that may share go now, in one piece; the rest waits in client_in.
 * Returns true when the session was freed. */
static bool shared_input(struct session *s, const uint8_t *p, size_t n)
{
	struct service_counters *c = &s->host->counters;
	struct shared *sh;
	bool buffered = s->client_in != NULL && evbuffer_get_length(s->client_in) > 0;

	if (s->own_active) {
		/* A transaction or a blocking command is under way: on the session's own connection. */
		if (n > 0 && (client_input(s) == NULL || evbuffer_add(s->client_in, p, n) < 0)) {
			session_destroy(s);
			return true;
		}
		return own_input(s, false);
	}
	if (!s->barrier && s->host->ops->barred(s->host)) {
		/* Another session's pinning command is not with the server yet: nothing shared overtakes
		 * it. A session whose own next command pins sends nothing shared and goes on (else
		 * sessions pinning at once would each wait for the one before to be greeted). */
		if (n > 0 && (client_input(s) == NULL || evbuffer_add(s->client_in, p, n) < 0)) {
			session_destroy(s);
			return true;
		}
		if (!pending_pins(s)) {
			shared_flow(s);
			return false;
		}
		p = NULL;
		n = 0;
		buffered = true;
	}
	if (buffered) {
		/* Everything waiting, then what just came, in one piece. */
		if (n > 0 && evbuffer_add(s->client_in, p, n) < 0) {
			session_destroy(s);
			return true;
		}
		n = evbuffer_get_length(s->client_in);
		p = evbuffer_pullup(s->client_in, -1);
	}
	/* The first command decides which shared connection a batch goes on: reads have one of their
	 * own (a write held by CLIENT PAUSE WRITE cannot hold them up); a batch on the writes'
	 * connection may carry reads too. */
	bool write = false, w = false, cluster = s->host->cluster;
	size_t len = 0, len0;
	enum resp_share r0 = n > 0 ? share_scan(s, p, n, &len, &write) : RESP_SHARE_MORE;
	len0 = len;
	bool wait_shard = false;
	int t0 = INT_MIN;  /* the first command's cluster_target, once known: not looked up twice */
	if (cluster && r0 == RESP_SHARE_YES && s->shared_out == 0 && s->state == SESSION_ACTIVE) {
		/* The first command's shard decides where this batch goes. */
		int t = t0 = cluster_target(s, p, len0);
		if (t == -1) {
			wait_shard = true;
		} else if (t >= 0 && t != s->member) {
			s->host->ops->detach(s->host, s);
			s->host->ops->attach(s->host, s, t);
		}
	}
	sh = wait_shard ? NULL : shared_target(s, write);
	bool on_write = s->shared_out > 0 ? s->sh_write : write;
	enum resp_share r = RESP_SHARE_YES;
	const uint8_t *buf = p;
	size_t off = 0, first = 0, total = n;
	uint32_t ncmds = 0;
	bool again = false, own_now = false, asking = cluster && s->ask_member >= 0;

	if (buffered || sh == NULL) {
		struct evbuffer *in = client_input(s);
		if (in == NULL || (!buffered && n > 0 && evbuffer_add(in, p, n) < 0)) {
			session_destroy(s);
			return true;
		}
		total = evbuffer_get_length(in);
		if (sh == NULL || total < s->shared_need) {
			if (sh == NULL && !s->unshare && s->state == SESSION_ACTIVE && s->shared_out == 0) {
				/* Its member's shared connection is gone (or not ready yet): wait for one. */
				if (hold_again(s, "(waiting for a shared connection)"))
					return true;
				route_if_ready(s);
				return false;
			}
			shared_flow(s);
			return false;
		}
		buf = evbuffer_pullup(in, -1);
		buffered = true;
	}
	while (off < total) {
		if (off == 0) {
			/* The first command was scanned above already (buf holds the same bytes as p). */
			r = r0;
			len = len0;
			w = write;
		} else {
			r = share_scan(s, buf + off, total - off, &len, &w);
		}
		if (cluster && r == RESP_SHARE_NO) {
			/* Nothing gets a connection of its own in a cluster: answered here, once complete. */
			size_t clen;
			int k = resp_command_len(buf + off, total - off, share_max(s), &clen);
			if (k < 0) {
				if (ncmds > 0 || s->shared_out > 0)
					break;
				resp_error(s->client.out, "ERR", "Protocol error: repoint reads commands as RESP arrays "
								 "of at most 4 MiB in cluster mode");
				close_after_flush(s, "(a command repoint cannot read in cluster mode)");
				return true;
			}
			if (k == 0) {
				r = RESP_SHARE_MORE;
				len = clen;
				break;
			}
			if (ncmds > 0 || s->shared_out > 0)
				break;
			if (resp_cluster_own(buf + off, clen) != RESP_OWN_NONE) {
				/* A transaction or a blocking command: on a connection of the session's own. */
				own_now = true;
				break;
			}
			if (resp_cluster_pins(buf + off, clen)) {
				/* (S)SUBSCRIBE: the session becomes a subscriber on a connection of its own, to
				 * any primary (the cluster bus carries messages) or the channel's shard's. */
				s->unshare = true;
				break;
			}
			/* FLUSHALL, SCRIPT LOAD, ...: to every shard, their replies merged. */
			k = cluster_split(s, buf, off, clen, total, KEYSPEC_UNKNOWN);
			if (k < 0) {
				session_destroy(s);
				return true;
			}
			if (k == 1)
				return shared_input(s, NULL, 0);
			if (k == 0 && cluster_answer(s, buf + off, clen, KEYSPEC_UNKNOWN))
				return true;
			off += clen;
			first = off;
			continue;
		}
		if (cluster && r == RESP_SHARE_YES) {
			int t = off == 0 && t0 != INT_MIN ? t0 : cluster_target(s, buf + off, len);
			if (t == CLUSTER_LOCAL) {
				int slot;
				if (ncmds > 0 || s->shared_out > 0 || (s->split != NULL && s->split->left > 0))
					break;  /* answered in order, once what is before it is */
				slot = s->host->ops->slot(s->host, buf + off, len);
				/* MGET, MSET, DEL, ...: one command per key; DBSIZE, KEYS, SCAN, ...: to every
				 * shard (SCAN: in turn); their replies merged. */
				int k = cluster_split(s, buf, off, len, total, slot);
				if (k < 0) {
					session_destroy(s);
					return true;
				}
				if (k == 1)
					return shared_input(s, NULL, 0);
				if (k == 0 && cluster_answer(s, buf + off, len, slot))
					return true;
				off += len;
				first = off;
				continue;
			}
			if (t != s->member)
				break;  /* another shard's (or one to wait for): once what is in flight is answered */
		}
		if (r == RESP_SHARE_YES && w && !on_write)
			break;  /* a write after reads: once they are answered, on the writes' connection */
		if (r == RESP_SHARE_HELLO2 || r == RESP_SHARE_HELLO3) {
			/* Shared where the connection speaks that protocol already. A RESP2 session saying
			 * HELLO 3 moves to the RESP3 shared connection, once nothing is in flight; the
			 * other way round it pins (a RESP3 session's earlier replies were RESP3). */
			if ((r == RESP_SHARE_HELLO3) == s->resp3) {
				r = RESP_SHARE_YES;
			} else if (r == RESP_SHARE_HELLO3 && ncmds == 0 && s->shared_out == 0) {
				s->resp3 = true;
				again = true;
				break;
			} else if (r == RESP_SHARE_HELLO3) {
				break;
			} else if (cluster && ncmds == 0 && s->shared_out == 0) {
				/* No connection of its own to go back to RESP2 on. */
				if (cluster_answer(s, buf + off, len, KEYSPEC_UNKNOWN))
					return true;
				off += len;
				first = off;
				continue;
			} else {
				r = cluster ? RESP_SHARE_YES : RESP_SHARE_NO;
				break;
			}
		}
		if (r == RESP_SHARE_LOCAL) {
			/* Answered here, in order: only once everything before it is answered. */
			if (ncmds > 0 || s->shared_out > 0)
				break;
			if (!side_send(&s->client, (const uint8_t *)"+OK\r\n", 5)) {
				session_destroy(s);
				return true;
			}
			off += len;
			first = off;
			continue;
		}
		if (r != RESP_SHARE_YES)
			break;
		off += len;
		ncmds++;
		if (cluster && s->split != NULL && s->split->fan_next < s->split->fan_n)
			s->split->fan_next++;  /* that copy is on its way to its shard */
		if (asking)
			break;                 /* ASKING goes for the one command after it */
	}
	s->shared_need = r == RESP_SHARE_MORE ? len : 0;
	if (r == RESP_SHARE_NO && (!cluster || s->unshare)) {
		s->unshare = true;
		/* Its next command needs a connection of its own: until it is handed over there, no
		 * shared command read after it may leave (it could run first). */
		if (!s->barrier) {
			s->barrier = true;
			s->host->ops->barrier(s->host, true);
		}
	}
	if (ncmds > 0) {
		static const char asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";
		size_t n_sent = off - first;
		/* ASKING right before the command, its reply dropped: nothing comes between them on the
		 * connection (the loop is single-threaded, the batch queued whole). */
		if ((asking && !shared_send(sh, NULL, (const uint8_t *)asking_cmd, sizeof(asking_cmd) - 1, 1)) ||
		    !shared_send(sh, s, buf + first, n_sent, ncmds)) {
			session_destroy(s);
			return true;
		}
		/* A lone command from an idle point is kept: refused as read-only by a demoted writer,
		 * it goes to the new one. */
		s->retry_len = 0;
		s->retry_valid = s->shared_out == 0 && ncmds == 1;
		retry_append(s, buf + first, n_sent);
		if (asking)
			s->ask_member = -1;
		s->sh = sh;
		s->sh_write = on_write;
		s->shared_out += ncmds;
		s->shared_bytes += n_sent;
		c->shared_commands += ncmds;
		c->bytes_client_to_server += n_sent;
		s->bytes_in += n_sent;
		s->active_ms = now_ms_coarse();
	}
	if (buffered)
		evbuffer_drain(s->client_in, off);
	else if (off < total && evbuffer_add(client_input(s), buf + off, total - off) < 0) {
		session_destroy(s);
		return true;
	}
	if (own_now) {
		s->own_active = true;
		s->own_member = s->own_slot = -1;
		return own_input(s, true);
	}
	if (s->unshare && s->shared_out == 0)
		return pin(s);
	if (again)
		return shared_input(s, NULL, 0);
	shared_flow(s);
	return false;
}

/* Bind a held shared session to `member`'s shared connection, if it is up. */
static bool bind_shared(struct session *s, int member)
{
	bool write = pending_write(s);
	struct shared *sh = s->host->ops->shared(s->host, member, s->resp3, write);
	char what[160];

	if (sh == NULL) {
		/* It failed a moment ago: try again shortly (hold_timeout still bounds the wait). */
		s->avoid_member = member;
		s->avoid_until_ms = now_ms() + SESSION_AVOID_MS;
		return hold(s, "(no shared connection to the writer)");
	}
	if (!shared_ready(sh))
		return hold(s, "(connecting to the writer)");
	evtimer_del(s->timer);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	s->host->ops->attach(s->host, s, member);
	snprintf(what, sizeof(what), "(shared connection to %s)", s->host->ops->member_str(s->host, member));
	set_state(s, SESSION_ACTIVE, what);
	if (s->replay) {
		/* The request a demoted writer refused goes first. */
		s->replay = false;
		if (!shared_send(sh, s, s->retry, s->retry_len, 1)) {
			session_destroy(s);
			return true;
		}
		s->retry_valid = true;
		s->sh = sh;
		s->sh_write = write;
		s->shared_out = 1;
		s->shared_bytes = s->retry_len;
		s->host->counters.shared_commands++;
	}
	return shared_input(s, NULL, 0);
}

void session_shared_reply(struct session *s, const uint8_t *p, size_t n, uint32_t replies, uint32_t done_bytes)
{
	struct session_host *svc = s->host;
	const struct proto_ops *proto = svc->proto;
	int member = s->member;
	bool readonly = false;

	s->shared_out -= replies <= s->shared_out ? replies : s->shared_out;
	s->shared_bytes -= done_bytes <= s->shared_bytes ? done_bytes : s->shared_bytes;
	if (s->shared_out == 0)
		s->sh = NULL;
	if (replies == 1 && svc->cluster && n > 5 && memcmp(p, "-ASK ", 5) == 0 && s->shared_out == 0 && s->retry_valid &&
	    s->retry_len > 0 && s->retry_streak < SESSION_RETRY_STREAK_MAX &&
	    (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && !svc->ops->stopping(svc) && !s->client_eof &&
	    (s->ask_member = svc->ops->slot_asked(svc, member, p, n)) >= 0) {
		/* The slot is migrating and the key has left: the command did not run here, and goes
		 * once, after ASKING, to the node importing the slot. */
		struct evbuffer *in = client_input(s);
		s->retry_streak++;
		svc->counters.retried++;
		if (in == NULL || evbuffer_prepend(in, s->retry, s->retry_len) < 0) {
			session_destroy(s);
			return;
		}
		s->retry_valid = false;
		s->retry_len = 0;
		shared_input(s, NULL, 0);
		return;
	}
	if (replies > 0 && proto->later_reply != NULL) {
		/* Refused for a moment without running (a cluster settling after a failover): a lone
		 * request from an idle point is sent again a little later, on whichever node serves its
		 * slot then -- for at most hold_timeout, then the client gets the refusal. */
		size_t lr = proto->later_reply(p, n);
		int64_t now = now_ms();
		if (lr == 0) {
			s->later_until_ms = 0;
		} else if (lr == n && replies == 1 && s->shared_out == 0 && s->retry_valid && s->retry_len > 0 &&
			   (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && !svc->ops->stopping(svc) &&
			   !s->client_eof && (s->later_until_ms == 0 || now < s->later_until_ms)) {
			if (s->later_until_ms == 0)
				s->later_until_ms = now + svc->cfg->hold_timeout_ms;
			svc->counters.retried++;
			s->avoid_member = member;
			s->avoid_until_ms = now + SESSION_LATER_MS;
			if (!migrate(s, "the server refused a request for a moment", true))
				route_if_ready(s);
			return;
		}
	}
	if (replies > 0) {
		size_t ro = proto->readonly_reply(p, n);
		if (ro == 0) {
			s->retry_streak = 0;
		} else if (ro == n && replies == 1 && s->shared_out == 0 && s->retry_valid && s->retry_len > 0 &&
			   svc->cluster && s->retry_streak < SESSION_RETRY_STREAK_MAX &&
			   (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && !svc->ops->stopping(svc) &&
			   !s->client_eof && svc->ops->slot_moved(svc, member, p, n)) {
			/* A resharding moved the command's slot to another shard, whose primary is
			 * confirmed: it did not run here, and goes there. */
			retry_elsewhere(s);
			return;
		} else if (ro == n && replies == 1 && s->shared_out == 0 && s->retry_valid && s->retry_len > 0 &&
			   s->retry_streak < SESSION_RETRY_STREAK_MAX &&
			   (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) &&
			   svc->cfg->route == ROUTE_WRITER && !svc->ops->stopping(svc) && !s->client_eof &&
			   confirm_readonly(s, member, p, n)) {
			return;
		} else {
			readonly = true;
		}
	}
	svc->counters.bytes_server_to_client += n;
	s->bytes_out += n;
	s->active_ms = now_ms_coarse();
	/* Large replies go on a connection of the session's own from now on, like large commands. */
	s->shared_reply += n;
	if (!svc->cluster &&
	    (replies > 0 ? s->shared_reply > (size_t)SESSION_SHARE_MAX * replies : s->shared_reply > SESSION_SHARE_MAX))
		s->unshare = true;
	if (replies > 0)
		s->shared_reply = 0;
	if (s->split != NULL && s->split->left > 0 && n > 0) {
		/* The replies of a split command's per-key commands: gathered, then merged into one. */
		uint64_t got = 0;
		size_t k = resp_replies_scan(&s->split->ps, p, n, s->split->left, &got);
		if (k == (size_t)-1 || evbuffer_add(s->split->acc, p, k) < 0) {
			close_after_flush(s, "(the replies of a split command could not be read)");
			return;
		}
		s->split->left -= got <= s->split->left ? (uint32_t)got : s->split->left;
		if (s->split->left == 0 && s->split->is_tx && tx_again(s, member))
			return;
		if (s->split->left == 0) {
			struct evbuffer *merged = evbuffer_new();
			bool ok = merged != NULL;
			if (ok && s->split->is_tx) {
				s->split->is_tx = false;
				s->later_until_ms = 0;
				ok = evbuffer_add_buffer(merged, s->split->acc) == 0;
			} else if (ok && s->split->scan) {
				resp_cluster_scan_reply(evbuffer_pullup(s->split->acc, -1), evbuffer_get_length(s->split->acc),
							s->split->scan_slot, s->split->scan_next, merged);
			} else if (ok) {
				resp_cluster_merge(s->split->kind, evbuffer_pullup(s->split->acc, -1),
						   evbuffer_get_length(s->split->acc), s->split->count, s->resp3, merged);
			}
			ok = ok && side_send(&s->client, evbuffer_pullup(merged, -1), evbuffer_get_length(merged));
			if (merged != NULL)
				evbuffer_free(merged);
			evbuffer_drain(s->split->acc, evbuffer_get_length(s->split->acc));
			if (!ok) {
				session_destroy(s);
				return;
			}
		}
		p += k;
		n -= k;
	}
	if (n > 0 && !side_send(&s->client, p, n)) {
		session_destroy(s);
		return;
	}
	if (s->shared_out == 0 && s->unshare) {
		if (pin(s))
			return;
	} else if (s->shared_out == 0 && s->state == SESSION_DRAINING) {
		if (drain_now(s, true))
			return;
	} else if (s->client_in != NULL && evbuffer_get_length(s->client_in) > 0 && s->state == SESSION_ACTIVE) {
		if (shared_input(s, NULL, 0))
			return;
	} else {
		shared_flow(s);
	}
	if (s->client_eof && s->shared_out == 0) {
		close_after_flush(s, "(the client had closed its side)");
		return;
	}
	if (readonly)
		svc->ops->probe_soon(svc, member);  /* a reason to ask, never an observation */
}

void session_shared_unsent(struct session *s, struct evbuffer *unsent)
{
	struct evbuffer *in = client_input(s);

	if (in == NULL || evbuffer_prepend_buffer(in, unsent) < 0) {
		evbuffer_free(unsent);
		close_after_flush(s, "(shared connection lost; out of memory)");
		return;
	}
	evbuffer_free(unsent);
	/* The service releases it once there is a connection to send them on. */
	if (!hold_again(s, "(its shared connection failed before its commands left)"))
		s->host->ops->kick_held(s->host);
}

void session_shared_kick(struct session *s)
{
	if (s->client_in != NULL && evbuffer_get_length(s->client_in) > 0)
		shared_input(s, NULL, 0);
	else
		shared_flow(s);
}

size_t session_owed(const struct session *s)
{
	return side_owed(&s->client);
}

void session_shared_lost(struct session *s, const char *why)
{
	char reason[200];

	if (s->host->cluster && s->shared_out > 0 && s->shared_reply == 0 && s->member >= 0 &&
	    (s->split == NULL || s->split->left == 0) &&
	    (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && !s->client_eof) {
		/* A cluster session has other shards to go on with, and no reply is half passed on: each
		 * command in flight on the lost connection is answered that it may or may not have run
		 * (never sent again: it may have), and the session goes on -- its next command to that
		 * shard waits for its new primary. */
		struct evbuffer *out = evbuffer_new();
		char msg[400];
		bool ok;

		if (out == NULL) {
			session_destroy(s);
			return;
		}
		snprintf(msg, sizeof(msg), "repoint: the connection to %s was lost (%s) with this command in flight: "
					   "it may or may not have run", s->host->ops->member_str(s->host, s->member), why);
		for (uint32_t i = 0; i < s->shared_out; i++)
			resp_error(out, "ERR", msg);
		s->host->counters.outcome_unknown += s->shared_out;
		s->sh = NULL;
		s->shared_out = 0;
		s->shared_bytes = 0;
		s->retry_valid = false;
		s->retry_len = 0;
		ok = side_send(&s->client, evbuffer_pullup(out, -1), evbuffer_get_length(out));
		evbuffer_free(out);
		if (!ok) {
			session_destroy(s);
			return;
		}
		if (!hold_again(s, "(going on after its shard's connection was lost)"))
			s->host->ops->kick_held(s->host);
		return;
	}

	snprintf(reason, sizeof(reason), "(shared connection lost: %s)", why);
	close_after_flush(s, reason);
}

static bool connect_to(struct session *s, int member);

/* The client's first bytes, in a protocol that has cancel requests: they wait in client_in until
 * it is known whether they are one. A cancel request goes once to the member of the session it
 * names (not to whatever a new session would get), and the connection closes when that server
 * closes it; one that names no session here is dropped. Nothing of it is ever replayed or
 * counted against a member. */
/* --- auth = repoint (proto->login): repoint's own side of the session's start --- */

static bool on_connected(struct session *s);
static bool connect_failed(struct session *s, const char *why);
static void relogin_cb(evutil_socket_t fd, short what, void *arg);
static bool member_auth_refused(struct session *s, const char *why, bool by_member);

static void login_forget(struct session *s)
{
	if (s->login != NULL)
		s->host->proto->login->destroy(s->login);
	s->login = NULL;
	if (s->login_in != NULL)
		evbuffer_free(s->login_in);
	s->login_in = NULL;
}

static void login_back_step(struct session *s);
static void tls_begin(struct session *s);
static void client_tls_requested(struct session *s, struct evbuffer *in, size_t k, const uint8_t *answer, size_t alen);

/* The client's start, answered by repoint: once it is authenticated, the session goes to a member
 * (or, where the member speaks first, repoint's login to it goes on). */
static void login_front(struct session *s)
{
	struct evbuffer *in = client_input(s);

	if (in == NULL) {
		session_destroy(s);
		return;
	}
	switch (s->host->proto->login->front(s->login, in, s->client.out)) {
	case PROTO_LOGIN_MORE:
		if (!side_flush(&s->client))
			session_destroy(s);
		return;
	case PROTO_LOGIN_TLS:
		/* The client asked for TLS (the greeting offered it): the handshake is repoint's; its hello
		 * comes through it. Nothing may follow the request in plaintext (login_client_read). */
		client_tls_requested(s, in, 0, NULL, 0);
		return;
	case PROTO_LOGIN_FAIL:
		s->host->counters.client_auth_failures++;
		close_after_flush(s, "(authentication failed)");
		return;
	case PROTO_LOGIN_DONE:
		if (!side_flush(&s->client)) {
			session_destroy(s);
			return;
		}
		if (!s->host->proto->login->member_first || s->member < 0)
			route(s);  /* (member_first: greeted from a kept connection, or its member was lost) */
		else if (s->logging_in)
			login_back_step(s);  /* the member waits for repoint's answer to its greeting */
		/* (else the member's greeting, when it comes, finds the client authenticated) */
		return;
	}
}

static size_t packet_bound(const struct session *s, struct evbuffer *in);

/* The client's hello to repoint's greeting when it may ask for TLS first: read not a byte past the
 * packet (packet_bound), then answered (login_front). */
static void login_client_read(struct session *s)
{
	struct evbuffer *in = client_input(s);
	ssize_t r;

	if (in == NULL) {
		session_destroy(s);
		return;
	}
	r = s->client.conn.ops->read(&s->client.conn, session_io, packet_bound(s, in));
	if (r == -2)
		return;
	if (r <= 0) {
		client_gone(s, r < 0);
		return;
	}
	if (evbuffer_add(in, session_io, (size_t)r) < 0) {
		session_destroy(s);
		return;
	}
	login_front(s);
}

/* Connected to a member (and through TLS): repoint logs in before anything of the client's goes. */
static bool login_back_begin(struct session *s)
{
	const struct proto_login_ops *lo = s->host->proto->login;
	char why[256], *pw = NULL;
	int r = 0;

	if (s->login_tls) {
		/* Through the TLS the login asked for: it goes on where it was. */
		s->login_tls = false;
		s->logging_in = true;
		side_reading(&s->upstream, true);
		login_back_step(s);
		return false;
	}
	if (s->login_in == NULL && (s->login_in = evbuffer_new()) == NULL)
		return connect_failed(s, "out of memory");
	/* The member's password is for the client's user: where the member speaks first, the client may
	 * not have said who it is yet (login_member_password, then). */
	s->member_pw_pending = s->host->ops->member_password != NULL && !lo->front_done(s->login);
	if (s->host->ops->member_password != NULL && !s->member_pw_pending &&
	    (r = s->host->ops->member_password(s->host, s->member, lo->user(s->login), &pw, why, sizeof(why))) < 0)
		return member_auth_refused(s, why, false);
	lo->back_start(s->login, s->upstream.out, r > 0 ? pw : NULL, s->host->ops->tls(s->host) != NULL);
	s->login_own_pw = r > 0;
	if (pw != NULL) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	s->logging_in = true;
	side_reading(&s->upstream, true);
	if (!side_flush(&s->upstream))
		return connect_failed(s, "cannot send the login");
	return false;
}

/* The member's answers while repoint logs in. Done, the session is the member's (the first time,
 * the client hears that it is in; a moved session tells it nothing). */
static void login_back_read(struct session *s)
{
	ssize_t r = read_once(&s->upstream);

	if (r == -2)
		return;
	if (r <= 0 && s->changing_user) {
		close_after_flush(s, "(its server went away during COM_CHANGE_USER)");
		return;
	}
	if (r <= 0) {
		connect_failed(s, r == 0 ? "closed while repoint logged in" : strerror(errno));
		return;
	}
	evbuffer_add(s->login_in, session_io, (size_t)r);
	login_back_step(s);
}

/* The member's password for the client's user, now that it is known (member_pw_pending). False when
 * the session was handed on (refused). */
static bool login_member_password(struct session *s)
{
	const struct proto_login_ops *lo = s->host->proto->login;
	char why[256], *pw = NULL;
	int r;

	s->member_pw_pending = false;
	if ((r = s->host->ops->member_password(s->host, s->member, lo->user(s->login), &pw, why, sizeof(why))) < 0) {
		member_auth_refused(s, why, false);
		return false;
	}
	if (r > 0)
		lo->set_member_password(s->login, pw);
	s->login_own_pw = r > 0;
	if (pw != NULL) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	return true;
}

/* The member's login answers so far (login_in) read: on, done, or failed. */
static void login_back_step(struct session *s)
{
	const struct proto_ops *proto = s->host->proto;
	bool told = proto->login->told(s->login);
	char err[256];

	if (s->member_pw_pending && proto->login->front_done(s->login) && !login_member_password(s))
		return;
	err[0] = '\0';
	switch (proto->login->back(s->login, s->login_in, s->upstream.out, s->client.out, err, sizeof(err))) {
	case PROTO_LOGIN_MORE:
		/* (A member that speaks first: its greeting, made repoint's, goes to the client.) */
		if (evbuffer_get_length(s->client.out) > 0 && !side_flush(&s->client)) {
			client_gone(s, true);
			return;
		}
		if (!side_flush(&s->upstream))
			connect_failed(s, "cannot send the login");
		return;
	case PROTO_LOGIN_FAIL: {
		size_t n = evbuffer_get_length(s->client.out);
		const uint8_t *p = evbuffer_pullup(s->client.out, -1);
		char reason[300];
		snprintf(reason, sizeof(reason), "(logging in to %s: %s)", s->host->ops->member_str(s->host, s->member), err);
		if (s->login_own_pw)
			s->host->ops->member_login_refused(s->host, s->member, err);
		if (told && !s->changing_user) {
			/* A moved session the new member would not take as it was: it ends here, which the
			 * operator hears of (a first login's refusal is the client's to hear). */
			char subj[160];
			log_warn(subject(s, subj, sizeof(subj)), "could not move: %s", reason);
			count_unmovable_as(s, "login_failed");
		}
		if (!told && proto->startup_refusal != NULL && n > 0 && proto->startup_refusal(p, n) == n &&
		    s->restarts < SESSION_RESTARTS_MAX && !s->host->ops->stopping(s->host)) {
			/* A member that takes no new sessions now (shutting down, starting): another may. */
			evbuffer_drain(s->client.out, n);
			s->starting = true;
			s->retry_valid = true;
			s->retry_len = 0;   /* nothing of the client's to replay: repoint makes the start */
			restart(s, reason);
			return;
		}
		close_after_flush(s, reason);
		return;
	}
	case PROTO_LOGIN_TLS: {
		/* The member speaks first and is asked for TLS inside its login: the request goes whole,
		 * in plaintext, then the handshake (tls_step); done, on_connected resumes the login. */
		size_t n = evbuffer_get_length(s->upstream.out);
		if (evbuffer_get_length(s->client.out) > 0 && !side_flush(&s->client)) {
			client_gone(s, true);
			return;
		}
		if (evbuffer_get_length(s->login_in) > 0) {
			connect_failed(s, "the member sent more before the TLS handshake");
			return;
		}
		if (s->upstream.conn.ops->write(&s->upstream.conn, evbuffer_pullup(s->upstream.out, -1), n) != (ssize_t)n) {
			connect_failed(s, "cannot send the TLS request");
			return;
		}
		evbuffer_drain(s->upstream.out, n);
		s->logging_in = false;
		s->login_tls = true;
		tls_begin(s);
		return;
	}
	case PROTO_LOGIN_DONE:
		break;
	}
	s->logging_in = false;
	s->logged_in = true;
	if (err[0] != '\0') {
		char subj[160];
		log_info(subject(s, subj, sizeof(subj)), "logged in to %s: %s", s->host->ops->member_str(s->host, s->member),
			 err);
	}
	proto->login->track_idle(s->login, &s->ps);
	if (s->changing_user) {
		/* The session is the new user's, as a fresh login leaves it; the client has its answer. */
		s->changing_user = false;
		if (!side_flush(&s->client))
			client_gone(s, true);
		return;
	}
	if (on_connected(s))
		return;
	/* What the member sent right behind its ReadyForQuery (a notice, a parameter) is the client's. */
	if (evbuffer_get_length(s->login_in) > 0) {
		size_t n = evbuffer_get_length(s->login_in);
		proto->feed(&s->ps, PROTO_SERVER_TO_CLIENT, evbuffer_pullup(s->login_in, -1), n);
		s->host->counters.bytes_server_to_client += n;
		s->bytes_out += n;
		evbuffer_add_buffer(s->client.out, s->login_in);
		told = false;  /* flush below */
	}
	if (!told && !side_flush(&s->client))
		client_gone(s, true);
}

/* --- auth = repoint with one-command logins (proto->login_command: Redis AUTH) --- */

static void auth_reply_reset(struct session *s)
{
	resp_replies_init(&s->auth_ps);
	s->auth_reply_len = 0;
	s->auth_reply[0] = '\0';
}

/* Takes the login's one reply from p[0..n): 1 when it is complete (*used: its bytes), 0 when more
 * is to come, -1 when it is not RESP. Its start is kept to say why it was refused. */
static int auth_reply_take(struct session *s, const uint8_t *p, size_t n, size_t *used)
{
	uint64_t got = 0;
	size_t u = resp_replies_scan(&s->auth_ps, p, n, 1, &got);
	size_t room = sizeof(s->auth_reply) - 1 - s->auth_reply_len;

	if (u == (size_t)-1)
		return -1;
	if (u < room)
		room = u;
	for (size_t i = 0; i < room; i++) {
		/* From the member: one printable line of it, no more. */
		char c = (char)p[i];
		s->auth_reply[s->auth_reply_len++] = c >= 0x20 && c < 0x7f ? c : c == '\r' || c == '\n' ? '\0' : '?';
	}
	s->auth_reply[s->auth_reply_len] = '\0';
	*used = u;
	return got > 0 ? 1 : 0;
}

static void relogin_arm(struct session *s, int64_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	if (s->relogin_ev != NULL)
		evtimer_add(s->relogin_ev, &tv);
}

/* The member refused repoint's login (by_member), or there is no credential to log in with: the
 * session waits and tries again (a rotated secret is looked at again meanwhile), until its hold
 * deadline. Never an observation of the member's health. True when the session was freed. */
static bool member_auth_refused(struct session *s, const char *why, bool by_member)
{
	int member = s->member;
	char reason[300];

	snprintf(reason, sizeof(reason), "(logging in to %s: %s)", s->host->ops->member_str(s->host, member), why);
	if (by_member)
		s->host->ops->member_login_refused(s->host, member, why);
	drop_upstream(s);
	s->avoid_member = member;
	s->avoid_until_ms = now_ms() + SESSION_LOGIN_RETRY_MS;
	return hold(s, reason);
}

/* Connected (and through TLS): repoint's login goes first; nothing of the client's before its
 * answer. True when the session was freed. */
static bool member_auth_begin(struct session *s)
{
	char why[256];
	int r = s->host->ops->member_login(s->host, s->member, s->upstream.out, why, sizeof(why));

	if (r == 0) {
		s->member_authed = true;
		return on_connected(s);
	}
	if (r < 0)
		return member_auth_refused(s, why, false);
	auth_reply_reset(s);
	s->member_authing = true;
	side_reading(&s->upstream, true);
	if (!side_flush(&s->upstream))
		return connect_failed(s, "cannot send the login");
	return false;
}

/* The member's answer to repoint's login, read off the upstream: 1 complete (auth_reply holds its
 * start), 0 more to come, -1 the connection ended (*r: read_once's result), -2 not an answer
 * (*why says how). */
static int login_answer_read(struct session *s, ssize_t *r, const char **why)
{
	size_t used = 0;

	*r = read_once(&s->upstream);
	if (*r == -2)
		return 0;
	if (*r <= 0)
		return -1;
	switch (auth_reply_take(s, session_io, (size_t)*r, &used)) {
	case -1:
		*why = "its answer to repoint's login is not RESP";
		return -2;
	case 0:
		return 0;
	}
	if (used != (size_t)*r) {
		*why = "it sent more than its answer to repoint's login";
		return -2;
	}
	return 1;
}

static void member_auth_read(struct session *s)
{
	const char *why = NULL;
	ssize_t r;

	switch (login_answer_read(s, &r, &why)) {
	case 0:
		return;
	case -1:
		connect_failed(s, r == 0 ? "closed while repoint logged in" : strerror(errno));
		return;
	case -2:
		connect_failed(s, why);
		return;
	}
	s->member_authing = false;
	if (s->auth_reply[0] == '-') {
		member_auth_refused(s, s->auth_reply + 1, true);
		return;
	}
	s->member_authed = true;
	if (s->relogin_ev == NULL)
		s->relogin_ev = evtimer_new(s->host->base, relogin_cb, s);
	relogin_arm(s, s->host->cfg->reauth_interval_ms);
	on_connected(s);
}

/* Due to log in again: at an idle point (nothing in flight, not subscribed, the login repoint's),
 * the login goes in on the connection, the client paused until its answer. */
static void relogin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	const struct proto_ops *proto = s->host->proto;
	char why[256];
	int r;

	(void)fd;
	(void)what;
	if (s->state != SESSION_ACTIVE || s->shared || !s->member_authed || s->relogging || s->resp3 ||
	    proto->can_relogin == NULL)
		return;
	if (!proto->can_relogin(&s->ps) || s->confirming || s->client.paused || s->client_eof ||
	    evbuffer_get_length(s->upstream.out) > 0) {
		relogin_arm(s, SESSION_RELOGIN_BUSY_MS);
		return;
	}
	r = s->host->ops->member_login(s->host, s->member, s->upstream.out, why, sizeof(why));
	if (r <= 0) {
		if (r < 0)
			log_warn(s->host->name, "session %llu: cannot log in again now: %s", (unsigned long long)s->id, why);
		relogin_arm(s, SESSION_RELOGIN_FAILED_MS);
		return;
	}
	auth_reply_reset(s);
	s->relogging = true;
	s->client.paused = true;
	side_reading(&s->client, false);
	if (!side_flush(&s->upstream))
		upstream_write_failed(s);
}

/* The answer to a new login on an active connection: the client goes on either way (a refused
 * new login leaves the old one in place; it is tried again later). */
static void relogin_read(struct session *s)
{
	const char *why = NULL;
	char reason[96];
	ssize_t r;

	switch (login_answer_read(s, &r, &why)) {
	case 0:
		return;
	case -1:
		s->relogging = false;
		s->client.paused = false;
		upstream_gone(s, r < 0);
		return;
	case -2:
		snprintf(reason, sizeof(reason), "(%s)", why);
		close_after_flush(s, reason);
		return;
	}
	s->relogging = false;
	s->host->counters.relogins++;
	if (s->auth_reply[0] == '-') {
		s->host->ops->member_login_refused(s->host, s->member, s->auth_reply + 1);
		relogin_arm(s, SESSION_RELOGIN_FAILED_MS);
	} else {
		relogin_arm(s, s->host->cfg->reauth_interval_ms);
	}
	s->client.paused = false;
	side_reading(&s->client, !s->client_eof);
}

/* --- TLS clients (listen_tls) --- */

/* The client's handshake goes on as its socket allows; done, what it is owed goes out and its
 * bytes are read (in plaintext from here on). A failed handshake closes the client: true when the
 * session was freed. */
static bool client_tls_step(struct session *s)
{
	char err[256], subj[160];
	int r = net_conn_handshake(&s->client.conn, err, sizeof(err));

	if (r == EAGAIN) {
		side_writing(&s->client, s->client.conn.want == EV_WRITE);
		return false;
	}
	if (r != 0) {
		log_debug(subject(s, subj, sizeof(subj)), "client's TLS handshake failed: %s", err);
		s->host->counters.client_tls_failures++;
		session_destroy(s);
		return true;
	}
	s->client.handshaking = false;
	side_writing(&s->client, false);
	if (!side_flush(&s->client)) {
		client_gone(s, true);
		return true;
	}
	if (s->client.reading && s->client.conn.ops->pending(&s->client.conn))
		event_active(s->client.rev, EV_READ, 1);
	return false;
}

/* True when the session was freed. */
static bool client_tls_begin(struct session *s)
{
	struct net_tls *t = s->host->ops->listen_tls(s->host);

	if (t == NULL || !net_conn_accept_tls(&s->client.conn, t)) {
		session_destroy(s);
		return true;
	}
	s->client.handshaking = true;
	return client_tls_step(s);
}

/* A client's TLS request, the first k bytes of `in`, is granted: the answer (if the protocol has one)
 * goes out and the handshake begins. Anything sent after the request, before the handshake, would be
 * taken as part of the TLS session by a careless server (CVE-2021-23214): such a client is closed. */
static void client_tls_requested(struct session *s, struct evbuffer *in, size_t k, const uint8_t *answer, size_t alen)
{
	if (evbuffer_get_length(in) > k) {
		char subj[160];
		log_info(subject(s, subj, sizeof(subj)), "bytes after the TLS request, before the handshake: closed");
		session_destroy(s);
		return;
	}
	evbuffer_drain(in, k);
	if (alen > 0 && !side_send(&s->client, answer, alen)) {
		session_destroy(s);
		return;
	}
	(void)client_tls_begin(s);
}

/* listen_tls = on, TLS from the first byte: a handshake record starts a TLS client, anything else
 * a plaintext one. False while there is nothing to look at yet, or when the handshake took over. */
static bool client_sniffed(struct session *s)
{
	uint8_t b;
	ssize_t r = net_conn_peek(&s->client.conn, &b);

	if (r == -2)
		return false;
	s->client_sniff = false;
	if (r == 1 && b == 0x16) {
		(void)client_tls_begin(s);
		return false;
	}
	return true;
}

static void cancel_check(struct session *s, const uint8_t *p, size_t n)
{
	const struct proto_ops *proto = s->host->proto;
	struct evbuffer *in = client_input(s);
	uint8_t key[PROTO_KEY_MAX];
	size_t keylen = 0, len, k;
	const struct session *t;
	int target;

	if (in == NULL || evbuffer_add(in, p, n) < 0) {
		session_destroy(s);
		return;
	}
	len = evbuffer_get_length(in);
	/* A client asking for TLS (or GSS encryption) at the start of its session, when repoint makes
	 * the TLS to the member itself, takes TLS clients or answers the start itself (auth = repoint):
	 * with listen_tls its TLS request is answered
	 * yes and the handshake is repoint's; otherwise it is told no and goes on in plaintext on
	 * loopback. (Without either, the request passes to the member as it always did.) */
	while (len > 0 && s->client.conn.ssl == NULL && proto->negotiation_request != NULL &&
	       (s->host->ops->tls(s->host) != NULL || s->host->ops->listen_tls_mode(s->host) != LISTEN_TLS_OFF ||
		s->login != NULL)) {
		const uint8_t *head = evbuffer_pullup(in, len < 8 ? (ev_ssize_t)len : 8);
		k = proto->negotiation_request(head, len < 8 ? len : 8);
		if (k == PROTO_MORE)
			return;
		if (k == 0)
			break;
		if (s->host->ops->listen_tls_mode(s->host) != LISTEN_TLS_OFF && k == proto->tls_request_len &&
		    memcmp(head, proto->tls_request, k) == 0) {
			static const uint8_t yes = 'S';
			client_tls_requested(s, in, k, &yes, 1);
			return;
		}
		evbuffer_drain(in, k);
		len -= k;
		if (!side_send(&s->client, &proto->negotiation_refused, 1)) {
			session_destroy(s);
			return;
		}
	}
	if (len == 0)
		return;
	k = proto->cancel_request(evbuffer_pullup(in, len < 64 ? (ev_ssize_t)len : 64), len < 64 ? len : 64, key,
				  &keylen);
	if (k == PROTO_MORE)
		return;
	s->cancel_checked = true;
	if (k == 0 && s->client.conn.ssl == NULL && s->host->ops->listen_tls_mode(s->host) == LISTEN_TLS_REQUIRE) {
		/* A plaintext start where TLS is required (a plaintext cancel request is still taken:
		 * libpq before 17 sends those so). */
		refuse(s, REFUSE_TLS_REQUIRED);
		return;
	}
	if (k == 0) {
		/* An ordinary start: on as if the bytes had just arrived. */
		if (s->login != NULL) {
			login_front(s);
		} else if (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) {
			forward_client_input(s);
			if (!side_flush(&s->upstream))
				upstream_write_failed(s);
		} else if (s->state == SESSION_REFUSING) {
			refuse(s, s->refusal);
		}
		return;
	}
	s->cancel = true;
	s->starting = false;
	side_reading(&s->client, false);
	login_forget(s);
	t = s->host->ops->session_by_key(s->host, s, key, keylen);
	target = t != NULL ? t->member : -1;
	if (t != NULL && t->login != NULL) {
		/* The client has repoint's key; the member knows its own. */
		uint8_t member_key[PROTO_KEY_MAX];
		if (!proto->login->member_key(t->login, key, keylen, member_key))
			target = -1;
		else
			memcpy(evbuffer_pullup(in, (ev_ssize_t)k) + k - keylen, member_key, keylen);
	}
	if (target < 0) {
		char subj[160];
		log_debug(subject(s, subj, sizeof(subj)), "cancel request for no session of this service: dropped");
		session_destroy(s);
		return;
	}
	if (s->member == target && s->state == SESSION_ACTIVE) {
		forward_client_input(s);
		if (!side_flush(&s->upstream))
			upstream_gone(s, true);
		return;
	}
	drop_upstream(s);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	connect_to(s, target);
}

static void med_client_read(struct session *s);

/* A KILL naming a session by the id repoint's greeting gave it (proto_ops.kill_request), alone in
 * what the client sent at an idle point: rewritten to name that session's connection on its member
 * now -- or nothing there (id 0: the server's own "unknown thread") when that session is not on
 * this session's member. An id that is not repoint's goes as it is. session_io[0..n) in, its new
 * length out. */
static size_t kill_mapped(struct session *s, size_t n)
{
	const struct proto_ops *proto = s->host->proto;
	uint8_t key[PROTO_KEY_MAX], member_key[PROTO_KEY_MAX] = {0};
	size_t keylen = 0;
	const struct session *t;
	struct evbuffer *b;

	if (!proto->is_idle(&s->ps) || proto->kill_request(session_io, n, key, &keylen) != n ||
	    (t = s->host->ops->session_by_key(s->host, NULL, key, keylen)) == NULL || t->login == NULL)
		return n;
	if (!(t->member == s->member && t->logged_in && proto->login->member_key(t->login, key, keylen, member_key)))
		memset(member_key, 0, sizeof(member_key));
	if ((b = evbuffer_new()) == NULL)
		return n;
	proto->kill_rewrite(session_io, n, member_key, keylen, b);
	size_t k = evbuffer_get_length(b);
	if (k > 0 && k <= SESSION_READ_MAX) {
		evbuffer_remove(b, session_io, k);
		n = k;
	}
	evbuffer_free(b);
	return n;
}

/* A client's request to become another user (COM_CHANGE_USER), alone at an idle point in
 * session_io[0..n): its proof was for repoint's challenge, so repoint checks it, writes it again for
 * the member, and conducts the exchange that follows as a login (login_back_step); refused, the
 * client gets the error and the session ends. True when taken so. */
static bool change_user_mapped(struct session *s, size_t n)
{
	const struct proto_login_ops *lo = s->host->proto->login;

	if (n < 5 || session_io[3] != 0 || session_io[4] != 0x11 ||
	    ((size_t)session_io[0] | (size_t)session_io[1] << 8 | (size_t)session_io[2] << 16) != n - 4 ||
	    !s->host->proto->is_idle(&s->ps) || s->confirming || s->term_held)
		return false;
	if (s->login_in == NULL && (s->login_in = evbuffer_new()) == NULL) {
		session_destroy(s);
		return true;
	}
	if (lo->change_user(s->login, session_io, n, s->upstream.out, s->client.out) != 1) {
		s->host->counters.client_auth_failures++;
		close_after_flush(s, "(COM_CHANGE_USER refused)");
		return true;
	}
	s->logging_in = true;
	s->changing_user = true;
	if (!side_flush(&s->upstream))
		upstream_write_failed(s);
	return true;
}

/* A payload that nothing but the tracker's count needs (proto->payload: a large Redis value, either
 * way) goes from one socket to the other through a pipe, never copied into repoint (splice(2);
 * plain transports both sides). Only where the plain path would pass the bytes on untouched: an
 * active session of its own, nothing owed to the other side before them, nothing kept or
 * compared (a request spliced is not kept: never sent again). Returns false when the bytes are to
 * be read as usual. */
static bool splice_payload(struct session *s, enum proto_dir dir)
{
	const struct proto_ops *proto = s->host->proto;
	bool answer = dir == PROTO_SERVER_TO_CLIENT;
	struct session_side *from = answer ? &s->upstream : &s->client, *to = answer ? &s->client : &s->upstream;
	static bool broken;   /* splice(2) refused by this system (a sandbox): copy from then on */
	uint64_t run;
	ssize_t n;

	if (proto->payload == NULL || broken || from->conn.ops->splice_in == NULL || to->conn.ops->splice_out == NULL ||
	    s->client.handshaking || s->shared || s->greet || s->starting || s->txr_replaying || s->relay_on ||
	    s->confirming != CONFIRM_NONE || s->term_held || (s->txlog != NULL && s->txlog->valid) ||
	    (s->login != NULL && proto->login->map_request != NULL) || (!s->cancel_checked && proto->cancel_request != NULL) ||
	    side_owed(to) > 0)
		return false;
	run = proto->payload(&s->ps, dir);
	if (run < SESSION_SPLICE_MIN)
		return false;
	if (!net_pipe_get(&to->pipe))
		return false;
	n = from->conn.ops->splice_in(&from->conn, &to->pipe, run < SIZE_MAX ? (size_t)run : SIZE_MAX);
	if (n == -2) {
		net_pipe_put(&to->pipe);
		return true;  /* nothing there after all */
	}
	if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM)) {
		char subj[160];
		log_warn(subject(s, subj, sizeof(subj)), "splice(2) refused (%s): large values are copied", strerror(errno));
		broken = true;
		net_pipe_put(&to->pipe);
		return false;
	}
	if (n <= 0) {
		net_pipe_put(&to->pipe);
		if (answer)
			upstream_gone(s, n < 0);
		else
			client_gone(s, n < 0);
		return true;
	}
	proto->skip(&s->ps, dir, (uint64_t)n);
	s->host->counters.bytes_spliced += (uint64_t)n;
	from->big = true;
	if (answer) {
		s->host->counters.bytes_server_to_client += (uint64_t)n;
		s->bytes_out += (uint64_t)n;
	} else {
		s->retry_valid = false;
		s->host->counters.bytes_client_to_server += (uint64_t)n;
		s->bytes_in += (uint64_t)n;
	}
	s->active_ms = now_ms_coarse();
	if (!side_flush(to)) {
		if (answer)
			client_gone(s, true);
		else
			upstream_write_failed(s);
		return true;
	}
	if (to->pipe.len > 0) {
		/* The other side takes its time: this one waits until the pipe is empty. */
		side_reading(from, false);
		from->paused = true;
	}
	if (answer && s->state == SESSION_DRAINING && proto->is_idle(&s->ps))
		drain_now(s, true);
	return true;
}

static void client_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	const struct proto_ops *proto = s->host->proto;
	struct evbuffer *dst;
	ssize_t r;

	(void)fd;
	(void)what;
	if (s->client_sniff && !client_sniffed(s))
		return;
	if (s->client.handshaking) {
		client_tls_step(s);
		return;
	}
	if (s->med != 0 && (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING)) {
		med_client_read(s);
		return;
	}
	if (s->login != NULL && proto->login->member_first && s->client.conn.ssl == NULL &&
	    !proto->login->front_done(s->login) && s->host->ops->listen_tls_mode(s->host) != LISTEN_TLS_OFF &&
	    s->state != SESSION_CLOSING && s->state != SESSION_REFUSING) {
		login_client_read(s);
		return;
	}
	if (s->shared && (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING)) {
		r = read_once(&s->client);
		if (r == 0 || r == -1)
			client_gone(s, r < 0);
		else if (r > 0)
			shared_input(s, session_io, (size_t)r);
		return;
	}
	switch (s->state) {
	case SESSION_DRAINING:
		/* A new request on a session that is idle and draining: close it before the request
		 * reaches the old writer (the client sees a closed connection, not a failed write). */
		if (proto->is_idle(&s->ps)) {
			drain_now(s, true);
			return;
		}
		dst = s->upstream.out;
		break;
	case SESSION_ACTIVE:
		dst = s->upstream.out;
		break;
	case SESSION_CLOSING:
		dst = NULL;
		break;
	default:
		/* Held, connecting, refusing: kept until a server (or the refusal) takes it. */
		dst = client_input(s);
		if (dst == NULL) {
			session_destroy(s);
			return;
		}
		break;
	}
	if (dst == NULL) {
		r = read_once(&s->client);
		if (r == 0 || r == -1)
			session_destroy(s);
		return;
	}
	if ((s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && splice_payload(s, PROTO_CLIENT_TO_SERVER))
		return;
	r = read_once(&s->client);
	if (r == -2)
		return;
	if (r <= 0) {
		client_gone(s, r < 0);
		return;
	}
	if (!s->cancel_checked && proto->cancel_request != NULL) {
		cancel_check(s, session_io, (size_t)r);
		return;
	}
	if ((s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) && s->term_held) {
		/* Its server is ending the session: what the client sends now waits for the next one. */
		struct evbuffer *in = client_input(s);
		if (in == NULL || evbuffer_add(in, session_io, (size_t)r) < 0) {
			session_destroy(s);
			return;
		}
		if (evbuffer_get_length(in) >= SESSION_HELD_INPUT_MAX) {
			side_reading(&s->client, false);
			s->client.paused = true;
		}
		return;
	}
	if (s->state == SESSION_ACTIVE && pool_donate(s, session_io, (size_t)r))
		return;
	if (s->state == SESSION_ACTIVE && s->login != NULL && proto->kill_request != NULL)
		r = (ssize_t)kill_mapped(s, (size_t)r);
	if (s->state == SESSION_ACTIVE && s->login != NULL && proto->login->change_user != NULL &&
	    change_user_mapped(s, (size_t)r))
		return;
	if (s->state == SESSION_ACTIVE || s->state == SESSION_DRAINING) {
		client_bytes(s, session_io, (size_t)r);
		if (s->relay_on)
			s->relay_on = proto->upgrade->relay(&s->relay, PROTO_CLIENT_TO_SERVER, session_io, (size_t)r);
		if (!to_member(s, session_io, (size_t)r, false, false)) {
			upstream_write_failed(s);
			return;
		}
		if (evbuffer_get_length(dst) >= SESSION_HIGH_WATER) {
			side_reading(&s->client, false);
			s->client.paused = true;
		}
		return;
	}
	evbuffer_add(dst, session_io, (size_t)r);
	if (s->state == SESSION_REFUSING) {
		refuse(s, s->refusal);
		return;
	}
	if (s->login != NULL && !proto->login->front_done(s->login) && (s->cancel_checked || proto->cancel_request == NULL)) {
		login_front(s);
		return;
	}
	/* Held or connecting: stop reading past the limit; the rest waits in the kernel. */
	if (evbuffer_get_length(dst) >= SESSION_HELD_INPUT_MAX) {
		side_reading(&s->client, false);
		s->client.paused = true;
	}
}

static void tls_step(struct session *s);
static void tls_answer(struct session *s);
static void med_upstream_read(struct session *s);

/* The transaction's replay went otherwise than the client saw it the first time: the client gets
 * the refusal it would have had, and the session ends (what the client believes of its transaction
 * is true nowhere now). */
static void txr_failed(struct session *s, const char *why)
{
	char subj[160];

	log_warn(subject(s, subj, sizeof(subj)), "its transaction could not run again on the new writer (%s): "
		 "the client gets the old writer's last word on it, and the session ends", why);
	s->txr_replaying = false;
	if (s->held_reply != NULL) {   /* (none: the server closed without a word) */
		s->host->counters.bytes_server_to_client += evbuffer_get_length(s->held_reply);
		evbuffer_add_buffer(s->client.out, s->held_reply);
	}
	close_after_flush(s, "(its transaction's replay answered otherwise)");
}

/* An answer to a request of a transaction being run again: checked against the log, and the next
 * request sent once it is complete; the last one's answer is the client's (its replay is over). */
/* The bytes of session_io[0..n) a transaction's log keeps and its replay compares. */
static const uint8_t *tx_compared(const struct session *s, struct proto_strip *st, size_t n, size_t *k)
{
	const struct proto_ops *proto = s->host->proto;

	if (proto->tx_strip == NULL) {
		*k = n;
		return session_io;
	}
	*k = proto->tx_strip(st, session_io, n, strip_io);
	return strip_io;
}

static void txr_read(struct session *s, size_t n)
{
	const struct proto_ops *proto = s->host->proto;
	char subj[160];
	size_t k;

	proto->feed(&s->ps, PROTO_SERVER_TO_CLIENT, session_io, n);
	bool answered = proto->tx_answered(&s->ps);
	const uint8_t *cmp = tx_compared(s, &s->txr_strip, n, &k);
	if (!txlog_match(s->txlog, &s->txr_pos, &s->txr_idx, cmp, k, answered)) {
		txr_failed(s, "an answer differs");
		return;
	}
	if (!answered)
		return;
	bool last = false;
	if (s->txr_sent < s->retry_len) {
		size_t len = proto->request_len(s->retry + s->txr_sent, s->retry_len - s->txr_sent);
		last = s->txr_sent + len == s->retry_len;
		if (len == 0 || (last && !s->txr_all && s->txr_pos != s->txlog->len)) {
			txr_failed(s, "the answers end otherwise");
			return;
		}
		proto->feed(&s->ps, PROTO_CLIENT_TO_SERVER, s->retry + s->txr_sent, len);
		if (!to_member(s, s->retry + s->txr_sent, len, true, false)) {
			upstream_gone(s, true);
			return;
		}
		s->txr_sent += (uint32_t)len;
		if (!last || s->txr_all)
			return;
	} else if (s->txr_pos != s->txlog->len) {
		txr_failed(s, "the answers end otherwise");
		return;
	}
	/* Every answer the same: the client's transaction is where it was, on the new writer. */
	s->txr_replaying = false;
	s->host->counters.tx_replayed++;
	if (s->held_reply != NULL)
		evbuffer_drain(s->held_reply, evbuffer_get_length(s->held_reply));
	log_info(subject(s, subj, sizeof(subj)), "its transaction ran again on the new writer (%u request(s), "
		 "each answered as before)%s", (unsigned)s->txr_idx + (last ? 1u : 0u),
		 last ? "; its refused request sent again" : "");
	forward_client_input(s);
	s->client.paused = false;
	side_reading(&s->client, !s->client_eof);
	if (!side_flush(&s->upstream))
		upstream_gone(s, true);
}

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct session_host *svc = s->host;
	const struct proto_ops *proto = svc->proto;
	int member = s->member;
	bool readonly = false;
	ssize_t r;

	(void)fd;
	(void)what;
	if (s->med != 0) {
		med_upstream_read(s);
		return;
	}
	if (s->logging_in) {
		login_back_read(s);
		return;
	}
	if (s->member_authing) {
		member_auth_read(s);
		return;
	}
	if (s->relogging) {
		relogin_read(s);
		return;
	}
	if (s->state == SESSION_CONNECTING && s->tls_asking) {
		tls_answer(s);
		return;
	}
	if (s->state == SESSION_CONNECTING && s->upstream.conn.ssl != NULL) {
		tls_step(s);
		return;
	}
	if (s->state != SESSION_ACTIVE && s->state != SESSION_DRAINING)
		return;
	if (splice_payload(s, PROTO_SERVER_TO_CLIENT))
		return;
	r = read_once(&s->upstream);
	if (r == -2)
		return;
	if (r <= 0) {
		upstream_gone(s, r < 0);
		return;
	}
	if (s->greet) {
		uint64_t got = 0;
		size_t used = resp_replies_scan(&s->ps, session_io, (size_t)r, 1, &got);
		if (used == (size_t)-1) {
			close_after_flush(s, "(the server's answer to the greeting is not RESP)");
			return;
		}
		if (got == 0)
			return;
		/* Greeting answered: now the client's own bytes, tracked from the start. */
		s->greet = false;
		proto->init(&s->ps);
		forward_client_input(s);
		s->client.paused = false;
		side_reading(&s->client, !s->client_eof);
		if (!side_flush(&s->upstream)) {
			upstream_write_failed(s);
			return;
		}
		barrier_release(s);
		if (s->client_eof)
			half_close_upstream(s);
		if (used == (size_t)r)
			return;
		memmove(session_io, session_io + used, (size_t)r - used);
		r -= (ssize_t)used;
	}
	if (s->txr_replaying) {
		txr_read(s, (size_t)r);
		return;
	}
	if (s->starting) {
		size_t off = s->swallow < (size_t)r ? s->swallow : (size_t)r;
		size_t refused;

		if (off > 0) {
			/* The answer to a replayed negotiation request: the client has had it already (a
			 * plain 'N'; a server that wants TLS now cannot continue the client's session). */
			if (session_io[0] != 'N') {
				close_after_flush(s, "(the new server answered the negotiation differently)");
				return;
			}
			proto->feed(&s->ps, PROTO_SERVER_TO_CLIENT, session_io, off);
			s->swallow -= (uint8_t)off;
			/* Now the rest of the replay, then whatever the client sent while it waited. */
			proto->feed(&s->ps, PROTO_CLIENT_TO_SERVER, s->retry + s->replay_rest,
				    s->retry_len - s->replay_rest);
			if (!to_member(s, s->retry + s->replay_rest, s->retry_len - s->replay_rest, true, false)) {
				upstream_gone(s, true);
				return;
			}
			forward_client_input(s);
			s->client.paused = false;
			side_reading(&s->client, true);
			if (!side_flush(&s->upstream)) {
				upstream_gone(s, true);
				return;
			}
			if (off == (size_t)r)
				return;
			memmove(session_io, session_io + off, (size_t)r - off);
			r -= (ssize_t)off;
		}
		refused = proto->startup_refusal != NULL ? proto->startup_refusal(session_io, (size_t)r) : 0;
		if (refused == (size_t)r && can_restart(s)) {
			restart(s, "(the server refused new sessions)");
			return;
		}
		/* Anything but a lone negotiation answer means the server took the session. */
		if (!(r == 1 && session_io[0] == 'N'))
			started(s);
	}
	if (proto->termination != NULL && s->login != NULL && !s->term_held && s->confirming == CONFIRM_NONE &&
	    held_last_words(s, (size_t)r))
		return;
	if (proto->readonly_reply != NULL) {
		size_t ro = proto->readonly_reply(session_io, (size_t)r);
		if (ro == 0) {
			s->retry_streak = 0;
		} else if (ro == (size_t)r && proto->retryable != NULL && s->retry_valid && s->retry_len > 0 &&
			   svc->cfg->route == ROUTE_WRITER && proto->retryable(&s->ps) &&
			   s->retry_streak < SESSION_RETRY_STREAK_MAX && !s->client_eof &&
			   confirm_readonly(s, member, session_io, (size_t)r)) {
			return;
		} else if (ro == (size_t)r && tx_replayable(s) && confirm_readonly(s, member, session_io, (size_t)r)) {
			s->txr_pending = true;
			s->txr_all = false;
			return;
		} else {
			readonly = true;
		}
	}
	if (s->relay_on)
		s->relay_on = proto->upgrade->relay(&s->relay, PROTO_SERVER_TO_CLIENT, session_io, (size_t)r);
	uint8_t head[4];
	size_t h, send = answer_feed(s, session_io, (size_t)r, head, &h);
	/* An answer that leaves the session idle outside a transaction is not kept: the next request
	 * starts the log again (an autocommit workload copies nothing). */
	if (s->txlog != NULL && s->txlog->valid) {
		if (proto->is_idle(&s->ps))
			s->txlog->valid = false;
		else {
			size_t k;
			const uint8_t *kept = tx_compared(s, &s->txlog_strip, (size_t)r, &k);
			txlog_reply(s->txlog, kept, k, proto->tx_answered(&s->ps));
		}
	}
	if (s->login != NULL)
		take_replayable(s);
	svc->counters.bytes_server_to_client += (uint64_t)r;
	s->bytes_out += (uint64_t)r;
	s->active_ms = now_ms_coarse();
	if (!s->opaque_seen && proto->is_opaque(&s->ps)) {
		s->opaque_seen = true;
		svc->ops->opaque(svc);
	}
	if (send == SIZE_MAX) {
		char subj[160];
		log_warn(subject(s, subj, sizeof(subj)), "its server sent what repoint cannot follow while its statement "
			 "ids are mapped: closed");
		close_after_flush(s, "(statement ids mapped, answers not followed)");
		return;
	}
	if (!answer_send(s, head, h, session_io, send)) {
		client_gone(s, true);
		return;
	}
	if (side_owed(&s->client) >= SESSION_HIGH_WATER) {
		side_reading(&s->upstream, false);
		s->upstream.paused = true;
	}
	if (s->state == SESSION_DRAINING && proto->is_idle(&s->ps) && drain_now(s, true))
		s = NULL;
	/* Last: telling the service may drain (and free) this very session. */
	if (readonly)
		svc->ops->probe_soon(svc, member);  /* a reason to ask, never an observation */
}

static void client_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	if (s->client.handshaking) {
		client_tls_step(s);
		return;
	}
	if (!side_flush(&s->client)) {
		client_gone(s, true);
		return;
	}
	if (s->state == SESSION_CLOSING) {
		if (side_owed(&s->client) == 0)
			linger(s);
		return;
	}
	if (s->upstream.paused && side_owed(&s->client) < SESSION_HIGH_WATER / 2 && s->client.pipe.len == 0) {
		s->upstream.paused = false;
		side_reading(&s->upstream, true);
	}
	if (s->sh != NULL)
		shared_owed_less(s->sh, s);
	if (s->shared && s->client.paused && evbuffer_get_length(s->client.out) < SESSION_HIGH_WATER / 2)
		shared_flow(s);
}

static bool on_connected(struct session *s);

/* TLS to the member: the handshake starts. */
static void tls_begin(struct session *s)
{
	if (!net_conn_start_tls(&s->upstream.conn, s->host->ops->tls(s->host), s->host->ops->member_tls_name(s->host, s->member),
				s->host->ops->member_str(s->host, s->member))) {
		connect_failed(s, "TLS: out of memory");
		return;
	}
	tls_step(s);
}

/* The member's one-byte answer to the TLS request: 'S' starts the handshake; anything else is a
 * refusal, never a fallback to plaintext. */
static void tls_answer(struct session *s)
{
	const struct proto_ops *proto = s->host->proto;
	uint8_t b;
	ssize_t r = s->upstream.conn.ops->read(&s->upstream.conn, &b, 1);

	if (r == -2)
		return;
	s->tls_asking = false;
	if (r <= 0) {
		connect_failed(s, r == 0 ? "closed instead of answering the TLS request" : strerror(errno));
		return;
	}
	switch (proto->tls_answer(b)) {
	case 1:
		tls_begin(s);
		return;
	case 0:
		connect_failed(s, "the member refuses TLS (it answered no to the TLS request)");
		return;
	default:
		connect_failed(s, "the member did not answer the TLS request (is it speaking TLS?)");
		return;
	}
}

/* TLS to the member: the handshake goes on as the socket allows; done, the session is connected. */
static void tls_step(struct session *s)
{
	char err[256];
	int r = net_conn_handshake(&s->upstream.conn, err, sizeof(err));

	if (r == EAGAIN) {
		side_reading(&s->upstream, s->upstream.conn.want == EV_READ);
		side_writing(&s->upstream, s->upstream.conn.want == EV_WRITE);
		return;
	}
	if (r != 0) {
		connect_failed(s, err);
		return;
	}
	side_writing(&s->upstream, false);
	on_connected(s);
}

/* --- a server-first TLS upgrade (MySQL's CLIENT_SSL), conducted by repoint --- */

/* When the member is reached over TLS or clients may bring TLS: then neither side's TLS request
 * passes through, and the two sides' packet numbers are reconciled (proto_upgrade). */
static bool med_wanted(const struct session *s)
{
	/* (With auth = repoint the login conducts the start itself.) */
	return s->host->proto->upgrade != NULL && s->login == NULL &&
	       (s->host->ops->tls(s->host) != NULL || s->host->ops->listen_tls_mode(s->host) != LISTEN_TLS_OFF);
}

static void med_hello(struct session *s);

/* The client has the greeting and cannot be moved: an error in the protocol's words, then close. */
static void med_refuse(struct session *s, bool tls_required, const char *msg, const char *why)
{
	s->host->proto->upgrade->refuse_hello(s->med_seq, s->client.out, tls_required, msg);
	close_after_flush(s, why);
}

/* The member's greeting, read whole while connecting; passed on with the TLS offer the listener
 * makes, or (a refusal, a greeting without TLS where TLS is wanted) not. */
static void med_greeting(struct session *s)
{
	const struct proto_ops *proto = s->host->proto;
	const struct proto_upgrade *up = proto->upgrade;
	ssize_t r = read_once(&s->upstream);
	size_t len, k;
	uint8_t *p;
	int offered;

	if (r == -2)
		return;
	if (r <= 0) {
		connect_failed(s, r == 0 ? "closed before its greeting" : strerror(errno));
		return;
	}
	if (s->greeting == NULL && (s->greeting = evbuffer_new()) == NULL) {
		connect_failed(s, "out of memory");
		return;
	}
	evbuffer_add(s->greeting, session_io, (size_t)r);
	len = evbuffer_get_length(s->greeting);
	k = up->packet(evbuffer_pullup(s->greeting, len < 4 ? (ev_ssize_t)len : 4), len);
	if (k == PROTO_MORE) {
		if (len > up->max_packet)
			connect_failed(s, "its greeting is too long");
		return;
	}
	if (k != len) {
		connect_failed(s, "it sent more than its greeting before the client answered");
		return;
	}
	p = evbuffer_pullup(s->greeting, -1);
	if (proto->startup_refusal != NULL && proto->startup_refusal(p, k) == k && can_restart(s)) {
		restart(s, "(the server refused new sessions)");
		return;
	}
	offered = up->greeting(p, k, s->host->ops->listen_tls_mode(s->host) != LISTEN_TLS_OFF);
	if (offered < 0) {
		/* An error instead of a greeting (too many connections): the client's, as it would be
		 * directly. */
		evbuffer_add_buffer(s->client.out, s->greeting);
		close_after_flush(s, "(the member refused the session)");
		return;
	}
	if (offered == 0 && s->host->ops->tls(s->host) != NULL) {
		connect_failed(s, "the member does not offer TLS (no CLIENT_SSL in its greeting)");
		return;
	}
	started(s);
	proto->feed(&s->ps, PROTO_SERVER_TO_CLIENT, p, k);
	s->host->counters.bytes_server_to_client += k;
	s->bytes_out += k;
	evbuffer_add_buffer(s->client.out, s->greeting);
	s->med = MED_HELLO;
	if (on_connected(s))
		return;
	if (!side_flush(&s->client)) {
		client_gone(s, true);
		return;
	}
	/* A client that spoke before the greeting: its bytes are taken as its first packet. */
	if (s->client_in != NULL && evbuffer_get_length(s->client_in) > 0)
		med_hello(s);
}

/* The member's TLS handshake failed (or timed out) under a session the client has started: it
 * hears why in its protocol's words, and the member's failure is reported. */
static void med_member_failed(struct session *s, const char *err)
{
	char msg[300];
	int member = s->member;

	snprintf(msg, sizeof(msg), "repoint: TLS to %s failed: %s", s->host->ops->member_str(s->host, member), err);
	s->host->counters.upstream_connect_failures++;
	s->host->ops->upstream_failed(s->host, member, err);
	med_refuse(s, false, msg, "(TLS to the member failed)");
}

/* Repoint's TLS handshake with the member; done, the hello goes out, then what followed it. */
static void med_member_tls(struct session *s)
{
	char err[256];
	int r = net_conn_handshake(&s->upstream.conn, err, sizeof(err));

	if (r == EAGAIN) {
		side_reading(&s->upstream, s->upstream.conn.want != EV_WRITE);
		side_writing(&s->upstream, s->upstream.conn.want == EV_WRITE);
		return;
	}
	if (r != 0) {
		med_member_failed(s, err);
		return;
	}
	s->med = MED_NONE;
	s->upstream.handshaking = false;
	evtimer_del(s->timer);
	side_writing(&s->upstream, false);
	side_reading(&s->upstream, true);
	forward_client_input(s);
	s->client.paused = false;
	side_reading(&s->client, !s->client_eof);
	if (!side_flush(&s->upstream))
		upstream_write_failed(s);
}

/* The client's first packet after the greeting: a TLS request (the handshake follows), or its
 * hello, which goes to the member renumbered, its TLS flag as the member's side has it. */
static void med_hello(struct session *s)
{
	const struct proto_upgrade *up = s->host->proto->upgrade;
	struct evbuffer *in = s->client_in;
	enum listen_tls_mode lmode = s->host->ops->listen_tls_mode(s->host);
	struct net_tls *member_tls = s->host->ops->tls(s->host);
	size_t len = in != NULL ? evbuffer_get_length(in) : 0, k;
	uint8_t *p, sseq;
	int kind;

	if (len == 0)
		return;
	k = up->packet(evbuffer_pullup(in, len < 4 ? (ev_ssize_t)len : 4), len);
	if (k == PROTO_MORE && len <= up->max_packet)
		return;
	if (k == PROTO_MORE || k > up->max_packet) {
		close_after_flush(s, "(the client's handshake is too long)");
		return;
	}
	p = evbuffer_pullup(in, (ev_ssize_t)k);
	kind = up->hello(p, k);
	s->med_seq = up->hello_seq(p);
	if (kind == 1 && s->client.conn.ssl == NULL && lmode != LISTEN_TLS_OFF) {
		client_tls_requested(s, in, k, NULL, 0);
		return;
	}
	if (kind != 0) {
		med_refuse(s, false, "repoint: not a handshake repoint can take", "(malformed handshake)");
		return;
	}
	if (s->client.conn.ssl == NULL && lmode == LISTEN_TLS_REQUIRE) {
		char msg[200];
		snprintf(msg, sizeof(msg), "repoint: service \"%s\" takes TLS clients only (listen_tls = require)",
			 s->host->name);
		med_refuse(s, true, msg, "(refused: TLS required)");
		return;
	}
	/* The tracker sees a plaintext hello; the member sees its own side's. */
	up->hello_set(p, k, false, s->med_seq);
	client_bytes(s, p, k);
	sseq = member_tls != NULL ? up->seq_tls : up->seq_plain;
	up->hello_set(p, k, member_tls != NULL, sseq);
	memset(&s->relay, 0, sizeof(s->relay));
	s->relay.shift = (int8_t)(sseq - s->med_seq);
	s->relay_on = s->relay.shift != 0;
	if (member_tls == NULL) {
		s->med = MED_NONE;
		evbuffer_remove_buffer(in, s->upstream.out, k);
		forward_client_input(s);
		if (!side_flush(&s->upstream))
			upstream_write_failed(s);
		return;
	}
	/* The TLS request, in plaintext and whole, before the handshake; the hello waits for it. */
	struct evbuffer *req = evbuffer_new();
	if (req == NULL) {
		session_destroy(s);
		return;
	}
	up->tls_request_from(p, k, req);
	size_t rlen = evbuffer_get_length(req);
	ssize_t w = s->upstream.conn.ops->write(&s->upstream.conn, evbuffer_pullup(req, -1), rlen);
	evbuffer_free(req);
	if (w != (ssize_t)rlen) {
		med_member_failed(s, "cannot send the TLS request");
		return;
	}
	evbuffer_remove_buffer(in, s->upstream.out, k);
	if (!net_conn_start_tls(&s->upstream.conn, member_tls, s->host->ops->member_tls_name(s->host, s->member),
				s->host->ops->member_str(s->host, s->member))) {
		med_member_failed(s, "out of memory");
		return;
	}
	s->med = MED_MEMBER_TLS;
	s->upstream.handshaking = true;
	side_reading(&s->client, false);
	arm_timer(s, s->host->cfg->connect_timeout_ms);
	med_member_tls(s);
}

/* Client bytes while repoint conducts the start: kept until a whole packet is there. */
/* How many of the client's bytes to read so as not to read past the packet that `in` starts
 * (proto->upgrade's framing: MySQL): a client that asks for TLS starts its handshake right after
 * the request, without waiting, and those bytes are OpenSSL's to read. */
static size_t packet_bound(const struct session *s, struct evbuffer *in)
{
	const struct proto_upgrade *up = s->host->proto->upgrade;
	size_t have = evbuffer_get_length(in);
	uint8_t h[4];

	if (have < 4)
		return 4 - have;
	if (up->packet(evbuffer_pullup(in, 4), have) != PROTO_MORE)
		return SESSION_READ_MAX;  /* (a whole packet is there: its reader decides) */
	evbuffer_copyout(in, h, 4);
	size_t total = 4 + ((size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16);
	return total - have < SESSION_READ_MAX ? total - have : SESSION_READ_MAX;
}

static void med_client_read(struct session *s)
{
	struct evbuffer *in = client_input(s);
	size_t want = SESSION_READ_MAX;
	ssize_t r;

	if (in == NULL) {
		session_destroy(s);
		return;
	}
	if (s->med == MED_HELLO && s->client.conn.ssl == NULL)
		want = packet_bound(s, in);
	r = s->client.conn.ops->read(&s->client.conn, session_io, want);

	if (r == -2)
		return;
	if (r <= 0) {
		session_destroy(s);
		return;
	}
	if (evbuffer_add(in, session_io, (size_t)r) < 0) {
		session_destroy(s);
		return;
	}
	if (s->med == MED_HELLO)
		med_hello(s);
}

static void med_upstream_read(struct session *s)
{
	ssize_t r;

	if (s->med == MED_GREETING) {
		med_greeting(s);
		return;
	}
	if (s->med == MED_MEMBER_TLS) {
		med_member_tls(s);
		return;
	}
	/* MED_HELLO: the member waits for the client; it has nothing to say but a close. */
	r = read_once(&s->upstream);
	if (r == -2)
		return;
	close_after_flush(s, r == 0 ? "upstream closed" : "(the member spoke out of turn)");
}

static void upstream_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	int err = 0;

	(void)what;
	if (s->med == MED_MEMBER_TLS) {
		med_member_tls(s);
		return;
	}
	if (s->state == SESSION_CONNECTING) {
		if (s->upstream.conn.ssl != NULL) {
			tls_step(s);
			return;
		}
		err = net_connect_outcome(fd, s->connect_errno);
		if (err == EINPROGRESS)
			return;
		if (err != 0) {
			connect_failed(s, evutil_socket_error_to_string(err));
			return;
		}
		if (med_wanted(s)) {
			/* The member speaks first: its greeting is read whole (med_upstream_read). */
			s->med = MED_GREETING;
			side_writing(&s->upstream, false);
			side_reading(&s->upstream, true);
			return;
		}
		if (s->host->ops->tls(s->host) != NULL && !(s->login != NULL && s->host->proto->login->member_first)) {
			const struct proto_ops *proto = s->host->proto;
			if (proto->tls_request != NULL) {
				/* Asked for inside the protocol first (SSLRequest); its one-byte answer is
				 * read alone (upstream_read_cb), nothing after it. */
				if (s->upstream.conn.ops->write(&s->upstream.conn, proto->tls_request,
								proto->tls_request_len) !=
				    (ssize_t)proto->tls_request_len) {
					connect_failed(s, "cannot send the TLS request");
					return;
				}
				s->tls_asking = true;
				side_writing(&s->upstream, false);
				side_reading(&s->upstream, true);
				return;
			}
			tls_begin(s);
			return;
		}
		on_connected(s);
		return;
	}
	if (!side_flush(&s->upstream)) {
		upstream_write_failed(s);
		return;
	}
	if (s->client_eof) {
		/* Everything the client sent is out: its half-close follows. */
		half_close_upstream(s);
		return;
	}
	if (s->client.paused && side_owed(&s->upstream) < SESSION_HIGH_WATER / 2 && s->upstream.pipe.len == 0) {
		s->client.paused = false;
		side_reading(&s->client, true);
	}
}

/* Connected (and through any handshake): the session is the member's. True when it was freed. */
static bool on_connected(struct session *s)
{
	char what[128];

	if (s->login != NULL && !s->logged_in)
		return login_back_begin(s);
	if (!s->member_authed && s->host->ops->member_login != NULL && !s->cancel)
		return member_auth_begin(s);
	int64_t now = now_ms();

	hist_observe(&s->host->counters.connect_time, (double)(now - s->connect_started_ms) / 1000.0);
	if (s->held_since_ms != 0) {
		hist_observe(&s->host->counters.hold_wait, (double)(now - s->held_since_ms) / 1000.0);
		s->held_since_ms = 0;
	}
	evtimer_del(s->timer);
	if (s->in_held)
		s->host->ops->unhold(s->host, s);
	snprintf(what, sizeof(what), "(%s)", s->host->ops->member_str(s->host, s->member));
	set_state(s, SESSION_ACTIVE, what);
	if (s->med == 0 && !s->relay_on)
		side_uring(s, &s->upstream);
	side_reading(&s->upstream, true);
	if (s->replay) {
		const struct proto_ops *proto = s->host->proto;
		size_t pre = s->starting && proto->startup_preamble != NULL
				     ? proto->startup_preamble(s->retry, s->retry_len)
				     : 0;
		size_t first = pre > 0 ? pre : s->retry_len;
		if (s->txr_pending) {
			/* A transaction refused part-way: its first request alone; each next one once the
			 * answer before it came, the same as the client had it (txr_read). */
			s->txr_pending = false;
			first = proto->request_len(s->retry, s->retry_len);
			s->txr_replaying = first > 0 && (first < s->retry_len || s->txr_all);
			if (!s->txr_replaying)
				first = s->retry_len;
			s->txr_sent = (uint32_t)first;
			s->txr_pos = 0;
			s->txr_idx = 0;
			memset(&s->txr_strip, 0, sizeof(s->txr_strip));
		}
		/* What the old server refused goes first: the request in flight (Redis), or the session's
		 * start. A negotiation request goes alone (a server refuses data sent past it before its
		 * answer); its answer, which the client already has, is not passed on again, and the rest
		 * follows it (upstream_read_cb). */
		proto->feed(&s->ps, PROTO_CLIENT_TO_SERVER, s->retry, first);
		(void)to_member(s, s->retry, first, true, true);
		s->swallow = pre > 0 ? 1 : 0;
		s->replay_rest = (uint32_t)first;
		s->replay = false;
		s->retry_valid = true;
	}
	if (s->greet) {
		static const char hello3[] = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
		static const char ping[] = "*1\r\n$4\r\nPING\r\n";
		/* Its reply is counted off with the tracker's reply scanner; the client's bytes follow
		 * once it is in (upstream_read_cb). */
		resp_replies_init(&s->ps);
		if (s->resp3)
			evbuffer_add(s->upstream.out, hello3, sizeof(hello3) - 1);
		else
			evbuffer_add(s->upstream.out, ping, sizeof(ping) - 1);
		side_reading(&s->client, false);
	} else if (s->txr_replaying) {
		side_reading(&s->client, false);
	} else if (s->swallow == 0) {
		/* Not before it is known whether they are a cancel request (cancel_check), nor while
		 * repoint conducts the start (they are the client's hello: med_client_read), nor while
		 * a transaction runs again (txr_read). */
		if ((s->host->proto->cancel_request == NULL || s->cancel_checked) && s->med == 0)
			forward_client_input(s);
		s->client.paused = false;
		side_reading(&s->client, !s->cancel && !s->client_eof);
	}
	if (!side_flush(&s->upstream)) {
		upstream_write_failed(s);
		return true;
	}
	/* Its pinning command is handed to the server: the shared sessions behind it go on. */
	if (!s->greet)
		barrier_release(s);
	if (s->client_eof) {
		arm_timer(s, SESSION_FLUSH_TIMEOUT_MS);
		half_close_upstream(s);
	}
	return false;
}

static bool connect_failed(struct session *s, const char *why)
{
	int member = s->member;
	char reason[200];

	snprintf(reason, sizeof(reason), "connect to %s: %s", s->host->ops->member_str(s->host, member), why);
	s->host->counters.upstream_connect_failures++;
	s->connect_errno = 0;
	drop_upstream(s);
	if (s->cancel) {
		/* Its session's server only: nowhere else to take it. */
		session_destroy(s);
		return true;
	}
	/* Nothing was sent upstream yet (we forward only once connected): the client's bytes are all
	 * still here, so the session can wait for a writer again as if it had just arrived. */
	if (hold(s, reason))
		return true;
	s->host->ops->upstream_failed(s->host, member, why);
	/* The failure may have moved the writer: route again if the service says so. */
	if (s->state == SESSION_HELD && route_pick(s) >= 0)
		return route(s);
	return false;
}

static bool connect_to(struct session *s, int member)
{
	socklen_t salen;
	const struct sockaddr *sa = s->host->ops->member_addr(s->host, member, &salen);
	struct event_base *base = s->host->base;
	evutil_socket_t fd;
	char what[128];

	fd = net_tcp_socket(sa->sa_family);
	if (fd < 0)
		return hold(s, "(no socket for the upstream)");
	if (!side_open(&s->upstream, base, fd, upstream_read_cb, upstream_write_cb, s)) {
		side_close(&s->upstream);
		return hold(s, "(out of memory)");
	}
	s->host->ops->attach(s->host, s, member);
	snprintf(what, sizeof(what), "(%s)", s->host->ops->member_str(s->host, member));
	set_state(s, SESSION_CONNECTING, what);
	arm_timer(s, s->host->cfg->connect_timeout_ms);
	s->connect_started_ms = now_ms();
	s->upstream_born_ms = s->connect_started_ms;
	s->connect_errno = net_tcp_connect(fd, sa, salen);
	if (s->connect_errno == EINPROGRESS)
		s->connect_errno = 0;
	/* Success, failure or progress: the outcome is always handled from the loop, in the write
	 * callback, never from inside this call (whose callers may be iterating sessions). */
	s->upstream.writing = true;
	if (s->connect_errno != 0)
		event_active(s->upstream.wev, EV_WRITE, 1);
	else
		event_add(s->upstream.wev, NULL);
	return false;
}

static void upstream_read_cb(evutil_socket_t fd, short what, void *arg);
static void upstream_write_cb(evutil_socket_t fd, short what, void *arg);
static bool on_connected(struct session *s);

/* pool_size: a logged-in connection to `member` that a client of the same start left, taken
 * instead of a new one -- the client is told it is in at once. True when taken. */
static bool pool_adopt(struct session *s, int member)
{
	const struct proto_login_ops *lo = s->host->proto->login;
	struct session_pooled p;
	const uint8_t *startup;
	size_t n;

	if (s->host->ops->pool_take == NULL || lo->startup == NULL || lo->told(s->login) ||
	    (startup = lo->startup(s->login, &n)) == NULL ||
	    !s->host->ops->pool_take(s->host, member, startup, n, &p))
		return false;
	if (!side_open(&s->upstream, s->host->base, p.conn.fd, upstream_read_cb, upstream_write_cb, s)) {
		net_conn_close(&p.conn);
		evbuffer_free(p.params);
		return false;
	}
	s->upstream.conn = p.conn;
	s->upstream_born_ms = p.born_ms;
	s->host->ops->attach(s->host, s, member);
	lo->adopt(s->login, evbuffer_pullup(p.params, -1), evbuffer_get_length(p.params), p.member_key, p.has_key,
		  s->client.out);
	evbuffer_free(p.params);
	s->logged_in = true;
	s->host->counters.pool_reused++;
	lo->track_idle(s->login, &s->ps);
	s->connect_started_ms = now_ms();
	if (!on_connected(s) && !side_flush(&s->client))
		client_gone(s, true);
	return true;
}

/* A client says goodbye (Terminate, COM_QUIT) with every request answered: its logged-in server
 * connection is kept for the next client of the same start instead of closed -- reset first (DISCARD
 * ALL, COM_RESET_CONNECTION...) when the session set something or left a transaction open. True when
 * kept (the session is gone then). */
static bool pool_donate(struct session *s, const uint8_t *p, size_t n)
{
	const struct proto_login_ops *lo;
	struct session_pooled kept;
	const uint8_t *startup;
	size_t len;

	if (s->login == NULL || !s->logged_in || s->state != SESSION_ACTIVE || s->host->ops->pool_put == NULL ||
	    s->unmovable || s->confirming || s->term_held || s->med != 0)
		return false;
	lo = s->host->proto->login;
	if (lo->goodbye == NULL || !lo->goodbye(p, n))
		return false;
	/* Clean (nothing set), or with every request answered, something set or a transaction open:
	 * then reset first (the transaction rolled back). */
	const struct proto_ops *proto = s->host->proto;
	bool clean = lo->poolable != NULL && lo->poolable(s->login) && can_migrate(s);
	bool idle = proto->is_idle(&s->ps);
	bool rest = idle || (proto->at_rest != NULL && proto->at_rest(&s->ps));
	if (lo->poolable == NULL || (!clean && (lo->reset_request == NULL || !rest || proto->is_opaque(&s->ps))) ||
	    side_owed(&s->upstream) > 0 || (s->client_in != NULL && evbuffer_get_length(s->client_in) > 0) ||
	    (startup = lo->startup(s->login, &len)) == NULL)
		return false;
	/* Kept connections are watched by readiness: back from the ring first (the server said
	 * nothing meanwhile, or it is not kept). */
	if (!side_unring(s, &s->upstream))
		return false;
	memset(&kept, 0, sizeof(kept));
	if ((kept.params = evbuffer_new()) == NULL || !lo->hand_over(s->login, kept.params, kept.member_key, &kept.has_key) ||
	    (!clean && ((kept.reset = evbuffer_new()) == NULL || !lo->reset_request(s->login, !idle, kept.reset))))
		goto not_kept;
	kept.conn = s->upstream.conn;
	kept.born_ms = s->upstream_born_ms;
	if (!s->host->ops->pool_put(s->host, s->member, startup, len, &kept))
		goto not_kept;
	side_release(&s->upstream, &kept.conn);   /* the pool has the socket now */
	s->host->counters.pooled++;
	session_destroy(s);
	return true;
not_kept:
	if (kept.params != NULL)
		evbuffer_free(kept.params);
	if (kept.reset != NULL)
		evbuffer_free(kept.reset);
	return false;
}

/* A member that speaks first, and a kept connection to the writer: the client is greeted from that
 * connection's greeting (proto_login_ops.greet) without connecting. False when there is none. */
static bool pool_greet(struct session *s)
{
	const struct proto_login_ops *lo = s->host->proto->login;
	struct evbuffer *b;
	int member;
	bool ok = false;

	if (lo->greet == NULL || s->host->ops->pool_params == NULL || (member = s->host->ops->pick(s->host)) < 0 ||
	    (b = evbuffer_new()) == NULL)
		return false;
	if (s->host->ops->pool_params(s->host, member, b))
		ok = lo->greet(s->login, evbuffer_pullup(b, -1), evbuffer_get_length(b), s->client.out);
	evbuffer_free(b);
	return ok && side_flush(&s->client);
}

static bool route(struct session *s)
{
	int member = route_pick(s);

	if (s->confirming)
		return hold(s, "(waiting for its server's word on its role)");
	if (s->login != NULL && !s->host->proto->login->front_done(s->login) && !s->host->proto->login->member_first)
		return hold(s, "(authenticating the client)");
	if (member < 0)
		return hold(s, "(waiting for a writer)");
	if (member == s->avoid_member && now_ms() < s->avoid_until_ms)
		return hold(s, "(the writer refused this session's start a moment ago)");
	if (s->shared)
		return bind_shared(s, member);
	if (s->login != NULL && !s->logged_in && s->member < 0 && pool_adopt(s, member))
		return false;
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
		if (now_ms() < s->hold_deadline_ms)
			route(s);  /* the wait to retry a refusing member is over */
		else
			hold_timeout_refuse(s);
		return;
	case SESSION_CONNECTING:
		snprintf(msg, sizeof(msg), "timeout after %lld ms",
			 (long long)s->host->cfg->connect_timeout_ms);
		connect_failed(s, msg);
		return;
	case SESSION_DRAINING:
		drain_now(s, false);
		return;
	case SESSION_ACTIVE:
		if (s->med == MED_MEMBER_TLS)
			med_member_failed(s, "TLS handshake: timeout");
		else if (s->confirming == CONFIRM_READONLY)
			session_confirmed(s, ROLE_UNKNOWN, false);  /* no word in time: the reply goes on */
		else if (s->client_eof)
			session_destroy(s);
		return;
	case SESSION_REFUSING:
	case SESSION_CLOSING:
		session_destroy(s);
		return;
	}
}

struct session *session_accept(struct session_host *svc, int fd, const struct sockaddr *peer)
{
	struct event_base *base = svc->base;
	struct session *s = calloc(1, sizeof(*s));
	int one = 1;

	if (s == NULL) {
		evutil_closesocket(fd);
		return NULL;
	}
	s->host = svc;
	s->id = session_next_id++;
	s->member = -1;
	s->avoid_member = -1;
	s->own_at = s->own_member = s->own_slot = s->ask_member = -1;
	s->state = SESSION_HELD;
	net_conn_init(&s->client.conn, -1);
	net_conn_init(&s->upstream.conn, -1);
	s->accepted_ms = now_ms();
	s->active_ms = s->accepted_ms;
	s->hold_deadline_ms = s->accepted_ms + svc->cfg->hold_timeout_ms;
	svc->proto->init(&s->ps);
	s->starting = svc->proto->startup_refusal != NULL;
	s->retry_valid = s->starting;
	s->shared = svc->cfg->multiplex;
	if (peer->sa_family == AF_INET || peer->sa_family == AF_INET6) {
		struct hostport hp;
		char host[INET6_ADDRSTRLEN];
		const void *a = peer->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)(const void *)peer)->sin_addr
							   : (const void *)&((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr;
		evutil_inet_ntop(peer->sa_family, a, host, sizeof(host));
		snprintf(hp.host, sizeof(hp.host), "%s", host);
		hp.port = ntohs(peer->sa_family == AF_INET ? ((const struct sockaddr_in *)(const void *)peer)->sin_port
							  : ((const struct sockaddr_in6 *)(const void *)peer)->sin6_port);
		hostport_str(&hp, s->peer, sizeof(s->peer));
	} else {
		snprintf(s->peer, sizeof(s->peer), "unix");
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* side_open owns the fd from here: side_close closes it whatever failed. */
	if (!side_open(&s->client, base, fd, client_read_cb, client_write_cb, s) ||
	    (s->timer = evtimer_new(base, timer_cb, s)) == NULL || (s->upstream.out = evbuffer_new()) == NULL) {
		side_close(&s->client);
		if (s->client.out != NULL)
			evbuffer_free(s->client.out);
		if (s->upstream.out != NULL)
			evbuffer_free(s->upstream.out);
		if (s->timer != NULL)
			event_free(s->timer);
		free(s);
		return NULL;
	}
	if (svc->ops->listen_tls_mode(svc) == LISTEN_TLS_OFF)
		side_uring(s, &s->client);  /* (a TLS client's stays on readiness) */
	side_reading(&s->client, true);
	svc->ops->opened(svc, s);
	svc->counters.accepted++;
	if (svc->cfg->auth == AUTH_REPOINT && svc->proto->login != NULL) {
		s->login = svc->proto->login->create(svc->cfg->client_auth, svc->ops->auth_users(svc));
		if (s->login == NULL) {
			session_destroy(s);
			return NULL;
		}
		/* repoint answers the start itself: nothing to replay to a member. */
		s->starting = false;
		s->retry_valid = false;
		if (svc->ops->listen_tls_mode(svc) != LISTEN_TLS_OFF && svc->proto->login->offer_tls != NULL)
			svc->proto->login->offer_tls(s->login, svc->ops->listen_tls_mode(svc) == LISTEN_TLS_REQUIRE);
	}
	/* A TLS client of a protocol whose TLS starts at the first byte (Redis); Postgres clients ask
	 * first (cancel_check). */
	if (svc->ops->listen_tls_mode(svc) != LISTEN_TLS_OFF && svc->proto->tls_request == NULL &&
	    svc->proto->upgrade == NULL) {
		if (svc->ops->listen_tls_mode(svc) == LISTEN_TLS_ON) {
			s->client_sniff = true;
		} else if (client_tls_begin(s)) {
			return NULL;
		}
	}
	if (s->login != NULL && svc->proto->login->member_first && pool_greet(s)) {
		/* Greeted from a kept connection: one is taken (or a member connected to) once the
		 * client is authenticated (login_front); hold_timeout bounds the wait. */
		arm_timer(s, svc->cfg->hold_timeout_ms);
		return s;
	}
	if (s->login != NULL && !svc->proto->login->member_first) {
		/* A writer is needed once the client is authenticated (login_front); hold_timeout bounds
		 * the wait for its start. */
		arm_timer(s, svc->cfg->hold_timeout_ms);
		return s;
	}
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
			drain_now(s, session_idle(s));
			return;
		}
		if (session_idle(s)) {
			drain_now(s, true);
			return;
		}
		set_state(s, SESSION_DRAINING, "(waiting for an idle point)");
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
