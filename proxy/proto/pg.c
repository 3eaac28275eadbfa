/* proto/pg.c - PostgreSQL frontend/backend protocol (v3.x): idle tracking and the native refusal.
 *
 * Framing. The client starts with untyped packets (int32 length including itself, int32 code):
 * SSLRequest / GSSENCRequest (answered by the server with one byte), CancelRequest (no answer, the
 * server closes), or the StartupMessage. Everything after the StartupMessage, and everything the
 * server sends except that one negotiation byte, is typed: 1 type byte + int32 length (including
 * itself, not the type byte). Payloads are skipped by length and never looked at, except the one
 * status byte of ReadyForQuery.
 *
 * Idleness. ReadyForQuery ('Z') with status 'I' is the server saying "nothing in flight, no
 * transaction". That alone is not enough with pipelining: a client may have sent Query #2 before
 * ReadyForQuery #1 arrives. So the tracker also counts the client's synchronisation points (Query,
 * Sync, FunctionCall, StartupMessage), each of which the server answers with exactly one
 * ReadyForQuery, and remembers whether extended-protocol messages (Parse/Bind/Execute/...) were
 * sent after the last one: those are answered only after a future Sync.
 *
 * Idle <=> after the startup phase, no partial message either way, every sync point answered, no
 * unsynced extended-protocol message, no client byte since the last ReadyForQuery, and the last
 * non-asynchronous server message was ReadyForQuery 'I'. NotificationResponse, NoticeResponse and
 * ParameterStatus may arrive at any time (LISTEN, server notices, SET from another session's
 * reload) and are complete in themselves, so they do not spoil idleness.
 */
#include "proto/proto.h"
#include "util.h"

#include <event2/buffer.h>
#include <stdalign.h>
#include <string.h>

#define PG_SSL_REQUEST 80877103u
#define PG_GSSENC_REQUEST 80877104u
#define PG_CANCEL_REQUEST 80877102u
#define PG_PROTOCOL_MAJOR 3u

/* The server itself rejects startup packets over 10000 bytes (MAX_STARTUP_PACKET_LENGTH); a bigger
 * "length" in the startup phase is something else, e.g. a direct TLS ClientHello (0x16 0x03 ...). */
#define PG_MAX_STARTUP_LEN 10000u
/* No message is legitimately larger than the server's 1 GiB allocation limit. */
#define PG_MAX_MSG_LEN (1u << 30)

/* The error encoder bounds the human text so a runaway message cannot produce a huge packet. */
#define PG_MAX_ERR_TEXT 8192u

enum pg_client_phase {
	PGC_STARTUP,    /* expecting an untyped startup-phase packet */
	PGC_AWAIT_NEG,  /* sent SSLRequest/GSSENCRequest; the server owes one byte */
	PGC_TYPED,      /* after the StartupMessage */
	PGC_CANCEL,     /* a CancelRequest connection: the server closes it, nothing may follow */
};

struct pg_dir {
	uint32_t remaining;  /* payload bytes of the current message still to skip */
	uint8_t hdr[8];      /* header being assembled (5 bytes typed, 8 bytes startup phase) */
	uint8_t hdr_len;
	uint8_t type;        /* type byte of the current message (0 in the startup phase) */
};

