/* test_proto.c - the wire-protocol trackers and native errors, fed realistic byte streams.
 *
 * Each script is a conversation written out as the bytes on the wire (one step = what one side
 * sends in one go) with the expected verdict after the step: NI (not idle), ID (idle) or OP
 * (opaque). Every script runs whole, one byte at a time, and in random chunk sizes; in the
 * byte-at-a-time and random modes a session must never look idle in the middle of a step (a
 * partial message), except in steps marked non-atomic (several complete frames that may each
 * leave the session idle). Hostile input must end opaque; random garbage and mutated scripts must
 * never crash (run under ASan/UBSan too), and an opaque tracker is never idle and never recovers. */
#include "auth/auth.h"
#include "config.h"
#include "proto/proto.h"
#include "net/txlog.h"

#include <check.h>
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum expect { NI, ID, OP };

struct step {
	enum proto_dir dir;
	const char *bytes;
	size_t len;
	enum expect expect;
	bool nonatomic;
};

#define C(lit, e) { PROTO_CLIENT_TO_SERVER, lit, sizeof(lit) - 1, e, false }
#define S(lit, e) { PROTO_SERVER_TO_CLIENT, lit, sizeof(lit) - 1, e, false }
#define CN(lit, e) { PROTO_CLIENT_TO_SERVER, lit, sizeof(lit) - 1, e, true }
#define SN(lit, e) { PROTO_SERVER_TO_CLIENT, lit, sizeof(lit) - 1, e, true }
#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

enum feed_mode { FEED_WHOLE, FEED_BYTES, FEED_RANDOM };

static const char *const mode_name[] = { "whole", "bytes", "random" };

/* Deterministic xorshift32: failures must be reproducible. */
static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
	uint32_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return rng_state = x;
}

static size_t chunk_len(enum feed_mode mode, size_t left)
{
	switch (mode) {
	case FEED_WHOLE:
		return left;
	case FEED_BYTES:
		return 1;
	case FEED_RANDOM:
	default: {
		/* Mostly small chunks, sometimes big ones. */
		size_t max = (rng() & 7) == 0 ? left : 17;
		size_t k = 1 + rng() % max;
		return k < left ? k : left;
	}
	}
}

static void check_verdict(const struct proto_ops *ops, const struct proto_state *st, enum expect e,
			  const char *script, size_t step, enum feed_mode mode)
{
	bool idle = ops->is_idle(st), opaque = ops->is_opaque(st);

	switch (e) {
	case ID:
		ck_assert_msg(idle && !opaque, "%s step %zu (%s): expected idle, got idle=%d opaque=%d", script, step,
			      mode_name[mode], idle, opaque);
		break;
	case NI:
		ck_assert_msg(!idle && !opaque, "%s step %zu (%s): expected not idle, got idle=%d opaque=%d", script,
			      step, mode_name[mode], idle, opaque);
		break;
	case OP:
		ck_assert_msg(!idle && opaque, "%s step %zu (%s): expected opaque, got idle=%d opaque=%d", script, step,
			      mode_name[mode], idle, opaque);
		break;
	}
}

/* Feed the first `n` steps of a script into `st` in the given mode, checking every verdict. */
static void feed_steps(const struct proto_ops *ops, struct proto_state *st, const char *script,
		       const struct step *steps, size_t n, enum feed_mode mode)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = (const uint8_t *)steps[i].bytes;
		size_t len = steps[i].len, off = 0;
		while (off < len) {
			size_t k = chunk_len(mode, len - off);
			ops->feed(st, steps[i].dir, p + off, k);
			off += k;
			if (off < len && steps[i].expect != OP) {
				ck_assert_msg(!ops->is_opaque(st), "%s step %zu (%s): opaque at offset %zu", script, i,
					      mode_name[mode], off);
				ck_assert_msg(steps[i].nonatomic || !ops->is_idle(st),
					      "%s step %zu (%s): idle in the middle of a message (offset %zu of %zu)",
					      script, i, mode_name[mode], off, len);
			}
		}
		check_verdict(ops, st, steps[i].expect, script, i, mode);
	}
}

static void run_script(const struct proto_ops *ops, const char *script, const struct step *steps, size_t n)
{
	struct proto_state st;

	for (int mode = FEED_WHOLE; mode <= FEED_RANDOM; mode++) {
		int rounds = mode == FEED_RANDOM ? 20 : 1;
		for (int r = 0; r < rounds; r++) {
			ops->init(&st);
			feed_steps(ops, &st, script, steps, n, (enum feed_mode)mode);
		}
	}
}

#define RUN(ops, script) run_script(&(ops), #script, script, NSTEPS(script))

/* Contents of an evbuffer, for byte-exact comparisons. */
static void expect_bytes(struct evbuffer *b, const char *want, size_t want_len, const char *what)
{
	size_t len = evbuffer_get_length(b);
	const unsigned char *got = evbuffer_pullup(b, -1);

	ck_assert_msg(len == want_len, "%s: length %zu, want %zu", what, len, want_len);
	for (size_t i = 0; i < len; i++)
		ck_assert_msg(got[i] == (unsigned char)want[i], "%s: byte %zu is 0x%02x, want 0x%02x", what, i, got[i],
			      (unsigned char)want[i]);
}

#define EXPECT_BYTES(b, lit, what) expect_bytes((b), (lit), sizeof(lit) - 1, (what))

/* ==== PostgreSQL ==== */

/* psql: SSLRequest refused, MD5 auth, a query, an explicit transaction, asynchronous messages */
static const struct step pg_psql[] = {
	/* SSLRequest */
	C("\x00\x00\x00\x08\x04\xd2\x16/", NI),
	/* server declines TLS: 'N' */
	S("N", NI),
	/* StartupMessage user=alice database=app application_name=psql */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00", NI),
	/* AuthenticationMD5Password */
	S("R\x00\x00\x00\x0c\x00\x00\x00\x05\x9a\x1c~\x03", NI),
	/* PasswordMessage */
	C("p\x00\x00\x00(md50123456789abcdef0123456789abcdef\x00", NI),
	/* AuthenticationOk, ParameterStatus x3, BackendKeyData, ReadyForQuery I */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x18server_version\x00" "16.2\x00S\x00\x00\x00\x19" "client_encoding\x00UTF8\x00S\x00\x00\x00\x17" "DateStyle\x00ISO, MDY\x00K\x00\x00\x00\x0c\x00\x00\x10\x92^\xed\xf0\rZ\x00\x00\x00\x05I", ID),
	/* Query 'SELECT id, name FROM t;' */
	C("Q\x00\x00\x00\x1cSELECT id, name FROM t;\x00", NI),
	/* RowDescription, DataRow x2 */
	S("T\x00\x00\x00" "2\x00\x02id\x00\x00\x00@\x00\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00name\x00\x00\x00@\x00\x00\x01\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00" "D\x00\x00\x00\x14\x00\x02\x00\x00\x00\x01" "1\x00\x00\x00\x05" "aliceD\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x01" "2\xff\xff\xff\xff", NI),
	/* CommandComplete 'SELECT 2', ReadyForQuery I */
	S("C\x00\x00\x00\rSELECT 2\x00Z\x00\x00\x00\x05I", ID),
	/* Query 'BEGIN;' */
	C("Q\x00\x00\x00\x0b" "BEGIN;\x00", NI),
	/* CommandComplete 'BEGIN', ReadyForQuery T */
	S("C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T", NI),
	/* Query 'INSERT INTO t VALUES (3, ''carol'');' */
	C("Q\x00\x00\x00'INSERT INTO t VALUES (3, 'carol');\x00", NI),
	/* CommandComplete 'INSERT 0 1', ReadyForQuery T */
	S("C\x00\x00\x00\x0fINSERT 0 1\x00Z\x00\x00\x00\x05T", NI),
	/* Query 'COMMIT;' */
	C("Q\x00\x00\x00\x0c" "COMMIT;\x00", NI),
	/* CommandComplete 'COMMIT', ReadyForQuery I */
	S("C\x00\x00\x00\x0b" "COMMIT\x00Z\x00\x00\x00\x05I", ID),
	/* asynchronous NotificationResponse (LISTEN) */
	S("A\x00\x00\x00\x10\x00\x00\x10\x93jobs\x00" "42\x00", ID),
	/* asynchronous NoticeResponse */
	S("N\x00\x00\x00" "0SWARNING\x00VWARNING\x00" "C01000\x00Mdisk almost full\x00\x00", ID),
	/* asynchronous ParameterStatus */
	S("S\x00\x00\x00\x11TimeZone\x00UTC\x00", ID),
	/* Terminate */
	C("X\x00\x00\x00\x04", NI),
};

/* a failed transaction (status E) is not idle until ROLLBACK */
static const struct step pg_failed_txn[] = {
	/* StartupMessage */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00", NI),
	/* AuthenticationOk, BackendKeyData, ReadyForQuery I */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00K\x00\x00\x00\x0c\x00\x00\x10\x92^\xed\xf0\rZ\x00\x00\x00\x05I", ID),
	/* Query 'BEGIN;' */
	C("Q\x00\x00\x00\x0b" "BEGIN;\x00", NI),
	/* BEGIN, ReadyForQuery T */
	S("C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T", NI),
	/* Query 'SELECT 1/0;' */
	C("Q\x00\x00\x00\x10SELECT 1/0;\x00", NI),
	/* ErrorResponse division_by_zero, ReadyForQuery E */
	S("E\x00\x00\x00,SERROR\x00VERROR\x00" "C22012\x00Mdivision by zero\x00\x00Z\x00\x00\x00\x05" "E", NI),
	/* Query 'ROLLBACK;' */
	C("Q\x00\x00\x00\x0eROLLBACK;\x00", NI),
	/* ROLLBACK, ReadyForQuery I */
	S("C\x00\x00\x00\rROLLBACK\x00Z\x00\x00\x00\x05I", ID),
};

/* extended query protocol, Flush without Sync, pipelining */
static const struct step pg_extended[] = {
	/* StartupMessage */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00", NI),
	/* AuthenticationOk, ReadyForQuery I */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
	/* Parse, Bind, Describe portal, Execute, Sync */
	C("P\x00\x00\x00(\x00SELECT name FROM t WHERE id = $1\x00\x00\x00" "B\x00\x00\x00\x11\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01" "1\x00\x00" "D\x00\x00\x00\x06P\x00" "E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04", NI),
	/* ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete */
	S("1\x00\x00\x00\x04" "2\x00\x00\x00\x04T\x00\x00\x00\x1d\x00\x01name\x00\x00\x00@\x00\x00\x01\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00" "D\x00\x00\x00\x0f\x00\x01\x00\x00\x00\x05" "aliceC\x00\x00\x00\rSELECT 1\x00", NI),
	/* ReadyForQuery I */
	S("Z\x00\x00\x00\x05I", ID),
	/* Parse, Bind, Execute, Flush (no Sync yet) */
	C("P\x00\x00\x00\x12s1\x00SELECT 1\x00\x00\x00" "B\x00\x00\x00\x13\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00" "E\x00\x00\x00\x09\x00\x00\x00\x00\x00H\x00\x00\x00\x04", NI),
	/* ParseComplete, BindComplete, DataRow, CommandComplete */
	S("1\x00\x00\x00\x04" "2\x00\x00\x00\x04" "D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" "1C\x00\x00\x00\rSELECT 1\x00", NI),
	/* Sync */
	C("S\x00\x00\x00\x04", NI),
	/* ReadyForQuery I */
	S("Z\x00\x00\x00\x05I", ID),
	/* two pipelined simple queries */
	C("Q\x00\x00\x00\x0eSELECT 1;\x00Q\x00\x00\x00\x0eSELECT 2;\x00", NI),
	/* first result and ReadyForQuery I: the second query is still in flight */
	S("T\x00\x00\x00!\x00\x01?column?\x00\x00\x00@\x00\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00" "D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" "1C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I", NI),
	/* second result and ReadyForQuery I */
	S("T\x00\x00\x00!\x00\x01?column?\x00\x00\x00@\x00\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00" "D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" "2C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I", ID),
	/* Query then Parse without Sync */
	C("Q\x00\x00\x00\x0eSELECT 3;\x00P\x00\x00\x00\x10\x00SELECT 4\x00\x00\x00", NI),
	/* result of the Query, ReadyForQuery I: the Parse is not answered yet */
	S("D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" "3C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I", NI),
	/* Sync */
	C("S\x00\x00\x00\x04", NI),
	/* ParseComplete, ReadyForQuery I */
	S("1\x00\x00\x00\x04Z\x00\x00\x00\x05I", ID),
};

/* COPY FROM STDIN (simple and extended) and COPY TO STDOUT */
static const struct step pg_copy[] = {
	/* StartupMessage */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00", NI),
	/* AuthenticationOk, ReadyForQuery I */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
	/* Query 'COPY t FROM STDIN' */
	C("Q\x00\x00\x00\x16" "COPY t FROM STDIN\x00", NI),
	/* CopyInResponse */
	S("G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00", NI),
	/* CopyData x2, CopyDone */
	C("d\x00\x00\x00\x0c" "1\x09" "alice\nd\x00\x00\x00\n2\x09" "bob\nc\x00\x00\x00\x04", NI),
	/* CommandComplete 'COPY 2', ReadyForQuery I */
	S("C\x00\x00\x00\x0b" "COPY 2\x00Z\x00\x00\x00\x05I", ID),
	/* extended COPY as libpq sends it: Parse, Bind, Describe, Execute, Sync */
	C("P\x00\x00\x00\x19\x00" "COPY t FROM STDIN\x00\x00\x00" "B\x00\x00\x00\x11\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00" "D\x00\x00\x00\x06P\x00" "E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04", NI),
	/* ParseComplete, BindComplete, NoData, CopyInResponse */
	S("1\x00\x00\x00\x04" "2\x00\x00\x00\x04n\x00\x00\x00\x04G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00", NI),
	/* CopyData, CopyDone, and the second Sync (the first was ignored in copy mode) */
	C("d\x00\x00\x00\x0c" "3\x09" "carol\nc\x00\x00\x00\x04S\x00\x00\x00\x04", NI),
	/* CommandComplete 'COPY 1', ReadyForQuery I */
	S("C\x00\x00\x00\x0b" "COPY 1\x00Z\x00\x00\x00\x05I", ID),
	/* Query 'COPY t TO STDOUT' */
	C("Q\x00\x00\x00\x15" "COPY t TO STDOUT\x00", NI),
	/* CopyOutResponse, CopyData, CopyDone */
	S("H\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00" "d\x00\x00\x00\x0c" "1\x09" "alice\nc\x00\x00\x00\x04", NI),
	/* CommandComplete 'COPY 1', ReadyForQuery I */
	S("C\x00\x00\x00\x0b" "COPY 1\x00Z\x00\x00\x00\x05I", ID),
};

/* GSSENCRequest and SSLRequest both declined, then a clear-text session */
static const struct step pg_gss_then_ssl[] = {
	/* GSSENCRequest */
	C("\x00\x00\x00\x08\x04\xd2\x16" "0", NI),
	/* 'N' */
	S("N", NI),
	/* SSLRequest */
	C("\x00\x00\x00\x08\x04\xd2\x16/", NI),
	/* 'N' */
	S("N", NI),
	/* StartupMessage */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00", NI),
	/* AuthenticationOk, ReadyForQuery I */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
};

/* a client that pipelines its first query behind the StartupMessage */
static const struct step pg_pipelined_startup[] = {
	/* StartupMessage and a Query in one write */
	C("\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00" "application_name\x00psql\x00\x00Q\x00\x00\x00\x0eSELECT 1;\x00", NI),
	/* AuthenticationOk, ReadyForQuery I: the query is still in flight */
	S("R\x00\x00\x00\x08\x00\x00\x00\x00K\x00\x00\x00\x0c\x00\x00\x10\x92^\xed\xf0\rZ\x00\x00\x00\x05I", NI),
	/* the result, ReadyForQuery I */
	S("D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" "1C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I", ID),
};

/* SSLRequest accepted: opaque */
static const struct step pg_tls[] = {
	/* SSLRequest */
	C("\x00\x00\x00\x08\x04\xd2\x16/", NI),
	/* 'S': TLS follows */
	S("S", OP),
	/* TLS ServerHello (not ours to read) */
	S("\x16\x03\x03\x00z\x02\x00\x00v\x03\x03", OP),
};

/* GSSENCRequest accepted: opaque */
static const struct step pg_gssenc[] = {
	/* GSSENCRequest */
	C("\x00\x00\x00\x08\x04\xd2\x16" "0", NI),
	/* 'G': GSSAPI encryption follows */
	S("G", OP),
};

/* a CancelRequest connection is never idle */
static const struct step pg_cancel[] = {
	/* CancelRequest pid 4242 */
	C("\x00\x00\x00\x10\x04\xd2\x16.\x00\x00\x10\x92^\xed\xf0\r", NI),
};

/* Hostile or foreign input. Each ends opaque and never crashes. */
static const struct step pg_bad_startup_len[] = {
	C("\x00\x00\x00\x04\x00\x03\x00\x00", OP),
};
static const struct step pg_huge_startup_len[] = {
	C("\x7f\xff\xff\xff\x00\x03\x00\x00", OP),
};
static const struct step pg_http[] = {
	C("GET / HTTP/1.1\r\nHost: db\r\n\r\n", OP),
};
static const struct step pg_direct_tls[] = {
	/* A TLS ClientHello without SSLRequest (sslnegotiation=direct). */
	C("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", OP),
};
static const struct step pg_protocol2[] = {
	C("\x00\x00\x00\x0c\x00\x02\x00\x00" "abcd", OP),
};
static const struct step pg_ssl_bad_len[] = {
	C("\x00\x00\x00\x09\x04\xd2\x16/\x00", OP),
};
static const struct step pg_client_before_neg[] = {
	C("\x00\x00\x00\x08\x04\xd2\x16/", NI),
	C("\x00", OP),
};
static const struct step pg_cancel_then_more[] = {
	C("\x00\x00\x00\x10\x04\xd2\x16." "\x00\x00\x10\x92^\xed\xf0\r", NI),
	C("Q", OP),
};
static const struct step pg_typed_short_len[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
	C("Q\x00\x00\x00\x03", OP),
};
static const struct step pg_typed_huge_len[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
	C("Q\x40\x00\x00\x01", OP),
};
static const struct step pg_typed_negative_len[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", ID),
	C("Q\xff\xff\xff\xfe", OP),
};
static const struct step pg_server_bad_ready[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x06II", OP),
};
static const struct step pg_server_bad_status[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05X", OP),
};
static const struct step pg_server_short_len[] = {
	C("\x00\x00\x00\x08\x00\x03\x00\x00", NI),
	S("R\x00\x00\x00\x02", OP),
};
static const struct step pg_ancient_ssl_error[] = {
	/* A server without SSL support answers an SSLRequest with an ErrorResponse. */
	C("\x00\x00\x00\x08\x04\xd2\x16/", NI),
	S("E\x00\x00\x00\x08SERR", OP),
};

START_TEST(test_pg_sessions)
{
	RUN(proto_postgres, pg_psql);
	RUN(proto_postgres, pg_failed_txn);
	RUN(proto_postgres, pg_extended);
	RUN(proto_postgres, pg_copy);
	RUN(proto_postgres, pg_gss_then_ssl);
	RUN(proto_postgres, pg_pipelined_startup);
	RUN(proto_postgres, pg_tls);
	RUN(proto_postgres, pg_gssenc);
	RUN(proto_postgres, pg_cancel);
}
END_TEST

START_TEST(test_pg_hostile)
{
	RUN(proto_postgres, pg_bad_startup_len);
	RUN(proto_postgres, pg_huge_startup_len);
	RUN(proto_postgres, pg_http);
	RUN(proto_postgres, pg_direct_tls);
	RUN(proto_postgres, pg_protocol2);
	RUN(proto_postgres, pg_ssl_bad_len);
	RUN(proto_postgres, pg_client_before_neg);
	RUN(proto_postgres, pg_cancel_then_more);
	RUN(proto_postgres, pg_typed_short_len);
	RUN(proto_postgres, pg_typed_huge_len);
	RUN(proto_postgres, pg_typed_negative_len);
	RUN(proto_postgres, pg_server_bad_ready);
	RUN(proto_postgres, pg_server_bad_status);
	RUN(proto_postgres, pg_server_short_len);
	RUN(proto_postgres, pg_ancient_ssl_error);
}
END_TEST

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Feed a buffer in random chunks, asserting the session is busy (not idle, not opaque) throughout. */
static void feed_busy(const struct proto_ops *ops, struct proto_state *st, enum proto_dir dir, const uint8_t *p,
		      size_t n, const char *what)
{
	size_t off = 0;
	while (off < n) {
		size_t k = 1 + rng() % 70000;
		if (k > n - off)
			k = n - off;
		ops->feed(st, dir, p + off, k);
		off += k;
		ck_assert_msg(!ops->is_opaque(st), "%s: opaque at %zu", what, off);
		ck_assert_msg(!ops->is_idle(st), "%s: idle at %zu of %zu", what, off, n);
	}
}

START_TEST(test_pg_big_messages)
{
	/* A 3 MiB query and a 5 MiB DataRow: skipped by length, never buffered. */
	size_t qlen = 3u << 20, vlen = 5u << 20;
	uint8_t *q = malloc(1 + 4 + qlen + 1), *row = malloc(1 + 4 + 2 + 4 + vlen);
	struct proto_state st;

	ck_assert_ptr_nonnull(q);
	ck_assert_ptr_nonnull(row);
	q[0] = 'Q';
	put_be32(q + 1, (uint32_t)(4 + qlen + 1));
	memset(q + 5, 'x', qlen);
	q[5 + qlen] = 0;
	row[0] = 'D';
	put_be32(row + 1, (uint32_t)(4 + 2 + 4 + vlen));
	row[5] = 0;
	row[6] = 1;
	put_be32(row + 7, (uint32_t)vlen);
	/* Payload bytes that look like frames must not confuse anything. */
	for (size_t i = 0; i < vlen; i++)
		row[11 + i] = (uint8_t)"Z\x00\x00\x00\x05I"[i % 6];

	proto_postgres.init(&st);
	feed_steps(&proto_postgres, &st, "pg_big", pg_failed_txn, 2, FEED_WHOLE);
	feed_busy(&proto_postgres, &st, PROTO_CLIENT_TO_SERVER, q, 1 + 4 + qlen + 1, "big query");
	feed_busy(&proto_postgres, &st, PROTO_SERVER_TO_CLIENT, row, 1 + 4 + 2 + 4 + vlen, "big row");
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I", 20);
	ck_assert(proto_postgres.is_idle(&st));
	free(q);
	free(row);
}
END_TEST

START_TEST(test_pg_fresh)
{
	struct proto_state st;

	proto_postgres.init(&st);
	ck_assert(!proto_postgres.is_idle(&st));
	ck_assert(!proto_postgres.is_opaque(&st));
	ck_assert_str_eq(proto_postgres.name, "postgres");
}
END_TEST

START_TEST(test_pg_refuse_plain)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	/* Nothing received yet. */
	ck_assert_int_eq(proto_postgres.refuse(in, out, "no writer available"), PROTO_REFUSE_DONE);
	EXPECT_BYTES(out, "E\x00\x00\x00/SFATAL\x00VFATAL\x00" "C57P03\x00Mno writer available\x00\x00", "pg refuse");
	evbuffer_free(in);
	evbuffer_free(out);
}
END_TEST

