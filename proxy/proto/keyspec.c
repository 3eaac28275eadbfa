/* proto/keyspec.c - a command's key positions from the server's COMMAND reply (see keyspec.h). */
#include "proto/keyspec.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proto/resp_internal.h"
#include "proto/slots.h"

#define KS_NAME_MAX 64          /* "container|subcommand" with its NUL (7.0's longest: 29) */
#define KS_KEYWORD_MAX 32
#define KS_SPECS_MAX 8          /* key specs of one entry (7.0's most: 3) */
#define KS_CMDS_MAX 8192        /* entries taken from one reply (7.0.15: 240 and 126 subcommands) */
#define KS_POS_MAX 65536        /* any position, step or count a spec gives */
#define KS_ARGS_MAX (1u << 20)  /* arguments of one command */
#define KS_FAST_ARGS 32         /* argument places kept on the stack; later ones are walked to */

enum ks_search { KS_INDEX, KS_KEYWORD };
enum ks_find { KS_RANGE, KS_KEYNUM };

/* How an entry finds its keys. */
enum ks_mode {
	KS_SPECS,      /* its key specs, all of them complete */
	KS_LEGACY,     /* first/last/step: no key specs, or one Redis cannot apply itself */
	KS_NONE,       /* no keys at all */
	KS_UNSURE,     /* keys the reply cannot tell: KEYSPEC_UNKNOWN */
	KS_CONTAINER,  /* look up "name|subcommand" */
};

struct ks_spec {
	uint8_t search, find, kwlen;
	char keyword[KS_KEYWORD_MAX];  /* lower case, kwlen bytes */
	int32_t start;                 /* KS_INDEX: the position; KS_KEYWORD: startfrom */
	int32_t lastkey, limit;        /* KS_RANGE */
	int32_t numidx, firstkey;      /* KS_KEYNUM */
	int32_t step;                  /* keystep, both */
};

struct ks_cmd {
	char name[KS_NAME_MAX];        /* lower case; "object|encoding" for a subcommand */
	uint8_t len, mode, nspecs;
	bool dup;                      /* a second entry of a name: not in the table */
	uint32_t spec0;                /* its specs are specs[spec0 .. spec0 + nspecs) */
	int32_t first, last, step;     /* legacy: last < 0 counts from the end */
};

struct keyspec {
	struct ks_cmd *cmds;
	size_t ncmds, cmds_cap;
	struct ks_spec *specs;
	size_t nspecs, specs_cap;
	size_t taken, skipped;
	uint32_t *table;               /* open addressing: an index into cmds + 1, 0 empty */
	size_t mask;
};

static inline uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* FNV-1a, over the lower-case bytes. */
static inline uint32_t hash_more(uint32_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ lower(p[i])) * 16777619u;
	return h;
}

#define HASH_INIT 2166136261u

/* ---- reading the reply ---- */

static bool is_text(const redisReply *r)
{
	return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->str != NULL;
}

static bool text_is(const redisReply *r, const char *s)
{
	size_t n = strlen(s);

	if (!is_text(r) || r->len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower((uint8_t)r->str[i]) != (uint8_t)s[i])
			return false;
	return true;
}

static bool int_in(const redisReply *r, long long lo, long long hi, int32_t *v)
{
	if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < lo || r->integer > hi)
		return false;
	*v = (int32_t)r->integer;
	return true;
}

static bool is_array(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_ARRAY && (r->elements == 0 || r->element != NULL);
}

/* The value of `name` in a flat [field, value, ...] array; NULL when absent or not such an array. */
static const redisReply *field(const redisReply *a, const char *name)
{
	if (!is_array(a) || a->elements % 2 != 0)
		return NULL;
	for (size_t i = 0; i < a->elements; i += 2)
		if (text_is(a->element[i], name))
			return a->element[i + 1];
	return NULL;
}

enum spec_read { SPEC_OK, SPEC_UNSURE, SPEC_BAD };

