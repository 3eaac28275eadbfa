/* proto/keyspec.c - a command's key positions from the server's COMMAND reply (see keyspec.h). */
#include "proto/keyspec.h"

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proto/resp_internal.h"
#include "proto/slots.h"

#define KS_NAME_MAX 48
#define KS_SPECS_MAX 8
#define KS_KEYWORD_MAX 24
#define KS_ARGS_MAX (1u << 20)

enum { BS_INDEX = 1, BS_KEYWORD, FK_RANGE = 1, FK_KEYNUM };

struct ks_spec {
	uint8_t bs, fk;
	int32_t index;            /* BS_INDEX */
	char keyword[KS_KEYWORD_MAX];
	int32_t startfrom;        /* BS_KEYWORD */
	int32_t lastkey, keystep, limit;          /* FK_RANGE */
	int32_t keynumidx, firstkey, knstep;      /* FK_KEYNUM */
};

struct ks_cmd {
	char name[KS_NAME_MAX];   /* lower case; "object|encoding" for a subcommand */
	bool container;           /* it has subcommands: look up "name|arg1" */
	bool unknown;             /* a spec the reply could not tell (begin_search or find_keys unknown) */
	int32_t first, last, step;/* legacy, when there are no specs */
	int nspecs;
	struct ks_spec specs[KS_SPECS_MAX];
};

struct keyspec {
	struct ks_cmd *cmds;
	size_t n, cap;
	size_t skipped;
	uint32_t *table;          /* open addressing: index + 1, 0 empty */
	size_t tcap;
};

static uint32_t hash_name(const uint8_t *p, size_t n, const uint8_t *sub, size_t sn)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i])) * 16777619u;
	if (sub != NULL) {
		h = (h ^ '|') * 16777619u;
		for (size_t i = 0; i < sn; i++)
			h = (h ^ (uint8_t)(sub[i] >= 'A' && sub[i] <= 'Z' ? sub[i] + 32 : sub[i])) * 16777619u;
	}
	return h;
}

static bool name_eq(const char *name, const uint8_t *p, size_t n, const uint8_t *sub, size_t sn)
{
	size_t i = 0;

	for (; i < n; i++)
		if (name[i] == '\0' || name[i] != (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]))
			return false;
	if (sub == NULL)
		return name[i] == '\0';
	if (name[i++] != '|')
		return false;
	for (size_t j = 0; j < sn; j++, i++)
		if (name[i] == '\0' || name[i] != (char)(sub[j] >= 'A' && sub[j] <= 'Z' ? sub[j] + 32 : sub[j]))
			return false;
	return name[i] == '\0';
}

static const struct ks_cmd *lookup(const struct keyspec *ks, const uint8_t *p, size_t n, const uint8_t *sub, size_t sn)
{
	if (ks->tcap == 0)
		return NULL;
	for (size_t i = hash_name(p, n, sub, sn) & (ks->tcap - 1), k = 0; k < ks->tcap; i = (i + 1) & (ks->tcap - 1), k++) {
		uint32_t e = ks->table[i];
		if (e == 0)
			return NULL;
		if (name_eq(ks->cmds[e - 1].name, p, n, sub, sn))
			return &ks->cmds[e - 1];
	}
	return NULL;
}

/* ---- reading the reply ---- */

static bool is_str(const redisReply *r)
{
	return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->str != NULL;
}

static bool get_int(const redisReply *r, int32_t *v)
{
	if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < -1000000 || r->integer > 1000000)
		return false;
	*v = (int32_t)r->integer;
	return true;
}

/* The value after `field` in a flat [field, value, ...] array; NULL when absent. */
static const redisReply *field(const redisReply *a, const char *name)
{
	if (a == NULL || a->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < a->elements; i += 2)
		if (is_str(a->element[i]) && strcmp(a->element[i]->str, name) == 0)
			return a->element[i + 1];
	return NULL;
}

