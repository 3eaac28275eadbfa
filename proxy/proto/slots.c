/* proto/slots.c - Redis Cluster's key space: key -> slot, and slot maps from CLUSTER SLOTS / SHARDS. */
#include "proto/slots.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

uint16_t slots_crc16(const uint8_t *p, size_t n)
{
	/* CRC-16/XMODEM: polynomial 0x1021, initial 0, no reflection (the Redis Cluster spec's). */
	uint16_t crc = 0;

	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

uint16_t slots_key_slot(const uint8_t *key, size_t n)
{
	const uint8_t *open = memchr(key, '{', n);

	if (open != NULL) {
		size_t at = (size_t)(open - key) + 1;
		const uint8_t *close = memchr(key + at, '}', n - at);
		if (close != NULL && close > key + at)
			return slots_crc16(key + at, (size_t)(close - key - at)) & (SLOTS_COUNT - 1);
	}
	return slots_crc16(key, n) & (SLOTS_COUNT - 1);
}

static bool fail(char *why, size_t whylen, const char *msg)
{
	snprintf(why, whylen, "%s", msg);
	return false;
}

static void map_init(struct slots_map *m)
{
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < SLOTS_COUNT; i++)
		m->owner[i] = -1;
}

static bool str_is(const redisReply *r, const char *s)
{
	return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->len == strlen(s) &&
	       memcmp(r->str, s, r->len) == 0;
}

/* A string into buf (printable, fits), else false. */
static bool take_str(const redisReply *r, char *buf, size_t cap)
{
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len >= cap)
		return false;
	for (size_t i = 0; i < r->len; i++)
		if ((unsigned char)r->str[i] <= 0x20 || (unsigned char)r->str[i] >= 0x7f)
			return false;
	memcpy(buf, r->str, r->len);
	buf[r->len] = '\0';
	return true;
}

static bool take_port(const redisReply *r, uint16_t *port)
{
	if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer <= 0 || r->integer > 65535)
		return false;
	*port = (uint16_t)r->integer;
	return true;
}

/* Slots [lo, hi] to shard s; false (why) when out of range or claimed already. */
static bool claim(struct slots_map *m, long long lo, long long hi, int s, char *why, size_t whylen)
{
	if (lo < 0 || hi >= SLOTS_COUNT || lo > hi)
		return fail(why, whylen, "a slot range out of 0..16383");
	for (long long i = lo; i <= hi; i++) {
		if (m->owner[i] >= 0)
			return fail(why, whylen, "two shards claim the same slot");
		m->owner[i] = (int16_t)s;
		m->covered++;
		m->shards[s].nslots++;
	}
	return true;
}

/* CLUSTER SLOTS node: [host, port, id?, ...]. */
static bool slots_node(const redisReply *r, struct slots_node *n)
{
	memset(n, 0, sizeof(*n));
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || !take_str(r->element[0], n->host, sizeof(n->host)) ||
	    !take_port(r->element[1], &n->port))
		return false;
	if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING && !take_str(r->element[2], n->id, sizeof(n->id)))
		n->id[0] = '\0';
	return true;
}

static int shard_of(struct slots_map *m, const struct slots_node *primary)
{
	for (int i = 0; i < m->nshards; i++)
		if (m->shards[i].primary.port == primary->port && strcmp(m->shards[i].primary.host, primary->host) == 0)
			return i;
	return -1;
}

bool slots_from_cluster_slots(const redisReply *r, struct slots_map *m, char *why, size_t whylen)
{
	map_init(m);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return fail(why, whylen, "CLUSTER SLOTS: not an array");
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		struct slots_node primary;
		if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || !slots_node(e->element[2], &primary))
			return fail(why, whylen, "CLUSTER SLOTS: an entry is not [start, end, [host, port, id], ...]");
		int s = shard_of(m, &primary);
		if (s < 0) {
			if (m->nshards == SLOTS_MAX_SHARDS)
				return fail(why, whylen, "CLUSTER SLOTS: more shards than repoint follows");
			s = m->nshards++;
			m->shards[s].primary = primary;
			for (size_t k = 3; k < e->elements && m->shards[s].nreplicas < SLOTS_MAX_REPLICAS; k++) {
				if (!slots_node(e->element[k], &m->shards[s].replicas[m->shards[s].nreplicas]))
					return fail(why, whylen, "CLUSTER SLOTS: a replica is not [host, port, id]");
				m->shards[s].nreplicas++;
			}
		}
		if (!claim(m, e->element[0]->integer, e->element[1]->integer, s, why, whylen))
			return false;
	}
	return true;
}

/* A CLUSTER SHARDS node: a flat [field, value, ...] list (RESP2: hiredis 0.14 reads no RESP3). Returns 1 for a
 * primary, 2 for a replica, 0 to skip (not online, or another role), -1 when malformed. */
