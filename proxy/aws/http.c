/* proxy/aws/http.c - to be written */
