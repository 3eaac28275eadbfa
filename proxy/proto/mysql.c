/* proto/mysql.c - MySQL / MariaDB client/server protocol: idle tracking and the native refusal.
 *
 * Framing. Every packet is a 3-byte little-endian payload length, a sequence id, and the payload.
 * A payload of exactly 0xFFFFFF bytes continues in the next packet; continuation packets are
 * skipped without being classified. Of each packet the tracker looks at a bounded prefix only
 * (at most MY_PREFIX bytes: enough for the header fields of OK/EOF/ERR/column-count/prepare-OK
 * packets) and skips the rest by length. The one exception is the server greeting, read byte by
 * byte once per connection because its capability flags sit behind a NUL-terminated version.
 *
 * Connection phase: greeting -> client handshake response (an SSLRequest, i.e. CLIENT_SSL, means
 * TLS follows: opaque; negotiated compression changes the framing: opaque) -> any number of auth
 * switch / more-data exchanges -> OK (command phase) or ERR.
 *
 * Command phase: each client packet with sequence id 0 is a command. Commands whose response we
 * expect are queued (clients such as MariaDB Connector/C pipeline COM_STMT_PREPARE and
 * COM_STMT_EXECUTE), and the server's packets are matched against the head of the queue:
 *   OK / ERR / result set (column count, column definitions, EOF unless CLIENT_DEPRECATE_EOF,
 *   rows, then EOF or an OK with a 0xFE header), repeated while SERVER_MORE_RESULTS_EXISTS;
 *   COM_STMT_PREPARE: prepare-OK then parameter and column definition blocks.
 * The status flags of every OK/EOF update "in transaction" (SERVER_STATUS_IN_TRANS).
 *
 * Idle <=> command phase, no queued or running response, no partial packet either way, and the
 * last status seen does not say "in transaction".
 */
#include "proto/mysql_wire.h"
#include "proto/proto.h"
#include "util.h"

#include <event2/buffer.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#define MY_MAX_PAYLOAD 0xFFFFFFu
#define MY_PREFIX 24u         /* OK: 1 + 9 (affected rows) + 9 (insert id) + 2 (status) = 21 */

/* Capability flags (both MySQL and MariaDB). */
#define CLIENT_COMPRESS 0x00000020u
#define CLIENT_PROTOCOL_41 0x00000200u
#define CLIENT_SSL 0x00000800u
#define CLIENT_DEPRECATE_EOF 0x01000000u
#define CLIENT_ZSTD_COMPRESSION 0x04000000u

/* Server status flags. */
#define SERVER_STATUS_IN_TRANS 0x0001u
#define SERVER_MORE_RESULTS_EXISTS 0x0008u
#define SERVER_STATUS_CURSOR_EXISTS 0x0040u

/* Commands with something special about their response. */
#define COM_QUIT 0x01
#define COM_INIT_DB 0x02
#define COM_QUERY 0x03
#define COM_FIELD_LIST 0x04
#define COM_STATISTICS 0x09
#define COM_PROCESS_INFO 0x0A
#define COM_CHANGE_USER 0x11
#define COM_BINLOG_DUMP 0x12
#define COM_TABLE_DUMP 0x13
#define COM_STMT_PREPARE 0x16
#define COM_STMT_EXECUTE 0x17
#define COM_STMT_SEND_LONG_DATA 0x18
#define COM_STMT_CLOSE 0x19
#define COM_STMT_FETCH 0x1C
#define COM_BINLOG_DUMP_GTID 0x1E
#define COM_RESET_CONNECTION 0x1F
#define COM_STMT_BULK_EXECUTE 0xFA /* MariaDB */

/* MariaDB sends progress reports as ERR packets with this code, before the real response. */
#define MY_PROGRESS_ERRNO 0xFFFFu

#define MY_MAX_ERR_TEXT 8192u

enum my_phase {
	PH_GREETING,   /* waiting for the server's initial handshake packet */
	PH_HANDSHAKE,  /* waiting for the client's handshake response */
	PH_AUTH,       /* authentication exchange until the server's OK */
	PH_COMMAND,
};

/* What a queued command expects as its response (4 bits, see struct my_state.queue). */
enum my_kind {
	K_RESULT = 1,  /* OK, ERR or result set(s): COM_QUERY, COM_STMT_EXECUTE, ... */
	K_PREPARE,     /* COM_STMT_PREPARE */
	K_ROWS,        /* rows (or column definitions) until EOF/OK/ERR: COM_STMT_FETCH, COM_FIELD_LIST */
	K_SIMPLE,      /* one OK, EOF or ERR packet */
	K_ANY,         /* one packet, whatever it is: COM_STATISTICS answers with plain text */
	K_AUTH,        /* auth switch / more data until OK or ERR: COM_CHANGE_USER */
};

/* Where the tracker is inside the response to the command at the head of the queue. */
enum my_resp {
	RS_NONE,
	RS_FIRST,      /* first packet of a (next) result: OK, ERR or column count */
	RS_COLDEFS,    /* column definitions to skip (count in skip) */
	RS_COLEOF,     /* EOF after the column definitions */
	RS_ROWS,       /* rows until the terminating EOF / OK(0xFE) / ERR */
	RS_PREPARE,    /* prepare OK or ERR */
	RS_SKIP,       /* packets to skip (count in skip), then done */
	RS_SIMPLE,
	RS_ANY,
	RS_AUTH,
};

struct my_dir {
	uint32_t remaining;  /* payload bytes of the current packet not yet fed */
	uint8_t hdr[4];      /* header of the current packet: length and sequence id stay readable */
	uint8_t hdr_len;     /* 4 while inside a packet's payload */
	uint8_t pre_want;    /* prefix bytes to collect from this packet (0: nothing to look at) */
	uint8_t pre_len;
	bool cont;           /* this packet continues the previous one */
	bool next_cont;      /* this packet is 0xFFFFFF long: the next one continues it */
};

#define MY_STMTS_MAX 6

struct my_state {
	struct my_dir c, s;
	uint64_t queue;      /* FIFO of enum my_kind, 4 bits each, head in the low bits */
	uint32_t skip;       /* RS_COLDEFS / RS_SKIP: packets left */
	uint32_t srv_caps;
	uint32_t greet_nul;  /* payload offset of the NUL ending the server version (0: not yet) */
	uint8_t c_pre[6];    /* a command's first bytes (owned: the statement id and flags after it) */
	uint16_t c_watch;    /* owned: 1 + the offset of COM_STMT_EXECUTE's types flag to read (0: none) */
	uint8_t s_pre[MY_PREFIX];
	uint8_t q_len;
	uint8_t phase;       /* enum my_phase */
	uint8_t resp;        /* enum my_resp */
	bool opaque : 1;
	bool a_on : 1;           /* the server packet read now is a prepare-OK whose id to map (mysql_feed_answer) */
	bool deprecate_eof : 1;
	bool in_trans : 1;
	/* auth = repoint (mysql_track_owned): what the session's commands leave on its server, so that
	 * it moves only when a fresh connection, logged in and given its replayed SET/USE, is the same. */
	bool owned : 1;
	uint8_t stateful;    /* 0, or why it cannot move (enum my_unmovable) */
	uint8_t cmd_cls;     /* the last command: enum my_cls */
	bool cmd_at_idle : 1;    /* ... sent at an idle point (nothing else in flight, no transaction) */
	bool cmd_query : 1;      /* ... a COM_QUERY, COM_INIT_DB or COM_STMT_EXECUTE: refused read-only, it
	                            did not run */
	bool replay_ready : 1, reset_ready : 1;
	/* Requests since the last idle point (saturating), and whether each was a lone plain query:
	 * a transaction refused part-way can run again (tx_retryable). */
	uint8_t tx_cmds;
	bool tx_plain : 1;
	/* The text of a COM_QUERY, read as the server's lexer would, for what it leaves behind. */
	bool scanning : 1;
	uint8_t sc_quote;    /* inside '...', "..." or `...`: that character */
	uint8_t sc_comment;  /* 1 in "/ * ... * /", 2 to the end of the line; 3-6 deciding */
	uint8_t sc_prev;     /* the byte before */
	uint8_t sc_stmts;    /* statements started (a ';' ends one) */
	uint8_t sc_first;    /* enum my_first: the first word of the first statement */
	uint8_t sc_wlen;
	uint8_t sc_flags;    /* SC_* */
	uint8_t sc_why;      /* the first marker of state met (enum my_unmovable) */
	bool sc_stmt_start : 1;  /* the next word starts a statement */
	char sc_word[13];
	/* Prepared statements open on the server (COM_STMT_PREPARE answered, not yet closed), with their
	 * parameter counts: repoint's login prepares them again on the next server, the client's ids mapped
	 * (proto_login_ops.replay, MY_REPLAY_PREPARE). More than MY_STMTS_MAX, one prepared behind
	 * another request, executed without its parameters' types (the server's memory of them does not
	 * move), with a cursor, or given long data: the session never moves again. */
	uint8_t nstmts;
	bool prepare_ready : 1;  /* one was just prepared (the last in stmts[]): replayable says so once */
	uint16_t stmt_params[MY_STMTS_MAX];
	uint32_t stmts[MY_STMTS_MAX];
	uint32_t conn_id;    /* the greeting's connection id (owned: repoint's, session_key) */
};

