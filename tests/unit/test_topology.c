/* test_topology.c - the writer election, told as stories.
 *
 * Each story is a table of observations ("member 1 answered writer at t=2350", "member 0 did not
 * answer") with what must hold right after each one: the events raised (exactly), the writer, the
 * member new clients may be sent to (topo_writer_ready) and the state. A failing step names its line
 * of the story. A randomized test at the end checks the safety invariants over many observations.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

/* Short names keep the tables readable. */
enum {
	STARTED = TOPO_EV_FAILOVER_STARTED,
	LOST = TOPO_EV_WRITER_LOST,
	CONFIRMED = TOPO_EV_WRITER_CONFIRMED,
	CHANGED = TOPO_EV_WRITER_CHANGED,
	CONFLICT = TOPO_EV_CONFLICT,
	ROLES = TOPO_EV_ROLES_CHANGED,
	SUSPECT = TOPO_EV_SUSPECT,
	RECOVERED = TOPO_EV_RECOVERED,
	/* The writer moves away: what the session layer sees in one call. */
	MOVED = STARTED | LOST | CONFIRMED | CHANGED,
};

#define STARTING TOPO_STARTING
#define STEADY TOPO_STEADY
#define FAILING TOPO_FAILING_OVER

struct step {
	const char *what;
	struct topo_observation obs;
	unsigned ev;            /* exactly the events this observation must raise */
	int writer;             /* t->writer afterwards */
	int ready;              /* topo_writer_ready() afterwards */
	enum topo_state state;
};

#define UP(m, r, e, t) { .member = (m), .ok = true, .role = ROLE_##r, .epoch = (e), .now_ms = (t) }
#define FAIL(m, t) { .member = (m), .ok = false, .role = ROLE_UNKNOWN, .epoch = 0, .now_ms = (t) }

static const char *ev_str(unsigned ev, char *buf, size_t len)
{
	static const char *const names[] = {"started", "lost", "confirmed", "changed",
	                                    "conflict", "roles", "suspect", "recovered"};
	size_t off = 0;
	buf[0] = '\0';
	for (unsigned b = 0; b < sizeof(names) / sizeof(names[0]); b++) {
		if (!(ev & (1u << b)))
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? "|" : "", names[b]);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	if (off == 0)
		snprintf(buf, len, "none");
	return buf;
}

static void check_step(const struct topology *t, size_t i, const struct step *s, unsigned ev)
{
	char got[128], want[128];
	ck_assert_msg(ev == s->ev, "step %zu (%s): events %s, expected %s", i, s->what,
	              ev_str(ev, got, sizeof(got)), ev_str(s->ev, want, sizeof(want)));
	ck_assert_msg(t->writer == s->writer, "step %zu (%s): writer %d, expected %d", i, s->what, t->writer,
	              s->writer);
	ck_assert_msg(topo_writer_ready(t) == s->ready, "step %zu (%s): ready %d, expected %d", i, s->what,
	              topo_writer_ready(t), s->ready);
	ck_assert_msg(t->state == s->state, "step %zu (%s): state %s, expected %s", i, s->what,
	              topo_state_name(t->state), topo_state_name(s->state));
}

static void play(struct topology *t, const struct step *steps, size_t n)
{
	for (size_t i = 0; i < n; i++)
		check_step(t, i, &steps[i], topo_observe(t, &steps[i].obs));
}

#define PLAY(t, steps) play((t), (steps), sizeof(steps) / sizeof((steps)[0]))

/* Three members, member 0 the writer, 1 and 2 replicas: the common opening of most stories. */
static const struct step opening[] = {
	{"0 answers writer: the only claimant", UP(0, WRITER, 1, 1000), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
	{"1 answers reader", UP(1, READER, 1, 1000), ROLES, 0, 0, STEADY},
	{"2 answers reader", UP(2, READER, 1, 1000), ROLES, 0, 0, STEADY},
};

static void open3(struct topology *t, int down_after, bool use_epoch)
{
	ck_assert(topo_init(t, 3, down_after, use_epoch));
	PLAY(t, opening);
}

START_TEST(test_names)
{
	ck_assert_str_eq(role_name(ROLE_WRITER), "writer");
	ck_assert_str_eq(role_name(ROLE_READER), "reader");
	ck_assert_str_eq(role_name(ROLE_DOWN), "down");
	ck_assert_str_eq(role_name(ROLE_UNKNOWN), "unknown");
	ck_assert_str_eq(topo_state_name(TOPO_STARTING), "starting");
	ck_assert_str_eq(topo_state_name(TOPO_STEADY), "steady");
	ck_assert_str_eq(topo_state_name(TOPO_FAILING_OVER), "failing_over");
}
END_TEST

START_TEST(test_init)
{
	struct topology t;
	ck_assert(topo_init(&t, 3, 3, false));
	ck_assert_int_eq(t.state, TOPO_STARTING);
	ck_assert_int_eq(t.writer, -1);
	ck_assert_int_eq(t.last_writer, -1);
	ck_assert_int_eq(topo_writer_ready(&t), -1);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(topo_member_role(&t, i), ROLE_UNKNOWN);
		ck_assert(!topo_member_healthy(&t, i));
	}
	/* Out of range: ignored, never a crash. */
	struct topo_observation bad[] = {UP(3, WRITER, 1, 10), UP(-1, WRITER, 1, 10)};
	ck_assert_uint_eq(topo_observe(&t, &bad[0]), 0);
	ck_assert_uint_eq(topo_observe(&t, &bad[1]), 0);
	ck_assert_int_eq(t.writer, -1);
	ck_assert_int_eq(topo_member_role(&t, 3), ROLE_UNKNOWN);
	ck_assert(!topo_member_healthy(&t, -1));
	topo_free(&t);
	topo_free(&t);

	ck_assert(!topo_init(&t, -1, 3, false));
	topo_free(&t);
	/* down_after 0 would make members DOWN before any failure. */
	ck_assert(topo_init(&t, 1, 0, false));
	ck_assert_int_eq(t.down_after, 1);
	topo_free(&t);
}
END_TEST

