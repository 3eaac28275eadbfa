/* uring.h - the completion transport (io = uring): a plain connection whose receives and sends are
 * io_uring operations instead of recv(2) and send(2) after epoll said so. A receive is always posted
 * (into a buffer the kernel picks from one ring of buffers shared by every connection, so an idle
 * connection holds none), its completion makes the owner's read event active; a send copies the
 * bytes into a buffer the transport owns until the kernel has them all; every operation queued in
 * a turn of the loop goes to the kernel in one io_uring_enter. libevent keeps the loop: the ring's
 * eventfd is one of its events, and the owner's events have no socket (net_ops.watch).
 *
 * Only plain bytes: TLS and splice stay on readiness. A connection moves onto the ring once it is
 * connected and back (net_conn_unring) only when nothing is in flight either way. */
#ifndef REPOINT_NET_URING_H
#define REPOINT_NET_URING_H

#include <stdbool.h>

#include "net/conn.h"

struct event;
struct event_base;

/* Moves the connected plain conn `c` onto the ring of `base` (made on first use): rev and wev are
 * the owner's events, made without a socket, made active with EV_READ and EV_WRITE. False, `c`
 * unchanged, when io_uring cannot be had here (said once in the log; the caller stays on readiness). */
bool net_conn_uring(struct net_conn *c, struct event_base *base, struct event *rev, struct event *wev);

/* Receive buffers shared by every connection on the ring (16 KiB each): a connection that finds
 * none free waits for the next one given back. */
#define NET_URING_RBUFS 256

/* Closed connections whose operations the kernel still has (their memory is kept until then). */
int net_uring_orphans(void);

/* Back to readiness (a connection kept for later: its watcher is epoll's): true when nothing was
 * in flight or held either way; false otherwise, `c` still on the ring (the caller closes it). */
bool net_conn_unring(struct net_conn *c);

#endif
