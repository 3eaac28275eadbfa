/* fuzz_proto.c - the three protocol trackers and their table functions, over any bytes in any
 * chunking and interleaving; the refusal encoders on whatever a held client sent.
 * Input: [protocol selector][cut count N][N cut bytes][payload]. */
#include <event2/buffer.h>
#include <string.h>

#include "config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto_ops *const ops[] = {&proto_postgres, &proto_mysql, &proto_redis};
	const struct proto_ops *o;
	struct proto_state st;
	struct evbuffer *in, *out;
	size_t ncuts;

	if (size < 2)
		return 0;
	o = ops[data[0] % 3];
	ncuts = data[1] % 64;
	data += 2;
	size -= 2;
	if (ncuts > size)
		ncuts = size;
	o->init(&st);
	fuzz_feed(o, &st, data, ncuts, data + ncuts, size - ncuts);
	fuzz_table_functions(o, data + ncuts, size - ncuts);
	if (o->termination != NULL)
		FUZZ_CHECK(o->termination(&st, data + ncuts, size - ncuts) <= size - ncuts);
	if (o->inflight_lost != NULL) {
		uint32_t owed = 0;
		if (o->inflight_lost(&st, &owed))
			FUZZ_CHECK(owed > 0);
	}
	if (o->login != NULL) {
		/* repoint's side of the start: the bytes as a client's start, then as a member's answers. */
		struct proto_login *l = o->login->create(CLIENT_AUTH_TRUST, NULL);
		struct evbuffer *a = evbuffer_new(), *b = evbuffer_new(), *c = evbuffer_new();
		char err[256];
		if (l != NULL && a != NULL && b != NULL && c != NULL) {
			/* The client's requests as kept for a later login: SETs, statements, DEALLOCATE. */
			for (int kind = 1; kind <= 3; kind++)
				(void)o->login->replay(l, kind, data + ncuts, size - ncuts, &st);
			if (o->login->leaving != NULL)
				o->login->leaving(l, &st);
			if (o->login->reset_answer != NULL)
				FUZZ_CHECK(o->login->reset_answer(data + ncuts, size - ncuts) >= -1);
			evbuffer_add(a, data + ncuts, size - ncuts);
			if (o->login->member_first) {
				/* The member speaks first: a real greeting, then the bytes as the client's answer to
				 * repoint's, then as the member's answers; then the tracker of such a session
				 * (reading its queries' text) on the bytes both ways. */
				static const char greeting[] =
					"J\x00\x00\x00\n8.0.36\x00\r\x00\x00\x00:+\x1c\r^O`q\x00\xff\xff\xff\x02\x00\xff\xdf"
					"\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12#4EVgx\x09\x1a+<M\x00"
					"caching_sha2_password\x00";
				struct evbuffer *g = evbuffer_new();
				if (g != NULL) {
					o->login->back_start(l, c, NULL, size % 2 == 0);  /* with TLS asked for, or not */
					evbuffer_add(g, greeting, sizeof(greeting) - 1);
					(void)o->login->back(l, g, c, b, err, sizeof(err));
					if (o->login->front(l, a, b) == PROTO_LOGIN_DONE) {
						struct proto_state owned;
						evbuffer_add(g, data + ncuts, size - ncuts);
						if (o->login->back(l, g, c, b, err, sizeof(err)) == PROTO_LOGIN_TLS)
							(void)o->login->back(l, g, c, b, err, sizeof(err));
						o->login->track_idle(l, &owned);
						fuzz_feed(o, &owned, data, ncuts, data + ncuts, size - ncuts);
						(void)o->can_migrate(&owned);
						(void)o->retryable(&owned);
						if (o->tx_retryable != NULL)
							(void)o->tx_retryable(&owned);
						if (o->tx_idle != NULL) {
							(void)o->tx_idle(&owned);
							(void)o->tx_answered(&owned);
							size_t len = o->request_len(data, size);
							if (len > size)
								abort();
						}
						(void)o->replayable(&owned);
						(void)o->unmovable_reason(&owned);
						/* the bytes as a COM_CHANGE_USER, then as the member's answers to it */
						if (o->login->change_user != NULL &&
						    o->login->change_user(l, data + ncuts, size - ncuts, c, b) == 1) {
							evbuffer_add(g, data + ncuts, size - ncuts);
							(void)o->login->back(l, g, c, b, err, sizeof(err));
						}
					}
					evbuffer_free(g);
				}
			} else if (o->login->front(l, a, b) == PROTO_LOGIN_DONE) {
				o->login->back_start(l, c, NULL, false);
				(void)o->login->back(l, a, c, b, err, sizeof(err));
			} else {
				o->login->back_start(l, c, NULL, false);
				evbuffer_add(a, data + ncuts, size - ncuts);
				(void)o->login->back(l, a, c, b, err, sizeof(err));
			}
		}
		if (l != NULL)
			o->login->destroy(l);
		if (a != NULL)
			evbuffer_free(a);
		if (b != NULL)
			evbuffer_free(b);
		if (c != NULL)
			evbuffer_free(c);
	}
	if (o->session_key != NULL) {
		uint8_t key[PROTO_KEY_MAX];
		size_t keylen = 0;
		if (o->session_key(&st, key, &keylen))
			FUZZ_CHECK(keylen <= PROTO_KEY_MAX);
	}
	/* The refusal answers what a held client sent, in up to two steps. */
	in = evbuffer_new();
	out = evbuffer_new();
	evbuffer_add(in, data + ncuts, size - ncuts);
	if (o->refuse(in, out, "fuzz") == PROTO_REFUSE_MORE)
		(void)o->refuse(in, out, "fuzz");
	evbuffer_free(in);
	evbuffer_free(out);
	return 0;
}
