/* test_secret.c - the secret provider (secret.c): GetSecretValue replies read (pure), and literal,
 * env: and file: secrets through a registry on a loop, file rotation included; what /status shows
 * of a secret never holds its value. (secretsmanager: against the lab emulator and iam are in
 * tests/integration/test_secrets.py.) */
#include <check.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "secret.h"

static char why[300];

static void reply_ok(const char *body, const char *key, const char *value, const char *user, const char *version)
{
	char *v = NULL, *u = NULL, ver[80];

	ck_assert_msg(secret_parse_reply(body, strlen(body), key, &v, &u, ver, sizeof(ver), why, sizeof(why)), "%s", why);
	ck_assert_str_eq(v, value);
	if (user == NULL)
		ck_assert_ptr_null(u);
	else
		ck_assert_str_eq(u, user);
	ck_assert_str_eq(ver, version);
	secret_value_free(v);
	secret_value_free(u);
}

static void reply_bad(const char *body, const char *key, const char *reason)
{
	char *v = (char *)"x", *u = (char *)"x", ver[80];

	ck_assert(!secret_parse_reply(body, strlen(body), key, &v, &u, ver, sizeof(ver), why, sizeof(why)));
	ck_assert_ptr_null(v);
	ck_assert_ptr_null(u);
	ck_assert_str_eq(why, reason);
}

START_TEST(test_get_secret_value_replies)
{
	/* a plain string, as it is */
	reply_ok("{\"ARN\":\"arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf\",\"Name\":\"a\","
		 "\"SecretString\":\"pa{ss\",\"VersionId\":\"v-1\",\"VersionStages\":[\"AWSCURRENT\"]}",
		 NULL, "pa{ss", NULL, "v-1");
	/* RDS-managed: the password, and the username */
	reply_ok("{\"SecretString\":\"{\\\"username\\\":\\\"app\\\",\\\"password\\\":\\\"p\\u00e9\\\",\\\"engine\\\":"
		 "\\\"postgres\\\"}\",\"VersionId\":\"v-2\"}",
		 "", "p\xc3\xa9", "app", "v-2");
	/* a JSON object without "password": the whole string */
	reply_ok("{\"SecretString\":\"{\\\"token\\\":\\\"t\\\"}\",\"VersionId\":\"v-3\"}", "", "{\"token\":\"t\"}", NULL,
		 "v-3");
	/* #KEY */
	reply_ok("{\"SecretString\":\"{\\\"token\\\":\\\"t\\\",\\\"password\\\":\\\"p\\\"}\"}", "token", "t", NULL, "");
	reply_bad("{\"SecretString\":\"{\\\"token\\\":7}\"}", "token",
		  "the secret's value is not a JSON object with a string \"token\"");
	reply_bad("{\"SecretString\":\"not json\"}", "token", "the secret's value is not a JSON object with a string \"token\"");
	reply_bad("{\"SecretBinary\":\"AAEC\"}", NULL, "the secret holds SecretBinary only: repoint reads SecretString");
	reply_bad("{}", NULL, "no SecretString in the reply");
	reply_bad("[1]", NULL, "the reply is not a JSON object");
	reply_bad("{\"SecretString\":", NULL, "the reply is not a JSON object");
	/* the reason never carries the value */
	reply_bad("{\"SecretString\":\"{\\\"password\\\":\\\"hunter2\\\"}\"}", "pw",
		  "the secret's value is not a JSON object with a string \"pw\"");
}
END_TEST

static void write_file(const char *path, const char *text)
{
	char tmp[300];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	ck_assert_int_eq(rename(tmp, path), 0);
}

static void expect_value(struct secret *s, const char *want)
{
	char *v = secret_get(s, NULL, NULL, why, sizeof(why));

	ck_assert_msg(v != NULL, "%s", why);
	ck_assert_str_eq(v, want);
	secret_value_free(v);
}

static void expect_status_clean(struct secret *s, const char *value, const char *kind)
{
	json_t *j = secret_status_json(s);
	char *text = json_dumps(j, JSON_COMPACT);

	ck_assert_str_eq(json_string_value(json_object_get(j, "kind")), kind);
	ck_assert_msg(strstr(text, value) == NULL, "the value is in %s", text);
	free(text);
	json_decref(j);
}

START_TEST(test_literal_env_file)
{
	struct event_base *base = event_base_new();
	struct secrets *r = secrets_new(base, NULL, 60000);
	char dir[] = "/tmp/repoint-secret-XXXXXX", path[300], ref[320];
	struct secret *lit, *lit2, *env, *file;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/pw", dir);
	snprintf(ref, sizeof(ref), "file:%s", path);

	lit = secret_open(r, "hunter2");
	lit2 = secret_open(r, "hunter2");
	ck_assert_ptr_eq(lit, lit2); /* shared by reference */
	ck_assert_int_eq(secret_kind(lit), SECRET_LITERAL);
	expect_value(lit, "hunter2");
	expect_status_clean(lit, "hunter2", "literal");
	secret_close(lit2);

	setenv("REPOINT_UNIT_SECRET", "from-the-env", 1);
	env = secret_open(r, "env:REPOINT_UNIT_SECRET");
	expect_value(env, "from-the-env");
	expect_status_clean(env, "from-the-env", "env");
	unsetenv("REPOINT_UNIT_SECRET");
	ck_assert_ptr_null(secret_get(env, NULL, NULL, why, sizeof(why)));
	ck_assert_str_eq(why, "env:REPOINT_UNIT_SECRET is not set");

	/* a missing file, then one written with a line break, then rotated */
	file = secret_open(r, ref);
	ck_assert_ptr_null(secret_get(file, NULL, NULL, why, sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "No such file or directory"));
	write_file(path, "first-value\r\n");
	secret_login_failed(file); /* looked at again at once, not after the second */
	expect_value(file, "first-value");
	write_file(path, "second-value\n");
	/* within the second, a login refused makes it look now */
	secret_login_failed(file);
	expect_value(file, "second-value");
	/* gone: the value read before stays, and the error shows */
	ck_assert_int_eq(unlink(path), 0);
	secret_login_failed(file);
	expect_value(file, "second-value");
	expect_status_clean(file, "second-value", "file");
	{
		json_t *j = secret_status_json(file);
		ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "last_error")), "No such file"));
		ck_assert_int_eq(json_integer_value(json_object_get(j, "fetches")), 2);
		json_decref(j);
	}
	/* unchanged files are not read again */
	write_file(path, "third-value");
	sleep(1);
	expect_value(file, "third-value");
	{
		json_t *j = secret_status_json(file);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "fetches")), 3);
		json_decref(j);
	}
	sleep(1);
	expect_value(file, "third-value");
	{
		json_t *j = secret_status_json(file);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "fetches")), 3);
		ck_assert(json_is_null(json_object_get(j, "last_error")));
		json_decref(j);
	}

	secret_close(lit);
	secret_close(env);
	secret_close(file);
	secrets_free(r);
	event_base_free(base);
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("secret");
	TCase *tc = tcase_create("secret");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_get_secret_value_replies);
	tcase_add_test(tc, test_literal_env_file);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