_Static_assert(sizeof(struct my_state) <= sizeof(struct proto_state), "my_state must fit in proto_state");
_Static_assert(alignof(struct my_state) <= alignof(struct proto_state), "my_state alignment");

#define MY_QUEUE_CAP 16

/* Why a session cannot move (the label of repoint_sessions_unmovable_total). */
enum my_unmovable {
	MU_MOVABLE,
	MU_PREPARED_STATEMENT,
	MU_USER_VARIABLE,
	MU_TEMPORARY_TABLE,
	MU_LOCK,
	MU_PREPARE,
	MU_HANDLER,
	MU_CALL,
	MU_XA,
	MU_SET_NOT_ALONE,
	MU_SET_OTHER,
	MU_CHANGE_USER,
	MU_SET_OPTION,
};

static const char *const my_unmovable_names[] = {
	[MU_PREPARED_STATEMENT] = "prepared_statement", [MU_USER_VARIABLE] = "user_variable",
	[MU_TEMPORARY_TABLE] = "temporary_table",	[MU_LOCK] = "lock",
	[MU_PREPARE] = "prepare",			[MU_HANDLER] = "handler",
	[MU_CALL] = "call",				[MU_XA] = "xa",
	[MU_SET_NOT_ALONE] = "set_not_alone",		[MU_SET_OTHER] = "set_other",
	[MU_CHANGE_USER] = "change_user",		[MU_SET_OPTION] = "set_option",
};

/* What the last command does to the session: nothing repoint needs, something it can replay on
 * another server (a lone SET or USE, COM_INIT_DB), or a reset (COM_RESET_CONNECTION). */
enum my_cls { CLS_NONE, CLS_REPLAY, CLS_RESET };
enum my_first { FIRST_NONE, FIRST_SET, FIRST_USE, FIRST_OTHER };

/* Words of a SET statement that change it (sc_flags). */
#define SC_SERVER 0x01  /* GLOBAL, PERSIST, PERSIST_ONLY, PASSWORD: the server's, not the session's */
#define SC_OTHER 0x02   /* ROLE, STATEMENT, TRANSACTION: not a session setting repoint replays */
#define SC_SESSION 0x04 /* SESSION (SET SESSION TRANSACTION ... is one) */
#define SC_PAREN 0x08   /* an expression: sent again, it would be evaluated again */
#define SC_COMMA 0x10

static struct my_state *my(struct proto_state *st)
{
	return (struct my_state *)(void *)st;
}

static const struct my_state *my_c(const struct proto_state *st)
{
	return (const struct my_state *)(const void *)st;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Payload length and sequence id of the current packet in a direction. */
static uint32_t pkt_len(const struct my_dir *d)
{
	return (uint32_t)d->hdr[0] | (uint32_t)d->hdr[1] << 8 | (uint32_t)d->hdr[2] << 16;
}

static uint8_t pkt_seq(const struct my_dir *d)
{
	return d->hdr[3];
}

static void my_init(struct proto_state *st)
{
	memset(st, 0, sizeof(*st));
	my(st)->phase = PH_GREETING;
}

void mysql_track_owned(struct proto_state *st)
{
	my(st)->owned = true;
}

bool mysql_statement(const struct proto_state *st, unsigned i, uint32_t *id, uint16_t *params)
{
	const struct my_state *m = my_c(st);

	if (i >= m->nstmts)
		return false;
	*id = m->stmts[i];
	*params = m->stmt_params[i];
	return true;
}

bool mysql_track_statement(struct proto_state *st, uint32_t id, uint16_t params)
{
	struct my_state *m = my(st);

	if (m->nstmts >= MY_STMTS_MAX)
		return false;
	m->stmts[m->nstmts] = id;
	m->stmt_params[m->nstmts++] = params;
	return true;
}

static void my_unmovable(struct my_state *m, enum my_unmovable why)
{
	if (m->stateful == MU_MOVABLE)
		m->stateful = (uint8_t)why;
}

/* --- the text of a COM_QUERY (auth = repoint) --- */

static bool sc_ident(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
	       c >= 0x80;
}

static void sc_word_end(struct my_state *m)
{
	static const struct {
		const char *w;
		uint8_t why;
	} markers[] = {{"TEMPORARY", MU_TEMPORARY_TABLE}, {"LOCK", MU_LOCK}, {"GET_LOCK", MU_LOCK},
		       {"PREPARE", MU_PREPARE}, {"HANDLER", MU_HANDLER}};
	const char *w = m->sc_word;

	if (m->sc_wlen == 0)
		return;
	if (m->sc_wlen >= sizeof(m->sc_word)) {
		m->sc_wlen = 0;
		m->sc_stmt_start = false;
		return;
	}
	m->sc_word[m->sc_wlen] = '\0';
	m->sc_wlen = 0;
	if (m->sc_stmt_start) {
		m->sc_stmt_start = false;
		bool set = strcmp(w, "SET") == 0, use = strcmp(w, "USE") == 0;
		if (m->sc_stmts == 1)
			m->sc_first = set ? FIRST_SET : use ? FIRST_USE : FIRST_OTHER;
		else if (set || use)
			m->sc_why = m->sc_why ? m->sc_why : MU_SET_NOT_ALONE;  /* a SET behind another statement */
		if (strcmp(w, "CALL") == 0 && !m->sc_why)
			m->sc_why = MU_CALL;
		if (strcmp(w, "XA") == 0 && !m->sc_why)
			m->sc_why = MU_XA;
	}
	if (m->sc_first == FIRST_SET && m->sc_stmts == 1) {
		if (!strcmp(w, "GLOBAL") || !strcmp(w, "PERSIST") || !strcmp(w, "PERSIST_ONLY") || !strcmp(w, "PASSWORD"))
			m->sc_flags |= SC_SERVER;
		else if (!strcmp(w, "ROLE") || !strcmp(w, "STATEMENT") || !strcmp(w, "TRANSACTION"))
			m->sc_flags |= SC_OTHER;
		else if (!strcmp(w, "SESSION"))
			m->sc_flags |= SC_SESSION;
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(markers) && !m->sc_why; i++)
		if (strcmp(w, markers[i].w) == 0)
			m->sc_why = markers[i].why;
}

/* Bytes of the query text: words outside strings, quoted identifiers and comments ("/ *!" and
 * "/ *M!" comments are code to the server, and so to this reader). */
static void sc_bytes(struct my_state *m, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i], prev = m->sc_prev;
		m->sc_prev = c;
		if (m->sc_comment == 3) {
			/* After "/ *": "!" or "M!" (then a version's digits) make it code to the server;
			 * anything else a comment. */
			m->sc_comment = c == '!' ? 5 : c == 'M' ? 6 : 1;
			if (m->sc_comment != 1)
				continue;
		} else if (m->sc_comment == 6) {
			m->sc_comment = c == '!' ? 5 : 1;
			if (m->sc_comment == 5)
				continue;
		} else if (m->sc_comment == 5) {
			if (c >= '0' && c <= '9')
				continue;
			m->sc_comment = 0;
			prev = ' ';
		} else if (m->sc_comment == 4) {
			/* After "--": a comment when a space or a control character follows. */
			m->sc_comment = c <= ' ' ? 2 : 0;
		}
		if (m->sc_comment == 1) {
			if (prev == '*' && c == '/') {
				m->sc_comment = 0;
				m->sc_prev = ' ';
			}
			continue;
		}
		if (m->sc_comment == 2) {
			if (c == '\n')
				m->sc_comment = 0;
			continue;
		}
		if (m->sc_quote) {
			if (c == m->sc_quote && prev != '\\')
				m->sc_quote = 0;
			else if (prev == '\\' && c == '\\')
				m->sc_prev = 0;  /* an escaped backslash escapes nothing after it */
			continue;
		}
		if (sc_ident(c)) {
			if (prev == '@' && m->sc_wlen == 0 && !(m->sc_first == FIRST_SET && m->sc_stmts == 1) && !m->sc_why)
				m->sc_why = MU_USER_VARIABLE;  /* @name: a user variable (@@name is the server's) */
			if (m->sc_wlen < sizeof(m->sc_word))
				m->sc_word[m->sc_wlen] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
			if (m->sc_wlen < UINT8_MAX)
				m->sc_wlen++;
			continue;
		}
		sc_word_end(m);
		if (c == '@' && prev == '@')
			m->sc_prev = 0;  /* "@@": a system variable, not a user one */
		switch (c) {
		case '\'':
		case '"':
		case '`':
			m->sc_quote = c;
			if (c != '`' && !m->sc_why && m->sc_prev == c && prev == '@')
				m->sc_why = MU_USER_VARIABLE;  /* @'quoted name' */
			break;
		case '#':
			m->sc_comment = 2;
			break;
		case '-':
			if (prev == '-')
				m->sc_comment = 4;
			break;
		case '*':
			if (prev == '/')
				m->sc_comment = 3;
			break;
		case ';':
			if (m->sc_stmts < UINT8_MAX)
				m->sc_stmts++;
			m->sc_stmt_start = true;
			if (m->sc_first == FIRST_SET || m->sc_first == FIRST_USE)
				m->sc_why = m->sc_why ? m->sc_why : MU_SET_NOT_ALONE;
			break;
		case '(':
			m->sc_flags |= SC_PAREN;
			break;
		case ',':
			m->sc_flags |= SC_COMMA;
			break;
		default:
			break;
		}
	}
}

