/* aws/token_cli.h - `repoint iam-token`: prints an RDS, ElastiCache or MemoryDB IAM auth token. */
#ifndef REPOINT_AWS_TOKEN_CLI_H
#define REPOINT_AWS_TOKEN_CLI_H

/* argv[0] is "iam-token". Returns the exit status: 0 printed, 1 no credentials or no token, 2 usage. */
int iam_token_main(int argc, char **argv);

#endif
