/* cluster.c - a Redis Cluster service's shards (see cluster.h). */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cluster_init(struct cluster *c, int down_after)
{
	memset(c, 0, sizeof(*c));
	c->down_after = down_after;
	for (int s = 0; s < SLOTS_COUNT; s++)
		c->owner[s] = -1;
}

void cluster_free(struct cluster *c)
{
	for (int k = 0; k < c->nshards; k++)
		topo_free(&c->shards[k].topo);
	free(c->shards);
	free(c->member_shard);
	c->shards = NULL;
	c->member_shard = NULL;
	c->nshards = c->nmembers = 0;
}

bool cluster_remap(struct cluster *c, int n, const int *map, int64_t now_ms, cluster_react_fn react, void *arg)
{
	int *ms = calloc((size_t)(n > 0 ? n : 1), sizeof(*ms));
	unsigned *ev = calloc((size_t)(c->nshards > 0 ? c->nshards : 1), sizeof(*ev));

	if (ms == NULL || ev == NULL) {
		free(ms);
		free(ev);
		return false;
	}
	for (int i = 0; i < n; i++)
		ms[i] = map[i] >= 0 && map[i] < c->nmembers ? c->member_shard[map[i]] : -1;
	for (int k = 0; k < c->nshards; k++)
		ev[k] = topo_remap(&c->shards[k].topo, n, map, now_ms);
	free(c->member_shard);
	c->member_shard = ms;
	c->nmembers = n;
	for (int k = 0; k < c->nshards; k++)
		if (ev[k] != 0)
			react(arg, k, ev[k], -1);
	free(ev);
	return true;
}

/* "a-b,c-d" of the slots shard k serves, cut with "..." when it does not fit. */
static void shard_ranges(struct cluster *c, int k)
{
	struct cluster_shard *sh = &c->shards[k];
	size_t off = 0, cap = sizeof(sh->ranges);
	bool cut = false;

	sh->ranges[0] = '\0';
	sh->nslots = 0;
	sh->first_slot = -1;
	for (int s = 0; s < SLOTS_COUNT; s++) {
		if (c->owner[s] != k)
			continue;
		int e = s;
		while (e + 1 < SLOTS_COUNT && c->owner[e + 1] == k)
			e++;
		sh->nslots += (uint32_t)(e - s + 1);
		if (sh->first_slot < 0)
			sh->first_slot = s;
		if (!cut) {
			char one[24];
			int w = s == e ? snprintf(one, sizeof(one), "%s%d", off ? "," : "", s)
				       : snprintf(one, sizeof(one), "%s%d-%d", off ? "," : "", s, e);
			if (off + (size_t)w + 4 < cap) {
				memcpy(sh->ranges + off, one, (size_t)w + 1);
				off += (size_t)w;
			} else {
				memcpy(sh->ranges + off, ",...", 5);
				cut = true;
			}
		}
		s = e;
	}
}

/* Shard k serves slots, and the map `owner` gives none of them to a shard of its own. */
static bool left_out(const struct cluster *c, int k, const int16_t *owner)
{
	bool serves = false;

	for (int s = 0; s < SLOTS_COUNT; s++) {
		if (c->owner[s] != k)
			continue;
		if (owner[s] >= 0)
			return false;
		serves = true;
	}
	return serves;
}