/* Status flags of an OK packet (header 0x00 or 0xFE) or of a 5-byte EOF packet held in the
 * prefix. An OK is at least 7 bytes (header, two 1-byte lengths, status, warnings), an EOF exactly
 * 5, so the length tells them apart. Returns false if the packet is malformed. */
static bool my_status(const struct my_state *m, uint16_t *status)
{
	const uint8_t *b = m->s_pre;
	uint32_t avail = m->s.pre_len;
	uint64_t v;

	if (b[0] == 0xFE && pkt_len(&m->s) < 7) {
		if (pkt_len(&m->s) < 5)
			return false;
		*status = le16(b + 3);
		return true;
	}
	uint32_t off = 1;
	unsigned k = mysql_lenenc(b + off, avail - off, &v); /* affected rows */
	if (!k)
		return false;
	off += k;
	k = mysql_lenenc(b + off, avail - off, &v); /* last insert id */
	if (!k)
		return false;
	off += k;
	if (avail < off + 2)
		return false;
	*status = le16(b + off);
	return true;
}

static void my_push(struct my_state *m, enum my_kind k)
{
	if (m->q_len == MY_QUEUE_CAP) {
		m->opaque = true;
		return;
	}
	m->queue |= (uint64_t)k << (4 * m->q_len);
	m->q_len++;
}

static enum my_kind my_pop(struct my_state *m)
{
	enum my_kind k = (enum my_kind)(m->queue & 0xF);
	m->queue >>= 4;
	m->q_len--;
	return k;
}

/* The end of a COM_QUERY's text: what it leaves on the server. */
static void sc_finish(struct my_state *m)
{
	sc_word_end(m);
	m->scanning = false;
	if (m->sc_stmts > 1)
		m->tx_plain = false;  /* several statements, several answers: not followed one by one */
	m->cmd_cls = CLS_NONE;
	if (m->sc_why) {
		my_unmovable(m, m->sc_why);
		return;
	}
	if (m->sc_first == FIRST_SET) {
		if ((m->sc_flags & SC_PAREN) || ((m->sc_flags & SC_OTHER) && !(m->sc_flags & SC_SESSION)) ||
		    ((m->sc_flags & SC_SERVER) && (m->sc_flags & SC_COMMA))) {
			my_unmovable(m, MU_SET_OTHER);
			return;
		}
		if (m->sc_flags & SC_SERVER)
			return;  /* the server's settings, not the session's: nothing to carry */
	} else if (m->sc_first != FIRST_USE) {
		return;
	}
	if (!m->cmd_at_idle) {
		my_unmovable(m, MU_SET_NOT_ALONE);  /* in a transaction, or behind another request */
		return;
	}
	m->cmd_cls = CLS_REPLAY;
}

/* The last command was answered OK, and nothing else is in flight. */
static void my_answered_ok(struct my_state *m)
{
	if (m->cmd_cls == CLS_NONE)
		return;
	if (m->q_len != 0 || m->scanning) {
		my_unmovable(m, MU_SET_NOT_ALONE);
	} else if (m->cmd_cls == CLS_REPLAY) {
		m->replay_ready = true;
	} else {
		/* COM_RESET_CONNECTION: the server forgot the session's state, and so does repoint. */
		m->reset_ready = true;
		m->replay_ready = false;
		m->stateful = MU_MOVABLE;
		m->nstmts = 0;
	}
	m->cmd_cls = CLS_NONE;
}

/* COM_STMT_EXECUTE (owned): statement id, flags (a cursor), iterations, the parameters' NULL
 * bitmap, then whether their types follow. Without them the server uses those an earlier execution
 * sent, which a statement prepared again elsewhere does not have: such a session stays. */
static void my_stmt_execute(struct my_state *m)
{
	uint32_t len = pkt_len(&m->c);

	if (len < 10 || m->c.next_cont)
		return;  /* (malformed: the server's error) */
	if (m->c_pre[5] != 0) {
		my_unmovable(m, MU_PREPARED_STATEMENT);  /* a cursor: rows left on this server */
		return;
	}
	uint32_t id = le32(m->c_pre + 1);
	for (unsigned i = 0; i < m->nstmts; i++)
		if (m->stmts[i] == id && m->stmt_params[i] != 0) {
			m->c_watch = (uint16_t)(1u + 10u + (m->stmt_params[i] + 7u) / 8u);  /* read in my_feed_dir */
			return;
		}
}

/* The byte of a COM_STMT_EXECUTE that says whether its parameters' types come with it. */
static void my_execute_types(struct my_state *m, uint8_t flag)
{
	m->c_watch = 0;
	if (flag == 0)
		my_unmovable(m, MU_PREPARED_STATEMENT);
}

