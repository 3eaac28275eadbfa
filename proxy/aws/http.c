/* aws/http.c - AWS API client: libcurl multi driven by libevent, SigV4 by libcurl, retries. */
#include "aws/http.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "log.h"
#include "util.h"

#define LOG_SUBJECT "aws"

/* ------------------------------------------------------------------------------------------------
 * Small text helpers
 * ---------------------------------------------------------------------------------------------- */

void aws_credentials_wipe(struct aws_credentials *c)
{
	/* explicit_bzero: a plain memset of a dying object may be optimized away. */
	if (c != NULL)
		explicit_bzero(c, sizeof(*c));
}

/* Index at which a copy of n bytes of s must stop so that no UTF-8 sequence is cut in half:
 * when s[n] is a continuation byte, the character it belongs to started before n. */
static size_t utf8_cut(const char *s, size_t n)
{
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

/* Copies n bytes of src into dst (size len, len > 0), cut safely, control characters blanked. */
static void copy_bytes(char *dst, size_t len, const char *src, size_t n)
{
	size_t i;

	if (n >= len)
		n = utf8_cut(src, len - 1);
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)src[i];
		/* Replies end up in logs and JSON status pages: no terminal escapes, no line breaks. */
		dst[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
	}
	dst[n] = '\0';
}

size_t aws_copy_text(char *dst, size_t len, const char *src)
{
	size_t n;

	if (src == NULL)
		src = "";
	n = strlen(src);
	if (len > 0)
		copy_bytes(dst, len, src, n);
	return n;
}

bool aws_valid_name(const char *s)
{
	size_t n = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; s[n] != '\0'; n++) {
		char ch = s[n];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
			return false;
	}
	return n <= 31;
}

/* ------------------------------------------------------------------------------------------------
 * Request building
 * ---------------------------------------------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (np == NULL) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_escaped(struct sbuf *b, const char *s)
{
	/* curl_easy_escape keeps exactly RFC 3986's unreserved set (ALPHA DIGIT - . _ ~), which is
	 * what SigV4's canonical form wants; since 7.82 it needs no handle. */
	char *e = curl_easy_escape(NULL, s, 0);

	if (e == NULL) {
		b->failed = true;
		return;
	}
	sb_str(b, e);
	curl_free(e);
}

