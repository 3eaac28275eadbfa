/* proxy/aws/http.h - to be written */
