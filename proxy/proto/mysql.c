/* proto/mysql.c - to be written */
