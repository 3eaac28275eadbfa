/* shared.c - a server connection shared by many Redis sessions (see shared.h). */
#include "net/shared.h"

#include <errno.h>
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
#include "net/conn.h"
#include "net/transport.h"
#include "proto/proto.h"

#define SHARED_READ_MAX (64 * 1024)
/* A session owed this much (its client is not reading) stops the reading of the shared connection
 * while its replies are next: the server holds the rest, not repoint. Reading resumes once it is
 * owed less than half; a session that stays over it for SHARED_STALL_MS is closed, its replies
 * still to come read and dropped, so that one client that does not read cannot hold up the others
 * for longer. */
#define SHARED_OWED_MAX (4 * 1024 * 1024)
#define SHARED_STALL_MS 1000

/* Whose replies come next: `n` commands of session `s` (NULL: it went away, drop them). */
struct entry {
	struct session *s;
	uint32_t n;
	uint32_t bytes;
	uint64_t end;                    /* stream offset just past its bytes */
	bool mine;                       /* repoint's own login: its reply is looked at */
};

struct shared {
	struct net_conn conn;
	struct net_tls *tls;             /* NULL: plain (a reference while connecting) */
	char tls_name[256], resume_key[280];
	struct event *rev, *wev, *flush_ev, *timer;
	struct event *stall_ev;          /* reading stopped for a session that is not reading */
	bool stalled;
	struct evbuffer *out;
	struct entry *q;                 /* ring: q[(head + i) % cap], i < len */
	size_t head, len, cap;
	size_t live;                     /* entries whose session is still there */
	uint64_t queued, sent;           /* bytes queued and written since the start: out holds
	                                    stream offsets [sent, queued) */
	struct proto_state replies;
	struct shared_hooks hooks;
	int connect_errno;               /* connect() failed at once */
	unsigned busy;                   /* inside one of our callbacks: free at its end */
	bool connected, retired, dead, flush_pending, writing;
	bool logging_in;                 /* repoint's first login is not answered yet: not ready */
	bool login_refused;              /* ... and the member refused it */
	struct event *relogin_ev;        /* hooks.login again, every hooks.relogin_ms */
	char mine_head[128];             /* its start (an error says why), one printable line */
	size_t mine_len;
	char label[160];
};

/* Replies are read here and handed to sessions from here (they copy what the kernel does not
 * take); the loop is single-threaded. */
static uint8_t shared_io[SHARED_READ_MAX];

static struct entry *entry_at(struct shared *c, size_t i)
{
	return &c->q[(c->head + i) % c->cap];
}

static bool queue_push(struct shared *c, struct session *s, uint32_t n, uint32_t bytes, bool mine)
{
	if (c->len > 0 && !mine) {
		/* Consecutive batches of one session fold into one entry. */
		struct entry *last = entry_at(c, c->len - 1);
		if (last->s == s && s != NULL && !last->mine && last->n <= UINT32_MAX - n && last->bytes <= UINT32_MAX - bytes) {
			last->n += n;
			last->bytes += bytes;
			last->end += bytes;
			return true;
		}
	}
	if (c->len == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct entry *q = malloc(cap * sizeof(*q));
		if (q == NULL)
			return false;
		for (size_t i = 0; i < c->len; i++)
			q[i] = *entry_at(c, i);
		free(c->q);
		c->q = q;
		c->cap = cap;
		c->head = 0;
	}
	*entry_at(c, c->len) = (struct entry){.s = s, .n = n, .bytes = bytes, .end = c->queued + bytes, .mine = mine};
	c->len++;
	if (s != NULL)
		c->live++;
	return true;
}

static void destroy(struct shared *c)
{
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->stall_ev != NULL)
		event_free(c->stall_ev);
	if (c->relogin_ev != NULL)
		event_free(c->relogin_ev);
	net_conn_close(&c->conn);
	net_tls_free(c->tls);
	if (c->out != NULL)
		evbuffer_free(c->out);
	free(c->q);
	free(c);
}

/* The end of every entry point: free what is finished once nothing up the stack uses it. */
static void settle(struct shared *c)
{
	if (c->busy == 0 && (c->dead || (c->retired && c->live == 0)))
		destroy(c);
}

/* A copy of the bytes of session s's entries from entry i on, in order: all of them are still in
 * `out` (none was sent). NULL when out of memory. */