/* First byte of a client command: queue what its response will look like. */
static void my_client_command(struct my_state *m, uint8_t cmd)
{
	if (m->owned) {
		/* What the command leaves on the server (sc_finish reads a query's text). */
		if (m->cmd_cls != CLS_NONE)
			my_unmovable(m, MU_SET_NOT_ALONE);  /* pipelined behind a SET */
		m->cmd_cls = CLS_NONE;
		m->cmd_at_idle = m->phase == PH_COMMAND && m->q_len == 0 && m->resp == RS_NONE && !m->in_trans;
		/* (An execution is sent again as it came: with its parameters' types, or the session stays.) */
		m->cmd_query = cmd == COM_QUERY || cmd == COM_INIT_DB || cmd == COM_STMT_EXECUTE;
		if (m->cmd_at_idle) {
			m->tx_cmds = 1;
			m->tx_plain = cmd == COM_QUERY;
		} else {
			if (m->tx_cmds != 0 && m->tx_cmds < UINT8_MAX)
				m->tx_cmds++;
			m->tx_plain = m->tx_plain && cmd == COM_QUERY;
		}
		switch (cmd) {
		case COM_QUERY:
			m->scanning = true;
			m->sc_quote = m->sc_comment = m->sc_prev = m->sc_wlen = m->sc_flags = m->sc_why = 0;
			m->sc_stmts = 1;
			m->sc_first = FIRST_NONE;
			m->sc_stmt_start = true;
			sc_bytes(m, m->c_pre + 1, m->c.pre_len - 1u);  /* the text the prefix holds */
			break;
		case COM_INIT_DB:
			if (m->cmd_at_idle)
				m->cmd_cls = CLS_REPLAY;
			else
				my_unmovable(m, MU_SET_NOT_ALONE);
			break;
		case COM_RESET_CONNECTION:
			m->cmd_cls = CLS_RESET;
			break;
		case COM_STMT_CLOSE:
			/* (No answer.) The statement is gone from the server. */
			if (pkt_len(&m->c) >= 5) {
				uint32_t id = le32(m->c_pre + 1);
				for (unsigned i = 0; i < m->nstmts; i++)
					if (m->stmts[i] == id) {
						m->nstmts--;
						m->stmts[i] = m->stmts[m->nstmts];
						m->stmt_params[i] = m->stmt_params[m->nstmts];
						break;
					}
			}
			break;
		case COM_STMT_EXECUTE:
			my_stmt_execute(m);
			break;
		case COM_STMT_SEND_LONG_DATA:
		case COM_STMT_BULK_EXECUTE:
			/* Data the server keeps for the next execution; MariaDB's bulk form (its types). */
			my_unmovable(m, MU_PREPARED_STATEMENT);
			break;
		case COM_CHANGE_USER:
			/* (One the session hands to repoint's login -- proto_login_ops.change_user -- is never
			 * fed here: this one's user is not repoint's to log in as.) */
			my_unmovable(m, MU_CHANGE_USER);
			break;
		case 0x1B: /* COM_SET_OPTION: multi-statements on or off */
			my_unmovable(m, MU_SET_OPTION);
			break;
		default:
			break;
		}
	}
	switch (cmd) {
	case COM_QUIT:
	case COM_STMT_CLOSE:
	case COM_STMT_SEND_LONG_DATA:
		/* No response at all. */
		return;
	case COM_QUERY:
	case COM_STMT_EXECUTE:
	case COM_STMT_BULK_EXECUTE:
	case COM_PROCESS_INFO:
		my_push(m, K_RESULT);
		return;
	case COM_STMT_PREPARE:
		my_push(m, K_PREPARE);
		return;
	case COM_STMT_FETCH:
	case COM_FIELD_LIST:
		my_push(m, K_ROWS);
		return;
	case COM_STATISTICS:
		my_push(m, K_ANY);
		return;
	case COM_CHANGE_USER:
		my_push(m, K_AUTH);
		return;
	case COM_BINLOG_DUMP:
	case COM_TABLE_DUMP:
	case COM_BINLOG_DUMP_GTID:
		/* Replication streams: not request/response any more. */
		m->opaque = true;
		return;
	default:
		/* COM_INIT_DB, COM_PING, COM_STMT_RESET, COM_RESET_CONNECTION, COM_SET_OPTION, ... answer
		 * with one OK/EOF/ERR; so does an unknown command (ERR). Codes past the classic range
		 * (COM_CLONE and other plugin protocols, MariaDB's retired COM_MULTI) are not followed. */
		if (cmd > COM_RESET_CONNECTION && cmd != COM_STMT_BULK_EXECUTE) {
			m->opaque = true;
			return;
		}
		my_push(m, K_SIMPLE);
		return;
	}
}

/* A complete client handshake response prefix (its 4 capability bytes). */
static void my_client_handshake(struct my_state *m)
{
	if (pkt_len(&m->c) < 4) {
		m->opaque = true;
		return;
	}
	uint32_t caps = (uint32_t)m->c_pre[0] | (uint32_t)m->c_pre[1] << 8 | (uint32_t)m->c_pre[2] << 16 |
			(uint32_t)m->c_pre[3] << 24;
	uint32_t both = caps & m->srv_caps;
	if (!(caps & CLIENT_PROTOCOL_41) || (caps & CLIENT_SSL) || (both & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION))) {
		/* Pre-4.1 packets lack the status flags we rely on; an SSLRequest means TLS follows;
		 * compression changes the framing after authentication. */
		m->opaque = true;
		return;
	}
	m->deprecate_eof = (both & CLIENT_DEPRECATE_EOF) != 0;
	m->phase = PH_AUTH;
}

/* The prefix of a client packet that starts a logical packet is complete. */
static void my_client_packet(struct my_state *m)
{
	switch (m->phase) {
	case PH_GREETING:
		/* The server speaks first. */
		m->opaque = true;
		return;
	case PH_HANDSHAKE:
		my_client_handshake(m);
		return;
	case PH_AUTH:
	case PH_COMMAND:
		if (pkt_seq(&m->c) == 0) {
			if (pkt_len(&m->c) == 0) {
				m->opaque = true;
				return;
			}
			/* During PH_AUTH this is a command pipelined behind the authentication. */
			my_client_command(m, m->c_pre[0]);
			return;
		}
		/* Authentication data: fine while authenticating (handshake or COM_CHANGE_USER), but
		 * anything else (e.g. a LOAD DATA LOCAL file we did not expect) is not ours to follow. */
		if (m->phase == PH_AUTH || m->resp == RS_AUTH || (m->resp == RS_NONE && m->q_len && (m->queue & 0xF) == K_AUTH))
			return;
		m->opaque = true;
		return;
	}
}

/* A status the server reported (OK, EOF): whether a transaction is open. One that ended, or was
 * never open, since the idle point leaves nothing of what came before to run again. */
static void my_in_trans(struct my_state *m, uint16_t status)
{
	m->in_trans = status & SERVER_STATUS_IN_TRANS;
	if (!m->in_trans)
		m->tx_plain = false;
}

/* A response ends. The last command's, answered otherwise than OK (my_answered_ok comes first):
 * it left nothing to carry (an error), or nothing that is a setting. */
static void my_response_done(struct my_state *m)
{
	m->resp = RS_NONE;
	if (m->q_len == 0 && !m->scanning)
		m->cmd_cls = CLS_NONE;
}

/* After the column definitions of a result set. */
static void my_after_coldefs(struct my_state *m)
{
	m->resp = m->deprecate_eof ? RS_ROWS : RS_COLEOF;
}

/* The first packet of a result: OK, ERR, LOCAL INFILE request, or a column count. */
static void my_result_first(struct my_state *m)
{
	const uint8_t *b = m->s_pre;
	uint16_t status;
	uint64_t ncols;

	switch (b[0]) {
	case 0x00:
		if (!my_status(m, &status)) {
			m->opaque = true;
			return;
		}
		my_in_trans(m, status);
		if (!(status & SERVER_MORE_RESULTS_EXISTS)) {
			my_answered_ok(m);
			my_response_done(m);
		}
		return;
	case 0xFF:
		my_response_done(m);
		return;
	case 0xFB: /* LOAD DATA LOCAL INFILE request: the client streams a file */
	case 0xFE:
		m->opaque = true;
		return;
	}
	unsigned k = mysql_lenenc(b, m->s.pre_len, &ncols);
	if (!k || ncols == 0 || ncols > 0xFFFF) {
		m->opaque = true;
		return;
	}
	/* With MARIADB_CLIENT_CACHE_METADATA (or MySQL's CLIENT_OPTIONAL_RESULTSET_METADATA) the column
	 * count is followed by a "metadata follows" byte; 0 means the definitions are left out. The
	 * byte is present exactly when the packet is longer than the integer. */
	bool metadata = !(pkt_len(&m->s) > k && b[k] == 0);
	if (metadata) {
		m->skip = (uint32_t)ncols;
		m->resp = RS_COLDEFS;
	} else {
		my_after_coldefs(m);
	}
}

