/* net/session.c - to be written */
