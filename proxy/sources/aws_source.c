/* sources/aws_source.c - to be written */
