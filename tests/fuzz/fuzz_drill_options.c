/* fuzz_drill_options.c - a drill's options as the admin API reads them (the body of POST /drills). */
#include <jansson.h>

#include "drill/drill.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)data, size, 0, &jerr);
	struct drill_options o;
	char err[512];

	if (j == NULL)
		return 0;
	drill_options_init(&o);
	(void)drill_options_from_json(j, &o, err, sizeof(err));
	drill_options_free(&o);
	json_decref(j);
	return 0;
}
