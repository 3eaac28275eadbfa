/* proto/resp.c - Redis serialization protocol (RESP2 and RESP3): idle tracking and the native refusal.
 *
 * Client side: a command is either a RESP array of bulk strings ("*<n>\r\n" then n times
 * "$<len>\r\n<bytes>\r\n") or an inline command (a line not starting with '*'). Bulk payloads are
 * skipped by length; only the first three arguments, when short, are looked at (lower-cased into a
 * 16-byte buffer) to recognise the few commands that change how replies are counted.
 *
 * Server side: replies are parsed with one counter instead of a stack: `need` is the number of
 * values still missing to complete the current top-level frame. A scalar consumes one value, an
 * aggregate of n elements consumes one and adds n (2n for maps), an attribute adds 2n without
 * consuming (it decorates the value that follows). The frame is complete when `need` returns to 0.
 * A top-level push ('>') is out-of-band and does not answer a command.
 *
 * Idle <=> no partial frame either way, every command answered, no MULTI open, no WATCH armed
 * (moving a session between WATCH and EXEC would silently drop the optimistic lock).
 *
 * Pub/Sub: after SUBSCRIBE and friends the number of replies per command is no longer one (RESP2
 * confirms each channel separately; UNSUBSCRIBE without arguments answers once per subscription).
 * Our choice: a subscribed session stays "subscribed" for its lifetime; its confirmations and
 * messages are not counted, and it is idle whenever nothing is partial and every command sent
 * before the subscription is answered. Dropping a subscriber between messages loses nothing the
 * at-most-once Pub/Sub contract promised; the client reconnects and resubscribes. Only
 * (P|S)(UN)SUBSCRIBE, PING and QUIT are expected while subscribed; any other command (RESP3 allows
 * mixing, RESET leaves the mode) makes the tracker opaque rather than guess.
 *
 * MONITOR, SYNC/PSYNC and CLIENT REPLY OFF|SKIP break request/reply pairing: opaque.
 */
#include "proto/proto.h"
#include "proto/resp_internal.h"
#include "util.h"

#include <event2/buffer.h>
#include <stdalign.h>
#include <string.h>

/* Redis refuses inline requests over 64 KiB (PROTO_INLINE_MAX_SIZE) and closes the connection. */
#define RESP_MAX_INLINE (64u * 1024)
/* Far beyond any proto-max-bulk-len a server would accept; larger lengths are garbage. */
#define RESP_MAX_BULK (1ull << 40)
#define RESP_MAX_COUNT 0x7FFFFFFFull
/* Values still needed for one frame: generous, and far from overflowing 64 bits. */
#define RESP_MAX_NEED (1ull << 50)
#define RESP_NAME_MAX 16
#define RESP_MAX_ERR_TEXT 8192u

enum resp_cstate {
	RC_START,      /* between commands */
	RC_COUNT,      /* "*<count>" digits */
	RC_COUNT_LF,
	RC_ARG_TYPE,   /* expecting '$' */
	RC_ARG_LEN,
	RC_ARG_LEN_LF,
	RC_ARG_DATA,
	RC_ARG_CR,
	RC_ARG_LF,
	RC_INLINE,
};

enum resp_sstate {
	SS_TYPE,       /* expecting a type byte */
	SS_LINE,       /* simple value: skip to CR */
	SS_LINE_LF,
	SS_NUM,        /* length of a bulk or aggregate */
	SS_NUM_LF,
	SS_BULK,       /* bulk payload */
	SS_BULK_CR,
	SS_BULK_LF,
};

enum resp_kind { KIND_NONE, KIND_REPLY, KIND_PUSH };

enum resp_cmd {
	CMD_OTHER,
	CMD_MULTI,
	CMD_EXEC,
	CMD_DISCARD,
	CMD_WATCH,
	CMD_UNWATCH,
	CMD_RESET,
	CMD_SUBSCRIBE,     /* SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE */
	CMD_UNSUBSCRIBE,   /* UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE */
	CMD_PING,
	CMD_QUIT,
	CMD_MONITOR,
	CMD_SYNC,          /* SYNC, PSYNC: the connection becomes a replication stream */
	CMD_CLIENT,
	CMD_STATEFUL,      /* SELECT, READONLY, READWRITE: connection state */
	CMD_LOGIN,         /* AUTH, HELLO (which may carry AUTH): connection state, the client's own login */
};

/* A decimal number after a type byte: digits, optional leading '-', ended by CR. The flags live
 * apart from the value so that the state stays within its 96 bytes. */