/* A row-position packet: a row, or the end of the rows. */
static void my_rows(struct my_state *m)
{
	const uint8_t *b = m->s_pre;
	uint16_t status;

	if (b[0] == 0xFF) {
		my_response_done(m);
		return;
	}
	/* A text row may also start with 0xFE (a >16 MiB first field), but then the packet is at
	 * least 9 bytes (and in fact 0xFFFFFF long). */
	bool end = b[0] == 0xFE && (pkt_len(&m->s) < 9 || (m->deprecate_eof && pkt_len(&m->s) < MY_MAX_PAYLOAD));
	if (!end)
		return;
	if (!my_status(m, &status)) {
		m->opaque = true;
		return;
	}
	my_in_trans(m, status);
	if ((status & SERVER_MORE_RESULTS_EXISTS) && !(status & SERVER_STATUS_CURSOR_EXISTS))
		m->resp = RS_FIRST;
	else
		my_response_done(m);
}

static void my_prepare_ok(struct my_state *m)
{
	const uint8_t *b = m->s_pre;

	if (b[0] == 0xFF) {
		my_response_done(m);
		return;
	}
	if (b[0] != 0x00 || pkt_len(&m->s) < 12) {
		m->opaque = true;
		return;
	}
	/* 0x00, statement id (4), columns (2), params (2), filler, warnings (2) [, metadata follows]. */
	if (pkt_len(&m->s) > 12 && b[12] == 0) {
		/* Definitions suppressed by optional-metadata: the layout is not documented firmly
		 * enough to follow. */
		m->opaque = true;
		return;
	}
	uint32_t cols = le16(b + 5), params = le16(b + 7);
	if (m->owned) {
		/* The last request sent (nothing after it in flight): the last the session kept is this. */
		if (m->nstmts < MY_STMTS_MAX && m->q_len == 0 && m->c.hdr_len == 0 && !m->c.next_cont &&
		    m->stateful == MU_MOVABLE) {
			m->stmts[m->nstmts] = le32(b + 1);
			m->stmt_params[m->nstmts++] = (uint16_t)params;
			m->prepare_ready = true;
		} else {
			my_unmovable(m, MU_PREPARED_STATEMENT);  /* not followed: for good */
		}
	}
	uint32_t n = params + cols;
	if (!m->deprecate_eof)
		n += (params != 0) + (cols != 0);
	if (n == 0) {
		my_response_done(m);
		return;
	}
	m->skip = n;
	m->resp = RS_SKIP;
}

static void my_start_response(struct my_state *m)
{
	if (m->q_len == 0) {
		/* Unsolicited: e.g. MySQL's ER_CLIENT_INTERACTION_TIMEOUT before it closes. */
		m->opaque = true;
		return;
	}
	switch (my_pop(m)) {
	case K_RESULT:
		m->resp = RS_FIRST;
		break;
	case K_PREPARE:
		m->resp = RS_PREPARE;
		break;
	case K_ROWS:
		m->resp = RS_ROWS;
		break;
	case K_SIMPLE:
		m->resp = RS_SIMPLE;
		break;
	case K_ANY:
		m->resp = RS_ANY;
		break;
	case K_AUTH:
		m->resp = RS_AUTH;
		break;
	default:
		m->opaque = true;
		break;
	}
}

/* The prefix of a server packet that starts a logical packet (not the greeting) is complete. */
static void my_server_packet(struct my_state *m)
{
	const uint8_t *b = m->s_pre;
	uint16_t status;

	if (pkt_len(&m->s) == 0) {
		m->opaque = true;
		return;
	}
	if (m->phase == PH_HANDSHAKE) {
		/* The client owes its handshake response; the server has nothing to say. */
		m->opaque = true;
		return;
	}
	if (m->phase == PH_AUTH) {
		/* Only OK and ERR end the exchange. Everything else is authentication data: an auth
		 * switch request (0xFE), AuthMoreData (0x01), or a raw plugin packet such as a PAM
		 * "dialog" prompt; servers prefix plugin data with 0x01 when it would start with
		 * 0x00/0xFE/0xFF, so there is no ambiguity. */
		switch (b[0]) {
		case 0x00:
			if (!my_status(m, &status)) {
				m->opaque = true;
				return;
			}
			my_in_trans(m, status);
			m->phase = PH_COMMAND;
			return;
		case 0xFF:
			/* Access denied: the server closes the connection. */
			m->opaque = true;
			return;
		default:
			return;
		}
	}
	if (b[0] == 0xFF && m->s.pre_len >= 3 && le16(b + 1) == MY_PROGRESS_ERRNO)
		return;
	if (m->resp == RS_NONE) {
		my_start_response(m);
		if (m->opaque)
			return;
	}
	switch (m->resp) {
	case RS_FIRST:
		my_result_first(m);
		return;
	case RS_COLDEFS:
		if (b[0] == 0xFF) {
			my_response_done(m);
			return;
		}
		if (--m->skip == 0)
			my_after_coldefs(m);
		return;
	case RS_COLEOF:
		if (b[0] == 0xFF) {
			my_response_done(m);
			return;
		}
		if (b[0] != 0xFE || pkt_len(&m->s) >= 9 || !my_status(m, &status)) {
			m->opaque = true;
			return;
		}
		my_in_trans(m, status);
		/* A cursor was opened (COM_STMT_EXECUTE with a cursor flag): the rows come with
		 * COM_STMT_FETCH, this response ends here. */
		if (status & SERVER_STATUS_CURSOR_EXISTS)
			my_response_done(m);
		else
			m->resp = RS_ROWS;
		return;
	case RS_ROWS:
		my_rows(m);
		return;
	case RS_PREPARE:
		my_prepare_ok(m);
		return;
	case RS_SKIP:
		if (--m->skip == 0)
			my_response_done(m);
		return;
	case RS_SIMPLE:
		if (b[0] == 0x00 || b[0] == 0xFE) {
			if (!my_status(m, &status)) {
				m->opaque = true;
				return;
			}
			my_in_trans(m, status);
			if (b[0] == 0x00)
				my_answered_ok(m);
			my_response_done(m);
			return;
		} else if (b[0] != 0xFF) {
			m->opaque = true;
			return;
		}
		my_response_done(m);
		return;
	case RS_ANY:
		my_response_done(m);
		return;
	case RS_AUTH:
		switch (b[0]) {
		case 0x00:
			if (!my_status(m, &status)) {
				m->opaque = true;
				return;
			}
			my_in_trans(m, status);
			my_response_done(m);
			return;
		case 0xFF:
			my_response_done(m);
			return;
		default:
			/* Authentication data, as during the handshake. */
			return;
		}
	default:
		m->opaque = true;
		return;
	}
}

/* One byte of the server greeting (protocol 10): version byte, NUL-terminated server version,
 * then at fixed offsets after the NUL: capabilities low 16 bits (+13), high 16 bits (+18). */
static void my_greeting_byte(struct my_state *m, uint32_t pos, uint8_t b)
{
	if (pos == 0) {
		/* 0xFF: the server refuses us outright (too many connections, host blocked). */
		if (b != 10)
			m->opaque = true;
		return;
	}
	if (m->greet_nul == 0) {
		if (b == 0)
			m->greet_nul = pos;
		return;
	}
	uint32_t off = pos - m->greet_nul;
	if (off >= 1 && off <= 4)
		m->conn_id |= (uint32_t)b << (8 * (off - 1));
	if (off == 14)
		m->srv_caps |= b;
	else if (off == 15)
		m->srv_caps |= (uint32_t)b << 8;
	else if (off == 19)
		m->srv_caps |= (uint32_t)b << 16;
	else if (off == 20)
		m->srv_caps |= (uint32_t)b << 24;
}

static void my_greeting_end(struct my_state *m)
{
	/* The greeting must at least reach the high capability bytes and speak protocol 4.1. */
	if (m->s.next_cont || m->greet_nul == 0 || pkt_len(&m->s) < m->greet_nul + 21 || !(m->srv_caps & CLIENT_PROTOCOL_41)) {
		m->opaque = true;
		return;
	}
	m->phase = PH_HANDSHAKE;
}

/* A packet header is complete: set up the payload walk. */
static void my_packet_start(struct my_dir *d, uint8_t pre_cap)
{
	uint32_t len = pkt_len(d);

	d->remaining = len;
	d->cont = d->next_cont;
	d->next_cont = len == MY_MAX_PAYLOAD;
	d->pre_len = 0;
	d->pre_want = d->cont ? 0 : (uint8_t)(len < pre_cap ? len : pre_cap);
}

/* What a server packet's walk writes back (mysql_feed_answer): the bytes fed, writable, the id bytes
 * of earlier reads to send before them (head), and how many of their last bytes wait for the rest of
 * an id. */
