/* fuzz_config.c - the INI configuration loader on any text: it accepts or says why, never more. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char err[4096];
	struct config *cfg;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	cfg = config_load_string(text, "fuzz.ini", err, sizeof(err));
	FUZZ_CHECK(cfg != NULL || err[0] != '\0');
	FUZZ_CHECK(strlen(err) < sizeof(err));
	config_free(cfg);
	free(text);
	return 0;
}