#define NUM_DIGIT 1u
#define NUM_NEG 2u

struct resp_state {
	uint64_t outstanding;  /* commands sent and not yet answered */
	uint64_t s_need;       /* values missing to complete the current server frame (0: between frames) */
	uint64_t s_bulk;       /* server bulk payload bytes left */
	uint64_t c_left;       /* client bulk payload bytes left, or inline line length so far */
	uint64_t s_num, c_num;  /* numbers being parsed, per direction (see NUM_*) */
	uint32_t c_args_left;  /* array elements of the current command still to come */
	uint8_t cap[RESP_NAME_MAX];
	uint8_t cap_len;
	bool cap_over;         /* current argument not captured (too long, or past the third) */
	bool in_word;          /* inline: inside a word */
	uint8_t arg_idx;       /* arguments of the current command seen so far (saturates) */
	uint8_t cmd;           /* enum resp_cmd of the current command */
	bool client_reply;     /* CLIENT REPLY ... */
	bool reply_off;        /* CLIENT REPLY OFF|SKIP */
	uint8_t s_numf, c_numf;  /* NUM_DIGIT | NUM_NEG */
	uint8_t c_state;       /* enum resp_cstate */
	uint8_t s_state;       /* enum resp_sstate */
	uint8_t s_type;        /* type byte of the current length line */
	uint8_t s_kind;        /* enum resp_kind of the current top-level frame */
	bool opaque;
	bool multi;
	bool watch;
	bool subscribed;
	bool stateful;         /* a command set connection state (see CMD_STATEFUL): never migrate */
	bool own_login;        /* the client logged in itself (AUTH, HELLO): repoint does not log in again */
	bool client_state;     /* CLIENT <stateful subcommand> */
	bool frame_end;        /* a top-level server frame just ended (resp_replies_scan stops there) */
};

_Static_assert(sizeof(struct resp_state) <= sizeof(struct proto_state), "resp_state must fit in proto_state");
_Static_assert(alignof(struct resp_state) <= alignof(struct proto_state), "resp_state alignment");

static struct resp_state *rs(struct proto_state *st)
{
	return (struct resp_state *)(void *)st;
}

static const struct resp_state *rs_c(const struct proto_state *st)
{
	return (const struct resp_state *)(const void *)st;
}

static void resp_init(struct proto_state *st)
{
	memset(st, 0, sizeof(*st));
}

enum num_step { NUM_MORE, NUM_DONE, NUM_BAD };

/* One byte of a length line. `max` bounds the magnitude (and keeps val * 10 from overflowing). */
static enum num_step num_byte(uint64_t *val, uint8_t *flags, uint8_t b, uint64_t max)
{
	if (b >= '0' && b <= '9') {
		*val = *val * 10 + (uint64_t)(b - '0');
		*flags |= NUM_DIGIT;
		return *val > max ? NUM_BAD : NUM_MORE;
	}
	if (b == '-' && *flags == 0) {
		*flags = NUM_NEG;
		return NUM_MORE;
	}
	if (b == '\r' && (*flags & NUM_DIGIT))
		return NUM_DONE;
	return NUM_BAD;
}

/* ---- server side ---- */

static void resp_frame_done(struct resp_state *r)
{
	r->frame_end = true;
	if (r->s_kind == KIND_REPLY) {
		if (r->outstanding)
			r->outstanding--;
		else if (!r->subscribed)
			r->opaque = true; /* a reply nobody asked for: we lost count */
	}
	r->s_kind = KIND_NONE;
}

/* A value is complete; it may complete the top-level frame. */
static void resp_value_done(struct resp_state *r)
{
	r->s_state = SS_TYPE;
	if (--r->s_need == 0)
		resp_frame_done(r);
}

static void resp_server_header(struct resp_state *r)
{
	uint64_t val = r->s_num;
	uint8_t t = r->s_type;

	r->s_state = SS_TYPE;
	if (r->s_numf & NUM_NEG) {
		/* Only -1 exists: null bulk string / null array (RESP2). */
		if (val != 1 || !(t == '$' || t == '*'))
			r->opaque = true;
		else
			resp_value_done(r);
		return;
	}
	if (t == '$' || t == '!' || t == '=') {
		r->s_bulk = val;
		r->s_state = val ? SS_BULK : SS_BULK_CR;
		return;
	}
	if (val > RESP_MAX_COUNT) {
		r->opaque = true;
		return;
	}
	uint64_t k = (t == '%' || t == '|') ? 2 * val : val;
	if (r->s_need + k > RESP_MAX_NEED) {
		r->opaque = true;
		return;
	}
	if (t == '|') {
		/* An attribute decorates the next value: its pairs come first, the value still follows. */
		r->s_need += k;
		return;
	}
	r->s_need += k;
	resp_value_done(r);
}