char *aws_form_encode(const char *action, const char *version, const char *const *params)
{
	struct sbuf b = {0};
	const char *const *p;

	sb_str(&b, "Action=");
	sb_escaped(&b, action ? action : "");
	if (version != NULL) {
		sb_str(&b, "&Version=");
		sb_escaped(&b, version);
	}
	for (p = params; p != NULL && p[0] != NULL; p += 2) {
		if (p[1] == NULL) { /* odd list: a caller bug; refuse rather than send half a pair */
			free(b.p);
			return NULL;
		}
		sb_str(&b, "&");
		sb_escaped(&b, p[0]);
		sb_str(&b, "=");
		sb_escaped(&b, p[1]);
	}
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

bool aws_endpoint_url(const char *service, const char *region, char *buf, size_t len)
{
	const char *host = service;
	const char *suffix = "amazonaws.com";
	int n;

	if (!aws_valid_name(service) || !aws_valid_name(region))
		return false;
	/* The signing name and the endpoint prefix differ for MemoryDB. */
	if (strcmp(service, "memorydb") == 0)
		host = "memory-db";
	if (strncmp(region, "cn-", 3) == 0)
		suffix = "amazonaws.com.cn";
	n = snprintf(buf, len, "https://%s.%s.%s/", host, region, suffix);
	return n > 0 && (size_t)n < len;
}

/* ------------------------------------------------------------------------------------------------
 * XML helpers
 * ---------------------------------------------------------------------------------------------- */

static const void *find_bytes(const char *hay, size_t n, const char *needle)
{
	size_t m = strlen(needle);
	return m <= n ? memmem(hay, n, needle, m) : NULL;
}

xmlDocPtr aws_xml_read(const char *body, size_t len, char *err, size_t errlen)
{
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;

	if (body == NULL || len == 0) {
		snprintf(err, errlen, "empty reply");
		return NULL;
	}
	if (len > INT_MAX || len > AWS_MAX_RESPONSE_BYTES) {
		snprintf(err, errlen, "reply too large (%zu bytes)", len);
		return NULL;
	}
	/* A DTD is the only place entities can be declared; AWS never sends one. Refusing it outright
	 * closes the door on entity bombs and external entities whatever libxml2 would do with them. */
	if (find_bytes(body, len, "<!DOCTYPE") != NULL || find_bytes(body, len, "<!ENTITY") != NULL) {
		snprintf(err, errlen, "XML with a DTD refused");
		return NULL;
	}
	xmlInitParser();
	ctxt = xmlNewParserCtxt();
	if (ctxt == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* NONET: never fetch anything. Deliberately absent: NOENT (would substitute entities), DTDLOAD,
	 * DTDATTR, XINCLUDE, HUGE (keeps libxml2's limits on depth and node sizes), RECOVER. */
	doc = xmlCtxtReadMemory(ctxt, body, (int)len, NULL, NULL,
	                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (doc == NULL || !ctxt->wellFormed) {
		const xmlError *e = xmlCtxtGetLastError(ctxt);
		char msg[160];
		aws_copy_text(msg, sizeof(msg), e != NULL && e->message != NULL ? e->message : "parse error");
		for (size_t n = strlen(msg); n > 0 && msg[n - 1] == ' '; n--)
			msg[n - 1] = '\0';
		snprintf(err, errlen, "malformed XML (line %d): %s", e != NULL ? e->line : 0, msg);
		if (doc != NULL)
			xmlFreeDoc(doc);
		xmlFreeParserCtxt(ctxt);
		return NULL;
	}
	xmlFreeParserCtxt(ctxt);
	if (doc->intSubset != NULL || doc->extSubset != NULL) {
		snprintf(err, errlen, "XML with a DTD refused");
		xmlFreeDoc(doc);
		return NULL;
	}
	if (xmlDocGetRootElement(doc) == NULL) {
		snprintf(err, errlen, "XML without a root element");
		xmlFreeDoc(doc);
		return NULL;
	}
	return doc;
}

void aws_xml_free(xmlDocPtr doc)
{
	if (doc != NULL)
		xmlFreeDoc(doc);
}

xmlNodePtr aws_xml_root(xmlDocPtr doc)
{
	return doc != NULL ? xmlDocGetRootElement(doc) : NULL;
}

bool aws_xml_is(const xmlNode *node, const char *name)
{
	return node != NULL && node->type == XML_ELEMENT_NODE && node->name != NULL &&
	       strcmp((const char *)node->name, name) == 0;
}

const char *aws_xml_ns(const xmlNode *node)
{
	if (node == NULL || node->ns == NULL || node->ns->href == NULL)
		return "";
	return (const char *)node->ns->href;
}

xmlNodePtr aws_xml_next(xmlNodePtr node)
{
	for (node = node ? node->next : NULL; node != NULL; node = node->next)
		if (node->type == XML_ELEMENT_NODE)
			return node;
	return NULL;
}

xmlNodePtr aws_xml_first(xmlNodePtr parent)
{
	xmlNodePtr n;

	if (parent == NULL)
		return NULL;
	for (n = parent->children; n != NULL; n = n->next)
		if (n->type == XML_ELEMENT_NODE)
			return n;
	return NULL;
}

xmlNodePtr aws_xml_child(xmlNodePtr parent, const char *name, const char *ns)
{
	xmlNodePtr n;

	for (n = aws_xml_first(parent); n != NULL; n = aws_xml_next(n))
		if (aws_xml_is(n, name) && (ns == NULL || strcmp(aws_xml_ns(n), ns) == 0))
			return n;
	return NULL;
}

long aws_xml_text(const xmlNode *node, char *buf, size_t len)
{
	const xmlNode *c;
	size_t total = 0, used = 0;
	bool cut = false;

	if (node == NULL || node->type != XML_ELEMENT_NODE)
		return -1;
	if (len > 0)
		buf[0] = '\0';
	for (c = node->children; c != NULL; c = c->next) {
		const char *t;
		size_t n;

		if (c->type == XML_COMMENT_NODE || c->type == XML_PI_NODE)
			continue;
		/* Entity references are refused, not expanded: expanding them is what an entity bomb
		 * counts on (xmlNodeGetContent would do it). Nested elements mean the wrong shape. */
		if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE)
			return -1;
		t = (const char *)c->content;
		n = t ? strlen(t) : 0;
		total += n;
		if (len == 0 || cut)
			continue;
		if (used + n >= len) {
			copy_bytes(buf + used, len - used, t, n);
			used = strlen(buf);
			cut = true;
		} else {
			copy_bytes(buf + used, len - used, t, n);
			used += n;
		}
	}
	return total > LONG_MAX ? LONG_MAX : (long)total;
}

/* ------------------------------------------------------------------------------------------------
 * Errors and retries
 * ---------------------------------------------------------------------------------------------- */

static void strip_type(char *code)
{
	char *p;

	/* "com.amazonaws.memorydb#ClusterNotFoundFault" -> the part after '#';
	 * x-amzn-ErrorType "ClusterNotFoundFault:http://internal.amazon.com/..." -> before ':'. */
	p = strrchr(code, '#');
	if (p != NULL)
		memmove(code, p + 1, strlen(p + 1) + 1);
	p = strchr(code, ':');
	if (p != NULL)
		*p = '\0';
}

static bool parse_json_error(const char *body, size_t len, char *code, size_t codelen, char *msg,
                             size_t msglen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	const char *c = NULL, *m = NULL;
	const char *ckeys[] = {"__type", "code", "Code"};
	const char *mkeys[] = {"message", "Message", "errorMessage"};
	size_t i;

	if (root == NULL)
		return false;
	if (json_is_object(root)) {
		for (i = 0; i < ARRAY_LEN(ckeys) && c == NULL; i++)
			c = json_string_value(json_object_get(root, ckeys[i]));
		for (i = 0; i < ARRAY_LEN(mkeys) && m == NULL; i++)
			m = json_string_value(json_object_get(root, mkeys[i]));
	}
	aws_copy_text(code, codelen, c);
	aws_copy_text(msg, msglen, m);
	json_decref(root);
	if (codelen > 0)
		strip_type(code);
	return codelen > 0 && code[0] != '\0';
}

static bool parse_xml_error(const char *body, size_t len, char *code, size_t codelen, char *msg,
                            size_t msglen)
{
	char err[64];
	xmlDocPtr doc = aws_xml_read(body, len, err, sizeof(err));
	xmlNodePtr root, e = NULL;

	if (doc == NULL)
		return false;
	root = aws_xml_root(doc);
	/* Query services: <ErrorResponse><Error>; the EC2 flavour: <Response><Errors><Error>. */
	if (aws_xml_is(root, "ErrorResponse"))
		e = aws_xml_child(root, "Error", NULL);
	else if (aws_xml_is(root, "Response"))
		e = aws_xml_child(aws_xml_child(root, "Errors", NULL), "Error", NULL);
	else if (aws_xml_is(root, "Error"))
		e = root;
	if (e != NULL) {
		if (aws_xml_text(aws_xml_child(e, "Code", NULL), code, codelen) < 0 && codelen > 0)
			code[0] = '\0';
		if (aws_xml_text(aws_xml_child(e, "Message", NULL), msg, msglen) < 0 && msglen > 0)
			msg[0] = '\0';
	}
	aws_xml_free(doc);
	return e != NULL && codelen > 0 && code[0] != '\0';
}

bool aws_parse_error(enum aws_error_format fmt, const char *body, size_t len, char *code,
                     size_t codelen, char *msg, size_t msglen)
{
	if (codelen > 0)
		code[0] = '\0';
	if (msglen > 0)
		msg[0] = '\0';
	if (body == NULL || len == 0)
		return false;
	switch (fmt) {
	case AWS_ERRFMT_XML:
		return parse_xml_error(body, len, code, codelen, msg, msglen);
	case AWS_ERRFMT_JSON:
		return parse_json_error(body, len, code, codelen, msg, msglen);
	case AWS_ERRFMT_NONE:
		break;
	}
	return false;
}

bool aws_is_throttle_code(const char *code)
{
	/* The throttling codes of the services we call (RDS/STS "Throttling", ElastiCache
	 * "APICallRateForCustomerExceeded"(Fault), MemoryDB/JSON "ThrottlingException", EC2-style
	 * "RequestLimitExceeded") plus the few generic ones the SDKs also treat as throttles. */
	static const char *const codes[] = {
		"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
		"RequestLimitExceeded", "APICallRateForCustomerExceeded",
		"APICallRateForCustomerExceededFault", "TooManyRequestsException", "RequestThrottled",
		"SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
	};
	size_t i;

	if (code == NULL)
		return false;
	for (i = 0; i < ARRAY_LEN(codes); i++)
		if (strcmp(code, codes[i]) == 0)
			return true;
	return false;
}

static bool is_transient_code(const char *code)
{
	static const char *const codes[] = {
		"RequestTimeout", "RequestTimeoutException", "InternalFailure", "InternalError",
		"ServiceUnavailable", "IDPCommunicationError",
	};
	size_t i;

	for (i = 0; code != NULL && i < ARRAY_LEN(codes); i++)
		if (strcmp(code, codes[i]) == 0)
			return true;
	return false;
}

enum aws_retry_class aws_retry_classify(long status, bool transport_error, bool permanent_transport,
                                        const char *code)
{
	if (transport_error)
		return permanent_transport ? AWS_RETRY_NO : AWS_RETRY_TRANSIENT;
	if (status >= 200 && status < 300)
		return AWS_RETRY_NO;
	if (aws_is_throttle_code(code) || status == 429)
		return AWS_RETRY_THROTTLE;
	if (status >= 500 || is_transient_code(code))
		return AWS_RETRY_TRANSIENT;
	return AWS_RETRY_NO;
}

int64_t aws_backoff_ms(int retry, uint32_t rnd)
{
	int64_t ceil = AWS_BACKOFF_BASE_MS;
	int i;

	/* Full jitter (uniform in [0, min(cap, base * 2^retry)]): spreads the retries of many
	 * clients hit by the same throttle instead of having them return in lockstep. */
	for (i = 0; i < retry && ceil < AWS_BACKOFF_CAP_MS; i++)
		ceil *= 2;
	if (ceil > AWS_BACKOFF_CAP_MS)
		ceil = AWS_BACKOFF_CAP_MS;
	return (int64_t)(((uint64_t)rnd * (uint64_t)(ceil + 1)) >> 32);
}

/* ------------------------------------------------------------------------------------------------
 * The client
 * ---------------------------------------------------------------------------------------------- */

struct aws_sock {
	struct aws_http *h;
	curl_socket_t fd;
	struct event *ev;
	struct aws_sock *prev, *next;
};

struct aws_http {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;        /* curl's one timeout */
	struct aws_http_req *reqs;  /* every live request */
	struct aws_sock *socks;     /* every socket curl asked us to watch */
	int64_t timeout_ms;
	int max_attempts;
	char user_agent[64];
	aws_jitter_fn jitter;
	void *jitter_arg;
	struct aws_http_stats stats;
};

struct aws_http_req {
	struct aws_http *h;
	struct aws_http_req *prev, *next;
	aws_http_cb cb;
	void *arg;
	CURL *easy;                /* set while an attempt is in the multi */
	struct event *timer;       /* backoff, or delivery of an early failure */
	/* the request (owned copies) */
	char *method, *url, *body;
	size_t body_len;
	struct curl_slist *headers;
	char *sigv4;               /* "aws:amz:REGION:SERVICE" or NULL */
	char *username, *password; /* secrets: wiped on free */
	int64_t timeout_ms;
	int max_attempts;
	enum aws_error_format errfmt;
	bool no_proxy;
	char tag[96];
	int attempts;
	/* the current attempt's reply */
	char *resp;
	size_t resp_len, resp_cap;
	bool too_large;
	char curl_err[CURL_ERROR_SIZE];
	char hdr_errtype[128];
	char request_id[96];
	/* a failure found before any attempt (delivered from the timer) */
	bool early_fail;
	char code[128];
	char msg[512];
};

static void sock_free(struct aws_http *h, struct aws_sock *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		h->socks = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->ev)
		event_free(s->ev);
	free(s);
}

static void check_done(struct aws_http *h);

static void sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_sock *s = arg;
	struct aws_http *h = s->h; /* s may be freed inside socket_action */
	int action = 0, running;

	if (what & EV_READ)
		action |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(h->multi, fd, action, &running);
	check_done(h);
}

static int curl_sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct aws_http *h = userp;
	struct aws_sock *s = socketp;
	short flags = EV_PERSIST;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (s != NULL)
			sock_free(h, s);
		return 0;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -1;
		s->h = h;
		s->fd = fd;
		s->next = h->socks;
		if (h->socks)
			h->socks->prev = s;
		h->socks = s;
		curl_multi_assign(h->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		flags |= EV_READ;
	if (what & CURL_POLL_OUT)
		flags |= EV_WRITE;
	if (s->ev != NULL)
		event_free(s->ev);
	s->ev = event_new(h->base, fd, flags, sock_event_cb, s);
	if (s->ev == NULL || event_add(s->ev, NULL) != 0)
		return -1;
	return 0;
}

static void timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_http *h = arg;
	int running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct aws_http *h = userp;
	struct timeval tv;

	(void)multi;
	/* Never call socket_action from here (curl forbids the recursion): a 0 ms timer does it
	 * from the loop instead. */
	if (timeout_ms < 0) {
		evtimer_del(h->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

static uint32_t default_jitter(void *arg)
{
	(void)arg;
	return arc4random();
}

struct aws_http *aws_http_new(struct event_base *base, const struct aws_http_options *opts)
{
	struct aws_http *h;

	/* Thread-safe since curl 7.84 and idempotent; the matching cleanup is left to exit. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return NULL;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->base = base;
	h->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : AWS_DEFAULT_TIMEOUT_MS;
	h->max_attempts = opts && opts->max_attempts > 0 ? opts->max_attempts : AWS_DEFAULT_MAX_ATTEMPTS;
	aws_copy_text(h->user_agent, sizeof(h->user_agent),
	              opts && opts->user_agent ? opts->user_agent : "repoint");
	h->jitter = default_jitter;
	h->stats.last_backoff_ms = -1;
	h->multi = curl_multi_init();
	h->timer = evtimer_new(base, timer_event_cb, h);
	if (h->multi == NULL || h->timer == NULL) {
		aws_http_free(h);
		return NULL;
	}
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	return h;
}

struct event_base *aws_http_base(const struct aws_http *h)
{
	return h->base;
}

const struct aws_http_stats *aws_http_get_stats(const struct aws_http *h)
{
	return &h->stats;
}

void aws_http_set_jitter(struct aws_http *h, aws_jitter_fn fn, void *arg)
{
	h->jitter = fn ? fn : default_jitter;
	h->jitter_arg = arg;
}

static void wipe_free(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void req_detach_easy(struct aws_http_req *r)
{
	if (r->easy != NULL) {
		curl_multi_remove_handle(r->h->multi, r->easy);
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
	}
}

static void req_free(struct aws_http_req *r)
{
	struct aws_http *h = r->h;
	struct curl_slist *l;

	req_detach_easy(r);
	if (r->timer)
		event_free(r->timer);
	if (r->prev)
		r->prev->next = r->next;
	else
		h->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	/* Header lines may hold a session token. */
	for (l = r->headers; l != NULL; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(r->headers);
	wipe_free(r->username);
	wipe_free(r->password);
	free(r->method);
	free(r->url);
	if (r->body)
		explicit_bzero(r->body, r->body_len); /* STS bodies carry a web identity token */
	free(r->body);
	free(r->sigv4);
	if (r->resp)
		explicit_bzero(r->resp, r->resp_cap); /* credentials, secret values */
	free(r->resp);
	free(r);
}

void aws_http_cancel(struct aws_http_req *r)
{
	if (r != NULL)
		req_free(r);
}

void aws_http_free(struct aws_http *h)
{
	if (h == NULL)
		return;
	while (h->reqs != NULL)
		req_free(h->reqs);
	if (h->multi)
		curl_multi_cleanup(h->multi); /* may still report sockets as removed */
	while (h->socks != NULL)
		sock_free(h, h->socks);
	if (h->timer)
		event_free(h->timer);
	free(h);
}

static void count_code(struct aws_http *h, const char *code)
{
	struct aws_http_stats *st = &h->stats;
	char clean[64];
	size_t i;
	int k;

	for (i = 0; code[i] != '\0' && i < sizeof(clean) - 1; i++) {
		char ch = code[i];
		clean[i] = (isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-') ? ch : '_';
	}
	clean[i] = '\0';
	for (k = 0; k < st->ncodes; k++) {
		if (strcmp(st->codes[k].code, clean) == 0) {
			st->codes[k].count++;
			return;
		}
	}
	if (st->ncodes < AWS_STATS_CODES - 1) {
		k = st->ncodes++;
		snprintf(st->codes[k].code, sizeof(st->codes[k].code), "%s", clean);
		st->codes[k].count = 1;
		return;
	}
	/* The last slot is the overflow bucket. */
	k = AWS_STATS_CODES - 1;
	if (st->ncodes < AWS_STATS_CODES) {
		st->ncodes = AWS_STATS_CODES;
		snprintf(st->codes[k].code, sizeof(st->codes[k].code), "other");
		st->codes[k].count = 0;
	}
	st->codes[k].count++;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct aws_http_req *r = arg;
	size_t n = size * nmemb;

	if (r->resp_len + n > AWS_MAX_RESPONSE_BYTES) {
		r->too_large = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (r->resp_len + n + 1 > r->resp_cap) {
		size_t cap = r->resp_cap ? r->resp_cap : 4096;
		char *np;
		while (cap < r->resp_len + n + 1)
			cap *= 2;
		/* Not realloc: replies carry secrets (credentials, GetSecretValue), and the old block is
		 * wiped before it goes back to the allocator. */
		np = malloc(cap);
		if (np == NULL)
			return 0;
		if (r->resp != NULL) {
			memcpy(np, r->resp, r->resp_len + 1);
			explicit_bzero(r->resp, r->resp_cap);
			free(r->resp);
		}
		r->resp = np;
		r->resp_cap = cap;
	}
	memcpy(r->resp + r->resp_len, data, n);
	r->resp_len += n;
	r->resp[r->resp_len] = '\0';
	return n;
}

static bool header_is(const char *line, size_t n, const char *name, const char **value,
                      size_t *vlen)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return false;
	line += k + 1;
	n -= k + 1;
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	*value = line;
	*vlen = n;
	return true;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct aws_http_req *r = arg;
	size_t n = size * nmemb;
	const char *v;
	size_t vlen;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* a new response (after a 100 Continue, say): forget the previous one's headers */
		r->hdr_errtype[0] = '\0';
		r->request_id[0] = '\0';
	} else if (header_is(data, n, "x-amzn-ErrorType", &v, &vlen)) {
		copy_bytes(r->hdr_errtype, sizeof(r->hdr_errtype), v, vlen);
	} else if (header_is(data, n, "x-amzn-RequestId", &v, &vlen) ||
	           header_is(data, n, "x-amz-request-id", &v, &vlen)) {
		copy_bytes(r->request_id, sizeof(r->request_id), v, vlen);
	}
	return n;
}

static void req_set_early_fail(struct aws_http_req *r, const char *code, const char *msg)
{
	r->early_fail = true;
	aws_copy_text(r->code, sizeof(r->code), code);
	aws_copy_text(r->msg, sizeof(r->msg), msg);
}

static bool req_start(struct aws_http_req *r)
{
	struct aws_http *h = r->h;
	CURL *e;
	CURLcode rc = CURLE_OK;

	r->resp_len = 0;
	if (r->resp)
		r->resp[0] = '\0';
	r->too_large = false;
	r->curl_err[0] = '\0';
	r->hdr_errtype[0] = '\0';
	r->request_id[0] = '\0';

	e = curl_easy_init();
	if (e == NULL) {
		req_set_early_fail(r, "Internal", "curl_easy_init failed");
		return false;
	}
	rc |= curl_easy_setopt(e, CURLOPT_URL, r->url);
	rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err);
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
	rc |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	if (r->headers)
		rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	if (r->no_proxy)
		rc |= curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	if (strcmp(r->method, "GET") == 0) {
		rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else {
		/* POSTFIELDS (not an upload callback) so that libcurl can hash the payload for SigV4. */
		rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		if (strcmp(r->method, "POST") != 0)
			rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}
	if (r->sigv4) {
		rc |= curl_easy_setopt(e, CURLOPT_AWS_SIGV4, r->sigv4);
		/* USERNAME/PASSWORD rather than USERPWD "id:secret": nothing to split, nothing to
		 * misparse. libcurl only uses them to sign; they never travel. */
		rc |= curl_easy_setopt(e, CURLOPT_USERNAME, r->username);
		rc |= curl_easy_setopt(e, CURLOPT_PASSWORD, r->password);
	}
	if (rc != CURLE_OK) {
		curl_easy_cleanup(e);
		req_set_early_fail(r, "Internal", "curl_easy_setopt failed");
		return false;
	}
	if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		req_set_early_fail(r, "Internal", "curl_multi_add_handle failed");
		return false;
	}
	r->easy = e;
	r->attempts++;
	h->stats.attempts++;
	return true;
}

static void deliver(struct aws_http_req *r, const struct aws_response *resp)
{
	struct aws_http *h = r->h;

	if (!resp->ok)
		h->stats.failures++;
	r->cb(r->arg, resp);
	req_free(r);
}

static void deliver_early_fail(struct aws_http_req *r)
{
	struct aws_response resp = {
		.ok = false,
		.status = 0,
		.body = "",
		.body_len = 0,
		.error_code = r->code,
		.error_message = r->msg,
		.request_id = "",
		.attempts = r->attempts,
	};

	count_code(r->h, r->code);
	deliver(r, &resp);
}

static void req_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aws_http_req *r = arg;

	(void)fd;
	(void)what;
	if (r->early_fail || !req_start(r))
		deliver_early_fail(r);
}

static bool permanent_curl_error(CURLcode c)
{
	switch (c) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return true;
	default:
		return false;
	}
}

static void req_finished(struct aws_http_req *r, CURLcode res)
{
	struct aws_http *h = r->h;
	long status = 0;
	bool transport = res != CURLE_OK;
	bool permanent = false;
	char code[128] = "", msg[512] = "";
	enum aws_retry_class cls;
	struct aws_response resp;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	req_detach_easy(r);

	if (transport) {
		if (r->too_large) {
			snprintf(code, sizeof(code), "ResponseTooLarge");
			snprintf(msg, sizeof(msg), "reply larger than %u bytes", AWS_MAX_RESPONSE_BYTES);
			permanent = true;
		} else {
			snprintf(code, sizeof(code), "%s",
			         res == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "Transport");
			aws_copy_text(msg, sizeof(msg),
			              r->curl_err[0] ? r->curl_err : curl_easy_strerror(res));
			permanent = permanent_curl_error(res);
		}
	} else if (status < 200 || status >= 300) {
		if (!aws_parse_error(r->errfmt, r->resp, r->resp_len, code, sizeof(code), msg,
		                     sizeof(msg))) {
			if (r->hdr_errtype[0] != '\0') {
				aws_copy_text(code, sizeof(code), r->hdr_errtype);
				strip_type(code);
			}
			if (code[0] == '\0')
				snprintf(code, sizeof(code), "HTTP %ld", status);
		}
	}
	cls = aws_retry_classify(status, transport, permanent, code);
	if (code[0] != '\0')
		count_code(h, code);
	if (cls == AWS_RETRY_THROTTLE)
		h->stats.throttles++;

	if (cls != AWS_RETRY_NO && r->attempts < r->max_attempts) {
		int64_t delay = aws_backoff_ms(r->attempts - 1, h->jitter(h->jitter_arg));
		struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};

		h->stats.retries++;
		h->stats.last_backoff_ms = delay;
		char st[24] = "";

		if (status != 0 && strncmp(code, "HTTP ", 5) != 0)
			snprintf(st, sizeof(st), " (HTTP %ld)", status);
		log_info(LOG_SUBJECT, "%s: %s%s%s%s, attempt %d/%d, retrying in %lld ms", r->tag, code,
		         msg[0] ? ": " : "", msg, st, r->attempts, r->max_attempts, (long long)delay);
		if (evtimer_add(r->timer, &tv) == 0)
			return;
		/* could not arm the timer: fall through and hand back the error */
	}

	resp = (struct aws_response){
		.ok = !transport && status >= 200 && status < 300,
		.status = status,
		.body = r->resp ? r->resp : "",
		.body_len = r->resp_len,
		.error_code = code,
		.error_message = msg,
		.request_id = r->request_id,
		.attempts = r->attempts,
		.throttled = cls == AWS_RETRY_THROTTLE,
	};
	if (!resp.ok)
		log_debug(LOG_SUBJECT, "%s: %s (HTTP %ld) after %d attempt(s)", r->tag, code, status,
		          r->attempts);
	deliver(r, &resp);
}