struct my_answer {
	const struct mysql_idmap *map;
	uint8_t *bytes;
	uint8_t *head;
	size_t head_len, hold;
};

/* A prepare-OK's prefix passes in pre[at..at+k), the piece of it in this read at w[0..k). Once its id
 * (payload bytes 1-4) is whole, it is made the client's: in pre (for stmts[]) and in the bytes --
 * those of this read in place, those of earlier reads, which waited, into head; while it is not, its
 * bytes in this read wait. */
static void my_answer_id(struct my_state *m, uint8_t *pre, unsigned at, uint8_t *w, size_t k, struct my_answer *out)
{
	unsigned end = at + (unsigned)k, first = at > 1 ? at : 1;

	if (at == 0 && pre[0] != 0x00) {
		m->a_on = false;  /* an ERR: no id */
		return;
	}
	if (end <= 1 || at >= 5)
		return;
	if (end < 5) {
		out->hold = end - first;
		return;
	}
	uint32_t id = mysql_idmap_client(out->map, le32(pre + 1));
	for (unsigned i = 1; i < 5; i++)
		pre[i] = (uint8_t)(id >> (8 * (i - 1)));
	for (unsigned i = 1; i < first; i++)
		out->head[out->head_len++] = pre[i];
	for (unsigned i = first; i < 5; i++)
		w[i - at] = pre[i];
}

/* Feed one direction. The prefix of a packet is gathered into `pre`, `on_prefix` runs once it is
 * complete (also for empty packets), and the rest of the payload is skipped. out: the server's
 * bytes, writable, with a statement map (feed_answer). */
static void my_feed_dir(struct my_state *m, struct my_dir *d, uint8_t *pre, uint8_t pre_cap, bool server,
			const uint8_t *p, size_t n, struct my_answer *out)
{
	while (n && !m->opaque) {
		if (d->hdr_len < 4) {
			d->hdr[d->hdr_len++] = *p++;
			n--;
			if (d->hdr_len < 4)
				continue;
			my_packet_start(d, pre_cap);
			if (server)
				m->a_on = out != NULL && out->map->n > 0 && !d->cont && m->phase == PH_COMMAND &&
					  m->resp == RS_NONE && m->q_len > 0 && (m->queue & 0xF) == K_PREPARE &&
					  pkt_len(d) >= 12;
			if (!d->cont && d->pre_want == 0) {
				if (server)
					my_server_packet(m);
				else
					my_client_packet(m);
			}
			if (d->remaining == 0) {
				if (server && m->phase == PH_GREETING)
					m->opaque = true; /* an empty greeting */
				d->hdr_len = 0;
			}
			continue;
		}
		if (server && m->phase == PH_GREETING && !d->cont) {
			my_greeting_byte(m, pkt_len(d) - d->remaining, *p++);
			n--;
			if (--d->remaining == 0) {
				d->hdr_len = 0;
				if (!m->opaque)
					my_greeting_end(m);
			}
			continue;
		}
		size_t k = d->remaining;
		if (d->pre_len < d->pre_want) {
			k = (size_t)(d->pre_want - d->pre_len);
			if (k > n)
				k = n;
			memcpy(pre + d->pre_len, p, k);
			if (server && m->a_on && out != NULL)
				my_answer_id(m, pre, d->pre_len, out->bytes + (p - out->bytes), k, out);
			d->pre_len = (uint8_t)(d->pre_len + k);
			if (d->pre_len == d->pre_want) {
				if (server)
					my_server_packet(m);
				else
					my_client_packet(m);
			}
		} else {
			if (k > n)
				k = n;
			if (!server && m->scanning)
				sc_bytes(m, p, k);
			if (!server && m->c_watch != 0) {
				uint32_t pos = pkt_len(d) - d->remaining, at = m->c_watch - 1u;
				if (at >= pos && at < pos + k)
					my_execute_types(m, p[at - pos]);
			}
		}
		d->remaining -= (uint32_t)k;
		p += k;
		n -= k;
		if (d->remaining == 0) {
			d->hdr_len = 0;
			if (!server && m->scanning && !d->next_cont)
				sc_finish(m);
			if (!server)
				m->c_watch = 0;  /* (ended before it: malformed, the server's error) */
		}
	}
}

static void my_feed(struct proto_state *st, enum proto_dir dir, const uint8_t *p, size_t n)
{
	struct my_state *m = my(st);

	if (m->opaque)
		return;
	if (dir == PROTO_CLIENT_TO_SERVER) {
		/* Before the handshake response we need its capability flags; afterwards only the
		 * command byte. */
		uint8_t cap = m->phase == PH_HANDSHAKE ? 4 : m->owned ? 6 : 1;
		my_feed_dir(m, &m->c, m->c_pre, cap, false, p, n, NULL);
	} else {
		my_feed_dir(m, &m->s, m->s_pre, MY_PREFIX, true, p, n, NULL);
	}
}

size_t mysql_feed_answer(struct proto_state *st, const struct mysql_idmap *map, uint8_t *p, size_t n, uint8_t *head,
			 size_t *head_len)
{
	struct my_state *m = my(st);
	struct my_answer out = {.map = map, .bytes = p, .head = head};

	*head_len = 0;
	if (!m->opaque)
		/* (With an empty map too: an id cut before the map emptied is owed its first bytes.) */
		my_feed_dir(m, &m->s, m->s_pre, MY_PREFIX, true, p, n, map != NULL ? &out : NULL);
	if (m->opaque && map != NULL && map->n > 0)
		return SIZE_MAX;  /* a prepare-OK could pass unseen, its id the member's */
	*head_len = out.head_len;
	return n - out.hold;
}

static bool my_dir_quiet(const struct my_dir *d)
{
	return d->hdr_len == 0 && !d->next_cont;
}

static bool my_at_rest(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	return !m->opaque && m->phase == PH_COMMAND && m->q_len == 0 && m->resp == RS_NONE && !m->scanning &&
	       my_dir_quiet(&m->c) && my_dir_quiet(&m->s);
}

static bool my_is_idle(const struct proto_state *st)
{
	return my_at_rest(st) && !my_c(st)->in_trans;
}

static bool my_is_opaque(const struct proto_state *st)
{
	return my_c(st)->opaque;
}

void mysql_err_packet(struct evbuffer *out, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg)
{
	/* Clients read exactly five SQLSTATE characters after the '#': anything else would eat the
	 * start of the message, so a malformed one becomes HY000 (general error). */
	if (!sqlstate_valid(sqlstate))
		sqlstate = "HY000";
	if (!msg)
		msg = "";
	size_t msg_len = utf8_prefix_len(msg, MY_MAX_ERR_TEXT);
	uint32_t len = (uint32_t)(1 + 2 + 1 + 5 + msg_len);
	uint8_t head[4 + 4] = {
		(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), seq,
		0xFF, (uint8_t)code, (uint8_t)(code >> 8), '#',
	};

	evbuffer_add(out, head, sizeof(head));
	evbuffer_add(out, sqlstate, 5);
	evbuffer_add(out, msg, msg_len);
}

/* The refusal code: ER_SERVER_SHUTDOWN (1053, "Server shutdown in progress") with its own SQLSTATE
 * 08S01. It exists with the same number and SQLSTATE in MySQL and MariaDB, so every client's
 * error table agrees; class 08 is "connection exception", which drivers and pools treat as "this
 * connection failed, try again" rather than as a SQL or permission error; and it describes the
 * situation: the server the client wanted is going away (failover), not a bug or a full server. */
#define MY_REFUSE_ERRNO 1053
#define MY_REFUSE_SQLSTATE "08S01"

static enum proto_refuse_step my_refuse(struct evbuffer *client_in, struct evbuffer *out, const char *msg)
{
	(void)client_in;
	/* The server speaks first, so the client is still waiting for a greeting: an ERR as the very
	 * first packet (sequence id 0) is what a real server sends when it refuses a connection
	 * ("Too many connections", "Host is blocked"), and clients handle it before any handshake. */
	mysql_err_packet(out, 0, MY_REFUSE_ERRNO, MY_REFUSE_SQLSTATE, msg);
	return PROTO_REFUSE_DONE;
}

