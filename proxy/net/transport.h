/* transport.h - the one non-blocking TCP connect that sessions, shared Redis connections and
 * the engine's Redis probes share (first slice of the transport seam of issue 10). Inline: the
 * plain path costs exactly what the three copies it replaces cost. */
#ifndef REPOINT_NET_TRANSPORT_H
#define REPOINT_NET_TRANSPORT_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* A non-blocking, close-on-exec stream socket with Nagle off, or -1 (errno set). */
static inline int net_tcp_socket(int family)
{
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Starts connecting `fd`. Returns 0 (connected at once), EINPROGRESS (the socket becomes
 * writable when the outcome is known: see net_connect_outcome) or the error. */
static inline int net_tcp_connect(int fd, const struct sockaddr *sa, socklen_t salen)
{
	if (connect(fd, sa, salen) == 0)
		return 0;
	return errno;
}

/* The outcome of a connect whose socket became writable: `pending` (an error net_tcp_connect
 * returned, kept to be reported from the loop) when not 0, else the socket's SO_ERROR: 0
 * (connected), EINPROGRESS (not yet) or the error. */
static inline int net_connect_outcome(int fd, int pending)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (pending != 0)
		return pending;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

#endif
