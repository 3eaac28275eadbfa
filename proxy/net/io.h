/* io.h - writing an evbuffer to a non-blocking socket, for sessions and shared connections. */
#ifndef REPOINT_NET_IO_H
#define REPOINT_NET_IO_H

#include <errno.h>
#include <stddef.h>

#include <event2/buffer.h>
#include <event2/util.h>

/* Write what `out` holds until the kernel takes no more. Returns 0 (everything written, or the
 * socket is full: the rest stays in `out`) or the socket error; adds the bytes written to
 * *written when not NULL. */
static inline int evbuffer_flush_fd(struct evbuffer *out, evutil_socket_t fd, size_t *written)
{
	while (evbuffer_get_length(out) > 0) {
		int n = evbuffer_write(out, fd);
		if (n < 0) {
			int err = EVUTIL_SOCKET_ERROR();
			return err == EAGAIN || err == EWOULDBLOCK || err == EINTR ? 0 : err;
		}
		if (n == 0)
			break;
		if (written != NULL)
			*written += (size_t)n;
	}
	return 0;
}

#endif