static void check_done(struct aws_http *h)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
		void *p = NULL;
		CURLcode res;

		if (m->msg != CURLMSG_DONE)
			continue;
		res = m->data.result;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
		/* req_finished removes the handle (and with it the message) before any callback runs;
		 * callbacks may add or cancel other requests, which curl copes with between reads. */
		if (p != NULL)
			req_finished(p, res);
	}
}

static char *xstrdup(const char *s, bool *failed)
{
	char *d = strdup(s ? s : "");
	if (d == NULL)
		*failed = true;
	return d;
}

static bool header_ok(const char *line)
{
	/* A CR or LF in a header value would let a hostile value (a token from a file, say) add
	 * headers of its own. */
	return strpbrk(line, "\r\n") == NULL;
}

/* A request with nothing started yet, linked into the client. */
static struct aws_http_req *req_alloc(struct aws_http *h, aws_http_cb cb, void *arg,
                                      const char *tag)
{
	struct aws_http_req *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->h = h;
	r->cb = cb;
	r->arg = arg;
	r->timer = evtimer_new(h->base, req_timer_cb, r);
	if (r->timer == NULL) {
		free(r);
		return NULL;
	}
	r->next = h->reqs;
	if (h->reqs)
		h->reqs->prev = r;
	h->reqs = r;
	h->stats.requests++;
	aws_copy_text(r->tag, sizeof(r->tag), tag);
	return r;
}