/* Feeds server bytes; with `stop`, returns right after a top-level frame ends. Returns the bytes
 * consumed. */
static size_t resp_feed_server(struct resp_state *r, const uint8_t *p, size_t n, bool stop)
{
	size_t total = n;

	r->frame_end = false;
	while (n && !r->opaque && !(stop && r->frame_end)) {
		uint8_t b;
		switch (r->s_state) {
		case SS_TYPE:
			b = *p++;
			n--;
			if (r->s_need == 0) {
				r->s_need = 1;
				r->s_kind = KIND_NONE;
			}
			/* The first non-attribute type byte at top level says what the frame is. Inside a
			 * top-level attribute `need` is > 1, so its keys and values do not count. */
			if (r->s_kind == KIND_NONE && r->s_need == 1 && b != '|')
				r->s_kind = b == '>' ? KIND_PUSH : KIND_REPLY;
			switch (b) {
			case '+': case '-': case ':': case '_': case ',': case '#': case '(':
				r->s_state = SS_LINE;
				break;
			case '$': case '!': case '=': case '*': case '%': case '~': case '>': case '|':
				r->s_type = b;
				r->s_num = 0;
				r->s_numf = 0;
				r->s_state = SS_NUM;
				break;
			default:
				r->opaque = true;
				break;
			}
			break;
		case SS_LINE: {
			/* Simple values are short; a bare LF inside one is garbage. */
			size_t i = 0;
			while (i < n && p[i] != '\r' && p[i] != '\n')
				i++;
			if (i < n) {
				if (p[i] == '\n')
					r->opaque = true;
				else
					r->s_state = SS_LINE_LF;
				i++;
			}
			p += i;
			n -= i;
			break;
		}
		case SS_LINE_LF:
		case SS_BULK_LF:
			b = *p++;
			n--;
			if (b != '\n')
				r->opaque = true;
			else
				resp_value_done(r);
			break;
		case SS_NUM:
			b = *p++;
			n--;
			switch (num_byte(&r->s_num, &r->s_numf, b, RESP_MAX_BULK)) {
			case NUM_MORE:
				break;
			case NUM_DONE:
				r->s_state = SS_NUM_LF;
				break;
			case NUM_BAD:
				r->opaque = true;
				break;
			}
			break;
		case SS_NUM_LF:
			b = *p++;
			n--;
			if (b != '\n')
				r->opaque = true;
			else
				resp_server_header(r);
			break;
		case SS_BULK: {
			size_t k = n < r->s_bulk ? n : (size_t)r->s_bulk;
			r->s_bulk -= k;
			p += k;
			n -= k;
			if (r->s_bulk == 0)
				r->s_state = SS_BULK_CR;
			break;
		}
		case SS_BULK_CR:
			b = *p++;
			n--;
			if (b != '\r')
				r->opaque = true;
			else
				r->s_state = SS_BULK_LF;
			break;
		default:
			r->opaque = true;
			break;
		}
	}
	return total - n;
}

/* ---- client side ---- */

struct resp_name {
	const char *name;
	uint8_t len;
	enum resp_cmd cmd;
};

/* The length is in the table: this lookup runs once per command on the hot path. */
#define RESP_NAME(s, c) { s, sizeof(s) - 1, c }

static const struct resp_name resp_names[] = {
	RESP_NAME("multi", CMD_MULTI),
	RESP_NAME("exec", CMD_EXEC),
	RESP_NAME("discard", CMD_DISCARD),
	RESP_NAME("watch", CMD_WATCH),
	RESP_NAME("unwatch", CMD_UNWATCH),
	RESP_NAME("reset", CMD_RESET),
	RESP_NAME("subscribe", CMD_SUBSCRIBE),
	RESP_NAME("psubscribe", CMD_SUBSCRIBE),
	RESP_NAME("ssubscribe", CMD_SUBSCRIBE),
	RESP_NAME("unsubscribe", CMD_UNSUBSCRIBE),
	RESP_NAME("punsubscribe", CMD_UNSUBSCRIBE),
	RESP_NAME("sunsubscribe", CMD_UNSUBSCRIBE),
	RESP_NAME("ping", CMD_PING),
	RESP_NAME("quit", CMD_QUIT),
	RESP_NAME("monitor", CMD_MONITOR),
	RESP_NAME("sync", CMD_SYNC),
	RESP_NAME("psync", CMD_SYNC),
	RESP_NAME("client", CMD_CLIENT),
	RESP_NAME("auth", CMD_LOGIN),
	RESP_NAME("hello", CMD_LOGIN),
	RESP_NAME("select", CMD_STATEFUL),
	RESP_NAME("readonly", CMD_STATEFUL),
	RESP_NAME("readwrite", CMD_STATEFUL),
};