START_TEST(test_pg_refuse_ssl)
{
	static const char ssl[] = "\x00\x00\x00\x08\x04\xd2\x16/";
	static const char gss[] = "\x00\x00\x00\x08\x04\xd2\x16" "0";
	static const char startup[] = "\x00\x00\x00\x12\x00\x03\x00\x00user\x00" "app\x00\x00";
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	/* SSLRequest: decline, consume it, wait for the StartupMessage. */
	evbuffer_add(in, ssl, sizeof(ssl) - 1);
	ck_assert_int_eq(proto_postgres.refuse(in, out, "no writer available"), PROTO_REFUSE_MORE);
	EXPECT_BYTES(out, "N", "pg refuse SSLRequest");
	ck_assert_uint_eq(evbuffer_get_length(in), 0);
	evbuffer_drain(out, evbuffer_get_length(out));

	/* Then GSSENCRequest (libpq tries it first with gssencmode=prefer). */
	evbuffer_add(in, gss, sizeof(gss) - 1);
	ck_assert_int_eq(proto_postgres.refuse(in, out, "no writer available"), PROTO_REFUSE_MORE);
	EXPECT_BYTES(out, "N", "pg refuse GSSENCRequest");
	ck_assert_uint_eq(evbuffer_get_length(in), 0);
	evbuffer_drain(out, evbuffer_get_length(out));

	/* Then the StartupMessage gets the FATAL error. */
	evbuffer_add(in, startup, sizeof(startup) - 1);
	ck_assert_int_eq(proto_postgres.refuse(in, out, "no writer available"), PROTO_REFUSE_DONE);
	EXPECT_BYTES(out, "E\x00\x00\x00/SFATAL\x00VFATAL\x00" "C57P03\x00Mno writer available\x00\x00", "pg refuse startup");

	/* The whole exchange, as the client sees it, is well-formed for our own tracker. */
	struct proto_state st;
	proto_postgres.init(&st);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ssl, 8);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"N", 1);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)startup, sizeof(startup) - 1);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, evbuffer_pullup(out, -1), evbuffer_get_length(out));
	ck_assert(!proto_postgres.is_opaque(&st));
	ck_assert(!proto_postgres.is_idle(&st));

	/* A partial SSLRequest is not recognisable: the error it is. */
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_drain(in, evbuffer_get_length(in));
	evbuffer_add(in, ssl, 5);
	ck_assert_int_eq(proto_postgres.refuse(in, out, "x"), PROTO_REFUSE_DONE);
	ck_assert_uint_eq(evbuffer_get_length(in), 5);
	evbuffer_free(in);
	evbuffer_free(out);
}
END_TEST

START_TEST(test_pg_error_encoder)
{
	struct evbuffer *out = evbuffer_new();

	pg_error_response(out, "ERROR", "42P01", "relation \"t\" does not exist");
	EXPECT_BYTES(out, "E\x00\x00\x00" "7SERROR\x00VERROR\x00" "C42P01\x00Mrelation \"t\" does not exist\x00\x00",
		     "pg ErrorResponse");
	evbuffer_drain(out, evbuffer_get_length(out));

	/* Malformed SQLSTATE and NULL text stay well-formed. */
	pg_error_response(out, "FATAL", "5703", NULL);
	EXPECT_BYTES(out, "E\x00\x00\x00\x1cSFATAL\x00VFATAL\x00" "CXX000\x00M\x00\x00", "pg ErrorResponse sanitized");
	evbuffer_free(out);
}
END_TEST

/* auth = repoint: repoint's own side of the start (proto_postgres.login). */
static const char pg_startup_alice[] = "\x00\x00\x00" "\x21\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00\x00";

static void feed_evbuffer(struct evbuffer *b, const char *p, size_t n)
{
	evbuffer_add(b, p, n);
}

/* A session idle inside a transaction of simple Queries, every one answered inside it: tx_idle counts them. */
START_TEST(test_pg_tx_idle)
{
	static const char startup[] = "\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00"
				      "application_name\x00psql\x00\x00";
	static const char in[] = "R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I";
	static const char begin[] = "Q\x00\x00\x00\x0b" "BEGIN;\x00";
	static const char begun[] = "C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T";
	static const char ins[] = "Q\x00\x00\x00\x0d" "INSERT 1\x00";
	static const char inserted[] = "C\x00\x00\x00\x0fINSERT 0 1\x00Z\x00\x00\x00\x05T";
	static const char commit_begin[] = "Q\x00\x00\x00\x13" "COMMIT; BEGIN;\x00";
	static const char committed_begun[] = "C\x00\x00\x00\x0b" "COMMIT\x00" "C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T";
	static const char failed[] = "E\x00\x00\x00\x0cSERROR\x00\x00Z\x00\x00\x00\x05" "E";
	static const char parse_sync[] = "P\x00\x00\x00\x0e\x00SELECT\x00\x00\x00S\x00\x00\x00\x04";
	static const char named_sync[] = "P\x00\x00\x00\x0fs\x00SELECT\x00\x00\x00S\x00\x00\x00\x04";
	static const char parsed[] = "1\x00\x00\x00\x04Z\x00\x00\x00\x05T";
	struct proto_state ps;
	const struct proto_ops *o = &proto_postgres;

#define PGF(dir, lit) o->feed(&ps, (dir), (const uint8_t *)(lit), sizeof(lit) - 1)
	ck_assert_uint_eq(o->request_len((const uint8_t *)ins, sizeof(ins) - 1), sizeof(ins) - 1);
	ck_assert_uint_eq(o->request_len((const uint8_t *)ins, sizeof(ins) - 2), 0);
	ck_assert_uint_eq(o->request_len((const uint8_t *)"Q\x00\x00\x00\x02", 5), 0);
	/* The extended protocol's request: up to and with its Sync. */
	ck_assert_uint_eq(o->request_len((const uint8_t *)parse_sync, sizeof(parse_sync) - 1), sizeof(parse_sync) - 1);
	ck_assert_uint_eq(o->request_len((const uint8_t *)parse_sync, sizeof(parse_sync) - 2), 0);
	for (int round = 0; round < 5; round++) {
		o->init(&ps);
		PGF(PROTO_CLIENT_TO_SERVER, startup);
		PGF(PROTO_SERVER_TO_CLIENT, in);
		ck_assert(o->is_idle(&ps));
		ck_assert_uint_eq(o->tx_idle(&ps), 0);
		PGF(PROTO_CLIENT_TO_SERVER, begin);
		ck_assert_uint_eq(o->tx_idle(&ps), 0);       /* in flight */
		ck_assert(!o->tx_answered(&ps));
		PGF(PROTO_SERVER_TO_CLIENT, begun);
		ck_assert(o->tx_answered(&ps));
		ck_assert_uint_eq(o->tx_idle(&ps), 1);
		PGF(PROTO_CLIENT_TO_SERVER, ins);
		PGF(PROTO_SERVER_TO_CLIENT, inserted);
		ck_assert_uint_eq(o->tx_idle(&ps), 2);
		switch (round) {
		case 0:   /* a transaction that committed inside a request: what came before must not run again */
			PGF(PROTO_CLIENT_TO_SERVER, commit_begin);
			PGF(PROTO_SERVER_TO_CLIENT, committed_begun);
			break;
		case 1:   /* failed: not followed */
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			PGF(PROTO_SERVER_TO_CLIENT, failed);
			break;
		case 2:   /* a statement named inside it: not followed */
			PGF(PROTO_CLIENT_TO_SERVER, named_sync);
			PGF(PROTO_SERVER_TO_CLIENT, parsed);
			break;
		case 3:   /* a client byte after the answer: no longer idle */
			o->feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q", 1);
			break;
		case 4:   /* the extended protocol with the unnamed statement: followed, a request per Sync */
			PGF(PROTO_CLIENT_TO_SERVER, parse_sync);
			PGF(PROTO_SERVER_TO_CLIENT, parsed);
			ck_assert_uint_eq(o->tx_idle(&ps), 3);
			o->feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q", 1);   /* then a client byte */
			break;
		}
		ck_assert_uint_eq(o->tx_idle(&ps), 0);
	}
#undef PGF
}
END_TEST

/* A write refused read-only (25006) before anything of it was answered did not run: one sync
 * group sent at an idle point outside a transaction may be sent again elsewhere; the refusal is
 * recognised with the extended protocol's pre-execution answers before it and the ParameterStatus
 * a reload reports before ReadyForQuery. */
START_TEST(test_pg_retryable)
{
	static const char startup[] = "\x00\x00\x00" "7\x00\x03\x00\x00user\x00" "alice\x00" "database\x00" "app\x00"
				      "application_name\x00psql\x00\x00";
	static const char in[] = "R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I";
	static const char ins[] = "Q\x00\x00\x00\x0d" "INSERT 1\x00";
	static const char begin[] = "Q\x00\x00\x00\x0b" "BEGIN;\x00";
	static const char begun[] = "C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T";
	static const char inserted[] = "C\x00\x00\x00\x0fINSERT 0 1\x00Z\x00\x00\x00\x05I";
	static const char ext[] = "P\x00\x00\x00\x10\x00INSERT 1\x00\x00\x00" "B\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00"
				  "D\x00\x00\x00\x06P\x00" "E\x00\x00\x00\x09\x00\x00\x00\x00\x00" "S\x00\x00\x00\x04";
	static const char named[] = "P\x00\x00\x00\x11s\x00INSERT 1\x00\x00\x00" "S\x00\x00\x00\x04";
	static const char param[] = "S\x00\x00\x00\x25" "default_transaction_read_only\x00on\x00";
	static const char err[] = "E\x00\x00\x00\x17SERROR\x00" "C25006\x00" "Mro\x00\x00";
	static const char other[] = "E\x00\x00\x00\x17SERROR\x00" "C23505\x00" "Mro\x00\x00";
	static const char ready[] = "Z\x00\x00\x00\x05I";
	static const char pre[] = "1\x00\x00\x00\x04" "2\x00\x00\x00\x04" "n\x00\x00\x00\x04";
	static const char tag[] = "C\x00\x00\x00\x0bINSERT\x00";
	const struct proto_ops *o = &proto_postgres;
	struct proto_state ps;
	uint8_t buf[256];
	size_t n;

#define PGF(dir, lit) o->feed(&ps, (dir), (const uint8_t *)(lit), sizeof(lit) - 1)
#define CAT(lit) (memcpy(buf + n, (lit), sizeof(lit) - 1), n += sizeof(lit) - 1)
	/* The refusal: alone, with its ReadyForQuery, the ParameterStatus before it, the pre-execution
	 * answers before the error; not after something that ran, not another error. */
	n = 0, CAT(err);
	ck_assert_uint_eq(o->readonly_reply(buf, n), n);
	CAT(param), CAT(ready);
	ck_assert_uint_eq(o->readonly_reply(buf, n), n);
	ck_assert_uint_eq(o->readonly_reply(buf, n - 1), sizeof(err) - 1);  /* ReadyForQuery not here yet */
	n = 0, CAT(pre), CAT(err), CAT(ready);
	ck_assert_uint_eq(o->readonly_reply(buf, n), n);
	n = 0, CAT(param), CAT(err), CAT(ready);
	ck_assert_uint_eq(o->readonly_reply(buf, n), n);
	n = 0, CAT(tag), CAT(err), CAT(ready);
	ck_assert_uint_eq(o->readonly_reply(buf, n), 0);
	n = 0, CAT(other), CAT(ready);
	ck_assert_uint_eq(o->readonly_reply(buf, n), 0);
	n = 0, CAT(err), CAT(tag);
	ck_assert_uint_eq(o->readonly_reply(buf, n), sizeof(err) - 1);

	/* What a replay compares: every message but ParameterStatus, however the reads cut them. */
	n = 0, CAT(tag), CAT(param), CAT(ready), CAT(param);
	for (size_t cut = 0; cut <= n; cut++) {
		struct proto_strip st = {0};
		uint8_t out[256 + 16];
		size_t k = o->tx_strip(&st, buf, cut, out);
		k += o->tx_strip(&st, buf + cut, n - cut, out + k);
		ck_assert_uint_eq(k, sizeof(tag) - 1 + sizeof(ready) - 1);
		ck_assert(memcmp(out, tag, sizeof(tag) - 1) == 0);
		ck_assert(memcmp(out + sizeof(tag) - 1, ready, sizeof(ready) - 1) == 0);
	}

	for (int round = 0; round < 7; round++) {
		o->init(&ps);
		PGF(PROTO_CLIENT_TO_SERVER, startup);
		PGF(PROTO_SERVER_TO_CLIENT, in);
		ck_assert(!o->retryable(&ps));   /* nothing in flight */
		switch (round) {
		case 0:   /* a simple Query at an idle point; a ParameterStatus is not an answer */
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			ck_assert(o->retryable(&ps));
			PGF(PROTO_SERVER_TO_CLIENT, param);
			ck_assert(o->retryable(&ps));
			PGF(PROTO_SERVER_TO_CLIENT, tag);   /* part of it ran */
			break;
		case 1:   /* the extended protocol, unnamed */
			PGF(PROTO_CLIENT_TO_SERVER, ext);
			ck_assert(o->retryable(&ps));
			PGF(PROTO_SERVER_TO_CLIENT, pre);
			break;
		case 2:   /* a named statement would stay behind */
			PGF(PROTO_CLIENT_TO_SERVER, named);
			break;
		case 3:   /* two in flight */
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			break;
		case 4:   /* sent while another was in flight: the first ran */
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			PGF(PROTO_SERVER_TO_CLIENT, inserted);
			break;
		case 5:   /* inside a transaction: the transaction may run again (tx_retryable) */
			PGF(PROTO_CLIENT_TO_SERVER, begin);
			ck_assert_uint_eq(o->tx_retryable(&ps), 0);   /* BEGIN itself: not a transaction yet */
			PGF(PROTO_SERVER_TO_CLIENT, begun);
			ck_assert_uint_eq(o->tx_retryable(&ps), 0);   /* nothing in flight */
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			ck_assert_uint_eq(o->tx_retryable(&ps), 2);
			PGF(PROTO_SERVER_TO_CLIENT, param);
			ck_assert_uint_eq(o->tx_retryable(&ps), 2);
			PGF(PROTO_CLIENT_TO_SERVER, ins);
			ck_assert_uint_eq(o->tx_retryable(&ps), 0);   /* two in flight */
			break;
		case 6:   /* half-sent */
			o->feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 2);
			break;
		}
		ck_assert_msg(!o->retryable(&ps), "round %d", round);
	}
	/* After an answer, the next one at the idle point is again. */
	o->init(&ps);
	PGF(PROTO_CLIENT_TO_SERVER, startup);
	PGF(PROTO_SERVER_TO_CLIENT, in);
	PGF(PROTO_CLIENT_TO_SERVER, ins);
	PGF(PROTO_SERVER_TO_CLIENT, inserted);
	PGF(PROTO_CLIENT_TO_SERVER, ins);
	ck_assert(o->retryable(&ps));
#undef CAT
#undef PGF
}
END_TEST

START_TEST(test_pg_login)
{
	const struct proto_login_ops *lo = proto_postgres.login;
	static const char member[] = "R\x00\x00\x00\x08\x00\x00\x00\x00"                 /* AuthenticationOk */
				     "S\x00\x00\x00\x18server_version\x00" "15.8\x00"   /* ParameterStatus */
				     "K\x00\x00\x00\x0c\x00\x00\x01\x02\xaa\xbb\xcc\xdd"  /* BackendKeyData */
				     "Z\x00\x00\x00\x05I";                               /* ReadyForQuery */

	for (int split = 0; split < 2; split++) {
		struct proto_login *l = lo->create(CLIENT_AUTH_TRUST, NULL);
		struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
		char err[200];
		enum proto_login_step st = PROTO_LOGIN_MORE;
		size_t n = sizeof(pg_startup_alice) - 1;

		ck_assert_ptr_nonnull(l);
		for (size_t i = 0; i < n; i += split ? 1 : n) {
			feed_evbuffer(in, pg_startup_alice + i, split ? 1 : n);
			st = lo->front(l, in, out);
			ck_assert_int_eq(st, i + (split ? 1 : n) < n ? PROTO_LOGIN_MORE : PROTO_LOGIN_DONE);
		}
		ck_assert(lo->front_done(l));
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		/* The member gets the client's own startup packet. */
		lo->back_start(l, up, NULL, false);
		ck_assert_uint_eq(evbuffer_get_length(up), n);
		ck_assert(memcmp(evbuffer_pullup(up, -1), pg_startup_alice, n) == 0);
		n = sizeof(member) - 1;
		for (size_t i = 0; i < n; i += split ? 1 : n) {
			feed_evbuffer(min, member + i, split ? 1 : n);
			st = lo->back(l, min, up, out, err, sizeof(err));
			ck_assert_int_eq(st, i + (split ? 1 : n) < n ? PROTO_LOGIN_MORE : PROTO_LOGIN_DONE);
		}
		ck_assert(lo->told(l));
		/* The client: Ok, the parameter, repoint's key (not the member's), ready. */
		const uint8_t *c = evbuffer_pullup(out, -1);
		ck_assert_uint_eq(evbuffer_get_length(out), 9 + 25 + 13 + 6);
		ck_assert(memcmp(c, member, 9 + 25) == 0);
		ck_assert_uint_eq(c[34], 'K');
		ck_assert(memcmp(c + 39, "\x00\x00\x01\x02\xaa\xbb\xcc\xdd", 8) != 0);
		ck_assert(memcmp(c + 47, "Z\x00\x00\x00\x05I", 6) == 0);
		uint8_t mk[PROTO_KEY_MAX];
		ck_assert(lo->member_key(l, c + 39, 8, mk));
		ck_assert(memcmp(mk, "\x00\x00\x01\x02\xaa\xbb\xcc\xdd", 8) == 0);
		ck_assert(!lo->member_key(l, (const uint8_t *)"\x00\x00\x01\x02\xaa\xbb\xcc\xdd", 8, mk));
		/* Its tracker, as at an idle point after the login: idle, movable, the client's key. */
		struct proto_state ps;
		size_t klen;
		lo->track_idle(l, &ps);
		ck_assert(proto_postgres.is_idle(&ps));
		ck_assert(proto_postgres.can_migrate(&ps));
		ck_assert(proto_postgres.session_key(&ps, mk, &klen) && memcmp(mk, c + 39, 8) == 0);
		/* A second login (a moved session) tells the client nothing. */
		evbuffer_drain(out, evbuffer_get_length(out));
		lo->back_start(l, up, NULL, false);
		feed_evbuffer(min, member, n);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		lo->destroy(l);
		evbuffer_free(in);
		evbuffer_free(out);
		evbuffer_free(up);
		evbuffer_free(min);
	}
}
END_TEST

START_TEST(test_pg_login_refusals)
{
	const struct proto_login_ops *lo = proto_postgres.login;
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
	struct proto_login *l;
	char err[200];

	/* No user name: the server's own 28000. */
	l = lo->create(CLIENT_AUTH_TRUST, NULL);
	feed_evbuffer(in, "\x00\x00\x00\x17\x00\x03\x00\x00" "database\x00" "app\x00\x00", 0x17);
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_FAIL);
	ck_assert(memmem(evbuffer_pullup(out, -1), evbuffer_get_length(out), "C28000", 7) != NULL);
	lo->destroy(l);
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_drain(in, evbuffer_get_length(in));
	/* Protocol 2, a huge length: 08P01. */
	l = lo->create(CLIENT_AUTH_TRUST, NULL);
	feed_evbuffer(in, "\x00\x00\x00\x10\x00\x02\x00\x00user\x00x\x00\x00", 16);
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_FAIL);
	ck_assert(memmem(evbuffer_pullup(out, -1), evbuffer_get_length(out), "C08P01", 7) != NULL);
	lo->destroy(l);
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_drain(in, evbuffer_get_length(in));
	/* The member refuses: its error reaches the client on a first login; a method repoint cannot
	 * do is a failure with the reason. */
	l = lo->create(CLIENT_AUTH_TRUST, NULL);
	feed_evbuffer(in, pg_startup_alice, sizeof(pg_startup_alice) - 1);
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
	lo->back_start(l, up, NULL, false);
	feed_evbuffer(min, "E\x00\x00\x00\x1dSFATAL\x00" "C28000\x00" "Mno role\x00\x00", 0x1e);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert_str_eq(err, "no role");
	ck_assert_uint_eq(evbuffer_get_length(out), 0x1e);
	lo->back_start(l, up, NULL, false);
	feed_evbuffer(min, "R\x00\x00\x00\x0c\x00\x00\x00\x05salt", 13);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert(strstr(err, "for a password") != NULL);  /* md5, and auth_file has no password */
	lo->destroy(l);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
}
END_TEST

/* What a session carries that a fresh connection would not; a server's last words; requests in
 * flight when it went away. */
