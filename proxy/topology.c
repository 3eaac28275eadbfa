/* topology.c - to be written */
