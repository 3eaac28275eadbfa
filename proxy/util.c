/* util.c - clocks, durations, addresses. */
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_ms_coarse(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	double v, scale;

	if (s == NULL || !isdigit((unsigned char)*s))
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s)
		return false;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		scale = 1;
	else if (strcmp(end, "s") == 0)
		scale = 1000;
	else if (strcmp(end, "m") == 0)
		scale = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		scale = 3600 * 1000;
	else
		return false;
	v *= scale;
	if (!isfinite(v) || v < 0 || v > 24.0 * 3600 * 1000)
		return false;
	*out = (int64_t)llround(v);
	return true;
}

bool parse_hostport(const char *s, struct hostport *out, char *err, size_t errlen)
{
	const char *host, *colon, *portstr;
	size_t hostlen;
	char *end;
	long port;

	if (s == NULL || *s == '\0') {
		snprintf(err, errlen, "empty address");
		return false;
	}
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':') {
			snprintf(err, errlen, "expected [IPv6]:PORT, got '%s'", s);
			return false;
		}
		host = s + 1;
		hostlen = (size_t)(close - host);
		portstr = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			snprintf(err, errlen, "expected HOST:PORT, got '%s'", s);
			return false;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			snprintf(err, errlen, "IPv6 addresses need brackets: [ADDR]:PORT, got '%s'", s);
			return false;
		}
		host = s;
		hostlen = (size_t)(colon - s);
		portstr = colon + 1;
	}
	if (hostlen == 0) {
		snprintf(err, errlen,
			 "no host in '%s': write 127.0.0.1:%s for this machine only, 0.0.0.0:%s for every IPv4 "
			 "address or [::]:%s for every address", s, portstr, portstr, portstr);
		return false;
	}
	if (hostlen >= sizeof(out->host)) {
		snprintf(err, errlen, "bad host in '%s'", s);
		return false;
	}
	for (size_t i = 0; i < hostlen; i++) {
		unsigned char c = (unsigned char)host[i];
		if (!(isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '%')) {
			snprintf(err, errlen, "bad character in host of '%s'", s);
			return false;
		}
	}
	errno = 0;
	port = strtol(portstr, &end, 10);
	if (*portstr == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535) {
		snprintf(err, errlen, "port must be 1-65535 in '%s'", s);
		return false;
	}
	memcpy(out->host, host, hostlen);
	out->host[hostlen] = '\0';
	out->port = (uint16_t)port;
	return true;
}

const char *hostport_str(const struct hostport *hp, char *buf, size_t len)
{
	if (strchr(hp->host, ':') != NULL)
		snprintf(buf, len, "[%s]:%u", hp->host, hp->port);
	else
		snprintf(buf, len, "%s:%u", hp->host, hp->port);
	return buf;
}

char *str_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

size_t utf8_prefix_len(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return n;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

bool sqlstate_valid(const char *st)
{
	if (st == NULL || strlen(st) != 5)
		return false;
	for (int i = 0; i < 5; i++) {
		char c = st[i];
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')))
			return false;
	}
	return true;
}

void str_oneline(char *dst, size_t len, const char *src)
{
	size_t n = 0;
	bool space = false;

	if (len == 0)
		return;
	for (; src != NULL && *src != '\0' && *src != '\n' && n + 1 < len; src++) {
		if (*src == ' ' || *src == '\t' || *src == '\r') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < len)
			dst[n++] = ' ';
		space = false;
		dst[n++] = *src;
	}
	dst[n] = '\0';
}

void str_printable(char *dst, size_t len, const char *src)
{
	size_t n;

	str_oneline(dst, len, src);
	for (n = 0; dst[n] != '\0'; n++)
		if ((unsigned char)dst[n] < 0x20 || (unsigned char)dst[n] > 0x7e)
			dst[n] = '?';
	if (src != NULL && n + 1 == len && len > 4 && strlen(src) > n)
		memcpy(dst + n - 3, "...", 3);
}

const double hist_bounds[HIST_NBOUNDS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
					  0.25,  0.5,    1,     2.5,  5,     10,   30};

void hist_observe(struct histogram *h, double seconds)
{
	int i = 0;

	if (seconds < 0)
		seconds = 0;
	while (i < HIST_NBOUNDS && seconds > hist_bounds[i])
		i++;
	h->buckets[i]++;
	h->count++;
	h->sum += seconds;
}

bool host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

bool bytes_append(uint8_t **buf, uint32_t *len, uint32_t *cap, const uint8_t *p, size_t n, uint32_t first,
		  uint32_t max)
{
	if (n > max || *len > max - n)
		return false;
	if (*len + n > *cap) {
		size_t c = *cap ? *cap : (first ? first : 1);
		uint8_t *b;
		while (c < *len + n)
			c *= 2;
		if (c > max)
			c = max;
		if ((b = realloc(*buf, c)) == NULL)
			return false;
		*buf = b;
		*cap = (uint32_t)c;
	}
	if (n > 0)
		memcpy(*buf + *len, p, n);
	*len += (uint32_t)n;
	return true;
}
