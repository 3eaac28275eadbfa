/* test_uring.c - the completion transport (net/uring.h) over real sockets and a real ring: bytes both
 * ways, a read in pieces, the peer's end, a megabyte through a full socket, the receive buffers
 * running out, a close with operations in flight, and the way back to readiness. The loop waits
 * for the transport's own events (no sleeps); check's timeout fails a test that waits for good. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "net/conn.h"
#include "net/uring.h"

struct side {
	struct net_conn c;
	struct event *rev, *wev;
	int reads, writes;           /* times its events were made active */
	int peer;                    /* the other end, plain */
};

static struct event_base *base;

static void rcb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	ck_assert_int_eq(what & EV_READ, EV_READ);
	((struct side *)arg)->reads++;
}

static void wcb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	ck_assert_int_eq(what & EV_WRITE, EV_WRITE);
	((struct side *)arg)->writes++;
}

/* A socket pair: d->c on the ring, d->peer plain and non-blocking. */
static void side_up(struct side *d)
{
	int sv[2];

	memset(d, 0, sizeof(*d));
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	net_conn_init(&d->c, sv[0]);
	d->peer = sv[1];
	d->rev = event_new(base, -1, EV_PERSIST, rcb, d);
	d->wev = event_new(base, -1, EV_PERSIST, wcb, d);
	ck_assert(d->rev != NULL && d->wev != NULL);
	ck_assert(net_conn_uring(&d->c, base, d->rev, d->wev));
	ck_assert_str_eq(d->c.ops->name, "uring");
}

/* Its events and the peer go (its conn was closed already). */
static void side_gone(struct side *d)
{
	event_free(d->rev);
	event_free(d->wev);
	if (d->peer >= 0)
		close(d->peer);
}

static void side_down(struct side *d)
{
	net_conn_close(&d->c);
	side_gone(d);
}

static void setup(void)
{
	base = event_base_new();
	ck_assert(base != NULL);
}

/* Turns of the loop until *n moves past `was` (each turn waits for an event). */
static void until_more(const int *n, int was)
{
	for (int i = 0; i < 10000 && *n <= was; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_gt(*n, was);
}

/* Turns of the loop until every closed connection's operations have completed. */
static void until_no_orphans(void)
{
	for (int i = 0; i < 10000 && net_uring_orphans() > 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(net_uring_orphans(), 0);
}

static void until_sent(struct side *d)
{
	for (int i = 0; i < 10000 && d->c.ops->queued(&d->c) > 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_uint_eq(d->c.ops->queued(&d->c), 0);
}

START_TEST(test_both_ways)
{
	struct side d;
	char b[16];
	int was;

	setup();
	side_up(&d);
	/* Taken at once, owed until the kernel has it. */
	d.c.ops->watch(&d.c, EV_WRITE, true);
	ck_assert_int_eq(d.c.ops->write(&d.c, "ping", 4), 4);
	ck_assert_uint_eq(d.c.ops->queued(&d.c), 4);
	until_sent(&d);
	ck_assert_int_ge(d.writes, 1);  /* the send's completion said so */
	ck_assert_int_eq(recv(d.peer, b, sizeof(b), 0), 4);
	ck_assert(memcmp(b, "ping", 4) == 0);

	/* Nothing there: -2, and the event comes with the bytes. */
	d.c.ops->watch(&d.c, EV_READ, true);
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), -2);
	was = d.reads;
	ck_assert_int_eq(send(d.peer, "abcdef", 6, 0), 6);
	until_more(&d.reads, was);
	ck_assert(d.c.ops->pending(&d.c));
	/* Read in pieces: what is left makes the event active again. */
	ck_assert_int_eq(d.c.ops->read(&d.c, b, 2), 2);
	ck_assert(memcmp(b, "ab", 2) == 0);
	was = d.reads;
	until_more(&d.reads, was);
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), 4);
	ck_assert(memcmp(b, "cdef", 4) == 0);
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), -2);

	/* The peer's end. */
	was = d.reads;
	close(d.peer);
	d.peer = -1;
	until_more(&d.reads, was);
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), 0);
	side_down(&d);
	event_base_free(base);
}
END_TEST

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct evbuffer *got = arg;
	char b[8192];
	ssize_t r;

	(void)what;
	while ((r = recv(fd, b, sizeof(b), 0)) > 0)
		evbuffer_add(got, b, (size_t)r);
}