static struct evbuffer *unsent_copy(struct shared *c, struct session *s, size_t i)
{
	struct evbuffer *back = evbuffer_new();

	for (size_t j = i; back != NULL && j < c->len; j++) {
		struct entry *f = entry_at(c, j);
		struct evbuffer_ptr pos;
		uint8_t *tmp;
		if (f->s != s || f->bytes == 0)
			continue;
		tmp = malloc(f->bytes);
		if (tmp == NULL || evbuffer_ptr_set(c->out, &pos, (size_t)(f->end - f->bytes - c->sent),
						    EVBUFFER_PTR_SET) < 0 ||
		    evbuffer_copyout_from(c->out, &pos, tmp, f->bytes) != (ev_ssize_t)f->bytes ||
		    evbuffer_add(back, tmp, f->bytes) < 0) {
			evbuffer_free(back);
			back = NULL;
		}
		free(tmp);
	}
	return back;
}

/* The connection failed: the owner hears first (so nothing binds to it again), then every session
 * with commands in flight. */
static void fail(struct shared *c, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	c->busy++;
	if (c->rev != NULL)
		event_del(c->rev);
	if (c->wev != NULL)
		event_del(c->wev);
	if (c->flush_ev != NULL)
		event_del(c->flush_ev);
	if (c->timer != NULL)
		evtimer_del(c->timer);
	if (c->stall_ev != NULL)
		evtimer_del(c->stall_ev);
	if (c->relogin_ev != NULL)
		evtimer_del(c->relogin_ev);
	if (!c->retired && c->hooks.lost != NULL)
		c->hooks.lost(c->hooks.arg, c, c->connected, why);
	else if (c->live > 0)
		log_info(c->label, "shared connection lost: %s", why);
	for (size_t i = 0; i < c->len; i++) {
		struct session *s = entry_at(c, i)->s;
		struct evbuffer *back = NULL;
		bool unsent = true;
		if (s == NULL)
			continue;
		/* Commands that never left repoint (a client's request read in the same loop pass that
		 * found the connection closed) did not run: they are given back to their session, which
		 * waits for the next connection -- unless some of its earlier ones did leave. */
		for (size_t j = i; j < c->len; j++)
			if (entry_at(c, j)->s == s && entry_at(c, j)->end - entry_at(c, j)->bytes < c->sent)
				unsent = false;
		if (unsent)
			back = unsent_copy(c, s, i);
		/* Forget every entry of this session: it will not come back for them. */
		for (size_t j = i; j < c->len; j++)
			if (entry_at(c, j)->s == s)
				entry_at(c, j)->s = NULL;
		if (back != NULL)
			c->hooks.owners->unsent(s, back);
		else
			c->hooks.owners->lost(s, why);
	}
	c->live = 0;
	c->len = 0;
	c->busy--;
}

static void tls_step(struct shared *c);

static void flush_out(struct shared *c)
{
	size_t written = 0;
	int err = c->conn.ops->flush(&c->conn, c->out, &written);

	c->sent += written;
	if (err != 0) {
		fail(c, evutil_socket_error_to_string(err));
		return;
	}
	bool want = evbuffer_get_length(c->out) > 0;
	if (want != c->writing) {
		if (want)
			event_add(c->wev, NULL);
		else
			event_del(c->wev);
		c->writing = want;
	}
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;

	(void)fd;
	(void)what;
	c->flush_pending = false;
	c->busy++;
	if (!c->dead && c->connected && !c->writing)
		flush_out(c);
	c->busy--;
	settle(c);
}

/* Connected (TLS: handshake done): reading starts, what is queued goes. */
static void connected(struct shared *c)
{
	c->connected = true;
	evtimer_del(c->timer);
	event_add(c->rev, NULL);
	if (!c->writing)
		event_add(c->wev, NULL);
	c->writing = true; /* wev is added: flush_out settles it */
	flush_out(c);
	/* With a login of repoint's, ready once the member has taken it (mine_reply). */
	if (!c->dead && !c->retired && !c->logging_in && c->hooks.ready != NULL)
		c->hooks.ready(c->hooks.arg, c);
}

