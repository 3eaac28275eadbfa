/* admin.c - to be written */