struct pg_state {
	struct pg_dir c, s;
	uint32_t pending_sync;   /* sync points sent whose ReadyForQuery has not arrived */
	uint32_t copy_syncs;     /* Syncs sent since the last message that could start a COPY */
	uint8_t cphase;          /* enum pg_client_phase */
	bool opaque;
	bool ready_idle;         /* last non-asynchronous server message was ReadyForQuery 'I' */
	bool client_since_ready; /* the client sent a byte after the last ReadyForQuery */
	bool unsynced;           /* extended-protocol messages sent after the last sync point */
	uint8_t key[PROTO_KEY_MAX]; /* BackendKeyData: process id + secret key */
	uint8_t key_got;         /* bytes of it received so far */
	bool has_key;
	/* Session state a fresh connection would not have (a moved session would lose it): a named
	 * prepared statement, or a command whose tag says it set something (SET, PREPARE, DECLARE,
	 * LISTEN, CREATE TABLE: a temporary one cannot be told apart). */
	uint8_t stateful;        /* 0, or why (enum pg_unmovable) */
	/* A lone SET/RESET sent as a simple Query at an idle point can be replayed on another server:
	 * q_simple while such a query's answer comes, q_tags its command tags so far, q_set whether they
	 * were all SET/RESET; set_ready once it ended at an idle point again (proto->replayable). */
	bool q_simple, q_set, set_ready;
	uint8_t q_tags;
	/* Named prepared statements (extended protocol): p_named once a Parse names one, c_close once
	 * a Close is sent, q_err once the server answers an error, until the next ReadyForQuery; then
	 * stmt_ready when they all went through with nothing left in flight: the session takes the
	 * requests (Parse, Close) to re-create them on the next server (proto->replayable). q_dealloc:
	 * a lone DEALLOCATE in a simple Query, dealloc_ready once it was answered. */
	bool p_named, c_close, q_err, stmt_ready, q_dealloc, dealloc_ready;
	uint8_t last_status;     /* the last ReadyForQuery's status ('I', 'T', 'E'; 0: none yet) */
	bool c_first;            /* the next client byte is the first of a Parse's payload */
	uint8_t tag_len;         /* CommandComplete: bytes of its tag gathered */
	char tag[14];
	/* Requests since the last idle point (saturating): each a simple Query or a sync group of the
	 * extended protocol's Parse (unnamed)/Bind/Describe/Execute/Sync; tx_plain: every one such,
	 * answered inside a transaction that neither ended nor failed; tx_grp_done: the last message
	 * ended one. A session idle in such a transaction when its server goes away can run them again
	 * elsewhere (proto->tx_idle). */
	uint8_t tx_reqs;
	bool tx_plain, tx_grp_done;
	/* The requests since the last idle point: their sync points (saturating), and whether each
	 * message was a Query or the extended protocol's Parse/Bind/Describe/Execute/Sync/Flush;
	 * answering: the server sent something since its last ReadyForQuery. One such sync group,
	 * refused read-only before anything of it was answered, did not run (proto->retryable). */
	uint8_t grp_syncs;
	bool grp_plain;
	bool answering;
};

_Static_assert(sizeof(struct pg_state) <= sizeof(struct proto_state), "pg_state must fit in proto_state");
_Static_assert(alignof(struct pg_state) <= alignof(struct proto_state), "pg_state alignment");

/* Why a session's state cannot be carried to another server (the label of
 * repoint_sessions_unmovable_total). */
enum pg_unmovable {
	PG_MOVABLE,
	PG_NAMED_STATEMENT,
	PG_PREPARE,
	PG_CURSOR,
	PG_LISTEN,
	PG_CREATE_TABLE,
	PG_SET_NOT_ALONE,
};

static const char *const pg_unmovable_names[] = {
	[PG_NAMED_STATEMENT] = "named_statement", [PG_PREPARE] = "prepare",	   [PG_CURSOR] = "cursor",
	[PG_LISTEN] = "listen",			  [PG_CREATE_TABLE] = "create_table", [PG_SET_NOT_ALONE] = "set_not_alone",
};

static void pg_unmovable(struct pg_state *s, enum pg_unmovable why)
{
	if (s->stateful == PG_MOVABLE)
		s->stateful = (uint8_t)why;
}

static struct pg_state *pg(struct proto_state *st)
{
	return (struct pg_state *)(void *)st;
}

