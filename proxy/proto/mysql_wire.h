/* mysql_wire.h - small readers of MySQL's wire format, shared by the tracker (mysql.c) and
 * repoint's own login (mysql_login.c). */
#ifndef REPOINT_MYSQL_WIRE_H
#define REPOINT_MYSQL_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A moved session's prepared statements, prepared again on the new member, have the member's ids
 * there: pairs client id -> member id, made a permutation (each member id no client id names is
 * given a client id the member does not use), so that an id the client does not hold open names
 * nothing open on the member either, and every id not in it -- the member's later statements',
 * most of the time -- is the same on both sides. The login (mysql_login.c) makes it and maps the
 * client's requests; the tracker (mysql.c) maps the ids of the prepare-OKs going back. */
#define MYSQL_IDMAP_MAX 16

struct mysql_idmap {
	uint32_t client[MYSQL_IDMAP_MAX], member[MYSQL_IDMAP_MAX];
	unsigned n;
};

/* The member's id for a client's id, and the client's for a member's (not in the map: the same). */
static inline uint32_t mysql_idmap_member(const struct mysql_idmap *m, uint32_t client_id)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->client[i] == client_id)
			return m->member[i];
	return client_id;
}

static inline uint32_t mysql_idmap_client(const struct mysql_idmap *m, uint32_t member_id)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->member[i] == member_id)
			return m->client[i];
	return member_id;
}

/* A length-encoded integer at b[0..avail): its size in bytes, 0 when it is not one (0xFB is NULL,
 * 0xFF an ERR marker) or does not fit in avail. */
static inline size_t mysql_lenenc(const uint8_t *b, size_t avail, uint64_t *v)
{
	size_t size;

	if (avail == 0)
		return 0;
	switch (b[0]) {
	case 0xFB:
	case 0xFF:
		return 0;
	case 0xFC:
		size = 3;
		break;
	case 0xFD:
		size = 4;
		break;
	case 0xFE:
		size = 9;
		break;
	default:
		*v = b[0];
		return 1;
	}
	if (avail < size)
		return 0;
	*v = 0;
	for (size_t i = size - 1; i >= 1; i--)
		*v = *v << 8 | b[i];
	return size;
}

#endif
