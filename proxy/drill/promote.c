/* drill/promote.c - failing over static members through the engines themselves.
 *
 * The plan is a list of statements, each sent to one member over its own connection (conn.c, so
 * nothing blocks the loop), written down before anything runs: the dry run prints it, the report
 * keeps it, and the run follows it step by step.
 *
 *   Postgres  ALTER SYSTEM SET default_transaction_read_only = on and pg_reload_conf() on the old
 *             writer, SHOW it until it says on, wait (5 s at most) for the transactions that began
 *             before to end and end those still open (pg_terminate_backend: they could commit after
 *             the fork), wait until the target has replayed the old writer's pg_current_wal_lsn(),
 *             then pg_promote(true, 30) on the target. The old primary keeps running, read-only, on
 *             its timeline; repoint prefers the higher timeline and fences the old one.
 *   Redis     CLIENT PAUSE WRITE on the old writer, wait until the target's slave_repl_offset
 *             reaches the old writer's master_repl_offset, REPLICAOF NO ONE on the target,
 *             REPLICAOF target on the old writer and the others, CLIENT UNPAUSE.
 *   MariaDB   read_only=1 on the old writer, MASTER_GTID_WAIT(its gtid_binlog_pos) on the target,
 *             STOP SLAVE; RESET SLAVE ALL; read_only=0 there, then the old writer (and the others)
 *             replicate from the target with GTID.
 *   Redis Cluster (cluster = on: one shard, --shard)  CLUSTER FAILOVER on a replica of the shard,
 *             as the cluster's own switchover: the primary pauses its writes until the replica has
 *             caught up, the replica takes the shard's slots over and the old primary follows it.
 *             Redis answers +OK at once and does the rest between the nodes: the target's INFO
 *             replication is asked until it says role:master.
 *
 * Each step says what a failure means: nothing has changed yet (the drill ends, refused as
 * failed), something must be undone first (the undo list runs: CLIENT UNPAUSE, read_only=0 on the
 * old writer, ALTER SYSTEM RESET default_transaction_read_only and pg_reload_conf() on the old
 * Postgres writer), or the promotion already happened and the rest is best effort (noted, carried
 * on).
 */
#include "drill/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

/* How long the old Redis writer's writes are paused at most (they resume when it is lifted). */
#define PROMOTE_RD_PAUSE_MS 10000
/* The target must have caught up well before the pause runs out. */
#define PROMOTE_RD_CATCHUP_MS 8000
#define PROMOTE_RD_POLL_MS 2
#define PROMOTE_SLOW_STEP_MS 40000
/* Redis gives a manual failover up 5 s after CLUSTER FAILOVER (CLUSTER_MF_TIMEOUT): a replica that
 * is not the primary a little later will not become it. */
#define PROMOTE_CL_FAILOVER_MS 6000
#define PROMOTE_CL_POLL_MS 10
/* Postgres: the old writer's backends take the reloaded setting (pg_reload_conf() only signals the
 * postmaster, which signals them); the transactions that began writable end (past that, go on);
 * the target replays the old writer's WAL. */
#define PROMOTE_PG_RO_MS 10000
#define PROMOTE_PG_DRAIN_MS 5000
#define PROMOTE_PG_CATCHUP_MS 10000
#define PROMOTE_PG_POLL_MS 2

enum promote_op {
	OP_PLAIN,        /* must succeed */
	OP_PG_PROMOTE,   /* must answer t */
	OP_PG_RO_WAIT,   /* poll the old writer until SHOW default_transaction_read_only says on */
	OP_PG_SINCE,     /* read the old writer's clock_timestamp() */
	OP_PG_DRAIN,     /* poll until no transaction begun before that is open: built when it runs */
	OP_PG_END,       /* end those still open (they could commit after the target forks): built so too */
	OP_PG_LSN,       /* read the old writer's pg_current_wal_lsn() */
	OP_PG_CATCHUP,   /* poll the target until it has replayed that: built when it runs */
	OP_RD_OFFSET,    /* read the old writer's master_repl_offset */
	OP_RD_CATCHUP,   /* poll the target until it has that much */
	OP_MY_POS,       /* read the old writer's gtid_binlog_pos */
	OP_MY_WAIT,      /* MASTER_GTID_WAIT(that position): built when it runs */
	OP_CL_PROMOTED,  /* poll the target until it is a cluster primary */
};

enum promote_on_fail {
	FAIL_CLEAN,      /* nothing changed yet: just stop */
	FAIL_UNDO,       /* run the undo list, then stop */
	FAIL_CONTINUE,   /* the target is the writer already: note it and go on */
};