static const struct pg_state *pg_c(const struct proto_state *st)
{
	return (const struct pg_state *)(const void *)st;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void pg_init(struct proto_state *st)
{
	memset(st, 0, sizeof(*st));
	pg(st)->cphase = PGC_STARTUP;
}

/* A complete startup-phase header (length + code) from the client. */
static void pg_client_startup(struct pg_state *s)
{
	uint32_t len = be32(s->c.hdr), code = be32(s->c.hdr + 4);

	if (len < 8 || len > PG_MAX_STARTUP_LEN) {
		s->opaque = true;
		return;
	}
	if (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST) {
		if (len != 8) {
			s->opaque = true;
			return;
		}
		s->cphase = PGC_AWAIT_NEG;
		return;
	}
	if (code == PG_CANCEL_REQUEST) {
		/* 16 bytes in protocol 3.0; 3.2 allows longer cancel keys. */
		if (len < 12) {
			s->opaque = true;
			return;
		}
		s->c.remaining = len - 8;
		s->cphase = PGC_CANCEL;
		return;
	}
	if (code >> 16 != PG_PROTOCOL_MAJOR) {
		/* Protocol 2 or something that is not PostgreSQL at all. */
		s->opaque = true;
		return;
	}
	s->c.remaining = len - 8;
	s->cphase = PGC_TYPED;
	/* The StartupMessage is answered (after authentication) by exactly one ReadyForQuery. */
	s->pending_sync = 1;
	s->unsynced = false;
}

/* A complete typed header from the client: account for what the server will answer. */
static void pg_client_message(struct pg_state *s, uint8_t type)
{
	if (s->set_ready)
		pg_unmovable(s, PG_SET_NOT_ALONE);  /* a SET the session did not take for replay: its state stays behind */
	if (s->stmt_ready || s->dealloc_ready)
		pg_unmovable(s, PG_NAMED_STATEMENT);  /* ... likewise a statement */
	s->stmt_ready = s->dealloc_ready = false;
	s->q_dealloc = false;
	if (type == 'C')
		s->c_close = true;  /* a statement's or a portal's: the login tells them apart */
	bool at_idle = s->ready_idle && s->pending_sync == 0 && !s->unsynced && s->last_status == 'I';
	s->q_simple = type == 'Q' && at_idle;
	if (at_idle) {
		s->grp_syncs = 0;
		s->grp_plain = true;
	}
	if (memchr("QPBDESH", type, 7) == NULL)
		s->grp_plain = false;
	if ((type == 'Q' || type == 'F' || type == 'S') && s->grp_syncs < UINT8_MAX)
		s->grp_syncs++;
	if (at_idle) {
		s->tx_reqs = 1;
		s->tx_plain = true;
	} else if (s->tx_grp_done && s->tx_reqs != 0 && s->tx_reqs < UINT8_MAX) {
		s->tx_reqs++;
	}
	if (memchr("QPBDES", type, 6) == NULL)
		s->tx_plain = false;  /* a COPY, a function call, a Close, a Flush: not followed */
	s->tx_grp_done = type == 'Q' || type == 'S' || type == 'F';
	s->q_tags = 0;
	s->q_set = true;
	s->set_ready = false;
	switch (type) {
	case 'Q': /* Query */
	case 'F': /* FunctionCall */
	case 'S': /* Sync */
		if (s->pending_sync == UINT32_MAX) {
			s->opaque = true;
			return;
		}
		s->pending_sync++;
		s->unsynced = false;
		s->copy_syncs = type == 'S' ? s->copy_syncs + 1 : 0;
		break;
	case 'c': /* CopyDone */
	case 'f': /* CopyFail */
		/* In copy-in mode the server ignores Sync (libpq pipelines one after Execute, then sends
		 * another after CopyDone), so the Syncs sent since the COPY started get no ReadyForQuery. */
		s->pending_sync -= s->copy_syncs < s->pending_sync ? s->copy_syncs : s->pending_sync;
		s->copy_syncs = 0;
		break;
	case 'd': /* CopyData: part of the COPY's own round trip */
	case 'H': /* Flush: asks for output, changes no server state, ignored in copy-in mode */
	case 'p': /* Password/SASL/GSS response: part of the StartupMessage's round trip */
		break;
	default:
		/* Parse, Bind, Describe, Execute, Close, Terminate, ...: answered only at the next Sync
		 * (Terminate never: the session is ending). */
		s->unsynced = true;
		s->copy_syncs = 0;
		break;
	}
}

static void pg_feed_client(struct pg_state *s, const uint8_t *p, size_t n)
{
	if (n)
		s->client_since_ready = true;
	while (n && !s->opaque) {
		if (s->c.remaining) {
			if (s->c_first) {
				/* Parse: the statement's name comes first; "" is the unnamed statement. */
				s->c_first = false;
				if (*p != 0) {
					s->p_named = true;
					s->tx_plain = false;  /* created in the transaction: not followed */
				}
			}
			size_t k = n < s->c.remaining ? n : s->c.remaining;
			s->c.remaining -= (uint32_t)k;
			p += k;
			n -= k;
			continue;
		}
		if (s->cphase == PGC_AWAIT_NEG || s->cphase == PGC_CANCEL) {
			/* Nothing may be sent before the negotiation byte, nor after a CancelRequest. */
			s->opaque = true;
			return;
		}
		size_t want = s->cphase == PGC_STARTUP ? 8 : 5;
		while (n && s->c.hdr_len < want) {
			s->c.hdr[s->c.hdr_len++] = *p++;
			n--;
		}
		if (s->c.hdr_len < want)
			return;
		s->c.hdr_len = 0;
		if (s->cphase == PGC_STARTUP) {
			pg_client_startup(s);
			continue;
		}
		uint32_t len = be32(s->c.hdr + 1);
		if (len < 4 || len > PG_MAX_MSG_LEN) {
			s->opaque = true;
			return;
		}
		s->c.type = s->c.hdr[0];
		s->c.remaining = len - 4;
		s->c_first = s->c.type == 'P' && s->c.remaining > 0;
		pg_client_message(s, s->c.type);
	}
}

/* The server's one-byte answer to SSLRequest / GSSENCRequest. */
static void pg_server_negotiation(struct pg_state *s, uint8_t b)
{
	if (b == 'N') {
		/* Refused: the client continues in clear with another startup packet. */
		s->cphase = PGC_STARTUP;
		return;
	}
	/* 'S' (TLS) or 'G' (GSSAPI encryption) follows, or an ancient server's ErrorResponse: from here
	 * on the bytes are not ours to read. */
	s->opaque = true;
}

/* The start of a CommandComplete tag (NUL-terminated, cut to the buffer). */
static bool tag_is(const char *tag, size_t n, const char *word)
{
	size_t w = strlen(word);

	return n >= w && memcmp(tag, word, w) == 0 && (n == w || tag[w] == ' ' || tag[w] == '\0');
}

static void pg_command_tag(struct pg_state *s)
{
	static const struct {
		const char *word;
		enum pg_unmovable why;
	} words[] = {{"PREPARE", PG_PREPARE}, {"DECLARE", PG_CURSOR}, {"LISTEN", PG_LISTEN},
		     {"CREATE TABLE", PG_CREATE_TABLE}};
	size_t n = strnlen(s->tag, s->tag_len);
	bool set = tag_is(s->tag, n, "SET") || tag_is(s->tag, n, "RESET");

	if (tag_is(s->tag, n, "DEALLOCATE")) {
		/* Alone in a simple Query: the session forgets the statement(s) it would re-create. */
		if (s->q_simple && s->q_tags == 0)
			s->q_dealloc = true;
		else
			pg_unmovable(s, PG_NAMED_STATEMENT);
	}
	for (size_t i = 0; i < ARRAY_LEN(words); i++)
		if (tag_is(s->tag, n, words[i].word))
			pg_unmovable(s, words[i].why);
	if (s->q_tags < UINT8_MAX)
		s->q_tags++;
	/* A transaction ended (or rolled back to a savepoint) inside a request: what came before it may
	 * have committed. */
	if (tag_is(s->tag, n, "COMMIT") || tag_is(s->tag, n, "ROLLBACK") || tag_is(s->tag, n, "RELEASE"))
		s->tx_plain = false;
	if (!set)
		s->q_set = false;
	/* A SET the session can replay elsewhere only when it came alone in a simple Query at an idle
	 * point (pg_server_ready decides); any other leaves state behind. */
	if (set && !s->q_simple)
		pg_unmovable(s, PG_SET_NOT_ALONE);
}

static void pg_server_ready(struct pg_state *s, uint8_t status)
{
	if (status != 'I' && status != 'T' && status != 'E') {
		s->opaque = true;
		return;
	}
	if (s->pending_sync)
		s->pending_sync--;
	s->ready_idle = status == 'I';
	s->last_status = status;
	if (status != 'T')
		s->tx_plain = false;
	if (s->q_simple && s->q_tags > 0 && s->q_set) {
		if (s->q_tags == 1 && status == 'I')
			s->set_ready = true;
		else
			pg_unmovable(s, PG_SET_NOT_ALONE);  /* several SETs in one query, or inside a transaction */
	}
	if (s->q_dealloc) {
		if (s->q_tags == 1 && !s->q_err)
			s->dealloc_ready = true;
		else
			pg_unmovable(s, PG_NAMED_STATEMENT);
	}
	if (s->p_named || s->c_close) {
		/* Prepared statements outlive transactions: taken at any ReadyForQuery, provided everything
		 * sent was answered without an error (which Parse failed is not known) and nothing of the
		 * client's is half-sent, so that what the session kept since is exactly these requests. */
		if (!s->q_err && status != 'E' && s->pending_sync == 0 && !s->unsynced && s->c.hdr_len == 0 &&
		    s->c.remaining == 0)
			s->stmt_ready = true;
		else if (s->p_named)
			pg_unmovable(s, PG_NAMED_STATEMENT);
	}
	s->p_named = s->c_close = s->q_err = s->q_dealloc = false;
	s->q_simple = false;
	s->client_since_ready = false;
	s->answering = false;
}

static void pg_feed_server(struct pg_state *s, const uint8_t *p, size_t n)
{
	while (n && !s->opaque) {
		if (s->s.remaining) {
			if (s->s.type == 'K' && s->s.remaining + s->key_got == PROTO_KEY_MAX) {
				/* BackendKeyData (protocol 3.0: 8 bytes): what a CancelRequest names. */
				s->key[s->key_got++] = *p++;
				n--;
				s->s.remaining--;
				s->has_key = s->key_got == PROTO_KEY_MAX;
				continue;
			}
			if (s->s.type == 'C' && s->tag_len < sizeof(s->tag)) {
				s->tag[s->tag_len++] = (char)*p++;
				n--;
				s->s.remaining--;
				if (s->tag_len == sizeof(s->tag) || s->s.remaining == 0)
					pg_command_tag(s);
				continue;
			}
			if (s->s.type == 'Z') {
				/* ReadyForQuery's payload is its one status byte. */
				s->s.remaining = 0;
				pg_server_ready(s, *p);
				p++;
				n--;
				continue;
			}
			size_t k = n < s->s.remaining ? n : s->s.remaining;
			s->s.remaining -= (uint32_t)k;
			p += k;
			n -= k;
			continue;
		}
		if (s->cphase == PGC_AWAIT_NEG && s->s.hdr_len == 0) {
			pg_server_negotiation(s, *p);
			p++;
			n--;
			continue;
		}
		while (n && s->s.hdr_len < 5) {
			s->s.hdr[s->s.hdr_len++] = *p++;
			n--;
		}
		if (s->s.hdr_len < 5)
			return;
		s->s.hdr_len = 0;
		uint8_t type = s->s.hdr[0];
		uint32_t len = be32(s->s.hdr + 1);
		if (len < 4 || len > PG_MAX_MSG_LEN || (type == 'Z' && len != 5)) {
			s->opaque = true;
			return;
		}
		s->s.type = type;
		s->s.remaining = len - 4;
		if (type == 'K') {
			s->key_got = 0;
			s->has_key = false;
		}
		if (type == 'C')
			s->tag_len = 0;
		if (type == 'E')
			s->q_err = true;
		if (type != 'Z' && type != 'S')
			s->answering = true;  /* a ParameterStatus may come with any answer, or before it */
		/* Asynchronous messages are complete by themselves and say nothing about the session. */
		if (type != 'A' && type != 'N' && type != 'S' && type != 'Z')
			s->ready_idle = false;
	}
}

static void pg_feed(struct proto_state *st, enum proto_dir dir, const uint8_t *p, size_t n)
{
	struct pg_state *s = pg(st);

	if (s->opaque)
		return;
	if (dir == PROTO_CLIENT_TO_SERVER)
		pg_feed_client(s, p, n);
	else
		pg_feed_server(s, p, n);
}

static bool pg_at_rest(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	return !s->opaque && s->cphase == PGC_TYPED && s->last_status != 0 && !s->client_since_ready &&
	       s->pending_sync == 0 && !s->unsynced && s->c.hdr_len == 0 && s->c.remaining == 0 &&
	       s->s.hdr_len == 0 && s->s.remaining == 0;
}

static bool pg_is_idle(const struct proto_state *st)
{
	return pg_at_rest(st) && pg_c(st)->ready_idle;
}

/* The request just answered was a lone SET/RESET at an idle point: true once (it is taken). The
 * session keeps the request to replay it on the next server, or counts itself unmovable. */
static int pg_replayable(struct proto_state *st)
{
	struct pg_state *s = pg(st);
	int r = s->set_ready ? PG_REPLAY_SET : s->stmt_ready ? PG_REPLAY_STATEMENTS : s->dealloc_ready ? PG_REPLAY_DEALLOCATE : 0;

	s->set_ready = s->stmt_ready = s->dealloc_ready = false;
	return r;
}

/* A session a fresh, logged-in connection can carry on: idle, nothing set in its server's state. */
static bool pg_can_migrate(const struct proto_state *st)
{
	return pg_is_idle(st) && !pg_c(st)->stateful && !pg_c(st)->set_ready && !pg_c(st)->stmt_ready &&
	       !pg_c(st)->dealloc_ready;
}

static const char *pg_unmovable_reason(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	if (s->opaque)
		return "opaque";
	return s->stateful != PG_MOVABLE && s->stateful < ARRAY_LEN(pg_unmovable_names) ? pg_unmovable_names[s->stateful]
											 : NULL;
}

static bool pg_inflight_lost(const struct proto_state *st, uint32_t *owed)
{
	const struct pg_state *s = pg_c(st);

	if (s->opaque || s->stateful || s->set_ready || s->stmt_ready || s->dealloc_ready || s->cphase != PGC_TYPED || s->last_status != 'I' || s->unsynced ||
	    s->pending_sync == 0 || s->copy_syncs != 0 || s->c.hdr_len != 0 || s->c.remaining != 0 ||
	    s->s.hdr_len != 0 || s->s.remaining != 0)
		return false;
	*owed = s->pending_sync;
	return true;
}

/* One sync group in flight (a simple Query, or Parse/Bind/Describe/Execute/Sync), sent at an idle
 * point outside a transaction, nothing of it answered yet, nothing half-sent, nothing in it that
 * leaves state behind (no named statement, no Close): refused read-only, it did not run, and the
 * session can carry it to the new writer. */
static bool pg_retryable(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	return !s->opaque && s->cphase == PGC_TYPED && s->last_status == 'I' && s->grp_plain && s->grp_syncs == 1 &&
	       s->pending_sync == 1 && !s->unsynced && !s->answering && !s->stateful && !s->set_ready &&
	       !s->stmt_ready && !s->dealloc_ready && !s->p_named && !s->c_close && s->c.hdr_len == 0 &&
	       s->c.remaining == 0 && s->s.hdr_len == 0 && s->s.remaining == 0;
}

/* Idle inside a transaction (ReadyForQuery 'T', nothing in flight or partial) that began at the
 * last idle point, every request since a simple Query answered inside it, nothing set that cannot
 * move: their number. */
static unsigned pg_tx_idle(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	if (s->opaque || s->cphase != PGC_TYPED || s->last_status != 'T' || s->pending_sync != 0 || s->unsynced ||
	    s->client_since_ready || !s->tx_plain || s->tx_reqs == 0 || s->tx_reqs == UINT8_MAX || s->stateful ||
	    s->set_ready || s->stmt_ready || s->dealloc_ready || s->c.hdr_len != 0 || s->c.remaining != 0 ||
	    s->s.hdr_len != 0 || s->s.remaining != 0)
		return 0;
	return s->tx_reqs;
}

/* A transaction refused part-way (25006 inside it: it began read-only -- the server's default when
 * it began -- so nothing of it was written): begun at the last idle point, every request since a
 * simple Query answered inside it, the last alone in flight with nothing of its answer seen yet,
 * nothing set that cannot move: their number. */
static unsigned pg_tx_retryable(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	if (s->opaque || s->cphase != PGC_TYPED || s->last_status != 'T' || s->pending_sync != 1 || s->unsynced ||
	    s->answering || !s->tx_plain || s->tx_reqs < 2 || s->tx_reqs == UINT8_MAX || s->stateful || s->set_ready ||
	    s->stmt_ready || s->dealloc_ready || s->c.hdr_len != 0 || s->c.remaining != 0 || s->s.hdr_len != 0 ||
	    s->s.remaining != 0)
		return 0;
	return s->tx_reqs;
}

/* Every server message but ParameterStatus, header and all. */
static size_t pg_tx_strip(struct proto_strip *st, const uint8_t *p, size_t n, uint8_t *out)
{
	size_t k = 0;

	while (n > 0) {
		if (st->remaining > 0) {
			size_t c = n < st->remaining ? n : st->remaining;
			if (!st->skip) {
				memcpy(out + k, p, c);
				k += c;
			}
			st->remaining -= (uint32_t)c;
			p += c;
			n -= c;
			continue;
		}
		st->hdr[st->hdr_len++] = *p++;
		n--;
		if (st->hdr_len < sizeof(st->hdr))
			continue;
		st->hdr_len = 0;
		uint32_t len = be32(st->hdr + 1);
		st->skip = st->hdr[0] == 'S';
		st->remaining = len >= 4 ? len - 4 : 0;
		if (!st->skip) {
			memcpy(out + k, st->hdr, sizeof(st->hdr));
			k += sizeof(st->hdr);
		}
	}
	return k;
}

static bool pg_tx_answered(const struct proto_state *st)
{
	const struct pg_state *s = pg_c(st);

	return !s->opaque && s->pending_sync == 0 && !s->unsynced && s->s.hdr_len == 0 && s->s.remaining == 0;
}

/* A request: a simple Query (or FunctionCall), or the extended protocol's messages up to and with
 * their Sync. */
static size_t pg_request_len(const uint8_t *p, size_t n)
{
	size_t at = 0;

	while (n - at >= 5) {
		uint32_t len = be32(p + at + 1);
		uint8_t type = p[at];
		if (len < 4 || len > PG_MAX_MSG_LEN || (size_t)len > n - at - 1)
			return 0;
		at += 1 + (size_t)len;
		if (type == 'Q' || type == 'S' || type == 'F')
			return at;
	}
	return 0;
}

/* 08007 transaction_resolution_unknown, then ReadyForQuery (idle: no transaction was open). */
static void pg_outcome_unknown(struct evbuffer *out, const char *msg)
{
	static const uint8_t ready[] = {'Z', 0, 0, 0, 5, 'I'};

	pg_error_response(out, "ERROR", "08007", msg);
	evbuffer_add(out, ready, sizeof(ready));
}

static bool pg_is_opaque(const struct proto_state *st)
{
	return pg_c(st)->opaque;
}

void pg_error_response(struct evbuffer *out, const char *severity, const char *sqlstate, const char *msg)
{
	/* Fields are NUL-terminated C strings, so they cannot carry a NUL; NULL pointers become empty
	 * text and a malformed SQLSTATE becomes XX000 (internal_error) rather than a broken field. */
	if (!severity || !*severity)
		severity = "FATAL";
	if (!sqlstate_valid(sqlstate))
		sqlstate = "XX000";
	if (!msg)
		msg = "";
	size_t sev_len = utf8_prefix_len(severity, 32);
	size_t msg_len = utf8_prefix_len(msg, PG_MAX_ERR_TEXT);
	/* 'S' sev NUL 'V' sev NUL 'C' state NUL 'M' msg NUL, then the terminating NUL. */
	uint32_t len = (uint32_t)(4 + 2 * (1 + sev_len + 1) + (1 + 5 + 1) + (1 + msg_len + 1) + 1);
	uint8_t hdr[5] = { 'E', (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len };
	static const uint8_t nul = 0;

	evbuffer_add(out, hdr, sizeof(hdr));
	evbuffer_add(out, "S", 1);
	evbuffer_add(out, severity, sev_len);
	evbuffer_add(out, &nul, 1);
	/* 'V' is the non-localized severity (protocol 3.0, PostgreSQL 9.6+); ours is never localized. */
	evbuffer_add(out, "V", 1);
	evbuffer_add(out, severity, sev_len);
	evbuffer_add(out, &nul, 1);
	evbuffer_add(out, "C", 1);
	evbuffer_add(out, sqlstate, 5);
	evbuffer_add(out, &nul, 1);
	evbuffer_add(out, "M", 1);
	evbuffer_add(out, msg, msg_len);
	evbuffer_add(out, &nul, 1);
	evbuffer_add(out, &nul, 1);
}

static enum proto_refuse_step pg_refuse(struct evbuffer *client_in, struct evbuffer *out, const char *msg)
{
	uint8_t hdr[8];

	if (client_in && evbuffer_copyout(client_in, hdr, sizeof(hdr)) == (ev_ssize_t)sizeof(hdr)) {
		uint32_t len = be32(hdr), code = be32(hdr + 4);
		if (len == 8 && (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST)) {
			/* The client cannot read an ErrorResponse before the encryption negotiation is
			 * answered (libpq would report a confusing "received invalid response"): decline
			 * encryption, and refuse its StartupMessage properly on the next call. */
			evbuffer_drain(client_in, sizeof(hdr));
			evbuffer_add(out, "N", 1);
			return PROTO_REFUSE_MORE;
		}
	}
	/* 57P03 cannot_connect_now is what a server that is starting up or shutting down says; client
	 * libraries and poolers treat it as "retry later", which is exactly the situation. */
	pg_error_response(out, "FATAL", "57P03", msg);
	return PROTO_REFUSE_DONE;
}

/* An ErrorResponse with SQLSTATE 25006 (read_only_sql_transaction): a write reached a standby, or
 * a primary whose new transactions are read-only -- or a client that set its own transaction
 * read-only, hence only a hint. The extended protocol's answers to what comes before an Execute
 * (ParseComplete, BindComplete, NoData, ParameterDescription, RowDescription: nothing ran yet) may
 * come first, and the ReadyForQuery after it is part of the reply, with the ParameterStatus
 * messages a server sends before it (a primary turned read-only by a reload reports
 * default_transaction_read_only there). */
static size_t pg_readonly_reply(const uint8_t *p, size_t n)
{
	static const uint8_t code[] = {'C', '2', '5', '0', '0', '6', 0};
	size_t at = 0, len;

	while (n - at >= 5 && memchr("12ntTS", p[at], 6) != NULL) {
		len = be32(p + at + 1);
		if (len < 4 || n - at - 1 < len)
			return 0;
		at += 1 + len;
	}
	if (n - at < 5 + sizeof(code) || p[at] != 'E')
		return 0;
	len = be32(p + at + 1);
	if (len < 4 || n - at - 1 < len || memmem(p + at + 5, len - 4, code, sizeof(code)) == NULL)
		return 0;
	at += 1 + len;
	for (size_t k = at; n - k >= 5;) {
		len = be32(p + k + 1);
		if (len < 4 || n - k - 1 < len)
			break;
		k += 1 + len;
		if (p[k - 1 - len] == 'Z' && len == 5)
			return k;
		if (p[k - 1 - len] != 'S')
			break;
	}
	return at;
}

/* ErrorResponse 57P03 (cannot_connect_now: starting up, shutting down) or 57P01 (admin_shutdown)
 * as the answer to a startup packet. */
static size_t pg_startup_refusal(const uint8_t *p, size_t n)
{
	static const uint8_t c1[] = {'C', '5', '7', 'P', '0', '3', 0};
	static const uint8_t c2[] = {'C', '5', '7', 'P', '0', '1', 0};
	size_t len;

	if (n < 5 || p[0] != 'E')
		return 0;
	len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | (size_t)p[4];
	if (len < 4 || n < 1 + len)
		return 0;
	if (memmem(p + 5, len - 4, c1, sizeof(c1)) == NULL && memmem(p + 5, len - 4, c2, sizeof(c2)) == NULL)
		return 0;
	return 1 + len;
}

/* A complete ErrorResponse at p[0..n) whose severity (the non-localized 'V', else 'S') is FATAL or
 * PANIC. */
static bool pg_fatal(const uint8_t *p, size_t n)
{
	const uint8_t *sev = NULL;

	for (size_t i = 5; i < n && p[i] != 0;) {
		const uint8_t *v = p + i + 1, *nul = memchr(v, 0, n - i - 1);
		if (nul == NULL)
			return false;
		if (p[i] == 'V' || (p[i] == 'S' && sev == NULL))
			sev = v;
		i = (size_t)(nul - p) + 1;
	}
	return sev != NULL && (strcmp((const char *)sev, "FATAL") == 0 || strcmp((const char *)sev, "PANIC") == 0);
}

/* Where the server's last words start: a FATAL ErrorResponse that ends p[0..n), every message before
 * it complete (a server that answered, then was told to shut down, sends both in one go). */
static size_t pg_termination(const struct proto_state *st, const uint8_t *p, size_t n)
{
	const struct pg_state *s = pg_c(st);
	size_t at = 0;

	if (s->opaque || s->cphase != PGC_TYPED || s->s.hdr_len != 0 || s->s.remaining != 0)
		return n;
	while (n - at >= 5) {
		size_t len = (size_t)p[at + 1] << 24 | (size_t)p[at + 2] << 16 | (size_t)p[at + 3] << 8 | (size_t)p[at + 4];
		if (len < 4 || n - at < 1 + len)
			return n;
		if (at + 1 + len == n)
			return p[at] == 'E' && pg_fatal(p + at, 1 + len) ? at : n;
		at += 1 + len;
	}
	return n;
}

/* An SSLRequest or GSSENCRequest: 8 bytes, length 8, code 80877103 / 80877104. */
static size_t pg_startup_preamble(const uint8_t *p, size_t n)
{
	if (n < 8 || p[0] != 0 || p[1] != 0 || p[2] != 0 || p[3] != 8)
		return 0;
	if (p[4] == 0x04 && p[5] == 0xd2 && p[6] == 0x16 && (p[7] == 0x2f || p[7] == 0x30))
		return 8;
	return 0;
}

/* SSLRequest: length 8, code 80877103. */
static const uint8_t pg_ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};

static int pg_tls_answer(uint8_t byte)
{
	return byte == 'S' ? 1 : byte == 'N' ? 0 : -1;
}

/* A client's SSLRequest or GSSENCRequest, or (fewer than 8 bytes) what may become one. */
static size_t pg_negotiation_request(const uint8_t *p, size_t n)
{
	if (n < 8)
		return memcmp(p, pg_ssl_request, n < 7 ? n : 7) == 0 ? PROTO_MORE : 0;
	return pg_startup_preamble(p, n);
}

/* CancelRequest: length 16, code 80877102, process id, secret key. Longer keys (protocol 3.2)
 * are not ours to match: 0. */
static size_t pg_cancel_request(const uint8_t *p, size_t n, uint8_t *key, size_t *keylen)
{
	static const uint8_t head[8] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e};

	if (memcmp(p, head, n < sizeof(head) ? n : sizeof(head)) != 0)
		return 0;
	if (n < 16)
		return PROTO_MORE;
	memcpy(key, p + 8, PROTO_KEY_MAX);
	*keylen = PROTO_KEY_MAX;
	return 16;
}