START_TEST(test_pg_state_and_last_words)
{
	struct proto_state st;
	uint32_t owed = 0;
	static const char ready[] = "R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I";
	static const char fatal[] = "E\x00\x00\x00\x18SFATAL\x00" "C57P01\x00" "Mbye\x00\x00";
	static const char error[] = "E\x00\x00\x00\x18SERROR\x00" "C42P01\x00" "Mbye\x00\x00";

	proto_postgres.init(&st);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)pg_startup_alice, sizeof(pg_startup_alice) - 1);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ready, sizeof(ready) - 1);
	ck_assert(proto_postgres.can_migrate(&st));
	/* A query in flight: not idle, but its client can be told its outcome is unknown. */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0bINSERT\x00", 12);
	ck_assert(!proto_postgres.can_migrate(&st));
	ck_assert(proto_postgres.inflight_lost(&st, &owed) && owed == 1);
	/* Its answer, and a FATAL in the same read: the last words start after the answer. */
	static const char answer_fatal[] = "C\x00\x00\x00\x0fINSERT 0 1\x00Z\x00\x00\x00\x05I"
					   "E\x00\x00\x00\x18SFATAL\x00" "C57P01\x00" "Mbye\x00\x00";
	ck_assert_uint_eq(proto_postgres.termination(&st, (const uint8_t *)answer_fatal, sizeof(answer_fatal) - 1), 22);
	ck_assert_uint_eq(proto_postgres.termination(&st, (const uint8_t *)fatal, sizeof(fatal) - 1), 0);
	ck_assert_uint_eq(proto_postgres.termination(&st, (const uint8_t *)error, sizeof(error) - 1), sizeof(error) - 1);
	ck_assert_uint_eq(proto_postgres.termination(&st, (const uint8_t *)fatal, sizeof(fatal) - 3), sizeof(fatal) - 3);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)answer_fatal, 22);
	ck_assert(proto_postgres.can_migrate(&st));
	/* A lone SET at an idle point: the session can move once it took the request for replay. */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0cSET x=1\x00", 13);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x08SET\x00Z\x00\x00\x00\x05I", 15);
	ck_assert(proto_postgres.is_idle(&st));
	ck_assert(!proto_postgres.can_migrate(&st));
	ck_assert(!proto_postgres.inflight_lost(&st, &owed));
	ck_assert(proto_postgres.replayable(&st));
	ck_assert(!proto_postgres.replayable(&st));
	ck_assert(proto_postgres.can_migrate(&st));
	/* ... not taken before the next request: the state stays behind. */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0cSET x=2\x00", 13);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x08SET\x00Z\x00\x00\x00\x05I", 15);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0bSELECT\x00", 12);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0bSELECT\x00Z\x00\x00\x00\x05I", 18);
	ck_assert(!proto_postgres.can_migrate(&st));
	ck_assert(!proto_postgres.inflight_lost(&st, &owed));
	/* A SET inside a transaction (BEGIN; SET; COMMIT in one query, or ending in 'T'): not replayable. */
	proto_postgres.init(&st);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)pg_startup_alice, sizeof(pg_startup_alice) - 1);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ready, sizeof(ready) - 1);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0cSET x=1\x00", 13);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x08SET\x00Z\x00\x00\x00\x05T", 15);
	ck_assert(!proto_postgres.replayable(&st));
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0b" "COMMIT\x00", 12);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0b" "COMMIT\x00Z\x00\x00\x00\x05I", 18);
	ck_assert(proto_postgres.is_idle(&st));
	ck_assert(!proto_postgres.can_migrate(&st));
	/* So does a named prepared statement; an unnamed one does not; "SETOF"-like words are not SET. */
	proto_postgres.init(&st);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)pg_startup_alice, sizeof(pg_startup_alice) - 1);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ready, sizeof(ready) - 1);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"P\x00\x00\x00\x0e\x00SELECT\x00\x00\x00S\x00\x00\x00\x04", 20);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"1\x00\x00\x00\x04Z\x00\x00\x00\x05I", 11);
	ck_assert(proto_postgres.can_migrate(&st));
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0aSETOF\x00", 11);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"Z\x00\x00\x00\x05I", 6);
	ck_assert(proto_postgres.can_migrate(&st));
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"P\x00\x00\x00\x10s1\x00SELECT\x00\x00\x00S\x00\x00\x00\x04", 22);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"1\x00\x00\x00\x04Z\x00\x00\x00\x05I", 11);
	ck_assert(proto_postgres.is_idle(&st));
	ck_assert(!proto_postgres.can_migrate(&st));
	/* ... until the session takes it to create it again on the next server. */
	ck_assert_int_eq(proto_postgres.replayable(&st), PG_REPLAY_STATEMENTS);
	ck_assert_int_eq(proto_postgres.replayable(&st), 0);
	ck_assert(proto_postgres.can_migrate(&st));
	/* Inside a transaction too (statements outlive it); a lone DEALLOCATE is taken as well. */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0a" "BEGIN\x00", 11);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0a" "BEGIN\x00Z\x00\x00\x00\x05T", 17);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"P\x00\x00\x00\x10s2\x00SELECT\x00\x00\x00S\x00\x00\x00\x04", 22);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"1\x00\x00\x00\x04Z\x00\x00\x00\x05T", 11);
	ck_assert_int_eq(proto_postgres.replayable(&st), PG_REPLAY_STATEMENTS);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0b" "COMMIT\x00", 12);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0b" "COMMIT\x00Z\x00\x00\x00\x05I", 18);
	ck_assert(proto_postgres.can_migrate(&st));
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x12" "DEALLOCATE s1\x00", 19);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"C\x00\x00\x00\x0f" "DEALLOCATE\x00Z\x00\x00\x00\x05I", 22);
	ck_assert_int_eq(proto_postgres.replayable(&st), PG_REPLAY_DEALLOCATE);
	ck_assert(proto_postgres.can_migrate(&st));
	/* A Parse answered with an error: which statement exists is not known: the session stays behind. */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"P\x00\x00\x00\x10s3\x00SELEKT\x00\x00\x00S\x00\x00\x00\x04", 22);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"E\x00\x00\x00\x0cS" "ERROR\x00\x00Z\x00\x00\x00\x05I", 19);
	ck_assert_int_eq(proto_postgres.replayable(&st), 0);
	ck_assert(!proto_postgres.can_migrate(&st));
	ck_assert_str_eq(proto_postgres.unmovable_reason(&st), "named_statement");
	/* DISCARD ALL's answer, as a kept connection is reset: whole, in parts, or anything else. */
	{
		static const char ok[] = "S\x00\x00\x00\x16" "application_name\x00\x00" "C\x00\x00\x00\x10" "DISCARD ALL\x00"
					 "Z\x00\x00\x00\x05I";
		struct evbuffer *req = evbuffer_new();
		ck_assert(proto_postgres.login->reset_request(NULL, false, req));
		ck_assert_uint_eq(evbuffer_get_length(req), 17);
		const uint8_t *q = evbuffer_pullup(req, -1);
		ck_assert(q[0] == 'Q' && memcmp(q + 5, "DISCARD ALL", 12) == 0);
		evbuffer_free(req);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)ok, sizeof(ok) - 1), 1);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)ok, sizeof(ok) - 3), 0);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)"E\x00\x00\x00\x05x", 6), -1);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)"C\x00\x00\x00\x08SET\x00", 9), -1);
		/* A client that left inside a transaction: ROLLBACK first, its answer before DISCARD ALL's. */
		req = evbuffer_new();
		ck_assert(proto_postgres.login->reset_request(NULL, true, req));
		ck_assert_uint_eq(evbuffer_get_length(req), 14 + 17);
		ck_assert(memcmp(evbuffer_pullup(req, -1), "Q\x00\x00\x00\x0dROLLBACK\x00Q", 15) == 0);
		evbuffer_free(req);
		static const char rb_ok[] = "C\x00\x00\x00\x0dROLLBACK\x00Z\x00\x00\x00\x05I"
					    "C\x00\x00\x00\x10" "DISCARD ALL\x00Z\x00\x00\x00\x05I";
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)rb_ok, sizeof(rb_ok) - 1), 1);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)rb_ok, 20), 0);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)rb_ok, 20 + 17), 0);
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)rb_ok + 20, sizeof(rb_ok) - 1 - 20), 1);
		static const char rb_twice[] = "C\x00\x00\x00\x0dROLLBACK\x00Z\x00\x00\x00\x05I"
					       "C\x00\x00\x00\x0dROLLBACK\x00Z\x00\x00\x00\x05I";
		ck_assert_int_eq(proto_postgres.login->reset_answer((const uint8_t *)rb_twice, sizeof(rb_twice) - 1), -1);
	}
	/* Inside a transaction: nothing to tell a client whose transaction is gone. */
	proto_postgres.init(&st);
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)pg_startup_alice, sizeof(pg_startup_alice) - 1);
	proto_postgres.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05T", 15);
	ck_assert(!proto_postgres.is_idle(&st) && proto_postgres.at_rest(&st));   /* (a goodbye here: reset) */
	proto_postgres.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"Q\x00\x00\x00\x0bINSERT\x00", 12);
	ck_assert(!proto_postgres.at_rest(&st));
	ck_assert(!proto_postgres.inflight_lost(&st, &owed));
	/* The answer to such a request. */
	struct evbuffer *out = evbuffer_new();
	proto_postgres.outcome_unknown(out, "lost");
	ck_assert(memmem(evbuffer_pullup(out, -1), evbuffer_get_length(out), "C08007", 7) != NULL);
	ck_assert(memcmp(evbuffer_pullup(out, -1) + evbuffer_get_length(out) - 6, "Z\x00\x00\x00\x05I", 6) == 0);
	evbuffer_free(out);
}
END_TEST

/* ==== MySQL / MariaDB ==== */