struct promote_step {
	int member;
	char *cmd;       /* NULL for OP_MY_WAIT, OP_PG_DRAIN, OP_PG_END, OP_PG_CATCHUP */
	char *shown;     /* as printed and reported: secrets masked */
	enum promote_op op;
	enum promote_on_fail on_fail;
	bool promotes;   /* its success makes the target the writer */
};

struct promote_conn {
	struct drill_promote *p;
	struct drill_conn *conn;
};

struct drill_promote {
	struct drill *d;
	struct promote_step *steps, *undo;
	int nsteps, nundo;
	int cur;
	bool undoing;
	struct promote_conn *conns;     /* one per member, made when first needed */
	long long offset;
	char pos[256];
	char since[64];                 /* Postgres: the old writer's clock_timestamp(), checked */
	char lsn[40];                   /* ... its pg_current_wal_lsn(), checked */
	char built[1024];               /* the statement of a step built when it runs */
	int64_t catchup_deadline_us;
	int64_t step_started_us;        /* the current step's first try (the polls' bound) */
	bool polling;                   /* the current step runs again */
	struct event *retry;
	char fail_code[64];
	char fail_msg[4096];
};

/* SQL string literal contents: quotes doubled, backslashes escaped. */
static void sql_escape(const char *s, char *out, size_t len)
{
	size_t n = 0;

	for (; *s != '\0' && n + 3 < len; s++) {
		if (*s == '\'' || *s == '\\')
			out[n++] = *s == '\'' ? '\'' : '\\';
		out[n++] = *s;
	}
	out[n] = '\0';
}

static bool add_step(struct promote_step **arr, int *n, int member, const char *cmd, const char *shown,
		     enum promote_op op, enum promote_on_fail on_fail, bool promotes)
{
	struct promote_step *grown = realloc(*arr, (size_t)(*n + 1) * sizeof(**arr));
	struct promote_step *s;

	if (grown == NULL)
		return false;
	*arr = grown;
	s = &grown[*n];
	memset(s, 0, sizeof(*s));
	s->member = member;
	s->cmd = cmd != NULL ? strdup(cmd) : NULL;
	s->shown = strdup(shown != NULL ? shown : cmd);
	s->op = op;
	s->on_fail = on_fail;
	s->promotes = promotes;
	(*n)++;
	return (cmd == NULL || s->cmd != NULL) && s->shown != NULL;
}

/* The members the failover concerns: all, or (cluster = on) those of the drilled shard. */
static bool in_scope(const struct drill *d, int i)
{
	return d->shard < 0 || d->members[i].shard == d->shard;
}

static int find_member(const struct drill *d, const char *target)
{
	struct hostport hp;
	char norm[300], err[128];

	for (int i = 0; i < d->nmembers; i++)
		if (strcmp(d->members[i].str, target) == 0)
			return i;
	if (!parse_hostport(target, &hp, err, sizeof(err)))
		return -1;
	hostport_str(&hp, norm, sizeof(norm));
	for (int i = 0; i < d->nmembers; i++) {
		char num[300];
		snprintf(num, sizeof(num), "%s:%u", d->members[i].ep.host, d->members[i].ep.port);
		if (strcmp(d->members[i].str, norm) == 0 || strcmp(num, norm) == 0 ||
		    (strcmp(d->members[i].ep.host, hp.host) == 0 && d->members[i].ep.port == hp.port))
			return i;
	}
	return -1;
}

static void member_list(const struct drill *d, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < d->nmembers && off + 1 < len; i++)
		if (in_scope(d, i))
			off += (size_t)snprintf(buf + off, len - off, "%s%s %s", off ? ", " : "", d->members[i].str,
						role_name(d->members[i].role));
}

/* The transactions of other clients that began before the old writer's new transactions became
 * read-only; `since` is a checked timestamp. */
#define PG_BEGUN_WRITABLE                                                                               \
	"FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "      \
	"AND xact_start < '%s'::timestamptz"
#define PG_DRAIN_SQL "SELECT count(*) " PG_BEGUN_WRITABLE
#define PG_END_SQL "SELECT count(pg_catalog.pg_terminate_backend(pid, 5000)) " PG_BEGUN_WRITABLE
#define PG_CATCHUP_SQL "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn"

