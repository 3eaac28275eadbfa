/* sources/cloud.c - parsers from AWS control-plane replies to a cluster view. No I/O. */
#include "sources/cloud.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <libxml/tree.h>

#include "aws/http.h"
#include "util.h"

#define RDS_NS "http://rds.amazonaws.com/doc/2014-10-31/"
#define EC_NS "http://elasticache.amazonaws.com/doc/2015-02-02/"

const char *cloud_kind_name(enum cloud_kind k)
{
	switch (k) {
	case CLOUD_NONE:
		return "none";
	case CLOUD_RDS:
		return "rds";
	case CLOUD_ELASTICACHE:
		return "elasticache";
	case CLOUD_ELASTICACHE_GLOBAL:
		return "elasticache-global";
	case CLOUD_MEMORYDB:
		return "memorydb";
	}
	return "?";
}

void cloud_view_init(struct cloud_view *v)
{
	memset(v, 0, sizeof(*v));
}

void cloud_view_free(struct cloud_view *v)
{
	free(v->members);
	free(v->groups);
	cloud_view_init(v);
}

int cloud_view_writer(const struct cloud_view *v)
{
	int i, w = -1;

	for (i = 0; i < v->nmembers; i++) {
		if (v->members[i].role != ROLE_WRITER)
			continue;
		if (w >= 0)
			return -1; /* two claim it: the view alone cannot say which */
		w = i;
	}
	return w;
}

int cloud_view_find(const struct cloud_view *v, const char *id)
{
	int i;

	for (i = 0; id != NULL && i < v->nmembers; i++)
		if (strcasecmp(v->members[i].id, id) == 0)
			return i;
	return -1;
}

/* ------------------------------------------------------------------------------------------------
 * Parse context, value checks
 * ---------------------------------------------------------------------------------------------- */

struct pctx {
	char *err;
	size_t errlen;
};

