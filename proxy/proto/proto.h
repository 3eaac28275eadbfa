/* proto.h - what each wire protocol means to repoint, behind one const table per protocol.
 *
 * repoint forwards bytes unchanged. To drain gracefully it must know when a session is idle (no
 * request in flight, no transaction open), and to refuse a held client it must speak one native
 * error. Both are pure functions over bytes, testable without sockets:
 *
 *   feed(st, dir, bytes)  -- called with every byte, in order, in each direction
 *   is_idle(st)           -- true at a point where closing (or moving) the session loses nothing
 *   refuse(...)           -- the protocol's own "no writer" error for a client that never got a server
 *
 * A tracker that meets something it cannot follow (TLS after SSLRequest, an unknown frame, a
 * protocol violation) becomes "opaque": never idle again, so graceful drain falls back to
 * drain_timeout. It never fails the session: the bytes are still forwarded unchanged.
 */
#ifndef REPOINT_PROTO_H
#define REPOINT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum proto_dir { PROTO_CLIENT_TO_SERVER = 0, PROTO_SERVER_TO_CLIENT = 1 };

enum proto_refuse_step {
	PROTO_REFUSE_DONE,  /* the error is in `out`: flush it, then close */
	PROTO_REFUSE_MORE,  /* a negotiation reply is in `out`; call again when the client sends more */
};

/* A cancel key (Postgres: process id + secret key, 8 bytes in protocol 3.0). */
#define PROTO_KEY_MAX 8
/* "Not complete yet" from a function that returns a length. */
#define PROTO_MORE ((size_t)-1)

/* Per-session tracker state: large enough for every protocol, kept inside the session. */
struct proto_state {
	uint64_t words[20];
};

/* tx_strip's place in a server's messages, across reads (zeroed at an answer's start). */
struct proto_strip {
	uint32_t remaining;
	uint8_t hdr[5];
	uint8_t hdr_len;
	bool skip;
};

struct proto_ops {
	const char *name;
	void (*init)(struct proto_state *st);
	void (*feed)(struct proto_state *st, enum proto_dir dir, const uint8_t *p, size_t n);
	bool (*is_idle)(const struct proto_state *st);
	bool (*is_opaque)(const struct proto_state *st);
	/* Payload (optional; RESP): how many of the next bytes in `dir` the tracker would only count (a
	 * bulk string's inside and end), so that they may pass without being read (splice); skip
	 * counts n of them as fed (n at most payload's). Nothing else of the session looks inside
	 * such bytes. */
	uint64_t (*payload)(const struct proto_state *st, enum proto_dir dir);
	void (*skip)(struct proto_state *st, enum proto_dir dir, uint64_t n);
	/* at_rest (optional; Postgres, MySQL): every request answered and nothing half-sent either way,
	 * a transaction open or not -- where a client that says goodbye leaves a connection that a reset
	 * (its transaction rolled back first) makes as a new login leaves it. */
	bool (*at_rest)(const struct proto_state *st);
	/* Answer a client held too long. `client_in` holds what the client sent so far (consumed bytes
	 * are drained from it); the reply is appended to `out`. `msg` is the human text. */
	enum proto_refuse_step (*refuse)(struct evbuffer *client_in, struct evbuffer *out, const char *msg);

