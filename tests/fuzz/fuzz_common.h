/* fuzz_common.h - helpers shared by the libFuzzer targets (scripts/fuzz builds them). */
#ifndef REPOINT_FUZZ_COMMON_H
#define REPOINT_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string.h>

#include <event2/buffer.h>

#include "proto/proto.h"

/* Fail loudly: libFuzzer reports the input that got here. */
#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
			abort(); \
	} while (0)

/* Feed p[0..n) to a protocol tracker in pieces whose sizes come from `cuts` (one byte a piece,
 * 1..32 bytes each), alternating directions where `dirs` says so: one input explores every
 * chunking and interleaving a socket could produce. */
static inline void fuzz_feed(const struct proto_ops *ops, struct proto_state *st, const uint8_t *cuts,
			     size_t ncuts, const uint8_t *p, size_t n)
{
	size_t k = 0;

	while (n > 0) {
		uint8_t c = ncuts > 0 ? cuts[k++ % ncuts] : 0xff;
		size_t len = (size_t)(c & 31) + 1;
		enum proto_dir dir = (c & 0x80) ? PROTO_SERVER_TO_CLIENT : PROTO_CLIENT_TO_SERVER;
		if (len > n)
			len = n;
		uint64_t run = ops->payload != NULL && (c & 0x40) ? ops->payload(st, dir) : 0;
		if (run > 0) {
			/* Those bytes spliced rather than fed (a payload's inside and end): counted only. */
			if (len > run)
				len = (size_t)run;
			ops->skip(st, dir, len);
			/* What is left of the payload, or none once in its two end bytes (those are fed). */
			uint64_t after = ops->payload(st, dir);
			FUZZ_CHECK(ops->is_opaque(st) || (run - len > 2 ? after == run - len : after == 0));
		} else {
			ops->feed(st, dir, p, len);
		}
		(void)ops->is_idle(st);
		(void)ops->is_opaque(st);
		if (ops->can_migrate != NULL)
			(void)ops->can_migrate(st);
		if (ops->retryable != NULL)
			(void)ops->retryable(st);
		p += len;
		n -= len;
	}
}

/* The protocol-table functions that look at one buffer: each must stay within it. */
static inline void fuzz_table_functions(const struct proto_ops *ops, const uint8_t *p, size_t n)
{
	uint8_t key[PROTO_KEY_MAX];
	size_t keylen = 0, k;

	if (ops->readonly_reply != NULL)
		FUZZ_CHECK(ops->readonly_reply(p, n) <= n);
	if (ops->tx_strip != NULL) {
		/* In two reads cut anywhere: never more out than in, and room for n + 8 suffices. */
		struct proto_strip st = {0};
		uint8_t *out = malloc(n + 8);
		size_t cut = n > 0 ? p[0] % (n + 1) : 0, kept;
		if (out != NULL) {
			kept = ops->tx_strip(&st, p, cut, out);
			FUZZ_CHECK(kept <= cut + 8);
			kept = ops->tx_strip(&st, p + cut, n - cut, out);
			FUZZ_CHECK(kept <= n - cut + 8);
			free(out);
		}
	}
	if (ops->startup_refusal != NULL)
		FUZZ_CHECK(ops->startup_refusal(p, n) <= n);
	if (ops->startup_preamble != NULL)
		FUZZ_CHECK(ops->startup_preamble(p, n) <= n);
	if (ops->cancel_request != NULL) {
		k = ops->cancel_request(p, n, key, &keylen);
		FUZZ_CHECK(k == PROTO_MORE || k <= n);
		FUZZ_CHECK(k == 0 || k == PROTO_MORE || keylen <= PROTO_KEY_MAX);
	}
	if (ops->kill_request != NULL) {
		/* A KILL naming a session, in an exactly sized copy; rewritten with another id. */
		uint8_t *copy = malloc(n > 0 ? n : 1);
		if (copy != NULL) {
			memcpy(copy, p, n);
			k = ops->kill_request(copy, n, key, &keylen);
			FUZZ_CHECK(k == 0 || (k == n && keylen <= PROTO_KEY_MAX));
			if (k == n) {
				struct evbuffer *b = evbuffer_new();
				if (b != NULL) {
					ops->kill_rewrite(copy, n, key, keylen, b);
					size_t blen = evbuffer_get_length(b);
					uint8_t *again = malloc(blen > 0 ? blen : 1);
					if (again != NULL) {
						evbuffer_copyout(b, again, blen);
						FUZZ_CHECK(ops->kill_request(again, blen, key, &keylen) == blen);
						free(again);
					}
					evbuffer_free(b);
				}
			}
			free(copy);
		}
	}
	if (ops->upgrade != NULL) {
		/* A member's greeting, a client's hello: one complete packet each, copied to a buffer of
		 * exactly its size (so that a read past it is caught); then renumbering both ways. */
		const struct proto_upgrade *up = ops->upgrade;
		struct proto_relay r = {.shift = n > 0 ? (int8_t)(p[0] % 3) - 1 : 1};
		k = up->packet(p, n);
		FUZZ_CHECK(k == PROTO_MORE || (k >= 4 && k <= n));
		if (k != PROTO_MORE) {
			uint8_t *pkt = malloc(k);
			if (pkt != NULL) {
				memcpy(pkt, p, k);
				int g = up->greeting(pkt, k, n % 2 == 0);
				FUZZ_CHECK(g >= -1 && g <= 1);
				memcpy(pkt, p, k);
				int h = up->hello(pkt, k);
				FUZZ_CHECK(h >= -1 && h <= 1);
				if (h >= 0) {
					struct evbuffer *req = evbuffer_new();
					up->hello_set(pkt, k, h == 0, up->hello_seq(pkt));
					up->tls_request_from(pkt, k, req);
					FUZZ_CHECK(evbuffer_get_length(req) <= k);
					evbuffer_free(req);
				}
				free(pkt);
			}
		}
		uint8_t *copy = malloc(n ? n : 1);
		if (copy != NULL) {
			memcpy(copy, p, n);
			for (size_t at = 0; at < n;) {
				size_t step = 1 + copy[at] % 7;
				if (step > n - at)
					step = n - at;
				(void)up->relay(&r, at % 2 ? PROTO_SERVER_TO_CLIENT : PROTO_CLIENT_TO_SERVER, copy + at, step);
				at += step;
			}
			free(copy);
		}
	}
}

#endif
