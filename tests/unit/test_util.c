/* test_util.c - durations and addresses as the configuration reads them. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

START_TEST(test_durations)
{
	static const struct {
		const char *in;
		int64_t ms;
	} ok[] = {
		{"0", 0}, {"250", 250}, {"250ms", 250}, {"1s", 1000}, {"1.5s", 1500}, {"2m", 120000},
		{"1h", 3600000}, {"0.5ms", 1}, {"24h", 86400000},
	};
	static const char *const bad[] = {"", "fast", "-1s", "1x", "s", "1 s", "1sec", "25h", "nan", "inf", "1e400s"};
	int64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(parse_duration_ms(ok[i].in, &v), "'%s' should parse", ok[i].in);
		ck_assert_int_eq(v, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!parse_duration_ms(bad[i], &v), "'%s' should be refused", bad[i]);
	ck_assert(!parse_duration_ms(NULL, &v));
}
END_TEST

START_TEST(test_hostports)
{
	struct hostport hp;
	char err[128], buf[300];

	ck_assert(parse_hostport("127.0.0.1:5432", &hp, err, sizeof(err)));
	ck_assert_str_eq(hp.host, "127.0.0.1");
	ck_assert_uint_eq(hp.port, 5432);
	ck_assert_str_eq(hostport_str(&hp, buf, sizeof(buf)), "127.0.0.1:5432");
	ck_assert(parse_hostport("[::1]:6379", &hp, err, sizeof(err)));
	ck_assert_str_eq(hp.host, "::1");
	ck_assert_str_eq(hostport_str(&hp, buf, sizeof(buf)), "[::1]:6379");
	ck_assert(parse_hostport("db-1.cluster.local:3306", &hp, err, sizeof(err)));
	ck_assert_str_eq(hp.host, "db-1.cluster.local");

	ck_assert(!parse_hostport("127.0.0.1", &hp, err, sizeof(err)));
	ck_assert_str_eq(err, "expected HOST:PORT, got '127.0.0.1'");
	ck_assert(!parse_hostport("127.0.0.1:0", &hp, err, sizeof(err)));
	ck_assert_str_eq(err, "port must be 1-65535 in '127.0.0.1:0'");
	ck_assert(!parse_hostport("127.0.0.1:65536", &hp, err, sizeof(err)));
	ck_assert(!parse_hostport("::1:5432", &hp, err, sizeof(err)));
	ck_assert_str_eq(err, "IPv6 addresses need brackets: [ADDR]:PORT, got '::1:5432'");
	ck_assert(!parse_hostport("[::1]5432", &hp, err, sizeof(err)));
	ck_assert(!parse_hostport(":5432", &hp, err, sizeof(err)));
	ck_assert(!parse_hostport("a b:1", &hp, err, sizeof(err)));
	ck_assert(!parse_hostport("", &hp, err, sizeof(err)));
	ck_assert_str_eq(err, "empty address");
}
END_TEST

START_TEST(test_trim_and_clocks)
{
	char s[] = "  \t value \n";
	int64_t a = now_ms(), b = now_ms();

	ck_assert_str_eq(str_trim(s), "value");
	ck_assert_int_ge(b, a);
	ck_assert_int_gt(wall_ms(), 1600000000000LL);
	ck_assert_int_ge(now_us() / 1000, a);
}
END_TEST

START_TEST(test_printable)
{
	char small[16], big[64];

	str_printable(big, sizeof(big), "Throttling:\n Rate \x1b[31mexceeded\xff");
	ck_assert_str_eq(big, "Throttling:");
	str_printable(big, sizeof(big), "Rate \x1b[31mexceeded\xff");
	ck_assert_str_eq(big, "Rate ?[31mexceeded?");
	str_printable(small, sizeof(small), "a message far longer than the room it gets");
	ck_assert_str_eq(small, "a message fa...");
	str_printable(small, sizeof(small), NULL);
	ck_assert_str_eq(small, "");
}
END_TEST

START_TEST(test_bytes_append)
{
	uint8_t *buf = NULL, data[100];
	uint32_t len = 0, cap = 0;

	memset(data, 'x', sizeof(data));
	ck_assert(bytes_append(&buf, &len, &cap, data, 10, 4, 40));
	ck_assert_uint_eq(len, 10);
	ck_assert_uint_eq(cap, 16);               /* doubled from 4 */
	ck_assert(bytes_append(&buf, &len, &cap, data, 30, 4, 40));
	ck_assert_uint_eq(len, 40);
	ck_assert_uint_eq(cap, 40);               /* never past the bound */
	ck_assert(!bytes_append(&buf, &len, &cap, data, 1, 4, 40));
	ck_assert_uint_eq(len, 40);               /* nothing appended */
	ck_assert(bytes_append(&buf, &len, &cap, data, 0, 4, 40));
	ck_assert(!bytes_append(&buf, &len, &cap, data, SIZE_MAX, 4, 40));
	ck_assert(memcmp(buf, data, 40) == 0);
	free(buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_hostports);
	tcase_add_test(tc, test_trim_and_clocks);
	tcase_add_test(tc, test_printable);
	tcase_add_test(tc, test_bytes_append);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