static int shards_node(const redisReply *r, struct slots_node *n)
{
	char role[16] = "", health[16] = "", ip[256] = "", endpoint[256] = "";
	uint16_t port = 0, tls_port = 0;

	memset(n, 0, sizeof(*n));
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
		return -1;
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (str_is(k, "id"))
			(void)take_str(v, n->id, sizeof(n->id));
		else if (str_is(k, "port"))
			(void)take_port(v, &port);
		else if (str_is(k, "tls-port"))
			(void)take_port(v, &tls_port);
		else if (str_is(k, "ip"))
			(void)take_str(v, ip, sizeof(ip));
		else if (str_is(k, "endpoint"))
			(void)take_str(v, endpoint, sizeof(endpoint));
		else if (str_is(k, "role"))
			(void)take_str(v, role, sizeof(role));
		else if (str_is(k, "health"))
			(void)take_str(v, health, sizeof(health));
	}
	snprintf(n->host, sizeof(n->host), "%s", endpoint[0] != '\0' && strcmp(endpoint, "?") != 0 ? endpoint : ip);
	n->port = port != 0 ? port : tls_port;
	if (n->host[0] == '\0' || n->port == 0)
		return -1;
	if (strcmp(health, "online") != 0)
		return 0;
	return strcmp(role, "master") == 0 ? 1 : strcmp(role, "replica") == 0 ? 2 : 0;
}

bool slots_from_cluster_shards(const redisReply *r, struct slots_map *m, char *why, size_t whylen)
{
	map_init(m);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return fail(why, whylen, "CLUSTER SHARDS: not an array");
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *slots = NULL, *nodes = NULL;
		if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements % 2 != 0)
			return fail(why, whylen, "CLUSTER SHARDS: a shard is not a field/value list");
		for (size_t k = 0; k + 1 < e->elements; k += 2) {
			if (str_is(e->element[k], "slots"))
				slots = e->element[k + 1];
			else if (str_is(e->element[k], "nodes"))
				nodes = e->element[k + 1];
		}
		if (slots == NULL || nodes == NULL || slots->type != REDIS_REPLY_ARRAY || nodes->type != REDIS_REPLY_ARRAY ||
		    slots->elements % 2 != 0)
			return fail(why, whylen, "CLUSTER SHARDS: a shard without slots and nodes");
		if (slots->elements == 0)
			continue;  /* a shard that serves nothing (being emptied or not yet filled) */
		if (m->nshards == SLOTS_MAX_SHARDS)
			return fail(why, whylen, "CLUSTER SHARDS: more shards than repoint follows");
		struct slots_shard *sh = &m->shards[m->nshards];
		bool has_primary = false;
		for (size_t k = 0; k < nodes->elements; k++) {
			struct slots_node n;
			int kind = shards_node(nodes->element[k], &n);
			if (kind < 0)
				return fail(why, whylen, "CLUSTER SHARDS: a node without a host and port");
			if (kind == 1 && !has_primary) {
				sh->primary = n;
				has_primary = true;
			} else if ((kind == 2 || kind == 1) && sh->nreplicas < SLOTS_MAX_REPLICAS) {
				/* A second master in one shard (a failover seen half done): still one of its
				 * nodes -- their own word on their roles decides which is the primary. */
				sh->replicas[sh->nreplicas++] = n;
			}
		}
		if (!has_primary)
			return fail(why, whylen, "CLUSTER SHARDS: a shard with slots and no online primary");
		int s = m->nshards++;
		for (size_t k = 0; k + 1 < slots->elements; k += 2) {
			if (slots->element[k]->type != REDIS_REPLY_INTEGER || slots->element[k + 1]->type != REDIS_REPLY_INTEGER)
				return fail(why, whylen, "CLUSTER SHARDS: a slot range that is not two integers");
			if (!claim(m, slots->element[k]->integer, slots->element[k + 1]->integer, s, why, whylen))
				return false;
		}
	}
	return true;
}

enum slots_membership slots_membership(const struct redisReply *r)
{
	if (r->type == REDIS_REPLY_ARRAY)
		return SLOTS_IN_CLUSTER;
	if (r->type == REDIS_REPLY_ERROR && r->str != NULL && strstr(r->str, "cluster support disabled") != NULL)
		return SLOTS_NOT_CLUSTER;
	/* 6.x: "ERR Unknown subcommand or wrong number of arguments for 'SHARDS'"; an ACL: "NOPERM ..." */
	if (r->type == REDIS_REPLY_ERROR && r->str != NULL &&
	    (strncmp(r->str, "NOPERM", 6) == 0 || strcasestr(r->str, "unknown subcommand") != NULL))
		return SLOTS_NO_SHARDS;
	return SLOTS_UNKNOWN;
}
