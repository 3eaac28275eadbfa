/* relay_floor.c - the least a TCP relay can do, for the bench's floor paths (not part of repoint).
 *
 *   relay-floor --io epoll|uring LISTEN_PORT:UPSTREAM_PORT...
 *
 * Each client accepted on 127.0.0.1:LISTEN_PORT gets its own connection to 127.0.0.1:UPSTREAM_PORT,
 * and bytes go both ways unread: one receive into a 16 KiB buffer, one send of what came, nothing
 * else (no protocol, no health checks, no failover, connect blocking). What a proxy spends per
 * request above this is its own; what this spends is the kernel's, for one I/O model:
 *
 *   epoll  readiness: epoll_wait, then recv(2) and send(2) per message (what repoint, HAProxy and
 *          twemproxy do; a send the socket does not take whole waits for EPOLLOUT)
 *   uring  completion (io_uring, liburing): a receive is always posted on every socket, its
 *          completion posts the send; every operation of a loop turn goes in one io_uring_enter,
 *          with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (completions are run
 *          when the loop asks for them, not at every interrupt) where the kernel has them
 *
 * A pair ends when either side ends or fails (no half-close). Errors at start go to stderr, exit 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_BUF (16 * 1024)

struct pair;

enum { LISTENER, SIDE };        /* what an event's or a completion's pointer points to */

struct listener {
	int kind;                    /* LISTENER */
	int fd;
	int upstream_port;
};

/* One direction: bytes received from fd wait in buf[off..len) to be sent to the other side's fd. */
struct side {
	int kind;                    /* SIDE */
	struct pair *pair;
	int fd;
	size_t off, len;
	int sending;                 /* uring: the operation in flight is a send, not a receive */
	char buf[RELAY_BUF];
};

struct pair {
	struct side s[2];            /* 0: the client, 1: the upstream */
	int inflight;                /* uring: operations the kernel still holds */
	int ended;
};

#define RELAY_LISTENERS_MAX 8

static struct listener listeners[RELAY_LISTENERS_MAX];
static int nlisteners;

static int listen_on(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0) {
		fprintf(stderr, "relay-floor: listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
		exit(1);
	}
	return fd;
}

static void nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A pair for a client accepted by l, connected to its upstream (blocking: loopback), or NULL. */
static struct pair *pair_new(const struct listener *l, int client)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)l->upstream_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct pair *p;

	if (up < 0 || connect(up, (struct sockaddr *)&a, sizeof(a)) < 0 || (p = calloc(1, sizeof(*p))) == NULL) {
		if (up >= 0)
			close(up);
		close(client);
		return NULL;
	}
	nodelay(client);
	nodelay(up);
	p->s[0].fd = client;
	p->s[1].fd = up;
	p->s[0].pair = p->s[1].pair = p;
	p->s[0].kind = p->s[1].kind = SIDE;
	return p;
}

static struct side *other(struct side *d)
{
	return &d->pair->s[d == &d->pair->s[0]];
}

/* ---- epoll --------------------------------------------------------------------------------------- */

static int ep;

/* Read d while nothing of it waits to be sent; want EPOLLOUT while the other side's bytes wait. */
static void epoll_arm(struct side *d, int op)
{
	struct epoll_event ev = {.events = (d->len == 0 ? EPOLLIN : 0) | (other(d)->len > 0 ? EPOLLOUT : 0),
				 .data.ptr = d};

	epoll_ctl(ep, op, d->fd, &ev);
}

static void epoll_end(struct pair *p)
{
	for (int i = 0; i < 2; i++)
		close(p->s[i].fd);     /* leaves the epoll set with it */
	free(p);
}

/* Sends what d holds to the other side; -1 when the pair failed. */
static int epoll_push(struct side *d)
{
	ssize_t w = send(other(d)->fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (w < 0 && errno != EAGAIN)
		return -1;
	if (w > 0)
		d->off += (size_t)w;
	if (d->off == d->len)
		d->off = d->len = 0;
	return 0;
}

static int run_epoll(void)
{
	struct epoll_event evs[256];

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		fprintf(stderr, "relay-floor: epoll: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < nlisteners; i++) {
		struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listeners[i]};

		if (epoll_ctl(ep, EPOLL_CTL_ADD, listeners[i].fd, &lev) < 0) {
			fprintf(stderr, "relay-floor: epoll: %s\n", strerror(errno));
			return 1;
		}
	}
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			struct side *d = evs[i].data.ptr;
			size_t was, owed;
			ssize_t r;

			if (*(const int *)evs[i].data.ptr == LISTENER) {
				struct listener *l = evs[i].data.ptr;
				int c = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				struct pair *p = c >= 0 ? pair_new(l, c) : NULL;

				if (p != NULL) {
					epoll_arm(&p->s[0], EPOLL_CTL_ADD);
					epoll_arm(&p->s[1], EPOLL_CTL_ADD);
				}
				continue;
			}
			if (d->pair->ended)
				continue;      /* ended earlier in this batch: freed at its end */
			was = d->len;
			owed = other(d)->len;
			if ((evs[i].events & EPOLLOUT) && epoll_push(other(d)) < 0)
				goto end;
			if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && d->len == 0) {
				r = recv(d->fd, d->buf, RELAY_BUF, MSG_DONTWAIT);
				if (r == 0 || (r < 0 && errno != EAGAIN))
					goto end;
				if (r > 0) {
					d->len = (size_t)r;
					if (epoll_push(d) < 0)
						goto end;
				}
			}
			if ((d->len > 0) != (was > 0) || (other(d)->len > 0) != (owed > 0)) {
				epoll_arm(d, EPOLL_CTL_MOD);
				epoll_arm(other(d), EPOLL_CTL_MOD);
			}
			continue;