/* Which first letters (bit 0 = 'a') and which lengths the names of resp_names have, computed on
 * first use: a name that matches neither is not looked up. */
static uint32_t name_initials, name_lengths;

static bool resp_name_maybe(const uint8_t *cap, size_t len)
{
	if (name_initials == 0) {
		for (size_t i = 0; i < sizeof(resp_names) / sizeof(resp_names[0]); i++) {
			name_initials |= 1u << (resp_names[i].name[0] - 'a');
			name_lengths |= 1u << resp_names[i].len;
		}
	}
	return len > 0 && len < 32 && cap[0] >= 'a' && cap[0] <= 'z' && ((name_initials >> (cap[0] - 'a')) & 1u) &&
	       ((name_lengths >> len) & 1u);
}

/* CLIENT subcommands that leave state in the server's connection. */
static const char *const resp_client_stateful[] = {
	"setname", "tracking", "setinfo", "no-evict", "no-touch", "caching",
};

static bool cap_is(const struct resp_state *r, const char *word)
{
	size_t len = strlen(word);
	return !r->cap_over && r->cap_len == len && memcmp(r->cap, word, len) == 0;
}

static void resp_cmd_begin(struct resp_state *r)
{
	r->arg_idx = 0;
	r->cmd = CMD_OTHER;
	r->client_reply = false;
	r->client_state = false;
	r->reply_off = false;
	r->in_word = false;
}

static void resp_arg_begin(struct resp_state *r, uint64_t len_hint)
{
	r->cap_len = 0;
	/* The name, and CLIENT's subcommand and CLIENT REPLY's mode: nothing else is looked at. */
	r->cap_over = len_hint > RESP_NAME_MAX || r->arg_idx >= 3 || (r->arg_idx == 1 && r->cmd != CMD_CLIENT) ||
		      (r->arg_idx == 2 && !r->client_reply);
}

static void resp_arg_bytes(struct resp_state *r, const uint8_t *p, size_t n)
{
	if (r->cap_over)
		return;
	if (n > (size_t)(RESP_NAME_MAX - r->cap_len)) {
		r->cap_over = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		r->cap[r->cap_len++] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
	}
}

/* An argument is complete: the first names the command, the next two matter for CLIENT REPLY. */
static void resp_arg_end(struct resp_state *r)
{
	/* Most commands (GET, SET, INCR, LPUSH, ...) are not in resp_names: their first letter or
	 * length says so before the table is walked. */
	if (r->arg_idx == 0 && !r->cap_over && resp_name_maybe(r->cap, r->cap_len)) {
		for (size_t i = 0; i < sizeof(resp_names) / sizeof(resp_names[0]); i++) {
			if (!r->cap_over && r->cap_len == resp_names[i].len &&
			    memcmp(r->cap, resp_names[i].name, resp_names[i].len) == 0) {
				r->cmd = (uint8_t)resp_names[i].cmd;
				break;
			}
		}
	} else if (r->arg_idx == 1 && r->cmd == CMD_CLIENT) {
		r->client_reply = cap_is(r, "reply");
		for (size_t i = 0; i < sizeof(resp_client_stateful) / sizeof(resp_client_stateful[0]); i++)
			if (cap_is(r, resp_client_stateful[i]))
				r->client_state = true;
	} else if (r->arg_idx == 2 && r->client_reply) {
		r->reply_off = cap_is(r, "off") || cap_is(r, "skip");
	}
	if (r->arg_idx < UINT8_MAX)
		r->arg_idx++;
}