	/* Moving a session to another server (optional; NULL where the protocol cannot: Postgres and
	 * MySQL authenticate with a per-connection nonce, so a session cannot be re-established
	 * without the client).
	 * can_migrate: idle, and nothing the client set lives in the server's connection state
	 *   (no AUTH, SELECT, HELLO, CLIENT SETNAME/TRACKING, subscriptions): a fresh connection to
	 *   another server is indistinguishable to the client.
	 * retryable: exactly one request is outstanding, nothing is partial either way, and the
	 *   session could migrate once that request is answered; if the server refuses it without
	 *   executing it (a read-only error), the request may be sent again to the new writer. */
	bool (*can_migrate)(const struct proto_state *st);
	bool (*retryable)(const struct proto_state *st);
	/* A transaction refused part-way (optional; MySQL, Postgres): the number of requests since the idle
	 * point it began at, when there are at least two, the last alone in flight and unanswered,
	 * every one before it answered and each a plain query that running again rebuilds (nothing
	 * set, prepared or locked outside the transaction), nothing partial either way; else 0.
	 * Refused read-only, none of it was committed: the requests may run again, one at a time, on
	 * the new writer, as long as each is answered as before (net/txlog.h).
	 * tx_answered: nothing in flight and nothing half-received (a replayed request's answer is
	 *   complete). request_len: the length of the whole request at the start of p[0..n), 0 when
	 *   incomplete. */
	unsigned (*tx_retryable)(const struct proto_state *st);
	/* tx_idle (optional; Postgres, MySQL): the same for a session idle inside such a transaction
	 * (every request answered, the transaction open): when its server goes away nothing of it was
	 * committed, and it can run again elsewhere, every answer checked, before the client goes on. */
	unsigned (*tx_idle)(const struct proto_state *st);
	bool (*tx_answered)(const struct proto_state *st);
	/* What of the answers a replay must match (optional; Postgres: all but ParameterStatus, which a
	 * server sends when a setting changed -- a reload that turned it read-only -- and which says
	 * nothing of the transaction): copies the bytes of p[0..n) to compare into out (room for
	 * n + 8), returns how many. NULL: every byte. */
	size_t (*tx_strip)(struct proto_strip *st, const uint8_t *p, size_t n, uint8_t *out);
	size_t (*request_len)(const uint8_t *p, size_t n);
	/* At an idle point where can_migrate says no: why, as a metric label ("named_statement",
	 * "subscribed", ...; static), or NULL when it does not know. */
	const char *(*unmovable_reason)(const struct proto_state *st);
	/* The requests just answered changed the server's session in a way that sending them again
	 * rebuilds (optional; Postgres: a lone SET/RESET at an idle point, Parse/Close of named
	 * prepared statements, a lone DEALLOCATE). Nonzero once per such answer: its kind, which the
	 * session hands with the requests (those it kept since the last idle point or the last time)
	 * to proto_login_ops.replay, for the next server it moves to. */
	int (*replayable)(struct proto_state *st);

	/* The length of a complete error reply at the start of p[0..n) that says the server is not a
	 * writer (Postgres SQLSTATE 25006, MySQL/MariaDB errors 1290/1836, Redis -READONLY), else 0.
	 * Looked at only at the start of what one read returned. Never a verdict on the member: a
	 * script or a client's own settings can produce the same words on a writer. A retryable
	 * request refused so is sent again only once the member's own probe says it is not a writer. */
	size_t (*readonly_reply)(const uint8_t *p, size_t n);
	/* The length of a complete error reply at the start of p[0..n) that refuses a request for a
	 * moment without running it (Redis Cluster's -CLUSTERDOWN while a failover settles, -TRYAGAIN
	 * and -ASK while a slot migrates), else 0 (optional). A retryable request refused so is sent again a
	 * little later, for at most hold_timeout; then the client gets the refusal. */
	size_t (*later_reply)(const uint8_t *p, size_t n);

	/* Cancelling (optional; Postgres): a connection that asks to cancel another session's query.
	 * cancel_request: the length of a complete cancel request at the start of p[0..n), with the key
	 *   that names the session (key[0..*keylen), at most PROTO_KEY_MAX bytes) -- 0 when p does not
	 *   start one (or its key is longer), PROTO_MORE when it may but is not complete yet.
	 * session_key: the key the server gave this session (BackendKeyData); false when none yet. */
	size_t (*cancel_request)(const uint8_t *p, size_t n, uint8_t *key, size_t *keylen);
	bool (*session_key)(const struct proto_state *st, uint8_t *key, size_t *keylen);
	/* Cancelling by a request on another session (optional; MySQL: KILL [QUERY|CONNECTION] id,
	 * which clients -- the mysql CLI's Ctrl-C, Connector/J's timeouts -- send with the id the
	 * greeting gave them). With repoint's login that id is repoint's (session_key), so that it names
	 * the session wherever it moved: kill_request gives the length of such a request alone and whole
	 * in p[0..n) (0 when p is not one) and the id it names (key); kill_rewrite appends the same
	 * request naming `key` (the member's id for that session) instead. */
	size_t (*kill_request)(const uint8_t *p, size_t n, uint8_t *key, size_t *keylen);
	void (*kill_rewrite)(const uint8_t *p, size_t n, const uint8_t *key, size_t keylen, struct evbuffer *out);

