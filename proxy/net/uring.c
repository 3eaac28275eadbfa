/* uring.c - the completion transport (uring.h). One ring per process, made on first use in the loop's
 * thread (the only one that submits: SINGLE_ISSUER). Every operation carries its connection and kind
 * in its user data. A connection closed with operations in flight is kept (an orphan), its socket
 * open, until the last of them has completed: its receive is called back, and what it had taken to
 * send still goes, as close(2) would let the kernel's buffer go, for at most URING_LINGER_MS. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <liburing.h>

#include "log.h"
#include "util.h"
#include "net/uring.h"

#define RING_ENTRIES 1024
#define RBUF_SIZE (16 * 1024)   /* one receive's most */
#define RBUF_COUNT NET_URING_RBUFS  /* (a power of 2): 4 MiB */
#define SBUF_SIZE (32 * 1024)   /* bytes a connection's transport takes before the owner keeps them */
#define SBUF_KEPT 64            /* send buffers kept for the next connection that writes */
#define URING_LINGER_MS 5000    /* a closed connection's bytes may take this long to go (a peer that reads nothing) */

enum { OP_NONE, OP_RECV, OP_SEND };  /* the user data's low bits (a connection is 8-aligned) */

struct net_uconn {
	int fd;                      /* the socket: the transport's own once the owner closed it */
	bool closed;                 /* an orphan: the owner is gone */
	bool slinger;                /* ... its send was called back at URING_LINGER_MS */
	int64_t closed_ms;
	struct event *rev, *wev;     /* the owner's; NULL once closed */
	bool want_read, want_write;
	bool rposted, sposted;       /* a receive, a send in flight */
	bool rwait;                  /* no receive buffer was free: on the waiting list */
	bool reof, shut_pending;
	int rerr, serr;              /* what a receive, a send failed with */
	int inflight;                /* operations the kernel has */
	uint8_t *rbuf;               /* a completed receive's buffer, until read whole */
	uint16_t rbid;
	uint32_t roff, rlen;
	uint8_t *sbuf;               /* [sstart, send) not yet taken by the kernel */
	uint32_t sstart, send;
	TAILQ_ENTRY(net_uconn) link; /* the waiting list, or the orphans */
};

TAILQ_HEAD(uconn_list, net_uconn);

static struct {
	struct io_uring ring;
	bool up, failed;
	struct event_base *base;
	struct event *cq_ev, *submit_ev, *linger_ev;
	bool submit_armed;
	int efd;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	struct uconn_list waiting;   /* for a receive buffer */
	struct uconn_list orphans;   /* closed, operations still in flight */
	int norphans;
	uint8_t *skept[SBUF_KEPT];
	int nskept;
} R;

static const struct net_ops net_uring_ops;

static void submit_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	R.submit_armed = false;
	io_uring_submit(&R.ring);
}

static struct io_uring_sqe *sqe_get(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&R.ring);

	if (sqe == NULL) {  /* full: what is queued goes now */
		io_uring_submit(&R.ring);
		sqe = io_uring_get_sqe(&R.ring);
	}
	if (sqe != NULL && !R.submit_armed) {
		/* Submitted once the loop has run every callback of this turn. */
		R.submit_armed = true;
		event_active(R.submit_ev, EV_TIMEOUT, 1);
	}
	return sqe;
}

static void post_recv(struct net_uconn *u)
{
	struct io_uring_sqe *sqe = sqe_get();

	if (sqe == NULL) {
		u->rerr = EBUSY;  /* (a ring of RING_ENTRIES full twice in one call: not seen) */
		return;
	}
	io_uring_prep_recv(sqe, u->fd, NULL, RBUF_SIZE, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)u | OP_RECV);
	u->rposted = true;
	u->inflight++;
}

static void post_send(struct net_uconn *u)
{
	struct io_uring_sqe *sqe = sqe_get();

	if (sqe == NULL) {
		u->serr = EBUSY;
		return;
	}
	io_uring_prep_send(sqe, u->fd, u->sbuf + u->sstart, u->send - u->sstart, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)u | OP_SEND);
	u->sposted = true;
	u->inflight++;
}

static void cancel(struct net_uconn *u, int op)
{
	struct io_uring_sqe *sqe = sqe_get();

	if (sqe == NULL)
		return;  /* it completes on its own (the socket is closing) */
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)u | (uint64_t)op, 0);
	io_uring_sqe_set_data64(sqe, OP_NONE);
}