/* MySQL 8 session: handshake, queries, a transaction, errors, multiple results */
static const struct step my_session[] = {
	/* Initial handshake v10, MySQL 8.0.36, caching_sha2_password */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 user=app db=test */
	C("`\x00\x00\x01\x8d\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* AuthMoreData: fast auth success */
	S("\x02\x00\x00\x02\x01\x03", NI),
	/* OK (autocommit) */
	S("\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'SELECT id, name FROM t' */
	C("\x17\x00\x00\x00\x03SELECT id, name FROM t", NI),
	/* column count 2 */
	S("\x01\x00\x00\x01\x02", NI),
	/* column definitions id, name, EOF */
	S(" \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00", NI),
	/* rows (1, alice), (2, NULL) */
	S("\x08\x00\x00\x05\x01" "1\x05" "alice\x03\x00\x00\x06\x01" "2\xfb", NI),
	/* EOF */
	S("\x05\x00\x00\x07\xfe\x00\x00\x02\x00", ID),
	/* COM_QUERY 'BEGIN' */
	C("\x06\x00\x00\x00\x03" "BEGIN", NI),
	/* OK, status IN_TRANS|AUTOCOMMIT */
	S("\x07\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00", NI),
	/* COM_QUERY 'UPDATE t SET name = ...' */
	C("'\x00\x00\x00\x03UPDATE t SET name = 'bob' WHERE id = 2", NI),
	/* OK 1 row, IN_TRANS */
	S("0\x00\x00\x01\x00\x01\x00\x03\x00\x00\x00(Rows matched: 1  Changed: 1  Warnings: 0", NI),
	/* COM_QUERY 'SELECT ... FOR UPDATE' inside the transaction */
	C("\"\x00\x00\x00\x03SELECT id, name FROM t FOR UPDATE", NI),
	/* result set ending with IN_TRANS */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00\x06\x00\x00\x05\x01" "2\x03" "bob\x05\x00\x00\x06\xfe\x00\x00\x03\x00", NI),
	/* COM_QUERY 'COMMIT' */
	C("\x07\x00\x00\x00\x03" "COMMIT", NI),
	/* OK (autocommit, no transaction) */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'SELECT * FROM missing' */
	C("\x16\x00\x00\x00\x03SELECT * FROM missing", NI),
	/* ERR 1146 42S02 */
	S("+\x00\x00\x01\xffz\x04#42S02Table 'test.missing' doesn't exist", ID),
	/* COM_QUERY 'CALL two_results()' */
	C("\x13\x00\x00\x00\x03" "CALL two_results()", NI),
	/* first result set, MORE_RESULTS_EXISTS */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00\x08\x00\x00\x05\x01" "1\x05" "alice\x05\x00\x00\x06\xfe\x00\x00\n\x00", NI),
	/* second result set, MORE_RESULTS_EXISTS */
	S("\x01\x00\x00\x07\x02 \x00\x00\x08\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x09\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\n\xfe\x00\x00\x02\x00\x05\x00\x00\x0b\xfe\x00\x00\n\x00", NI),
	/* final OK of the CALL */
	S("\x07\x00\x00\x0c\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'DELETE FROM t WHERE id = 3; SELECT 1' (multi-statement) */
	C("%\x00\x00\x00\x03" "DELETE FROM t WHERE id = 3; SELECT 1", NI),
	/* OK with MORE_RESULTS_EXISTS */
	S("\x07\x00\x00\x01\x00\x01\x00\n\x00\x00\x00", NI),
	/* result set */
	S("\x01\x00\x00\x02\x02 \x00\x00\x03\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x04\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x05\xfe\x00\x00\x02\x00\x04\x00\x00\x06\x01" "1\x01x\x05\x00\x00\x07\xfe\x00\x00\x02\x00", ID),
	/* COM_PING */
	C("\x01\x00\x00\x00\x0e", NI),
	/* OK */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUIT */
	C("\x01\x00\x00\x00\x01", ID),
};

/* MySQL 8 session with CLIENT_DEPRECATE_EOF: handshake, queries, a transaction, errors, multiple results */
static const struct step my_session_deof[] = {
	/* Initial handshake v10, MySQL 8.0.36, caching_sha2_password */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 user=app db=test CLIENT_DEPRECATE_EOF */
	C("`\x00\x00\x01\x8d\xa2/\x01\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* AuthMoreData: fast auth success */
	S("\x02\x00\x00\x02\x01\x03", NI),
	/* OK (autocommit) */
	S("\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'SELECT id, name FROM t' */
	C("\x17\x00\x00\x00\x03SELECT id, name FROM t", NI),
	/* column count 2 */
	S("\x01\x00\x00\x01\x02", NI),
	/* column definitions id, name */
	S(" \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00", NI),
	/* rows (1, alice), (2, NULL) */
	S("\x08\x00\x00\x04\x01" "1\x05" "alice\x03\x00\x00\x05\x01" "2\xfb", NI),
	/* OK with 0xFE header */
	S("\x07\x00\x00\x06\xfe\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'BEGIN' */
	C("\x06\x00\x00\x00\x03" "BEGIN", NI),
	/* OK, status IN_TRANS|AUTOCOMMIT */
	S("\x07\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00", NI),
	/* COM_QUERY 'UPDATE t SET name = ...' */
	C("'\x00\x00\x00\x03UPDATE t SET name = 'bob' WHERE id = 2", NI),
	/* OK 1 row, IN_TRANS */
	S("0\x00\x00\x01\x00\x01\x00\x03\x00\x00\x00(Rows matched: 1  Changed: 1  Warnings: 0", NI),
	/* COM_QUERY 'SELECT ... FOR UPDATE' inside the transaction */
	C("\"\x00\x00\x00\x03SELECT id, name FROM t FOR UPDATE", NI),
	/* result set ending with IN_TRANS */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x06\x00\x00\x04\x01" "2\x03" "bob\x07\x00\x00\x05\xfe\x00\x00\x03\x00\x00\x00", NI),
	/* COM_QUERY 'COMMIT' */
	C("\x07\x00\x00\x00\x03" "COMMIT", NI),
	/* OK (autocommit, no transaction) */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'SELECT * FROM missing' */
	C("\x16\x00\x00\x00\x03SELECT * FROM missing", NI),
	/* ERR 1146 42S02 */
	S("+\x00\x00\x01\xffz\x04#42S02Table 'test.missing' doesn't exist", ID),
	/* COM_QUERY 'CALL two_results()' */
	C("\x13\x00\x00\x00\x03" "CALL two_results()", NI),
	/* first result set, MORE_RESULTS_EXISTS */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x08\x00\x00\x04\x01" "1\x05" "alice\x07\x00\x00\x05\xfe\x00\x00\n\x00\x00\x00", NI),
	/* second result set, MORE_RESULTS_EXISTS */
	S("\x01\x00\x00\x06\x02 \x00\x00\x07\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x08\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x07\x00\x00\x09\xfe\x00\x00\n\x00\x00\x00", NI),
	/* final OK of the CALL */
	S("\x07\x00\x00\n\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'DELETE FROM t WHERE id = 3; SELECT 1' (multi-statement) */
	C("%\x00\x00\x00\x03" "DELETE FROM t WHERE id = 3; SELECT 1", NI),
	/* OK with MORE_RESULTS_EXISTS */
	S("\x07\x00\x00\x01\x00\x01\x00\n\x00\x00\x00", NI),
	/* result set */
	S("\x01\x00\x00\x02\x02 \x00\x00\x03\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x04\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x04\x00\x00\x05\x01" "1\x01x\x07\x00\x00\x06\xfe\x00\x00\x02\x00\x00\x00", ID),
	/* COM_PING */
	C("\x01\x00\x00\x00\x0e", NI),
	/* OK */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUIT */
	C("\x01\x00\x00\x00\x01", ID),
};

/* prepared statements: prepare, long data, execute, reset, close, pipelining, cursor, change user */
static const struct step my_prepared[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 */
	C("`\x00\x00\x01\x8d\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* OK */
	S("\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_PREPARE 'SELECT id, name FROM t WHERE id = ?' */
	C("$\x00\x00\x00\x16SELECT id, name FROM t WHERE id = ?", NI),
	/* COM_STMT_PREPARE_OK stmt 1, 2 columns, 1 parameter */
	S("\x0c\x00\x00\x01\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00", NI),
	/* parameter definition, EOF, 2 column definitions, EOF */
	S("\x1e\x00\x00\x02\x03" "def\x04test\x01t\x01t\x01?\x01?\x0c?\x00\x00\x00\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x03\xfe\x00\x00\x02\x00 \x00\x00\x04\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x05\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x06\xfe\x00\x00\x02\x00", ID),
	/* COM_STMT_SEND_LONG_DATA (no response) */
	C("\x11\x00\x00\x00\x18\x01\x00\x00\x00\x00\x00long value", ID),
	/* COM_STMT_EXECUTE stmt 1, id = 1 */
	C("\x12\x00\x00\x00\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* column count, 2 column definitions, EOF */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00", NI),
	/* binary row (1, alice) */
	S("\x0c\x00\x00\x05\x00\x00\x01\x00\x00\x00\x05" "alice", NI),
	/* EOF */
	S("\x05\x00\x00\x06\xfe\x00\x00\x02\x00", ID),
	/* COM_STMT_RESET */
	C("\x05\x00\x00\x00\x1a\x01\x00\x00\x00", NI),
	/* OK */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_CLOSE (no response) */
	C("\x05\x00\x00\x00\x19\x01\x00\x00\x00", ID),
	/* pipelined COM_STMT_PREPARE + COM_STMT_EXECUTE(stmt -1), as MariaDB Connector/C does */
	C("$\x00\x00\x00\x16SELECT id, name FROM t WHERE id = ?\x12\x00\x00\x00\x17\xff\xff\xff\xff\x00\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* prepare response */
	S("\x0c\x00\x00\x01\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00\x1e\x00\x00\x02\x03" "def\x04test\x01t\x01t\x01?\x01?\x0c?\x00\x00\x00\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x03\xfe\x00\x00\x02\x00 \x00\x00\x04\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x05\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x06\xfe\x00\x00\x02\x00", NI),
	/* execute response */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00\x0c\x00\x00\x05\x00\x00\x01\x00\x00\x00\x05" "alice\x05\x00\x00\x06\xfe\x00\x00\x02\x00", ID),
	/* COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY */
	C("\x12\x00\x00\x00\x17\x01\x00\x00\x00\x01\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* column count, definitions, EOF with CURSOR_EXISTS: no rows follow */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00" "B\x00", ID),
	/* COM_STMT_FETCH stmt 1, 10 rows */
	C("\x09\x00\x00\x00\x1c\x01\x00\x00\x00\n\x00\x00\x00", NI),
	/* binary row, EOF with CURSOR_EXISTS|LAST_ROW_SENT */
	S("\x0c\x00\x00\x01\x00\x00\x01\x00\x00\x00\x05" "alice\x05\x00\x00\x02\xfe\x00\x00\xc2\x00", ID),
	/* COM_CHANGE_USER */
	C("9\x00\x00\x00\x11other\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00test\x00\xff\x00mysql_native_password\x00", NI),
	/* AuthSwitchRequest mysql_native_password */
	S(",\x00\x00\x01\xfemysql_native_password\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x00", NI),
	/* auth response */
	C("\x14\x00\x00\x02" "abcdefghijklmnopqrst", NI),
	/* OK */
	S("\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STATISTICS */
	C("\x01\x00\x00\x00\x09", NI),
	/* statistics string (not an OK packet) */
	S("D\x00\x00\x01Uptime: 3600  Threads: 2  Questions: 51  Slow queries: 0  Opens: 120", ID),
	/* COM_INIT_DB */
	C("\x05\x00\x00\x00\x02test", NI),
	/* ERR 1044 42000 */
	S(">\x00\x00\x01\xff\x14\x04#42000Access denied for user 'other'@'%' to database 'test'", ID),
};

/* prepared statements with CLIENT_DEPRECATE_EOF: prepare, long data, execute, reset, close, pipelining, cursor, change user */
static const struct step my_prepared_deof[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 */
	C("`\x00\x00\x01\x8d\xa2/\x01\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* OK */
	S("\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_PREPARE 'SELECT id, name FROM t WHERE id = ?' */
	C("$\x00\x00\x00\x16SELECT id, name FROM t WHERE id = ?", NI),
	/* COM_STMT_PREPARE_OK stmt 1, 2 columns, 1 parameter */
	S("\x0c\x00\x00\x01\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00", NI),
	/* parameter definition, 2 column definitions */
	S("\x1e\x00\x00\x02\x03" "def\x04test\x01t\x01t\x01?\x01?\x0c?\x00\x00\x00\x00\x00\xfd\x00\x00\x00\x00\x00 \x00\x00\x03\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x04\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00", ID),
	/* COM_STMT_SEND_LONG_DATA (no response) */
	C("\x11\x00\x00\x00\x18\x01\x00\x00\x00\x00\x00long value", ID),
	/* COM_STMT_EXECUTE stmt 1, id = 1 */
	C("\x12\x00\x00\x00\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* column count, 2 column definitions */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00", NI),
	/* binary row (1, alice) */
	S("\x0c\x00\x00\x04\x00\x00\x01\x00\x00\x00\x05" "alice", NI),
	/* OK with 0xFE header */
	S("\x07\x00\x00\x05\xfe\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_RESET */
	C("\x05\x00\x00\x00\x1a\x01\x00\x00\x00", NI),
	/* OK */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_CLOSE (no response) */
	C("\x05\x00\x00\x00\x19\x01\x00\x00\x00", ID),
	/* pipelined COM_STMT_PREPARE + COM_STMT_EXECUTE(stmt -1), as MariaDB Connector/C does */
	C("$\x00\x00\x00\x16SELECT id, name FROM t WHERE id = ?\x12\x00\x00\x00\x17\xff\xff\xff\xff\x00\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* prepare response */
	S("\x0c\x00\x00\x01\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00\x1e\x00\x00\x02\x03" "def\x04test\x01t\x01t\x01?\x01?\x0c?\x00\x00\x00\x00\x00\xfd\x00\x00\x00\x00\x00 \x00\x00\x03\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x04\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00", NI),
	/* execute response */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x0c\x00\x00\x04\x00\x00\x01\x00\x00\x00\x05" "alice\x07\x00\x00\x05\xfe\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY */
	C("\x12\x00\x00\x00\x17\x01\x00\x00\x00\x01\x01\x00\x00\x00\x00\x01\x03\x00\x01\x00\x00\x00", NI),
	/* column count, definitions, OK(0xFE) with CURSOR_EXISTS: no rows follow */
	S("\x01\x00\x00\x01\x02 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x07\x00\x00\x04\xfe\x00\x00" "B\x00\x00\x00", ID),
	/* COM_STMT_FETCH stmt 1, 10 rows */
	C("\x09\x00\x00\x00\x1c\x01\x00\x00\x00\n\x00\x00\x00", NI),
	/* binary row, OK(0xFE) with CURSOR_EXISTS|LAST_ROW_SENT */
	S("\x0c\x00\x00\x01\x00\x00\x01\x00\x00\x00\x05" "alice\x07\x00\x00\x02\xfe\x00\x00\xc2\x00\x00\x00", ID),
	/* COM_CHANGE_USER */
	C("9\x00\x00\x00\x11other\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00test\x00\xff\x00mysql_native_password\x00", NI),
	/* AuthSwitchRequest mysql_native_password */
	S(",\x00\x00\x01\xfemysql_native_password\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x00", NI),
	/* auth response */
	C("\x14\x00\x00\x02" "abcdefghijklmnopqrst", NI),
	/* OK */
	S("\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STATISTICS */
	C("\x01\x00\x00\x00\x09", NI),
	/* statistics string (not an OK packet) */
	S("D\x00\x00\x01Uptime: 3600  Threads: 2  Questions: 51  Slow queries: 0  Opens: 120", ID),
	/* COM_INIT_DB */
	C("\x05\x00\x00\x00\x02test", NI),
	/* ERR 1044 42000 */
	S(">\x00\x00\x01\xff\x14\x04#42000Access denied for user 'other'@'%' to database 'test'", ID),
};

/* MariaDB: extended capabilities, progress reports, cached result-set metadata */
static const struct step my_mariadb[] = {
	/* Initial handshake, MariaDB 11.4, extended capabilities (CACHE_METADATA, PROGRESS, ...) */
	S("V\x00\x00\x00\n11.4.2-MariaDB-log\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xfe\xff\xff\x02\x00\xff\xde\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 with MariaDB extended capabilities */
	C("`\x00\x00\x01\x8c\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* OK */
	S("\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'ALTER TABLE t ...' */
	C("\x1f\x00\x00\x00\x03" "ALTER TABLE t ADD COLUMN c INT", NI),
	/* progress report (ERR with code 0xFFFF) */
	S("\x1b\x00\x00\x01\xff\xff\xff\x01\x01\x02P\xc3\x00\x11" "copy to tmp table", NI),
	/* OK */
	S("\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_STMT_EXECUTE stmt 1 */
	C("\n\x00\x00\x00\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00", NI),
	/* column count 2 + metadata follows = 0 (cached metadata), EOF, binary row, EOF */
	S("\x02\x00\x00\x01\x02\x00\x05\x00\x00\x02\xfe\x00\x00\x02\x00\x0c\x00\x00\x03\x00\x00\x01\x00\x00\x00\x05" "alice\x05\x00\x00\x04\xfe\x00\x00\x02\x00", ID),
	/* COM_STMT_EXECUTE stmt 1 */
	C("\n\x00\x00\x00\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00", NI),
	/* column count 2 + metadata follows = 1, 2 definitions, EOF, binary row, EOF */
	S("\x02\x00\x00\x01\x02\x01 \x00\x00\x02\x03" "def\x04test\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00$\x00\x00\x03\x03" "def\x04test\x01t\x01t\x04name\x04name\x0c\xff\x00\xfc\x03\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x04\xfe\x00\x00\x02\x00\x0c\x00\x00\x05\x00\x00\x01\x00\x00\x00\x05" "alice\x05\x00\x00\x06\xfe\x00\x00\x02\x00", ID),
	/* COM_RESET_CONNECTION */
	C("\x01\x00\x00\x00\x1f", NI),
	/* OK */
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
};

/* MariaDB PAM (dialog plugin): raw prompt packets during authentication and COM_CHANGE_USER */
static const struct step my_pam_dialog[] = {
	/* Initial handshake, MariaDB 10.11 */
	S("c\x00\x00\x00\n5.5.5-10.11.6-MariaDB-0+deb12u1\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xfe\xff\xff\x02\x00\xff\xde\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 */
	C("`\x00\x00\x01\x8c\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* AuthSwitchRequest 'dialog' with a password prompt */
	S("\x13\x00\x00\x02\xfe" "dialog\x00\x04Password: ", NI),
	/* password */
	C("\x07\x00\x00\x03secret\x00", NI),
	/* a second, raw dialog prompt (first byte 2: echo on) */
	S("\x10\x00\x00\x04\x02One-time code: ", NI),
	/* code */
	C("\x07\x00\x00\x05" "123456\x00", NI),
	/* OK */
	S("\x07\x00\x00\x06\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_CHANGE_USER */
	C("*\x00\x00\x00\x11other\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00test\x00!\x00" "dialog\x00", NI),
	/* dialog prompt */
	S("\x0b\x00\x00\x01\x04Password: ", NI),
	/* password */
	C("\x07\x00\x00\x02secret\x00", NI),
	/* OK */
	S("\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00", ID),
};

/* LOAD DATA LOCAL INFILE: opaque */
static const struct step my_local_infile[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 */
	C("`\x00\x00\x01\x8d\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* OK */
	S("\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", ID),
	/* COM_QUERY 'LOAD DATA LOCAL INFILE ...' */
	C("1\x00\x00\x00\x03LOAD DATA LOCAL INFILE '/tmp/t.csv' INTO TABLE t", NI),
	/* LOCAL INFILE request */
	S("\x0b\x00\x00\x01\xfb/tmp/t.csv", OP),
	/* file contents */
	C("\x0e\x00\x00\x02" "1,alice\n2,bob\n\x00\x00\x00\x03", OP),
};

/* SSLRequest: TLS follows, opaque */
static const struct step my_ssl[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* SSLRequest (32 bytes, CLIENT_SSL) */
	C(" \x00\x00\x01\x8d\xaa/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", OP),
};

/* a server that refuses the connection up front */
static const struct step my_refused_greeting[] = {
	/* ERR instead of a greeting: too many connections */
	S("\x1d\x00\x00\x00\xff\x10\x04#08004Too many connections", OP),
};

/* failed authentication: the server closes the connection */
static const struct step my_auth_failed[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 */
	C("`\x00\x00\x01\x8d\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", NI),
	/* ERR 1045 28000 access denied */
	S("F\x00\x00\x02\xff\x15\x04#28000Access denied for user 'app'@'10.0.0.1' (using password: YES)", OP),
};

/* compression changes the framing: opaque */
static const struct step my_compress[] = {
	/* Initial handshake */
	S("J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00", NI),
	/* HandshakeResponse41 with CLIENT_COMPRESS */
	C("`\x00\x00\x01\xad\xa2/\x00\x00\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" "app\x00 @ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_test\x00" "caching_sha2_password\x00", OP),
};

/* Run `steps` after the first `npre` steps of `prefix` (e.g. a finished handshake), in every mode. */
static void run_after(const struct proto_ops *ops, const char *script, const struct step *prefix, size_t npre,
		      const struct step *steps, size_t n)
{
	struct proto_state st;

	for (int mode = FEED_WHOLE; mode <= FEED_RANDOM; mode++) {
		ops->init(&st);
		feed_steps(ops, &st, script, prefix, npre, (enum feed_mode)mode);
		feed_steps(ops, &st, script, steps, n, (enum feed_mode)mode);
	}
}

/* The first four steps of my_session: greeting, handshake response, AuthMoreData, OK. */
#define MY_HANDSHAKE my_session, 4
#define MY_HANDSHAKE_DEOF my_session_deof, 4
#define RUN_MY(script) run_after(&proto_mysql, #script, MY_HANDSHAKE, script, NSTEPS(script))

static const struct step my_client_first[] = {
	C("\x01\x00\x00\x00\x0e", OP),
};
static const struct step my_protocol9[] = {
	S("\x0b\x00\x00\x00\x09" "3.23.58\x00\x01\x00", OP),
};
static const struct step my_short_greeting[] = {
	S("\x0e\x00\x00\x00\x0a" "8.0.36\x00\x0d\x00\x00\x00\x01\x02", OP),
};
static const struct step my_empty_greeting[] = {
	S("\x00\x00\x00\x00", OP),
};
static const struct step my_unsolicited[] = {
	/* MySQL 8.0.24+ says goodbye to an idle client with an ERR before closing. */
	S("\x49\x00\x00\x00\xff\xbf\x0f#HY000The client was disconnected by the server because of inactivity.", OP),
};
static const struct step my_first_fe[] = {
	C("\x09\x00\x00\x00\x03SELECT 1", NI),
	S("\x05\x00\x00\x01\xfe\x00\x00\x02\x00", OP),
};
static const struct step my_clone[] = {
	C("\x01\x00\x00\x00\x20", OP),
};
static const struct step my_binlog_dump[] = {
	C("\x0b\x00\x00\x00\x12\x04\x00\x00\x00\x00\x00\x02\x00\x00\x00", OP),
};
static const struct step my_stray_seq[] = {
	/* Not a command (sequence id 3), not a continuation, no authentication running. */
	C("\x01\x00\x00\x03\x0e", OP),
};
static const struct step my_empty_command[] = {
	C("\x00\x00\x00\x00", OP),
};
static const struct step my_bad_column_count[] = {
	C("\x09\x00\x00\x00\x03SELECT 1", NI),
	S("\x01\x00\x00\x01\xfc", OP),
};
static const struct step my_truncated_ok[] = {
	C("\x06\x00\x00\x00\x03" "BEGIN", NI),
	S("\x03\x00\x00\x01\x00\x00\x00", OP),
};
static const struct step my_queue[] = {
	/* 16 pipelined COM_PINGs fit; their 16 OKs drain the queue. */
	C("\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e", NI),
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
	  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", NI),
	S("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", ID),
	/* A 17th outstanding command cannot be tracked. */
	C("\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x0e"
	  "\x01\x00\x00\x00\x0e", OP),
};

START_TEST(test_my_sessions)
{
	RUN(proto_mysql, my_session);
	RUN(proto_mysql, my_session_deof);
	RUN(proto_mysql, my_prepared);
	RUN(proto_mysql, my_prepared_deof);
	RUN(proto_mysql, my_mariadb);
	RUN(proto_mysql, my_pam_dialog);
	RUN(proto_mysql, my_local_infile);
	RUN(proto_mysql, my_ssl);
	RUN(proto_mysql, my_refused_greeting);
	RUN(proto_mysql, my_auth_failed);
	RUN(proto_mysql, my_compress);
}
END_TEST

START_TEST(test_my_hostile)
{
	RUN(proto_mysql, my_client_first);
	RUN(proto_mysql, my_protocol9);
	RUN(proto_mysql, my_short_greeting);
	RUN(proto_mysql, my_empty_greeting);
	RUN_MY(my_unsolicited);
	RUN_MY(my_first_fe);
	RUN_MY(my_clone);
	RUN_MY(my_binlog_dump);
	RUN_MY(my_stray_seq);
	RUN_MY(my_empty_command);
	RUN_MY(my_bad_column_count);
	RUN_MY(my_truncated_ok);
	RUN_MY(my_queue);
}
END_TEST

static void put_le24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
}

START_TEST(test_my_big_packets)
{
	/* A COM_QUERY of exactly 0xFFFFFF + 100 payload bytes: one full packet plus a continuation.
	 * Then a text row whose first field is longer than 16 MiB: its first packet starts with 0xFE
	 * (8-byte length) and is 0xFFFFFF long, and must not be mistaken for the end of the rows, nor
	 * must its continuation (which also starts with 0xFE here). */
	const uint32_t full = 0xFFFFFF;
	size_t qlen = 4 + full + 4 + 100;
	uint8_t *q = malloc(qlen);
	struct proto_state st;

	ck_assert_ptr_nonnull(q);
	put_le24(q, full);
	q[3] = 0;
	q[4] = 0x03;
	memset(q + 5, ' ', full - 1);
	put_le24(q + 4 + full, 100);
	q[4 + full + 3] = 1;
	memset(q + 4 + full + 4, 'x', 100);

	uint64_t field = (uint64_t)full + 1; /* 9 + field = full + 10 payload bytes */
	size_t rlen = 4 + full + 4 + 10;
	uint8_t *row = malloc(rlen);
	ck_assert_ptr_nonnull(row);
	put_le24(row, full);
	row[3] = 3;
	row[4] = 0xFE;
	for (int i = 0; i < 8; i++)
		row[5 + i] = (uint8_t)(field >> (8 * i));
	memset(row + 13, 'y', full - 9);
	put_le24(row + 4 + full, 10);
	row[4 + full + 3] = 4;
	memset(row + 4 + full + 4, 0xFE, 10);

	for (int deof = 0; deof <= 1; deof++) {
		proto_mysql.init(&st);
		if (deof)
			feed_steps(&proto_mysql, &st, "my_big", MY_HANDSHAKE_DEOF, FEED_WHOLE);
		else
			feed_steps(&proto_mysql, &st, "my_big", MY_HANDSHAKE, FEED_WHOLE);
		feed_busy(&proto_mysql, &st, PROTO_CLIENT_TO_SERVER, q, qlen, "big query");
		/* column count 1, one definition, [EOF] */
		static const char meta[] = "\x01\x00\x00\x01\x01"
					   "\x1e\x00\x00\x02\x03" "def\x04test\x01t\x01t\x01v\x01v\x0c\x3f\x00\xff\xff\xff\xff\xfb\x00\x00\x00\x00\x00";
		feed_busy(&proto_mysql, &st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)meta, sizeof(meta) - 1, "meta");
		if (!deof)
			feed_busy(&proto_mysql, &st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\x05\x00\x00\x03\xfe\x00\x00\x02\x00", 9, "eof");
		feed_busy(&proto_mysql, &st, PROTO_SERVER_TO_CLIENT, row, rlen, "big row");
		if (deof)
			proto_mysql.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\x07\x00\x00\x05\xfe\x00\x00\x02\x00\x00\x00", 11);
		else
			proto_mysql.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\x05\x00\x00\x05\xfe\x00\x00\x02\x00", 9);
		ck_assert_msg(proto_mysql.is_idle(&st), "deprecate_eof=%d: not idle after the big row", deof);
	}

	/* A payload of exactly 0xFFFFFF must be followed by an (empty) continuation. */
	proto_mysql.init(&st);
	feed_steps(&proto_mysql, &st, "my_big", MY_HANDSHAKE, FEED_WHOLE);
	feed_busy(&proto_mysql, &st, PROTO_CLIENT_TO_SERVER, q, 4 + full, "exact query");
	proto_mysql.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x00\x00\x00\x01", 4);
	ck_assert(!proto_mysql.is_idle(&st));
	proto_mysql.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", 11);
	ck_assert(proto_mysql.is_idle(&st));
	free(q);
	free(row);
}
END_TEST

START_TEST(test_my_fresh)
{
	struct proto_state st;

	proto_mysql.init(&st);
	ck_assert(!proto_mysql.is_idle(&st));
	ck_assert(!proto_mysql.is_opaque(&st));
	ck_assert_str_eq(proto_mysql.name, "mysql");
}
END_TEST

START_TEST(test_my_refuse)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	ck_assert_int_eq(proto_mysql.refuse(in, out, "no writer available"), PROTO_REFUSE_DONE);
	/* ERR, sequence 0: code 1053 (ER_SERVER_SHUTDOWN), SQLSTATE 08S01. */
	EXPECT_BYTES(out, "\x1c\x00\x00\x00\xff\x1d\x04#08S01no writer available", "mysql refuse");

	/* Parse it the way pymysql does for a first packet: errno = data[1:3] (LE), and since
	 * data[3] == '#', the SQLSTATE is data[4:9] and the message data[9:]. libmariadb's
	 * ma_net_safe_read does the same (0xFF, uint2korr, '#', 5 chars). */
	const unsigned char *pkt = evbuffer_pullup(out, -1);
	uint32_t len = (uint32_t)pkt[0] | (uint32_t)pkt[1] << 8 | (uint32_t)pkt[2] << 16;
	const unsigned char *data = pkt + 4;
	ck_assert_uint_eq(len, evbuffer_get_length(out) - 4);
	ck_assert_uint_eq(pkt[3], 0);
	ck_assert_uint_eq(data[0], 0xFF);
	ck_assert_uint_eq((unsigned)(data[1] | data[2] << 8), 1053);
	ck_assert_uint_eq(data[3], '#');
	ck_assert(memcmp(data + 4, "08S01", 5) == 0);
	ck_assert(memcmp(data + 9, "no writer available", len - 9) == 0);
	evbuffer_free(in);
	evbuffer_free(out);
}
END_TEST

START_TEST(test_my_err_encoder)
{
	struct evbuffer *out = evbuffer_new();

	mysql_err_packet(out, 2, 1045, "28000", "Access denied");
	EXPECT_BYTES(out, "\x16\x00\x00\x02\xff\x15\x04#28000Access denied", "mysql ERR");
	evbuffer_drain(out, evbuffer_get_length(out));

	/* A malformed SQLSTATE would shift the message: replaced by HY000. NULL text is empty. */
	mysql_err_packet(out, 0, 1105, "08S0", NULL);
	EXPECT_BYTES(out, "\x09\x00\x00\x00\xff\x51\x04#HY000", "mysql ERR sanitized");
	evbuffer_free(out);
}
END_TEST

/* The CLIENT_SSL upgrade repoint conducts (proto_mysql.upgrade). */

/* auth = repoint for MySQL: repoint's greeting, the client's proof against a mysql.user hash, and
 * repoint's own login to the member (proto_mysql.login). */
static const char my_greeting8[] =
	"J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00"
	"\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00" "caching_sha2_password\x00";

static struct auth_users *my_users(const char *password)
{
	uint8_t s1[20], s2[20];
	char path[] = "/tmp/test-my-users-XXXXXX", err[200];
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	ck_assert(mysql_native_stage1(password, s1) && mysql_native_stage2(s1, s2));
	fprintf(f, "\"app\" \"*");
	for (int i = 0; i < 20; i++)
		fprintf(f, "%02X", s2[i]);
	fprintf(f, "\"\n\"plain\" \"%s\"\n", password);
	fclose(f);
	struct auth_users *u = auth_users_load(path, err, sizeof(err));
	unlink(path);
	ck_assert_msg(u != NULL, "%s", err);
	return u;
}

/* A HandshakeResponse41 (seq 1) for user with the answer to challenge from password. */
static void my_hello(struct evbuffer *out, const char *user, const uint8_t *challenge, const char *password,
		     const char *plugin)
{
	uint8_t p[300], s1[20];
	size_t n = 0;
	uint32_t caps = 0x200 | 0x8000 | 0x8 | 0x80000 | 0x1000000 | 0x2000;

	memcpy(p, &caps, 4);
	memset(p + 4, 0, 28);
	p[8] = 45;
	n = 32;
	memcpy(p + n, user, strlen(user) + 1);
	n += strlen(user) + 1;
	p[n++] = 20;
	ck_assert(mysql_native_stage1(password, s1) && mysql_native_answer(challenge, s1, p + n));
	n += 20;
	memcpy(p + n, "test", 5);
	n += 5;
	memcpy(p + n, plugin, strlen(plugin) + 1);
	n += strlen(plugin) + 1;
	uint8_t h[4] = {(uint8_t)n, 0, 0, 1};
	evbuffer_add(out, h, 4);
	evbuffer_add(out, p, n);
}

/* repoint's greeting in `out`: its challenge (and checks on what it offers). */
static void my_greeting_challenge(struct evbuffer *out, uint8_t challenge[20])
{
	size_t n = evbuffer_get_length(out);
	const uint8_t *g = evbuffer_pullup(out, -1);
	size_t off = 4 + 1 + strlen((const char *)g + 5) + 1;

	ck_assert_uint_eq(g[3], 0);
	ck_assert_str_eq((const char *)g + 5, "8.0.36");
	uint32_t caps = (uint32_t)g[off + 13] | (uint32_t)g[off + 14] << 8;
	ck_assert(!(caps & 0x800) && !(caps & 0x20));  /* no TLS, no compression offered */
	memcpy(challenge, g + off + 4, 8);
	memcpy(challenge + 8, g + off + 31, 12);
	ck_assert(memcmp(challenge, ":+\x1c\r^O`q", 8) != 0);  /* repoint's own, not the member's */
	ck_assert_str_eq((const char *)g + off + 44, "mysql_native_password");
	ck_assert_uint_eq(n, off + 44 + 22);
	evbuffer_drain(out, n);
}

/* A later login of l (a moved session) to a member that greets as MySQL 8 and takes repoint's hello:
 * what back says once the member's OK is in (what repoint sent after it is in up; the client hears
 * nothing). */
static enum proto_login_step my_relogin(struct proto_login *l, struct evbuffer *min, struct evbuffer *up,
					struct evbuffer *out)
{
	static const char ok[] = "\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00";
	const struct proto_login_ops *lo = proto_mysql.login;
	char err[300];

	lo->back_start(l, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	ck_assert_uint_eq(evbuffer_get_length(out), 0);
	evbuffer_drain(up, evbuffer_get_length(up));
	evbuffer_add(min, ok, sizeof(ok) - 1);
	return lo->back(l, min, up, out, err, sizeof(err));
}

/* The bytes in[0..n) cut in three at cut1 and cut2, each piece through the login's map -- the client's
 * requests (st NULL), or the member's answers with the tracker st -- give want[0..n), every byte once. */
static void my_mapped_in_cuts(struct proto_login *l, struct proto_state *st, const uint8_t *in, const uint8_t *want,
			      size_t n, size_t cut1, size_t cut2)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	uint8_t buf[256], got[256 + 8], head[4];
	size_t at = 0, h;
	const size_t cuts[] = {0, cut1, cut2, n};

	ck_assert_uint_le(n, sizeof(buf));
	memcpy(buf, in, n);
	for (unsigned k = 0; k + 1 < ARRAY_LEN(cuts); k++) {
		size_t len = cuts[k + 1] - cuts[k];
		size_t m = st == NULL ? lo->map_request(l, buf + cuts[k], len, head, &h)
				      : lo->map_answer(l, st, buf + cuts[k], len, head, &h);
		ck_assert_uint_le(h, 4);
		memcpy(got + at, head, h);
		at += h;
		memcpy(got + at, buf + cuts[k], m);
		at += m;
	}
	ck_assert_msg(at == n, "%zu of %zu, cut at %zu, %zu", at, n, cut1, cut2);
	ck_assert_msg(memcmp(got, want, n) == 0, "cut at %zu, %zu", cut1, cut2);
}

/* The end of a test's login and its buffers. */
static void my_login_free(struct proto_login *l, struct evbuffer *in, struct evbuffer *out, struct evbuffer *up,
			  struct evbuffer *min)
{
	proto_mysql.login->destroy(l);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
}

START_TEST(test_mysql_login)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	static const char ok[] = "\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00";
	char err[300];
	uint8_t challenge[20], s1[20], want[20];

	ck_assert(lo->member_first);
	for (int user = 0; user < 2; user++) {
		struct proto_login *l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
		struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
		/* The member speaks first; nothing goes to it before the client is in. */
		lo->back_start(l, up, NULL, false);
		ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_MORE);
		evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		ck_assert_uint_eq(evbuffer_get_length(up), 0);
		my_greeting_challenge(out, challenge);
		/* The client's answer, checked against the hash (app) or the password (plain). */
		my_hello(in, user ? "plain" : "app", challenge, "s3cret", "mysql_native_password");
		ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		/* repoint answers the member's challenge with SHA1(password), which the client's answer gave. */
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		const uint8_t *r = evbuffer_pullup(up, -1);
		size_t rn = evbuffer_get_length(up);
		ck_assert_uint_eq(r[3], 1);
		ck_assert_uint_eq(rn, 4 + (size_t)r[0]);
		size_t uoff = 4 + 32 + strlen(user ? "plain" : "app") + 1;
		ck_assert_uint_eq(r[uoff], 20);
		ck_assert(mysql_native_stage1("s3cret", s1) &&
			  mysql_native_answer((const uint8_t *)":+\x1c\r^O`q\x12#4EVgx\x09\x1a+<M", s1, want));
		ck_assert(memcmp(r + uoff + 1, want, 20) == 0);
		ck_assert_str_eq((const char *)r + uoff + 21, "test");
		ck_assert_str_eq((const char *)r + uoff + 26, "mysql_native_password");
		evbuffer_drain(up, rn);
		/* The member's OK goes to the client, numbered for it. */
		evbuffer_add(min, ok, sizeof(ok) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
		ck_assert(lo->told(l));
		ck_assert_uint_eq(evbuffer_get_length(out), sizeof(ok) - 1);
		evbuffer_drain(out, evbuffer_get_length(out));
		/* The tracker starts idle and movable; a lone SET is kept and sent after the next login. */
		struct proto_state ps;
		lo->track_idle(l, &ps);
		ck_assert(proto_mysql.is_idle(&ps) && proto_mysql.can_migrate(&ps));
		static const char set[] = "\x1d\x00\x00\x00\x03SET sql_mode = 'ANSI_QUOTES'";
		static const char set_ok[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00";
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)set, sizeof(set) - 1);
		ck_assert(proto_mysql.retryable(&ps));
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)set_ok, sizeof(set_ok) - 1);
		ck_assert(!proto_mysql.can_migrate(&ps));
		ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PACKET);
		ck_assert(proto_mysql.can_migrate(&ps));
		ck_assert(lo->replay(l, MY_REPLAY_PACKET, (const uint8_t *)set, sizeof(set) - 1, &ps));
		/* A moved session: the new member's challenge, no word to the client, the SET sent again. */
		ck_assert_int_eq(my_relogin(l, min, up, out), PROTO_LOGIN_MORE);
		ck_assert_uint_eq(evbuffer_get_length(up), sizeof(set) - 1);
		evbuffer_add(min, set_ok, sizeof(set_ok) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		/* Kept for the next client with the SET: reset, the start's database and character set again. */
		ck_assert(!lo->poolable(l));
		struct evbuffer *req = evbuffer_new();
		ck_assert(lo->reset_request(l, false, req));
		static const char want_req[] = "\x01\x00\x00\x00\x1f" "\x05\x00\x00\x00\x02test"
					       "\x1e\x00\x00\x00\x03SET collation_connection = 45";
		ck_assert_uint_gt(evbuffer_get_length(req), sizeof(want_req) - 1);
		ck_assert(memcmp(evbuffer_pullup(req, -1), want_req, sizeof(want_req) - 1) == 0);
		const uint8_t *last = evbuffer_pullup(req, -1) + sizeof(want_req) - 1;
		ck_assert_uint_eq(last[3], 0);
		ck_assert(memcmp(last + 5, "SET character_set_client = @@character_set_connection", 53) == 0);
		ck_assert_uint_eq(sizeof(want_req) - 1 + 4 + (size_t)(last[0] | last[1] << 8 | last[2] << 16), evbuffer_get_length(req));
		evbuffer_free(req);
		static const char oks[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
					  "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00";
		ck_assert_int_eq(lo->reset_answer((const uint8_t *)oks, sizeof(oks) - 1), 1);
		for (size_t cut = 0; cut < sizeof(oks) - 1; cut++)
			ck_assert_int_eq(lo->reset_answer((const uint8_t *)oks, cut), 0);
		static const char more[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
					   "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" "\x01";
		ck_assert_int_eq(lo->reset_answer((const uint8_t *)more, sizeof(more) - 1), -1);
		static const char refused[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
					      "\x17\x00\x00\x01\xff\x19\x04#42000Unknown database";
		ck_assert_int_eq(lo->reset_answer((const uint8_t *)refused, sizeof(refused) - 1), -1);
		/* A statement prepared (id 3: two were taken and closed before) moves too: the next login
		 * prepares it again, and the tracker there knows it open under the client's id. */
		static const char prep[] = "\x09\x00\x00\x00\x16SELECT ?";
		static const char prep_ok[] = "\x0c\x00\x00\x01\x00\x03\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00"
					      "\x04\x00\x00\x02\x03" "def";
		lo->track_idle(l, &ps);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)prep, sizeof(prep) - 1);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep_ok, sizeof(prep_ok) - 1);
		ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
		ck_assert(lo->replay(l, MY_REPLAY_PREPARE, (const uint8_t *)prep, sizeof(prep) - 1, &ps));
		ck_assert(!lo->poolable(l));
		lo->leaving(l, &ps);
		/* The new member numbers it 1 (a fresh thread), 6 (a cached thread goes on counting), or
		 * answers otherwise than it should. */
		static const uint32_t member_ids[] = {1, 6, 1, 1};
		for (unsigned c = 0; c < ARRAY_LEN(member_ids); c++) {
			const uint32_t mid = member_ids[c];
			ck_assert_int_eq(my_relogin(l, min, up, out), PROTO_LOGIN_MORE);
			const uint8_t *sent = evbuffer_pullup(up, -1);
			ck_assert_uint_eq(evbuffer_get_length(up), sizeof(set) - 1 + sizeof(prep) - 1);
			ck_assert(memcmp(sent, set, sizeof(set) - 1) == 0);
			ck_assert(memcmp(sent + sizeof(set) - 1, prep, sizeof(prep) - 1) == 0);
			evbuffer_drain(up, evbuffer_get_length(up));
			uint8_t pok[sizeof(prep_ok) - 1];
			memcpy(pok, prep_ok, sizeof(pok));
			pok[5] = (uint8_t)mid;
			if (c == 3)
				pok[11] = 2;  /* another parameter count than the first time */
			evbuffer_add(min, set_ok, sizeof(set_ok) - 1);
			evbuffer_add(min, pok, sizeof(pok));
			if (c == 3) {
				ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
				ck_assert_msg(strstr(err, "2 parameters (1 the first time)") != NULL, "%s", err);
				evbuffer_drain(min, evbuffer_get_length(min));
				continue;
			}
			ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
			char note[64];
			snprintf(note, sizeof(note), "ids mapped (client -> member): 3 -> %u", (unsigned)mid);
			ck_assert_msg(strstr(err, note) != NULL, "%s", err);   /* (for the log) */
			ck_assert_uint_eq(evbuffer_get_length(min), 0);
			ck_assert_uint_eq(evbuffer_get_length(out), 0);
			ck_assert_uint_eq(evbuffer_get_length(up), 0);
			lo->track_idle(l, &ps);
			uint32_t sid;
			uint16_t sparams;
			ck_assert(mysql_statement(&ps, 0, &sid, &sparams) && sid == 3 && sparams == 1);
			ck_assert(!mysql_statement(&ps, 1, &sid, &sparams));
			/* The client's requests on their way: its id 3 is the member's mid; the member's mid,
			 * which the client does not hold, names nothing open there (3); the member's later ids
			 * and MariaDB's "the last prepared" (0xFFFFFFFF) are the same on both sides; a query's
			 * bytes are left alone. Every cut of the stream gives the same bytes. */
			static const uint8_t reqs[] = "\x0b\x00\x00\x00\x17\x03\x00\x00\x00\x00\x01\x00\x00\x00\x00"
						      "\x05\x00\x00\x00\x19" "\x06\x00\x00\x00"
						      "\x05\x00\x00\x00\x19" "\x01\x00\x00\x00"
						      "\x05\x00\x00\x00\x1a" "\x07\x00\x00\x00"
						      "\x0a\x00\x00\x00\x17" "\xff\xff\xff\xff" "\x00\x01\x00\x00\x00"
						      "\x05\x00\x00\x00\x03" "\x19\x03\x00\x00"
						      "\x00\x00\x00\x00";
			const size_t nreq = sizeof(reqs) - 1;
			uint8_t mapped[sizeof(reqs) - 1];
			memcpy(mapped, reqs, nreq);
			mapped[5] = (uint8_t)mid;          /* 3 -> mid */
			if (mid == 6)
				mapped[20] = 3;            /* 6 -> 3 */
			else
				mapped[29] = 3;            /* 1 -> 3 */
			for (size_t cut1 = 0; cut1 <= nreq; cut1++)
				for (size_t cut2 = cut1; cut2 <= nreq; cut2 += 3)
					my_mapped_in_cuts(l, NULL, reqs, mapped, nreq, cut1, cut2);
			/* A statement the client prepares on the new member: the id the member gives it that the
			 * client knows as another (its 3 when the member numbered the moved one 1) comes back as
			 * the one the member's 3 stands for (1), another as it is; in every cut of the answer,
			 * and the tracker has it open under that id. */
			const uint32_t member_new = mid == 1 ? 3 : 7, client_new = mid == 1 ? 1 : 7;
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)prep, sizeof(prep) - 1);
			const size_t nans = sizeof(prep_ok) - 1;
			uint8_t ans[sizeof(prep_ok) - 1], ans_mapped[sizeof(prep_ok) - 1];
			memcpy(ans, prep_ok, nans);
			ans[5] = (uint8_t)member_new;
			memcpy(ans_mapped, ans, nans);
			ans_mapped[5] = (uint8_t)client_new;
			for (size_t cut1 = 0; cut1 <= nans; cut1++)
				for (size_t cut2 = cut1; cut2 <= nans; cut2++) {
					struct proto_state t = ps;
					my_mapped_in_cuts(l, &t, ans, ans_mapped, nans, cut1, cut2);
					ck_assert(mysql_statement(&t, 1, &sid, &sparams) && sid == client_new && sparams == 1);
				}
			/* What the tracker cannot follow (an answer to nothing) while ids are mapped: nothing of it
			 * goes on (a prepare-OK could pass with the member's id). */
			struct proto_state lost;
			uint8_t unsolicited[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", uhead[4];
			size_t uh;
			lo->track_idle(l, &lost);
			ck_assert_uint_eq(lo->map_answer(l, &lost, unsolicited, sizeof(unsolicited) - 1, uhead, &uh), SIZE_MAX);
		}
		evbuffer_drain(min, evbuffer_get_length(min));
		/* Closed since, it is not prepared again. */
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x05\x00\x00\x00\x19\x03\x00\x00\x00", 9);
		lo->leaving(l, &ps);
		ck_assert_int_eq(my_relogin(l, min, up, out), PROTO_LOGIN_MORE);
		ck_assert_uint_eq(evbuffer_get_length(up), sizeof(set) - 1);   /* the SET alone */
		evbuffer_drain(up, evbuffer_get_length(up));
		my_login_free(l, in, out, up, min);
	}
	auth_users_unref(users);
}
END_TEST

static void my_packet(struct evbuffer *b, uint8_t seq, const void *payload, size_t n)
{
	uint8_t h[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), seq};

	evbuffer_add(b, h, 4);
	evbuffer_add(b, payload, n);
}

/* A MySQL 8 member whose user has caching_sha2_password: it switches repoint's login to it. The answer
 * to its nonce is checked against what a real client answers (pymysql's _auth.scramble_caching_sha2,
 * Debian's python3-pymysql: SHA256("s3cret") XOR SHA256(SHA256(SHA256("s3cret")) + nonce)); then the
 * fast path, the full path over TLS (the password
 * itself), and the refusals: a hash-only user (the answer needs the password), full authentication
 * without TLS. */
START_TEST(test_mysql_login_sha2)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	static const char sw[] = "\xfe" "caching_sha2_password\x00" "abcdefghijklmnopqrst\x00";
	static const uint8_t want[32] = {0x56, 0x61, 0xac, 0x17, 0xce, 0xc0, 0xe6, 0x00, 0x1d, 0x37, 0x47,
					 0xb3, 0xaa, 0xa0, 0xd0, 0xc1, 0x92, 0x7f, 0xdc, 0x43, 0xc5, 0x6d,
					 0xee, 0xab, 0x05, 0xd4, 0xc4, 0x2d, 0x73, 0xb2, 0xb6, 0x42};
	static const char ok[] = "\x00\x00\x00\x02\x00\x00\x00";
	enum { FAST, FULL_TLS, FULL_PLAIN, HASH_ONLY } cases[] = {FAST, FULL_TLS, FULL_PLAIN, HASH_ONLY};
	char err[300];
	uint8_t challenge[20];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		bool tls = cases[c] == FULL_TLS;
		struct proto_login *l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
		struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
		lo->back_start(l, up, NULL, tls);
		evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		my_greeting_challenge(out, challenge);
		my_hello(in, cases[c] == HASH_ONLY ? "app" : "plain", challenge, "s3cret", "mysql_native_password");
		ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
		uint8_t seq = 2;   /* the switch's number: after the hello (1), or the TLS request and the hello */
		if (tls) {
			ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_TLS);
			evbuffer_drain(up, evbuffer_get_length(up));
			seq = 3;
		}
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		evbuffer_drain(up, evbuffer_get_length(up));
		my_packet(min, seq, sw, sizeof(sw) - 1);
		if (cases[c] == HASH_ONLY) {
			ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
			ck_assert_msg(strstr(err, "needs the password") != NULL, "%s", err);
			goto next;
		}
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		const uint8_t *a = evbuffer_pullup(up, -1);
		ck_assert_uint_eq(evbuffer_get_length(up), 4 + 32);
		ck_assert_uint_eq(a[3], seq + 1);
		ck_assert(memcmp(a + 4, want, 32) == 0);
		evbuffer_drain(up, evbuffer_get_length(up));
		my_packet(min, seq + 2, cases[c] == FAST ? "\x01\x03" : "\x01\x04", 2);
		if (cases[c] == FULL_PLAIN) {
			ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
			ck_assert_msg(strstr(err, "over TLS only") != NULL, "%s", err);
			ck_assert_uint_eq(evbuffer_get_length(up), 0);   /* the password never went */
			goto next;
		}
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		if (cases[c] == FULL_TLS) {
			a = evbuffer_pullup(up, -1);
			ck_assert_uint_eq(evbuffer_get_length(up), 4 + 7);
			ck_assert_uint_eq(a[3], seq + 3);
			ck_assert(memcmp(a + 4, "s3cret", 7) == 0);
			evbuffer_drain(up, evbuffer_get_length(up));
		} else {
			ck_assert_uint_eq(evbuffer_get_length(up), 0);
		}
		my_packet(min, cases[c] == FAST ? seq + 3 : seq + 4, ok, sizeof(ok) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
		ck_assert(lo->told(l));
	next:
		my_login_free(l, in, out, up, min);
	}
	auth_users_unref(users);
}
END_TEST

START_TEST(test_mysql_login_refusals)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
	char err[300];
	uint8_t challenge[20];
	struct proto_login *l;
	static const struct {
		const char *user, *password, *plugin;
	} bad[] = {{"app", "wrong", "mysql_native_password"}, {"nobody", "s3cret", "mysql_native_password"}};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
		lo->back_start(l, up, NULL, false);
		evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
		ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
		my_greeting_challenge(out, challenge);
		my_hello(in, bad[i].user, challenge, bad[i].password, bad[i].plugin);
		ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_FAIL);
		const uint8_t *e = evbuffer_pullup(out, -1);
		ck_assert_uint_eq(e[3], 2);
		ck_assert_uint_eq(e[4], 0xFF);
		ck_assert_uint_eq(e[5] | e[6] << 8, 1045);
		ck_assert(memcmp(e + 7, "#28000Access denied for user '", 30) == 0);
		ck_assert_uint_eq(evbuffer_get_length(up), 0);  /* nothing reached the member */
		evbuffer_drain(out, evbuffer_get_length(out));
		lo->destroy(l);
	}
	/* A client answering for another method is asked again, for mysql_native_password. */
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(l, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	lo->back(l, min, up, out, err, sizeof(err));
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "caching_sha2_password");
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_MORE);
	const uint8_t *sw = evbuffer_pullup(out, -1);
	ck_assert_uint_eq(sw[3], 2);
	ck_assert_uint_eq(sw[4], 0xFE);
	ck_assert_str_eq((const char *)sw + 5, "mysql_native_password");
	ck_assert(memcmp(sw + 5 + 22, challenge, 20) == 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	uint8_t s1[20], a[20], h[4] = {20, 0, 0, 3};
	ck_assert(mysql_native_stage1("s3cret", s1) && mysql_native_answer(challenge, s1, a));
	evbuffer_add(in, h, 4);
	evbuffer_add(in, a, 20);
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
	/* The member refuses: its own error reaches the client, numbered for it. */
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	static const char denied[] = "\x1e\x00\x00\x02\xff\x15\x04#28000Access denied, member";
	evbuffer_add(min, denied, sizeof(denied) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert_str_eq(err, "1045: Access denied, member");
	ck_assert_uint_eq(evbuffer_pullup(out, -1)[3], 4);
	evbuffer_drain(out, evbuffer_get_length(out));
	lo->destroy(l);
	/* tls: once the client is in, the member is asked for TLS (seq 1, the client's capabilities and
	 * CLIENT_SSL), and after the handshake the login goes on with seq 2. */
	evbuffer_drain(up, evbuffer_get_length(up));
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(l, up, NULL, true);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	ck_assert_uint_eq(evbuffer_get_length(up), 0);
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_TLS);
	const uint8_t *q = evbuffer_pullup(up, -1);
	ck_assert_uint_eq(evbuffer_get_length(up), 36);
	ck_assert(q[0] == 32 && q[3] == 1 && (q[5] & 0x08) && (q[5] & 0x02));  /* CLIENT_SSL, PROTOCOL_41 */
	evbuffer_drain(up, 36);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	q = evbuffer_pullup(up, -1);
	ck_assert(q[3] == 2 && (q[5] & 0x08));
	evbuffer_drain(up, evbuffer_get_length(up));
	/* A member that asks for the password in clear (RDS IAM, PAM) gets the member password, over TLS only. */
	lo->set_member_password(l, "token-for-the-member");
	static const char clear[] = "\x16\x00\x00\x03\xfemysql_clear_password\x00";
	evbuffer_add(min, clear, sizeof(clear) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	q = evbuffer_pullup(up, -1);
	ck_assert_uint_eq(evbuffer_get_length(up), 4 + 21);
	ck_assert(q[0] == 21 && q[3] == 4 && memcmp(q + 4, "token-for-the-member", 21) == 0);
	evbuffer_drain(up, evbuffer_get_length(up));
	lo->destroy(l);
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(l, up, "pw", false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	lo->back(l, min, up, out, err, sizeof(err));
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	evbuffer_drain(up, evbuffer_get_length(up));
	evbuffer_add(min, clear, sizeof(clear) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert(strstr(err, "not TLS") != NULL);
	ck_assert_uint_eq(evbuffer_get_length(up), 0);
	lo->destroy(l);
	/* ... and a member that offers no TLS is refused, never talked to in plaintext. */
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(l, up, NULL, true);
	char plain[sizeof(my_greeting8)];
	memcpy(plain, my_greeting8, sizeof(plain));
	plain[4 + 1 + 7 + 13 + 1] &= (char)~0x08;  /* capabilities, second byte: CLIENT_SSL off */
	evbuffer_add(min, plain, sizeof(plain) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert(strstr(err, "offers no TLS") != NULL);
	ck_assert_uint_eq(evbuffer_get_length(up), 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	lo->destroy(l);
	/* A client that talks before the greeting is kept waiting within a packet's bound, then refused. */
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	{
		static uint8_t junk[16384];
		for (int i = 0; i < 4; i++) {
			evbuffer_add(in, junk, sizeof(junk));
			ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_MORE);
		}
		evbuffer_add(in, junk, 8);
		ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_FAIL);
		ck_assert_uint_eq(evbuffer_pullup(out, -1)[4], 0xFF);
		evbuffer_drain(in, evbuffer_get_length(in));
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	lo->destroy(l);
	/* An ERR in place of the greeting (shutting down) goes to the client as it is: the session starts again elsewhere. */
	l = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(l, up, NULL, false);
	static const char shutdown[] = "\x1f\x00\x00\x00\xff\x1d\x04#08S01Server shutdown in progress";
	evbuffer_add(min, shutdown, sizeof(shutdown) - 1);
	ck_assert_int_eq(lo->back(l, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert_uint_eq(proto_mysql.startup_refusal(evbuffer_pullup(out, -1), evbuffer_get_length(out)),
			  evbuffer_get_length(out));
	lo->destroy(l);
	auth_users_unref(users);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
}
END_TEST

/* Server connections kept for the next client: what goes with a kept connection (the member's
 * greeting and id), a client greeted from it, and told it is in without a member login. */
START_TEST(test_mysql_login_pool)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
	struct evbuffer *params = evbuffer_new();
	static const char ok[] = "\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00";
	char err[200];
	uint8_t challenge[20], mk[PROTO_KEY_MAX];
	bool has_key = false;
	size_t n1, n2;

	ck_assert(lo->goodbye((const uint8_t *)"\x01\x00\x00\x00\x01", 5));
	ck_assert(!lo->goodbye((const uint8_t *)"\x01\x00\x00\x00\x0e", 5));
	struct proto_login *a = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	lo->back_start(a, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	lo->back(a, min, up, out, err, sizeof(err));
	my_greeting_challenge(out, challenge);
	ck_assert(!lo->poolable(a));
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(a, in, out), PROTO_LOGIN_DONE);
	lo->back(a, min, up, out, err, sizeof(err));
	evbuffer_add(min, ok, sizeof(ok) - 1);
	ck_assert_int_eq(lo->back(a, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
	evbuffer_drain(out, evbuffer_get_length(out));
	ck_assert(lo->poolable(a));
	ck_assert(lo->hand_over(a, params, mk, &has_key) && has_key && memcmp(mk, "\r\x00\x00\x00", 4) == 0);
	ck_assert_uint_eq(evbuffer_get_length(params), sizeof(my_greeting8) - 1 - 4);
	/* The next client: greeted from the kept greeting (no member), its answer checked, then in. */
	struct proto_login *b = lo->create(CLIENT_AUTH_MYSQL_NATIVE, users);
	ck_assert(lo->greet(b, evbuffer_pullup(params, -1), evbuffer_get_length(params), out));
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(b, in, out), PROTO_LOGIN_DONE);
	const uint8_t *ka = lo->startup(a, &n1), *kb = lo->startup(b, &n2);
	ck_assert(n1 == n2 && memcmp(ka, kb, n1) == 0);   /* the same start: the same key */
	lo->adopt(b, evbuffer_pullup(params, -1), evbuffer_get_length(params), mk, true, out);
	ck_assert(lo->told(b));
	const uint8_t *o = evbuffer_pullup(out, -1);
	ck_assert(evbuffer_get_length(out) == 11 && o[3] == 2 && o[4] == 0x00);
	struct proto_state ps;
	lo->track_idle(b, &ps);
	ck_assert(proto_mysql.is_idle(&ps) && proto_mysql.can_migrate(&ps));
	uint8_t key[PROTO_KEY_MAX], got[PROTO_KEY_MAX];
	size_t klen;
	ck_assert(proto_mysql.session_key(&ps, key, &klen) && lo->member_key(b, key, klen, got) && memcmp(got, mk, 4) == 0);
	/* COM_CHANGE_USER to "plain": checked against repoint's challenge, written again with a proof for
	 * the member's; the member asks again (MariaDB does), repoint answers; its OK goes to the client. */
	uint8_t cu[128], s1[20], pa[20];
	size_t cn = 4;
	cu[cn++] = 0x11;
	memcpy(cu + cn, "plain", 6);
	cn += 6;
	cu[cn++] = 20;
	ck_assert(mysql_native_stage1("s3cret", s1) && mysql_native_answer(challenge, s1, cu + cn));
	cn += 20;
	memcpy(cu + cn, "test\0\x2d\x00mysql_native_password", 29);
	cn += 29;
	cu[0] = (uint8_t)(cn - 4);
	cu[1] = cu[2] = cu[3] = 0;
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_drain(up, evbuffer_get_length(up));
	ck_assert_int_eq(lo->change_user(b, cu, cn, up, out), 1);
	const uint8_t *w = evbuffer_pullup(up, -1);
	ck_assert(w[3] == 0 && w[4] == 0x11 && strcmp((const char *)w + 5, "plain") == 0 && w[11] == 20);
	ck_assert(mysql_native_answer((const uint8_t *)":+\x1c\r^O`q\x12#4EVgx\x09\x1a+<M", s1, pa));
	ck_assert(memcmp(w + 12, pa, 20) == 0);
	evbuffer_drain(up, evbuffer_get_length(up));
	static const char sw[] = ",\x00\x00\x01\xfemysql_native_password\x00:+\x1c\r^O`q\x12#4EVgx\x09\x1a+<M\x00";
	evbuffer_add(min, sw, sizeof(sw) - 1);
	ck_assert_int_eq(lo->back(b, min, up, out, err, sizeof(err)), PROTO_LOGIN_MORE);
	w = evbuffer_pullup(up, -1);
	ck_assert(w[0] == 20 && w[3] == 2 && memcmp(w + 4, pa, 20) == 0);
	evbuffer_drain(up, evbuffer_get_length(up));
	static const char ok3[] = "\x07\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00";
	evbuffer_add(min, ok3, sizeof(ok3) - 1);
	ck_assert_int_eq(lo->back(b, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
	ck_assert(evbuffer_get_length(out) == 11 && evbuffer_pullup(out, -1)[3] == 1);
	ck_assert_str_eq(lo->user(b), "plain");
	evbuffer_drain(out, evbuffer_get_length(out));
	/* A character set a handshake cannot name (id above 255): the session cannot log in elsewhere. */
	cu[4 + 1 + 6 + 1 + 20 + 5] = 0x00;
	cu[4 + 1 + 6 + 1 + 20 + 6] = 0x09;
	ck_assert_int_eq(lo->change_user(b, cu, cn, up, out), 1);
	evbuffer_drain(up, evbuffer_get_length(up));
	evbuffer_add(min, ok3, sizeof(ok3) - 1);
	ck_assert_int_eq(lo->back(b, min, up, out, err, sizeof(err)), PROTO_LOGIN_DONE);
	evbuffer_drain(out, evbuffer_get_length(out));
	lo->back_start(b, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	ck_assert_int_eq(lo->back(b, min, up, out, err, sizeof(err)), PROTO_LOGIN_FAIL);
	ck_assert(strstr(err, "character set (id 2304)") != NULL);
	ck_assert_uint_eq(evbuffer_get_length(up), 0);
	/* A wrong proof is refused at once, nothing to the member. */
	cu[12] ^= 1;
	ck_assert_int_eq(lo->change_user(b, cu, cn, up, out), 0);
	ck_assert_uint_eq(evbuffer_get_length(up), 0);
	ck_assert(evbuffer_pullup(out, -1)[4] == 0xFF);
	lo->destroy(a);
	lo->destroy(b);
	auth_users_unref(users);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
	evbuffer_free(params);
}
END_TEST

/* What a query leaves on the server, as the tracker of a session with repoint's login reads it. */
START_TEST(test_my_session_state)
{
	static const struct {
		const char *q;
		int replay;          /* MY_REPLAY_PACKET, or 0 */
		const char *why;     /* the unmovable reason, or NULL */
	} cases[] = {
		{"SET NAMES utf8mb4", MY_REPLAY_PACKET, NULL},
		{"set autocommit=0", MY_REPLAY_PACKET, NULL},
		{"SET @a = 1, @b = 'x'", MY_REPLAY_PACKET, NULL},
		{"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", MY_REPLAY_PACKET, NULL},
		{"USE other", MY_REPLAY_PACKET, NULL},
		{"/*!40101 SET NAMES utf8 */", MY_REPLAY_PACKET, NULL},
		{"-- a comment\nSET NAMES latin1", MY_REPLAY_PACKET, NULL},
		{"SET GLOBAL read_only = 1", 0, NULL},
		{"SELECT 'a@b.c', `x@y`, \"@z\" FROM t -- @x", 0, NULL},
		{"SELECT @@version, @@session.sql_mode", 0, NULL},
		{"/* SET NAMES x */ SELECT 1", 0, NULL},
		{"SELECT 'it''s @x', 'a\\'@y'", 0, NULL},
		{"UPDATE t SET a = 1", 0, NULL},
		{"SET x = (SELECT 1)", 0, "set_other"},
		{"SET TRANSACTION ISOLATION LEVEL READ COMMITTED", 0, "set_other"},
		{"SET GLOBAL a = 1, b = 2", 0, "set_other"},
		{"SELECT @x := 1", 0, "user_variable"},
		{"SELECT a INTO @x FROM t", 0, "user_variable"},
		{"CREATE TEMPORARY TABLE t (a INT)", 0, "temporary_table"},
		{"SELECT GET_LOCK('a', 0)", 0, "lock"},
		{"LOCK TABLES t WRITE", 0, "lock"},
		{"PREPARE s FROM 'SELECT 1'", 0, "prepare"},
		{"CALL p()", 0, "call"},
		{"SELECT 1; SET @x = 1", 0, "set_not_alone"},
		{"SET a = 1; SELECT 1", 0, "set_not_alone"},
	};
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	struct proto_login *l = lo->create(CLIENT_AUTH_TRUST, users);
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
	static const char ok[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00";
	char err[200];
	uint8_t challenge[20];

	lo->back_start(l, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	lo->back(l, min, up, out, err, sizeof(err));
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proto_state ps;
		size_t n = strlen(cases[i].q);
		uint8_t h[5] = {(uint8_t)(n + 1), 0, 0, 0, 0x03};
		lo->track_idle(l, &ps);
		/* In two pieces, cut anywhere: the reader keeps its place. */
		for (size_t cut = 0; cut <= n; cut += n / 3 + 1) {
			lo->track_idle(l, &ps);
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, h, 5);
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)cases[i].q, cut);
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)cases[i].q + cut, n - cut);
			proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok, sizeof(ok) - 1);
			ck_assert_msg(proto_mysql.is_idle(&ps), "%s", cases[i].q);
			const char *why = proto_mysql.unmovable_reason(&ps);
			ck_assert_msg(cases[i].why == NULL ? why == NULL : why != NULL && strcmp(why, cases[i].why) == 0,
				      "%s: %s", cases[i].q, why ? why : "(movable)");
			ck_assert_msg(proto_mysql.replayable(&ps) == cases[i].replay, "%s", cases[i].q);
			ck_assert_msg(proto_mysql.can_migrate(&ps) == (cases[i].why == NULL), "%s", cases[i].q);
		}
	}
	/* COM_INIT_DB is replayed; COM_STMT_PREPARE keeps the session; COM_RESET_CONNECTION forgets it all. */
	struct proto_state ps;
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x06\x00\x00\x00\x02other", 10);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok, sizeof(ok) - 1);
	ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PACKET);
	/* A prepared statement moves with the session (repoint's login prepares it again under its id):
	 * the tracker names it once for the login to keep, and follows which are open. */
	static const char prep_ok[] = "\x0c\x00\x00\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
	uint32_t sid;
	uint16_t sparams;
	for (int round = 0; round < 2; round++) {
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x16SELECT 1", 13);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep_ok, sizeof(prep_ok) - 1);
		ck_assert(proto_mysql.is_idle(&ps) && !proto_mysql.can_migrate(&ps));
		ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
		ck_assert_int_eq(proto_mysql.replayable(&ps), 0);
		ck_assert(proto_mysql.can_migrate(&ps));
		ck_assert(mysql_statement(&ps, 0, &sid, &sparams) && sid == 7 && sparams == 0);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x05\x00\x00\x00\x19\x08\x00\x00\x00", 9);
		ck_assert(mysql_statement(&ps, 0, &sid, &sparams) && sid == 7);  /* another id: still open */
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x05\x00\x00\x00\x19\x07\x00\x00\x00", 9);
		ck_assert(!mysql_statement(&ps, 0, &sid, &sparams) && proto_mysql.can_migrate(&ps));
	}
	/* Executed with its parameters' types (Connector/C, Go): it moves; without them (the server's
	 * memory of the last ones, Connector/J), or with a cursor, the session stays for good. */
	{
		/* (CLIENT_DEPRECATE_EOF both ways: two parameter and one column definitions, no EOF) */
		static const char prep2[] = "\x0c\x00\x00\x01\x00\x09\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00"
					    "\x04\x00\x00\x02\x03" "def" "\x04\x00\x00\x03\x03" "def"
					    "\x04\x00\x00\x04\x03" "def";
		/* execute id 9: flags, iterations, NULL bitmap (1 byte: 2 parameters), types flag, types, values */
		static const char ex_types[] = "\x18\x00\x00\x00\x17\x09\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01"
					       "\x03\x00\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00";
		static const char ex_bare[] = "\x14\x00\x00\x00\x17\x09\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00"
					      "\x01\x00\x00\x00\x02\x00\x00\x00";
		static const char res_ok[] = "\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00";
		for (int bare = 0; bare < 2; bare++) {
			lo->track_idle(l, &ps);
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x0a\x00\x00\x00\x16SELECT ?,?", 14);
			proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep2, sizeof(prep2) - 1);
			ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
			ck_assert(mysql_statement(&ps, 0, &sid, &sparams) && sid == 9 && sparams == 2);
			ck_assert(proto_mysql.is_idle(&ps) && proto_mysql.can_migrate(&ps));
			const char *ex = bare ? ex_bare : ex_types;
			size_t exn = bare ? sizeof(ex_bare) - 1 : sizeof(ex_types) - 1;
			for (size_t i = 0; i < exn; i++)   /* a byte at a time: the flag read wherever it falls */
				proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ex + i, 1);
			/* Refused read-only, an execution with its types goes to the new writer as it came. */
			ck_assert_msg(proto_mysql.retryable(&ps) == !bare, "bare %d", bare);
			proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)res_ok, sizeof(res_ok) - 1);
			ck_assert(proto_mysql.is_idle(&ps));
			ck_assert_msg(proto_mysql.can_migrate(&ps) == !bare, "bare %d", bare);
			if (bare)
				ck_assert_str_eq(proto_mysql.unmovable_reason(&ps), "prepared_statement");
		}
		lo->track_idle(l, &ps);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x0a\x00\x00\x00\x16SELECT ?,?", 14);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep2, sizeof(prep2) - 1);
		ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
		char cursor[sizeof(ex_types)];
		memcpy(cursor, ex_types, sizeof(ex_types));
		cursor[9] = 1;   /* CURSOR_TYPE_READ_ONLY */
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)cursor, sizeof(cursor) - 1);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)res_ok, sizeof(res_ok) - 1);
		ck_assert(!proto_mysql.can_migrate(&ps));
		/* A statement with a high id (a cached thread's count goes on) moves as any other (the next
		 * login maps it); a client that closes each after use (Go) keeps nothing in the login. */
		static const char prep_high[] = "\x0c\x00\x00\x01\x00\xd0\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00";
		static const char sel1[] = "\x09\x00\x00\x00\x16SELECT 1";
		lo->track_idle(l, &ps);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)sel1, sizeof(sel1) - 1);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep_high, sizeof(prep_high) - 1);
		ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
		ck_assert(proto_mysql.can_migrate(&ps) && proto_mysql.unmovable_reason(&ps) == NULL);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x05\x00\x00\x00\x19\xd0\x07\x00\x00", 9);
		ck_assert(proto_mysql.can_migrate(&ps) && proto_mysql.unmovable_reason(&ps) == NULL);
		for (uint8_t id = 1; id < 20; id++) {
			char pok[sizeof(prep_ok)], close[] = "\x05\x00\x00\x00\x19\x00\x00\x00\x00";
			memcpy(pok, prep_ok, sizeof(prep_ok));
			pok[5] = (char)id;
			close[5] = (char)id;
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)sel1, sizeof(sel1) - 1);
			proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)pok, sizeof(pok) - 1);
			ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
			ck_assert(lo->replay(l, MY_REPLAY_PREPARE, (const uint8_t *)sel1, sizeof(sel1) - 1, &ps));
			proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)close, sizeof(close) - 1);
			ck_assert(proto_mysql.can_migrate(&ps));
		}
		/* (19 kept and closed: the login holds 8 at most, so it let the closed ones go; the last goes
		 * when the session leaves its server) */
		lo->leaving(l, &ps);
		/* Two prepares in flight at once: which the session kept last is not the one answered. */
		lo->track_idle(l, &ps);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x16SELECT 1", 13);
		proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x16SELECT 2", 13);
		proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep_ok, sizeof(prep_ok) - 1);
		ck_assert_int_eq(proto_mysql.replayable(&ps), 0);
		ck_assert_str_eq(proto_mysql.unmovable_reason(&ps), "prepared_statement");
		lo->track_idle(l, &ps);
	}
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x16SELECT 1", 13);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)prep_ok, sizeof(prep_ok) - 1);
	ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_PREPARE);
	ck_assert(mysql_statement(&ps, 0, &sid, &sparams));
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x01\x00\x00\x00\x1f", 5);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok, sizeof(ok) - 1);
	ck_assert_int_eq(proto_mysql.replayable(&ps), MY_REPLAY_RESET);
	ck_assert(proto_mysql.can_migrate(&ps) && !mysql_statement(&ps, 0, &sid, &sparams));
	/* A SET inside a transaction stays where it is. */
	static const char begin_ok[] = "\x07\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00";
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x06\x00\x00\x00\x03" "BEGIN", 10);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)begin_ok, sizeof(begin_ok) - 1);
	ck_assert(!proto_mysql.is_idle(&ps) && proto_mysql.at_rest(&ps));   /* (a goodbye here: reset) */
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x0a\x00\x00\x00\x03SET a = 1", 14);
	ck_assert(!proto_mysql.at_rest(&ps));
	ck_assert(!proto_mysql.retryable(&ps));
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)begin_ok, sizeof(begin_ok) - 1);
	ck_assert_str_eq(proto_mysql.unmovable_reason(&ps), "set_not_alone");
	/* A query in flight when the server went away: its outcome is unknown, and says so (2013, as a lost
	 * connection does: never an error of the server's, which would say it did not run). */
	lo->track_idle(l, &ps);
	uint32_t owed = 0;
	ck_assert(!proto_mysql.inflight_lost(&ps, &owed));
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x0e\x00\x00\x00\x03INSERT t VALUES", 18);
	ck_assert(proto_mysql.inflight_lost(&ps, &owed) && owed == 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x03SELECT 1", 13);
	ck_assert(proto_mysql.inflight_lost(&ps, &owed) && owed == 2);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\x07\x00\x00", 3);  /* an answer begun */
	ck_assert(!proto_mysql.inflight_lost(&ps, &owed));
	struct evbuffer *u = evbuffer_new();
	proto_mysql.outcome_unknown(u, "gone");
	ck_assert(memcmp(evbuffer_pullup(u, -1), "\x0d\x00\x00\x01\xff\xdd\x07#08S01gone", 17) == 0);
	evbuffer_free(u);
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x06\x00\x00\x00\x03" "BEGIN", 10);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)begin_ok, sizeof(begin_ok) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x09\x00\x00\x00\x03SELECT 1", 13);
	ck_assert(!proto_mysql.inflight_lost(&ps, &owed));  /* a transaction was open: lost with it */
	/* KILL [QUERY|CONNECTION] n, alone: the id it names, and the same request naming another. */
	static const struct {
		const char *q;
		uint32_t id;
		const char *rewritten;   /* with id 7 */
	} kills[] = {
		{"KILL QUERY 1073741999", 1073741999, "KILL QUERY 7"},
		{"  kill 42 ;", 42, "KILL 7"},
		{"Kill Connection\t5\n", 5, "KILL CONNECTION 7"},
		{"KILL QUERY 42; SELECT 1", 0, NULL},
		{"KILL QUERY ID 42", 0, NULL},
		{"KILL QUERY 4294967296", 0, NULL},
		{"KILLQUERY 4", 0, NULL},
		{"SELECT 1", 0, NULL},
	};
	for (size_t i = 0; i < sizeof(kills) / sizeof(kills[0]); i++) {
		uint8_t pkt[64], key[PROTO_KEY_MAX];
		size_t n = strlen(kills[i].q), klen = 0;
		pkt[0] = (uint8_t)(n + 1);
		pkt[1] = pkt[2] = pkt[3] = 0;
		pkt[4] = 0x03;
		memcpy(pkt + 5, kills[i].q, n);
		size_t k = proto_mysql.kill_request(pkt, n + 5, key, &klen);
		ck_assert_msg(k == (kills[i].rewritten ? n + 5 : 0), "%s", kills[i].q);
		if (k == 0)
			continue;
		ck_assert_uint_eq(klen, 4);
		ck_assert_uint_eq((uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 | (uint32_t)key[3] << 24,
				  kills[i].id);
		struct evbuffer *b = evbuffer_new();
		proto_mysql.kill_rewrite(pkt, n + 5, (const uint8_t *)"\x07\x00\x00\x00", 4, b);
		const uint8_t *w = evbuffer_pullup(b, -1);
		size_t wn = strlen(kills[i].rewritten);
		ck_assert_uint_eq(evbuffer_get_length(b), wn + 5);
		ck_assert(w[0] == wn + 1 && w[3] == 0 && w[4] == 0x03 && memcmp(w + 5, kills[i].rewritten, wn) == 0);
		evbuffer_free(b);
	}
	/* The session's key is the greeting's connection id, with repoint's login only. */
	uint8_t skey[PROTO_KEY_MAX];
	size_t sklen = 0;
	lo->track_idle(l, &ps);
	ck_assert(proto_mysql.session_key(&ps, skey, &sklen) && sklen == 4 && (skey[3] & 0xC0) == 0x40);
	uint8_t mk[PROTO_KEY_MAX];
	ck_assert(lo->member_key(l, skey, 4, mk) && memcmp(mk, "\r\x00\x00\x00", 4) == 0);  /* the member's id, 13 */
	skey[0] ^= 1;
	ck_assert(!lo->member_key(l, skey, 4, mk));
	/* Without repoint's login the tracker reads no text: nothing is movable. */
	proto_mysql.init(&ps);
	ck_assert(!proto_mysql.can_migrate(&ps));
	ck_assert(!proto_mysql.session_key(&ps, skey, &sklen));
	lo->destroy(l);
	auth_users_unref(users);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
}
END_TEST