	/* Connection start (optional): a server that is shutting down or not yet accepting answers a
	 * new session with an error before authentication (Postgres 57P01/57P03, MySQL 1053). Nothing
	 * was executed, so the session may start again on another server, replaying what the client
	 * sent so far.
	 * startup_refusal: the length of such a complete refusal at the start of p[0..n), else 0.
	 * startup_preamble: how many of the client's first bytes are a negotiation request whose
	 *   one-byte answer the client already got (Postgres SSLRequest/GSSENCRequest answered 'N'):
	 *   replayed to the new server, its answer byte is not passed on again. */
	size_t (*startup_refusal)(const uint8_t *p, size_t n);
	size_t (*startup_preamble)(const uint8_t *p, size_t n);
	/* The server ending a session (optional; Postgres): where, in what one read returned, the error
	 * after which it closes the connection starts (severity FATAL or PANIC: a shutdown, a crash, or
	 * a backend terminated) -- the read must end with it, every message before it complete; n when
	 * there is none. For a session that can move, it is held back until the member's own word says
	 * whether the close was for the client. */
	size_t (*termination)(const struct proto_state *st, const uint8_t *p, size_t n);
	/* Requests in flight when the server went away (optional; Postgres): true when the client can
	 * be told in the protocol that their outcome is unknown and go on elsewhere -- no transaction
	 * open, no session state, nothing half-sent either way -- with *owed the answers it waits for
	 * (one per synchronisation point). outcome_unknown appends one such answer: an error saying
	 * the request may or may not have run (never sent again: it may have). */
	bool (*inflight_lost)(const struct proto_state *st, uint32_t *owed);
	void (*outcome_unknown)(struct evbuffer *out, const char *msg);

	/* TLS negotiated inside the protocol (optional; Postgres). When repoint makes TLS to the member
	 * itself, it sends tls_request[0..tls_request_len) first (SSLRequest) and reads exactly one byte:
	 * tls_answer says 1 (go: 'S'), 0 (refused: 'N') or -1 (not an answer). A client's own request at
	 * the start of its session (negotiation_request: its length, 0 when none, PROTO_MORE when p may
	 * be the start of one) is then answered by repoint with negotiation_refused (1 byte, 'N'): the
	 * client's side stays plaintext on loopback. NULL tls_request: TLS from the first byte (Redis). */
	const uint8_t *tls_request;
	size_t tls_request_len;
	int (*tls_answer)(uint8_t byte);
	size_t (*negotiation_request)(const uint8_t *p, size_t n);
	uint8_t negotiation_refused;

	/* TLS offered inside a handshake the server opens (optional; MySQL's CLIENT_SSL). */
	const struct proto_upgrade *upgrade;
	/* repoint's own side of the session's start, for auth = repoint (optional; Postgres). */
	const struct proto_login_ops *login;
	/* auth = repoint where logging in is one command (optional; Redis AUTH): login_command appends
	 * it, logging a fresh server connection in as user (NULL or "": the default user) with
	 * password; its one reply is an error when refused. can_relogin: the session is at a point
	 * where that command may go in again on its connection (a long-lived connection re-logs in
	 * before the service cuts it), its reply the next one to come. */
	bool (*login_command)(struct evbuffer *out, const char *user, const char *password);
	bool (*can_relogin)(const struct proto_state *st);
};

/* proto_ops.replayable kinds (Postgres; MySQL: a lone SET, USE or COM_INIT_DB to send again,
 * COM_RESET_CONNECTION, after which there is nothing to, or a COM_STMT_PREPARE answered, the last
 * request kept, to prepare again after a move). */
enum { PG_REPLAY_SET = 1, PG_REPLAY_STATEMENTS, PG_REPLAY_DEALLOCATE };
enum { MY_REPLAY_PACKET = 1, MY_REPLAY_RESET, MY_REPLAY_PREPARE };

/* auth = repoint: the client's start ends at repoint, which authenticates the client itself
 * (client_auth), keeps its startup packet, and logs in to whichever member the session is on --
 * the first one, and any later one a moved session goes to:
 *
 *   client ──start──▶ front ──(authenticated)──▶ route ──▶ back ──start──▶ member
 *   client ◀──what a login ends with (first login only: a moved session tells it nothing)── back
 *
 * Pure state machines over evbuffers: the session moves the bytes, these read and write them. The
 * client holds a cancel key of repoint's making; the member's key is kept, so that a cancel
 * reaches whichever member holds the session now. */