/* The TLS handshake goes on as the socket allows. */
static void tls_step(struct shared *c)
{
	char err[256];
	int r = net_conn_handshake(&c->conn, err, sizeof(err));

	if (r == EAGAIN) {
		bool rd = c->conn.want == EV_READ;
		if (rd) {
			event_add(c->rev, NULL);
			event_del(c->wev);
		} else {
			event_del(c->rev);
			event_add(c->wev, NULL);
		}
		c->writing = !rd;
		return;
	}
	if (r != 0) {
		fail(c, err);
		return;
	}
	event_del(c->rev);
	event_del(c->wev);
	c->writing = false;
	connected(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;
	int err = 0;

	(void)what;
	c->busy++;
	if (!c->connected && c->conn.ssl != NULL) {
		tls_step(c);
	} else if (!c->connected) {
		err = net_connect_outcome(fd, c->connect_errno);
		if (err == EINPROGRESS) {
			c->busy--;
			return;
		}
		if (err != 0)
			fail(c, evutil_socket_error_to_string(err));
		else if (c->tls != NULL && !net_conn_start_tls(&c->conn, c->tls, c->tls_name, c->resume_key))
			fail(c, "TLS: out of memory");
		else if (c->tls != NULL)
			tls_step(c);
		else
			connected(c);
	} else {
		flush_out(c);
	}
	c->busy--;
	settle(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;

	(void)fd;
	(void)what;
	c->busy++;
	fail(c, "connect timed out");
	c->busy--;
	settle(c);
}

static void check_stall(struct shared *c);
static void stall_cb(evutil_socket_t fd, short what, void *arg);
static void unstall(struct shared *c);

/* Split what the server sent among the sessions owed replies, in order. */
static void shared_queued(struct shared *c, size_t n);

/* A reply (or part of one, complete when `done`) to a login of repoint's: refused, the first
 * login fails the connection and a later one is said (the earlier login holds); the first
 * accepted makes the connection ready. False when the connection failed. */
static bool mine_reply(struct shared *c, const uint8_t *p, size_t n, bool done)
{
	for (size_t i = 0; i < n && c->mine_len + 1 < sizeof(c->mine_head); i++) {
		char ch = (char)p[i];
		c->mine_head[c->mine_len++] = ch >= 0x20 && ch < 0x7f ? ch : ch == '\r' || ch == '\n' ? '\0' : '?';
	}
	c->mine_head[c->mine_len] = '\0';
	if (!done)
		return true;
	c->mine_len = 0;
	if (c->mine_head[0] == '-') {
		char why[200];
		snprintf(why, sizeof(why), "the member refused repoint's login: %s", c->mine_head + 1);
		if (c->hooks.refused != NULL)
			c->hooks.refused(c->hooks.arg, c->mine_head + 1);
		if (c->logging_in) {
			c->login_refused = true;
			fail(c, why);
			return false;
		}
		return true;
	}
	if (c->logging_in) {
		c->logging_in = false;
		if (c->relogin_ev != NULL) {
			struct timeval tv = {c->hooks.relogin_ms / 1000, (c->hooks.relogin_ms % 1000) * 1000};
			evtimer_add(c->relogin_ev, &tv);
		}
		if (!c->retired && c->hooks.ready != NULL)
			c->hooks.ready(c->hooks.arg, c);
	}
	return true;
}

/* Due to log in again: the login goes in line behind what is queued (a connection's login
 * changes nothing for the commands around it: every one is repoint's user's). */
static void relogin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;
	struct evbuffer *b = evbuffer_new();
	struct timeval tv = {c->hooks.relogin_ms / 1000, (c->hooks.relogin_ms % 1000) * 1000};
	int r;

	(void)fd;
	(void)what;
	if (b == NULL || c->dead || c->hooks.login == NULL) {
		if (b != NULL)
			evbuffer_free(b);
		return;
	}
	c->busy++;
	r = c->hooks.login(c->hooks.arg, b);
	if (r > 0) {
		size_t n = evbuffer_get_length(b);
		if (!queue_push(c, NULL, 1, (uint32_t)n, true) || evbuffer_add_buffer(c->out, b) < 0)
			fail(c, "out of memory");
		else
			shared_queued(c, n);
	}
	evbuffer_free(b);
	if (!c->dead)
		evtimer_add(c->relogin_ev, &tv);
	c->busy--;
	settle(c);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;
	size_t pos = 0;
	ssize_t r;

	(void)fd;
	(void)what;
	if (!c->connected) {
		if (c->conn.ssl != NULL) {
			c->busy++;
			tls_step(c);
			c->busy--;
			settle(c);
		}
		return;
	}
	r = c->conn.ops->read(&c->conn, shared_io, sizeof(shared_io));
	if (r == -2)
		return;
	if (r > 0 && c->conn.ops->pending(&c->conn))
		event_active(c->rev, EV_READ, 1);  /* TLS: decrypted already, no socket event for it */
	c->busy++;
	if (r <= 0) {
		fail(c, r == 0 ? "closed by the server" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		goto out;
	}
	while (pos < (size_t)r && !c->dead) {
		struct entry *e;
		struct session *s;
		uint64_t got = 0;
		uint32_t done_bytes = 0;
		size_t used;

		if (c->len == 0) {
			fail(c, "the server sent a reply nobody asked for");
			break;
		}
		e = entry_at(c, 0);
		bool mine = e->mine;
		used = resp_replies_scan(&c->replies, shared_io + pos, (size_t)r - pos, mine ? 1 : e->n, &got);
		if (used == (size_t)-1) {
			fail(c, "the server's reply is not RESP");
			break;
		}
		if (mine && !mine_reply(c, shared_io + pos, used, got > 0))
			break;
		s = e->s;
		e->n -= (uint32_t)got;
		if (e->n == 0) {
			done_bytes = e->bytes;
			c->head = (c->head + 1) % c->cap;
			c->len--;
			if (s != NULL)
				c->live--;
		}
		/* May queue more commands here, or forget this session: `e` is not used after. */
		if (s != NULL)
			c->hooks.owners->reply(s, shared_io + pos, used, (uint32_t)got, done_bytes);
		pos += used;
	}
	check_stall(c);
out:
	c->busy--;
	settle(c);
}

/* The session whose replies come next, if it is owed too much: stop reading until it reads. */
static void check_stall(struct shared *c)
{
	struct session *s = c->len > 0 ? entry_at(c, 0)->s : NULL;
	struct timeval tv = {SHARED_STALL_MS / 1000, (SHARED_STALL_MS % 1000) * 1000};

	if (c->dead || c->stalled || s == NULL || c->hooks.owners->owed(s) < SHARED_OWED_MAX)
		return;
	c->stalled = true;
	event_del(c->rev);
	evtimer_add(c->stall_ev, &tv);
}

static void unstall(struct shared *c)
{
	if (!c->stalled || c->dead)
		return;
	c->stalled = false;
	evtimer_del(c->stall_ev);
	event_add(c->rev, NULL);
	/* The kernel may hold replies already: the read event fires for them. */
}

void shared_owed_less(struct shared *c, struct session *s)
{
	if (c->stalled && c->len > 0 && entry_at(c, 0)->s == s && c->hooks.owners->owed(s) < SHARED_OWED_MAX / 2)
		unstall(c);
}

static void stall_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared *c = arg;
	struct session *s = c->len > 0 ? entry_at(c, 0)->s : NULL;

	(void)fd;
	(void)what;
	c->busy++;
	if (s != NULL && c->hooks.owners->owed(s) >= SHARED_OWED_MAX / 2) {
		log_warn(c->label, "closing a session whose client has not read %zu bytes of replies for %d ms",
			 c->hooks.owners->owed(s), SHARED_STALL_MS);
		/* Forgets its entries: what is still to come for it is read and dropped. */
		c->hooks.owners->lost(s, "its client did not read its replies");
	}
	unstall(c);
	c->busy--;
	settle(c);
}

struct shared *shared_open(struct event_base *base, const struct shared_target *to, int64_t connect_timeout_ms,
			   const char *label, const struct shared_hooks *hooks, const uint8_t *login, size_t login_n,
			   const uint8_t *hello, size_t n)
{
	const struct sockaddr *sa = to->sa;
	socklen_t salen = to->salen;
	struct shared *c = calloc(1, sizeof(*c));
	struct timeval tv = {.tv_sec = connect_timeout_ms / 1000, .tv_usec = (connect_timeout_ms % 1000) * 1000};

	if (c == NULL)
		return NULL;
	c->hooks = *hooks;
	snprintf(c->label, sizeof(c->label), "%s", label);
	resp_replies_init(&c->replies);
	net_conn_init(&c->conn, net_tcp_socket(sa->sa_family));
	if (c->conn.fd < 0) {
		free(c);
		return NULL;
	}
	if (to->tls != NULL) {
		c->tls = to->tls;
		net_tls_ref(c->tls);
		snprintf(c->tls_name, sizeof(c->tls_name), "%s", to->tls_name != NULL ? to->tls_name : "");
		snprintf(c->resume_key, sizeof(c->resume_key), "%s", to->resume_key != NULL ? to->resume_key : "");
	}
	c->rev = event_new(base, c->conn.fd, EV_READ | EV_PERSIST, read_cb, c);
	c->wev = event_new(base, c->conn.fd, EV_WRITE | EV_PERSIST, write_cb, c);
	c->flush_ev = event_new(base, -1, 0, flush_cb, c);
	c->timer = evtimer_new(base, timer_cb, c);
	c->stall_ev = evtimer_new(base, stall_cb, c);
	c->out = evbuffer_new();
	if (login != NULL && hooks->login != NULL && hooks->relogin_ms > 0)
		c->relogin_ev = evtimer_new(base, relogin_cb, c);
	if (c->rev == NULL || c->wev == NULL || c->flush_ev == NULL || c->timer == NULL || c->stall_ev == NULL ||
	    c->out == NULL || (login != NULL && hooks->login != NULL && hooks->relogin_ms > 0 && c->relogin_ev == NULL)) {
		destroy(c);
		return NULL;
	}
	/* repoint's login first: nothing of anyone's goes before the member has taken it. */
	if (login != NULL) {
		if (login_n > UINT32_MAX || !queue_push(c, NULL, 1, (uint32_t)login_n, true) ||
		    evbuffer_add(c->out, login, login_n) < 0) {
			destroy(c);
			return NULL;
		}
		c->queued += login_n;
		c->logging_in = true;
	}
	/* Queued before anything else, owned by no session: its reply is read and dropped. */
	if (hello != NULL && !shared_send(c, NULL, hello, n, 1)) {
		destroy(c);
		return NULL;
	}
	c->connect_errno = net_tcp_connect(c->conn.fd, sa, salen);
	if (c->connect_errno == EINPROGRESS)
		c->connect_errno = 0;
	if (c->connect_errno != 0) {
		/* Reported from the loop, like every other outcome. */
		event_active(c->wev, EV_WRITE, 1);
		return c;
	}
	event_add(c->wev, NULL);
	evtimer_add(c->timer, &tv);
	return c;
}

bool shared_ready(const struct shared *c)
{
	return c->connected && !c->dead && !c->retired && !c->logging_in;
}

bool shared_describe_tls(const struct shared *c, char *buf, size_t len)
{
	if (c->conn.ssl == NULL || !c->connected)
		return false;
	net_conn_describe(&c->conn, buf, len);
	return true;
}

bool shared_login_refused(const struct shared *c)
{
	return c->login_refused;
}

bool shared_retired(const struct shared *c)
{
	return c->retired || c->dead;
}

/* n more bytes are in out: sent at the end of this loop pass, with whatever other sessions queue
 * meanwhile. */
static void shared_queued(struct shared *c, size_t n)
{
	c->queued += n;
	if (!c->flush_pending && c->connected && !c->writing) {
		c->flush_pending = true;
		event_active(c->flush_ev, EV_WRITE, 1);
	}
}

bool shared_send(struct shared *c, struct session *s, const uint8_t *p, size_t n, uint32_t ncmds)
{
	if (c->dead || n > UINT32_MAX)
		return false;
	if (!queue_push(c, s, ncmds, (uint32_t)n, false))
		return false;
	if (evbuffer_add(c->out, p, n) < 0) {
		/* Undo the entry: it is the last one (possibly folded). */
		struct entry *last = entry_at(c, c->len - 1);
		if (last->n == ncmds) {
			c->len--;
			if (s != NULL)
				c->live--;
		} else {
			last->n -= ncmds;
			last->bytes -= (uint32_t)n;
			last->end -= n;
		}
		return false;
	}
	shared_queued(c, n);
	return true;
}

void shared_forget(struct shared *c, struct session *s)
{
	for (size_t i = 0; i < c->len; i++) {
		struct entry *e = entry_at(c, i);
		if (e->s == s) {
			e->s = NULL;
			c->live--;
		}
	}
	/* Its replies are dropped as they come: nothing to wait for. */
	if (c->stalled && (c->len == 0 || entry_at(c, 0)->s == NULL))
		unstall(c);
	settle(c);
}

void shared_retire(struct shared *c)
{
	c->retired = true;
	/* The service lets go; the sessions still owed replies keep being told. */
	c->hooks = (struct shared_hooks){.owners = c->hooks.owners};
	settle(c);
}