/* One key spec ([..., "flags", [...], "begin_search", [type, t, spec, [...]], "find_keys", [...]]).
 * SPEC_UNSURE: well formed, but Redis itself could not apply it (an "unknown" search or find, a
 * kind this module does not know, the "incomplete" flag). */
static enum spec_read read_spec(const redisReply *r, struct ks_spec *s)
{
	const redisReply *flags = field(r, "flags"), *bs = field(r, "begin_search"), *fk = field(r, "find_keys");
	const redisReply *bt = field(bs, "type"), *bsp = field(bs, "spec");
	const redisReply *ft = field(fk, "type"), *fsp = field(fk, "spec");
	bool unsure = false;

	memset(s, 0, sizeof(*s));
	if (!is_array(r) || r->elements % 2 != 0 || !is_text(bt) || !is_text(ft))
		return SPEC_BAD;
	if (flags != NULL) {
		if (!is_array(flags))
			return SPEC_BAD;
		for (size_t i = 0; i < flags->elements; i++) {
			if (!is_text(flags->element[i]))
				return SPEC_BAD;
			unsure |= text_is(flags->element[i], "incomplete");
		}
	}
	if (text_is(bt, "index")) {
		s->search = KS_INDEX;
		if (!int_in(field(bsp, "index"), 1, KS_POS_MAX, &s->start))
			return SPEC_BAD;
	} else if (text_is(bt, "keyword")) {
		const redisReply *kw = field(bsp, "keyword");
		s->search = KS_KEYWORD;
		if (!is_text(kw) || kw->len == 0 || kw->len >= KS_KEYWORD_MAX ||
		    !int_in(field(bsp, "startfrom"), -KS_POS_MAX, KS_POS_MAX, &s->start))
			return SPEC_BAD;
		for (size_t i = 0; i < kw->len; i++)
			s->keyword[i] = (char)lower((uint8_t)kw->str[i]);
		s->kwlen = (uint8_t)kw->len;
	} else {
		unsure = true;  /* "unknown", or a search newer than this module */
	}
	if (text_is(ft, "range")) {
		s->find = KS_RANGE;
		if (!int_in(field(fsp, "lastkey"), -KS_POS_MAX, KS_POS_MAX, &s->lastkey) ||
		    !int_in(field(fsp, "keystep"), 1, KS_POS_MAX, &s->step) ||
		    !int_in(field(fsp, "limit"), 0, KS_POS_MAX, &s->limit))
			return SPEC_BAD;
		if (s->lastkey < -1 && s->limit > 0)
			return SPEC_BAD;  /* a limit only divides "to the end" (Redis asserts lastkey == -1) */
	} else if (text_is(ft, "keynum")) {
		s->find = KS_KEYNUM;
		if (!int_in(field(fsp, "keynumidx"), 0, KS_POS_MAX, &s->numidx) ||
		    !int_in(field(fsp, "firstkey"), 0, KS_POS_MAX, &s->firstkey) ||
		    !int_in(field(fsp, "keystep"), 1, KS_POS_MAX, &s->step))
			return SPEC_BAD;
	} else {
		unsure = true;
	}
	return unsure ? SPEC_UNSURE : SPEC_OK;
}

/* arr (room for *cap elements of `size` bytes) with room for `need` > *cap: moved, or NULL (out of
 * memory; arr is still there). */
static void *grow(void *arr, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap != 0 ? *cap : 64;
	void *m;

	while (c < need)
		c *= 2;
	if ((m = realloc(arr, c * size)) == NULL)
		return NULL;
	*cap = c;
	return m;
}

/* A name into c->name, lower case: printable ASCII, and for a subcommand "parent|sub". */
static bool take_name(const redisReply *r, const struct ks_cmd *parent, struct ks_cmd *c)
{
	if (!is_text(r) || r->len == 0 || r->len >= KS_NAME_MAX)
		return false;
	for (size_t i = 0; i < r->len; i++) {
		uint8_t ch = (uint8_t)r->str[i];
		if (ch <= 0x20 || ch >= 0x7f)
			return false;
		c->name[i] = (char)lower(ch);
	}
	c->len = (uint8_t)r->len;
	if (parent == NULL)
		return memchr(c->name, '|', c->len) == NULL;
	return c->len > parent->len + 1 && memcmp(c->name, parent->name, parent->len) == 0 &&
	       c->name[parent->len] == '|' && memchr(c->name + parent->len + 1, '|', c->len - parent->len - 1) == NULL;
}