/* A whole command has been sent: account for its reply and for the session state it changes. */
static void resp_cmd_end(struct resp_state *r)
{
	enum resp_cmd cmd = (enum resp_cmd)r->cmd;

	if (r->reply_off || cmd == CMD_MONITOR || cmd == CMD_SYNC) {
		r->opaque = true;
		return;
	}
	/* After QUIT the server closes: that close is the client's, not one to hide by migrating. */
	if (cmd == CMD_STATEFUL || cmd == CMD_LOGIN || r->client_state || cmd == CMD_QUIT)
		r->stateful = true;
	if (cmd == CMD_LOGIN)
		r->own_login = true;
	if (r->subscribed) {
		if (cmd == CMD_SUBSCRIBE || cmd == CMD_UNSUBSCRIBE || cmd == CMD_PING || cmd == CMD_QUIT)
			return;
		r->opaque = true;
		return;
	}
	switch (cmd) {
	case CMD_SUBSCRIBE:
	case CMD_UNSUBSCRIBE:
		if (r->multi) {
			/* Queued inside MULTI: its confirmations would arrive inside EXEC's reply. */
			r->opaque = true;
			return;
		}
		/* Confirmations are counted per channel, not per command: stop counting. */
		r->subscribed = true;
		return;
	case CMD_MULTI:
		r->multi = true;
		break;
	case CMD_EXEC:
	case CMD_DISCARD:
	case CMD_RESET:
		r->multi = false;
		r->watch = false;
		break;
	case CMD_WATCH:
		/* WATCH inside MULTI is refused by the server. */
		if (!r->multi)
			r->watch = true;
		break;
	case CMD_UNWATCH:
		if (!r->multi)
			r->watch = false;
		break;
	default:
		break;
	}
	if (r->outstanding >= RESP_MAX_NEED) {
		r->opaque = true;
		return;
	}
	r->outstanding++;
}

static bool resp_inline_space(uint8_t b)
{
	/* What the server's argument splitter treats as white space. */
	return b == ' ' || b == '\t' || b == '\r' || b == '\v' || b == '\f';
}

/* An argument's end bytes are in: the next argument, or the command is whole. */
static void resp_arg_done(struct resp_state *r)
{
	resp_arg_end(r);
	if (--r->c_args_left == 0) {
		resp_cmd_end(r);
		r->c_state = RC_START;
	} else {
		r->c_state = RC_ARG_TYPE;
	}
}

static void resp_feed_client(struct resp_state *r, const uint8_t *p, size_t n)
{
	while (n && !r->opaque) {
		uint8_t b;
		switch (r->c_state) {
		case RC_START:
			resp_cmd_begin(r);
			if (*p == '*') {
				p++;
				n--;
				r->c_num = 0;
				r->c_numf = 0;
				r->c_state = RC_COUNT;
			} else {
				/* Inline command: the byte is part of the line. */
				r->c_left = 0;
				r->c_state = RC_INLINE;
			}
			break;
		case RC_COUNT:
		case RC_ARG_LEN:
			b = *p++;
			n--;
			switch (num_byte(&r->c_num, &r->c_numf, b, r->c_state == RC_COUNT ? RESP_MAX_COUNT : RESP_MAX_BULK)) {
			case NUM_MORE:
				break;
			case NUM_DONE:
				r->c_state = r->c_state == RC_COUNT ? RC_COUNT_LF : RC_ARG_LEN_LF;
				break;
			case NUM_BAD:
				r->opaque = true;
				break;
			}
			break;
		case RC_COUNT_LF:
			b = *p++;
			n--;
			if (b != '\n') {
				r->opaque = true;
				break;
			}
			if ((r->c_numf & NUM_NEG) || r->c_num == 0) {
				/* "*0" / "*-1": the server executes nothing and answers nothing. */
				r->c_state = RC_START;
				break;
			}
			r->c_args_left = (uint32_t)r->c_num;
			r->c_state = RC_ARG_TYPE;
			break;
		case RC_ARG_TYPE:
			b = *p++;
			n--;
			/* The server accepts only bulk strings inside a request array. */
			if (b != '$') {
				r->opaque = true;
				break;
			}
			r->c_num = 0;
			r->c_numf = 0;
			r->c_state = RC_ARG_LEN;
			break;
		case RC_ARG_LEN_LF:
			b = *p++;
			n--;
			if (b != '\n' || (r->c_numf & NUM_NEG)) {
				r->opaque = true;
				break;
			}
			r->c_left = r->c_num;
			resp_arg_begin(r, r->c_left);
			r->c_state = r->c_left ? RC_ARG_DATA : RC_ARG_CR;
			break;
		case RC_ARG_DATA: {
			size_t k = n < r->c_left ? n : (size_t)r->c_left;
			resp_arg_bytes(r, p, k);
			r->c_left -= k;
			p += k;
			n -= k;
			if (r->c_left == 0)
				r->c_state = RC_ARG_CR;
			break;
		}
		case RC_ARG_CR:
			b = *p++;
			n--;
			if (b != '\r')
				r->opaque = true;
			else
				r->c_state = RC_ARG_LF;
			break;
		case RC_ARG_LF:
			b = *p++;
			n--;
			if (b != '\n') {
				r->opaque = true;
				break;
			}
			resp_arg_done(r);
			break;
		case RC_INLINE:
			if (r->arg_idx >= 3 && !r->in_word) {
				/* Nothing more to look at on this line: jump to its end. */
				const uint8_t *lf = memchr(p, '\n', n);
				size_t k = lf ? (size_t)(lf - p) + 1 : n;
				r->c_left += k;
				p += k;
				n -= k;
				if (r->c_left > RESP_MAX_INLINE) {
					r->opaque = true;
				} else if (lf) {
					resp_cmd_end(r);
					r->c_state = RC_START;
				}
				break;
			}
			b = *p++;
			n--;
			if (++r->c_left > RESP_MAX_INLINE) {
				r->opaque = true;
				break;
			}
			if (b == '\n' || resp_inline_space(b)) {
				if (r->in_word) {
					r->in_word = false;
					resp_arg_end(r);
				}
				if (b == '\n') {
					/* An empty line is not a command and gets no reply. */
					if (r->arg_idx > 0)
						resp_cmd_end(r);
					r->c_state = RC_START;
				}
				break;
			}
			if (!r->in_word) {
				r->in_word = true;
				resp_arg_begin(r, 0);
			}
			if ((b == '"' || b == '\'') && (r->arg_idx == 0 || r->cmd == CMD_CLIENT)) {
				/* Quoting could hide the command name: do not guess. */
				r->opaque = true;
				break;
			}
			resp_arg_bytes(r, &b, 1);
			break;
		default:
			r->opaque = true;
			break;
		}
	}
}

