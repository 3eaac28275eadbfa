/* proxy/sources/cloud.h - to be written */
