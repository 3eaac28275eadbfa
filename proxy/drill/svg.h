/* drill/svg.h - the drill's timeline as a self-contained SVG, drawn from the JSON result alone
 * (so a report fetched from another repoint renders the same). One panel per run: successes
 * (green, up) and errors (red, down) per 100 ms bucket, blocked requests in amber, one strip per
 * client, the outage window shaded, and a numbered vertical line per timeline event with a legend
 * underneath. No scripts, no external fonts or images. */
#ifndef REPOINT_DRILL_SVG_H
#define REPOINT_DRILL_SVG_H

#include <stdio.h>

typedef struct json_t json_t;

void drill_svg_write(const json_t *result, FILE *out);

#endif
