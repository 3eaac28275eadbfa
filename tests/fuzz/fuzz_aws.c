/* fuzz_aws.c - everything repoint reads from the cloud: the RDS/ElastiCache XML and MemoryDB JSON
 * parsers, the STS and container/IMDS credential replies, the shared credentials/config files,
 * timestamps, Secrets Manager's GetSecretValue replies and the secret references of the
 * configuration. Input: [parser selector][body]. */
#include <stdlib.h>
#include <string.h>

#include "aws/creds.h"
#include "fuzz_common.h"
#include "secret.h"
#include "sources/cloud.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cloud_view v;
	struct aws_credentials c;
	struct aws_profile prof;
	char err[512];
	const char *body;
	char *text;
	size_t len;
	int64_t ms;

	if (size < 1)
		return 0;
	body = (const char *)data + 1;
	len = size - 1;
	text = malloc(len + 1);
	if (text == NULL)
		return 0;
	memcpy(text, body, len);
	text[len] = '\0';
	cloud_view_init(&v);
	memset(&c, 0, sizeof(c));
	switch (data[0] % 14) {
	case 0: (void)cloud_parse_rds_clusters(body, len, NULL, &v, err, sizeof(err)); break;
	case 1: (void)cloud_parse_rds_clusters(body, len, "db1", &v, err, sizeof(err)); break;
	case 2: (void)cloud_parse_rds_instances(body, len, &v, err, sizeof(err)); break;
	case 3: (void)cloud_parse_ec_replication_groups(body, len, NULL, "0001", &v, err, sizeof(err)); break;
	case 4: (void)cloud_parse_ec_cache_clusters(body, len, &v, err, sizeof(err)); break;
	case 5: (void)cloud_parse_ec_global_groups(body, len, NULL, &v, err, sizeof(err)); break;
	case 6: (void)cloud_parse_memorydb_clusters(body, len, NULL, NULL, &v, err, sizeof(err)); break;
	case 7: (void)aws_creds_parse_sts(body, len, &c, err, sizeof(err)); break;
	case 8: (void)aws_creds_parse_json(body, len, &c, err, sizeof(err)); break;
	case 9: (void)aws_profile_parse(text, text, "default", &prof, err, sizeof(err)); break;
	case 10: (void)aws_parse_iso8601(text, &ms); break;
	case 11:
	case 12: {
		char *value = NULL, *user = NULL, version[80];
		if (secret_parse_reply(body, len, data[0] % 14 == 12 ? "password" : NULL, &value, &user, version,
		                       sizeof(version), err, sizeof(err)))
			FUZZ_CHECK(value != NULL && strlen(version) < sizeof(version));
		else
			FUZZ_CHECK(value == NULL && user == NULL && err[0] != '\0');
		secret_value_free(value);
		secret_value_free(user);
		break;
	}
	case 13: {
		struct secret_ref r;
		(void)secret_ref_parse(text, &r, err, sizeof(err));
		break;
	}
	}
	(void)cloud_view_writer(&v);
	cloud_view_free(&v);
	free(text);
	return 0;
}
