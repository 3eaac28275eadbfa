/* drill/drill.h - failover drills: initiate a failover of a service's cluster, drive load through
 * the service's own listener while it happens, and report what the application saw.
 * (to be written) */
#ifndef REPOINT_DRILL_H
#define REPOINT_DRILL_H

/* `repoint drill ...`: argv[0] is "drill". Returns the process exit code. */
int drill_main(int argc, char **argv);

#endif
