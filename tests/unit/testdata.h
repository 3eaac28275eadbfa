/* testdata.h - recorded bodies for the unit tests (tests/unit/data/aws/). */
#ifndef REPOINT_TESTDATA_H
#define REPOINT_TESTDATA_H

#include <stddef.h>

/* The whole file NAME under tests/unit/data/aws/, NUL-terminated; its length in *len when len is
 * not NULL. Fails the test when the file cannot be read. Free with free(). */
char *testdata_load(const char *name, size_t *len);

#endif