static bool has_flag(const redisReply *flags, const char *f)
{
	for (size_t i = 0; i < flags->elements; i++)
		if (text_is(flags->element[i], f))
			return true;
	return false;
}

/* One entry, and a top-level one's subcommands (Redis nests them one level deep). An entry that
 * cannot be read is counted and left out whole, with its subcommands. False: out of memory. */
static bool read_entry(struct keyspec *ks, const redisReply *e, const struct ks_cmd *parent)
{
	struct ks_cmd c;
	const redisReply *specs = NULL, *subs = NULL;
	bool unsure = false, legacy_ok;
	size_t spec0 = ks->nspecs;

	memset(&c, 0, sizeof(c));
	/* [name, arity, flags, first, last, step, acl_categories, tips, key_specs, subcommands]: 7.0
	 * has all ten, 6.x the first seven; key_specs and subcommands only when there. */
	if (!is_array(e) || e->elements < 6 || !take_name(e->element[0], parent, &c) ||
	    e->element[1] == NULL || e->element[1]->type != REDIS_REPLY_INTEGER || !is_array(e->element[2]) ||
	    !int_in(e->element[3], 0, KS_POS_MAX, &c.first) || !int_in(e->element[4], -KS_POS_MAX, KS_POS_MAX, &c.last) ||
	    !int_in(e->element[5], 0, KS_POS_MAX, &c.step))
		goto skip;
	if (e->elements >= 9 && !is_array(specs = e->element[8]))
		goto skip;
	if (e->elements >= 10 && !is_array(subs = e->element[9]))
		goto skip;
	if (subs != NULL && subs->elements > 0 && parent != NULL)
		goto skip;  /* a third level: nothing could look it up */
	if (ks->ncmds == KS_CMDS_MAX)
		goto skip;
	if (specs != NULL) {
		if (specs->elements > KS_SPECS_MAX)
			goto skip;
		if (ks->nspecs + specs->elements > ks->specs_cap) {
			struct ks_spec *m = grow(ks->specs, &ks->specs_cap, ks->nspecs + specs->elements, sizeof(*ks->specs));
			if (m == NULL)
				return false;
			ks->specs = m;
		}
		for (size_t i = 0; i < specs->elements; i++) {
			enum spec_read k = read_spec(specs->element[i], &ks->specs[ks->nspecs]);
			if (k == SPEC_BAD)
				goto skip;
			if (k == SPEC_UNSURE)
				unsure = true;
			else
				ks->nspecs++;
		}
	}
	legacy_ok = c.first > 0 && c.step > 0;
	if (subs != NULL && subs->elements > 0)
		c.mode = KS_CONTAINER;
	else if (unsure)
		c.mode = legacy_ok ? KS_LEGACY : KS_UNSURE;
	else if (ks->nspecs > spec0)
		c.mode = KS_SPECS;
	else if (legacy_ok)
		c.mode = KS_LEGACY;
	else
		/* No keys by either account -- unless flagged movablekeys (6.x's EVAL: 0 0 0, no specs). */
		c.mode = c.first == 0 && !has_flag(e->element[2], "movablekeys") ? KS_NONE : KS_UNSURE;
	if (c.mode == KS_SPECS) {
		c.spec0 = (uint32_t)spec0;
		c.nspecs = (uint8_t)(ks->nspecs - spec0);
	} else {
		ks->nspecs = spec0;  /* specs not used */
	}
	if (ks->ncmds == ks->cmds_cap) {
		struct ks_cmd *m = grow(ks->cmds, &ks->cmds_cap, ks->ncmds + 1, sizeof(*ks->cmds));
		if (m == NULL)
			return false;
		ks->cmds = m;
	}
	ks->cmds[ks->ncmds++] = c;
	if (c.mode == KS_CONTAINER) {
		/* c is a copy: cmds may move while its subcommands are added. */
		for (size_t i = 0; i < subs->elements; i++)
			if (!read_entry(ks, subs->element[i], &c))
				return false;
	}
	return true;
skip:
	ks->nspecs = spec0;
	ks->skipped++;
	return true;
}

