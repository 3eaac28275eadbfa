/* drill/cli.c - `repoint drill` (to be written). */
#include <stdio.h>

#include "drill/drill.h"

int drill_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "repoint drill: not available in this build\n");
	return 2;
}
