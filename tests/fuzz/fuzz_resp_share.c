/* fuzz_resp_share.c - the multiplex command scanner and the reply splitter: lengths they report
 * must stay within what they were given, and a split must consume what it counts. */
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_state st;
	size_t off = 0, len = 0, max;
	uint64_t want, got;

	if (size < 3)
		return 0;
	max = (size_t)data[0] * 64 + 1;
	want = data[1] % 8 + 1;
	data += 2;
	size -= 2;
	/* Commands, one after another, as a shared session's input. */
	while (off < size) {
		bool w;
		enum resp_share r = resp_share_scan(data + off, size - off, max, &len, &w);
		FUZZ_CHECK(!w || r == RESP_SHARE_YES || r == RESP_SHARE_MORE);
		if (r == RESP_SHARE_MORE) {
			FUZZ_CHECK(len > size - off);
			break;
		}
		if (r == RESP_SHARE_NO)
			break;
		FUZZ_CHECK(len > 0 && len <= size - off && len <= max);
		off += len;
	}
	/* Replies, split by counting, in two pieces. */
	resp_replies_init(&st);
	for (size_t pos = 0, piece = size / 2 + 1; pos < size;) {
		size_t n = size - pos < piece ? size - pos : piece;
		size_t used;
		got = 0;
		used = resp_replies_scan(&st, data + pos, n, want, &got);
		if (used == (size_t)-1)
			break;
		FUZZ_CHECK(used <= n && got <= want);
		if (used == 0 && got == 0)
			break;
		pos += used;
	}
	return 0;
}