static const struct ks_cmd *lookup(const struct keyspec *ks, const uint8_t *name, size_t len, const uint8_t *sub,
				   size_t sublen)
{
	size_t total = sub != NULL ? len + 1 + sublen : len;
	uint32_t h = hash_more(HASH_INIT, name, len);

	if (total >= KS_NAME_MAX)
		return NULL;
	if (sub != NULL)
		h = hash_more(hash_more(h, (const uint8_t *)"|", 1), sub, sublen);
	for (size_t i = h & ks->mask;; i = (i + 1) & ks->mask) {
		uint32_t e = ks->table[i];
		if (e == 0)
			return NULL;
		const struct ks_cmd *c = &ks->cmds[e - 1];
		if (c->len != total)
			continue;
		size_t k = 0;
		while (k < len && (uint8_t)c->name[k] == lower(name[k]))
			k++;
		if (k < len)
			continue;
		if (sub != NULL) {
			if (c->name[k++] != '|')
				continue;
			size_t j = 0;
			while (j < sublen && (uint8_t)c->name[k + j] == lower(sub[j]))
				j++;
			if (j < sublen)
				continue;
		}
		return c;
	}
}

static bool build_table(struct keyspec *ks)
{
	size_t cap = 16;

	while (cap < ks->ncmds * 2)
		cap *= 2;
	if ((ks->table = calloc(cap, sizeof(*ks->table))) == NULL)
		return false;
	ks->mask = cap - 1;
	for (size_t k = 0; k < ks->ncmds; k++) {
		struct ks_cmd *c = &ks->cmds[k];
		size_t i = hash_more(HASH_INIT, (const uint8_t *)c->name, c->len) & ks->mask;
		for (; ks->table[i] != 0; i = (i + 1) & ks->mask) {
			const struct ks_cmd *o = &ks->cmds[ks->table[i] - 1];
			if (o->len == c->len && memcmp(o->name, c->name, c->len) == 0)
				c->dup = true;
		}
		if (c->dup) {
			ks->skipped++;  /* the first entry of a name stands */
			continue;
		}
		ks->table[i] = (uint32_t)k + 1;
		ks->taken++;
	}
	return true;
}

struct keyspec *keyspec_from_command(const redisReply *r, char *why, size_t whylen)
{
	struct keyspec *ks;

	if (r == NULL || !is_array(r)) {
		snprintf(why, whylen, "COMMAND: %s", r != NULL && r->type == REDIS_REPLY_ERROR ? "an error reply" : "not an array");
		return NULL;
	}
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		goto oom;
	for (size_t i = 0; i < r->elements; i++)
		if (!read_entry(ks, r->element[i], NULL))
			goto oom;
	if (ks->ncmds == 0) {
		snprintf(why, whylen, "COMMAND: not one command entry could be read (%zu elements)", r->elements);
		keyspec_free(ks);
		return NULL;
	}
	if (!build_table(ks))
		goto oom;
	return ks;
oom:
	snprintf(why, whylen, "COMMAND: out of memory");
	keyspec_free(ks);
	return NULL;
}

void keyspec_free(struct keyspec *ks)
{
	if (ks == NULL)
		return;
	free(ks->cmds);
	free(ks->specs);
	free(ks->table);
	free(ks);
}

size_t keyspec_count(const struct keyspec *ks)
{
	return ks->taken;
}

size_t keyspec_skipped(const struct keyspec *ks)
{
	return ks->skipped;
}

