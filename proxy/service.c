/* service.c - to be written */
