/* test_presign.c - the SigV4 presigner (aws/presign) against botocore.
 *
 * tests/unit/data/presign/vectors.tsv holds tokens botocore computed for fixed times and
 * credentials (make_vectors.py next to it writes it; tests/integration/test_iam_token.py checks
 * that botocore still computes the same). Every line must come out byte for byte. */
#include <check.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/presign.h"
#include "testdata.h"

static void set_creds(struct aws_credentials *c, const char *akid, const char *secret, const char *token)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->access_key_id, sizeof(c->access_key_id), "%s", akid);
	snprintf(c->secret_access_key, sizeof(c->secret_access_key), "%s", secret);
	snprintf(c->session_token, sizeof(c->session_token), "%s", strcmp(token, "-") == 0 ? "" : token);
}

/* Splits line at tabs into at most n fields; returns how many. */
static int split(char *line, char **f, int n)
{
	int k = 0;

	while (k < n) {
		f[k++] = line;
		line = strchr(line, '\t');
		if (line == NULL)
			break;
		*line++ = '\0';
	}
	return k;
}

START_TEST(test_botocore_vectors)
{
	char *text = testdata_load("../presign/vectors.tsv", NULL);
	char *save = NULL, *line, err[128];
	int n = 0;

	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char *f[10];
		struct aws_credentials c;
		char *got;

		ck_assert_int_eq(split(line, f, 10), 10);
		if (strcmp(f[0], "rds") == 0) {
			set_creds(&c, f[5], f[6], f[7]);
			got = aws_rds_auth_token(f[1], (uint16_t)atoi(f[2]), f[3], f[4], &c, atoll(f[8]), err,
			                         sizeof(err));
		} else {
			set_creds(&c, f[5], f[6], f[7]);
			got = aws_cache_auth_token(f[0], f[1], f[2], strcmp(f[3], "1") == 0, f[4], &c, atoll(f[8]),
			                           err, sizeof(err));
		}
		ck_assert_msg(got != NULL, "line %d: %s", n + 1, err);
		ck_assert_msg(strcmp(got, f[9]) == 0, "line %d:\n got %s\nwant %s", n + 1, got, f[9]);
		aws_presign_free(got);
		n++;
	}
	ck_assert_int_ge(n, 16);
	free(text);
}
END_TEST

/* The generic presigner with parameters of its own (the tokens above use it). */
START_TEST(test_presign_shape)
{
	const char *params[] = {"Zeta", "1", "Action", "connect", NULL};
	struct aws_credentials c;
	struct aws_presign p = {.host = "Example.COM:443", .https = true, .params = params, .region = "us-west-2",
	                        .service = "svc", .creds = &c, .now_s = 0, .expires_s = 60};
	char err[128];
	char *t;

	set_creds(&c, "AKID", "secret", "-");
	t = aws_presign(&p, err, sizeof(err));
	ck_assert_ptr_nonnull(t);
	/* the URL keeps the host as written and the parameters in their order */
	ck_assert_msg(strncmp(t, "Example.COM:443/?Zeta=1&Action=connect&X-Amz-Algorithm=AWS4-HMAC-SHA256&"
	                         "X-Amz-Credential=AKID%2F19700101%2Fus-west-2%2Fsvc%2Faws4_request&"
	                         "X-Amz-Date=19700101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&"
	                         "X-Amz-Signature=", 200) == 0, "%s", t);
	ck_assert_uint_eq(strlen(strstr(t, "X-Amz-Signature=") + 16), 64);
	aws_presign_free(t);
}
END_TEST

START_TEST(test_presign_refusals)
{
	struct aws_credentials c, none;
	char err[128];

	set_creds(&c, "AKID", "secret", "-");
	memset(&none, 0, sizeof(none));
	ck_assert_ptr_null(aws_rds_auth_token("h", 5432, "u", "us-east-1", &none, 0, err, sizeof(err)));
	ck_assert_str_eq(err, "no credentials to sign with");
	ck_assert_ptr_null(aws_rds_auth_token("h", 5432, "u", "US_EAST", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_rds_auth_token("h", 0, "u", "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_rds_auth_token("h", 5432, "", "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_rds_auth_token("::1", 5432, "u", "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_rds_auth_token("h/x", 5432, "u", "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_cache_auth_token("redis", "c", "u", false, "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_cache_auth_token("memorydb", "c", "u", true, "us-east-1", &c, 0, err, sizeof(err)));
	ck_assert_ptr_null(aws_cache_auth_token("elasticache", "", "u", false, "us-east-1", &c, 0, err, sizeof(err)));
	/* a secret never appears in a message */
	ck_assert_ptr_null(strstr(err, "secret"));
	aws_presign_free(NULL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("presign");
	TCase *tc = tcase_create("sigv4");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_botocore_vectors);
	tcase_add_test(tc, test_presign_shape);
	tcase_add_test(tc, test_presign_refusals);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