bool cluster_apply(struct cluster *c, int map_shards, const int *in_shard, const int16_t *owner, int64_t now_ms,
		   cluster_react_fn react, void *arg, bool *oom)
{
	int *to_old = calloc((size_t)(map_shards > 0 ? map_shards : 1), sizeof(*to_old));
	bool *taken = calloc((size_t)(c->nshards > 0 ? c->nshards : 1), sizeof(*taken));
	int *votes = calloc((size_t)(c->nshards > 0 ? c->nshards : 1), sizeof(*votes));
	int *remap = calloc((size_t)(c->nmembers > 0 ? c->nmembers : 1), sizeof(*remap));
	int *new_ms = calloc((size_t)(c->nmembers > 0 ? c->nmembers : 1), sizeof(*new_ms));
	struct cluster_shard *next = NULL;
	unsigned *events = NULL;
	int *pos = NULL;
	bool *used = NULL;
	int16_t *owner_kept = NULL;
	int *in_kept = NULL, *to_old_kept = NULL;
	int nnext = map_shards, kept = 0;
	bool changed = false;

	*oom = false;
	if (to_old == NULL || taken == NULL || votes == NULL || remap == NULL || new_ms == NULL)
		goto fail;
	/* Map shard j is the existing shard that served most of its slots (a failover moves no slot, and
	 * a map seen mid-failover may leave nodes out), else the one most of its members are in (its
	 * slots are new to repoint: a resharding into an empty shard). Not one taken already. */
	for (int j = 0; j < map_shards; j++) {
		int best = -1;
		memset(votes, 0, (size_t)(c->nshards > 0 ? c->nshards : 1) * sizeof(*votes));
		for (int s = 0; s < SLOTS_COUNT; s++)
			if (owner[s] == j && c->owner[s] >= 0 && c->owner[s] < c->nshards && !taken[c->owner[s]])
				votes[c->owner[s]]++;
		for (int k = 0; k < c->nshards; k++)
			if (votes[k] > 0 && (best < 0 || votes[k] > votes[best]))
				best = k;
		if (best < 0) {
			memset(votes, 0, (size_t)(c->nshards > 0 ? c->nshards : 1) * sizeof(*votes));
			for (int i = 0; i < c->nmembers; i++)
				if (in_shard[i] == j && c->member_shard[i] >= 0 && !taken[c->member_shard[i]])
					votes[c->member_shard[i]]++;
			for (int k = 0; k < c->nshards; k++)
				if (votes[k] > 0 && (best < 0 || votes[k] > votes[best]))
					best = k;
		}
		to_old[j] = best;
		if (best >= 0)
			taken[best] = true;
	}
	/* A shard the map leaves out altogether -- none of its slots served by a map shard, and no map
	 * shard is it -- as a map seen mid-failover may (or one listing nothing at all): kept as it is,
	 * with its slots and the members the map puts in no other shard, and what its topology knows. */
	for (int k = 0; k < c->nshards; k++)
		if (!taken[k] && left_out(c, k, owner))
			kept++;
	if (kept > 0) {
		owner_kept = malloc(SLOTS_COUNT * sizeof(*owner_kept));
		in_kept = malloc((size_t)(c->nmembers > 0 ? c->nmembers : 1) * sizeof(*in_kept));
		to_old_kept = malloc((size_t)(map_shards + kept) * sizeof(*to_old_kept));
		if (owner_kept == NULL || in_kept == NULL || to_old_kept == NULL)
			goto fail;
		memcpy(owner_kept, owner, SLOTS_COUNT * sizeof(*owner_kept));
		memcpy(in_kept, in_shard, (size_t)c->nmembers * sizeof(*in_kept));
		memcpy(to_old_kept, to_old, (size_t)map_shards * sizeof(*to_old_kept));
		for (int k = 0, j = map_shards; k < c->nshards; k++) {
			if (taken[k] || !left_out(c, k, owner))
				continue;
			for (int s = 0; s < SLOTS_COUNT; s++)
				if (c->owner[s] == k)
					owner_kept[s] = (int16_t)j;
			for (int i = 0; i < c->nmembers; i++)
				if (in_kept[i] < 0 && c->member_shard[i] == k)
					in_kept[i] = j;
			to_old_kept[j++] = k;
			taken[k] = true;
		}
		owner = owner_kept;
		in_shard = in_kept;
		free(to_old);
		to_old = to_old_kept;
		to_old_kept = NULL;
		nnext = map_shards += kept;
	}
	/* Shards no map shard took are gone: their members left them (below). */
	if (nnext < c->nshards)
		changed = true;
	/* Where each goes: a shard keeps its number (/status, the metrics' shard label) while it can;
	 * new ones take the free numbers. */
	if ((pos = calloc((size_t)(nnext > 0 ? nnext : 1), sizeof(*pos))) == NULL ||
	    (used = calloc((size_t)(nnext > 0 ? nnext : 1), sizeof(*used))) == NULL)
		goto fail;
	for (int j = 0; j < nnext; j++) {
		pos[j] = -1;
		if (to_old[j] >= 0 && to_old[j] < nnext) {
			pos[j] = to_old[j];
			used[pos[j]] = true;
		}
	}
	for (int j = 0, free_at = 0; j < nnext; j++) {
		if (pos[j] >= 0)
			continue;
		while (used[free_at])
			free_at++;
		pos[j] = free_at;
		used[free_at] = true;
	}
	next = calloc((size_t)(nnext > 0 ? nnext : 1), sizeof(*next));
	if (next == NULL)
		goto fail;
	for (int j = 0; j < nnext; j++) {
		if (to_old[j] >= 0) {
			next[pos[j]] = c->shards[to_old[j]];
		} else if (!topo_init(&next[pos[j]].topo, c->nmembers, c->down_after, false)) {
			for (int k = 0; k < j; k++)
				if (to_old[k] < 0)
					topo_free(&next[pos[k]].topo);
			goto fail;
		}
		if (to_old[j] != pos[j])
			changed = true;
	}
	/* A member in another shard than before starts over in its new one. The events are told once
	 * the new shards are in place (the service reads them through c). */
	if ((events = calloc((size_t)(nnext > 0 ? nnext : 1), sizeof(*events))) == NULL)
		goto fail_next;
	for (int j = 0; j < nnext; j++) {
		bool moved = false;
		for (int i = 0; i < c->nmembers; i++) {
			int was = c->member_shard[i];
			bool here_before = to_old[j] >= 0 && was == to_old[j];
			remap[i] = i;
			if ((in_shard[i] == j) != here_before) {
				remap[i] = -1;  /* joined or left this shard: unknown in its topology */
				moved = true;
			}
		}
		if (!moved)
			continue;
		changed = true;
		events[pos[j]] = topo_remap(&next[pos[j]].topo, c->nmembers, remap, now_ms);
	}
	for (int k = 0; k < c->nshards; k++)
		if (!taken[k])
			topo_free(&c->shards[k].topo);
	free(c->shards);
	c->shards = next;
	c->nshards = nnext;
	for (int i = 0; i < c->nmembers; i++) {
		new_ms[i] = in_shard[i] >= 0 && in_shard[i] < nnext ? pos[in_shard[i]] : -1;
		if (new_ms[i] != c->member_shard[i])
			changed = true;
	}
	memcpy(c->member_shard, new_ms, (size_t)c->nmembers * sizeof(*new_ms));
	for (int s = 0; s < SLOTS_COUNT; s++) {
		int16_t o = owner[s] >= 0 && owner[s] < nnext ? (int16_t)pos[owner[s]] : -1;
		if (o != c->owner[s]) {
			c->owner[s] = o;
			changed = true;
		}
	}
	for (int k = 0; k < c->nshards; k++)
		shard_ranges(c, k);
	if (changed)
		c->maps++;
	for (int j = 0; j < nnext; j++)
		if (events[j] != 0)
			react(arg, j, events[j], -1);
	free(events);
	goto out;
fail_next:
	for (int j = 0; j < nnext; j++)
		if (to_old[j] < 0)
			topo_free(&next[pos[j]].topo);
fail:
	*oom = true;
	changed = false;
	free(next);
out:
	free(owner_kept);
	free(in_kept);
	free(to_old_kept);
	free(pos);
	free(used);
	free(to_old);
	free(taken);
	free(votes);
	free(remap);
	free(new_ms);
	return changed;
}