enum client_auth;
struct auth_users;
struct proto_login;

enum proto_login_step {
	PROTO_LOGIN_MORE,  /* wants more bytes */
	PROTO_LOGIN_DONE,  /* front: the client is authenticated; back: logged in to the member (err,
	                      when not empty, says for the log what it rebuilt on the way) */
	PROTO_LOGIN_FAIL,  /* front: a native error is in the client's output (flush, close);
	                      back: the member refused (the reason in err; on a first login its own
	                      error, if it sent one, is in to_client) */
	PROTO_LOGIN_TLS,   /* back: the TLS request is in to_member: send it whole, then the handshake;
	                      front: the client asked for TLS (offer_tls): its handshake follows */
};

struct proto_login_ops {
	/* The member speaks first (MySQL's greeting): the session goes to a member at once; back reads
	 * its greeting and greets the client (repoint's own challenge); front then authenticates the
	 * client, and back logs in once front is done. Otherwise (Postgres) front is done before the
	 * session goes to a member. */
	bool member_first;
	/* users: auth_file's (NULL: none); the login keeps a reference. */
	struct proto_login *(*create)(enum client_auth how, struct auth_users *users);
	void (*destroy)(struct proto_login *l);
	/* The client's bytes are in `in` (consumed as read); what it is owed goes to `out`. */
	enum proto_login_step (*front)(struct proto_login *l, struct evbuffer *in, struct evbuffer *out);
	bool (*front_done)(const struct proto_login *l);
	/* A new member connection: what to send it first. member_password, when not NULL, is what this
	 * login proves itself with instead of auth_file's secret (member_password = iam: an IAM token
	 * made for this member and user); the login keeps a copy until it ends. tls: the connection is
	 * to be TLS, which a member that speaks first (MySQL) is asked for inside the login: back says
	 * PROTO_LOGIN_TLS once the request is in to_member, and is called again (with nothing new) once
	 * the handshake is done. (Postgres: TLS is made before the login.) */
	void (*back_start)(struct proto_login *l, struct evbuffer *to_member, const char *member_password, bool tls);
	const char *(*user)(const struct proto_login *l);  /* the client's user, once front_done */
	/* member_first: the password for this member login (as back_start's), given once the client's
	 * user is known -- a member that speaks first is connected to before. */
	void (*set_member_password)(struct proto_login *l, const char *member_password);
	/* The member's bytes (consumed up to the end of its login). DONE: logged in; on the first login
	 * what the client is owed was appended to to_client. */
	enum proto_login_step (*back)(struct proto_login *l, struct evbuffer *in, struct evbuffer *to_member,
				      struct evbuffer *to_client, char *err, size_t errlen);
	bool (*told)(const struct proto_login *l);  /* the first login is done: the client has its session */
	/* The tracker's state at an idle point after the login: what a moved session starts from. */
	void (*track_idle)(const struct proto_login *l, struct proto_state *st);
	/* The member's cancel key for the client's key[0..keylen), false when it is not this session's. */
	bool (*member_key)(const struct proto_login *l, const uint8_t *key, size_t keylen, uint8_t *member_key);
	/* Requests of a kind proto_ops.replayable named, in msgs[0..n): what of them to send again
	 * after every later login (a SET as it is; named statements' Parse messages, Close and
	 * DEALLOCATE taking them away; MySQL's COM_STMT_PREPARE), their answers not passed on (an
	 * error fails the login). st: the tracker, the answer just read (MySQL: the statement's id).
	 * False when out of room or not understood: the session cannot move then. */
	bool (*replay)(struct proto_login *l, int kind, const uint8_t *msgs, size_t n, const struct proto_state *st);
	/* The session leaves its member for another (optional): st is its tracker there, at the point it
	 * left -- what of the server's session the next login rebuilds (MySQL: the statements still
	 * open, which a COM_STMT_CLOSE since their prepare may have made fewer). */
	void (*leaving)(struct proto_login *l, const struct proto_state *st);
	/* The client's bytes p[0..n) on their way to the member, with what they name by an id the
	 * member gave otherwise (optional; MySQL: statements prepared again after a move) rewritten in
	 * place. Returns what of p to send: bytes of an id the read cut wait for the rest, and go with
	 * the next call, in head[0..*head_len) (at most 4), to be sent before that call's p. */
	size_t (*map_request)(struct proto_login *l, uint8_t *p, size_t n, uint8_t *head, size_t *head_len);
	/* ... and the member's bytes p[0..n) on their way to the client, fed to the tracker st as
	 * proto_ops.feed does, what they name by the member's ids rewritten to the client's in place;
	 * the same contract for what to send, and SIZE_MAX when they cannot be followed (the session
	 * ends). */
	size_t (*map_answer)(struct proto_login *l, struct proto_state *st, uint8_t *p, size_t n, uint8_t *head,
			     size_t *head_len);
	/* Server connections kept for the next client (pool_size): poolable -- logged in, nothing to
	 * set again on another connection (no kept SET, no prepared statement): its connection, idle,
	 * serves a client of the same start as it is; startup -- the client's start, whole (the pool's
	 * key); hand_over -- what the member said at the login (ParameterStatus...) and its cancel key,
	 * which go with the connection; adopt -- a new client's login ends on such a connection: the
	 * client is told it is in (AuthenticationOk, those messages, repoint's cancel key, ready). */
	bool (*poolable)(const struct proto_login *l);
	const uint8_t *(*startup)(const struct proto_login *l, size_t *n);
	bool (*hand_over)(const struct proto_login *l, struct evbuffer *params, uint8_t *member_key, bool *has_key);
	void (*adopt)(struct proto_login *l, const uint8_t *params, size_t n, const uint8_t *member_key, bool has_key,
		      struct evbuffer *to_client);
	/* A client's request to become another user on its session (optional; MySQL COM_CHANGE_USER),
	 * p[0..n) the whole request: its proof is for repoint's challenge, so repoint checks it and
	 * writes the request again for the member (its challenge) in to_member: 1, and the member's
	 * answers go to back (as a login's) until it says DONE -- the session is then the new user's,
	 * as a fresh login leaves it, and the client has the answer -- or FAIL (the error in to_client;
	 * the session ends). 0: refused at once (the error in to_client; the session ends). */
	int (*change_user)(struct proto_login *l, const uint8_t *p, size_t n, struct evbuffer *to_member,
			   struct evbuffer *to_client);
	/* Clients may bring TLS (listen_tls; optional, member_first logins): the greeting offers it,
	 * front says PROTO_LOGIN_TLS once the client's TLS request is read (nothing past it), and goes on
	 * with what the client sends through the handshake; required: a client without TLS is refused. */
	void (*offer_tls)(struct proto_login *l, bool required);
	/* goodbye: p[0..n), all one read returned, is the client's request to end its session
	 * (Terminate, COM_QUIT): where a clean session leaves its connection to the pool.
	 * greet (member_first): the client greeted from a kept connection's params (the member's own
	 * greeting) without a member connection; false when they are not one. */
	bool (*goodbye)(const uint8_t *p, size_t n);
	bool (*greet)(struct proto_login *l, const uint8_t *params, size_t n, struct evbuffer *to_client);
	/* A connection whose session set something, or left a transaction open, is reset before it is
	 * kept: reset_request appends what to send it to out (Postgres: DISCARD ALL, after ROLLBACK when
	 * in_transaction; MySQL: COM_RESET_CONNECTION, which rolls back too, then COM_INIT_DB
	 * of the start's database, which a reset keeps as a USE left it, and the start's character
	 * set, which MySQL's reset sets to the server's), false when this session's connection cannot
	 * be made as a new login leaves it (MySQL: a start without a database); reset_answer reads the
	 * server's answer in p[0..n): 1 reset (and ready), 0 more to come, -1 not so (the connection is
	 * not kept). NULL: such a connection is not kept. */
	bool (*reset_request)(const struct proto_login *l, bool in_transaction, struct evbuffer *out);
	int (*reset_answer)(const uint8_t *p, size_t n);
};

