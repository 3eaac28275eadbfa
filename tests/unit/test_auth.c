/* test_auth.c - auth_file parsing and SCRAM-SHA-256 both ways (proxy/auth). The exchange is also
 * checked against a real PostgreSQL and libpq in tests/integration/test_auth.py. */
#include "auth/auth.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *write_tmp(const char *text)
{
	static char path[64];
	int fd;

	snprintf(path, sizeof(path), "/tmp/repoint-users-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* A verifier PostgreSQL made for the password "pencil" (RFC 7677's example password). */
static const char pencil[] = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
			     "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

START_TEST(test_userlist)
{
	char err[300];
	char *path = write_tmp("; a comment\n# another\n\n\"alice\" \"pencil\"\n  \"bob\" \"" "SCRAM-SHA-256$4096:"
			       "W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
			       "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n\"q\"\"uote\" \"p\"\"w\"\n");
	struct auth_users *u = auth_users_load(path, err, sizeof(err));
	const struct auth_user *a;

	ck_assert_msg(u != NULL, "%s", err);
	a = auth_users_find(u, "alice");
	ck_assert(a != NULL && !a->has_verifier && strcmp(a->password, "pencil") == 0);
	a = auth_users_find(u, "bob");
	ck_assert(a != NULL && a->has_verifier && a->password == NULL && a->verifier.iterations == 4096 &&
		  a->verifier.salt_len == 16);
	a = auth_users_find(u, "q\"uote");
	ck_assert(a != NULL && strcmp(a->password, "p\"w") == 0);
	ck_assert(auth_users_find(u, "carol") == NULL);
	auth_users_unref(u);
	unlink(path);
	/* An md5 secret: kept as its hex digits, not as a password. */
	path = write_tmp("\"x\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n");
	u = auth_users_load(path, err, sizeof(err));
	ck_assert_msg(u != NULL, "%s", err);
	a = auth_users_find(u, "x");
	ck_assert(a != NULL && a->has_md5 && a->password == NULL && strcmp(a->md5, "d41d8cd98f00b204e9800998ecf8427e") == 0);
	auth_users_unref(u);
	unlink(path);
	/* A mysql_native_password hash: its 20 bytes, not a password. */
	path = write_tmp("\"m\" \"*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29\"\n");
	u = auth_users_load(path, err, sizeof(err));
	ck_assert_msg(u != NULL, "%s", err);
	a = auth_users_find(u, "m");
	ck_assert(a != NULL && a->has_native && a->password == NULL && a->native[0] == 0x94 && a->native[19] == 0x29);
	auth_users_unref(u);
	unlink(path);

	static const char *const bad[][2] = {
		{"\"alice\" pencil\n", ":1: expected \"user\" \"secret\""},
		{"\"alice\" \"a\"\n\"alice\" \"b\"\n", ":2: user \"alice\" is listed twice"},
		{"\n\"x\" \"SCRAM-SHA-256$4096:bad\"\n", ":2: not a SCRAM-SHA-256 verifier"},
		{"\"x\" \"y\" extra\n", ":1: unexpected text after the secret"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		path = write_tmp(bad[i][0]);
		u = auth_users_load(path, err, sizeof(err));
		ck_assert_msg(u == NULL && strstr(err, bad[i][1]) != NULL && strncmp(err, path, strlen(path)) == 0,
			      "%s: %s", bad[i][0], err);
		unlink(path);
	}
	ck_assert(auth_users_load("/nonexistent/users.txt", err, sizeof(err)) == NULL);
	ck_assert(strstr(err, "No such file") != NULL);
}
END_TEST

/* The whole exchange in memory: repoint's server side against its client side. */
static bool exchange(const struct scram_verifier *server_v, struct scram_client *c, struct scram_server *s, char *err)
{
	char m1[256], m2[600], m3[600], m4[200];

	if (!scram_client_first(c, m1, sizeof(m1)))
		return false;
	if (!scram_server_first(s, server_v, m1, strlen(m1), m2, sizeof(m2), err, 200))
		return false;
	if (!scram_client_final(c, m2, strlen(m2), m3, sizeof(m3), err, 200))
		return false;
	if (!scram_server_final(s, m3, strlen(m3), m4, sizeof(m4), err, 200))
		return false;
	return scram_client_check(c, m4, strlen(m4), err, 200);
}


/* mysql_native_password: MySQL's own hash of "test" (SELECT PASSWORD('test')), and the exchange. */
START_TEST(test_mysql_native)
{
	uint8_t s1[20], s2[20], parsed[20], challenge[20], answer[20], back[20];

	ck_assert(mysql_native_stage1("test", s1) && mysql_native_stage2(s1, s2));
	ck_assert(mysql_native_parse_hash("*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29", parsed));
	ck_assert(memcmp(parsed, s2, 20) == 0);
	ck_assert(mysql_native_parse_hash("*94bdcebe19083ce2a1f959fd02f964c7af4cfc29", parsed));
	ck_assert(!mysql_native_parse_hash("94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29", parsed));
	ck_assert(!mysql_native_parse_hash("*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC2", parsed));
	ck_assert(!mysql_native_parse_hash("*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC2G", parsed));
	for (int i = 0; i < 20; i++)
		challenge[i] = (uint8_t)(0x21 + i);
	ck_assert(mysql_native_answer(challenge, s1, answer));
	ck_assert(mysql_native_check(challenge, answer, 20, s2, back));
	ck_assert(memcmp(back, s1, 20) == 0);  /* the hash and a right answer give SHA1(password) back */
	answer[7] ^= 1;
	ck_assert(!mysql_native_check(challenge, answer, 20, s2, back));
	ck_assert(!mysql_native_check(challenge, answer, 19, s2, back));
}
END_TEST

START_TEST(test_scram_roundtrip)
{
	struct scram_verifier v, derived;
	struct scram_server s;
	struct scram_client c;
	char err[200];

	ck_assert(scram_parse_verifier(pencil, &v));
	/* The same salt and iterations give PostgreSQL's keys from the password. */
	ck_assert(scram_verifier_from_password("pencil", v.salt, v.salt_len, v.iterations, &derived));
	ck_assert(memcmp(derived.stored_key, v.stored_key, SCRAM_KEY_LEN) == 0);
	ck_assert(memcmp(derived.server_key, v.server_key, SCRAM_KEY_LEN) == 0);

	memset(&c, 0, sizeof(c));
	c.password = "pencil";
	ck_assert_msg(exchange(&v, &c, &s, err), "%s", err);
	/* The key the proof gave: with it (and the verifier) repoint logs in again elsewhere. */
	struct scram_client k;
	memset(&k, 0, sizeof(k));
	k.has_key = true;
	memcpy(k.client_key, s.client_key, SCRAM_KEY_LEN);
	k.v = v;
	ck_assert_msg(exchange(&v, &k, &s, err), "%s", err);
	/* A wrong password; a server whose verifier has another salt (the key cannot be used). */
	memset(&c, 0, sizeof(c));
	c.password = "pencel";
	ck_assert(!exchange(&v, &c, &s, err));
	ck_assert_str_eq(err, "wrong password");
	struct scram_verifier other;
	ck_assert(scram_verifier_from_password("pencil", NULL, 0, 0, &other));
	memset(&k.nonce, 0, sizeof(k.nonce));
	ck_assert(!exchange(&other, &k, &s, err));
	ck_assert(strstr(err, "verifier differs") != NULL);
}
END_TEST

START_TEST(test_scram_malformed)
{
	struct scram_verifier v;
	struct scram_server s;
	char out[600], err[200];
	static const char *const firsts[] = {
		"", "n", "x,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,a=admin,n=,r=abc", "n,,r=abc",
		"n,,n=,r=", "n,,n=,r=a\x01b", "n,,n=user",
	};

	ck_assert(scram_parse_verifier(pencil, &v));
	for (size_t i = 0; i < sizeof(firsts) / sizeof(firsts[0]); i++)
		ck_assert_msg(!scram_server_first(&s, &v, firsts[i], strlen(firsts[i]), out, sizeof(out), err, sizeof(err)),
			      "%s", firsts[i]);
	ck_assert(scram_server_first(&s, &v, "n,,n=,r=abc", 11, out, sizeof(out), err, sizeof(err)));
	static const char *const finals[] = {
		"", "c=biws", "c=eSws,r=x,p=AAAA", "c=biws,r=wrongnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	};
	for (size_t i = 0; i < sizeof(finals) / sizeof(finals[0]); i++)
		ck_assert_msg(!scram_server_final(&s, finals[i], strlen(finals[i]), out, sizeof(out), err, sizeof(err)),
			      "%s", finals[i]);
	static const char *const verifiers[] = {
		"SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
		"SCRAM-SHA-256$4096:!!!!$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$a:b",
	};
	for (size_t i = 0; i < sizeof(verifiers) / sizeof(verifiers[0]); i++)
		ck_assert_msg(!scram_parse_verifier(verifiers[i], &v), "%s", verifiers[i]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("auth");
	TCase *t = tcase_create("auth");
	SRunner *r;
	int failed;

	tcase_add_test(t, test_userlist);
	tcase_add_test(t, test_scram_roundtrip);
	tcase_add_test(t, test_mysql_native);
	tcase_add_test(t, test_scram_malformed);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