/* One key spec; false when it is not one. `unknown` set when it cannot tell its keys. */
static bool read_spec(const redisReply *r, struct ks_spec *s, bool *unknown)
{
	const redisReply *bs = field(r, "begin_search"), *fk = field(r, "find_keys");
	const redisReply *bt = field(bs, "type"), *bsp = field(bs, "spec");
	const redisReply *ft = field(fk, "type"), *fsp = field(fk, "spec");

	memset(s, 0, sizeof(*s));
	if (!is_str(bt) || !is_str(ft))
		return false;
	if (strcmp(bt->str, "index") == 0) {
		s->bs = BS_INDEX;
		if (!get_int(field(bsp, "index"), &s->index) || s->index < 0)
			return false;
	} else if (strcmp(bt->str, "keyword") == 0) {
		const redisReply *kw = field(bsp, "keyword");
		s->bs = BS_KEYWORD;
		if (!is_str(kw) || kw->len == 0 || kw->len >= KS_KEYWORD_MAX || !get_int(field(bsp, "startfrom"), &s->startfrom))
			return false;
		memcpy(s->keyword, kw->str, kw->len);
	} else {
		*unknown = true;
		return true;
	}
	if (strcmp(ft->str, "range") == 0) {
		s->fk = FK_RANGE;
		if (!get_int(field(fsp, "lastkey"), &s->lastkey) || !get_int(field(fsp, "keystep"), &s->keystep) ||
		    !get_int(field(fsp, "limit"), &s->limit) || s->keystep <= 0 || s->limit < 0)
			return false;
	} else if (strcmp(ft->str, "keynum") == 0) {
		s->fk = FK_KEYNUM;
		if (!get_int(field(fsp, "keynumidx"), &s->keynumidx) || !get_int(field(fsp, "firstkey"), &s->firstkey) ||
		    !get_int(field(fsp, "keystep"), &s->knstep) || s->knstep <= 0 || s->keynumidx < 0 || s->firstkey < 0)
			return false;
	} else {
		*unknown = true;
	}
	return true;
}

static bool add_cmd(struct keyspec *ks, const struct ks_cmd *c)
{
	if (ks->n == ks->cap) {
		size_t cap = ks->cap ? ks->cap * 2 : 256;
		struct ks_cmd *m = realloc(ks->cmds, cap * sizeof(*m));
		if (m == NULL)
			return false;
		ks->cmds = m;
		ks->cap = cap;
	}
	ks->cmds[ks->n++] = *c;
	return true;
}

/* One entry (and its subcommands); `parent` is the container's name for a subcommand. */
static bool read_entry(struct keyspec *ks, const redisReply *e, int depth)
{
	struct ks_cmd c;
	const redisReply *name;

	if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 6 || !is_str(e->element[0]) ||
	    e->element[0]->len == 0 || e->element[0]->len >= KS_NAME_MAX) {
		ks->skipped++;
		return true;
	}
	memset(&c, 0, sizeof(c));
	name = e->element[0];
	for (size_t i = 0; i < name->len; i++) {
		char ch = name->str[i];
		if (ch == '\0' || ch == ' ') {
			ks->skipped++;
			return true;
		}
		c.name[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
	}
	if (depth > 0 && strchr(c.name, '|') == NULL) {
		ks->skipped++;
		return true;
	}
	if (!get_int(e->element[3], &c.first) || !get_int(e->element[4], &c.last) || !get_int(e->element[5], &c.step)) {
		ks->skipped++;
		return true;
	}
	if (e->elements >= 9 && e->element[8]->type == REDIS_REPLY_ARRAY) {
		const redisReply *specs = e->element[8];
		for (size_t i = 0; i < specs->elements; i++) {
			if (c.nspecs == KS_SPECS_MAX || !read_spec(specs->element[i], &c.specs[c.nspecs], &c.unknown)) {
				ks->skipped++;
				return true;
			}
			if (!c.unknown)
				c.nspecs++;
		}
	}
	if (e->elements >= 10 && e->element[9]->type == REDIS_REPLY_ARRAY && e->element[9]->elements > 0 && depth == 0) {
		c.container = true;
		for (size_t i = 0; i < e->element[9]->elements; i++)
			if (!read_entry(ks, e->element[9]->element[i], 1))
				return false;
	}
	return add_cmd(ks, &c);
}