/* A server-first TLS upgrade (MySQL): when repoint makes the TLS to the member or takes TLS
 * clients, it conducts the start of the session itself, with these pure functions over packets:
 *
 *   member:  greeting ──▶ repoint ──▶ client   (the TLS offer set as the listener has it)
 *   client:  [TLS request, handshake]  hello ──▶ repoint
 *   repoint: [its TLS request from the hello, handshake]  hello ──▶ member
 *
 * Packets are numbered within an exchange, so each side's numbers then differ by the packets the
 * other side did not see: `relay` renumbers them until authentication ends. */
struct proto_relay {
	uint32_t left[2];   /* payload bytes of the current packet still to pass, per direction */
	uint8_t hdr[2];     /* header bytes of the current packet seen, per direction */
	int8_t shift;       /* server's number = client's number + shift */
	bool first;         /* server: the next byte is a payload's first */
	bool ending;        /* server: this packet ends authentication */
	bool done[2];
};

struct proto_upgrade {
	size_t max_packet;  /* a greeting or hello longer than this is refused */
	/* The length of the complete packet at the start of p[0..n), PROTO_MORE when it is not. */
	size_t (*packet)(const uint8_t *p, size_t n);
	/* The server's first packet (complete): its TLS offer is set to `offer` in place. 1 when the
	 * server offered TLS, 0 when it did not, -1 when it is no greeting (an error: pass it on). */
	int (*greeting)(uint8_t *p, size_t n, bool offer);
	/* The client's packet after the greeting (complete): 1 a TLS request, 0 a hello, -1 neither. */
	int (*hello)(const uint8_t *p, size_t n);
	/* A hello's number; set its TLS flag and its number in place. */
	uint8_t (*hello_seq)(const uint8_t *p);
	void (*hello_set)(uint8_t *p, size_t n, bool tls, uint8_t seq);
	/* The hello's number on the member's side when repoint sends its own TLS request first, and
	 * when it does not. */
	uint8_t seq_tls, seq_plain;
	/* Appends to out the TLS request made from the client's hello (its capabilities). */
	void (*tls_request_from)(const uint8_t *hello, size_t n, struct evbuffer *out);
	/* Appends to out the error answering a hello numbered hello_seq: the server's own "TLS
	 * required" error when tls_required, else its "bad handshake" (the member failed under it). */
	void (*refuse_hello)(uint8_t hello_seq, struct evbuffer *out, bool tls_required, const char *msg);
	/* Renumber p[0..n) (in place) going `dir`; false once authentication is over both ways. */
	bool (*relay)(struct proto_relay *r, enum proto_dir dir, uint8_t *p, size_t n);
};