static bool pg_session_key(const struct proto_state *st, uint8_t *key, size_t *keylen)
{
	const struct pg_state *s = pg_c(st);

	if (!s->has_key)
		return false;
	memcpy(key, s->key, PROTO_KEY_MAX);
	*keylen = PROTO_KEY_MAX;
	return true;
}

const struct proto_ops proto_postgres = {
	.name = "postgres",
	.init = pg_init,
	.feed = pg_feed,
	.is_idle = pg_is_idle,
	.at_rest = pg_at_rest,
	.is_opaque = pg_is_opaque,
	.refuse = pg_refuse,
	.can_migrate = pg_can_migrate,
	.unmovable_reason = pg_unmovable_reason,
	.replayable = pg_replayable,
	.readonly_reply = pg_readonly_reply,
	.startup_refusal = pg_startup_refusal,
	.startup_preamble = pg_startup_preamble,
	.termination = pg_termination,
	.inflight_lost = pg_inflight_lost,
	.retryable = pg_retryable,
	.tx_retryable = pg_tx_retryable,
	.tx_idle = pg_tx_idle,
	.tx_answered = pg_tx_answered,
	.tx_strip = pg_tx_strip,
	.request_len = pg_request_len,
	.outcome_unknown = pg_outcome_unknown,
	.cancel_request = pg_cancel_request,
	.session_key = pg_session_key,
	.tls_request = pg_ssl_request,
	.tls_request_len = sizeof(pg_ssl_request),
	.tls_answer = pg_tls_answer,
	.negotiation_request = pg_negotiation_request,
	.negotiation_refused = 'N',
	.login = &pg_login_ops,
};