/* A transaction refused part-way: the requests since its idle point can run again when each was a lone
 * plain query answered inside the transaction, the last alone in flight; the log checks a replay. */
START_TEST(test_my_tx_retryable)
{
	const struct proto_login_ops *lo = proto_mysql.login;
	struct auth_users *users = my_users("s3cret");
	struct proto_login *l = lo->create(CLIENT_AUTH_TRUST, users);
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new(), *up = evbuffer_new(), *min = evbuffer_new();
	static const char ok_tx[] = "\x07\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00";   /* 1 row, IN_TRANS */
	static const char ok_idle[] = "\x07\x00\x00\x01\x00\x01\x00\x02\x00\x00\x00"; /* AUTOCOMMIT */
	static const char ins[] = "\x0f\x00\x00\x00\x03INSERT INTO t ";
	static const char commit[] = "\x07\x00\x00\x00\x03" "COMMIT";
	static const char two[] = "\x13\x00\x00\x00\x03INSERT 1; INSERT 2";
	char err[200];
	uint8_t challenge[20];
	struct proto_state ps;

	lo->back_start(l, up, NULL, false);
	evbuffer_add(min, my_greeting8, sizeof(my_greeting8) - 1);
	lo->back(l, min, up, out, err, sizeof(err));
	my_greeting_challenge(out, challenge);
	my_hello(in, "app", challenge, "s3cret", "mysql_native_password");
	ck_assert_int_eq(lo->front(l, in, out), PROTO_LOGIN_DONE);

	/* request_len: whole packets only. */
	ck_assert_uint_eq(proto_mysql.request_len((const uint8_t *)ins, sizeof(ins) - 1), sizeof(ins) - 1);
	ck_assert_uint_eq(proto_mysql.request_len((const uint8_t *)ins, sizeof(ins) - 2), 0);
	ck_assert_uint_eq(proto_mysql.request_len((const uint8_t *)ins, 3), 0);

	/* INSERT (autocommit off: a transaction begins), COMMIT in flight: 2 requests. */
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 1);
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);       /* the first: the lone-request retry's */
	ck_assert(!proto_mysql.tx_answered(&ps));
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx, 5);
	ck_assert(!proto_mysql.tx_answered(&ps));
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx + 5, sizeof(ok_tx) - 6);
	ck_assert(proto_mysql.tx_answered(&ps));
	ck_assert(!proto_mysql.is_idle(&ps));
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);       /* nothing in flight */
	ck_assert_uint_eq(proto_mysql.tx_idle(&ps), 1);            /* idle in the transaction */
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)commit, sizeof(commit) - 1);
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 2);
	ck_assert_uint_eq(proto_mysql.tx_idle(&ps), 0);

	/* An answer outside a transaction (autocommit: it committed) before the last: never again. */
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 1);  /* pipelined */
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_idle, sizeof(ok_idle) - 1);
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);

	/* Several statements in one query, a prepared statement, a SET inside: not followed. */
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)two, sizeof(two) - 1);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)commit, sizeof(commit) - 1);
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 1);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x0a\x00\x00\x00\x03SET a = 1", 14);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)commit, sizeof(commit) - 1);
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);
	lo->track_idle(l, &ps);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)ins, sizeof(ins) - 1);
	proto_mysql.feed(&ps, PROTO_SERVER_TO_CLIENT, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1);
	proto_mysql.feed(&ps, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\x01\x00\x00\x00\x0e", 5);  /* COM_PING */
	ck_assert_uint_eq(proto_mysql.tx_retryable(&ps), 0);

	/* The log: answers kept with their ends; a replay matches only byte for byte, answer by answer. */
	struct txlog tl = {0};
	uint32_t pos = 0;
	uint8_t idx = 0;
	txlog_reset(&tl);
	txlog_reply(&tl, (const uint8_t *)ok_tx, 4, false);
	txlog_reply(&tl, (const uint8_t *)ok_tx + 4, sizeof(ok_tx) - 5, true);
	txlog_reply(&tl, (const uint8_t *)ok_idle, sizeof(ok_idle) - 1, true);
	ck_assert(tl.valid && tl.nends == 2 && tl.len == 2 * (sizeof(ok_tx) - 1));
	ck_assert(txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1, true));
	ck_assert(txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_idle, 3, false));
	ck_assert(txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_idle + 3, sizeof(ok_idle) - 4, true));
	ck_assert(pos == tl.len && idx == 2);
	pos = 0, idx = 0;
	ck_assert(!txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_idle, sizeof(ok_idle) - 1, true));  /* differs */
	pos = 0, idx = 0;
	ck_assert(!txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_tx, 5, true));       /* ends early */
	pos = 0, idx = 0;
	ck_assert(!txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1, false));  /* goes on */
	pos = 0, idx = 0;
	ck_assert(txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1, true));
	ck_assert(!txlog_match(&tl, &pos, &idx, (const uint8_t *)ok_idle, sizeof(ok_idle), true));  /* runs past */
	/* Bounded: too many answers, too many bytes, and it gives up. */
	txlog_reset(&tl);
	for (int i = 0; i < TXLOG_REPLIES; i++)
		txlog_reply(&tl, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1, true);
	ck_assert(tl.valid);
	txlog_reply(&tl, (const uint8_t *)ok_tx, sizeof(ok_tx) - 1, true);
	ck_assert(!tl.valid);
	txlog_reset(&tl);
	static uint8_t big[TXLOG_MAX];
	txlog_reply(&tl, big, sizeof(big), false);
	ck_assert(tl.valid);
	txlog_reply(&tl, big, 1, true);
	ck_assert(!tl.valid);
	pos = 0, idx = 0;
	ck_assert(!txlog_match(&tl, &pos, &idx, big, 1, false));
	txlog_free(&tl);

	lo->destroy(l);
	auth_users_unref(users);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(up);
	evbuffer_free(min);
}
END_TEST