/* An ERR packet (header, 0xFF, code) about read-only mode: 1290 ER_OPTION_PREVENTS_STATEMENT
 * (--read-only), 1836 ER_READ_ONLY_MODE. */
static size_t my_readonly_reply(const uint8_t *p, size_t n)
{
	size_t len;
	unsigned code;

	if (n < 7 || p[4] != 0xFF)
		return 0;
	len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16;
	code = (unsigned)p[5] | (unsigned)p[6] << 8;
	if ((code != 1290 && code != 1836) || n < 4 + len)
		return 0;
	return 4 + len;
}

/* An ERR packet instead of the greeting: 1053 ER_SERVER_SHUTDOWN. */
static size_t my_startup_refusal(const uint8_t *p, size_t n)
{
	size_t len;

	if (n < 7 || p[3] != 0 || p[4] != 0xFF)
		return 0;
	len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16;
	if (((unsigned)p[5] | (unsigned)p[6] << 8) != 1053 || n < 4 + len)
		return 0;
	return 4 + len;
}

/* --- the TLS upgrade (CLIENT_SSL), conducted by repoint (struct proto_upgrade) --- */

/* A greeting, a hello, or a TLS request longer than this is not one. Connection attributes make
 * hellos of a few hundred bytes; servers accept up to 64 KiB of them. */
#define MY_UPGRADE_MAX (64u * 1024u)
/* A TLS request is the hello's first 32 bytes: capabilities, max packet, charset, 23 zero bytes. */
#define MY_TLS_REQUEST_LEN 32u
#define MY_ER_HANDSHAKE 1043u           /* ER_HANDSHAKE_ERROR "Bad handshake", 08S01 */
#define MY_ER_SECURE_TRANSPORT 3159u    /* ER_SECURE_TRANSPORT_REQUIRED, 08004 in MariaDB */

static size_t my_up_packet(const uint8_t *p, size_t n)
{
	if (n < 4)
		return PROTO_MORE;
	size_t len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16;
	return n < 4 + len ? PROTO_MORE : 4 + len;
}

/* Protocol 10 greeting: version byte, NUL-terminated server version, connection id (4), scramble
 * (8), filler, capabilities low 16 bits -- CLIENT_SSL is bit 3 of their second byte. */
static int my_up_greeting(uint8_t *p, size_t n, bool offer)
{
	const uint8_t *nul;
	size_t at;

	if (n < 5 || p[3] != 0 || p[4] != 10)
		return -1;
	nul = memchr(p + 5, 0, n - 5);
	if (nul == NULL)
		return -1;
	at = (size_t)(nul - p) + 15;  /* header (4) + 1 + version + NUL + 4 + 8 + 1 + 1 */
	if (at >= n)
		return -1;
	int offered = (p[at] & (CLIENT_SSL >> 8)) != 0;
	if (offer)
		p[at] |= CLIENT_SSL >> 8;
	else
		p[at] &= (uint8_t)~(CLIENT_SSL >> 8);
	return offered;
}