/* The length of a complete simple value or bulk string at the start of p[0..n) (a top-level
 * frame), else 0 -- also for what is merely incomplete or malformed: the state machine decides. */
static size_t resp_simple_frame(const uint8_t *p, size_t n)
{
	const uint8_t *lf;
	size_t k;

	if (n < 3)
		return 0;
	switch (p[0]) {
	case '+': case '-': case ':':
		lf = memchr(p + 1, '\n', n - 1);
		if (lf == NULL)
			return 0;
		k = (size_t)(lf - p) + 1;
		/* One CR, right before the LF; no bare CR or LF inside a simple value. */
		if (p[k - 2] != '\r' || memchr(p + 1, '\r', k - 3) != NULL)
			return 0;
		return k;
	case '$': {
		uint64_t len;
		size_t at = 1;
		if (p[1] == '-')  /* the null bulk string, "$-1" */
			return n >= 5 && p[2] == '1' && p[3] == '\r' && p[4] == '\n' ? 5 : 0;
		if (resp_length_line(p, n, &at, RESP_MAX_BULK, &len) <= 0 || len + 2 > n - at)
			return 0;
		k = at + (size_t)len + 2;
		return p[k - 2] == '\r' && p[k - 1] == '\n' ? k : 0;
	}
	default:
		return 0;
	}
}

/* A whole command at the start of p[0..n) (a request array), taken in one step: what the byte
 * machine below would conclude, at a fraction of the cost. Returns its length, or 0 when it is
 * incomplete, malformed or empty (the byte machine decides then). */
static size_t resp_client_fast(struct resp_state *r, const uint8_t *p, size_t n)
{
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, RESP_MAX_BULK, RESP_MAX_COUNT, &rq, &len) != 1)
		return 0;
	resp_cmd_begin(r);
	for (unsigned i = 0; i < rq.seen; i++) {
		resp_arg_begin(r, rq.arg_len[i]);
		resp_arg_bytes(r, rq.arg[i], rq.arg_len[i]);
		resp_arg_end(r);
	}
	r->arg_idx = rq.nargs < UINT8_MAX ? (uint8_t)rq.nargs : UINT8_MAX;
	resp_cmd_end(r);
	return len;
}