/* A receive buffer back to the kernel; the first connection waiting for one gets its receive. */
static void buf_give(uint16_t bid)
{
	struct net_uconn *w;

	io_uring_buf_ring_add(R.br, R.bufs + (size_t)bid * RBUF_SIZE, RBUF_SIZE, bid, io_uring_buf_ring_mask(RBUF_COUNT), 0);
	io_uring_buf_ring_advance(R.br, 1);
	if ((w = TAILQ_FIRST(&R.waiting)) != NULL) {
		TAILQ_REMOVE(&R.waiting, w, link);
		w->rwait = false;
		post_recv(w);
	}
}

static bool readable(const struct net_uconn *u)
{
	return u->rlen > u->roff || u->reof || u->rerr != 0;
}

static void sbuf_put(struct net_uconn *u)
{
	if (R.nskept < SBUF_KEPT)
		R.skept[R.nskept++] = u->sbuf;
	else
		free(u->sbuf);
	u->sbuf = NULL;
	u->sstart = u->send = 0;
}

static void ufree(struct net_uconn *u)
{
	if (u->sbuf != NULL)
		sbuf_put(u);
	if (u->closed && u->fd >= 0)
		close(u->fd);
	free(u);
}

static void recv_done(struct net_uconn *u, int res, unsigned flags)
{
	bool orphan = u->closed;

	u->rposted = false;
	if (flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
		if (res > 0 && !orphan) {
			u->rbuf = R.bufs + (size_t)bid * RBUF_SIZE;
			u->rbid = bid;
			u->roff = 0;
			u->rlen = (uint32_t)res;
		} else {
			buf_give(bid);
		}
	} else if (orphan || res == -ECANCELED) {
		/* closed, or called back (net_conn_unring) */
	} else if (res == -ENOBUFS) {
		u->rwait = true;  /* every buffer is held: the next one given back is its */
		TAILQ_INSERT_TAIL(&R.waiting, u, link);
	} else if (res == 0) {
		u->reof = true;
	} else if (res == -EINTR || res == -EAGAIN) {
		post_recv(u);
	} else if (res < 0) {
		u->rerr = -res;
	}
	if (!orphan && u->want_read && readable(u))
		event_active(u->rev, EV_READ, 1);
}

static void send_done(struct net_uconn *u, int res)
{
	bool orphan = u->closed;

	u->sposted = false;
	if (orphan && (res < 0 || u->slinger))
		return;  /* (closed: what is left goes with it) */
	if (res < 0 && res != -EINTR && res != -EAGAIN) {
		u->serr = -res;
	} else {
		if (res > 0)
			u->sstart += (uint32_t)res;
		if (u->sstart == u->send) {
			sbuf_put(u);
			if (u->shut_pending && !orphan) {
				shutdown(u->fd, SHUT_WR);
				u->shut_pending = false;
			}
		} else {
			/* The rest (a short send, and what came meanwhile) goes from the front. */
			memmove(u->sbuf, u->sbuf + u->sstart, u->send - u->sstart);
			u->send -= u->sstart;
			u->sstart = 0;
			post_send(u);
		}
	}
	if (!orphan && u->want_write && (u->serr != 0 || u->send < SBUF_SIZE))
		event_active(u->wev, EV_WRITE, 1);
}

static void complete(uint64_t data, int res, unsigned flags)
{
	struct net_uconn *u = (struct net_uconn *)(uintptr_t)(data & ~(uint64_t)7);

	if ((data & 7) == OP_NONE)
		return;
	u->inflight--;
	if ((data & 7) == OP_RECV)
		recv_done(u, res, flags);
	else
		send_done(u, res);
	if (u->closed && u->inflight == 0) {
		TAILQ_REMOVE(&R.orphans, u, link);
		R.norphans--;
		ufree(u);
	}
}

static unsigned reap(void)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&R.ring, head, cqe) {
		complete(cqe->user_data, cqe->res, cqe->flags);
		n++;
	}
	io_uring_cq_advance(&R.ring, n);
	return n;
}

/* The ring's eventfd (edge-triggered: nothing to read from it). */
static void cq_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	reap();
	/* More completions than the completion queue holds wait in the kernel (it drops none): fetched
	 * now rather than at the next submission. */
	for (int i = 0; i < 16 && (IO_URING_READ_ONCE(*R.ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW); i++) {
		io_uring_get_events(&R.ring);
		reap();
	}
}

/* Orphans whose send has waited URING_LINGER_MS for a peer that reads nothing: called back. */
static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timeval second = {1, 0};
	struct net_uconn *u;
	int64_t now = now_ms();
	bool more = false;

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_FOREACH(u, &R.orphans, link) {
		if (!u->sposted || u->slinger)
			continue;
		if (now - u->closed_ms >= URING_LINGER_MS) {
			cancel(u, OP_SEND);
			u->slinger = true;
		} else {
			more = true;
		}
	}
	if (more)
		evtimer_add(R.linger_ev, &second);
}