START_TEST(test_my_upgrade)
{
	const struct proto_upgrade *up = proto_mysql.upgrade;
	/* MariaDB-like greeting: protocol 10, "5.5.5-x\0", id, scramble 8, filler, caps low (0xFFF7:
	 * CLIENT_SSL off), charset, status, caps high, ... */
	uint8_t greet[] = {0x1d, 0, 0, 0, 10, '5', '.', '5', '.', '5', '-', 'x', 0, 1, 0, 0, 0, 'a', 'b', 'c', 'd',
			   'e', 'f', 'g', 'h', 0, 0xf7, 0xf7, 8, 2, 0, 0xff, 0x81};
	uint8_t err_greet[] = {0x05, 0, 0, 0, 0xff, 0x10, 0x04, '#', 'x'};
	uint8_t hello[4 + 40] = {40, 0, 0, 1, 0x0d, 0xa2, 0x0a, 0x00, 0, 0, 0, 1, 33};
	uint8_t tls_req[4 + 32] = {32, 0, 0, 1, 0x0d, 0xaa, 0x0a, 0x00, 0, 0, 0, 1, 33};
	struct evbuffer *out = evbuffer_new();

	ck_assert_uint_eq(up->packet(greet, 3), PROTO_MORE);
	ck_assert_uint_eq(up->packet(greet, sizeof(greet) - 1), PROTO_MORE);
	ck_assert_uint_eq(up->packet(greet, sizeof(greet)), sizeof(greet));
	/* Not offered; offered on the way to the client; the offer taken away again. */
	ck_assert_int_eq(up->greeting(greet, sizeof(greet), true), 0);
	ck_assert_uint_eq(greet[27], 0xff);
	ck_assert_int_eq(up->greeting(greet, sizeof(greet), false), 1);
	ck_assert_uint_eq(greet[27], 0xf7);
	ck_assert_int_eq(up->greeting(err_greet, sizeof(err_greet), false), -1);
	ck_assert_int_eq(up->greeting(greet, 14, false), -1);  /* cut before the capabilities */

	ck_assert_int_eq(up->hello(hello, sizeof(hello)), 0);
	ck_assert_int_eq(up->hello(tls_req, sizeof(tls_req)), 1);
	ck_assert_int_eq(up->hello(hello, 20), -1);
	hello[5] &= (uint8_t)~0x02;  /* not protocol 4.1 */
	ck_assert_int_eq(up->hello(hello, sizeof(hello)), -1);
	hello[5] |= 0x02;
	ck_assert_uint_eq(up->hello_seq(hello), 1);
	up->hello_set(hello, sizeof(hello), true, 2);
	ck_assert_uint_eq(hello[3], 2);
	ck_assert_uint_eq(hello[5], 0xaa);
	up->tls_request_from(hello, sizeof(hello), out);
	EXPECT_BYTES(out, "\x20\x00\x00\x01\x0d\xaa\x0a\x00\x00\x00\x00\x01\x21"
			  "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		     "TLS request from the hello");
	evbuffer_drain(out, evbuffer_get_length(out));
	up->hello_set(hello, sizeof(hello), false, 1);
	ck_assert_uint_eq(hello[5], 0xa2);

	up->refuse_hello(2, out, true, "TLS only");
	EXPECT_BYTES(out, "\x11\x00\x00\x03\xff\x57\x0c#08004TLS only", "TLS required");
	evbuffer_free(out);
}
END_TEST

/* Renumbering until authentication ends: server auth switch (0xFE), more data (0x01), then OK; the
 * client's answers in between; a command pipelined behind (sequence 0) and its answer untouched. */
START_TEST(test_my_relay)
{
	const struct proto_upgrade *up = proto_mysql.upgrade;
	uint8_t s1[] = {3, 0, 0, 2, 0xfe, 'x', 0};      /* auth switch, client's numbering 2 */
	uint8_t c1[] = {2, 0, 0, 3, 'p', 'w'};          /* answer */
	uint8_t c2[] = {1, 0, 0, 0, 0x0e};              /* COM_PING pipelined */
	uint8_t s2[] = {2, 0, 0, 4, 0x01, 0x03};        /* more data */
	uint8_t s3[] = {7, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0}; /* OK */
	uint8_t s4[] = {7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}; /* the ping's OK */

	for (int split = 0; split < 2; split++) {
		struct proto_relay r = {.shift = 1};
		uint8_t a[sizeof(s1)], b[sizeof(c1)], c[sizeof(c2)], d[sizeof(s2)], e[sizeof(s3)], f[sizeof(s4)];
		memcpy(a, s1, sizeof(a));
		memcpy(b, c1, sizeof(b));
		memcpy(c, c2, sizeof(c));
		memcpy(d, s2, sizeof(d));
		memcpy(e, s3, sizeof(e));
		memcpy(f, s4, sizeof(f));
		a[3] = 3;  /* the member numbers one more (repoint's TLS request was its 1) */
		d[3] = 5;
		e[3] = 6;
		if (split) {
			for (size_t i = 0; i < sizeof(a); i++)
				ck_assert(up->relay(&r, PROTO_SERVER_TO_CLIENT, a + i, 1));
		} else {
			ck_assert(up->relay(&r, PROTO_SERVER_TO_CLIENT, a, sizeof(a)));
		}
		ck_assert_uint_eq(a[3], 2);
		ck_assert(up->relay(&r, PROTO_CLIENT_TO_SERVER, b, sizeof(b)));
		ck_assert_uint_eq(b[3], 4);
		ck_assert(up->relay(&r, PROTO_CLIENT_TO_SERVER, c, sizeof(c)));
		ck_assert_uint_eq(c[3], 0);
		ck_assert(up->relay(&r, PROTO_SERVER_TO_CLIENT, d, sizeof(d)));
		ck_assert_uint_eq(d[3], 4);
		ck_assert(!up->relay(&r, PROTO_SERVER_TO_CLIENT, e, split ? 5 : sizeof(e)) == !split);
		if (split)
			ck_assert(!up->relay(&r, PROTO_SERVER_TO_CLIENT, e + 5, sizeof(e) - 5));
		ck_assert_uint_eq(e[3], 5);
		ck_assert(!up->relay(&r, PROTO_SERVER_TO_CLIENT, f, sizeof(f)));
		ck_assert_uint_eq(f[3], 1);
	}
}
END_TEST

/* ==== Redis ==== */

/* RESP2 pipelining, nulls, nested arrays, errors */
static const struct step resp_pipeline[] = {
	/* PING, SET k hello, GET k, pipelined */
	C("*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", NI),
	/* +PONG */
	S("+PONG\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* bulk "hello" */
	S("$5\r\nhello\r\n", ID),
	/* GET missing */
	C("*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n", NI),
	/* null bulk */
	S("$-1\r\n", ID),
	/* LRANGE l 0 -1 */
	C("*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n", NI),
	/* array of 3 bulks, one empty */
	S("*3\r\n$1\r\na\r\n$0\r\n\r\n$1\r\nc\r\n", ID),
	/* EXISTS a b */
	C("*3\r\n$6\r\nEXISTS\r\n$1\r\na\r\n$1\r\nb\r\n", NI),
	/* integer */
	S(":1\r\n", ID),
	/* BLPOP q 0 (blocks) */
	C("*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n", NI),
	/* null array (RESP2) */
	S("*-1\r\n", ID),
	/* an empty array request: no command, no reply */
	C("*0\r\n", ID),
	/* SET k v */
	C("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", NI),
	/* error reply */
	S("-OOM command not allowed when used memory > 'maxmemory'.\r\n", ID),
	/* XREAD COUNT 1 STREAMS s 0 */
	C("*6\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$1\r\n1\r\n$7\r\nSTREAMS\r\n$1\r\ns\r\n$1\r\n0\r\n", NI),
	/* nested arrays */
	S("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n", ID),
};

/* inline commands */
static const struct step resp_inline[] = {
	/* inline PING */
	C("PING\r\n", NI),
	/* +PONG */
	S("+PONG\r\n", ID),
	/* an empty line: no command */
	C("\r\n", ID),
	/* a blank line with spaces */
	C("   \r\n", ID),
	/* inline "set k  v" and "get k" pipelined, LF only */
	C("set k  v\r\nget k\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* bulk v */
	S("$1\r\nv\r\n", ID),
	/* inline multi (lower case) */
	C("multi\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* inline INCR n */
	C("INCR n\r\n", NI),
	/* +QUEUED */
	S("+QUEUED\r\n", NI),
	/* inline Exec */
	C("Exec\r\n", NI),
	/* EXEC reply */
	S("*1\r\n:1\r\n", ID),
	/* inline with many arguments */
	C("MSET a 1 b 2 c 3 d 4 e 5\r\n", NI),
	/* +OK */
	S("+OK\r\n", ID),
};

/* RESP3: HELLO, maps, sets, attributes, pushes, all scalar types */
static const struct step resp3[] = {
	/* HELLO 3 */
	C("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", NI),
	/* map reply */
	S("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n", ID),
	/* CLIENT TRACKING ON */
	C("*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n", NI),
	/* +OK */
	S("+OK\r\n", ID),
	/* invalidation push: out of band */
	S(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", ID),
	/* GET k */
	C("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", NI),
	/* a push arrives before the reply */
	S(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", NI),
	/* reply with an attribute */
	S("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n$1\r\nv\r\n", ID),
	/* DEBUG PROTOCOL attrib-like nested reply request */
	C("*1\r\n$8\r\nX.NESTED\r\n", NI),
	/* map of set, null, boolean, double, big number, verbatim, blob error, nested map with attribute inside */
	S("%6\r\n+set\r\n~3\r\n:1\r\n:2\r\n#t\r\n+null\r\n_\r\n+num\r\n,-inf\r\n+big\r\n(3492890328409238509324850943850943825024385\r\n+text\r\n=15\r\ntxt:Some string\r\n+nested\r\n%1\r\n!21\r\nSYNTAX invalid syntax\r\n*2\r\n|1\r\n+ttl\r\n:3600\r\n#f\r\n_\r\n", ID),
	/* GET k */
	C("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", NI),
	/* top-level attribute then a push: still waiting */
	S("|1\r\n+a\r\n:1\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n", NI),
	/* the reply */
	S("_\r\n", ID),
};

/* MULTI/EXEC/DISCARD and WATCH */
static const struct step resp_multi[] = {
	/* WATCH k */
	C("*2\r\n$5\r\nWATCH\r\n$1\r\nk\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* GET k */
	C("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", NI),
	/* bulk 1 */
	S("$1\r\n1\r\n", NI),
	/* MULTI */
	C("*1\r\n$5\r\nMULTI\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* SET k 2 */
	C("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n2\r\n", NI),
	/* +QUEUED */
	S("+QUEUED\r\n", NI),
	/* INCR n */
	C("*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n", NI),
	/* +QUEUED */
	S("+QUEUED\r\n", NI),
	/* EXEC */
	C("*1\r\n$4\r\nEXEC\r\n", NI),
	/* EXEC reply: two results */
	S("*2\r\n+OK\r\n:7\r\n", ID),
	/* mUlTi */
	C("*1\r\n$5\r\nmUlTi\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* DEL k */
	C("*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n", NI),
	/* +QUEUED */
	S("+QUEUED\r\n", NI),
	/* DISCARD */
	C("*1\r\n$7\r\nDISCARD\r\n", NI),
	/* +OK */
	S("+OK\r\n", ID),
	/* WATCH a b */
	C("*3\r\n$5\r\nWATCH\r\n$1\r\na\r\n$1\r\nb\r\n", NI),
	/* +OK */
	S("+OK\r\n", NI),
	/* UNWATCH */
	C("*1\r\n$7\r\nUNWATCH\r\n", NI),
	/* +OK */
	S("+OK\r\n", ID),
	/* MULTI, SET, EXEC pipelined */
	C("*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$4\r\nEXEC\r\n", NI),
	/* replies */
	S("+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n", ID),
	/* CLIENT REPLY ON (harmless) */
	C("*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n", NI),
	/* +OK */
	S("+OK\r\n", ID),
};

/* Pub/Sub (RESP2): subscribed sessions are idle whenever nothing is partial */
static const struct step resp_pubsub[] = {
	/* GET k then SUBSCRIBE news sport, pipelined */
	C("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n$5\r\nsport\r\n", NI),
	/* reply to GET: every command sent before the subscription is answered */
	S("$1\r\nv\r\n", ID),
	/* two confirmations (RESP2 arrays) */
	SN("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n", ID),
	/* a message */
	S("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n", ID),
	/* PING while subscribed */
	C("*1\r\n$4\r\nPING\r\n", ID),
	/* pong array */
	S("*2\r\n$4\r\npong\r\n$0\r\n\r\n", ID),
	/* PSUBSCRIBE n* */
	C("*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\nn*\r\n", ID),
	/* confirmation and a pmessage */
	SN("*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n", ID),
	/* UNSUBSCRIBE */
	C("*1\r\n$11\r\nUNSUBSCRIBE\r\n", ID),
	/* confirmations */
	SN("*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:1\r\n", ID),
	/* GET k: not a Pub/Sub command */
	C("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", OP),
};

/* Pub/Sub (RESP3): pushes */
static const struct step resp3_pubsub[] = {
	/* HELLO 3 */
	C("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", NI),
	/* map reply */
	S("%1\r\n$5\r\nproto\r\n:3\r\n", ID),
	/* SSUBSCRIBE shard */
	C("*2\r\n$10\r\nSSUBSCRIBE\r\n$5\r\nshard\r\n", ID),
	/* push confirmation */
	S(">3\r\n$10\r\nssubscribe\r\n$5\r\nshard\r\n:1\r\n", ID),
	/* push message */
	S(">3\r\n$8\r\nsmessage\r\n$5\r\nshard\r\n$7\r\npayload\r\n", ID),
};

/* MONITOR: opaque */
static const struct step resp_monitor[] = {
	/* MONITOR */
	C("*1\r\n$7\r\nMONITOR\r\n", OP),
	/* +OK and a monitor line */
	S("+OK\r\n+1700000000.000000 [0 127.0.0.1:50000] \"GET\" \"k\"\r\n", OP),
};

/* CLIENT REPLY OFF: opaque */
static const struct step resp_reply_off[] = {
	/* CLIENT REPLY OFF */
	C("*3\r\n$6\r\nclient\r\n$5\r\nreply\r\n$3\r\noff\r\n", OP),
};

/* CLIENT REPLY SKIP: opaque */
static const struct step resp_reply_skip[] = {
	/* inline CLIENT REPLY SKIP */
	C("CLIENT REPLY SKIP\r\n", OP),
};

/* replication: opaque */
static const struct step resp_psync[] = {
	/* PSYNC ? -1 */
	C("*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", OP),
};

static const struct step resp_bad_count[] = {
	C("*abc\r\n", OP),
};
static const struct step resp_not_bulk[] = {
	C("*1\r\n:1\r\n", OP),
};
static const struct step resp_null_arg[] = {
	C("*1\r\n$-1\r\n", OP),
};
static const struct step resp_huge_bulk[] = {
	C("*1\r\n$2199023255553\r\n", OP),
};
static const struct step resp_overflow_bulk[] = {
	C("*1\r\n$99999999999999999999999\r\n", OP),
};
static const struct step resp_huge_count[] = {
	C("*2147483648\r\n", OP),
};
static const struct step resp_bad_terminator[] = {
	C("*1\r\n$4\r\nPINGxx", OP),
};
static const struct step resp_quoted_inline[] = {
	C("\"multi\"\r\n", OP),
};
static const struct step resp_unsolicited[] = {
	S("+OK\r\n", OP),
};
static const struct step resp_bad_type[] = {
	C("*1\r\n$4\r\nPING\r\n", NI),
	S("?garbage\r\n", OP),
};
static const struct step resp_streamed[] = {
	C("*1\r\n$4\r\nPING\r\n", NI),
	S("$?\r\n;4\r\nPONG\r\n;0\r\n", OP),
};
static const struct step resp_bare_lf[] = {
	C("*1\r\n$4\r\nPING\r\n", NI),
	S("+PONG\n", OP),
};
static const struct step resp_negative_array[] = {
	C("*1\r\n$4\r\nPING\r\n", NI),
	S("*-2\r\n", OP),
};
static const struct step resp_bad_crlf[] = {
	C("*1\r\n$4\r\nPING\r\n", NI),
	S(":1\r\r", OP),
};
static const struct step resp_bulk_overrun[] = {
	C("*1\r\n$3\r\nGET\r\n", NI),
	S("$3\r\nabcXY", OP),
};
static const struct step resp_huge_map[] = {
	C("*1\r\n$3\r\nGET\r\n", NI),
	S("%99999999999999\r\n", OP),
};
static const struct step resp_negative_inline_count[] = {
	/* The server ignores non-positive multibulk counts: no command, no reply. */
	C("*-5\r\n", ID),
	C("*1\r\n$4\r\nPING\r\n", NI),
	S("+PONG\r\n", ID),
};

#define LIT(x) (const uint8_t *)(x), sizeof(x) - 1

/* An answer whose bulk payloads are skipped (spliced) rather than fed: the tracker ends in the same
 * state as when fed every byte, for every split of the skipped run, in a pipeline of mixed replies;
 * the end bytes are counted, not checked (as hiredis frames); a skip past the payload is refused. */
START_TEST(test_resp_answer_skip)
{
	static const char cmds[] = "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
				   "*1\r\n$4\r\nPING\r\n*2\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n";
	uint8_t big[3000];
	struct proto_state st;
	const struct proto_ops *ops = &proto_redis;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)"\r\n$*-+:x"[rng() % 9];
	for (size_t cut = 0; cut <= sizeof(big) + 2; cut = cut < 8 || cut >= sizeof(big) - 8 ? cut + 1
								: cut + 97 < sizeof(big) - 8 ? cut + 97 : sizeof(big) - 8) {
		for (int garbage_end = 0; garbage_end < 2; garbage_end++) {
			ops->init(&st);
			ops->feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)cmds, sizeof(cmds) - 1);
			ck_assert_uint_eq(ops->payload(&st, PROTO_SERVER_TO_CLIENT), 0);
			/* GET a: a bulk of 3000 bytes, the first `cut` of them skipped, the rest fed. */
			ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("$3000\r\n"));
			ck_assert_uint_eq(ops->payload(&st, PROTO_SERVER_TO_CLIENT), sizeof(big) + 2);
			ops->skip(&st, PROTO_SERVER_TO_CLIENT, cut);
			ck_assert(!ops->is_opaque(&st));
			if (cut < sizeof(big))
				ops->feed(&st, PROTO_SERVER_TO_CLIENT, big + cut, sizeof(big) - cut);
			const char *end = garbage_end ? "XY" : "\r\n";
			if (cut < sizeof(big) + 2)
				ops->feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)end + (cut > sizeof(big) ? cut - sizeof(big) : 0),
					  2 - (cut > sizeof(big) ? cut - sizeof(big) : 0));
			/* Fed, wrong end bytes make the tracker opaque; skipped, they are counted. */
			ck_assert(ops->is_opaque(&st) == (garbage_end && cut < sizeof(big) + 2));
			if (ops->is_opaque(&st))
				continue;
			ck_assert(!ops->is_idle(&st));
			/* GET b: the whole bulk and its end skipped in one step. */
			ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("$3000\r\n"));
			ops->skip(&st, PROTO_SERVER_TO_CLIENT, sizeof(big) + 2);
			ck_assert_uint_eq(ops->payload(&st, PROTO_SERVER_TO_CLIENT), 0);
			ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("+PONG\r\n"));
			ck_assert(!ops->is_idle(&st));
			/* LRANGE: an array of two bulks, the second's payload skipped but for its last byte. */
			ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("*2\r\n$2\r\nab\r\n$3000\r\n"));
			ops->skip(&st, PROTO_SERVER_TO_CLIENT, sizeof(big) - 1);
			ck_assert_uint_eq(ops->payload(&st, PROTO_SERVER_TO_CLIENT), 3);
			ck_assert(!ops->is_idle(&st));
			ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("z\r\n"));
			ck_assert(!ops->is_opaque(&st));
			ck_assert(ops->is_idle(&st));
		}
	}
	/* A request's large argument, every cut of it skipped (its end bytes counted, not checked); the
	 * name and a short key, which the tracker looks at, are never offered. */
	for (size_t cut = 0; cut <= sizeof(big) + 2; cut = cut < 8 || cut >= sizeof(big) - 8 ? cut + 1
								: cut + 97 < sizeof(big) - 8 ? cut + 97 : sizeof(big) - 8) {
		ops->init(&st);
		ops->feed(&st, PROTO_CLIENT_TO_SERVER, LIT("*3\r\n$3\r\nSET"));
		ck_assert_uint_eq(ops->payload(&st, PROTO_CLIENT_TO_SERVER), 0);
		ops->feed(&st, PROTO_CLIENT_TO_SERVER, LIT("\r\n$1\r\nk\r\n$3000\r\n"));
		ck_assert_uint_eq(ops->payload(&st, PROTO_CLIENT_TO_SERVER), sizeof(big) + 2);
		ops->skip(&st, PROTO_CLIENT_TO_SERVER, cut);
		if (cut < sizeof(big))
			ops->feed(&st, PROTO_CLIENT_TO_SERVER, big + cut, sizeof(big) - cut);
		if (cut < sizeof(big) + 2)
			ops->feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"\r\n" + (cut > sizeof(big) ? cut - sizeof(big) : 0),
				  2 - (cut > sizeof(big) ? cut - sizeof(big) : 0));
		ck_assert_uint_eq(ops->payload(&st, PROTO_CLIENT_TO_SERVER), 0);
		ops->feed(&st, PROTO_CLIENT_TO_SERVER, LIT("*1\r\n$5\r\nMULTI\r\n"));
		ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("+OK\r\n+OK\r\n"));
		ck_assert(!ops->is_opaque(&st));
		ck_assert(!ops->is_idle(&st));  /* MULTI was taken for what it is: the command after the skip */
		ops->feed(&st, PROTO_CLIENT_TO_SERVER, LIT("*1\r\n$7\r\nDISCARD\r\n"));
		ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("+OK\r\n"));
		ck_assert(ops->is_idle(&st));
	}
	/* More than the payload and its end: refused, the tracker opaque rather than wrong. */
	ops->init(&st);
	ops->feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)cmds, 27);
	ops->feed(&st, PROTO_SERVER_TO_CLIENT, LIT("$10\r\n"));
	ops->skip(&st, PROTO_SERVER_TO_CLIENT, 13);
	ck_assert(ops->is_opaque(&st));
	ck_assert_uint_eq(ops->payload(&st, PROTO_SERVER_TO_CLIENT), 0);
}
END_TEST