extern const struct proto_ops proto_postgres;
extern const struct proto_ops proto_mysql;
extern const struct proto_ops proto_redis;
extern const struct proto_login_ops pg_login_ops;
extern const struct proto_login_ops mysql_login_ops;
/* MySQL: the session's start is repoint's (auth = repoint): from here on the tracker reads what
 * the session's commands leave on the server (proto_ops.can_migrate and its kin). */
void mysql_track_owned(struct proto_state *st);
/* MySQL, auth = repoint: the i-th prepared statement open on the session's server (its id, its
 * parameter count), false past the last; and one to track as open (a login that prepared it again). */
bool mysql_statement(const struct proto_state *st, unsigned i, uint32_t *id, uint16_t *params);
bool mysql_track_statement(struct proto_state *st, uint32_t id, uint16_t params);
/* MySQL, auth = repoint: the server's bytes p[0..n) on their way to the client, fed to the tracker,
 * with the id of each prepare-OK made the client's in place (map: the statements a login prepared
 * again have other ids on this member). Returns what of p to send now: bytes of an id a read cuts
 * wait, and go with the next call, in head[0..*head_len) (at most 4), sent before its p. SIZE_MAX:
 * the tracker lost the thread (opaque) while ids are mapped -- nothing of p may go on, the session
 * ends. */
struct mysql_idmap;
size_t mysql_feed_answer(struct proto_state *st, const struct mysql_idmap *map, uint8_t *p, size_t n, uint8_t *head,
			 size_t *head_len);

/* Native error encoders, also used by the drill and tests. Append to `out`.
 * In all three, a NULL msg is empty text and msg is cut to 8 KiB (never inside a UTF-8 character). */
/* Postgres ErrorResponse: S and V `severity` (the refusal uses FATAL), C sqlstate, M msg. A
 * SQLSTATE that is not 5 characters [0-9A-Z] becomes XX000. */
void pg_error_response(struct evbuffer *out, const char *severity, const char *sqlstate, const char *msg);
/* MySQL ERR packet with sequence id `seq`: 0xFF, code (LE), '#', sqlstate, msg. Clients read exactly
 * five SQLSTATE characters, so a malformed one becomes HY000. The refusal sends 1053
 * (ER_SERVER_SHUTDOWN) / 08S01 with sequence id 0, in place of the server greeting. */
