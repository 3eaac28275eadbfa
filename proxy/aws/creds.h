/* proxy/aws/creds.h - to be written */