static bool ring_up(struct event_base *base)
{
	struct io_uring_params p;
	struct io_uring_buf_reg reg;
	int err;

	if (R.up)
		return R.base == base;
	if (R.failed)
		return false;
	/* COOP_TASKRUN: completions are finished when the loop next enters the kernel, without
	 * interrupting it. (Not DEFER_TASKRUN: its eventfd signal can wait for an RCU grace period,
	 * tens of milliseconds under load here, and libevent waits on the eventfd.) */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
	err = io_uring_queue_init_params(RING_ENTRIES, &R.ring, &p);
	if (err == -EINVAL) {  /* a kernel before 6.0 */
		memset(&p, 0, sizeof(p));
		err = io_uring_queue_init_params(RING_ENTRIES, &R.ring, &p);
	}
	if (err < 0) {
		log_warn("io_uring", "cannot be had here (%s): io = uring falls back to epoll", strerror(-err));
		R.failed = true;
		return false;
	}
	TAILQ_INIT(&R.waiting);
	TAILQ_INIT(&R.orphans);
	R.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (posix_memalign((void **)&R.br, 4096, RBUF_COUNT * sizeof(struct io_uring_buf)) != 0)
		R.br = NULL;
	R.bufs = malloc((size_t)RBUF_COUNT * RBUF_SIZE);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)R.br;
	reg.ring_entries = RBUF_COUNT;
	reg.bgid = 0;
	if (R.efd < 0 || R.br == NULL || R.bufs == NULL || (err = io_uring_register_eventfd(&R.ring, R.efd)) < 0 ||
	    (err = io_uring_register_buf_ring(&R.ring, &reg, 0)) < 0 ||
	    (R.cq_ev = event_new(base, R.efd, EV_READ | EV_PERSIST | EV_ET, cq_cb, NULL)) == NULL ||
	    (R.submit_ev = event_new(base, -1, 0, submit_cb, NULL)) == NULL ||
	    (R.linger_ev = evtimer_new(base, linger_cb, NULL)) == NULL || event_add(R.cq_ev, NULL) != 0) {
		log_warn("io_uring", "cannot be set up here (%s): io = uring falls back to epoll",
			 strerror(err < 0 ? -err : errno));
		if (R.cq_ev != NULL)
			event_free(R.cq_ev);
		if (R.submit_ev != NULL)
			event_free(R.submit_ev);
		if (R.linger_ev != NULL)
			event_free(R.linger_ev);
		io_uring_queue_exit(&R.ring);
		if (R.efd >= 0)
			close(R.efd);
		free(R.br);
		free(R.bufs);
		memset(&R, 0, sizeof(R));
		R.failed = true;
		return false;
	}
	io_uring_buf_ring_init(R.br);
	for (int i = 0; i < RBUF_COUNT; i++)
		io_uring_buf_ring_add(R.br, R.bufs + (size_t)i * RBUF_SIZE, RBUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(RBUF_COUNT), i);
	io_uring_buf_ring_advance(R.br, RBUF_COUNT);
	R.base = base;
	R.up = true;
	return true;
}

/* ---- the ops ---------------------------------------------------------------------------------- */

static ssize_t u_read(struct net_conn *c, void *buf, size_t len)
{
	struct net_uconn *u = c->u;

	if (u->rlen > u->roff) {
		size_t k = u->rlen - u->roff < len ? u->rlen - u->roff : len;
		memcpy(buf, u->rbuf + u->roff, k);
		u->roff += (uint32_t)k;
		if (u->roff == u->rlen) {
			buf_give(u->rbid);
			u->rbuf = NULL;
			u->roff = u->rlen = 0;
			if (!u->reof && u->rerr == 0 && !u->rposted && !u->rwait)
				post_recv(u);
		} else if (u->want_read) {
			event_active(u->rev, EV_READ, 1);  /* the rest at the next turn */
		}
		return (ssize_t)k;
	}
	if (u->reof)
		return 0;
	if (u->rerr != 0) {
		errno = u->rerr;
		return -1;
	}
	if (!u->rposted && !u->rwait)
		post_recv(u);
	return -2;
}

static bool sbuf_have(struct net_uconn *u)
{
	if (u->sbuf == NULL)
		u->sbuf = R.nskept > 0 ? R.skept[--R.nskept] : malloc(SBUF_SIZE);
	return u->sbuf != NULL;
}

static ssize_t u_write(struct net_conn *c, const void *p, size_t n)
{
	struct net_uconn *u = c->u;
	size_t k;

	if (u->serr != 0 || !sbuf_have(u)) {
		errno = u->serr != 0 ? u->serr : ENOMEM;
		return -1;
	}
	k = SBUF_SIZE - u->send < n ? SBUF_SIZE - u->send : n;
	memcpy(u->sbuf + u->send, p, k);
	u->send += (uint32_t)k;
	if (!u->sposted && u->send > u->sstart)
		post_send(u);
	return (ssize_t)k;
}