void mysql_err_packet(struct evbuffer *out, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg);
/* RESP error: "-" prefix-word " " msg "\r\n" (CR/LF in prefix and msg replaced by spaces; a NULL or
 * empty prefix gives "-" msg "\r\n"). The refusal uses prefix "ERR". */
void resp_error(struct evbuffer *out, const char *prefix, const char *msg);

/* Redis multiplexing (net/shared.c): clients' commands interleaved on one server connection.
 *
 * resp_share_scan looks at the command at the start of p[0..n):
 *   RESP_SHARE_YES   complete, and it may share a connection: `*len` is its length;
 *   RESP_SHARE_MORE  not complete yet: `*len` is a lower bound of its length (read at least that);
 *   RESP_SHARE_NO    it must have a connection of its own: not a plain data command (connection
 *                    state, blocking, transactions, Pub/Sub, administration, unknown), inline, not
 *                    well-formed, or longer than `max` bytes;
 *   RESP_SHARE_LOCAL complete, informational only (CLIENT SETINFO): answer "+OK" without sending it;
 *   RESP_SHARE_HELLO2, RESP_SHARE_HELLO3
 *                    complete "HELLO 2" / "HELLO 3" (nothing else): shareable on a connection that
 *                    speaks that protocol already.
 * A shareable command has exactly one reply, touches no connection state and never blocks; SELECT 0
 * and a bare HELLO are shareable too (they change nothing on a connection in database 0). */
enum resp_share {
	RESP_SHARE_YES, RESP_SHARE_MORE, RESP_SHARE_NO, RESP_SHARE_LOCAL, RESP_SHARE_HELLO2, RESP_SHARE_HELLO3
};
/* *write (when not NULL): a RESP_SHARE_YES (or _MORE: as far as its name tells) command that writes
 * or may (a script): CLIENT PAUSE WRITE holds it. Reads travel on a shared connection of their own, which a paused write cannot stall. */
enum resp_share resp_share_scan(const uint8_t *p, size_t n, size_t max, size_t *len, bool *write);
/* Is `name` (any case) a command that may share a connection? */
bool resp_shareable_name(const uint8_t *name, size_t len);

/* Redis Cluster behind one listener (cluster = on; proto/resp_cluster.c): repoint shows clients one
 * node serving every slot -- itself, at `self` -- and routes each command by its keys' slot.
 * resp_cluster_answer appends the answer to the complete command at p[0..n) that does not travel by
 * slot: CLUSTER SLOTS/SHARDS/NODES/INFO/MYID/KEYSLOT as that node, READONLY/READWRITE/ASKING +OK,
 * SELECT refused as a cluster does, anything else an error saying repoint does not route it.
 * resp_cluster_keyless_ok: a command without keys that any one shard's primary answers as well as
 * the cluster would (PING, ECHO, INFO, PUBLISH, ...); the others (DBSIZE, KEYS, SCAN, ...) are
 * answered by resp_cluster_answer. */
struct resp_cluster_self {
	const char *host;   /* the address the client reached repoint at */
	uint16_t port;
};
void resp_cluster_answer(const uint8_t *p, size_t n, const struct resp_cluster_self *self, struct evbuffer *out);
bool resp_cluster_keyless_ok(const uint8_t *p, size_t n);
/* A command that makes the session a subscriber ((P|S)SUBSCRIBE): in cluster mode it gets a
 * connection of its own, to any shard's primary (the cluster bus carries PUBLISH everywhere) or, for
 * SSUBSCRIBE, the primary of its channels' shard; from then on it talks to that node only. */
bool resp_cluster_pins(const uint8_t *p, size_t n);
/* What needs a connection of the session's own in cluster mode, to the primary of its keys' slot:
 * a transaction (MULTI ... EXEC/DISCARD, and WATCH before it) binds to the slot of its first key; a
 * blocking command (BLPOP, BZPOPMIN, XREAD, ...) waits there. RESP_OWN_NONE for every other command
 * (and for one that is not a complete array). */