START_TEST(test_startup)
{
	/* Member 2 never answers, member 3 is never even probed: neither may block the election. */
	struct topology t;
	ck_assert(topo_init(&t, 4, 3, false));
	static const struct step story[] = {
		{"1 answers reader: nobody claims yet", UP(1, READER, 0, 100), ROLES, -1, -1, STARTING},
		{"2 does not answer", FAIL(2, 105), 0, -1, -1, STARTING},
		{"2 does not answer again", FAIL(2, 110), 0, -1, -1, STARTING},
		{"0 answers writer: exactly one claimant", UP(0, WRITER, 0, 120), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
		{"2 fails a third time: shown down", FAIL(2, 130), ROLES, 0, 0, STEADY},
		{"0 answers writer again: nothing new", UP(0, WRITER, 0, 140), 0, 0, 0, STEADY},
	};
	PLAY(&t, story);
	ck_assert_int_eq(topo_member_role(&t, 0), ROLE_WRITER);
	ck_assert_int_eq(topo_member_role(&t, 1), ROLE_READER);
	ck_assert_int_eq(topo_member_role(&t, 2), ROLE_DOWN);
	ck_assert_int_eq(topo_member_role(&t, 3), ROLE_UNKNOWN);
	ck_assert(topo_member_healthy(&t, 0));
	ck_assert(!topo_member_healthy(&t, 2));
	ck_assert(!topo_member_healthy(&t, 3));
	ck_assert_uint_eq(t.failovers, 0);
	ck_assert(!t.conflict);
	topo_free(&t);
}
END_TEST

START_TEST(test_startup_all_silent)
{
	/* Nobody answers at all: the service waits, it never guesses. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 2, false));
	for (int round = 0; round < 5; round++)
		for (int m = 0; m < 3; m++) {
			struct topo_observation o = FAIL(m, round * 100 + m);
			unsigned ev = topo_observe(&t, &o);
			ck_assert_uint_eq(ev, round == 1 ? (unsigned)ROLES : 0u);
			ck_assert_int_eq(t.state, TOPO_STARTING);
			ck_assert_int_eq(topo_writer_ready(&t), -1);
		}
	topo_free(&t);
}
END_TEST

START_TEST(test_planned_switchover)
{
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"0 is demoted: lost at once, clients held", UP(0, READER, 1, 2000), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"2 still a replica: keep holding", UP(2, READER, 1, 2100), 0, -1, -1, FAILING},
		{"1 is promoted: confirmed", UP(1, WRITER, 1, 2350), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
		{"0 follows the new writer", UP(0, READER, 1, 2400), 0, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last_writer, 0);
	ck_assert_int_eq(t.last.from, 0);
	ck_assert_int_eq(t.last.to, 1);
	ck_assert_int_eq(t.last.started_ms, 2000);
	ck_assert_int_eq(t.last.confirmed_ms, 2350);
	ck_assert_int_eq(t.last.confirmed_ms - t.last.started_ms, 350);
	/* Its own reader answer was the rejoin. */
	ck_assert(!t.members[0].fenced);
	topo_free(&t);
}
END_TEST

START_TEST(test_switchover_promotion_seen_first)
{
	/* The probe of the promoted replica may come back before the one of the demoted writer: that is
	 * a conflict with a healthy writer (kept), then the demotion hands over in the same call. */
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"1 answers writer first: conflict, 0 kept", UP(1, WRITER, 1, 2000), ROLES | CONFLICT, 0, 0, STEADY},
		{"0 answers reader: hand over at once", UP(0, READER, 1, 2010), ROLES | MOVED, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert(!t.conflict);
	ck_assert_uint_eq(t.conflicts, 1);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last.confirmed_ms - t.last.started_ms, 0);
	topo_free(&t);
}
END_TEST