static bool plan_pg(struct drill_promote *p)
{
	struct drill *d = p->d;
	char shown[400];
	bool ok = true;

	/* The old writer stops taking writes: every new transaction there is read-only (a write is
	 * refused with 25006 and runs nowhere; repoint's probe no longer counts it as the writer). */
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "ALTER SYSTEM SET default_transaction_read_only = on",
			    NULL, OP_PLAIN, FAIL_CLEAN, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SELECT pg_reload_conf()", NULL, OP_PLAIN, FAIL_UNDO,
			    false);
	snprintf(shown, sizeof(shown), "SHOW default_transaction_read_only  (until on, %d ms at most)",
		 PROMOTE_PG_RO_MS);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SHOW default_transaction_read_only", shown,
			    OP_PG_RO_WAIT, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SELECT clock_timestamp()", NULL, OP_PG_SINCE, FAIL_UNDO,
			    false);
	snprintf(shown, sizeof(shown), PG_DRAIN_SQL "  (until 0, %d ms at most)", "<that clock_timestamp()>",
		 PROMOTE_PG_DRAIN_MS);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, NULL, shown, OP_PG_DRAIN, FAIL_UNDO, false);
	/* Those still open could commit after the target forks, acknowledged and lost: they end (their
	 * clients see the connection closed -- the outcome they are told of, not a silent loss). */
	snprintf(shown, sizeof(shown), PG_END_SQL, "<that clock_timestamp()>");
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, NULL, shown, OP_PG_END, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SELECT pg_current_wal_lsn()", NULL, OP_PG_LSN,
			    FAIL_UNDO, false);
	snprintf(shown, sizeof(shown), PG_CATCHUP_SQL "  (until t, %d ms at most)",
		 "<the old writer''s pg_current_wal_lsn()>", PROMOTE_PG_CATCHUP_MS);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, NULL, shown, OP_PG_CATCHUP, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "SELECT pg_promote(true, 30)", NULL, OP_PG_PROMOTE,
			    FAIL_UNDO, true);
	/* Undo before the target is promoted: the old writer takes writes again. After it, the old
	 * writer stays read-only (fenced by its timeline and by that). */
	ok = ok && add_step(&p->undo, &p->nundo, d->old_idx, "ALTER SYSTEM RESET default_transaction_read_only", NULL,
			    OP_PLAIN, FAIL_CONTINUE, false);
	ok = ok && add_step(&p->undo, &p->nundo, d->old_idx, "SELECT pg_reload_conf()", NULL, OP_PLAIN, FAIL_CONTINUE,
			    false);
	return ok;
}

static bool plan_redis(struct drill_promote *p)
{
	struct drill *d = p->d;
	const struct drill_member *t = &d->members[d->target_idx];
	char cmd[400];
	bool ok = true;

	snprintf(cmd, sizeof(cmd), "CLIENT PAUSE %d WRITE", PROMOTE_RD_PAUSE_MS);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, cmd, NULL, OP_PLAIN, FAIL_CLEAN, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "INFO replication",
			    "INFO replication  (master_repl_offset)", OP_RD_OFFSET, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "INFO replication",
			    "INFO replication  (until slave_repl_offset >= the old writer's master_repl_offset)",
			    OP_RD_CATCHUP, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "REPLICAOF NO ONE", NULL, OP_PLAIN, FAIL_UNDO, true);
	snprintf(cmd, sizeof(cmd), "REPLICAOF %s %u", t->hp.host, t->hp.port);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, cmd, NULL, OP_PLAIN, FAIL_CONTINUE, false);
	for (int i = 0; i < d->nmembers; i++)
		if (i != d->old_idx && i != d->target_idx && d->members[i].role != ROLE_DOWN)
			ok = ok && add_step(&p->steps, &p->nsteps, i, cmd, NULL, OP_PLAIN, FAIL_CONTINUE, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "CLIENT UNPAUSE", NULL, OP_PLAIN, FAIL_CONTINUE, false);
	/* Undo before the target is promoted: lift the pause, and that is all that changed. */
	ok = ok && add_step(&p->undo, &p->nundo, d->old_idx, "CLIENT UNPAUSE", NULL, OP_PLAIN, FAIL_CONTINUE, false);
	return ok;
}

static bool plan_cluster(struct drill_promote *p)
{
	struct drill *d = p->d;
	bool ok = true;

	/* Refused (sent to a primary, the replica's link down): nothing happened. Not done in time:
	 * Redis gave it up, nothing happened either. */
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "CLUSTER FAILOVER", NULL, OP_PLAIN, FAIL_CLEAN, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "INFO replication",
			    "INFO replication  (until role:master)", OP_CL_PROMOTED, FAIL_CLEAN, true);
	return ok;
}