struct topology *cluster_topo_of(struct cluster *c, int member)
{
	if (member < 0 || member >= c->nmembers || c->member_shard[member] < 0)
		return NULL;
	return &c->shards[c->member_shard[member]].topo;
}

int cluster_slot_shard(const struct cluster *c, int slot)
{
	return slot >= 0 && slot < SLOTS_COUNT ? c->owner[slot] : -1;
}

int cluster_slot_writer(const struct cluster *c, int slot)
{
	int k = cluster_slot_shard(c, slot);

	return k >= 0 ? topo_writer_ready(&c->shards[k].topo) : -1;
}

void cluster_move_slot(struct cluster *c, int slot, int k)
{
	int was;

	if (slot < 0 || slot >= SLOTS_COUNT || k < 0 || k >= c->nshards || c->owner[slot] == k)
		return;
	was = c->owner[slot];
	c->owner[slot] = (int16_t)k;
	shard_ranges(c, k);
	if (was >= 0)
		shard_ranges(c, was);
}

bool cluster_ready(const struct cluster *c)
{
	if (c->nshards == 0)
		return false;
	for (int s = 0; s < SLOTS_COUNT; s++)
		if (c->owner[s] < 0)
			return false;
	for (int k = 0; k < c->nshards; k++)
		if (topo_writer_ready(&c->shards[k].topo) < 0)
			return false;
	return true;
}