end:
			d->pair->ended = 1;
			for (int k = 0; k < 2; k++)
				epoll_ctl(ep, EPOLL_CTL_DEL, d->pair->s[k].fd, NULL);
			/* later events of this batch may name it: freed once the batch is done (the entry
			 * now holds the pair, and is only read by the loop below) */
			evs[i].data.ptr = d->pair;
			evs[i].events = 0xffffffffu;
		}
		for (int i = 0; i < n; i++)
			if (evs[i].events == 0xffffffffu)
				epoll_end(evs[i].data.ptr);
	}
}

/* ---- io_uring ------------------------------------------------------------------------------------ */

static struct io_uring ring;

static struct io_uring_sqe *sqe_get(void)
{
	struct io_uring_sqe *q = io_uring_get_sqe(&ring);

	if (q == NULL) {           /* the submission queue is full: hand it over now */
		io_uring_submit(&ring);
		q = io_uring_get_sqe(&ring);
	}
	return q;
}

static void post_accept(struct listener *l)
{
	struct io_uring_sqe *q = sqe_get();

	io_uring_prep_accept(q, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(q, l);
}

/* The next operation of d: send what it holds, else receive. */
static void post(struct side *d)
{
	struct io_uring_sqe *q = sqe_get();

	d->sending = d->off < d->len;
	if (d->sending)
		io_uring_prep_send(q, other(d)->fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
	else
		io_uring_prep_recv(q, d->fd, d->buf, RELAY_BUF, 0);
	io_uring_sqe_set_data(q, d);
	d->pair->inflight++;
}

/* A pair whose side ended: both sockets shut down (their operations in flight complete at once),
 * freed when the kernel holds none of them. */
static void uring_end(struct pair *p)
{
	if (!p->ended) {
		p->ended = 1;
		shutdown(p->s[0].fd, SHUT_RDWR);
		shutdown(p->s[1].fd, SHUT_RDWR);
	}
	if (p->inflight == 0) {
		close(p->s[0].fd);
		close(p->s[1].fd);
		free(p);
	}
}

static int run_uring(void)
{
	struct io_uring_params prm = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
	int rc = io_uring_queue_init_params(4096, &ring, &prm);

	if (rc == -EINVAL) {         /* a kernel before 6.1 */
		memset(&prm, 0, sizeof(prm));
		rc = io_uring_queue_init_params(4096, &ring, &prm);
	}
	if (rc < 0) {
		fprintf(stderr, "relay-floor: io_uring_queue_init: %s\n", strerror(-rc));
		return 1;
	}
	for (int i = 0; i < nlisteners; i++)
		post_accept(&listeners[i]);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		rc = io_uring_submit_and_wait(&ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			fprintf(stderr, "relay-floor: io_uring_submit_and_wait: %s\n", strerror(-rc));
			return 1;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			void *tag = io_uring_cqe_get_data(cqe);
			struct side *d = tag;
			int res = cqe->res;

			seen++;
			if (*(const int *)tag == LISTENER) {
				struct listener *l = tag;
				struct pair *p = res >= 0 ? pair_new(l, res) : NULL;

				if (p != NULL) {
					post(&p->s[0]);
					post(&p->s[1]);
				}
				post_accept(l);
				continue;
			}
			d->pair->inflight--;
			if (d->pair->ended || res <= 0) {
				uring_end(d->pair);
				continue;
			}
			if (d->sending)
				d->off += (size_t)res;
			else
				d->off = 0, d->len = (size_t)res;
			if (d->off == d->len)
				d->off = d->len = 0;
			post(d);
		}
		io_uring_cq_advance(&ring, seen);
	}
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc - 3 > RELAY_LISTENERS_MAX || strcmp(argv[1], "--io") != 0 ||
	    (strcmp(argv[2], "epoll") != 0 && strcmp(argv[2], "uring") != 0)) {
		fprintf(stderr, "usage: relay-floor --io epoll|uring LISTEN_PORT:UPSTREAM_PORT... (at most %d)\n",
			RELAY_LISTENERS_MAX);
		return 2;
	}
	for (int i = 3; i < argc; i++) {
		int lp, up;
		char end;

		if (sscanf(argv[i], "%d:%d%c", &lp, &up, &end) != 2 || lp <= 0 || lp > 65535 || up <= 0 || up > 65535) {
			fprintf(stderr, "relay-floor: %s: expected LISTEN_PORT:UPSTREAM_PORT\n", argv[i]);
			return 2;
		}
		listeners[nlisteners] = (struct listener){.kind = LISTENER, .fd = listen_on(lp), .upstream_port = up};
		nlisteners++;
	}
	return strcmp(argv[2], "epoll") == 0 ? run_epoll() : run_uring();
}
