/* fuzz_auth.c - what a client or a member sends during a SCRAM exchange, and an auth_file: the
 * SCRAM-SHA-256 message parsers both ways and the userlist parser, on any bytes.
 * Input: [selector][payload]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "fuzz_common.h"

static const char pencil[] = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
			     "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scram_verifier v;
	char out[1024], err[256];

	if (size < 1)
		return 0;
	uint8_t sel = data[0] % 4;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	char *copy = malloc(n + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, p, n);
	copy[n] = '\0';
	(void)scram_parse_verifier(pencil, &v);
	switch (sel) {
	case 0: {  /* a client's first and final messages to repoint */
		struct scram_server s;
		const char *nl = memchr(p, '\n', n);
		size_t first = nl != NULL ? (size_t)(nl - p) : n;
		if (scram_server_first(&s, &v, p, first, out, sizeof(out), err, sizeof(err)) && nl != NULL)
			(void)scram_server_final(&s, nl + 1, n - first - 1, out, sizeof(out), err, sizeof(err));
		break;
	}
	case 1: {  /* a member's server-first and server-final messages */
		struct scram_client c;
		memset(&c, 0, sizeof(c));
		c.password = "pencil";
		const char *nl = memchr(p, '\n', n);
		size_t first = nl != NULL ? (size_t)(nl - p) : n;
		if (scram_client_first(&c, out, sizeof(out)) &&
		    scram_client_final(&c, p, first, out, sizeof(out), err, sizeof(err)) && nl != NULL)
			(void)scram_client_check(&c, nl + 1, n - first - 1, err, sizeof(err));
		break;
	}
	case 2: {  /* a verifier */
		(void)scram_parse_verifier(copy, &v);
		break;
	}
	case 3: {  /* an auth_file */
		char path[] = "/tmp/fuzz-users-XXXXXX";
		int fd = mkstemp(path);
		if (fd >= 0) {
			if (write(fd, p, n) == (ssize_t)n) {
				struct auth_users *u = auth_users_load(path, err, sizeof(err));
				if (u != NULL) {
					(void)auth_users_find(u, "alice");
					auth_users_unref(u);
				}
			}
			close(fd);
			unlink(path);
		}
		break;
	}
	}
	free(copy);
	return 0;
}