START_TEST(test_crash_suspect_recover_then_lost)
{
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"0 misses a probe: suspect, hold new clients", FAIL(0, 2000), SUSPECT, 0, -1, STEADY},
		{"0 answers again: recovered, no failover", UP(0, WRITER, 1, 2100), RECOVERED, 0, 0, STEADY},
		{"0 crashes: suspect", FAIL(0, 3000), SUSPECT, 0, -1, STEADY},
		{"second failure: still only suspect", FAIL(0, 3100), 0, 0, -1, STEADY},
		{"replica 2 answers meanwhile", UP(2, READER, 1, 3150), 0, 0, -1, STEADY},
		{"third failure: down, writer lost", FAIL(0, 3200), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"0 still down", FAIL(0, 3300), 0, -1, -1, FAILING},
		{"1 is promoted", UP(1, WRITER, 2, 3800), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
		{"0 comes back as a replica", UP(0, READER, 2, 9000), ROLES, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last.started_ms, 3200);
	ck_assert_int_eq(t.last.confirmed_ms, 3800);
	ck_assert_int_eq(t.last.from, 0);
	ck_assert_int_eq(t.last.to, 1);
	/* Fenced when lost, unfenced by rejoining as a reader. */
	ck_assert(!t.members[0].fenced);
	ck_assert_int_eq(topo_member_role(&t, 0), ROLE_READER);
	topo_free(&t);
}
END_TEST

START_TEST(test_crash_then_fast_promotion)
{
	/* The replica is promoted before down_after probes of the old writer have failed: the service
	 * moves at once instead of waiting for the old writer to be declared down. */
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"0 crashes: suspect", FAIL(0, 2000), SUSPECT, 0, -1, STEADY},
		{"1 already promoted: move now", UP(1, WRITER, 1, 2050), ROLES | MOVED, 1, 1, STEADY},
		{"0 still failing: nothing more", FAIL(0, 2100), 0, 1, 1, STEADY},
		{"0 down", FAIL(0, 2200), ROLES, 1, 1, STEADY},
		{"0 restarts still a primary: conflict, gets nothing", UP(0, WRITER, 1, 5000), ROLES | CONFLICT, 1, 1, STEADY},
		{"1 misses a probe: 0 is fenced, no move back", FAIL(1, 5100), SUSPECT, 1, -1, STEADY},
		{"1 answers: recovered", UP(1, WRITER, 1, 5200), RECOVERED, 1, 1, STEADY},
		{"0 is rewound into a replica", UP(0, READER, 1, 6000), ROLES, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last.started_ms, 2050);
	ck_assert_int_eq(t.last.confirmed_ms, 2050);
	ck_assert(!t.conflict);
	ck_assert_uint_eq(t.conflicts, 1);
	topo_free(&t);
}
END_TEST

START_TEST(test_flapping_writer)
{
	/* A writer that fails every other probe never reaches down_after consecutive failures: no
	 * failover ever, but new clients are held each time it is suspect. */
	struct topology t;
	open3(&t, 3, false);
	for (int i = 0; i < 200; i++) {
		struct step s[] = {
			{"0 misses a probe", FAIL(0, 2000 + i * 20), SUSPECT, 0, -1, STEADY},
			{"replica 1 answers", UP(1, READER, 1, 2005 + i * 20), 0, 0, -1, STEADY},
			{"0 answers", UP(0, WRITER, 1, 2010 + i * 20), RECOVERED, 0, 0, STEADY},
		};
		PLAY(&t, s);
	}
	ck_assert_uint_eq(t.failovers, 0);
	ck_assert_int_eq(t.last_writer, -1);
	topo_free(&t);
}
END_TEST

START_TEST(test_two_writers_without_epochs)
{
	/* Split brain on a cluster without epochs: the healthy writer keeps the traffic, the conflict is
	 * reported once, and no interleaving of answers makes the service alternate. */
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"1 claims writer too: conflict, 0 kept", UP(1, WRITER, 1, 2000), ROLES | CONFLICT, 0, 0, STEADY},
	};
	PLAY(&t, story);
	ck_assert(t.conflict);
	ck_assert_uint_eq(t.conflicts, 1);
	for (int i = 0; i < 1000; i++) {
		struct step s[] = {
			{"0 writer", UP(0, WRITER, 1, 3000 + i * 10), 0, 0, 0, STEADY},
			{"1 writer", UP(1, WRITER, 1, 3001 + i * 10), 0, 0, 0, STEADY},
			{"2 reader", UP(2, READER, 1, 3002 + i * 10), 0, 0, 0, STEADY},
			{"1 writer again", UP(1, WRITER, 1, 3003 + i * 10), 0, 0, 0, STEADY},
		};
		PLAY(&t, s);
		ck_assert(t.conflict);
	}
	static const struct step end[] = {
		{"1 misses a probe: still the same conflict", FAIL(1, 19000), 0, 0, 0, STEADY},
		{"0 misses one too: suspect, 1 not fresh, no move", FAIL(0, 19100), SUSPECT, 0, -1, STEADY},
		{"0 answers", UP(0, WRITER, 1, 19200), RECOVERED, 0, 0, STEADY},
		{"1 answers writer: not a new conflict", UP(1, WRITER, 1, 19300), 0, 0, 0, STEADY},
		{"1 steps down: conflict over", UP(1, READER, 1, 20000), ROLES, 0, 0, STEADY},
		{"1 claims again: a new conflict", UP(1, WRITER, 1, 21000), ROLES | CONFLICT, 0, 0, STEADY},
	};
	PLAY(&t, end);
	ck_assert_uint_eq(t.conflicts, 2);
	ck_assert_uint_eq(t.failovers, 0);
	topo_free(&t);
}
END_TEST

