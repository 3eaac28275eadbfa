/* mysql_wire.h - small readers of MySQL's wire format, shared by the tracker (mysql.c) and
 * repoint's own login (mysql_login.c). */
#ifndef REPOINT_MYSQL_WIRE_H
#define REPOINT_MYSQL_WIRE_H

/* The highest prepared statement id a moved session takes along. The next login prepares each open
 * statement again, maps the client's ids to the ones the new member gave, and takes and closes
 * ("DO 1", about 17 us each on the lab's MariaDB) the member's ids up to the client's highest, so
 * that the member's later statements have the same id on both sides. A session with an open
 * statement above it stays where it is until that statement is closed. */
#define MYSQL_STMT_ID_MAX 1024u

#include <stddef.h>
#include <stdint.h>

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