static bool plan_mysql_follow(struct drill_promote *p, int member)
{
	struct drill *d = p->d;
	const struct drill_member *t = &d->members[d->target_idx];
	const char *user = d->o.repl_user != NULL ? d->o.repl_user
			   : d->o.promote_user != NULL ? d->o.promote_user
						       : d->scfg->probe_user;
	const char *pw = d->o.repl_password != NULL ? d->o.repl_password
			 : d->o.promote_password != NULL ? d->o.promote_password
							 : d->probe_password;
	char host[600], u[300], pwe[300], cmd[1600], shown[1600];
	bool ok = true;

	sql_escape(t->hp.host, host, sizeof(host));
	sql_escape(user != NULL ? user : "", u, sizeof(u));
	sql_escape(pw != NULL ? pw : "", pwe, sizeof(pwe));
	ok = ok && add_step(&p->steps, &p->nsteps, member, "STOP SLAVE", NULL, OP_PLAIN, FAIL_CONTINUE, false);
	/* Its own transactions are in its binlog position: replicate from there, not from an old
	 * slave position that would fetch them again. */
	ok = ok && add_step(&p->steps, &p->nsteps, member, "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos",
			    NULL, OP_PLAIN, FAIL_CONTINUE, false);
	snprintf(cmd, sizeof(cmd),
		 "CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%u, MASTER_USER='%s', MASTER_PASSWORD='%s', "
		 "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
		 host, t->hp.port, u, pwe);
	snprintf(shown, sizeof(shown),
		 "CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%u, MASTER_USER='%s', MASTER_PASSWORD='***', "
		 "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
		 host, t->hp.port, u);
	ok = ok && add_step(&p->steps, &p->nsteps, member, cmd, shown, OP_PLAIN, FAIL_CONTINUE, false);
	explicit_bzero(cmd, sizeof(cmd));
	explicit_bzero(pwe, sizeof(pwe));
	ok = ok && add_step(&p->steps, &p->nsteps, member, "START SLAVE", NULL, OP_PLAIN, FAIL_CONTINUE, false);
	return ok;
}

static bool plan_mysql(struct drill_promote *p)
{
	struct drill *d = p->d;
	bool ok = true;

	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SET GLOBAL read_only = 1", NULL, OP_PLAIN, FAIL_CLEAN,
			    false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->old_idx, "SELECT @@global.gtid_binlog_pos", NULL, OP_MY_POS,
			    FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, NULL,
			    "SELECT MASTER_GTID_WAIT('<the old writer''s gtid_binlog_pos>', 30)", OP_MY_WAIT, FAIL_UNDO,
			    false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "STOP SLAVE", NULL, OP_PLAIN, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "RESET SLAVE ALL", NULL, OP_PLAIN, FAIL_UNDO, false);
	ok = ok && add_step(&p->steps, &p->nsteps, d->target_idx, "SET GLOBAL read_only = 0", NULL, OP_PLAIN, FAIL_UNDO,
			    true);
	ok = ok && plan_mysql_follow(p, d->old_idx);
	for (int i = 0; i < d->nmembers; i++)
		if (i != d->old_idx && i != d->target_idx && d->members[i].role != ROLE_DOWN)
			ok = ok && plan_mysql_follow(p, i);
	/* Undo before the target takes writes: the old writer takes them again. */
	ok = ok && add_step(&p->undo, &p->nundo, d->old_idx, "SET GLOBAL read_only = 0", NULL, OP_PLAIN, FAIL_CONTINUE,
			    false);
	return ok;
}

