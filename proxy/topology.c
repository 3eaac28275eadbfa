/* topology.c - who is the writer of a service, decided from observations alone.
 *
 * The rules are stated in topology.h. Everything here is a pure function of the observations fed in:
 * no clocks, no I/O, and no allocation after topo_init(), so every transition can be replayed in a
 * unit test. After each observation the member table is updated first, then settle() re-derives the
 * writer from the table; that keeps one place deciding elections instead of one per event kind.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

const char *role_name(enum role r)
{
	switch (r) {
	case ROLE_WRITER:
		return "writer";
	case ROLE_READER:
		return "reader";
	case ROLE_DOWN:
		return "down";
	case ROLE_UNKNOWN:
		break;
	}
	/* Anything out of range is shown as unknown rather than trusted. */
	return "unknown";
}

const char *topo_state_name(enum topo_state s)
{
	switch (s) {
	case TOPO_STARTING:
		return "starting";
	case TOPO_STEADY:
		return "steady";
	case TOPO_FAILING_OVER:
		return "failing_over";
	}
	return "unknown";
}

bool topo_init(struct topology *t, int nmembers, int down_after, bool use_epoch)
{
	memset(t, 0, sizeof(*t));
	t->state = TOPO_STARTING;
	t->writer = -1;
	t->last_writer = -1;
	t->last.from = -1;
	t->last.to = -1;
	/* A threshold below one would make a member DOWN before it ever failed. */
	t->down_after = down_after < 1 ? 1 : down_after;
	t->use_epoch = use_epoch;
	t->epoch_floor = INT64_MIN;
	if (nmembers < 0)
		return false;
	if (nmembers > 0) {
		t->members = calloc((size_t)nmembers, sizeof(*t->members));
		if (!t->members)
			return false;
	}
	t->nmembers = nmembers;
	for (int i = 0; i < nmembers; i++)
		t->members[i].reported = ROLE_UNKNOWN;
	return true;
}

void topo_free(struct topology *t)
{
	if (!t)
		return;
	free(t->members);
	t->members = NULL;
	t->nmembers = 0;
}

static bool is_down(const struct topology *t, const struct topo_member *m)
{
	return m->fails >= t->down_after;
}

/* A healthy member currently claiming the writer role. reported is only WRITER after an answer, so a
 * member that never answered is never a claimant. */
static bool claims_writer(const struct topology *t, int i)
{
	const struct topo_member *m = &t->members[i];
	return m->fails == 0 && m->reported == ROLE_WRITER;
}

/* With epochs, a claimant below the highest epoch any confirmed writer ever had is a stale former
 * primary (timelines only grow across promotions): writing to it would fork the history. */
static bool above_floor(const struct topology *t, int i)
{
	return !t->use_epoch || t->members[i].epoch >= t->epoch_floor;
}

/* A conflict starts on fresh evidence: two healthy claimants. It ends only when fewer than two
 * members still claim (last answer "writer", not DOWN): one missed probe does not end it, otherwise
 * every blip would report (and count) the same split brain again. Starting on fresh evidence only
 * keeps a plain crash + promotion (old writer suspect, new one claiming) from looking like one. */
static bool conflict_now(const struct topology *t)
{
	int healthy = 0, claiming = 0;
	for (int i = 0; i < t->nmembers; i++) {
		if (claims_writer(t, i))
			healthy++;
		if (t->members[i].reported == ROLE_WRITER && !is_down(t, &t->members[i]))
			claiming++;
	}
	return t->conflict ? claiming >= 2 : healthy >= 2;
}

/* Highest epoch among the electable claimants; false when there is none. */
static bool top_claim_epoch(const struct topology *t, int64_t *top)
{
	bool found = false;
	for (int i = 0; i < t->nmembers; i++) {
		if (!claims_writer(t, i) || !above_floor(t, i))
			continue;
		if (!found || t->members[i].epoch > *top)
			*top = t->members[i].epoch;
		found = true;
	}
	return found;
}

/* The election: among healthy claimants (with epochs: only those at the highest epoch), the single
 * one left, fenced members counting only when nobody else is left. -1 when none or several remain. */
