/* proxy/sources/cloud.c - to be written */