bool drill_promote_plan(struct drill *d, char *err, size_t errlen)
{
	struct drill_promote *p;
	json_t *calls = json_object_get(d->failover, "calls");
	const char *method;
	char list[1200], what[300];
	int writers = 0;
	bool ok;

	member_list(d, list, sizeof(list));
	if (d->shard >= 0)
		snprintf(what, sizeof(what), "shard %d of service %s", d->shard, d->scfg->name);
	else
		snprintf(what, sizeof(what), "service %s", d->scfg->name);
	for (int i = 0; i < d->nmembers; i++) {
		if (!in_scope(d, i))
			continue;
		if (d->members[i].role == ROLE_WRITER && d->members[i].healthy)
			writers++;
		if (strcmp(d->members[i].str, d->old_writer) == 0)
			d->old_idx = i;
	}
	if (writers != 1 || d->old_idx < 0) {
		snprintf(err, errlen, "exactly one writer must be known to fail over %s (members: %s)", what, list);
		return false;
	}
	if (d->o.target != NULL) {
		d->target_idx = find_member(d, d->o.target);
		if (d->target_idx < 0 || !in_scope(d, d->target_idx)) {
			snprintf(err, errlen, "--target %s is not a member of %s (members: %s)", d->o.target, what,
				 list);
			d->target_idx = -1;
			return false;
		}
		if (d->target_idx == d->old_idx) {
			snprintf(err, errlen, "--target %s is the writer already", d->o.target);
			return false;
		}
		if (d->members[d->target_idx].role != ROLE_READER || !d->members[d->target_idx].healthy) {
			snprintf(err, errlen, "--target %s is not a healthy reader (role %s)", d->o.target,
				 role_name(d->members[d->target_idx].role));
			return false;
		}
	} else {
		for (int i = 0; i < d->nmembers && d->target_idx < 0; i++)
			if (in_scope(d, i) && d->members[i].role == ROLE_READER && d->members[i].healthy)
				d->target_idx = i;
		if (d->target_idx < 0) {
			snprintf(err, errlen, "%s has no healthy reader to promote (members: %s)", what, list);
			return false;
		}
	}
	/* The promotions speak to the members with the promotion credentials. */
	for (int i = 0; i < d->nmembers; i++) {
		d->members[i].ep.user = d->o.promote_user != NULL ? d->o.promote_user : d->scfg->probe_user;
		d->members[i].ep.password = d->o.promote_password != NULL ? d->o.promote_password
					    : d->o.promote_user != NULL    ? ""
									   : d->probe_password;
		d->members[i].ep.database = d->scfg->probe_database;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	d->promote = p;
	p->d = d;
	p->conns = calloc((size_t)d->nmembers, sizeof(*p->conns));
	switch (d->scfg->protocol) {
	case PROTOCOL_POSTGRES:
		method = "pg_promote";
		ok = plan_pg(p);
		break;
	case PROTOCOL_REDIS:
		method = d->shard >= 0 ? "redis cluster failover" : "redis coordinated handover";
		ok = d->shard >= 0 ? plan_cluster(p) : plan_redis(p);
		break;
	case PROTOCOL_MYSQL:
	default:
		method = "mariadb gtid switchover";
		ok = plan_mysql(p);
		break;
	}
	if (!ok || p->conns == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	json_object_set_new(d->failover, "method", json_string(method));
	if (d->shard >= 0)
		json_object_set_new(d->failover, "shard", json_integer(d->shard));
	json_object_set_new(d->failover, "from", json_string(d->members[d->old_idx].str));
	json_object_set_new(d->failover, "to", json_string(d->members[d->target_idx].str));
	for (int i = 0; i < p->nsteps; i++) {
		char line[1800];
		snprintf(line, sizeof(line), "%s: %s", d->members[p->steps[i].member].str, p->steps[i].shown);
		json_array_append_new(calls, json_string(line));
	}
	for (int i = 0; i < p->nundo; i++) {
		char line[1800];
		snprintf(line, sizeof(line), "(on failure before the promotion) %s: %s", d->members[p->undo[i].member].str,
			 p->undo[i].shown);
		json_array_append_new(calls, json_string(line));
	}
	return true;
}

/* ---- running the plan ------------------------------------------------------------------------ */

static void promote_run(struct drill_promote *p);

/* Where the value of `field` starts in an INFO reply, NULL when it has none. */
static const char *info_value(const char *info, const char *field)
{
	size_t n = strlen(field);

	for (const char *s = info; s != NULL && *s != '\0'; s = strchr(s, '\n'), s = s != NULL ? s + 1 : NULL) {
		if (strncmp(s, field, n) == 0 && s[n] == ':')
			return s + n + 1;
	}
	return NULL;
}

static long long info_field(const char *info, const char *field)
{
	const char *v = info_value(info, field);

	return v != NULL ? strtoll(v, NULL, 10) : -1;
}

/* The value is `word`, up to the end of its line (strchr finds the terminating NUL too). */
static bool info_is(const char *info, const char *field, const char *word)
{
	const char *v = info_value(info, field);
	size_t n = strlen(word);

	return v != NULL && strncmp(v, word, n) == 0 && strchr("\r\n", v[n]) != NULL;
}

/* A server's answers are not trusted into SQL: an LSN is hex/hex ... */
static bool pg_lsn_ok(const char *v)
{
	size_t a, b;

	if (v == NULL)
		return false;
	a = strspn(v, "0123456789ABCDEFabcdef");
	if (a < 1 || a > 8 || v[a] != '/')
		return false;
	b = strspn(v + a + 1, "0123456789ABCDEFabcdef");
	return b >= 1 && b <= 8 && v[a + 1 + b] == '\0';
}

/* ... and a timestamp (in the session's DateStyle: ISO by default, but "Sun Dec 06 ..." or
 * "12/06/2026 ..." as well) is digits, letters, spaces and + - . : / only. */
static bool pg_timestamp_ok(const char *v, size_t max)
{
	static const char allowed[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ +-.:/";
	size_t n;

	if (v == NULL || v[0] == '\0')
		return false;
	n = strlen(v);
	return n < max && strspn(v, allowed) == n;
}

static void promote_stop(struct drill_promote *p)
{
	struct drill *d = p->d;

	drill_fail(d, "failed", p->fail_code, "%s", p->fail_msg);
}

static void promote_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	promote_run(arg);
}

/* The step's answer is not the one awaited yet: it runs again in poll_ms. */
static void promote_poll(struct drill_promote *p, int poll_ms)
{
	struct timeval tv = {0, poll_ms * 1000};

	p->polling = true;
	evtimer_add(p->retry, &tv);
}

static void promote_result(void *arg, const struct drill_result *r)
{
	struct promote_conn *pc = arg;
	struct drill_promote *p = pc->p;
	struct drill *d = p->d;
	struct promote_step *s = p->undoing ? &p->undo[p->cur] : &p->steps[p->cur];
	const char *member = d->members[s->member].str;
	bool ok = r->kind == DRILL_OK;
	char result[1024];

	if (ok)
		snprintf(result, sizeof(result), "%s", r->value != NULL ? r->value : "ok");
	else
		snprintf(result, sizeof(result), "%s: %s", drill_kind_name(r->kind), r->message);
	/* INFO is long: keep the field that matters. */
	if (ok && (s->op == OP_RD_OFFSET || s->op == OP_RD_CATCHUP)) {
		long long v = info_field(r->value, s->op == OP_RD_OFFSET ? "master_repl_offset" : "slave_repl_offset");
		snprintf(result, sizeof(result), "%s=%lld", s->op == OP_RD_OFFSET ? "master_repl_offset" : "slave_repl_offset",
			 v);
		if (v < 0) {
			ok = false;
			snprintf(result, sizeof(result), "no %s in INFO replication",
				 s->op == OP_RD_OFFSET ? "master_repl_offset (not a primary?)" : "slave_repl_offset");
		} else if (s->op == OP_RD_OFFSET) {
			p->offset = v;
		} else if (v < p->offset) {
			/* Not there yet: ask again shortly while the pause lasts. */
			if (drill_now(d) < p->catchup_deadline_us) {
				promote_poll(p, PROMOTE_RD_POLL_MS);
				return;
			}
			ok = false;
			snprintf(result, sizeof(result), "slave_repl_offset %lld did not reach %lld within %d ms", v, p->offset,
				 PROMOTE_RD_CATCHUP_MS);
		}
	}
	if (s->op == OP_CL_PROMOTED) {
		/* Asked again, also after an error (the target is busy taking over), until Redis's own
		 * deadline has passed. */
		if (ok && info_is(r->value, "role", "master")) {
			snprintf(result, sizeof(result), "role:master");
		} else if (drill_now(d) < d->requested_us + PROMOTE_CL_FAILOVER_MS * 1000) {
			promote_poll(p, PROMOTE_CL_POLL_MS);
			return;
		} else if (ok) {
			ok = false;
			snprintf(result, sizeof(result),
				 "still a replica %d ms after CLUSTER FAILOVER: the cluster gave the manual failover up",
				 PROMOTE_CL_FAILOVER_MS);
		}
	}
	if (ok && s->op == OP_PG_RO_WAIT) {
		if (r->value != NULL && strcmp(r->value, "on") == 0) {
			snprintf(result, sizeof(result), "on");
		} else if (drill_now(d) < p->step_started_us + PROMOTE_PG_RO_MS * 1000LL) {
			promote_poll(p, PROMOTE_PG_POLL_MS);
			return;
		} else {
			ok = false;
			snprintf(result, sizeof(result), "still %.40s %d ms after pg_reload_conf()",
				 r->value != NULL ? r->value : "NULL", PROMOTE_PG_RO_MS);
		}
	}
	if (ok && s->op == OP_PG_SINCE) {
		if (pg_timestamp_ok(r->value, sizeof(p->since))) {
			snprintf(p->since, sizeof(p->since), "%s", r->value);
		} else {
			ok = false;
			snprintf(result, sizeof(result), "not a timestamp: %.80s",
				 r->value != NULL ? r->value : "NULL");
		}
	}
	if (ok && s->op == OP_PG_DRAIN) {
		char *end = NULL;
		long nopen = r->value != NULL ? strtol(r->value, &end, 10) : -1;

		if (r->value == NULL || end == r->value || *end != '\0' || nopen < 0) {
			ok = false;
			snprintf(result, sizeof(result), "not a count: %.80s", r->value != NULL ? r->value : "NULL");
		} else if (nopen == 0) {
			snprintf(result, sizeof(result), "0: every transaction begun writable has ended");
		} else if (drill_now(d) < p->step_started_us + PROMOTE_PG_DRAIN_MS * 1000LL) {
			promote_poll(p, PROMOTE_PG_POLL_MS);
			return;
		} else {
			snprintf(result, sizeof(result),
				 "%ld transaction(s) begun writable still open after %d ms: they are ended next",
				 nopen, PROMOTE_PG_DRAIN_MS);
		}
	}
	if (ok && s->op == OP_PG_END) {
		char *end = NULL;
		long nend = r->value != NULL ? strtol(r->value, &end, 10) : -1;

		if (r->value == NULL || end == r->value || *end != '\0' || nend < 0) {
			ok = false;
			snprintf(result, sizeof(result), "not a count: %.80s", r->value != NULL ? r->value : "NULL");
		} else {
			snprintf(result, sizeof(result), "%ld ended", nend);
		}
	}
	if (ok && s->op == OP_PG_LSN) {
		if (pg_lsn_ok(r->value)) {
			snprintf(p->lsn, sizeof(p->lsn), "%s", r->value);
		} else {
			ok = false;
			snprintf(result, sizeof(result), "not an LSN: %.80s", r->value != NULL ? r->value : "NULL");
		}
	}
	if (ok && s->op == OP_PG_CATCHUP) {
		if (r->value != NULL && strcmp(r->value, "t") == 0) {
			snprintf(result, sizeof(result), "t");
		} else if (drill_now(d) < p->step_started_us + PROMOTE_PG_CATCHUP_MS * 1000LL) {
			promote_poll(p, PROMOTE_PG_POLL_MS);
			return;
		} else {
			ok = false;
			snprintf(result, sizeof(result), "the target had not replayed %s after %d ms (answer %.40s)",
				 p->lsn, PROMOTE_PG_CATCHUP_MS, r->value != NULL ? r->value : "NULL");
		}
	}
	if (ok && s->op == OP_PG_PROMOTE && (r->value == NULL || strcmp(r->value, "t") != 0)) {
		ok = false;
		snprintf(result, sizeof(result), "pg_promote returned %s: not promoted within 30 s",
			 r->value != NULL ? r->value : "nothing");
	}
	if (ok && s->op == OP_MY_POS)
		snprintf(p->pos, sizeof(p->pos), "%s", r->value != NULL ? r->value : "");
	if (ok && s->op == OP_MY_WAIT && (r->value == NULL || strcmp(r->value, "0") != 0)) {
		ok = false;
		snprintf(result, sizeof(result), "MASTER_GTID_WAIT returned %s: the target did not apply %s within 30 s",
			 r->value != NULL ? r->value : "NULL", p->pos);
	}
	if (s->op == OP_MY_WAIT) {
		char shown[600];
		snprintf(shown, sizeof(shown), "SELECT MASTER_GTID_WAIT('%s', 30)", p->pos);
		drill_step(d, member, shown, ok, result);
	} else if (s->op == OP_PG_DRAIN || s->op == OP_PG_END || s->op == OP_PG_CATCHUP) {
		drill_step(d, member, p->built, ok, result);
	} else {
		drill_step(d, member, s->shown, ok, result);
	}
	p->cur++;
	if (p->undoing) {
		promote_run(p);
		return;
	}
	if (ok) {
		if (s->promotes && d->scfg->protocol == PROTOCOL_POSTGRES) {
			const struct drill_member *old = &d->members[d->old_idx];
			char note[1400];

			snprintf(note, sizeof(note),
				 "the old primary %s keeps running as a primary on timeline %lld, its new "
				 "transactions read-only (ALTER SYSTEM SET default_transaction_read_only = on): "
				 "repoint follows the newer timeline of %s and keeps %s fenced; rejoin it as a standby "
				 "(pg_rewind) and ALTER SYSTEM RESET default_transaction_read_only there before it "
				 "serves again",
				 old->str, (long long)old->epoch, member, old->str);
			json_array_append_new(json_object_get(d->failover, "notes"), json_string(note));
		}
		if (s->promotes)
			drill_answered(d, NULL, "the target was promoted");
		promote_run(p);
		return;
	}
	switch (s->on_fail) {
	case FAIL_CLEAN:
		snprintf(p->fail_code, sizeof(p->fail_code), "PromotionFailed");
		snprintf(p->fail_msg, sizeof(p->fail_msg), "%s on %s: %s (nothing was changed)", s->shown, member, result);
		promote_stop(p);
		return;
	case FAIL_UNDO:
		snprintf(p->fail_code, sizeof(p->fail_code), "PromotionFailed");
		snprintf(p->fail_msg, sizeof(p->fail_msg), "%s on %s: %s (undone: %d step(s))", s->shown, member, result,
			 p->nundo);
		p->undoing = true;
		p->cur = 0;
		promote_run(p);
		return;
	case FAIL_CONTINUE: {
		char note[4096];
		snprintf(note, sizeof(note), "after the promotion, %s on %s failed: %s; fix it by hand", s->shown, member,
			 result);
		json_array_append_new(json_object_get(d->failover, "notes"), json_string(note));
		promote_run(p);
		return;
	}
	}
}

static struct drill_conn *conn_for(struct drill_promote *p, int member)
{
	struct promote_conn *pc = &p->conns[member];

	if (pc->conn == NULL) {
		pc->p = p;
		pc->conn = drill_conn_new(p->d->base, &p->d->members[member].ep, promote_result, pc);
	}
	return pc->conn;
}

static void promote_run(struct drill_promote *p)
{
	struct drill *d = p->d;
	struct promote_step *s;
	struct drill_conn *c;
	char cmd[400], esc[300];
	const char *stmt;
	int64_t timeout = d->o.request_timeout_ms;

	if (d->finished)
		return;
	if (p->undoing) {
		if (p->cur >= p->nundo) {
			promote_stop(p);
			return;
		}
		s = &p->undo[p->cur];
	} else {
		if (p->cur >= p->nsteps) {
			drill_failover_done(d);
			return;
		}
		s = &p->steps[p->cur];
	}
	stmt = s->cmd;
	if (s->op == OP_MY_WAIT) {
		sql_escape(p->pos, esc, sizeof(esc));
		snprintf(cmd, sizeof(cmd), "SELECT MASTER_GTID_WAIT('%s', 30)", esc);
		stmt = cmd;
	}
	if (s->op == OP_PG_DRAIN || s->op == OP_PG_END || s->op == OP_PG_CATCHUP) {
		sql_escape(s->op == OP_PG_CATCHUP ? p->lsn : p->since, esc, sizeof(esc));
		snprintf(p->built, sizeof(p->built),
			 s->op == OP_PG_DRAIN ? PG_DRAIN_SQL : s->op == OP_PG_END ? PG_END_SQL : PG_CATCHUP_SQL, esc);
		stmt = p->built;
	}
	if (!p->polling)
		p->step_started_us = drill_now(d);
	p->polling = false;
	if (s->op == OP_PG_PROMOTE || s->op == OP_MY_WAIT)
		timeout = PROMOTE_SLOW_STEP_MS;
	if (s->op == OP_RD_OFFSET)
		p->catchup_deadline_us = drill_now(d) + PROMOTE_RD_CATCHUP_MS * 1000;
	c = conn_for(p, s->member);
	if (c == NULL || !drill_conn_run(c, stmt, timeout)) {
		snprintf(p->fail_code, sizeof(p->fail_code), "Internal");
		snprintf(p->fail_msg, sizeof(p->fail_msg), "cannot start '%s' on %s", s->shown, d->members[s->member].str);
		promote_stop(p);
	}
}

void drill_promote_start(struct drill *d)
{
	struct drill_promote *p = d->promote;

	p->retry = evtimer_new(d->base, promote_retry_cb, p);
	drill_requested(d);
	if (p->retry == NULL) {
		snprintf(p->fail_code, sizeof(p->fail_code), "Internal");
		snprintf(p->fail_msg, sizeof(p->fail_msg), "out of memory");
		promote_stop(p);
		return;
	}
	promote_run(p);
}

void drill_promote_free(struct drill *d)
{
	struct drill_promote *p = d->promote;

	if (p == NULL)
		return;
	for (int i = 0; p->conns != NULL && i < d->nmembers; i++)
		drill_conn_free(p->conns[i].conn);
	free(p->conns);
	for (int i = 0; i < p->nsteps; i++) {
		free(p->steps[i].cmd);
		free(p->steps[i].shown);
	}
	for (int i = 0; i < p->nundo; i++) {
		free(p->undo[i].cmd);
		free(p->undo[i].shown);
	}
	free(p->steps);
	free(p->undo);
	if (p->retry != NULL)
		event_free(p->retry);
	free(p);
	d->promote = NULL;
}
