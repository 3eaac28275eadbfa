/* proxy/aws/creds.c - to be written */