/* ---- a command's keys ---- */

/* The arguments of a command whose framing was checked: the first KS_FAST_ARGS in place, later
 * ones walked to (key positions only ever go forward within one spec, so each spec walks at most
 * once over the command). */
struct ks_args {
	const uint8_t *p;
	size_t n, argc;
	size_t off[KS_FAST_ARGS], len[KS_FAST_ARGS];
	size_t far0;      /* where argument KS_FAST_ARGS starts */
	size_t far_i;     /* the walk: argument far_i starts at p[far_at] */
	size_t far_at;
};

/* The argument at p[*at] ("$<len>\r\n<bytes>\r\n", checked already): its bytes' offset, its length. */
static size_t next_arg(const uint8_t *p, size_t n, size_t *at, size_t *len)
{
	uint64_t v = 0;
	size_t off;

	*at += 1;
	(void)resp_length_line(p, n, at, n, &v);
	off = *at;
	*len = (size_t)v;
	*at += (size_t)v + 2;
	return off;
}

static const uint8_t *arg(struct ks_args *a, size_t i, size_t *len)
{
	size_t off;

	if (i < KS_FAST_ARGS) {
		*len = a->len[i];
		return a->p + a->off[i];
	}
	if (i < a->far_i) {
		a->far_i = KS_FAST_ARGS;
		a->far_at = a->far0;
	}
	for (;;) {
		off = next_arg(a->p, a->n, &a->far_at, len);
		if (a->far_i++ == i)
			return a->p + off;
	}
}

/* Argument i's slot into *slot (-1: none yet); false when that is a second slot. */
static bool add_key(struct ks_args *a, size_t i, int *slot)
{
	size_t len;
	const uint8_t *k = arg(a, i, &len);
	int s = slots_key_slot(k, len);

	if (*slot >= 0 && *slot != s)
		return false;
	*slot = s;
	return true;
}

static bool arg_is(struct ks_args *a, size_t i, const char *lowered, size_t n)
{
	size_t len;
	const uint8_t *s = arg(a, i, &len);

	if (len != n)
		return false;
	for (size_t k = 0; k < n; k++)
		if (lower(s[k]) != (uint8_t)lowered[k])
			return false;
	return true;
}

/* A count as Redis's string2ll reads it (no sign, no leading zero), at most `max`; -1 otherwise. */
static int64_t arg_count(struct ks_args *a, size_t i, int64_t max)
{
	size_t len;
	const uint8_t *s = arg(a, i, &len);
	int64_t v = 0;

	if (len == 0 || (len > 1 && s[0] == '0'))
		return -1;
	for (size_t k = 0; k < len; k++) {
		if (s[k] < '0' || s[k] > '9')
			return -1;
		v = v * 10 + (s[k] - '0');
		if (v > max)
			return -1;
	}
	return v;
}

/* Where a keyword spec's keys begin (after the keyword), 0 when the keyword is not there. Redis's
 * search: forwards from startfrom to the second last argument, or backwards from argc+startfrom to
 * argument 2 (startfrom 0 finds nothing) -- done forwards here, keeping the last match. */
static int64_t keyword_at(const struct ks_spec *s, struct ks_args *a)
{
	int64_t argc = (int64_t)a->argc, found = 0;

	if (s->start == 0)
		return 0;
	if (s->start > 0) {
		for (int64_t i = s->start; i <= argc - 2; i++)
			if (arg_is(a, (size_t)i, s->keyword, s->kwlen))
				return i + 1;
		return 0;
	}
	for (int64_t i = 2; i <= argc + s->start; i++)
		if (arg_is(a, (size_t)i, s->keyword, s->kwlen))
			found = i + 1;
	return found;
}

/* The keys of one spec into *slot: 0, KEYSPEC_CROSSSLOT, or KEYSPEC_BAD when the command's
 * arguments do not have the keys the spec says (Redis's "invalid spec": an arity or syntax error
 * there). A range "to the end" that starts past it is no keys (SUNSUBSCRIBE alone). */
