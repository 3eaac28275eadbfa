/* topology.h - who is the writer of a service, decided from observations alone.
 *
 * Sources (role probes, later the cloud control plane) report observations: "member M answered
 * role R (epoch E) at time T", or "member M did not answer". The topology alone decides which member
 * is the writer; sessions only ask it and react to the events it returns. It is a pure state machine:
 * no sockets, no clocks of its own (time comes with each observation), so every rule is unit-tested.
 *
 *   STARTING ──exactly one writer claims──▶ STEADY ──writer lost / demoted / newer epoch──▶ FAILING_OVER
 *                                             ▲                                                │
 *                                             └──────────── exactly one writer confirmed ◀─────┘
 *
 * Rules (the ones that keep writes on one node):
 *  - A member is DOWN after `down_after` consecutive failed observations; one failure of the writer
 *    already makes it "suspect": new clients are held (not refused) until it answers again.
 *  - The writer is lost when it is DOWN or answers as a reader (demoted). Sessions attached to it
 *    are drained (event TOPO_EV_WRITER_LOST).
 *  - A new writer is confirmed when exactly one healthy member claims the writer role. With epochs
 *    (Postgres timelines) only the claimants with the highest epoch count. A member that lost the
 *    writer role is "fenced": while another healthy claimant exists it is never chosen, until it
 *    rejoins as a reader.
 *  - While a writer is healthy, another member claiming writer is a conflict: reported, and the
 *    current writer is kept -- unless epochs are in use and the claimant's epoch is strictly higher,
 *    in which case the service moves to it once (the old writer is fenced, so it never flips back).
 *
 * Details the rules above leave open, settled here:
 *  - A suspect writer (1..down_after-1 failures) is replaced at once by the claimant the election
 *    would pick, provided that claimant is not fenced and (with epochs) not on an older epoch than the
 *    suspect writer: one missed probe on each side must never bounce the service between two nodes.
 *  - With epochs, no claimant below `epoch_floor` (the highest epoch any confirmed writer had) is
 *    ever elected: timelines only grow across promotions, so such a node is a stale former primary.
 *    The service holds instead, until a node at or above the floor claims. The floor is released
 *    when the node that set it answers as a reader: it follows another history now (e.g. rewound
 *    onto the older timeline after a split brain), and that is the operator's choice.
 *  - `conflict` starts when two or more healthy members claim writer, whatever their epochs or
 *    fences (so a stale primary that came back is visible even though it gets no traffic). It ends
 *    when fewer than two members still claim, a claimant counting until it is DOWN or answers
 *    reader: a missed probe neither ends the conflict nor reports it a second time. Elections still
 *    only count healthy claimants.
 *  - A demoted writer (it answered READER) is not left fenced: that answer is its rejoin.
 *  - An answer with a role other than WRITER/READER counts as a failed observation.
 *  - Becoming DOWN raises TOPO_EV_ROLES_CHANGED, as coming back up does.
 *  - The first writer ever confirmed raises TOPO_EV_WRITER_CHANGED too (there was none before).
 *  - When the writer is lost in the same call as its first failure (down_after == 1) or replaced in
 *    the same call, only the loss events are raised, not TOPO_EV_SUSPECT / TOPO_EV_RECOVERED.
 */
#ifndef REPOINT_TOPOLOGY_H
#define REPOINT_TOPOLOGY_H

#include <stdbool.h>
#include <stdint.h>

enum role { ROLE_UNKNOWN, ROLE_WRITER, ROLE_READER, ROLE_DOWN };
const char *role_name(enum role r);

enum topo_state { TOPO_STARTING, TOPO_STEADY, TOPO_FAILING_OVER };
const char *topo_state_name(enum topo_state s);

/* Events returned by topo_observe() as a bit mask. */
enum {
	TOPO_EV_FAILOVER_STARTED = 1 << 0,  /* the writer was lost: hold new clients */
	TOPO_EV_WRITER_LOST = 1 << 1,       /* drain sessions on topo->last_writer */
	TOPO_EV_WRITER_CONFIRMED = 1 << 2,  /* topo->writer is usable again (or for the first time) */
	TOPO_EV_WRITER_CHANGED = 1 << 3,    /* the confirmed writer differs from the previous one */
	TOPO_EV_CONFLICT = 1 << 4,          /* two or more members claim the writer role */
	TOPO_EV_ROLES_CHANGED = 1 << 5,     /* some member's reported role changed */
	TOPO_EV_SUSPECT = 1 << 6,           /* the writer failed a probe: hold new clients */
	TOPO_EV_RECOVERED = 1 << 7,         /* the suspect writer answered again */
};

struct topo_observation {
	int member;       /* index into the service's members */
	bool ok;          /* the member answered */
	enum role role;   /* ROLE_WRITER or ROLE_READER when ok */
	int64_t epoch;    /* Postgres timeline; 0 when the engine has none */
	int64_t now_ms;   /* when the answer (or failure) was seen, monotonic */
};

struct topo_member {
	enum role reported;   /* last answered role (WRITER/READER), UNKNOWN before any answer */
	int fails;            /* consecutive failed observations */
	int64_t epoch;
	int64_t last_ok_ms;
	bool fenced;          /* lost the writer role; not electable while another claimant exists */
};

struct topo_failover {
	int64_t started_ms;    /* monotonic; 0 when none yet */
	int64_t confirmed_ms;  /* 0 while under way */
	int from;              /* previous writer, -1 when none */
	int to;                /* new writer, -1 while under way */
};

struct topology {
	int nmembers;
	struct topo_member *members;   /* nmembers entries, owned */
	int down_after;
	bool use_epoch;
	enum topo_state state;
	int writer;          /* current writer, -1 when none (STARTING, FAILING_OVER) */
	int last_writer;     /* the writer that was lost, -1 when none */
	bool conflict;       /* two or more members claim writer right now (see above for blips) */
	unsigned failovers;  /* completed failovers (STEADY -> FAILING_OVER -> STEADY) */
	unsigned conflicts;  /* times a conflict started */
	struct topo_failover last;  /* the last (or current) failover */
	int64_t epoch_floor; /* use_epoch: highest epoch of any confirmed writer; INT64_MIN before one */
};

/* Returns false on allocation failure (or nmembers < 0). down_after < 1 is taken as 1. */
bool topo_init(struct topology *t, int nmembers, int down_after, bool use_epoch);
void topo_free(struct topology *t);

/* Feeds one observation; returns the TOPO_EV_* bits it caused. */
unsigned topo_observe(struct topology *t, const struct topo_observation *o);

/* The member a new client for route=writer may be sent to now, or -1: hold it. -1 while starting,
 * failing over, or while the writer is suspect (failed its last probe). */
int topo_writer_ready(const struct topology *t);

/* The role of member i as /status shows it: DOWN after down_after failures, UNKNOWN before any answer. */
enum role topo_member_role(const struct topology *t, int i);

/* The membership changed (a control plane added or removed members). New member i was old member
 * map[i], or is new when map[i] < 0 (UNKNOWN). Everything known of kept members stays; a writer that
 * is no longer a member is lost (TOPO_EV_FAILOVER_STARTED). Returns the events, as topo_observe. */
unsigned topo_remap(struct topology *t, int n, const int *map, int64_t now_ms);

/* Whether member i answered its last observation. */
bool topo_member_healthy(const struct topology *t, int i);

#endif