struct keyspec *keyspec_from_command(const redisReply *r, char *why, size_t whylen)
{
	struct keyspec *ks;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
		snprintf(why, whylen, "not a COMMAND reply (%s)",
			 r == NULL ? "none" : r->type == REDIS_REPLY_ERROR ? "an error" : "not a non-empty array");
		return NULL;
	}
	if ((ks = calloc(1, sizeof(*ks))) == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < r->elements; i++) {
		if (!read_entry(ks, r->element[i], 0)) {
			snprintf(why, whylen, "out of memory");
			keyspec_free(ks);
			return NULL;
		}
	}
	if (ks->n == 0) {
		snprintf(why, whylen, "not a COMMAND reply (no entry could be read)");
		keyspec_free(ks);
		return NULL;
	}
	for (ks->tcap = 64; ks->tcap < ks->n * 2; ks->tcap *= 2)
		;
	if ((ks->table = calloc(ks->tcap, sizeof(*ks->table))) == NULL) {
		snprintf(why, whylen, "out of memory");
		keyspec_free(ks);
		return NULL;
	}
	for (size_t k = 0; k < ks->n; k++) {
		const char *nm = ks->cmds[k].name, *bar = strchr(nm, '|');
		uint32_t h = bar ? hash_name((const uint8_t *)nm, (size_t)(bar - nm), (const uint8_t *)bar + 1, strlen(bar + 1))
				 : hash_name((const uint8_t *)nm, strlen(nm), NULL, 0);
		size_t i = h & (ks->tcap - 1);
		bool dup = false;
		while (ks->table[i] != 0) {
			dup |= strcmp(ks->cmds[ks->table[i] - 1].name, nm) == 0;
			i = (i + 1) & (ks->tcap - 1);
		}
		if (!dup)
			ks->table[i] = (uint32_t)k + 1;
	}
	return ks;
}

void keyspec_free(struct keyspec *ks)
{
	if (ks == NULL)
		return;
	free(ks->cmds);
	free(ks->table);
	free(ks);
}

size_t keyspec_count(const struct keyspec *ks)
{
	return ks->n;
}

size_t keyspec_skipped(const struct keyspec *ks)
{
	return ks->skipped;
}

/* ---- a command's keys ---- */

/* Where each argument is (the loop is single-threaded; grown, never shrunk). */
static struct {
	uint32_t *off, *len;
	size_t cap;
} args;

static bool args_room(size_t n)
{
	if (n <= args.cap)
		return true;
	size_t cap = args.cap ? args.cap : 64;
	while (cap < n)
		cap *= 2;
	uint32_t *o = realloc(args.off, cap * sizeof(*o));
	if (o == NULL)
		return false;
	args.off = o;
	uint32_t *l = realloc(args.len, cap * sizeof(*l));
	if (l == NULL)
		return false;
	args.len = l;
	args.cap = cap;
	return true;
}

static bool ieq(const uint8_t *p, size_t n, const char *s)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]) != (s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]))
			return false;
	return true;
}

/* Adds the slot of argument i to *slot (-1: none yet); false on a second slot. */
static bool key_at(const uint8_t *p, size_t i, int *slot)
{
	int s = slots_key_slot(p + args.off[i], args.len[i]);

	if (*slot >= 0 && *slot != s)
		return false;
	*slot = s;
	return true;
}