START_TEST(test_resp_sessions)
{
	RUN(proto_redis, resp_pipeline);
	RUN(proto_redis, resp_inline);
	RUN(proto_redis, resp3);
	RUN(proto_redis, resp_multi);
	RUN(proto_redis, resp_pubsub);
	RUN(proto_redis, resp3_pubsub);
	RUN(proto_redis, resp_monitor);
	RUN(proto_redis, resp_reply_off);
	RUN(proto_redis, resp_reply_skip);
	RUN(proto_redis, resp_psync);
	RUN(proto_redis, resp_negative_inline_count);
}
END_TEST

START_TEST(test_resp_hostile)
{
	RUN(proto_redis, resp_bad_count);
	RUN(proto_redis, resp_not_bulk);
	RUN(proto_redis, resp_null_arg);
	RUN(proto_redis, resp_huge_bulk);
	RUN(proto_redis, resp_overflow_bulk);
	RUN(proto_redis, resp_huge_count);
	RUN(proto_redis, resp_bad_terminator);
	RUN(proto_redis, resp_quoted_inline);
	RUN(proto_redis, resp_unsolicited);
	RUN(proto_redis, resp_bad_type);
	RUN(proto_redis, resp_streamed);
	RUN(proto_redis, resp_bare_lf);
	RUN(proto_redis, resp_negative_array);
	RUN(proto_redis, resp_bad_crlf);
	RUN(proto_redis, resp_bulk_overrun);
	RUN(proto_redis, resp_huge_map);

	/* An inline line longer than the server accepts (64 KiB) without a newline. */
	struct proto_state st;
	char line[4096];
	memset(line, 'a', sizeof(line));
	proto_redis.init(&st);
	for (int i = 0; i < 17; i++)
		proto_redis.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)line, sizeof(line));
	ck_assert(proto_redis.is_opaque(&st));
	ck_assert(!proto_redis.is_idle(&st));
}
END_TEST

START_TEST(test_resp_big_bulk)
{
	/* SET k <1 MiB> and its echo through GET, split across arbitrary chunks. The payload is full of
	 * things that look like RESP frames and must be skipped, not parsed. */
	size_t vlen = 1u << 20;
	char head[64];
	int hlen = snprintf(head, sizeof(head), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%zu\r\n", vlen);
	size_t clen = (size_t)hlen + vlen + 2;
	uint8_t *c = malloc(clen);
	struct proto_state st;

	ck_assert_ptr_nonnull(c);
	memcpy(c, head, (size_t)hlen);
	for (size_t i = 0; i < vlen; i++)
		c[(size_t)hlen + i] = (uint8_t)"*1\r\n+OK\r\n"[i % 9];
	memcpy(c + hlen + vlen, "\r\n", 2);

	proto_redis.init(&st);
	feed_busy(&proto_redis, &st, PROTO_CLIENT_TO_SERVER, c, clen, "big SET");
	proto_redis.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"+OK\r\n", 5);
	ck_assert(proto_redis.is_idle(&st));

	proto_redis.feed(&st, PROTO_CLIENT_TO_SERVER, (const uint8_t *)"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 20);
	/* The reply: the same payload as a bulk string. */
	hlen = snprintf(head, sizeof(head), "$%zu\r\n", vlen);
	uint8_t *r = malloc((size_t)hlen + vlen + 2);
	ck_assert_ptr_nonnull(r);
	memcpy(r, head, (size_t)hlen);
	memcpy(r + hlen, c + clen - vlen - 2, vlen + 2);
	feed_busy(&proto_redis, &st, PROTO_SERVER_TO_CLIENT, r, (size_t)hlen + vlen + 1, "big reply");
	proto_redis.feed(&st, PROTO_SERVER_TO_CLIENT, (const uint8_t *)"\n", 1);
	ck_assert(proto_redis.is_idle(&st));
	free(c);
	free(r);
}
END_TEST

START_TEST(test_resp_fresh)
{
	struct proto_state st;

	/* Nothing sent, nothing owed: a fresh Redis connection can be closed at no cost. */
	proto_redis.init(&st);
	ck_assert(proto_redis.is_idle(&st));
	ck_assert(!proto_redis.is_opaque(&st));
	ck_assert_str_eq(proto_redis.name, "redis");
}
END_TEST

START_TEST(test_resp_refuse)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	evbuffer_add(in, "*1\r\n$4\r\nPING\r\n", 14);
	ck_assert_int_eq(proto_redis.refuse(in, out, "no writer available"), PROTO_REFUSE_DONE);
	EXPECT_BYTES(out, "-ERR no writer available\r\n", "redis refuse");
	evbuffer_drain(out, evbuffer_get_length(out));

	/* A message with line breaks must stay one simple error. */
	ck_assert_int_eq(proto_redis.refuse(in, out, "no writer\r\nfor db0\n"), PROTO_REFUSE_DONE);
	EXPECT_BYTES(out, "-ERR no writer  for db0 \r\n", "redis refuse sanitized");
	evbuffer_free(in);
	evbuffer_free(out);
}
END_TEST

START_TEST(test_resp_error_encoder)
{
	struct evbuffer *out = evbuffer_new();

	resp_error(out, "WRONGTYPE", "Operation against a key holding the wrong kind of value");
	EXPECT_BYTES(out, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "resp error");
	evbuffer_drain(out, evbuffer_get_length(out));

	resp_error(out, NULL, "bare\rmessage");
	EXPECT_BYTES(out, "-bare message\r\n", "resp error without prefix");
	evbuffer_drain(out, evbuffer_get_length(out));

	resp_error(out, "ERR", NULL);
	EXPECT_BYTES(out, "-ERR \r\n", "resp error NULL message");
	evbuffer_drain(out, evbuffer_get_length(out));

	/* Over-long text is cut at 8 KiB, never inside a UTF-8 character. */
	char *msg = malloc(8192 + 8);
	ck_assert_ptr_nonnull(msg);
	memset(msg, 'a', 8191);
	memcpy(msg + 8191, "\xc3\xa9tail", 7);
	resp_error(out, "ERR", msg);
	ck_assert_uint_eq(evbuffer_get_length(out), 1 + 4 + 8191 + 2);
	free(msg);
	evbuffer_free(out);
}
END_TEST

/* ==== Redis multiplexing: which commands share a connection, where replies end ==== */

static enum resp_share share(const char *lit, size_t n, size_t *len)
{
	return resp_share_scan((const uint8_t *)lit, n, 32 * 1024, len, NULL);
}
#define SHARE(lit, len) share(lit, sizeof(lit) - 1, len)

/* Whether CLIENT PAUSE WRITE would hold it: reads go on a shared connection of their own. */
static bool share_writes(const char *lit)
{
	size_t len = 0;
	bool w = true;

	ck_assert_int_eq(resp_share_scan((const uint8_t *)lit, strlen(lit), 32 * 1024, &len, &w), RESP_SHARE_YES);
	return w;
}