static int spec_keys(const struct ks_spec *s, struct ks_args *a, int *slot)
{
	int64_t argc = (int64_t)a->argc, first, last, step = s->step;

	if (s->search == KS_INDEX)
		first = s->start;
	else if ((first = keyword_at(s, a)) == 0)
		return 0;
	if (s->find == KS_RANGE) {
		if (first >= argc)
			return s->lastkey < 0 ? 0 : KEYSPEC_BAD;
		if (s->lastkey >= 0)
			last = first + s->lastkey;
		else if (s->limit == 0)
			last = argc + s->lastkey;
		else
			last = first + (argc - first) / s->limit + s->lastkey;
	} else {
		int64_t idx = first + s->numidx, nkeys;
		if (idx >= argc || (nkeys = arg_count(a, (size_t)idx, argc)) < 0)
			return KEYSPEC_BAD;
		if (nkeys == 0)
			return 0;  /* EVAL s 0 */
		first += s->firstkey;
		last = first + (nkeys - 1) * step;
	}
	if (first >= argc || last >= argc || last < first)
		return KEYSPEC_BAD;
	for (int64_t i = first; i <= last; i += step)
		if (!add_key(a, (size_t)i, slot))
			return KEYSPEC_CROSSSLOT;
	return 0;
}

/* The legacy first/last/step (last absolute, or from the end when negative). */
static int legacy_keys(const struct ks_cmd *c, struct ks_args *a, int *slot)
{
	int64_t argc = (int64_t)a->argc, first = c->first, last = c->last < 0 ? argc + c->last : c->last;

	if (first >= argc)
		return c->last < 0 ? 0 : KEYSPEC_BAD;
	if (last >= argc)
		return KEYSPEC_BAD;
	for (int64_t i = first; i <= last; i += c->step)
		if (!add_key(a, (size_t)i, slot))
			return KEYSPEC_CROSSSLOT;
	return 0;
}

int keyspec_slot(const struct keyspec *ks, const uint8_t *p, size_t n)
{
	struct resp_request rq;
	struct ks_args a;
	const struct ks_cmd *c;
	const uint8_t *name;
	size_t len, at = 1;
	uint64_t count = 0;
	int slot = -1, k;

	if (resp_request(p, n, n, KS_ARGS_MAX, &rq, &len) != 1 || len != n)
		return KEYSPEC_BAD;
	if (ks == NULL)
		return KEYSPEC_UNKNOWN;
	(void)resp_length_line(p, n, &at, KS_ARGS_MAX, &count);  /* past "*<n>\r\n" */
	a.p = p;
	a.n = n;
	a.argc = (size_t)rq.nargs;
	for (size_t i = 0; i < a.argc && i < KS_FAST_ARGS; i++)
		a.off[i] = next_arg(p, n, &at, &a.len[i]);
	a.far0 = a.far_at = at;
	a.far_i = KS_FAST_ARGS;

	name = arg(&a, 0, &len);
	if ((c = lookup(ks, name, len, NULL, 0)) != NULL && c->mode == KS_CONTAINER) {
		size_t sublen;
		const uint8_t *sub;
		if (a.argc < 2)
			return KEYSPEC_NOKEYS;  /* OBJECT alone: the member says what is missing */
		sub = arg(&a, 1, &sublen);
		c = lookup(ks, name, len, sub, sublen);
	}
	if (c == NULL || c->mode == KS_UNSURE || c->mode == KS_CONTAINER)
		return KEYSPEC_UNKNOWN;
	if (c->mode == KS_NONE)
		return KEYSPEC_NOKEYS;
	if (c->mode == KS_LEGACY) {
		if ((k = legacy_keys(c, &a, &slot)) != 0)
			return k;
	} else {
		for (unsigned i = 0; i < c->nspecs; i++)
			if ((k = spec_keys(&ks->specs[c->spec0 + i], &a, &slot)) != 0)
				return k;
	}
	return slot >= 0 ? slot : KEYSPEC_NOKEYS;
}
