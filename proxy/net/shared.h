/* shared.h - one server connection carrying the commands of many Redis sessions (multiplex = on).
 *
 *   session ──shared_send(bytes, n commands)──▶ [out] ──one send per loop pass──▶ server
 *   server ──recv──▶ replies split by counting ──▶ session_shared_reply(session, its replies)
 *
 * Commands are queued whole (never interleaved inside one) and sent at the end of the loop pass,
 * so the commands of every client that was readable in that pass leave in one write and the
 * server answers them with one. A FIFO of (session, commands) entries says whose replies come
 * next. A session that goes away leaves its entries behind with no owner: their replies are read
 * and dropped.
 *
 * The owner (the service) finds the connection through its member; once it retires it (the
 * member is no longer where sessions go), the connection lives on alone until every live
 * session's replies are in, then closes itself. A connection that fails tells every session with
 * commands in flight (session_shared_lost) -- those commands may or may not have run -- after the
 * owner's `lost` hook; a session none of whose commands had been written yet (read in the same loop
 * pass that found the connection closed) gets them back instead (session_shared_unsent).
 */
#ifndef REPOINT_SHARED_H
#define REPOINT_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct session;
struct shared;
struct evbuffer;
struct net_tls;

/* What a shared connection tells the sessions whose commands it carries: the session layer's
 * functions, handed over by whoever opens the connection (shared.c knows sessions only as the
 * owners of its entries, and calls nothing of net/session.c by name). */
struct shared_owner_ops {
	void (*reply)(struct session *s, const uint8_t *p, size_t n, uint32_t replies, uint32_t done_bytes);
	size_t (*owed)(const struct session *s);
	void (*lost)(struct session *s, const char *why);
	void (*unsent)(struct session *s, struct evbuffer *unsent);
};

struct shared_hooks {
	const struct shared_owner_ops *owners;
	void (*ready)(void *arg, struct shared *c);  /* connected: sessions may be bound */
	void (*lost)(void *arg, struct shared *c, bool was_ready, const char *why); /* failed; gone after */
	/* repoint's login (auth = repoint, Redis): login appends it again (1; 0: none, -1: not now),
	 * every relogin_ms after the first; refused says the member refused one (`why`, its error). */
	int (*login)(void *arg, struct evbuffer *out);
	void (*refused)(void *arg, const char *why);
	int64_t relogin_ms;
	void *arg;
};

/* Where a shared connection goes: the address, and TLS (NULL: plain) with the name the
 * certificate must carry and the key its session is resumed under (the member's address). */
struct shared_target {
	const struct sockaddr *sa;
	socklen_t salen;
	struct net_tls *tls;
	const char *tls_name;
	const char *resume_key;
};

/* Connects (non-blocking; TLS: the handshake too before `ready`); NULL when no socket could be
 * had. `login` (login_n bytes, may be NULL) is repoint's login, sent first: `ready` comes once the
 * member has accepted it (refused: the connection fails, shared_login_refused says so); it is
 * made again with hooks.login every hooks.relogin_ms. `hello` (n bytes, may be NULL) is a command
 * sent next, whose reply is dropped (HELLO 3 for a RESP3 connection). */
struct shared *shared_open(struct event_base *base, const struct shared_target *to, int64_t connect_timeout_ms,
			   const char *label, const struct shared_hooks *hooks, const uint8_t *login, size_t login_n,
			   const uint8_t *hello, size_t n);
bool shared_ready(const struct shared *c);
/* Its TLS as net_conn_describe says it ("TLSv1.3 TLS_AES_256_GCM_SHA384"); false when plaintext. */
bool shared_describe_tls(const struct shared *c, char *buf, size_t len);
/* It failed because the member refused repoint's login (not a sign of the member's health). */
bool shared_login_refused(const struct shared *c);
bool shared_retired(const struct shared *c);
/* Queue p[0..n), `ncmds` complete commands of session `s`. False when the connection cannot take
 * more (failed, or out of memory): nothing was queued. */
bool shared_send(struct shared *c, struct session *s, const uint8_t *p, size_t n, uint32_t ncmds);
/* `s` is going away or moving on: its replies still to come are dropped. */
void shared_forget(struct shared *c, struct session *s);
/* `s`'s client has read some of what it is owed: reading may resume if it was stopped for it. */
void shared_owed_less(struct shared *c, struct session *s);
/* The owner lets go: no new sessions; closes once no live session waits for a reply (at once
 * if none does). Hooks are not called any more. */
void shared_retire(struct shared *c);

#endif