START_TEST(test_resp_share_classes)
{
	ck_assert(share_writes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"));
	ck_assert(share_writes("*2\r\n$4\r\nincr\r\n$1\r\nk\r\n"));
	ck_assert(share_writes("*3\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n"));   /* a script may write */
	ck_assert(share_writes("*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nm\r\n")); /* may replicate */
	ck_assert(!share_writes("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
	ck_assert(!share_writes("*1\r\n$4\r\nPING\r\n"));
	ck_assert(!share_writes("*3\r\n$7\r\nEVAL_RO\r\n$1\r\nx\r\n$1\r\n0\r\n"));
	ck_assert(!share_writes("*4\r\n$6\r\nZRANGE\r\n$1\r\nz\r\n$1\r\n0\r\n$2\r\n-1\r\n"));
}
END_TEST

START_TEST(test_resp_share_scan)
{
	static const char set[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxx\r\n";
	size_t len = 0;

	/* A complete shareable command, then the same command cut at every byte. */
	ck_assert_int_eq(SHARE(set, &len), RESP_SHARE_YES);
	ck_assert_uint_eq(len, sizeof(set) - 1);
	for (size_t cut = 0; cut + 1 < sizeof(set) - 1; cut++) {
		ck_assert_msg(share(set, cut, &len) == RESP_SHARE_MORE, "cut at %zu", cut);
		ck_assert_msg(len > cut && len <= sizeof(set) - 1, "cut at %zu: hint %zu", cut, len);
	}
	/* Two commands: the first is scanned alone. */
	ck_assert_int_eq(SHARE("*1\r\n$4\r\nping\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\n", &len), RESP_SHARE_YES);
	ck_assert_uint_eq(len, 14);
	/* Names in any case. */
	ck_assert_int_eq(SHARE("*2\r\n$3\r\nGeT\r\n$1\r\nk\r\n", &len), RESP_SHARE_YES);
	ck_assert_int_eq(SHARE("*5\r\n$5\r\nZRANGE\r\n", &len), RESP_SHARE_NO); /* $5 but 6 bytes: no CRLF after 5 */

	/* Connection state, blocking, transactions, Pub/Sub, unknown: a connection of their own. */
	static const char *const own[] = {
		"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n", "*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n", "*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n",
		"*1\r\n$5\r\nMULTI\r\n", "*2\r\n$5\r\nWATCH\r\n$1\r\nk\r\n", "*3\r\n$5\r\nBLPOP\r\n$1\r\nl\r\n$1\r\n0\r\n",
		"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n", "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n", "*1\r\n$4\r\nQUIT\r\n",
		"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n", "*1\r\n$7\r\nMONITOR\r\n", "*1\r\n$5\r\nRESET\r\n",
		"*4\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$1\r\ns\r\n", "*1\r\n$7\r\nNOSUCHX\r\n",
	};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		ck_assert_msg(share(own[i], strlen(own[i]), &len) == RESP_SHARE_NO, "%s", own[i]);
	/* Known early: a partial AUTH is already not shareable; a partial SELECT may be SELECT 0. */
	ck_assert_int_eq(SHARE("*2\r\n$4\r\nauth\r\n$", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*2\r\n$6\r\nselect\r\n$", &len), RESP_SHARE_MORE);
	/* Harmless forms: SELECT 0 and HELLO share, HELLO 2/3 where the protocol is that already;
	 * CLIENT SETINFO is answered locally. */
	ck_assert_int_eq(SHARE("*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n", &len), RESP_SHARE_YES);
	ck_assert_int_eq(SHARE("*2\r\n$6\r\nselect\r\n$2\r\n00\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*1\r\n$5\r\nhello\r\n", &len), RESP_SHARE_YES);
	ck_assert_int_eq(SHARE("*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n", &len), RESP_SHARE_HELLO2);
	ck_assert_int_eq(SHARE("*2\r\n$5\r\nhello\r\n$1\r\n3\r\n", &len), RESP_SHARE_HELLO3);
	ck_assert_int_eq(SHARE("*4\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$7\r\nSETNAME\r\n$1\r\nx\r\n", &len),
			 RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$8\r\nredis-py\r\n",
			       &len), RESP_SHARE_LOCAL);
	ck_assert_uint_eq(len, 57);
	ck_assert_int_eq(SHARE("*3\r\n$6\r\nclient\r\n$7\r\nsetname\r\n$1\r\nx\r\n", &len), RESP_SHARE_NO);

	/* Inline and malformed input, and commands over the limit. */
	ck_assert_int_eq(SHARE("PING\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*x\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*0\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*-1\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*1\r\n:3\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*1\r\n$3\r\ngetXX", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*1\r\n$3\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$40000\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*99999999999999999999\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(SHARE("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$99999999999999999999999\r\n", &len), RESP_SHARE_NO);
	ck_assert_int_eq(share("", 0, &len), RESP_SHARE_MORE);

	ck_assert(resp_shareable_name((const uint8_t *)"INCRBY", 6));
	ck_assert(resp_shareable_name((const uint8_t *)"zunionstore", 11));
	ck_assert(!resp_shareable_name((const uint8_t *)"get\0", 4));
	ck_assert(!resp_shareable_name((const uint8_t *)"", 0));
}
END_TEST

/* Replies fed in every chunking end where they end, and a stream that is not RESP is refused. */
START_TEST(test_resp_replies_scan)
{
	static const char stream[] = "+OK\r\n$5\r\nhello\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n-ERR x\r\n$-1\r\n"
				     "%1\r\n+k\r\n|1\r\n+a\r\n+b\r\n+v\r\n>2\r\n+push\r\n+x\r\n:7\r\n";
	/* Ends of the seven replies (the push is skipped; the attribute decorates "+v"). */
	static const size_t ends[] = {5, 16, 35, 43, 48, 72, 91};
	struct proto_state st;
	uint64_t got;

	for (size_t chunk = 1; chunk <= sizeof(stream); chunk++) {
		size_t pos = 0, seen = 0;
		resp_replies_init(&st);
		while (pos < sizeof(stream) - 1) {
			size_t n = sizeof(stream) - 1 - pos < chunk ? sizeof(stream) - 1 - pos : chunk;
			size_t used = resp_replies_scan(&st, (const uint8_t *)stream + pos, n, 1, &got);
			ck_assert_uint_ne(used, (size_t)-1);
			ck_assert_uint_le(used, n);
			pos += used;
			if (got) {
				ck_assert_uint_lt(seen, sizeof(ends) / sizeof(ends[0]));
				ck_assert_msg(pos == ends[seen], "chunk %zu: reply %zu ends at %zu, not %zu", chunk,
					      seen, pos, ends[seen]);
				seen++;
			} else {
				ck_assert_uint_eq(used, n);
			}
		}
		ck_assert_uint_eq(seen, sizeof(ends) / sizeof(ends[0]));
	}
	/* Many at once. */
	resp_replies_init(&st);
	ck_assert_uint_eq(resp_replies_scan(&st, (const uint8_t *)stream, sizeof(stream) - 1, 100, &got),
			  sizeof(stream) - 1);
	ck_assert_uint_eq(got, 7);
	resp_replies_init(&st);
	ck_assert_uint_eq(resp_replies_scan(&st, (const uint8_t *)stream, sizeof(stream) - 1, 3, &got), 35);
	ck_assert_uint_eq(got, 3);
	/* Garbage. */
	resp_replies_init(&st);
	ck_assert_uint_eq(resp_replies_scan(&st, (const uint8_t *)"+OK\r\n?", 6, 5, &got), (size_t)-1);
	resp_replies_init(&st);
	ck_assert_uint_eq(resp_replies_scan(&st, (const uint8_t *)"$-5\r\n", 5, 5, &got), (size_t)-1);
}
END_TEST

/* ==== All protocols: garbage and mutations ==== */

struct script {
	const struct proto_ops *ops;
	const char *name;
	const struct step *steps;
	size_t n;
};

#define SCRIPT(o, s) { &(o), #s, s, NSTEPS(s) }

static const struct script all_scripts[] = {
	SCRIPT(proto_postgres, pg_psql),
	SCRIPT(proto_postgres, pg_failed_txn),
	SCRIPT(proto_postgres, pg_extended),
	SCRIPT(proto_postgres, pg_copy),
	SCRIPT(proto_postgres, pg_gss_then_ssl),
	SCRIPT(proto_mysql, my_session),
	SCRIPT(proto_mysql, my_session_deof),
	SCRIPT(proto_mysql, my_prepared),
	SCRIPT(proto_mysql, my_prepared_deof),
	SCRIPT(proto_mysql, my_mariadb),
	SCRIPT(proto_mysql, my_pam_dialog),
	SCRIPT(proto_postgres, pg_pipelined_startup),
	SCRIPT(proto_redis, resp_pipeline),
	SCRIPT(proto_redis, resp_inline),
	SCRIPT(proto_redis, resp3),
	SCRIPT(proto_redis, resp_multi),
	SCRIPT(proto_redis, resp_pubsub),
};

/* Feed with invariants that hold whatever the input: opaque is never idle, and stays opaque. */
static void feed_checked(const struct proto_ops *ops, struct proto_state *st, enum proto_dir dir, const uint8_t *p,
			 size_t n, bool *was_opaque)
{
	ops->feed(st, dir, p, n);
	bool opaque = ops->is_opaque(st);
	ck_assert(!(opaque && ops->is_idle(st)));
	ck_assert(!(*was_opaque && !opaque));
	*was_opaque = opaque;
}

START_TEST(test_random_garbage)
{
	const struct proto_ops *const ops[] = { &proto_postgres, &proto_mysql, &proto_redis };
	uint8_t buf[512];

	for (size_t o = 0; o < 3; o++) {
		for (int iter = 0; iter < 3000; iter++) {
			struct proto_state st;
			bool was_opaque = false;
			ops[o]->init(&st);
			int feeds = 1 + (int)(rng() % 12);
			for (int f = 0; f < feeds; f++) {
				size_t n = rng() % sizeof(buf);
				for (size_t i = 0; i < n; i++) {
					/* Bias towards protocol-significant bytes so parsers get deep. */
					static const uint8_t hot[] = { 0, 1, 3, 5, 8, 0xFE, 0xFF, 0xFB, 'Z', 'I', 'T',
								       'R', 'Q', 'S', '*', '$', '\r', '\n', '%', '|', '>', ':' };
					uint32_t x = rng();
					buf[i] = (x & 1) ? hot[(x >> 1) % sizeof(hot)] : (uint8_t)(x >> 8);
				}
				feed_checked(ops[o], &st, (rng() & 1) ? PROTO_CLIENT_TO_SERVER : PROTO_SERVER_TO_CLIENT, buf, n,
					     &was_opaque);
			}
		}
	}
}
END_TEST

START_TEST(test_mutated_scripts)
{
	for (size_t s = 0; s < sizeof(all_scripts) / sizeof(all_scripts[0]); s++) {
		const struct script *sc = &all_scripts[s];
		for (int iter = 0; iter < 400; iter++) {
			struct proto_state st;
			bool was_opaque = false;
			uint8_t buf[1024];
			sc->ops->init(&st);
			for (size_t i = 0; i < sc->n; i++) {
				size_t len = sc->steps[i].len < sizeof(buf) ? sc->steps[i].len : sizeof(buf);
				memcpy(buf, sc->steps[i].bytes, len);
				/* Flip, drop or duplicate a few bytes here and there. */
				if (len && (rng() % 3) == 0) {
					size_t at = rng() % len;
					switch (rng() % 3) {
					case 0:
						buf[at] ^= (uint8_t)(1u << (rng() % 8));
						break;
					case 1:
						memmove(buf + at, buf + at + 1, len - at - 1);
						len--;
						break;
					default:
						buf[at] = (uint8_t)rng();
						break;
					}
				}
				size_t off = 0;
				while (off < len) {
					size_t k = 1 + rng() % 40;
					if (k > len - off)
						k = len - off;
					feed_checked(sc->ops, &st, sc->steps[i].dir, buf + off, k, &was_opaque);
					off += k;
				}
			}
		}
	}
}
END_TEST

START_TEST(test_state_size)
{
	/* The trackers keep O(1) state inside the session: nothing else to allocate or free. */
	ck_assert_uint_eq(sizeof(struct proto_state), 160);
}
END_TEST

/* Redis: which refusals did not run the command -- read-only (a replica, a demoted cluster
 * primary's MOVED) and for a moment (a cluster settling) -- and only when whole. */
START_TEST(test_redis_refusals)
{
	static const char ro[] = "-READONLY You can't write against a read only replica.\r\n";
	static const char moved[] = "-MOVED 3999 127.0.0.1:6381\r\n";
	static const char down[] = "-CLUSTERDOWN The cluster is down\r\n";
	static const char again[] = "-TRYAGAIN Multiple keys request during rehashing of slot\r\n";
	const struct proto_ops *r = &proto_redis;

	ck_assert_uint_eq(r->readonly_reply((const uint8_t *)ro, sizeof(ro) - 1), sizeof(ro) - 1);
	ck_assert_uint_eq(r->readonly_reply((const uint8_t *)moved, sizeof(moved) - 1), sizeof(moved) - 1);
	ck_assert_uint_eq(r->readonly_reply((const uint8_t *)down, sizeof(down) - 1), 0);
	ck_assert_uint_eq(r->later_reply((const uint8_t *)down, sizeof(down) - 1), sizeof(down) - 1);
	ck_assert_uint_eq(r->later_reply((const uint8_t *)again, sizeof(again) - 1), sizeof(again) - 1);
	ck_assert_uint_eq(r->later_reply((const uint8_t *)moved, sizeof(moved) - 1), 0);
	ck_assert_uint_eq(r->later_reply((const uint8_t *)"-ASK 3999 127.0.0.1:6381\r\n", 26), 26);
	ck_assert_uint_eq(r->later_reply((const uint8_t *)down, 10), 0);             /* not whole */
	ck_assert_uint_eq(r->later_reply((const uint8_t *)"-CLUSTERDOWNX\r\n", 15), 0);
	ck_assert_uint_eq(r->readonly_reply((const uint8_t *)"-MOVED\r\n", 8), 0);
	ck_assert_ptr_null(proto_postgres.later_reply);
}
END_TEST

/* Cluster transactions: which commands need a connection of the session's own, and when a
 * transaction's replies say it ran nothing because the cluster was moving (it may go again). */
START_TEST(test_redis_cluster_tx)
{
#define TX(replies, n) resp_cluster_tx_moved((const uint8_t *)(replies), sizeof(replies) - 1, (n))
#define OWN(cmd) resp_cluster_own((const uint8_t *)(cmd), sizeof(cmd) - 1)
	ck_assert_int_eq(OWN("*1\r\n$5\r\nmulti\r\n"), RESP_OWN_MULTI);
	ck_assert_int_eq(OWN("*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n"), RESP_OWN_BLOCKING);
	ck_assert_int_eq(OWN("*2\r\n$3\r\nGET\r\n$1\r\nq\r\n"), RESP_OWN_NONE);
	ck_assert_int_eq(OWN("*1\r\n$5\r\nmul"), RESP_OWN_NONE);  /* not whole */
#undef OWN
	/* refused while queueing: EXEC aborts */
	ck_assert(TX("+OK\r\n-MOVED 866 127.0.0.1:7001\r\n+QUEUED\r\n"
		     "-EXECABORT Transaction discarded because of previous errors.\r\n", 4));
	ck_assert(TX("+OK\r\n-READONLY You can't write against a read only replica.\r\n"
		     "-EXECABORT Transaction discarded because of previous errors.\r\n", 3));
	/* EXEC itself refused */
	ck_assert(TX("+OK\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of: MOVED 866 127.0.0.1:7001\r\n", 3));
	ck_assert(TX("+OK\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of: CLUSTERDOWN The cluster is down\r\n", 3));
	/* ran, or aborted for another reason: never again */
	ck_assert(!TX("+OK\r\n+QUEUED\r\n*1\r\n:1\r\n", 3));
	ck_assert(!TX("+OK\r\n+QUEUED\r\n*1\r\n-MOVED 1 a:1\r\n", 3));   /* an error inside EXEC's reply: it ran */
	ck_assert(!TX("+OK\r\n-ERR unknown command 'FOO'\r\n"
		      "-EXECABORT Transaction discarded because of previous errors.\r\n", 3));
	ck_assert(!TX("+OK\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of: OOM command not allowed\r\n", 3));
	ck_assert(!TX("+OK\r\n+QUEUED\r\n*-1\r\n", 3));                    /* a WATCHed key changed */
	ck_assert(!TX("+OK\r\n-MOVED 866 127.0.0.1:7001\r\n", 3));          /* replies missing */
	ck_assert(!TX("+OK\r\n-MOVED 866 127.0.0.1:7001\r\n-EXECABORT", 3));  /* EXEC's not whole */
	/* a lone blocking command */
	ck_assert(TX("-MOVED 866 127.0.0.1:7001\r\n", 1));
	ck_assert(TX("-TRYAGAIN Multiple keys request during rehashing of slot\r\n", 1));
	ck_assert(!TX("*2\r\n$1\r\nq\r\n$3\r\njob\r\n", 1));
	ck_assert(!TX("-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n", 1));   /* an operator's: given */
	ck_assert(TX("-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n", 1));
	ck_assert(!TX("-MOVED 866 127.0.0.1:7001\r\n+OK\r\n", 1));   /* more than one reply */
#undef TX
}
END_TEST

/* Data-set-wide commands in cluster mode: which are sent to every shard, how their replies merge,
 * and SCAN's cursor carrying its shard's first slot. */
START_TEST(test_redis_cluster_fan)
{
	static const char scan[] = "*4\r\n$4\r\nscan\r\n$5\r\n16389\r\n$5\r\nCOUNT\r\n$1\r\n9\r\n";
	static const char bad[] = "*2\r\n$4\r\nscan\r\n$2\r\n-1\r\n";
	static const char part[] = "*2\r\n$1\r\n3\r\n*1\r\n$1\r\nk\r\n", done[] = "*2\r\n$1\r\n0\r\n*0\r\n";
	struct evbuffer *out = evbuffer_new();
	uint64_t cursor = 99;
#define FAN(cmd) resp_cluster_fan((const uint8_t *)(cmd), sizeof(cmd) - 1)
#define MERGE(kind, replies, n, resp3)                                                                       \
	(evbuffer_drain(out, evbuffer_get_length(out)),                                                      \
	 resp_cluster_merge(kind, (const uint8_t *)(replies), sizeof(replies) - 1, n, resp3, out),           \
	 evbuffer_add(out, "", 1), (const char *)evbuffer_pullup(out, -1))
	ck_assert_int_eq(FAN("*1\r\n$6\r\nDBSIZE\r\n"), RESP_SPLIT_SUM);
	ck_assert_int_eq(FAN("*2\r\n$4\r\nkeys\r\n$1\r\n*\r\n"), RESP_SPLIT_KEYS);
	ck_assert_int_eq(FAN("*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n"), RESP_SPLIT_OK);
	ck_assert_int_eq(FAN("*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"), RESP_SPLIT_FIRST);
	ck_assert_int_eq(FAN("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), RESP_SPLIT_NONE);
	ck_assert_int_eq(FAN("*1\r\n$4\r\nkeys\r\n"), RESP_SPLIT_NONE);   /* KEYS without a pattern: the server's error */
	ck_assert_str_eq(MERGE(RESP_SPLIT_KEYS, "*2\r\n$1\r\na\r\n$1\r\nb\r\n*0\r\n*1\r\n$1\r\nc\r\n", 3, false),
			 "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
	ck_assert_str_eq(MERGE(RESP_SPLIT_FIRST, "$-1\r\n$1\r\nk\r\n$1\r\nj\r\n", 3, false), "$1\r\nk\r\n");
	ck_assert_str_eq(MERGE(RESP_SPLIT_FIRST, "_\r\n_\r\n", 2, true), "_\r\n");
	ck_assert_str_eq(MERGE(RESP_SPLIT_ALL, "*3\r\n:1\r\n:1\r\n:0\r\n*3\r\n:1\r\n:0\r\n:0\r\n", 2, false),
			 "*3\r\n:1\r\n:0\r\n:0\r\n");
	ck_assert_str_eq(MERGE(RESP_SPLIT_SUM, ":5\r\n:7\r\n:0\r\n", 3, false), ":12\r\n");
	ck_assert_str_eq(MERGE(RESP_SPLIT_OK, "+OK\r\n-ERR no\r\n+OK\r\n", 3, false), "-ERR no\r\n");
	/* SCAN */
	ck_assert(resp_cluster_scan((const uint8_t *)scan, sizeof(scan) - 1, &cursor));
	ck_assert_uint_eq(cursor, 16389);
	ck_assert(!resp_cluster_scan((const uint8_t *)bad, sizeof(bad) - 1, &cursor));
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_scan_rewrite((const uint8_t *)scan, sizeof(scan) - 1, 1, out);
	evbuffer_add(out, "", 1);
	ck_assert_str_eq((const char *)evbuffer_pullup(out, -1), "*4\r\n$4\r\nscan\r\n$1\r\n1\r\n$5\r\nCOUNT\r\n$1\r\n9\r\n");
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_scan_reply((const uint8_t *)part, sizeof(part) - 1, 5461, 10923, out);
	evbuffer_add(out, "", 1);
	ck_assert_str_eq((const char *)evbuffer_pullup(out, -1), "*2\r\n$5\r\n54613\r\n*1\r\n$1\r\nk\r\n");  /* 3<<14|5461 */
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_scan_reply((const uint8_t *)done, sizeof(done) - 1, 5461, 10923, out);
	evbuffer_add(out, "", 1);
	ck_assert_str_eq((const char *)evbuffer_pullup(out, -1), "*2\r\n$5\r\n10923\r\n*0\r\n");  /* the next shard */
	evbuffer_drain(out, evbuffer_get_length(out));
	resp_cluster_scan_reply((const uint8_t *)done, sizeof(done) - 1, 10923, -1, out);
	evbuffer_add(out, "", 1);
	ck_assert_str_eq((const char *)evbuffer_pullup(out, -1), "*2\r\n$1\r\n0\r\n*0\r\n");      /* the end */
#undef FAN
#undef MERGE
	evbuffer_free(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("proto");
	TCase *pg = tcase_create("postgres");
	TCase *my = tcase_create("mysql");
	TCase *rd = tcase_create("redis");
	TCase *all = tcase_create("all");

	tcase_add_test(pg, test_pg_sessions);
	tcase_add_test(pg, test_pg_hostile);
	tcase_add_test(pg, test_pg_big_messages);
	tcase_add_test(pg, test_pg_fresh);
	tcase_add_test(pg, test_pg_refuse_plain);
	tcase_add_test(pg, test_pg_refuse_ssl);
	tcase_add_test(pg, test_pg_error_encoder);
	tcase_add_test(pg, test_pg_login);
	tcase_add_test(pg, test_pg_login_refusals);
	tcase_add_test(pg, test_pg_state_and_last_words);
	tcase_add_test(my, test_my_sessions);
	tcase_add_test(my, test_my_hostile);
	tcase_add_test(my, test_my_big_packets);
	tcase_add_test(my, test_my_fresh);
	tcase_add_test(my, test_my_refuse);
	tcase_add_test(my, test_my_err_encoder);
	tcase_add_test(my, test_my_upgrade);
	tcase_add_test(my, test_my_tx_retryable);
	tcase_add_test(my, test_pg_tx_idle);
	tcase_add_test(my, test_pg_retryable);
	tcase_add_test(my, test_mysql_login);
	tcase_add_test(my, test_mysql_login_refusals);
	tcase_add_test(my, test_mysql_login_sha2);
	tcase_add_test(my, test_mysql_login_pool);
	tcase_add_test(my, test_my_session_state);
	tcase_add_test(my, test_my_relay);
	tcase_add_test(rd, test_resp_sessions);
	tcase_add_test(rd, test_resp_answer_skip);
	tcase_add_test(rd, test_resp_hostile);
	tcase_add_test(rd, test_resp_big_bulk);
	tcase_add_test(rd, test_resp_fresh);
	tcase_add_test(rd, test_resp_refuse);
	tcase_add_test(rd, test_resp_error_encoder);
	tcase_add_test(rd, test_resp_share_scan);
	tcase_add_test(rd, test_resp_share_classes);
	tcase_add_test(rd, test_resp_replies_scan);
	tcase_add_test(all, test_random_garbage);
	tcase_add_test(all, test_mutated_scripts);
	tcase_add_test(all, test_state_size);
	tcase_add_test(all, test_redis_refusals);
	tcase_add_test(all, test_redis_cluster_tx);
	tcase_add_test(all, test_redis_cluster_fan);
	/* Big streams under sanitizers take a few seconds. */
	tcase_set_timeout(my, 120);
	tcase_set_timeout(all, 120);
	suite_add_tcase(s, pg);
	suite_add_tcase(s, my);
	suite_add_tcase(s, rd);
	suite_add_tcase(s, all);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
