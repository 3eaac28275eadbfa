/* sources/probe.c - to be written */