static int u_flush(struct net_conn *c, struct evbuffer *out, size_t *written)
{
	struct net_uconn *u = c->u;

	while (evbuffer_get_length(out) > 0 && u->serr == 0 && u->send < SBUF_SIZE) {
		int k;
		if (!sbuf_have(u))
			return ENOMEM;
		if ((k = evbuffer_remove(out, u->sbuf + u->send, SBUF_SIZE - u->send)) <= 0)
			break;
		u->send += (uint32_t)k;
		if (written != NULL)
			*written += (size_t)k;
	}
	if (u->serr != 0)
		return u->serr;
	if (!u->sposted && u->send > u->sstart)
		post_send(u);
	return 0;
}

static bool u_pending(const struct net_conn *c)
{
	return c->u->rlen > c->u->roff;
}

static void u_shutdown_write(struct net_conn *c)
{
	struct net_uconn *u = c->u;

	if (u->send > u->sstart)
		u->shut_pending = true;  /* once the kernel has every byte (send_done) */
	else
		shutdown(u->fd, SHUT_WR);
}

static void u_watch(struct net_conn *c, short what, bool on)
{
	struct net_uconn *u = c->u;

	if (what & EV_READ) {
		u->want_read = on;
		if (on && readable(u))
			event_active(u->rev, EV_READ, 1);
		else if (on && !u->rposted && !u->rwait)
			post_recv(u);
	}
	if (what & EV_WRITE) {
		u->want_write = on;
		/* With a send in flight, its completion says when; with none, now. */
		if (on && !u->sposted && (u->serr != 0 || u->send < SBUF_SIZE))
			event_active(u->wev, EV_WRITE, 1);
	}
}

static size_t u_queued(const struct net_conn *c)
{
	return c->u->send - c->u->sstart;
}

static void u_close(struct net_conn *c)
{
	struct net_uconn *u = c->u;
	struct timeval second = {1, 0};

	c->u = NULL;
	c->fd = -1;  /* the transport's now: closed once nothing in flight uses it (ufree) */
	u->closed = true;
	u->rev = u->wev = NULL;
	if (u->rwait)
		TAILQ_REMOVE(&R.waiting, u, link);
	u->rwait = false;
	if (u->rbuf != NULL)
		buf_give(u->rbid);
	u->rbuf = NULL;
	if (u->rposted)
		cancel(u, OP_RECV);
	if (u->inflight == 0) {
		ufree(u);
		return;
	}
	TAILQ_INSERT_TAIL(&R.orphans, u, link);
	R.norphans++;
	if (u->sposted) {
		/* What it took to send goes on, for a while. */
		u->closed_ms = now_ms();
		if (!evtimer_pending(R.linger_ev, NULL))
			evtimer_add(R.linger_ev, &second);
	}
}

int net_uring_orphans(void)
{
	return R.norphans;
}

static const struct net_ops net_uring_ops = {
	.name = "uring",
	.read = u_read,
	.write = u_write,
	.flush = u_flush,
	.pending = u_pending,
	.shutdown_write = u_shutdown_write,
	.watch = u_watch,
	.queued = u_queued,
	.close = u_close,
};

bool net_conn_uring(struct net_conn *c, struct event_base *base, struct event *rev, struct event *wev)
{
	struct net_uconn *u;

	if (c->ops != &net_plain_ops || c->fd < 0 || !ring_up(base) || (u = calloc(1, sizeof(*u))) == NULL)
		return false;
	u->fd = c->fd;
	u->rev = rev;
	u->wev = wev;
	c->u = u;
	c->ops = &net_uring_ops;
	post_recv(u);  /* posted before it is asked for: the gain */
	return true;
}

bool net_conn_unring(struct net_conn *c)
{
	struct net_uconn *u = c->u;
	struct io_uring_cqe *cqe;

	if (u == NULL)
		return true;
	if (u->send > u->sstart || u->sposted || readable(u))
		return false;
	if (u->rwait)
		TAILQ_REMOVE(&R.waiting, u, link);
	u->rwait = false;
	if (u->rposted) {
		/* Called back, waited for here: every completion meanwhile is handled as in the loop. */
		cancel(u, OP_RECV);
		io_uring_submit(&R.ring);
		while (u->rposted && io_uring_wait_cqe(&R.ring, &cqe) == 0)
			reap();
		if (u->rposted || readable(u))
			return false;  /* (bytes came first: the caller closes it) */
	}
	if (u->sbuf != NULL)
		sbuf_put(u);
	free(u);
	c->u = NULL;
	c->ops = &net_plain_ops;
	return true;
}