/* A megabyte through a socket that fills: the transport takes at most its buffer, says when it can
 * take more, and every byte arrives once and in order. */
START_TEST(test_megabyte)
{
	enum { TOTAL = 1 << 20 };
	struct side d;
	struct evbuffer *out = evbuffer_new(), *got = evbuffer_new();
	struct event *peer_ev;
	uint8_t *want = malloc(TOTAL);
	size_t written = 0;
	int sz = 4096;

	setup();
	side_up(&d);
	setsockopt(d.peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	for (size_t i = 0; i < TOTAL; i++)
		want[i] = (uint8_t)(i * 7 + i / 251);
	evbuffer_add(out, want, TOTAL);
	peer_ev = event_new(base, d.peer, EV_READ | EV_PERSIST, drain_cb, got);
	event_add(peer_ev, NULL);
	while (evbuffer_get_length(got) < TOTAL) {
		int was = d.writes;
		ck_assert_int_eq(d.c.ops->flush(&d.c, out, &written), 0);
		ck_assert_uint_le(d.c.ops->queued(&d.c), 64 * 1024);  /* bounded: the rest stays the owner's */
		d.c.ops->watch(&d.c, EV_WRITE, evbuffer_get_length(out) > 0 || d.c.ops->queued(&d.c) > 0);
		if (evbuffer_get_length(out) == 0 && d.c.ops->queued(&d.c) == 0)
			event_base_loop(base, EVLOOP_ONCE);  /* the peer's last reads */
		else
			until_more(&d.writes, was);
	}
	ck_assert_uint_eq(written, TOTAL);
	ck_assert_uint_eq(evbuffer_get_length(got), TOTAL);
	ck_assert(memcmp(evbuffer_pullup(got, -1), want, TOTAL) == 0);
	event_free(peer_ev);
	side_down(&d);
	evbuffer_free(out);
	evbuffer_free(got);
	free(want);
	event_base_free(base);
}
END_TEST

/* More connections with bytes waiting than receive buffers: the last wait for one given back, and
 * every connection gets its bytes. */
START_TEST(test_buffers_run_out)
{
	enum { N = NET_URING_RBUFS + 16 };
	static struct side d[N];
	int done = 0, readable = 0;
	char b[4];

	setup();
	for (int i = 0; i < N; i++) {
		side_up(&d[i]);
		d[i].c.ops->watch(&d[i].c, EV_READ, true);
		ck_assert_int_eq(send(d[i].peer, "x", 1, 0), 1);
	}
	/* Until the buffers are all held: no more than there are. */
	for (int i = 0; i < 10000 && readable < NET_URING_RBUFS; i++) {
		event_base_loop(base, EVLOOP_ONCE);
		readable = 0;
		for (int k = 0; k < N; k++)
			readable += d[k].c.ops->pending(&d[k].c);
	}
	ck_assert_int_eq(readable, NET_URING_RBUFS);
	/* Read them: each buffer given back serves a waiting connection. */
	for (int i = 0; i < 10000 && done < N; i++) {
		for (int k = 0; k < N; k++) {
			if (d[k].reads > 0 && d[k].c.ops->pending(&d[k].c)) {
				ck_assert_int_eq(d[k].c.ops->read(&d[k].c, b, sizeof(b)), 1);
				ck_assert_int_eq(b[0], 'x');
				done++;
			}
		}
		if (done < N)
			event_base_loop(base, EVLOOP_ONCE);
	}
	ck_assert_int_eq(done, N);
	for (int i = 0; i < N; i++)
		side_down(&d[i]);
	until_no_orphans();
	event_base_free(base);
}
END_TEST

static void pump_peer(struct side *d, struct evbuffer *got, bool *eof)
{
	char b[8192];
	ssize_t r;

	while ((r = recv(d->peer, b, sizeof(b), MSG_DONTWAIT)) > 0)
		evbuffer_add(got, b, (size_t)r);
	if (r == 0)
		*eof = true;
}

/* Closed right after a write: the bytes still reach the peer, then its end (as close(2) lets the
 * kernel's buffer go); the receive in flight is called back. */
START_TEST(test_close_delivers)
{
	struct side d;
	struct evbuffer *got = evbuffer_new();
	bool eof = false;

	setup();
	side_up(&d);
	ck_assert_int_eq(d.c.ops->write(&d.c, "bye", 3), 3);
	net_conn_close(&d.c);
	ck_assert_int_eq(d.c.fd, -1);
	until_no_orphans();
	pump_peer(&d, got, &eof);
	ck_assert_uint_eq(evbuffer_get_length(got), 3);
	ck_assert(memcmp(evbuffer_pullup(got, -1), "bye", 3) == 0);
	ck_assert(eof);
	side_gone(&d);
	evbuffer_free(got);
	event_base_free(base);
}
END_TEST

/* Closed with a send waiting for a peer that reads nothing: kept (its memory, its socket) until the
 * peer reads -- every byte then -- or, for a peer that never does, URING_LINGER_MS (5 s). */
START_TEST(test_close_in_flight)
{
	struct side d;
	struct evbuffer *got = evbuffer_new();
	char fill[4096];
	size_t filled = 0;
	bool eof = false;
	ssize_t w;

	setup();
	for (int round = 0; round < 2; round++) {
		side_up(&d);
		memset(fill, 'y', sizeof(fill));
		filled = 0;
		/* The socket full: the transport's send waits in the kernel. */
		while ((w = send(d.c.fd, fill, sizeof(fill), MSG_DONTWAIT)) > 0)
			filled += (size_t)w;
		ck_assert_int_eq(d.c.ops->write(&d.c, fill, sizeof(fill)), (ssize_t)sizeof(fill));
		event_base_loop(base, EVLOOP_NONBLOCK);  /* submitted: the send, and a receive */
		event_base_loop(base, EVLOOP_NONBLOCK);
		ck_assert_uint_eq(d.c.ops->queued(&d.c), sizeof(fill));
		net_conn_close(&d.c);
		ck_assert_int_eq(net_uring_orphans(), 1);
		if (round == 0) {
			/* The peer reads: everything arrives, then the end. */
			evbuffer_drain(got, evbuffer_get_length(got));
			eof = false;
			for (int i = 0; i < 100000 && !eof; i++) {
				pump_peer(&d, got, &eof);
				event_base_loop(base, EVLOOP_NONBLOCK);
			}
			ck_assert(eof);
			ck_assert_uint_eq(evbuffer_get_length(got), filled + sizeof(fill));
		}
		until_no_orphans();
		side_gone(&d);
	}
	evbuffer_free(got);
	event_base_free(base);
}
END_TEST

/* Back to readiness: an idle connection loses nothing (its receive is called back before it took
 * a byte); one holding bytes stays on the ring. */
START_TEST(test_unring)
{
	struct side d;
	char b[8];
	int was;

	setup();
	side_up(&d);
	event_base_loop(base, EVLOOP_NONBLOCK);  /* its receive is with the kernel */
	ck_assert(net_conn_unring(&d.c));
	ck_assert_str_eq(d.c.ops->name, "plain");
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), -2);
	ck_assert_int_eq(send(d.peer, "late", 4, 0), 4);
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), 4);
	ck_assert(memcmp(b, "late", 4) == 0);

	ck_assert(net_conn_uring(&d.c, base, d.rev, d.wev));
	d.c.ops->watch(&d.c, EV_READ, true);
	was = d.reads;
	ck_assert_int_eq(send(d.peer, "held", 4, 0), 4);
	until_more(&d.reads, was);
	ck_assert(!net_conn_unring(&d.c));
	ck_assert_str_eq(d.c.ops->name, "uring");
	ck_assert_int_eq(d.c.ops->read(&d.c, b, sizeof(b)), 4);
	ck_assert(memcmp(b, "held", 4) == 0);
	side_down(&d);
	event_base_free(base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("uring");
	TCase *tc = tcase_create("uring");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_both_ways);
	tcase_add_test(tc, test_megabyte);
	tcase_add_test(tc, test_buffers_run_out);
	tcase_add_test(tc, test_close_delivers);
	tcase_add_test(tc, test_close_in_flight);
	tcase_add_test(tc, test_unring);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