static void resp_feed(struct proto_state *st, enum proto_dir dir, const uint8_t *p, size_t n)
{
	struct resp_state *r = rs(st);

	if (r->opaque)
		return;
	if (dir == PROTO_CLIENT_TO_SERVER) {
		size_t k;
		while (n > 0 && r->c_state == RC_START && !r->opaque && (k = resp_client_fast(r, p, n)) > 0) {
			p += k;
			n -= k;
		}
		resp_feed_client(r, p, n);
	} else {
		size_t k;
		while (n > 0 && r->s_state == SS_TYPE && r->s_need == 0 && !r->opaque &&
		       (k = resp_simple_frame(p, n)) > 0) {
			r->s_kind = KIND_REPLY;
			resp_frame_done(r);
			p += k;
			n -= k;
		}
		resp_feed_server(r, p, n, false);
	}
}

void resp_replies_init(struct proto_state *st)
{
	resp_init(st);
}

size_t resp_replies_scan(struct proto_state *st, const uint8_t *p, size_t n, uint64_t want, uint64_t *got)
{
	struct resp_state *r = rs(st);
	size_t used = 0;

	*got = 0;
	while (*got < want && used < n && !r->opaque) {
		/* Between frames, a whole simple reply ("+OK", "-ERR ...", ":1") or a bulk string with a
		 * short length is taken in one step; anything else goes through the state machine. */
		if (r->s_state == SS_TYPE && r->s_need == 0) {
			size_t k = resp_simple_frame(p + used, n - used);
			if (k > 0) {
				used += k;
				(*got)++;
				continue;
			}
		}
		/* Every frame is a reply the stream owes: count them as they end. */
		r->outstanding = 1;
		used += resp_feed_server(r, p + used, n - used, true);
		if (r->frame_end && r->outstanding == 0)
			(*got)++;
	}
	return r->opaque ? (size_t)-1 : used;
}

/* Inside a bulk string the tracker only counts: a reply's payload and the two bytes that end it, a
 * request's past the bytes it looks at (an argument it captures is never skipped). The end bytes
 * are counted rather than checked -- as Redis and hiredis themselves frame a bulk string (by its
 * length), so both ends read the same frames the tracker counts. */
static uint64_t resp_payload(const struct proto_state *st, enum proto_dir dir)
{
	const struct resp_state *r = rs_c(st);

	if (r->opaque)
		return 0;
	if (dir == PROTO_CLIENT_TO_SERVER)
		return r->c_state == RC_ARG_DATA && r->cap_over ? r->c_left + 2 : 0;
	return r->s_state == SS_BULK ? r->s_bulk + 2 : 0;
}

static void resp_skip(struct proto_state *st, enum proto_dir dir, uint64_t n)
{
	struct resp_state *r = rs(st);
	bool client = dir == PROTO_CLIENT_TO_SERVER;
	uint64_t *left = client ? &r->c_left : &r->s_bulk;

	if (n > resp_payload(st, dir)) {
		r->opaque = true;  /* a caller's bug: say so rather than count wrong */
		return;
	}
	r->frame_end = false;
	if (n < *left) {
		*left -= n;
		return;
	}
	n -= *left;
	*left = 0;
	if (client) {
		r->c_state = n == 0 ? RC_ARG_CR : RC_ARG_LF;
		if (n == 2)
			resp_arg_done(r);
	} else {
		r->s_state = n == 0 ? SS_BULK_CR : SS_BULK_LF;
		if (n == 2)
			resp_value_done(r);
	}
}

static bool resp_is_idle(const struct proto_state *st)
{
	const struct resp_state *r = rs_c(st);

	return !r->opaque && r->c_state == RC_START && r->s_state == SS_TYPE && r->s_need == 0 &&
	       r->outstanding == 0 && !r->multi && !r->watch;
}

static bool resp_can_migrate(const struct proto_state *st)
{
	const struct resp_state *r = rs_c(st);

	return resp_is_idle(st) && !r->stateful && !r->subscribed;
}

static const char *resp_unmovable_reason(const struct proto_state *st)
{
	const struct resp_state *r = rs_c(st);

	if (r->opaque)
		return "opaque";
	if (r->subscribed)
		return "subscribed";
	if (r->own_login)
		return "client_login";
	if (r->stateful)
		return "connection_state";
	return NULL;
}

/* Nothing in flight, not subscribed (a subscribed RESP2 connection takes no AUTH), and the login
 * is repoint's: AUTH may go in now, its reply the next one. */
static bool resp_can_relogin(const struct proto_state *st)
{
	const struct resp_state *r = rs_c(st);

	return resp_is_idle(st) && !r->subscribed && !r->own_login;
}