static uint32_t my_caps(const uint8_t *p)
{
	return (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
}

static int my_up_hello(const uint8_t *p, size_t n)
{
	if (n < 4 + MY_TLS_REQUEST_LEN || !(my_caps(p) & CLIENT_PROTOCOL_41))
		return -1;
	return n == 4 + MY_TLS_REQUEST_LEN && (my_caps(p) & CLIENT_SSL) ? 1 : 0;
}

static uint8_t my_up_hello_seq(const uint8_t *p)
{
	return p[3];
}

static void my_up_hello_set(uint8_t *p, size_t n, bool tls, uint8_t seq)
{
	(void)n;
	if (tls)
		p[5] |= CLIENT_SSL >> 8;
	else
		p[5] &= (uint8_t)~(CLIENT_SSL >> 8);
	p[3] = seq;
}

static void my_up_tls_request(const uint8_t *hello, size_t n, struct evbuffer *out)
{
	uint8_t req[4 + MY_TLS_REQUEST_LEN];

	(void)n;
	memcpy(req, hello, sizeof(req));
	req[0] = MY_TLS_REQUEST_LEN;
	req[1] = req[2] = 0;
	req[3] = 1;
	req[5] |= CLIENT_SSL >> 8;
	evbuffer_add(out, req, sizeof(req));
}

static void my_up_refuse_hello(uint8_t hello_seq, struct evbuffer *out, bool tls_required, const char *msg)
{
	if (tls_required)
		mysql_err_packet(out, (uint8_t)(hello_seq + 1), MY_ER_SECURE_TRANSPORT, "08004", msg);
	else
		mysql_err_packet(out, (uint8_t)(hello_seq + 1), MY_ER_HANDSHAKE, "08S01", msg);
}

/* Sequence ids during authentication: client packets get + shift, server packets - shift. It ends
 * with the server's OK or ERR (first payload byte 0x00 / 0xFF; auth switch 0xFE and more-data
 * 0x01 go on), and on the client's side at a command (sequence id 0: pipelined behind the hello),
 * after which numbers restart at 0 on both sides with every command. */
static bool my_up_relay(struct proto_relay *r, enum proto_dir dir, uint8_t *p, size_t n)
{
	const int d = dir == PROTO_CLIENT_TO_SERVER ? 0 : 1;

	while (n > 0 && !r->done[d]) {
		if (r->hdr[d] < 4) {
			uint8_t h = r->hdr[d]++;
			if (h == 0)
				r->left[d] = 0;
			if (h < 3) {
				r->left[d] |= (uint32_t)*p << (8 * h);
			} else if (d == 0) {
				if (*p == 0) {
					r->done[0] = true;
					break;
				}
				*p = (uint8_t)(*p + r->shift);
			} else {
				*p = (uint8_t)(*p - r->shift);
				r->first = true;
			}
			p++;
			n--;
			if (r->hdr[d] == 4 && r->left[d] == 0)
				r->hdr[d] = 0;
			continue;
		}
		if (d == 1 && r->first) {
			r->first = false;
			r->ending = *p == 0x00 || *p == 0xFF;
		}
		size_t k = r->left[d] < n ? r->left[d] : n;
		r->left[d] -= (uint32_t)k;
		p += k;
		n -= k;
		if (r->left[d] == 0) {
			r->hdr[d] = 0;
			if (d == 1 && r->ending)
				r->done[0] = r->done[1] = true;
		}
	}
	return !(r->done[0] && r->done[1]);
}

static const struct proto_upgrade my_upgrade = {
	.max_packet = MY_UPGRADE_MAX,
	.packet = my_up_packet,
	.greeting = my_up_greeting,
	.hello = my_up_hello,
	.hello_seq = my_up_hello_seq,
	.hello_set = my_up_hello_set,
	.seq_tls = 2,
	.seq_plain = 1,
	.tls_request_from = my_up_tls_request,
	.refuse_hello = my_up_refuse_hello,
	.relay = my_up_relay,
};

/* auth = repoint: a session a fresh, logged-in connection (with its SET/USE and statements replayed)
 * carries on. */
static bool my_can_migrate(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	return my_is_idle(st) && m->owned && m->stateful == MU_MOVABLE && !m->replay_ready && !m->reset_ready &&
	       !m->prepare_ready;
}

/* One query in flight, sent at an idle point, nothing half-sent, nothing left on the server that
 * cannot move: refused read-only, it did not run, and may go to the new writer. */
static bool my_retryable(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	return !m->opaque && m->owned && m->phase == PH_COMMAND && m->q_len == 1 && m->resp == RS_NONE &&
	       m->cmd_at_idle && m->cmd_query && !m->scanning && m->stateful == MU_MOVABLE &&
	       my_dir_quiet(&m->c) &&
	       my_dir_quiet(&m->s);
}

static unsigned my_tx_retryable(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	if (m->opaque || !m->owned || m->phase != PH_COMMAND || m->q_len != 1 || m->resp != RS_NONE ||
	    !m->in_trans || m->cmd_at_idle || !m->tx_plain || m->tx_cmds < 2 || m->tx_cmds == UINT8_MAX || m->scanning ||
	    m->stateful != MU_MOVABLE || m->nstmts != 0 || m->replay_ready || m->reset_ready ||
	    !my_dir_quiet(&m->c) || !my_dir_quiet(&m->s))
		return 0;
	return m->tx_cmds;
}

static unsigned my_tx_idle(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	if (m->opaque || !m->owned || m->phase != PH_COMMAND || m->q_len != 0 || m->resp != RS_NONE || !m->in_trans ||
	    !m->tx_plain || m->tx_cmds == 0 || m->tx_cmds == UINT8_MAX || m->scanning || m->stateful != MU_MOVABLE ||
	    m->nstmts != 0 || m->replay_ready || m->reset_ready || !my_dir_quiet(&m->c) || !my_dir_quiet(&m->s))
		return 0;
	return m->tx_cmds;
}

static bool my_tx_answered(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	return !m->opaque && m->phase == PH_COMMAND && m->q_len == 0 && m->resp == RS_NONE && !m->scanning &&
	       my_dir_quiet(&m->c) && my_dir_quiet(&m->s);
}

/* A command: its packets, up to the first shorter than the largest payload. */
static size_t my_request_len(const uint8_t *p, size_t n)
{
	size_t off = 0;

	for (;;) {
		if (n - off < 4)
			return 0;
		size_t len = (size_t)p[off] | (size_t)p[off + 1] << 8 | (size_t)p[off + 2] << 16;
		if (len > n - off - 4)
			return 0;
		off += 4 + len;
		if (len < MY_MAX_PAYLOAD)
			return off;
	}
}

/* Requests in flight when the server went away: each can be told its outcome is unknown when
 * nothing of its answer came yet, each is answered by one packet (OK or ERR, or a result that an
 * ERR may stand for), no transaction was open and nothing was set that cannot move. */
static bool my_inflight_lost(const struct proto_state *st, uint32_t *owed)
{
	const struct my_state *m = my_c(st);

	if (m->opaque || !m->owned || m->phase != PH_COMMAND || m->stateful != MU_MOVABLE ||
	    m->replay_ready ||
	    m->reset_ready || m->in_trans || m->scanning || m->q_len == 0 || m->resp != RS_NONE ||
	    !my_dir_quiet(&m->c) || !my_dir_quiet(&m->s))
		return false;
	for (unsigned i = 0; i < m->q_len; i++) {
		enum my_kind k = (enum my_kind)((m->queue >> (4 * i)) & 0xF);
		if (k != K_RESULT && k != K_SIMPLE)
			return false;
	}
	*owed = m->q_len;
	return true;
}

/* CR_SERVER_LOST (2013, "Lost connection to MySQL server during query"), SQLSTATE 08S01: the code
 * every MySQL client and pool reads as "the statement may or may not have run" (a server's own
 * error, 1053 for one), would say it did not, and invite a second run). Sequence id 1: the
 * answer's. The connection itself goes on, on the new writer. */
static void my_outcome_unknown(struct evbuffer *out, const char *msg)
{
	mysql_err_packet(out, 1, 2013, "08S01", msg);
}

static const char *my_unmovable_reason(const struct proto_state *st)
{
	const struct my_state *m = my_c(st);

	if (m->opaque)
		return "opaque";
	return m->stateful != MU_MOVABLE && m->stateful < ARRAY_LEN(my_unmovable_names) ? my_unmovable_names[m->stateful]
											 : NULL;
}

/* With repoint's login, the connection id its greeting gave the client. */
static bool my_session_key(const struct proto_state *st, uint8_t *key, size_t *keylen)
{
	const struct my_state *m = my_c(st);

	if (!m->owned || m->opaque)
		return false;
	key[0] = (uint8_t)m->conn_id;
	key[1] = (uint8_t)(m->conn_id >> 8);
	key[2] = (uint8_t)(m->conn_id >> 16);
	key[3] = (uint8_t)(m->conn_id >> 24);
	*keylen = 4;
	return true;
}

static bool kill_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The word w (upper case) at t[*i..n), case-insensitive, followed by a space: skipped. */
static bool kill_word(const uint8_t *t, size_t n, size_t *i, const char *w)
{
	size_t k = strlen(w), j;

	if (n - *i <= k)
		return false;
	for (j = 0; j < k; j++) {
		uint8_t c = t[*i + j];
		if ((c >= 'a' && c <= 'z' ? c - 32 : c) != (uint8_t)w[j])
			return false;
	}
	if (!kill_space(t[*i + k]))
		return false;
	*i += k;
	while (*i < n && kill_space(t[*i]))
		(*i)++;
	return true;
}

/* "KILL [QUERY|CONNECTION] <id>" (spaces around, a final ';'), alone in one COM_QUERY packet. *query
 * (when not NULL): it kills the query only. */
static size_t my_kill_parse(const uint8_t *p, size_t n, uint32_t *id, int *what)
{
	size_t len, i = 0;
	uint64_t v = 0;

	if (n < 5 || p[3] != 0 || p[4] != COM_QUERY || (len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16) != n - 4)
		return 0;
	const uint8_t *t = p + 5;
	size_t tn = n - 5;
	while (i < tn && kill_space(t[i]))
		i++;
	if (!kill_word(t, tn, &i, "KILL"))
		return 0;
	*what = kill_word(t, tn, &i, "QUERY") ? 1 : kill_word(t, tn, &i, "CONNECTION") ? 2 : 0;
	size_t d = i;
	while (i < tn && t[i] >= '0' && t[i] <= '9' && i - d < 11)
		v = v * 10 + (uint64_t)(t[i++] - '0');
	if (i == d || v > UINT32_MAX)
		return 0;
	while (i < tn && kill_space(t[i]))
		i++;
	if (i < tn && t[i] == ';')
		i++;
	while (i < tn && kill_space(t[i]))
		i++;
	if (i != tn)
		return 0;
	*id = (uint32_t)v;
	return n;
}

static size_t my_kill_request(const uint8_t *p, size_t n, uint8_t *key, size_t *keylen)
{
	uint32_t id;
	int what;

	if (my_kill_parse(p, n, &id, &what) != n)
		return 0;
	key[0] = (uint8_t)id;
	key[1] = (uint8_t)(id >> 8);
	key[2] = (uint8_t)(id >> 16);
	key[3] = (uint8_t)(id >> 24);
	*keylen = 4;
	return n;
}

static void my_kill_rewrite(const uint8_t *p, size_t n, const uint8_t *key, size_t keylen, struct evbuffer *out)
{
	static const char *const words[] = {"KILL ", "KILL QUERY ", "KILL CONNECTION "};
	uint32_t id, target;
	int what = 0;
	char text[48];

	if (my_kill_parse(p, n, &id, &what) != n || keylen != 4)
		return;
	target = le32(key);
	int k = snprintf(text, sizeof(text), "%s%u", words[what], target);
	uint8_t h[5] = {(uint8_t)(k + 1), 0, 0, 0, COM_QUERY};
	evbuffer_add(out, h, sizeof(h));
	evbuffer_add(out, text, (size_t)k);
}

static int my_replayable(struct proto_state *st)
{
	struct my_state *m = my(st);
	int r = m->reset_ready ? MY_REPLAY_RESET : m->replay_ready ? MY_REPLAY_PACKET : m->prepare_ready ? MY_REPLAY_PREPARE : 0;

	m->reset_ready = m->replay_ready = m->prepare_ready = false;
	return r;
}

const struct proto_ops proto_mysql = {
	.upgrade = &my_upgrade,
	.login = &mysql_login_ops,
	.can_migrate = my_can_migrate,
	.retryable = my_retryable,
	.tx_retryable = my_tx_retryable,
	.tx_idle = my_tx_idle,
	.tx_answered = my_tx_answered,
	.request_len = my_request_len,
	.unmovable_reason = my_unmovable_reason,
	.replayable = my_replayable,
	.inflight_lost = my_inflight_lost,
	.outcome_unknown = my_outcome_unknown,
	.session_key = my_session_key,
	.kill_request = my_kill_request,
	.kill_rewrite = my_kill_rewrite,
	.name = "mysql",
	.init = my_init,
	.feed = my_feed,
	.is_idle = my_is_idle,
	.at_rest = my_at_rest,
	.is_opaque = my_is_opaque,
	.refuse = my_refuse,
	.readonly_reply = my_readonly_reply,
	.startup_refusal = my_startup_refusal,
};
