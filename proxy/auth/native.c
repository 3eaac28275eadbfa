/* native.c - MySQL's mysql_native_password, both ways, and caching_sha2_password's answer (auth.h).
 * Every digest from OpenSSL. */
#include "auth/auth.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* md(a + b) into out, which holds want bytes. */
static bool digest2(const EVP_MD *md, const void *a, size_t alen, const void *b, size_t blen, uint8_t *out,
		    unsigned int want)
{
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx != NULL && EVP_MD_get_size(md) == (int)want && EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
		  EVP_DigestUpdate(ctx, a, alen) == 1 && (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
		  EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == want;

	EVP_MD_CTX_free(ctx);
	return ok;
}

static bool sha1_2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[MYSQL_NATIVE_LEN])
{
	return digest2(EVP_sha1(), a, alen, b, blen, out, MYSQL_NATIVE_LEN);
}

bool mysql_sha2_answer(const char *password, const uint8_t nonce[MYSQL_NATIVE_LEN], uint8_t out[MYSQL_SHA2_LEN])
{
	uint8_t s1[MYSQL_SHA2_LEN], s2[MYSQL_SHA2_LEN], mask[MYSQL_SHA2_LEN];
	bool ok = digest2(EVP_sha256(), password, strlen(password), NULL, 0, s1, MYSQL_SHA2_LEN) &&
		  digest2(EVP_sha256(), s1, sizeof(s1), NULL, 0, s2, MYSQL_SHA2_LEN) &&
		  digest2(EVP_sha256(), s2, sizeof(s2), nonce, MYSQL_NATIVE_LEN, mask, MYSQL_SHA2_LEN);

	for (size_t i = 0; ok && i < MYSQL_SHA2_LEN; i++)
		out[i] = s1[i] ^ mask[i];
	OPENSSL_cleanse(s1, sizeof(s1));
	OPENSSL_cleanse(s2, sizeof(s2));
	OPENSSL_cleanse(mask, sizeof(mask));
	return ok;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool mysql_native_parse_hash(const char *s, uint8_t stage2[MYSQL_NATIVE_LEN])
{
	if (s == NULL || s[0] != '*' || strlen(s) != 1 + 2 * MYSQL_NATIVE_LEN)
		return false;
	for (size_t i = 0; i < MYSQL_NATIVE_LEN; i++) {
		int hi = hexval(s[1 + 2 * i]), lo = hexval(s[2 + 2 * i]);
		if (hi < 0 || lo < 0)
			return false;
		stage2[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

bool mysql_native_stage1(const char *password, uint8_t stage1[MYSQL_NATIVE_LEN])
{
	return sha1_2(password, strlen(password), NULL, 0, stage1);
}

bool mysql_native_stage2(const uint8_t stage1[MYSQL_NATIVE_LEN], uint8_t stage2[MYSQL_NATIVE_LEN])
{
	return sha1_2(stage1, MYSQL_NATIVE_LEN, NULL, 0, stage2);
}

bool mysql_native_answer(const uint8_t challenge[MYSQL_NATIVE_LEN], const uint8_t stage1[MYSQL_NATIVE_LEN],
			 uint8_t out[MYSQL_NATIVE_LEN])
{
	uint8_t stage2[MYSQL_NATIVE_LEN], mask[MYSQL_NATIVE_LEN];
	bool ok = mysql_native_stage2(stage1, stage2) && sha1_2(challenge, MYSQL_NATIVE_LEN, stage2, MYSQL_NATIVE_LEN, mask);

	for (size_t i = 0; ok && i < MYSQL_NATIVE_LEN; i++)
		out[i] = stage1[i] ^ mask[i];
	OPENSSL_cleanse(stage2, sizeof(stage2));
	OPENSSL_cleanse(mask, sizeof(mask));
	return ok;
}

bool mysql_native_check(const uint8_t challenge[MYSQL_NATIVE_LEN], const uint8_t *answer, size_t n,
			const uint8_t stage2[MYSQL_NATIVE_LEN], uint8_t stage1[MYSQL_NATIVE_LEN])
{
	uint8_t mask[MYSQL_NATIVE_LEN], cand[MYSQL_NATIVE_LEN], check[MYSQL_NATIVE_LEN];
	bool ok = n == MYSQL_NATIVE_LEN && sha1_2(challenge, MYSQL_NATIVE_LEN, stage2, MYSQL_NATIVE_LEN, mask);

	for (size_t i = 0; ok && i < MYSQL_NATIVE_LEN; i++)
		cand[i] = answer[i] ^ mask[i];
	ok = ok && mysql_native_stage2(cand, check) && CRYPTO_memcmp(check, stage2, MYSQL_NATIVE_LEN) == 0;
	if (ok)
		memcpy(stage1, cand, MYSQL_NATIVE_LEN);
	OPENSSL_cleanse(mask, sizeof(mask));
	OPENSSL_cleanse(cand, sizeof(cand));
	return ok;
}