static bool fail(struct pctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(struct pctx *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, p->errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* How a string field is checked. Identifiers, host names and tokens are never truncated (a cut
 * identifier names something else): too long is an error. Free text is cut safely. */
enum fkind {
	F_TEXT,  /* status, engine, zone...: cut at a UTF-8 boundary when too long */
	F_ID,    /* identifiers: printable ASCII, no spaces */
	F_HOST,  /* DNS names and IP literals */
	F_TOKEN, /* pagination tokens: printable ASCII */
};

static bool valid_value(const char *s, enum fkind kind)
{
	const unsigned char *u = (const unsigned char *)s;

	switch (kind) {
	case F_TEXT:
		return true;
	case F_ID:
	case F_TOKEN:
		for (; *u; u++)
			if (*u <= 0x20 || *u >= 0x7f)
				return false;
		return true;
	case F_HOST:
		if (*u == '\0')
			return false;
		for (; *u; u++)
			if (!isalnum(*u) && *u != '.' && *u != '-' && *u != ':' && *u != '_')
				return false;
		return true;
	}
	return false;
}

/* Stores value (full length vlen) into dst per kind. */
static bool store(struct pctx *p, const char *what, const char *value, size_t vlen, enum fkind kind,
                  char *dst, size_t len)
{
	if (kind != F_TEXT && vlen >= len)
		return fail(p, "%s too long (%zu bytes)", what, vlen);
	if (kind == F_TEXT) {
		aws_copy_text(dst, len, value);
		return true;
	}
	if (!valid_value(value, kind))
		return fail(p, "%s has invalid characters", what);
	memcpy(dst, value, vlen + 1);
	return true;
}

static bool parse_port(struct pctx *p, const char *what, long long v, uint16_t *out)
{
	if (v < 1 || v > 65535)
		return fail(p, "%s %lld is not a port", what, v);
	*out = (uint16_t)v;
	return true;
}

/* ------------------------------------------------------------------------------------------------
 * Building views
 * ---------------------------------------------------------------------------------------------- */

static struct cloud_member *add_member(struct pctx *p, struct cloud_view *v)
{
	struct cloud_member *m;

	if (v->nmembers >= CLOUD_MAX_MEMBERS) {
		fail(p, "more than %d members", CLOUD_MAX_MEMBERS);
		return NULL;
	}
	m = realloc(v->members, (size_t)(v->nmembers + 1) * sizeof(*m));
	if (m == NULL) {
		fail(p, "out of memory");
		return NULL;
	}
	v->members = m;
	m = &v->members[v->nmembers++];
	memset(m, 0, sizeof(*m));
	m->role = ROLE_UNKNOWN;
	m->promotion_tier = -1;
	return m;
}

static struct cloud_group *add_group(struct pctx *p, struct cloud_view *v)
{
	struct cloud_group *g;

	if (v->ngroups >= CLOUD_MAX_GROUPS) {
		fail(p, "more than %d groups", CLOUD_MAX_GROUPS);
		return NULL;
	}
	g = realloc(v->groups, (size_t)(v->ngroups + 1) * sizeof(*g));
	if (g == NULL) {
		fail(p, "out of memory");
		return NULL;
	}
	v->groups = g;
	g = &v->groups[v->ngroups++];
	memset(g, 0, sizeof(*g));
	return g;
}

/* The new member's id must not repeat an earlier one: merges go by id. */
static bool unique_last(struct pctx *p, const struct cloud_view *v)
{
	const struct cloud_member *last = &v->members[v->nmembers - 1];
	int i;

	for (i = 0; i < v->nmembers - 1; i++)
		if (strcasecmp(v->members[i].id, last->id) == 0 &&
		    strcmp(v->members[i].node_id, last->node_id) == 0)
			return fail(p, "member '%s' appears twice", last->id);
	return true;
}

/* Replaces *v with *nv (which it takes over). */
static void commit(struct cloud_view *v, struct cloud_view *nv)
{
	cloud_view_free(v);
	*v = *nv;
}

/* For merges: a copy of v's members to change, so that a failed merge changes nothing. */
static struct cloud_member *dup_members(struct pctx *p, const struct cloud_view *v)
{
	struct cloud_member *m;

	m = malloc((size_t)(v->nmembers > 0 ? v->nmembers : 1) * sizeof(*m));
	if (m == NULL) {
		fail(p, "out of memory");
		return NULL;
	}
	if (v->nmembers > 0)
		memcpy(m, v->members, (size_t)v->nmembers * sizeof(*m));
	return m;
}

/* ------------------------------------------------------------------------------------------------
 * XML (Query protocol) access
 * ---------------------------------------------------------------------------------------------- */

struct xctx {
	struct pctx *p;
	const char *ns;
};

/* A leaf's text into dst, checked per kind. Absent: an error when required, else dst = "". */
static bool xstr(struct xctx *x, xmlNodePtr parent, const char *name, bool required,
                 enum fkind kind, char *dst, size_t len)
{
	xmlNodePtr n = aws_xml_child(parent, name, x->ns);
	char buf[1024];
	long l;

	dst[0] = '\0';
	if (n == NULL)
		return required ? fail(x->p, "<%s> missing", name) : true;
	l = aws_xml_text(n, buf, sizeof(buf) < len + 1 ? sizeof(buf) : len + 1);
	if (l < 0)
		return fail(x->p, "<%s> is not a text element", name);
	if (required && l == 0)
		return fail(x->p, "<%s> is empty", name);
	if (kind != F_TEXT && (size_t)l >= len)
		return fail(x->p, "<%s> too long (%ld bytes)", name, l);
	return store(x->p, name, buf, strlen(buf), kind, dst, len);
}

static bool xbool(struct xctx *x, xmlNodePtr parent, const char *name, bool required, bool *out)
{
	char b[8];

	if (!xstr(x, parent, name, required, F_TEXT, b, sizeof(b)))
		return false;
	if (b[0] == '\0' && !required)
		return true;
	if (strcmp(b, "true") == 0)
		*out = true;
	else if (strcmp(b, "false") == 0)
		*out = false;
	else
		return fail(x->p, "<%s> is not a boolean", name);
	return true;
}

/* An integer leaf in [lo, hi]. *present says whether it was there. */
static bool xint(struct xctx *x, xmlNodePtr parent, const char *name, long long lo, long long hi,
                 long long *out, bool *present)
{
	char b[24], *end;
	long long v;
	xmlNodePtr n = aws_xml_child(parent, name, x->ns);
	long l;

	*present = false;
	if (n == NULL)
		return true;
	l = aws_xml_text(n, b, sizeof(b));
	if (l < 0 || (size_t)l >= sizeof(b) || b[0] == '\0')
		return fail(x->p, "<%s> is not a number", name);
	v = strtoll(b, &end, 10);
	if (*end != '\0' || !(isdigit((unsigned char)b[0]) || b[0] == '-'))
		return fail(x->p, "<%s> is not a number", name);
	if (v < lo || v > hi)
		return fail(x->p, "<%s> %lld out of range", name, v);
	*out = v;
	*present = true;
	return true;
}

/* <NAME><Address/><Port/></NAME>; absent is fine (nodes being created have none). */
static bool xendpoint(struct xctx *x, xmlNodePtr parent, const char *name, char *host, size_t hlen,
                      uint16_t *port)
{
	xmlNodePtr e = aws_xml_child(parent, name, x->ns);
	long long v;
	bool present;

	host[0] = '\0';
	*port = 0;
	if (e == NULL)
		return true;
	if (!xstr(x, e, "Address", true, F_HOST, host, hlen))
		return false;
	if (!xint(x, e, "Port", -(1LL << 40), 1LL << 40, &v, &present))
		return false;
	if (present && !parse_port(x->p, name, v, port))
		return false;
	return true;
}

/* Opens a Query reply: <ActionResponse xmlns=NS><ActionResult>; returns the result element. An
 * <ErrorResponse> becomes "AWS error CODE: MESSAGE". */
static xmlNodePtr open_reply(struct pctx *p, const char *body, size_t len, const char *action,
                             const char *ns, xmlDocPtr *docp)
{
	char xerr[200], name[96];
	xmlDocPtr doc;
	xmlNodePtr root, res;

	*docp = NULL;
	doc = aws_xml_read(body, len, xerr, sizeof(xerr));
	if (doc == NULL) {
		fail(p, "%s", xerr);
		return NULL;
	}
	root = aws_xml_root(doc);
	if (aws_xml_is(root, "ErrorResponse")) {
		char code[96], msg[256];
		aws_parse_error(AWS_ERRFMT_XML, body, len, code, sizeof(code), msg, sizeof(msg));
		fail(p, "AWS error %s: %s", code[0] ? code : "(no code)", msg);
		aws_xml_free(doc);
		return NULL;
	}
	snprintf(name, sizeof(name), "%sResponse", action);
	if (!aws_xml_is(root, name)) {
		char got[64];
		aws_copy_text(got, sizeof(got), (const char *)root->name);
		fail(p, "unexpected reply <%s>, expected <%s>", got, name);
		aws_xml_free(doc);
		return NULL;
	}
	if (strcmp(aws_xml_ns(root), ns) != 0) {
		char got[96];
		aws_copy_text(got, sizeof(got), aws_xml_ns(root));
		fail(p, "unexpected namespace '%s' (expected %s)", got, ns);
		aws_xml_free(doc);
		return NULL;
	}
	snprintf(name, sizeof(name), "%sResult", action);
	res = aws_xml_child(root, name, ns);
	if (res == NULL) {
		fail(p, "<%s> missing", name);
		aws_xml_free(doc);
		return NULL;
	}
	*docp = doc;
	return res;
}

/* The list element `list` under parent, then the entry matching id (by idname) or the first. */
static xmlNodePtr pick_entry(struct xctx *x, xmlNodePtr parent, const char *list,
                             const char *idname, const char *id, const char *what)
{
	xmlNodePtr l = aws_xml_child(parent, list, x->ns), n;
	char got[128];

	if (l == NULL) {
		fail(x->p, "<%s> missing", list);
		return NULL;
	}
	for (n = aws_xml_first(l); n != NULL; n = aws_xml_next(n)) {
		if (id == NULL)
			return n;
		if (!xstr(x, n, idname, true, F_ID, got, sizeof(got)))
			return NULL;
		if (strcasecmp(got, id) == 0)
			return n;
	}
	if (id != NULL)
		fail(x->p, "%s '%s' not in the reply", what, id);
	else
		fail(x->p, "no %s in the reply", what);
	return NULL;
}

/* ------------------------------------------------------------------------------------------------
 * RDS
 * ---------------------------------------------------------------------------------------------- */

bool cloud_parse_rds_clusters(const char *body, size_t len, const char *cluster_id,
                              struct cloud_view *v, char *err, size_t errlen)
{
	struct pctx p = {err, errlen};
	struct xctx x = {&p, RDS_NS};
	struct cloud_view nv;
	xmlDocPtr doc;
	xmlNodePtr res, c, ml, m;
	long long port = 0;
	bool present, ok = false;

	cloud_view_init(&nv);
	res = open_reply(&p, body, len, "DescribeDBClusters", RDS_NS, &doc);
	if (res == NULL)
		return false;
	c = pick_entry(&x, res, "DBClusters", "DBClusterIdentifier", cluster_id, "DB cluster");
	if (c == NULL)
		goto out;
	nv.kind = CLOUD_RDS;
	if (!xstr(&x, c, "DBClusterIdentifier", true, F_ID, nv.id, sizeof(nv.id)) ||
	    !xstr(&x, c, "Status", true, F_TEXT, nv.status, sizeof(nv.status)) ||
	    !xstr(&x, c, "Engine", false, F_TEXT, nv.engine, sizeof(nv.engine)) ||
	    !xstr(&x, c, "EngineVersion", false, F_TEXT, nv.engine_version, sizeof(nv.engine_version)) ||
	    !xbool(&x, c, "MultiAZ", false, &nv.multi_az) ||
	    !xint(&x, c, "Port", -(1LL << 40), 1LL << 40, &port, &present))
		goto out;
	if (present && !parse_port(&p, "Port", port, &nv.port))
		goto out;
	if (aws_xml_child(c, "Endpoint", RDS_NS) != NULL &&
	    !xstr(&x, c, "Endpoint", false, F_HOST, nv.endpoint, sizeof(nv.endpoint)))
		goto out;
	ml = aws_xml_child(c, "DBClusterMembers", RDS_NS);
	for (m = aws_xml_first(ml); m != NULL; m = aws_xml_next(m)) {
		struct cloud_member *cm = add_member(&p, &nv);
		bool writer = false;
		long long tier;

		if (cm == NULL ||
		    !xstr(&x, m, "DBInstanceIdentifier", true, F_ID, cm->id, sizeof(cm->id)) ||
		    !xbool(&x, m, "IsClusterWriter", true, &writer) ||
		    !xint(&x, m, "PromotionTier", 0, 1000, &tier, &present) || !unique_last(&p, &nv))
			goto out;
		cm->role = writer ? ROLE_WRITER : ROLE_READER;
		if (present)
			cm->promotion_tier = (int)tier;
		cm->port = nv.port; /* every instance of a cluster listens on its port, until told */
	}
	ok = true;
out:
	aws_xml_free(doc);
	if (ok)
		commit(v, &nv);
	else
		cloud_view_free(&nv);
	return ok;
}

/* A page of per-member details (DescribeDBInstances, DescribeCacheClusters) to fill into a copy of
 * the members: the reply's <list> element, with its Marker in `token` and the copy in *mem. NULL on
 * error (reported; nothing left to free). */
static xmlNodePtr open_detail_page(struct xctx *x, const char *body, size_t len, const char *action,
                                   const char *list, const struct cloud_view *v, char *token, size_t toklen,
                                   xmlDocPtr *doc, struct cloud_member **mem)
{
	xmlNodePtr res = open_reply(x->p, body, len, action, x->ns, doc), l;

	*mem = NULL;
	if (res == NULL)
		return NULL;
	if (!xstr(x, res, "Marker", false, F_TOKEN, token, toklen))
		goto fail;
	l = aws_xml_child(res, list, x->ns);
	if (l == NULL) {
		fail(x->p, "<%s> missing", list);
		goto fail;
	}
	*mem = dup_members(x->p, v);
	if (*mem == NULL)
		goto fail;
	return l;
fail:
	aws_xml_free(*doc);
	*doc = NULL;
	return NULL;
}

/* The end of a detail page: the filled-in members and the page's token are kept if it all parsed. */
static bool close_detail_page(struct cloud_view *v, struct cloud_member *mem, const char *token, size_t toklen,
                              xmlDocPtr doc, bool ok)
{
	aws_xml_free(doc);
	if (ok) {
		free(v->members);
		v->members = mem;
		memcpy(v->next_token, token, toklen);
	} else {
		free(mem);
	}
	return ok;
}

bool cloud_parse_rds_instances(const char *body, size_t len, struct cloud_view *v, char *err,
                               size_t errlen)
{
	struct pctx p = {err, errlen};
	struct xctx x = {&p, RDS_NS};
	struct cloud_member *mem = NULL;
	char token[sizeof(v->next_token)];
	xmlDocPtr doc;
	xmlNodePtr l, n;
	bool ok = false;

	l = open_detail_page(&x, body, len, "DescribeDBInstances", "DBInstances", v, token, sizeof(token), &doc,
			     &mem);
	if (l == NULL)
		return false;
	for (n = aws_xml_first(l); n != NULL; n = aws_xml_next(n)) {
		char id[128], host[256], status[48], zone[32];
		uint16_t port;
		int i;

		if (!xstr(&x, n, "DBInstanceIdentifier", true, F_ID, id, sizeof(id)) ||
		    !xstr(&x, n, "DBInstanceStatus", false, F_TEXT, status, sizeof(status)) ||
		    !xstr(&x, n, "AvailabilityZone", false, F_TEXT, zone, sizeof(zone)) ||
		    !xendpoint(&x, n, "Endpoint", host, sizeof(host), &port))
			goto out;
		i = cloud_view_find(v, id);
		if (i < 0)
			continue; /* not a member of this cluster (an unfiltered listing) */
		if (host[0] != '\0') {
			memcpy(mem[i].host, host, sizeof(host));
			if (port != 0)
				mem[i].port = port;
		}
		memcpy(mem[i].status, status, sizeof(status));
		memcpy(mem[i].zone, zone, sizeof(zone));
	}
	ok = true;
out:
	return close_detail_page(v, mem, token, sizeof(token), doc, ok);
}

/* ------------------------------------------------------------------------------------------------
 * ElastiCache
 * ---------------------------------------------------------------------------------------------- */

static enum role ec_role(const char *r)
{
	if (strcasecmp(r, "primary") == 0)
		return ROLE_WRITER;
	if (strcasecmp(r, "replica") == 0 || strcasecmp(r, "secondary") == 0)
		return ROLE_READER;
	return ROLE_UNKNOWN;
}

bool cloud_parse_ec_replication_groups(const char *body, size_t len, const char *group_id,
                                       const char *shard, struct cloud_view *v, char *err,
                                       size_t errlen)
{
	struct pctx p = {err, errlen};
	struct xctx x = {&p, EC_NS};
	struct cloud_view nv;
	xmlDocPtr doc;
	xmlNodePtr res, rg, ngl, ng;
	char multi_az[16];
	bool ok = false, shard_found = false;

	cloud_view_init(&nv);
	res = open_reply(&p, body, len, "DescribeReplicationGroups", EC_NS, &doc);
	if (res == NULL)
		return false;
	rg = pick_entry(&x, res, "ReplicationGroups", "ReplicationGroupId", group_id,
	                "replication group");
	if (rg == NULL)
		goto out;
	nv.kind = CLOUD_ELASTICACHE;
	if (!xstr(&x, rg, "ReplicationGroupId", true, F_ID, nv.id, sizeof(nv.id)) ||
	    !xstr(&x, rg, "Status", true, F_TEXT, nv.status, sizeof(nv.status)) ||
	    !xstr(&x, rg, "Engine", false, F_TEXT, nv.engine, sizeof(nv.engine)) ||
	    !xbool(&x, rg, "ClusterEnabled", false, &nv.cluster_mode) ||
	    !xbool(&x, rg, "TransitEncryptionEnabled", false, &nv.tls) ||
	    !xstr(&x, rg, "MultiAZ", false, F_TEXT, multi_az, sizeof(multi_az)) ||
	    !xendpoint(&x, rg, "ConfigurationEndpoint", nv.endpoint, sizeof(nv.endpoint), &nv.port))
		goto out;
	if (nv.engine[0] == '\0') /* older replies do not say; the API then only served Redis */
		snprintf(nv.engine, sizeof(nv.engine), "redis");
	nv.multi_az = strcmp(multi_az, "enabled") == 0;
	ngl = aws_xml_child(rg, "NodeGroups", EC_NS);
	for (ng = aws_xml_first(ngl); ng != NULL; ng = aws_xml_next(ng)) {
		struct cloud_group g;
		xmlNodePtr ml, m;

		memset(&g, 0, sizeof(g));
		if (!xstr(&x, ng, "NodeGroupId", true, F_ID, g.id, sizeof(g.id)) ||
		    !xstr(&x, ng, "Status", false, F_TEXT, g.status, sizeof(g.status)) ||
		    !xendpoint(&x, ng, "PrimaryEndpoint", g.primary_host, sizeof(g.primary_host),
		               &g.primary_port))
			goto out;
		if (shard != NULL && strcmp(g.id, shard) != 0)
			continue;
		shard_found = true;
		ml = aws_xml_child(ng, "NodeGroupMembers", EC_NS);
		for (m = aws_xml_first(ml); m != NULL; m = aws_xml_next(m)) {
			struct cloud_member *cm = add_member(&p, &nv);
			char role[16];

			if (cm == NULL ||
			    !xstr(&x, m, "CacheClusterId", true, F_ID, cm->id, sizeof(cm->id)) ||
			    !xstr(&x, m, "CacheNodeId", false, F_ID, cm->node_id, sizeof(cm->node_id)) ||
			    !xendpoint(&x, m, "ReadEndpoint", cm->host, sizeof(cm->host), &cm->port) ||
			    !xstr(&x, m, "PreferredAvailabilityZone", false, F_TEXT, cm->zone,
			          sizeof(cm->zone)) ||
			    !xstr(&x, m, "CurrentRole", false, F_TEXT, role, sizeof(role)) ||
			    !unique_last(&p, &nv))
				goto out;
			memcpy(cm->group, g.id, sizeof(cm->group));
			memcpy(cm->status, g.status, sizeof(cm->status));
			/* CurrentRole exists only outside cluster mode. Without it, the node group's
			 * primary endpoint names the writer only if it is the node's own address;
			 * otherwise the probes decide. */
			if (role[0] != '\0')
				cm->role = ec_role(role);
			else if (g.primary_host[0] != '\0' && strcasecmp(g.primary_host, cm->host) == 0)
				cm->role = ROLE_WRITER;
			g.nmembers++;
		}
		{
			struct cloud_group *ng2 = add_group(&p, &nv);
			if (ng2 == NULL)
				goto out;
			*ng2 = g;
		}
	}
	if (shard != NULL && !shard_found) {
		fail(&p, "shard '%s' not in replication group '%s'", shard, nv.id);
		goto out;
	}
	ok = true;
out:
	aws_xml_free(doc);
	if (ok)
		commit(v, &nv);
	else
		cloud_view_free(&nv);
	return ok;
}

bool cloud_parse_ec_cache_clusters(const char *body, size_t len, struct cloud_view *v, char *err,
                                   size_t errlen)
{
	struct pctx p = {err, errlen};
	struct xctx x = {&p, EC_NS};
	struct cloud_member *mem = NULL;
	char token[sizeof(v->next_token)];
	xmlDocPtr doc;
	xmlNodePtr l, cc;
	bool ok = false;

	l = open_detail_page(&x, body, len, "DescribeCacheClusters", "CacheClusters", v, token, sizeof(token), &doc,
			     &mem);
	if (l == NULL)
		return false;
	for (cc = aws_xml_first(l); cc != NULL; cc = aws_xml_next(cc)) {
		char id[128], cstatus[48];
		xmlNodePtr nl, n;

		if (!xstr(&x, cc, "CacheClusterId", true, F_ID, id, sizeof(id)) ||
		    !xstr(&x, cc, "CacheClusterStatus", false, F_TEXT, cstatus, sizeof(cstatus)))
			goto out;
		nl = aws_xml_child(cc, "CacheNodes", EC_NS);
		for (n = aws_xml_first(nl); n != NULL; n = aws_xml_next(n)) {
			char node[16], status[48], zone[32], host[256];
			uint16_t port;
			int i;

			if (!xstr(&x, n, "CacheNodeId", true, F_ID, node, sizeof(node)) ||
			    !xstr(&x, n, "CacheNodeStatus", false, F_TEXT, status, sizeof(status)) ||
			    !xstr(&x, n, "CustomerAvailabilityZone", false, F_TEXT, zone, sizeof(zone)) ||
			    !xendpoint(&x, n, "Endpoint", host, sizeof(host), &port))
				goto out;
			for (i = 0; i < v->nmembers; i++) {
				struct cloud_member *m = &mem[i];
				if (strcasecmp(m->id, id) != 0 ||
				    (m->node_id[0] != '\0' && strcmp(m->node_id, node) != 0))
					continue;
				if (host[0] != '\0') {
					memcpy(m->host, host, sizeof(host));
					m->port = port;
				}
				memcpy(m->status, status[0] ? status : cstatus, sizeof(status));
				if (zone[0] != '\0')
					memcpy(m->zone, zone, sizeof(zone));
			}
		}
	}
	ok = true;
out:
	return close_detail_page(v, mem, token, sizeof(token), doc, ok);
}

bool cloud_parse_ec_global_groups(const char *body, size_t len, const char *global_id,
                                  struct cloud_view *v, char *err, size_t errlen)
{
	struct pctx p = {err, errlen};
	struct xctx x = {&p, EC_NS};
	struct cloud_view nv;
	xmlDocPtr doc;
	xmlNodePtr res, g, ml, m;
	bool ok = false;

	cloud_view_init(&nv);
	res = open_reply(&p, body, len, "DescribeGlobalReplicationGroups", EC_NS, &doc);
	if (res == NULL)
		return false;
	g = pick_entry(&x, res, "GlobalReplicationGroups", "GlobalReplicationGroupId", global_id,
	               "global datastore");
	if (g == NULL)
		goto out;
	nv.kind = CLOUD_ELASTICACHE_GLOBAL;
	if (!xstr(&x, g, "GlobalReplicationGroupId", true, F_ID, nv.id, sizeof(nv.id)) ||
	    !xstr(&x, g, "Status", true, F_TEXT, nv.status, sizeof(nv.status)) ||
	    !xstr(&x, g, "Engine", false, F_TEXT, nv.engine, sizeof(nv.engine)) ||
	    !xstr(&x, g, "EngineVersion", false, F_TEXT, nv.engine_version,
	          sizeof(nv.engine_version)) ||
	    !xbool(&x, g, "ClusterEnabled", false, &nv.cluster_mode))
		goto out;
	ml = aws_xml_child(g, "Members", EC_NS);
	if (ml == NULL) {
		fail(&p, "<Members> missing (ShowMemberInfo=true not set?)");
		goto out;
	}
	for (m = aws_xml_first(ml); m != NULL; m = aws_xml_next(m)) {
		struct cloud_member *cm = add_member(&p, &nv);
		char role[16];

		if (cm == NULL ||
		    !xstr(&x, m, "ReplicationGroupId", true, F_ID, cm->id, sizeof(cm->id)) ||
		    !xstr(&x, m, "ReplicationGroupRegion", true, F_ID, cm->region, sizeof(cm->region)) ||
		    !xstr(&x, m, "Role", false, F_TEXT, role, sizeof(role)) ||
		    !xstr(&x, m, "Status", false, F_TEXT, cm->status, sizeof(cm->status)) ||
		    !unique_last(&p, &nv))
			goto out;
		if (!aws_valid_name(cm->region)) {
			fail(&p, "ReplicationGroupRegion '%s' is not a region", cm->region);
			goto out;
		}
		memcpy(cm->group, cm->id, sizeof(cm->group) - 1);
		cm->group[sizeof(cm->group) - 1] = '\0';
		cm->role = ec_role(role);
	}
	ok = true;
out:
	aws_xml_free(doc);
	if (ok)
		commit(v, &nv);
	else
		cloud_view_free(&nv);
	return ok;
}

/* ------------------------------------------------------------------------------------------------
 * MemoryDB (JSON 1.1)
 * ---------------------------------------------------------------------------------------------- */

static bool jstr(struct pctx *p, json_t *obj, const char *key, bool required, enum fkind kind,
                 char *dst, size_t len)
{
	json_t *s = json_object_get(obj, key);

	dst[0] = '\0';
	if (s == NULL || json_is_null(s))
		return required ? fail(p, "\"%s\" missing", key) : true;
	if (!json_is_string(s))
		return fail(p, "\"%s\" is not a string", key);
	if (required && json_string_length(s) == 0)
		return fail(p, "\"%s\" is empty", key);
	return store(p, key, json_string_value(s), json_string_length(s), kind, dst, len);
}

static bool jendpoint(struct pctx *p, json_t *obj, const char *key, char *host, size_t hlen,
                      uint16_t *port)
{
	json_t *e = json_object_get(obj, key), *jp;

	host[0] = '\0';
	*port = 0;
	if (e == NULL || json_is_null(e))
		return true;
	if (!json_is_object(e))
		return fail(p, "\"%s\" is not an object", key);
	if (!jstr(p, e, "Address", true, F_HOST, host, hlen))
		return false;
	jp = json_object_get(e, "Port");
	if (jp == NULL || json_is_null(jp))
		return true;
	if (!json_is_integer(jp))
		return fail(p, "\"%s\".Port is not an integer", key);
	return parse_port(p, "Port", json_integer_value(jp), port);
}

static json_t *jarray(struct pctx *p, json_t *obj, const char *key, bool required)
{
	json_t *a = json_object_get(obj, key);

	if (a == NULL || json_is_null(a)) {
		if (required)
			fail(p, "\"%s\" missing", key);
		return NULL;
	}
	if (!json_is_array(a)) {
		fail(p, "\"%s\" is not an array", key);
		return NULL;
	}
	return a;
}

bool cloud_parse_memorydb_clusters(const char *body, size_t len, const char *name,
                                   const char *shard, struct cloud_view *v, char *err,
                                   size_t errlen)
{
	struct pctx p = {err, errlen};
	struct cloud_view nv;
	json_error_t jerr;
	json_t *root, *clusters, *c = NULL, *shards;
	char mode[16];
	size_t i, j;
	bool ok = false, shard_found = false;

	cloud_view_init(&nv);
	if (body == NULL || len == 0)
		return fail(&p, "empty reply");
	/* Duplicate keys are refused: which one a reader keeps is exactly the kind of ambiguity a
	 * hostile reply would play with. jansson also refuses invalid UTF-8, NULs in strings, and
	 * nesting deeper than its limit. */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return fail(&p, "malformed JSON (line %d): %.100s", jerr.line, jerr.text);
	if (!json_is_object(root)) {
		fail(&p, "reply is not a JSON object");
		goto out;
	}
	if (json_object_get(root, "__type") != NULL) {
		char code[96], msg[256];
		aws_parse_error(AWS_ERRFMT_JSON, body, len, code, sizeof(code), msg, sizeof(msg));
		fail(&p, "AWS error %s: %s", code[0] ? code : "(no code)", msg);
		goto out;
	}
	clusters = jarray(&p, root, "Clusters", true);
	if (clusters == NULL)
		goto out;
	for (i = 0; i < json_array_size(clusters); i++) {
		json_t *e = json_array_get(clusters, i);
		json_t *n = json_object_get(e, "Name");

		if (!json_is_object(e)) {
			fail(&p, "Clusters[%zu] is not an object", i);
			goto out;
		}
		if (name == NULL || (json_is_string(n) && strcasecmp(json_string_value(n), name) == 0)) {
			c = e;
			break;
		}
	}
	if (c == NULL) {
		if (name != NULL)
			fail(&p, "cluster '%s' not in the reply", name);
		else
			fail(&p, "no cluster in the reply");
		goto out;
	}
	nv.kind = CLOUD_MEMORYDB;
	nv.cluster_mode = true;
	if (!jstr(&p, c, "Name", true, F_ID, nv.id, sizeof(nv.id)) ||
	    !jstr(&p, c, "Status", true, F_TEXT, nv.status, sizeof(nv.status)) ||
	    !jstr(&p, c, "Engine", false, F_TEXT, nv.engine, sizeof(nv.engine)) ||
	    !jstr(&p, c, "EngineVersion", false, F_TEXT, nv.engine_version,
	          sizeof(nv.engine_version)) ||
	    !jstr(&p, c, "AvailabilityMode", false, F_TEXT, mode, sizeof(mode)) ||
	    !jendpoint(&p, c, "ClusterEndpoint", nv.endpoint, sizeof(nv.endpoint), &nv.port) ||
	    !jstr(&p, root, "NextToken", false, F_TOKEN, nv.next_token, sizeof(nv.next_token)))
		goto out;
	if (nv.engine[0] == '\0')
		snprintf(nv.engine, sizeof(nv.engine), "redis");
	nv.multi_az = strcmp(mode, "multiaz") == 0;
	nv.tls = json_is_true(json_object_get(c, "TLSEnabled"));
	shards = jarray(&p, c, "Shards", false);
	if (shards == NULL && json_object_get(c, "Shards") != NULL)
		goto out; /* present but not an array */
	for (i = 0; shards != NULL && i < json_array_size(shards); i++) {
		json_t *s = json_array_get(shards, i), *nodes;
		struct cloud_group g;

		memset(&g, 0, sizeof(g));
		if (!json_is_object(s)) {
			fail(&p, "Shards[%zu] is not an object", i);
			goto out;
		}
		if (!jstr(&p, s, "Name", true, F_ID, g.id, sizeof(g.id)) ||
		    !jstr(&p, s, "Status", false, F_TEXT, g.status, sizeof(g.status)))
			goto out;
		if (shard != NULL && strcmp(g.id, shard) != 0)
			continue;
		shard_found = true;
		nodes = jarray(&p, s, "Nodes", false);
		if (nodes == NULL && json_object_get(s, "Nodes") != NULL)
			goto out;
		for (j = 0; nodes != NULL && j < json_array_size(nodes); j++) {
			json_t *nd = json_array_get(nodes, j);
			struct cloud_member *cm;

			if (!json_is_object(nd)) {
				fail(&p, "Shards[%zu].Nodes[%zu] is not an object", i, j);
				goto out;
			}
			cm = add_member(&p, &nv);
			if (cm == NULL || !jstr(&p, nd, "Name", true, F_ID, cm->id, sizeof(cm->id)) ||
			    !jstr(&p, nd, "Status", false, F_TEXT, cm->status, sizeof(cm->status)) ||
			    !jstr(&p, nd, "AvailabilityZone", false, F_TEXT, cm->zone, sizeof(cm->zone)) ||
			    !jendpoint(&p, nd, "Endpoint", cm->host, sizeof(cm->host), &cm->port) ||
			    !unique_last(&p, &nv))
				goto out;
			memcpy(cm->group, g.id, sizeof(cm->group));
			/* MemoryDB's API names no primary: ROLE_UNKNOWN, the probes decide. */
			g.nmembers++;
		}
		{
			struct cloud_group *ng = add_group(&p, &nv);
			if (ng == NULL)
				goto out;
			*ng = g;
		}
	}
	if (shard != NULL && !shard_found) {
		fail(&p, "shard '%s' not in cluster '%s'", shard, nv.id);
		goto out;
	}
	ok = true;
out:
	json_decref(root);
	if (ok)
		commit(v, &nv);
	else
		cloud_view_free(&nv);
	return ok;
}