START_TEST(test_split_brain_resolved_onto_the_older_timeline)
{
	/* Postgres: 1 was promoted (timeline 2) while 0 kept running on timeline 1; repoint moved to
	 * the newer timeline. The operator then rewinds 1 onto 0's history: 1 answers reader, and 0 --
	 * the only claimant left -- must get the traffic back instead of being held forever below the
	 * floor that 1 had set. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 3, true));
	PLAY(&t, opening);
	static const struct step story[] = {
		{"1 promoted onto timeline 2: newer wins", UP(1, WRITER, 2, 2000), ROLES | CONFLICT | MOVED, 1, 1, STEADY},
		{"0 still writer on timeline 1: nothing", UP(0, WRITER, 1, 2100), 0, 1, 1, STEADY},
		{"1 rewound onto 0: demoted, 0 elected", UP(1, READER, 1, 2200), ROLES | LOST | STARTED | CONFIRMED | CHANGED, 0, 0, STEADY},
	};
	PLAY(&t, story);
	ck_assert(!t.conflict);
	topo_free(&t);
}
END_TEST

START_TEST(test_membership_changes)
{
	/* A control plane adds and removes members: what is known of the kept ones stays, the new one
	 * starts unknown, and losing the writer's membership is a failover like any other. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 3, false));
	PLAY(&t, opening);

	/* Member 2 leaves, a new member joins at the end: the writer (0) is untouched. */
	static const int keep[] = {0, 1, -1};
	ck_assert_uint_eq(topo_remap(&t, 3, keep, 1100), 0);
	ck_assert_int_eq(t.writer, 0);
	ck_assert_int_eq(topo_member_role(&t, 1), ROLE_READER);
	ck_assert_int_eq(topo_member_role(&t, 2), ROLE_UNKNOWN);

	/* The writer leaves; the old member 1 becomes index 0. */
	static const int drop_writer[] = {1, 2};
	unsigned ev = topo_remap(&t, 2, drop_writer, 1200);
	ck_assert_uint_eq(ev, TOPO_EV_FAILOVER_STARTED);
	ck_assert_int_eq(t.writer, -1);
	ck_assert_int_eq(t.state, TOPO_FAILING_OVER);
	ck_assert_int_eq(topo_writer_ready(&t), -1);
	static const struct step story[] = {
		{"the former replica is promoted", UP(0, WRITER, 1, 1300), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
	};
	PLAY(&t, story);
	ck_assert_uint_eq(t.failovers, 1);

	/* Same members in another order: the writer follows its member. */
	static const int swap[] = {1, 0};
	ck_assert_uint_eq(topo_remap(&t, 2, swap, 1400), 0);
	ck_assert_int_eq(t.writer, 1);
	ck_assert_int_eq(topo_writer_ready(&t), 1);
	topo_free(&t);
}
END_TEST

START_TEST(test_two_writers_with_epochs)
{
	/* Postgres: 1 was promoted onto timeline 6 while 0 still runs on timeline 5. The newer timeline
	 * wins, once; the old primary never gets the traffic back, not even when 1 dies. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 2, true));
	static const struct step story[] = {
		{"0 writer on timeline 5", UP(0, WRITER, 5, 1000), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
		{"1 replica on timeline 5", UP(1, READER, 5, 1000), ROLES, 0, 0, STEADY},
		{"1 claims writer on timeline 5: conflict only", UP(1, WRITER, 5, 1500), ROLES | CONFLICT, 0, 0, STEADY},
		{"1 on timeline 6: newer timeline wins", UP(1, WRITER, 6, 2000), MOVED, 1, 1, STEADY},
		{"0 still claims on timeline 5: nothing", UP(0, WRITER, 5, 2100), 0, 1, 1, STEADY},
		{"1 misses a probe: 0 is fenced and older", FAIL(1, 2200), SUSPECT, 1, -1, STEADY},
		{"1 is down: lost; 0 claims alone, no conflict", FAIL(1, 2300), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"0 is alone but on an old timeline: hold", UP(0, WRITER, 5, 2400), 0, -1, -1, FAILING},
		{"1 back on tl6: re-elected, conflict again", UP(1, WRITER, 6, 3000), ROLES | CONFIRMED | CONFLICT, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert(t.members[0].fenced);
	ck_assert(t.conflict);
	ck_assert_uint_eq(t.conflicts, 2);
	ck_assert_uint_eq(t.failovers, 2);
	ck_assert_int_eq(t.epoch_floor, 6);

	for (int i = 0; i < 1000; i++) {
		/* Timeline 6 on 0 equals the writer's: not newer, so still no reason to move. */
		struct step s[] = {
			{"0 writer tl5", UP(0, WRITER, 5, 4000 + i * 10), 0, 1, 1, STEADY},
			{"1 writer tl6", UP(1, WRITER, 6, 4001 + i * 10), 0, 1, 1, STEADY},
			{"0 writer tl6", UP(0, WRITER, 6, 4002 + i * 10), 0, 1, 1, STEADY},
			{"2 reader", UP(2, READER, 6, 4003 + i * 10), i == 0 ? ROLES : 0, 1, 1, STEADY},
		};
		PLAY(&t, s);
	}
	topo_free(&t);
}
END_TEST