static int pick_candidate(const struct topology *t)
{
	int64_t top = 0;
	if (!top_claim_epoch(t, &top))
		return -1;
	int n = 0, unfenced = 0, any = -1, any_unfenced = -1;
	for (int i = 0; i < t->nmembers; i++) {
		if (!claims_writer(t, i) || !above_floor(t, i))
			continue;
		if (t->use_epoch && t->members[i].epoch != top)
			continue;
		n++;
		any = i;
		if (!t->members[i].fenced) {
			unfenced++;
			any_unfenced = i;
		}
	}
	if (n == 1)
		return any;
	if (unfenced == 1)
		return any_unfenced;
	return -1;
}

/* The writer is gone (down, demoted, suspect with a successor, or overtaken by a newer epoch). It is
 * fenced so that it cannot be chosen again while someone else claims the role: that is what stops
 * the service from flipping between two nodes that both believe they are the primary. */
static unsigned lose_writer(struct topology *t, int64_t now)
{
	int w = t->writer;
	t->members[w].fenced = true;
	t->last_writer = w;
	t->writer = -1;
	t->state = TOPO_FAILING_OVER;
	t->last.started_ms = now;
	t->last.confirmed_ms = 0;
	t->last.from = w;
	t->last.to = -1;
	return TOPO_EV_FAILOVER_STARTED | TOPO_EV_WRITER_LOST;
}

static unsigned confirm_writer(struct topology *t, int c, int64_t now)
{
	unsigned ev = TOPO_EV_WRITER_CONFIRMED;
	/* At startup last_writer is -1, so the first writer counts as a change too: there was none. */
	if (c != t->last_writer)
		ev |= TOPO_EV_WRITER_CHANGED;
	if (t->state == TOPO_FAILING_OVER) {
		/* Times come from different members' observations and need not be ordered; a failover
		 * never lasts a negative time. */
		t->last.confirmed_ms = now < t->last.started_ms ? t->last.started_ms : now;
		t->last.to = c;
		t->failovers++;
	}
	t->writer = c;
	t->state = TOPO_STEADY;
	/* It holds the role now; the fence only mattered while it competed for it. */
	t->members[c].fenced = false;
	if (t->use_epoch && t->members[c].epoch > t->epoch_floor)
		t->epoch_floor = t->members[c].epoch;
	return ev;
}

/* Re-derives the writer from the member table after any observation. */
static unsigned settle(struct topology *t, int64_t now)
{
	unsigned ev = 0;

	if (t->writer >= 0) {
		const struct topo_member *w = &t->members[t->writer];
		if (w->fails == 0) {
			/* A healthy writer is kept against any claimant, except a strictly newer timeline:
			 * then this writer is the stale one. */
			int64_t top = 0;
			if (t->use_epoch && top_claim_epoch(t, &top) && top > w->epoch)
				ev |= lose_writer(t, now);
		} else {
			/* Suspect: a fresh promotion should not wait for down_after probes. Only an
			 * unfenced claimant qualifies, otherwise one missed probe on each side would bounce
			 * the service between two self-declared primaries; and with epochs, not an older
			 * timeline than the one the suspect writer is on (the epoch floor already implies it;
			 * spelled out because it is the rule that matters here). */
			int c = pick_candidate(t);
			if (c >= 0 && !t->members[c].fenced && (!t->use_epoch || t->members[c].epoch >= w->epoch))
				ev |= lose_writer(t, now);
		}
	}

	if (t->writer < 0) {
		int c = pick_candidate(t);
		if (c >= 0)
			ev |= confirm_writer(t, c, now);
	}

	bool conflict = conflict_now(t);
	if (conflict && !t->conflict) {
		t->conflicts++;
		ev |= TOPO_EV_CONFLICT;
	}
	t->conflict = conflict;
	return ev;
}