int keyspec_slot(const struct keyspec *ks, const uint8_t *p, size_t n)
{
	size_t at = 1, argc;
	uint64_t v;
	const struct ks_cmd *c;
	int slot = -1;

	if (n < 4 || p[0] != '*' || resp_length_line(p, n, &at, KS_ARGS_MAX, &v) != 1 || v == 0 || !args_room(v))
		return KEYSPEC_BAD;
	argc = (size_t)v;
	for (size_t i = 0; i < argc; i++) {
		if (at >= n || p[at] != '$')
			return KEYSPEC_BAD;
		at++;
		if (resp_length_line(p, n, &at, n, &v) != 1 || v + 2 > n - at || p[at + v] != '\r' || p[at + v + 1] != '\n')
			return KEYSPEC_BAD;
		args.off[i] = (uint32_t)at;
		args.len[i] = (uint32_t)v;
		at += (size_t)v + 2;
	}
	if (at != n || n > UINT32_MAX)
		return KEYSPEC_BAD;
	c = lookup(ks, p + args.off[0], args.len[0], NULL, 0);
	if (c != NULL && c->container) {
		if (argc < 2)
			return KEYSPEC_NOKEYS;
		c = lookup(ks, p + args.off[0], args.len[0], p + args.off[1], args.len[1]);
	}
	if (c == NULL || c->unknown)
		return KEYSPEC_UNKNOWN;
	if (c->nspecs == 0) {
		/* Legacy positions: first..last (negative: from the end) every step. */
		if (c->first <= 0)
			return KEYSPEC_NOKEYS;
		long last = c->last < 0 ? (long)argc + c->last : c->last;
		if (c->step <= 0)
			return KEYSPEC_UNKNOWN;
		for (long i = c->first; i <= last && i < (long)argc; i += c->step)
			if (!key_at(p, (size_t)i, &slot))
				return KEYSPEC_CROSSSLOT;
		return slot >= 0 ? slot : KEYSPEC_NOKEYS;
	}
	for (int k = 0; k < c->nspecs; k++) {
		const struct ks_spec *s = &c->specs[k];
		long begin = -1, last;
		if (s->bs == BS_INDEX) {
			begin = s->index;
		} else {
			/* The keyword, searched from startfrom (from the end when negative). */
			long from = s->startfrom >= 0 ? s->startfrom : (long)argc + s->startfrom;
			long step = s->startfrom >= 0 ? 1 : -1;
			for (long i = from; i > 0 && i < (long)argc; i += step)
				if (ieq(p + args.off[i], args.len[i], s->keyword)) {
					begin = i + 1;
					break;
				}
			if (begin < 0)
				continue;  /* not there: no keys of this spec */
		}
		if (begin >= (long)argc)
			continue;
		if (s->fk == FK_RANGE) {
			long step = s->keystep;
			if (s->lastkey >= 0)
				last = begin + s->lastkey;
			else if (s->limit <= 1)
				last = (long)argc + s->lastkey;
			else
				last = begin + ((long)argc - begin) / s->limit + s->lastkey;
			for (long i = begin; i <= last && i < (long)argc; i += step)
				if (!key_at(p, (size_t)i, &slot))
					return KEYSPEC_CROSSSLOT;
		} else {
			long idx = begin + s->keynumidx, nkeys = 0;
			if (idx >= (long)argc || args.len[idx] == 0 || args.len[idx] > 9)
				return KEYSPEC_BAD;
			for (uint32_t j = 0; j < args.len[idx]; j++) {
				uint8_t ch = p[args.off[idx] + j];
				if (ch < '0' || ch > '9')
					return KEYSPEC_BAD;
				nkeys = nkeys * 10 + (ch - '0');
			}
			long first = begin + s->firstkey;
			if (nkeys > 0 && first + (nkeys - 1) * s->knstep >= (long)argc)
				return KEYSPEC_BAD;
			for (long j = 0; j < nkeys; j++)
				if (!key_at(p, (size_t)(first + j * s->knstep), &slot))
					return KEYSPEC_CROSSSLOT;
		}
	}
	return slot >= 0 ? slot : KEYSPEC_NOKEYS;
}
