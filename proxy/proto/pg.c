/* proto/pg.c - to be written */