/* AUTH [user] password, as a RESP array. */
static bool resp_login_command(struct evbuffer *out, const char *user, const char *password)
{
	bool named = user != NULL && user[0] != '\0';
	size_t pl = strlen(password), ul = named ? strlen(user) : 0;

	if (evbuffer_add_printf(out, "*%d\r\n$4\r\nAUTH\r\n", named ? 3 : 2) < 0)
		return false;
	if (named && evbuffer_add_printf(out, "$%zu\r\n%s\r\n", ul, user) < 0)
		return false;
	return evbuffer_add_printf(out, "$%zu\r\n", pl) >= 0 && evbuffer_add(out, password, pl) == 0 &&
	       evbuffer_add(out, "\r\n", 2) == 0;
}

static bool resp_retryable(const struct proto_state *st)
{
	const struct resp_state *r = rs_c(st);

	return !r->opaque && r->c_state == RC_START && r->s_state == SS_TYPE && r->s_need == 0 &&
	       r->outstanding == 1 && !r->multi && !r->watch && !r->stateful && !r->subscribed;
}

/* The length of the one-line error at the start of p[0..n) that starts with `prefix`, else 0. */
static size_t error_line(const uint8_t *p, size_t n, const char *prefix)
{
	size_t from = strlen(prefix);

	if (n < from + 2 || memcmp(p, prefix, from) != 0)
		return 0;
	for (size_t i = from; i + 1 < n; i++) {
		if (p[i] == '\r')
			return p[i + 1] == '\n' ? i + 2 : 0;
		if (p[i] == '\n')
			return 0;
	}
	return 0;
}

/* A Redis Cluster node that is no longer its slot's primary answers MOVED (a demoted primary says
 * so for every command, reads too): the command did not run there. */
static size_t resp_readonly_reply(const uint8_t *p, size_t n)
{
	size_t k = error_line(p, n, "-READONLY");

	return k != 0 ? k : error_line(p, n, "-MOVED ");
}

/* Redis Cluster refusing a command before running it, for a moment: the node's view of the
 * cluster is not ok (a failover under way), or the command's slot is being migrated. */
static size_t resp_later_reply(const uint8_t *p, size_t n)
{
	size_t k = error_line(p, n, "-CLUSTERDOWN ");

	if (k == 0)
		k = error_line(p, n, "-TRYAGAIN ");
	/* ASK: the key's slot is being migrated and the key has left already: once the migration
	 * ends, the node says MOVED, and the command follows the slot to its new shard. */
	return k != 0 ? k : error_line(p, n, "-ASK ");
}

static bool resp_is_opaque(const struct proto_state *st)
{
	return rs_c(st)->opaque;
}

/* Append s[0..n) with CR and LF turned into spaces: a simple error is one line. */
static void add_one_line(struct evbuffer *out, const char *s, size_t n)
{
	char buf[256];
	size_t used = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		buf[used++] = (c == '\r' || c == '\n') ? ' ' : c;
		if (used == sizeof(buf)) {
			evbuffer_add(out, buf, used);
			used = 0;
		}
	}
	if (used)
		evbuffer_add(out, buf, used);
}

void resp_error(struct evbuffer *out, const char *prefix, const char *msg)
{
	if (!msg)
		msg = "";
	evbuffer_add(out, "-", 1);
	if (prefix && *prefix) {
		add_one_line(out, prefix, strlen(prefix));
		evbuffer_add(out, " ", 1);
	}
	add_one_line(out, msg, utf8_prefix_len(msg, RESP_MAX_ERR_TEXT));
	evbuffer_add(out, "\r\n", 2);
}

static enum proto_refuse_step resp_refuse(struct evbuffer *client_in, struct evbuffer *out, const char *msg)
{
	(void)client_in;
	/* One error reply. The client may have pipelined several commands; it sees the first answered
	 * with the error and then the connection closing, which is how a failing server looks too. */
	resp_error(out, "ERR", msg);
	return PROTO_REFUSE_DONE;
}

const struct proto_ops proto_redis = {
	.name = "redis",
	.init = resp_init,
	.feed = resp_feed,
	.is_idle = resp_is_idle,
	.is_opaque = resp_is_opaque,
	.payload = resp_payload,
	.skip = resp_skip,
	.refuse = resp_refuse,
	.can_migrate = resp_can_migrate,
	.retryable = resp_retryable,
	.readonly_reply = resp_readonly_reply,
	.later_reply = resp_later_reply,
	.can_relogin = resp_can_relogin,
	.unmovable_reason = resp_unmovable_reason,
	.login_command = resp_login_command,
};