/* Hands a failure found before any attempt to the callback, from the loop like any outcome. */
static struct aws_http_req *req_fail_soon(struct aws_http_req *r, const char *code, const char *msg)
{
	struct timeval zero = {0, 0};

	if (code != NULL)
		req_set_early_fail(r, code, msg);
	if (evtimer_add(r->timer, &zero) != 0) {
		req_free(r);
		return NULL;
	}
	return r;
}

struct aws_http_req *aws_http_send(struct aws_http *h, const struct aws_http_request *rq,
                                   aws_http_cb cb, void *arg)
{
	struct aws_http_req *r = req_alloc(h, cb, arg, rq->tag ? rq->tag : "request");
	bool failed = false;
	const char *const *hl;

	if (r == NULL)
		return NULL;
	r->method = xstrdup(rq->method ? rq->method : "GET", &failed);
	r->url = xstrdup(rq->url, &failed);
	r->timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : h->timeout_ms;
	r->max_attempts = rq->max_attempts > 0 ? rq->max_attempts : h->max_attempts;
	r->errfmt = rq->errfmt;
	r->no_proxy = rq->no_proxy;
	if (rq->body != NULL) {
		r->body = malloc(rq->body_len + 1);
		if (r->body != NULL) {
			memcpy(r->body, rq->body, rq->body_len);
			r->body[rq->body_len] = '\0';
			r->body_len = rq->body_len;
		} else {
			failed = true;
		}
	}
	for (hl = rq->headers; hl != NULL && *hl != NULL && !failed; hl++) {
		struct curl_slist *nl;
		if (!header_ok(*hl))
			return req_fail_soon(r, "InvalidRequest", "header with a line break refused");
		nl = curl_slist_append(r->headers, *hl);
		if (nl == NULL)
			failed = true;
		else
			r->headers = nl;
	}
	/* No "Expect:" header to suppress 100-continue: libcurl (7.88) would put the empty header
	 * among the SigV4 signed headers without sending it, and AWS would refuse the signature.
	 * Our bodies are far below the size at which libcurl asks for 100-continue anyway. */
	if ((rq->sigv4_region != NULL || rq->sigv4_service != NULL) && !failed) {
		const struct aws_credentials *c = rq->creds;
		char buf[96];

		if (!aws_valid_name(rq->sigv4_region) || !aws_valid_name(rq->sigv4_service))
			return req_fail_soon(r, "InvalidRequest", "bad region or service name for signing");
		if (c == NULL || c->access_key_id[0] == '\0' || c->secret_access_key[0] == '\0')
			return req_fail_soon(r, "NoCredentials", "no credentials to sign the request with");
		if (!header_ok(c->session_token) || strchr(c->access_key_id, ':') != NULL)
			return req_fail_soon(r, "InvalidRequest", "malformed credentials");
		snprintf(buf, sizeof(buf), "aws:amz:%s:%s", rq->sigv4_region, rq->sigv4_service);
		r->sigv4 = xstrdup(buf, &failed);
		r->username = xstrdup(c->access_key_id, &failed);
		r->password = xstrdup(c->secret_access_key, &failed);
		if (c->session_token[0] != '\0' && !failed) {
			static const char pfx[] = "X-Amz-Security-Token: ";
			size_t n = sizeof(pfx) + strlen(c->session_token);
			char *line = malloc(n);
			struct curl_slist *nl = NULL;
			if (line != NULL) {
				snprintf(line, n, "%s%s", pfx, c->session_token);
				nl = curl_slist_append(r->headers, line);
				explicit_bzero(line, n);
				free(line);
			}
			if (nl == NULL)
				failed = true;
			else
				r->headers = nl;
		}
	}
	if (failed)
		return req_fail_soon(r, "Internal", "out of memory");
	if (req_start(r))
		return r;
	return req_fail_soon(r, NULL, NULL); /* req_start recorded why */
}