START_TEST(test_old_writer_returns)
{
	/* The lost writer comes back claiming writer while the new one is healthy: it gets nothing,
	 * stays fenced, and is unfenced only by coming back as a replica. */
	struct topology t;
	open3(&t, 2, false);
	static const struct step story[] = {
		{"0 fails", FAIL(0, 2000), SUSPECT, 0, -1, STEADY},
		{"0 down: lost", FAIL(0, 2100), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 promoted", UP(1, WRITER, 1, 2500), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
		{"0 back, still a primary", UP(0, WRITER, 1, 3000), ROLES | CONFLICT, 1, 1, STEADY},
		{"0 again", UP(0, WRITER, 1, 3100), 0, 1, 1, STEADY},
		{"1 misses a probe: hold, no move to fenced 0", FAIL(1, 3200), SUSPECT, 1, -1, STEADY},
		{"0 again while 1 is suspect", UP(0, WRITER, 1, 3250), 0, 1, -1, STEADY},
		{"1 answers", UP(1, WRITER, 1, 3300), RECOVERED, 1, 1, STEADY},
		{"0 rejoins as a replica", UP(0, READER, 1, 4000), ROLES, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert(!t.members[0].fenced);
	ck_assert(!t.conflict);
	ck_assert_uint_eq(t.failovers, 1);
	topo_free(&t);
}
END_TEST

START_TEST(test_demoted_writer_claims_again)
{
	struct topology t;
	open3(&t, 3, false);
	static const struct step story[] = {
		{"0 demoted", UP(0, READER, 1, 2000), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 promoted", UP(1, WRITER, 1, 2200), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
		{"0 claims writer again: conflict, gets nothing", UP(0, WRITER, 1, 2300), ROLES | CONFLICT, 1, 1, STEADY},
		{"1 healthy: kept", UP(1, WRITER, 1, 2400), 0, 1, 1, STEADY},
		{"0 gives up", UP(0, READER, 1, 2500), ROLES, 1, 1, STEADY},
	};
	PLAY(&t, story);
	topo_free(&t);
}
END_TEST

START_TEST(test_all_down_then_old_writer_back)
{
	struct topology t;
	open3(&t, 2, false);
	static const struct step story[] = {
		{"1 fails", FAIL(1, 2000), 0, 0, 0, STEADY},
		{"2 fails", FAIL(2, 2000), 0, 0, 0, STEADY},
		{"0 fails", FAIL(0, 2000), SUSPECT, 0, -1, STEADY},
		{"1 down", FAIL(1, 2100), ROLES, 0, -1, STEADY},
		{"2 down", FAIL(2, 2100), ROLES, 0, -1, STEADY},
		{"0 down: lost", FAIL(0, 2100), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 still down", FAIL(1, 2200), 0, -1, -1, FAILING},
		{"2 still down", FAIL(2, 2200), 0, -1, -1, FAILING},
		{"0 still down", FAIL(0, 2200), 0, -1, -1, FAILING},
		{"0 back as writer, the only claimant", UP(0, WRITER, 1, 5000), ROLES | CONFIRMED, 0, 0, STEADY},
		{"1 back as reader", UP(1, READER, 1, 5100), ROLES, 0, 0, STEADY},
	};
	PLAY(&t, story);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last.from, 0);
	ck_assert_int_eq(t.last.to, 0);
	ck_assert_int_eq(t.last.confirmed_ms - t.last.started_ms, 2900);
	ck_assert(!t.members[0].fenced);
	topo_free(&t);
}
END_TEST

START_TEST(test_two_claimants_during_failover)
{
	/* Two replicas both claim writer on the same timeline while the writer is demoted: nobody can
	 * tell which is right, so everything is held until one of them steps down. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 3, true));
	static const struct step story[] = {
		{"0 writer tl3", UP(0, WRITER, 3, 1000), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
		{"1 claims tl3: conflict, 0 kept", UP(1, WRITER, 3, 1100), ROLES | CONFLICT, 0, 0, STEADY},
		{"2 claims tl3 too", UP(2, WRITER, 3, 1200), ROLES, 0, 0, STEADY},
		{"0 demoted: two claimants left, hold", UP(0, READER, 3, 1300), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 still claims", UP(1, WRITER, 3, 1400), 0, -1, -1, FAILING},
		{"2 still claims", UP(2, WRITER, 3, 1500), 0, -1, -1, FAILING},
		{"2 steps down: 1 confirmed", UP(2, READER, 3, 1600), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert(!t.conflict);
	ck_assert_uint_eq(t.conflicts, 1);
	ck_assert_uint_eq(t.failovers, 1);
	ck_assert_int_eq(t.last.confirmed_ms - t.last.started_ms, 300);
	topo_free(&t);
}
END_TEST

START_TEST(test_newer_timeline_during_failover)
{
	/* During a failover, of two claimants only the highest timeline counts. */
	struct topology t;
	ck_assert(topo_init(&t, 3, 3, true));
	static const struct step story[] = {
		{"0 writer tl3", UP(0, WRITER, 3, 1000), ROLES | CONFIRMED | CHANGED, 0, 0, STEADY},
		{"1 claims tl3: conflict", UP(1, WRITER, 3, 1100), ROLES | CONFLICT, 0, 0, STEADY},
		{"2 claims tl3", UP(2, WRITER, 3, 1200), ROLES, 0, 0, STEADY},
		{"0 demoted: hold", UP(0, READER, 3, 1300), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"2 on tl4: it wins", UP(2, WRITER, 4, 1400), CONFIRMED | CHANGED, 2, 2, STEADY},
		{"1 still claims tl3: gets nothing", UP(1, WRITER, 3, 1500), 0, 2, 2, STEADY},
	};
	PLAY(&t, story);
	ck_assert(t.conflict);
	topo_free(&t);
}
END_TEST

START_TEST(test_odd_inputs)
{
	struct topology t;
	open3(&t, 3, false);
	/* An answer without a usable role is not trusted: it counts as a failure. */
	struct topo_observation garbage = {.member = 0, .ok = true, .role = ROLE_UNKNOWN, .epoch = 1, .now_ms = 2000};
	ck_assert_uint_eq(topo_observe(&t, &garbage), SUSPECT);
	ck_assert_int_eq(topo_writer_ready(&t), -1);
	ck_assert_int_eq(t.members[0].fails, 1);
	/* Time running backwards across members never gives a negative failover duration. */
	static const struct step story[] = {
		{"0 demoted at 5000", UP(0, READER, 1, 5000), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 promoted, its clock says 4990", UP(1, WRITER, 1, 4990), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
	};
	PLAY(&t, story);
	ck_assert_int_ge(t.last.confirmed_ms, t.last.started_ms);
	topo_free(&t);

	/* down_after 1: the first failure of the writer already loses it. */
	open3(&t, 1, false);
	static const struct step quick[] = {
		{"0 fails once: lost", FAIL(0, 2000), ROLES | STARTED | LOST, -1, -1, FAILING},
		{"1 promoted", UP(1, WRITER, 1, 2100), ROLES | CONFIRMED | CHANGED, 1, 1, STEADY},
	};
	PLAY(&t, quick);
	topo_free(&t);
}
END_TEST

/* ---- randomized invariants ---- */

/* A small fixed PRNG (xorshift64*) so the sequence is the same on every libc. */
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % n;
}

#define MAXM 5

/* What the test itself saw of each member, independently of the topology's bookkeeping. */
struct model {
	bool answered_ever;
	bool last_ok;
	enum role last_role;   /* role of the last ok answer */
	int64_t epoch;         /* epoch of the last ok answer */
	int fails;             /* consecutive failed observations */
	bool fenced;           /* lost the writer role and has not answered reader since */
};

struct coverage {
	unsigned changes, failovers, conflicts, suspects, epoch_moves, fast_moves, holds_on_floor;
};

/* check records every ck_assert (an allocation each), which dominates 100k steps under ASan; a
 * plain test that only calls into check on failure keeps the walk fast. */
#define REQUIRE_MSG(cond, ...) \
	do { \
		if (!(cond)) \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)
#define REQUIRE(cond) REQUIRE_MSG(cond, "%s", #cond)

static void random_round(struct coverage *cov)
{
	int n = 3 + (int)rnd(3);
	int down_after = 1 + (int)rnd(4);
	bool use_epoch = rnd(2);
	struct topology t;
	REQUIRE(topo_init(&t, n, down_after, use_epoch));

	/* The "real" cluster the probes look at: mostly one primary, with crashes, switchovers,
	 * split brains and stale primaries coming back now and then. */
	bool up[MAXM];
	enum role world[MAXM];
	int64_t wepoch[MAXM];
	int64_t timeline = 1;
	for (int i = 0; i < n; i++) {
		up[i] = true;
		world[i] = i == 0 ? ROLE_WRITER : ROLE_READER;
		wepoch[i] = 1;
	}

	struct model m[MAXM];
	memset(m, 0, sizeof(m));
	bool had_writer = false;
	int64_t max_writer_epoch = INT64_MIN;  /* highest epoch seen on a member while it was writer */
	int64_t clock = 1000;
	unsigned failovers = 0;

	for (int step = 0; step < 2000; step++) {
		uint32_t r = rnd(1000);
		int x = (int)rnd((uint32_t)n);
		if (r < 30) {
			up[x] = !up[x];
		} else if (r < 55) {
			/* Promotion onto a new timeline; half the time the old primary is demoted cleanly. */
			bool clean = rnd(2);
			for (int i = 0; i < n; i++)
				if (clean && world[i] == ROLE_WRITER)
					world[i] = ROLE_READER;
			world[x] = ROLE_WRITER;
			wepoch[x] = ++timeline;
		} else if (r < 75) {
			world[x] = ROLE_READER;
			wepoch[x] = timeline;
		} else if (r < 85) {
			/* A stale primary restarts without being rewound. */
			world[x] = ROLE_WRITER;
		}

		int i = (int)rnd((uint32_t)n);
		struct topo_observation o = {.member = i, .now_ms = clock + (int64_t)rnd(21) - 10};
		clock += rnd(30);
		if (up[i] && rnd(100) < 93) {
			o.ok = true;
			o.role = world[i];
			o.epoch = wepoch[i];
			if (rnd(500) == 0)
				o.role = ROLE_UNKNOWN;  /* a garbled answer */
		}
		bool answer = o.ok && (o.role == ROLE_WRITER || o.role == ROLE_READER);

		int prev = t.writer;
		enum topo_state prev_state = t.state;
		bool prev_conflict = t.conflict;
		bool fenced_before[MAXM];
		for (int k = 0; k < n; k++)
			fenced_before[k] = m[k].fenced;

		unsigned ev = topo_observe(&t, &o);

		if (answer) {
			/* The member holding the epoch floor rejoined as a reader: the floor is released. */
			if (use_epoch && o.role == ROLE_READER && m[i].answered_ever && m[i].last_role == ROLE_WRITER &&
			    m[i].epoch >= max_writer_epoch)
				max_writer_epoch = INT64_MIN;
			m[i].answered_ever = true;
			m[i].last_ok = true;
			m[i].last_role = o.role;
			m[i].epoch = o.epoch;
			m[i].fails = 0;
			if (o.role == ROLE_READER)
				m[i].fenced = false;
		} else {
			m[i].last_ok = false;
			m[i].fails++;
		}

		int w = t.writer;
		int claimants = 0, claimant = -1, conflicting = 0;
		for (int k = 0; k < n; k++) {
			if (m[k].last_ok && m[k].last_role == ROLE_WRITER) {
				claimants++;
				claimant = k;
			}
			if (m[k].answered_ever && m[k].last_role == ROLE_WRITER && m[k].fails < down_after)
				conflicting++;
		}

		/* Structure. */
		REQUIRE((t.state == TOPO_STEADY) == (w >= 0));
		REQUIRE(w >= -1 && w < n);
		if (w >= 0) {
			REQUIRE_MSG(m[w].answered_ever && m[w].last_role == ROLE_WRITER && m[w].fails < down_after,
			              "writer %d not a live writer", w);
		}
		/* The conflict starts on two fresh claims and lasts until fewer than two members claim. */
		REQUIRE(t.conflict == (prev_conflict ? conflicting >= 2 : claimants >= 2));
		REQUIRE(!!(ev & TOPO_EV_CONFLICT) == (t.conflict && !prev_conflict));
		for (int k = 0; k < n; k++) {
			enum role want = m[k].fails >= down_after ? ROLE_DOWN
			                 : m[k].answered_ever  ? m[k].last_role
			                                       : ROLE_UNKNOWN;
			REQUIRE(topo_member_role(&t, k) == want);
			REQUIRE(topo_member_healthy(&t, k) == (m[k].last_ok && m[k].answered_ever));
		}

		/* Who new clients go to: only a member whose last answer was "writer". */
		int ready = topo_writer_ready(&t);
		if (ready >= 0) {
			REQUIRE(ready == w);
			REQUIRE_MSG(m[ready].last_ok && m[ready].last_role == ROLE_WRITER,
			              "ready %d but its last observation was not an ok writer answer", ready);
		}
		if (w >= 0 && m[w].last_ok)
			REQUIRE(ready == w);

		/* Changes of writer, and the events that announce them. */
		if (w != prev) {
			cov->changes++;
			if (prev >= 0) {
				REQUIRE(ev & TOPO_EV_WRITER_LOST);
				REQUIRE(ev & TOPO_EV_FAILOVER_STARTED);
				REQUIRE(t.last_writer == prev);
				m[prev].fenced = !(m[prev].last_ok && m[prev].last_role == ROLE_READER);
				if (w >= 0 && m[prev].fails > 0 && m[prev].fails < down_after)
					cov->fast_moves++;
				if (w >= 0 && m[prev].last_ok && m[prev].last_role == ROLE_WRITER)
					cov->epoch_moves++;
			}
			if (w >= 0) {
				REQUIRE(ev & TOPO_EV_WRITER_CONFIRMED);
				REQUIRE(!!(ev & TOPO_EV_WRITER_CHANGED) == (w != t.last_writer));
				REQUIRE_MSG(m[w].last_ok && m[w].last_role == ROLE_WRITER,
				              "new writer %d was not an ok writer answer", w);
				/* Never onto an older timeline than any writer we ever sent traffic to. */
				if (use_epoch && had_writer)
					REQUIRE_MSG(m[w].epoch >= max_writer_epoch, "writer %d on epoch %lld < %lld", w,
					              (long long)m[w].epoch, (long long)max_writer_epoch);
				/* Never back to a fenced member while another claimant at its epoch exists. */
				if (fenced_before[w])
					for (int k = 0; k < n; k++)
						REQUIRE_MSG(k == w || !(m[k].last_ok && m[k].last_role == ROLE_WRITER &&
						                          (!use_epoch || m[k].epoch >= m[w].epoch)),
						              "fenced %d chosen while %d claims", w, k);
				/* A writer that merely missed probes is never replaced by a fenced member: that
				 * would bounce the traffic between two self-declared primaries on every blip. */
				if (prev >= 0 && m[prev].fails > 0 && m[prev].fails < down_after)
					REQUIRE_MSG(!fenced_before[w], "suspect %d replaced by fenced %d", prev, w);
				m[w].fenced = false;
				if (prev_state == TOPO_FAILING_OVER || prev >= 0)
					failovers++;
			}
		} else {
			REQUIRE(!(ev & (TOPO_EV_WRITER_LOST | TOPO_EV_FAILOVER_STARTED | TOPO_EV_WRITER_CONFIRMED |
			                  TOPO_EV_WRITER_CHANGED)));
		}
		if (ev & TOPO_EV_SUSPECT)
			cov->suspects++;
		REQUIRE(t.failovers == failovers);
		if (t.state == TOPO_FAILING_OVER || t.failovers > 0)
			REQUIRE(t.last.started_ms >= 0);
		if (t.failovers > 0 && t.state == TOPO_STEADY)
			REQUIRE(t.last.confirmed_ms >= t.last.started_ms);
		for (int k = 0; k < n; k++)
			REQUIRE_MSG(t.members[k].fenced == m[k].fenced, "fence of %d: %d, model %d", k,
			              t.members[k].fenced, m[k].fenced);

		/* Liveness: a single electable claimant is never left waiting. */
		if (w < 0 && claimants == 1) {
			if (use_epoch && had_writer && m[claimant].epoch < max_writer_epoch)
				cov->holds_on_floor++;
			else
				ck_abort_msg("claimant %d alone but no writer", claimant);
		}

		if (w >= 0) {
			had_writer = true;
			if (m[w].epoch > max_writer_epoch)
				max_writer_epoch = m[w].epoch;
		}
	}
	cov->failovers += t.failovers;
	cov->conflicts += t.conflicts;
	topo_free(&t);
}

START_TEST(test_random_invariants)
{
	rng_state = 0x9E3779B97F4A7C15ULL;
	struct coverage cov = {0};
	/* 50 rounds of 2000 observations: 100k in all, over 3-5 members and every down_after 1-4. */
	for (int round = 0; round < 50; round++)
		random_round(&cov);
	/* Make sure the walk actually went through the interesting situations. */
	ck_assert_uint_gt(cov.changes, 100);
	ck_assert_uint_gt(cov.failovers, 100);
	ck_assert_uint_gt(cov.conflicts, 50);
	ck_assert_uint_gt(cov.suspects, 100);
	ck_assert_uint_gt(cov.fast_moves, 5);
	ck_assert_uint_gt(cov.epoch_moves, 5);
	ck_assert_uint_gt(cov.holds_on_floor, 5);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("topology");
	TCase *tc = tcase_create("stories");
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_init);
	tcase_add_test(tc, test_startup);
	tcase_add_test(tc, test_startup_all_silent);
	tcase_add_test(tc, test_planned_switchover);
	tcase_add_test(tc, test_switchover_promotion_seen_first);
	tcase_add_test(tc, test_crash_suspect_recover_then_lost);
	tcase_add_test(tc, test_crash_then_fast_promotion);
	tcase_add_test(tc, test_flapping_writer);
	tcase_add_test(tc, test_two_writers_without_epochs);
	tcase_add_test(tc, test_two_writers_with_epochs);
	tcase_add_test(tc, test_membership_changes);
	tcase_add_test(tc, test_split_brain_resolved_onto_the_older_timeline);
	tcase_add_test(tc, test_old_writer_returns);
	tcase_add_test(tc, test_demoted_writer_claims_again);
	tcase_add_test(tc, test_all_down_then_old_writer_back);
	tcase_add_test(tc, test_two_claimants_during_failover);
	tcase_add_test(tc, test_newer_timeline_during_failover);
	tcase_add_test(tc, test_odd_inputs);
	suite_add_tcase(s, tc);
	TCase *tp = tcase_create("properties");
	tcase_add_test(tp, test_random_invariants);
	tcase_set_timeout(tp, 120);
	suite_add_tcase(s, tp);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
