/* proto/resp_cluster.c - what a cluster = on service answers itself (see proto.h).
 *
 * repoint shows a cluster-aware client one node that serves every slot -- itself -- so that the
 * client sends everything to the sidecar, and repoint routes by slot. The commands that ask about
 * the cluster are answered as such a node would; the dataset-wide and connection-state commands
 * repoint does not route yet get an error that says so, in order, instead of a wrong answer. */
#include "proto/proto.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "proto/resp_internal.h"
#include "proto/slots.h"

/* Commands without keys that one shard's primary answers for the whole cluster as well as any
 * other would (they read nothing of the data set, or, PUBLISH, the cluster bus carries them). */
bool resp_cluster_keyless_ok(const uint8_t *p, size_t n)
{
	static const char *const ok[] = {"ping", "echo", "time", "command", "info", "publish", "hello", "select",
					 "lastsave", "role", "lolwut"};
	struct resp_request rq;
	size_t len;

	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1)
		return false;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (resp_word_is(rq.arg[0], rq.arg_len[0], ok[i]))
			return true;
	return false;
}

int resp_command_len(const uint8_t *p, size_t n, size_t max, size_t *len)
{
	struct resp_request rq;

	return resp_request(p, n, max, 1u << 20, &rq, len);
}

static void bulk(struct evbuffer *out, const char *s)
{
	evbuffer_add_printf(out, "$%zu\r\n%s\r\n", strlen(s), s);
}

static void node_id(const struct resp_cluster_self *self, char id[41])
{
	/* Stable for a listener, 40 hex digits as a node id is: "repoint" in hex, then the port. */
	snprintf(id, 41, "7265706f696e74%026x", (unsigned)self->port);
}

void resp_cluster_answer(const uint8_t *p, size_t n, const struct resp_cluster_self *self, struct evbuffer *out)
{
	struct resp_request rq;
	size_t len;
	char id[41], text[600], name[40];

	node_id(self, id);
	if (resp_request(p, n, n, 1u << 20, &rq, &len) != 1 || rq.seen < 1) {
		resp_error(out, "ERR", "Protocol error: repoint reads commands as RESP arrays in cluster mode");
		return;
	}
	const uint8_t *a0 = rq.arg[0], *a1 = rq.seen >= 2 ? rq.arg[1] : NULL;
	size_t l0 = rq.arg_len[0], l1 = rq.seen >= 2 ? rq.arg_len[1] : 0;

	if (resp_word_is(a0, l0, "readonly") || resp_word_is(a0, l0, "readwrite") || resp_word_is(a0, l0, "asking")) {
		evbuffer_add(out, "+OK\r\n", 5);
		return;
	}
	if (resp_word_is(a0, l0, "select")) {
		resp_error(out, "ERR", "SELECT is not allowed in cluster mode");
		return;
	}
	if (resp_word_is(a0, l0, "cluster") && a1 != NULL) {
		if (resp_word_is(a1, l1, "slots") && rq.nargs == 2) {
			evbuffer_add_printf(out, "*1\r\n*3\r\n:0\r\n:%d\r\n*3\r\n", SLOTS_COUNT - 1);
			bulk(out, self->host);
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)self->port);
			bulk(out, id);
			return;
		}
		if (resp_word_is(a1, l1, "shards") && rq.nargs == 2) {
			evbuffer_add_printf(out, "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:%d\r\n$5\r\nnodes\r\n*1\r\n*14\r\n",
					    SLOTS_COUNT - 1);
			bulk(out, "id");
			bulk(out, id);
			bulk(out, "port");
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)self->port);
			bulk(out, "ip");
			bulk(out, self->host);
			bulk(out, "endpoint");
			bulk(out, self->host);
			bulk(out, "role");
			bulk(out, "master");
			bulk(out, "replication-offset");
			evbuffer_add(out, ":0\r\n", 4);
			bulk(out, "health");
			bulk(out, "online");
			return;
		}
		if (resp_word_is(a1, l1, "nodes") && rq.nargs == 2) {
			snprintf(text, sizeof(text), "%s %s:%u@%u myself,master - 0 0 1 connected 0-%d\n", id, self->host,
				 (unsigned)self->port, (unsigned)self->port, SLOTS_COUNT - 1);
			bulk(out, text);
			return;
		}
		if (resp_word_is(a1, l1, "info") && rq.nargs == 2) {
			snprintf(text, sizeof(text),
				 "cluster_state:ok\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\n"
				 "cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n"
				 "cluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
				 SLOTS_COUNT, SLOTS_COUNT);
			bulk(out, text);
			return;
		}
		if (resp_word_is(a1, l1, "myid") && rq.nargs == 2) {
			bulk(out, id);
			return;
		}
		if (resp_word_is(a1, l1, "keyslot") && rq.nargs == 3 && rq.seen == 3) {
			evbuffer_add_printf(out, ":%u\r\n", (unsigned)slots_key_slot(rq.arg[2], rq.arg_len[2]));
			return;
		}
	}
	/* The name, printable and short, for the error. */
	size_t k = 0;
	for (size_t i = 0; i < l0 && k + 1 < sizeof(name); i++)
		name[k++] = a0[i] >= 0x21 && a0[i] < 0x7f ? (char)a0[i] : '?';
	name[k] = '\0';
	if (a1 != NULL && resp_word_is(a0, l0, "cluster")) {
		snprintf(text, sizeof(text), "repoint serves the whole cluster as one node: CLUSTER %.*s is not answered",
			 (int)(l1 < 32 ? l1 : 32), (const char *)a1);
		for (char *c = text; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
	} else {
		snprintf(text, sizeof(text), "repoint does not route '%s' to a cluster's shards (cluster = on): "
					     "only commands on the keys of one slot, and a few without keys", name);
	}
	resp_error(out, "ERR", text);
}