enum resp_own {
	RESP_OWN_NONE, RESP_OWN_MULTI, RESP_OWN_EXEC, RESP_OWN_DISCARD, RESP_OWN_WATCH, RESP_OWN_UNWATCH,
	RESP_OWN_BLOCKING
};
enum resp_own resp_cluster_own(const uint8_t *p, size_t n);
/* The `count` whole replies p[0..n) of a transaction sent from MULTI to EXEC in one piece: true
 * when EXEC was aborted (EXECABORT) because the cluster was moving -- a queued command, or EXEC
 * itself, refused with MOVED, ASK, TRYAGAIN, CLUSTERDOWN or READONLY. Nothing of it ran, and it may
 * be sent again where its slot is served now. count 1: the reply of a lone (blocking) command, true
 * when it is such a refusal, or the UNBLOCKED a primary turned replica unblocks it with. */
bool resp_cluster_tx_moved(const uint8_t *p, size_t n, uint32_t count);
/* The length of the command array at the start of p[0..n) (at most max bytes): 1 complete (*len
 * its length), 0 more needed (*len a lower bound), -1 not a command array. */
int resp_command_len(const uint8_t *p, size_t n, size_t max, size_t *len);
/* A command over keys of several slots that Redis Cluster proxies split (MGET, MSET, DEL, UNLINK,
 * EXISTS, TOUCH): resp_cluster_split writes the complete command p[0..n) as one command per key
 * into out (GET k, SET k v, DEL k, ...), *count of them, and says how their replies merge
 * (RESP_SPLIT_NONE: not such a command: nothing written). resp_cluster_merge: the `count` whole
 * replies in p[0..n), in order, as the one reply the command would have had -- MGET an array (a
 * key of another type nil, as MGET answers it), MSET +OK, the others the sum; any other error
 * instead, the first. MSET split so is not atomic across slots (as with every cluster proxy). */
enum resp_split {
	RESP_SPLIT_NONE, RESP_SPLIT_MGET, RESP_SPLIT_MSET, RESP_SPLIT_SUM,
	/* the data-set-wide commands sent to every shard's primary (resp_cluster_fan) */
	RESP_SPLIT_OK,      /* FLUSHALL, FLUSHDB, SCRIPT FLUSH: +OK */
	RESP_SPLIT_KEYS,    /* KEYS: the arrays, one after the other */
	RESP_SPLIT_FIRST,   /* SCRIPT LOAD, RANDOMKEY: the first that is not nil */
	RESP_SPLIT_ALL,     /* SCRIPT EXISTS: 1 where every shard says 1 */
};
enum resp_split resp_cluster_split(const uint8_t *p, size_t n, struct evbuffer *out, uint32_t *count);
void resp_cluster_merge(enum resp_split kind, const uint8_t *p, size_t n, uint32_t count, bool resp3,
			struct evbuffer *out);
/* A command over the whole data set, without keys, that is sent as it is to every shard's primary
 * and whose replies merge (DBSIZE the sum; the kinds above): its kind, RESP_SPLIT_NONE otherwise. */
enum resp_split resp_cluster_fan(const uint8_t *p, size_t n);
/* SCAN across shards, one shard after the other: the cursor a client sees is the shard's cursor
 * shifted left by RESP_SCAN_SHIFT bits with the shard's first slot in the low bits (0: the start).
 * resp_cluster_scan: the complete SCAN command p[0..n) -- false when it is not one or its cursor
 * is not a number; else *cursor its cursor. resp_cluster_scan_rewrite: the same command, with
 * `inner` as its cursor, to out. resp_cluster_scan_reply: a shard's whole reply p[0..n) to it, with its cursor made the
 * client's -- `slot` the shard's first slot, `next` the next shard's (-1: the last one): a shard
 * done goes on with the next one's start. Any other reply (an error) as it is. */
#define RESP_SCAN_SHIFT 14
bool resp_cluster_scan(const uint8_t *p, size_t n, uint64_t *cursor);
void resp_cluster_scan_rewrite(const uint8_t *p, size_t n, uint64_t inner, struct evbuffer *out);
void resp_cluster_scan_reply(const uint8_t *p, size_t n, int slot, int next, struct evbuffer *out);

/* Splitting a reply stream into whole replies: feed bytes in order; each call consumes bytes until
 * `want` top-level replies have ended or the bytes run out, sets *got to the replies that ended,
 * and returns the bytes consumed -- (size_t)-1 when the stream is not RESP. Pushes are skipped. */
void resp_replies_init(struct proto_state *st);
size_t resp_replies_scan(struct proto_state *st, const uint8_t *p, size_t n, uint64_t want, uint64_t *got);

#endif
