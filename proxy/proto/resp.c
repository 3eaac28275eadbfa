/* proto/resp.c - to be written */