struct aws_http_req *aws_http_call(struct aws_http *h, const struct aws_call *call, aws_http_cb cb,
                                   void *arg)
{
	char url[512], target[160], tag[96];
	char *body = NULL;
	const char *headers[4] = {NULL};
	struct aws_http_request rq = {0};
	struct aws_http_req *r;
	const char *bad = NULL;

	snprintf(tag, sizeof(tag), "%s %s", call->service ? call->service : "?",
	         call->action ? call->action : "?");
	if (call->endpoint_url != NULL && call->endpoint_url[0] != '\0') {
		if (strncmp(call->endpoint_url, "http://", 7) != 0 &&
		    strncmp(call->endpoint_url, "https://", 8) != 0)
			bad = "endpoint_url must start with http:// or https://";
		else if (snprintf(url, sizeof(url), "%s", call->endpoint_url) >= (int)sizeof(url))
			bad = "endpoint_url too long";
	} else if (!aws_endpoint_url(call->service, call->region, url, sizeof(url))) {
		bad = "bad region or service name";
	}
	if (call->action == NULL || call->action[0] == '\0')
		bad = "no action";

	rq.method = "POST";
	rq.url = url;
	rq.tag = tag;
	rq.timeout_ms = call->timeout_ms;
	rq.max_attempts = call->max_attempts;
	rq.creds = call->creds;
	if (call->creds != NULL) {
		rq.sigv4_region = call->region;
		rq.sigv4_service = call->service;
	}
	if (bad == NULL && call->target_prefix != NULL) {
		int n = snprintf(target, sizeof(target), "X-Amz-Target: %s.%s", call->target_prefix,
		                 call->action);
		if (n < 0 || (size_t)n >= sizeof(target))
			bad = "target too long";
		headers[0] = "Content-Type: application/x-amz-json-1.1";
		headers[1] = target;
		rq.body = call->json ? call->json : "{}";
		rq.body_len = strlen(rq.body);
		rq.errfmt = AWS_ERRFMT_JSON;
	} else if (bad == NULL) {
		body = aws_form_encode(call->action, call->version, call->params);
		if (body == NULL)
			bad = "cannot encode the parameters";
		headers[0] = "Content-Type: application/x-www-form-urlencoded; charset=utf-8";
		rq.body = body ? body : "";
		rq.body_len = strlen(rq.body);
		rq.errfmt = AWS_ERRFMT_XML;
	}
	rq.headers = headers;
	if (bad != NULL) {
		/* Still through the callback: a malformed call is an outcome like any other. */
		free(body);
		r = req_alloc(h, cb, arg, tag);
		return r ? req_fail_soon(r, "InvalidRequest", bad) : NULL;
	}
	r = aws_http_send(h, &rq, cb, arg);
	if (body != NULL) {
		explicit_bzero(body, strlen(body));
		free(body);
	}
	return r;
}