unsigned topo_observe(struct topology *t, const struct topo_observation *o)
{
	if (!t || !o || o->member < 0 || o->member >= t->nmembers)
		return 0;

	int i = o->member;
	struct topo_member *m = &t->members[i];
	enum role before = topo_member_role(t, i);
	bool was_writer = t->writer == i;
	unsigned ev = 0;
	/* An answer without a usable role says nothing about who the writer is: count it as a failure
	 * rather than guess. */
	bool ok = o->ok && (o->role == ROLE_WRITER || o->role == ROLE_READER);

	if (!ok) {
		if (m->fails < INT_MAX)
			m->fails++;
		if (m->fails == t->down_after && before != ROLE_DOWN)
			ev |= TOPO_EV_ROLES_CHANGED;
		if (was_writer) {
			if (is_down(t, m))
				ev |= lose_writer(t, o->now_ms);
			else if (m->fails == 1)
				ev |= TOPO_EV_SUSPECT;
		}
	} else {
		bool was_suspect = was_writer && m->fails > 0;
		enum role before_reported = m->reported;
		int64_t before_epoch = m->epoch;
		m->fails = 0;
		m->reported = o->role;
		m->epoch = o->epoch;
		m->last_ok_ms = o->now_ms;
		if (o->role != before)
			ev |= TOPO_EV_ROLES_CHANGED;
		if (was_writer) {
			if (o->role == ROLE_READER) {
				ev |= lose_writer(t, o->now_ms);
			} else {
				if (was_suspect)
					ev |= TOPO_EV_RECOVERED;
				if (t->use_epoch && m->epoch > t->epoch_floor)
					t->epoch_floor = m->epoch;
			}
		}
		/* Answering as a reader is the proper way back for a former writer (a demoted writer
		 * included: its own answer already says it rejoined). */
		if (o->role == ROLE_READER)
			m->fenced = false;
		/* The node that set the epoch floor now follows someone else: whoever it follows is the
		 * history the operator chose (e.g. a split-brain node rewound onto the older timeline),
		 * so the floor no longer protects anything. */
		if (t->use_epoch && o->role == ROLE_READER && before_reported == ROLE_WRITER &&
		    before_epoch >= t->epoch_floor)
			t->epoch_floor = INT64_MIN;
	}

	ev |= settle(t, o->now_ms);
	/* Suspect/recovered describe the current writer; once it has been replaced in this same call
	 * the loss events say everything. */
	if (t->writer != i)
		ev &= ~(unsigned)(TOPO_EV_SUSPECT | TOPO_EV_RECOVERED);
	return ev;
}

int topo_writer_ready(const struct topology *t)
{
	if (t->state != TOPO_STEADY || t->writer < 0 || t->writer >= t->nmembers)
		return -1;
	const struct topo_member *w = &t->members[t->writer];
	if (w->fails != 0 || w->reported != ROLE_WRITER)
		return -1;
	return t->writer;
}

enum role topo_member_role(const struct topology *t, int i)
{
	if (i < 0 || i >= t->nmembers)
		return ROLE_UNKNOWN;
	const struct topo_member *m = &t->members[i];
	if (is_down(t, m))
		return ROLE_DOWN;
	return m->reported;
}

bool topo_member_healthy(const struct topology *t, int i)
{
	if (i < 0 || i >= t->nmembers)
		return false;
	const struct topo_member *m = &t->members[i];
	return m->fails == 0 && m->reported != ROLE_UNKNOWN;
}

static int remap_index(int old, int n, const int *map)
{
	if (old < 0)
		return -1;
	for (int i = 0; i < n; i++)
		if (map[i] == old)
			return i;
	return -1;
}

unsigned topo_remap(struct topology *t, int n, const int *map, int64_t now_ms)
{
	struct topo_member *m = NULL;
	unsigned ev = 0;
	int writer;

	if (n < 0)
		return 0;
	if (n > 0) {
		m = calloc((size_t)n, sizeof(*m));
		if (m == NULL)
			return 0;
	}
	for (int i = 0; i < n; i++) {
		if (map[i] >= 0 && map[i] < t->nmembers)
			m[i] = t->members[map[i]];
		else
			m[i].reported = ROLE_UNKNOWN;
	}
	writer = remap_index(t->writer, n, map);
	t->last_writer = remap_index(t->last_writer, n, map);
	t->last.from = remap_index(t->last.from, n, map);
	t->last.to = remap_index(t->last.to, n, map);
	free(t->members);
	t->members = m;
	t->nmembers = n;
	if (t->writer >= 0 && writer < 0) {
		/* The writer left the membership: a failover like any other, with no member to drain
		 * (its sessions went with it). */
		t->writer = -1;
		t->state = TOPO_FAILING_OVER;
		t->last.started_ms = now_ms;
		t->last.confirmed_ms = 0;
		t->last.from = -1;
		t->last.to = -1;
		ev |= TOPO_EV_FAILOVER_STARTED;
	} else {
		t->writer = writer;
	}
	return ev | settle(t, now_ms);
}
