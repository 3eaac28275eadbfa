/* drill/svg.c - the timeline picture of a drill result. */
#include "drill/svg.h"
#include "drill/report.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#define SVG_W 1000
#define SVG_LEFT 70
#define SVG_RIGHT 30
#define SVG_PLOT_W (SVG_W - SVG_LEFT - SVG_RIGHT)
#define SVG_CHART_H 180        /* successes up, errors down, around a middle baseline */
#define SVG_ROW_H 12           /* one strip per client */
#define SVG_LEGEND_ROW 17
#define SVG_NUM_ROWS 6         /* heights for the event numbers on the chart */
#define SVG_MAX_NUMS 64

/* Text goes into the document escaped: messages and addresses come from servers. */
static void svg_text(FILE *out, const char *s)
{
	for (; s != NULL && *s != '\0'; s++) {
		switch (*s) {
		case '&': fputs("&amp;", out); break;
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '"': fputs("&quot;", out); break;
		case '\'': fputs("&#39;", out); break;
		default:
			/* XML 1.0 forbids most control characters. */
			if ((unsigned char)*s >= 0x20 || *s == '\t')
				fputc(*s, out);
			break;
		}
	}
}

/* At most max bytes of s (never cutting a UTF-8 character), with an ellipsis when cut: a legend
 * row must stay inside the picture. */
static void svg_text_cut(FILE *out, const char *s, size_t max)
{
	char buf[512];
	size_t n = strlen(s);

	if (n <= max || max >= sizeof(buf)) {
		svg_text(out, s);
		return;
	}
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	memcpy(buf, s, max);
	buf[max] = '\0';
	svg_text(out, buf);
	fputs("\xe2\x80\xa6", out);
}

static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : dflt;
}

/* A tick step that gives at most ~12 ticks over span_ms. */
static long tick_step(long span_ms)
{
	static const long steps[] = {100, 200, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		if (span_ms / steps[i] <= 12)
			return steps[i];
	return 600000;
}

static const char *event_color(const char *name)
{
	if (strcmp(name, "failover_requested") == 0 || strcmp(name, "api_answered") == 0)
		return "#1f4e9c";
	if (strstr(name, "error") != NULL)
		return "#b3261e";
	if (strcmp(name, "first_success_after") == 0 || strcmp(name, "cluster_available") == 0 ||
	    strcmp(name, "new_writer_confirmed") == 0)
		return "#1b7a35";
	return "#6b4c9a";
}

/* One strip per client, then (cluster = on) one per shard. */
static int strip_count(const json_t *run)
{
	const json_t *b = json_object_get(run, "buckets");

	return (int)(json_array_size(json_object_get(b, "per_client")) +
		     json_array_size(json_object_get(b, "per_shard")));
}

static int panel_height(const json_t *run)
{
	int nevents = (int)json_array_size(json_object_get(run, "timeline"));

	return 56 + SVG_CHART_H + 14 + strip_count(run) * SVG_ROW_H + 34 + 22 + nevents * SVG_LEGEND_ROW + 24;
}

static double xpos(double ms, double span_ms)
{
	if (ms < 0)
		ms = 0;
	if (ms > span_ms)
		ms = span_ms;
	return SVG_LEFT + ms / span_ms * SVG_PLOT_W;
}

/* A strip: a green cell where its requests succeeded, red where one failed. */
static void svg_strip(FILE *out, int y, const char *label, const json_t *cells, double bw)
{
	const json_t *co = json_object_get(cells, "ok"), *ce = json_object_get(cells, "errors");

	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"axis\" text-anchor=\"end\">", SVG_LEFT - 4, y + 9);
	svg_text(out, label);
	fprintf(out, "</text>\n");
	fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"strip\"/>\n", SVG_LEFT, y,
		SVG_PLOT_W, SVG_ROW_H - 2);
	for (size_t k = 0; k < json_array_size(co); k++) {
		long o = (long)json_integer_value(json_array_get(co, k));
		long r = (long)json_integer_value(json_array_get(ce, k));
		if (o == 0 && r == 0)
			continue;
		fprintf(out, "<rect x=\"%.1f\" y=\"%d\" width=\"%.2f\" height=\"%d\" class=\"%s\"/>\n",
			SVG_LEFT + (double)k * bw, y, bw > 1.5 ? bw - 0.5 : bw, SVG_ROW_H - 2, r > 0 ? "err" : "ok");
	}
}

static void svg_panel(const json_t *run, size_t idx, size_t nruns, int y0, FILE *out)
{
	const json_t *b = json_object_get(run, "buckets"), *ok = json_object_get(b, "ok"),
		     *slow = json_object_get(b, "slow"), *err = json_object_get(b, "errors"),
		     *per = json_object_get(b, "per_client"), *tl = json_object_get(run, "timeline"),
		     *outage = json_object_get(run, "outage"), *e;
	size_t nb = json_array_size(ok), i, nclients = json_array_size(per);
	const json_t *per_shard = json_object_get(b, "per_shard");
	double width_ms = (double)json_integer_value(json_object_get(b, "width_ms"));
	double span = (double)nb * (width_ms > 0 ? width_ms : 100);
	double bw, mid = y0 + 56 + SVG_CHART_H / 2.0, half = SVG_CHART_H / 2.0 - 4;
	long maxc = 1, step;
	int strips = y0 + 56 + SVG_CHART_H + 14, axis = strips + strip_count(run) * SVG_ROW_H + 4;
	int legend = axis + 34;
	double num_x[SVG_MAX_NUMS];
	int num_row[SVG_MAX_NUMS];

	if (span <= 0)
		span = 100;
	bw = SVG_PLOT_W / (double)(nb > 0 ? nb : 1);
	for (i = 0; i < nb; i++) {
		long up = (long)json_integer_value(json_array_get(ok, i)) + (long)json_integer_value(json_array_get(slow, i));
		long down = (long)json_integer_value(json_array_get(err, i));
		if (up > maxc)
			maxc = up;
		if (down > maxc)
			maxc = down;
	}

	/* Title */
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"title\">repoint drill: ", SVG_LEFT, y0 + 22);
	svg_text(out, jstr(run, "service", "?"));
	fprintf(out, " (");
	svg_text(out, jstr(run, "protocol", "?"));
	fprintf(out, ", %s)", jstr(run, "kind", "?"));
	if (nruns > 1)
		fprintf(out, ", run %zu/%zu", idx + 1, nruns);
	fprintf(out, ": ");
	svg_text(out, jstr(run, "status", "?"));
	fprintf(out, "</text>\n");
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"sub\">", SVG_LEFT, y0 + 40);
	if (json_is_object(outage) && !json_is_null(json_object_get(outage, "start_ms")))
		fprintf(out, "outage %lld ms overall, worst client %lld ms; ",
			(long long)json_integer_value(json_object_get(outage, "overall_ms")),
			(long long)json_integer_value(json_object_get(outage, "max_client_ms")));
	fprintf(out, "%lld requests, %lld errors; ",
		(long long)json_integer_value(json_object_get(json_object_get(run, "requests"), "total")),
		(long long)json_integer_value(json_object_get(json_object_get(run, "errors"), "total")));
	svg_text(out, jstr(json_object_get(run, "failover"), "method", ""));
	if (json_string_value(json_object_get(json_object_get(run, "failover"), "to")) != NULL) {
		fprintf(out, " to ");
		svg_text(out, jstr(json_object_get(run, "failover"), "to", ""));
	}
	fprintf(out, "; started ");
	svg_text(out, jstr(run, "started_at", ""));
	fprintf(out, "</text>\n");

	/* Outage window, under everything else. */
	if (json_is_object(outage) && json_is_integer(json_object_get(outage, "start_ms"))) {
		double x1 = xpos((double)json_integer_value(json_object_get(outage, "start_ms")), span);
		double x2 = xpos((double)json_integer_value(json_object_get(outage, "end_ms")), span);
		fprintf(out, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" class=\"outage\"/>\n", x1,
			y0 + 50, x2 - x1 < 1 ? 1 : x2 - x1, axis - (y0 + 50));
		fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"outlabel\">outage %lld ms</text>\n", x1 + 3,
			y0 + 56 + SVG_CHART_H - 6, (long long)json_integer_value(json_object_get(outage, "overall_ms")));
	}

	/* Chart frame, baseline and scale. */
	fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", SVG_LEFT, y0 + 56,
		SVG_PLOT_W, SVG_CHART_H);
	fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"base\"/>\n", SVG_LEFT, mid,
		SVG_LEFT + SVG_PLOT_W, mid);
	fprintf(out, "<text x=\"%d\" y=\"%.1f\" class=\"axis\" text-anchor=\"end\">%ld ok</text>\n", SVG_LEFT - 4,
		mid - half + 8, maxc);
	fprintf(out, "<text x=\"%d\" y=\"%.1f\" class=\"axis\" text-anchor=\"end\">0</text>\n", SVG_LEFT - 4, mid + 4);
	fprintf(out, "<text x=\"%d\" y=\"%.1f\" class=\"axis\" text-anchor=\"end\">%ld err</text>\n", SVG_LEFT - 4,
		mid + half, maxc);
	fprintf(out, "<text x=\"%d\" y=\"%.1f\" class=\"axis\" text-anchor=\"end\">per %.0f ms</text>\n",
		SVG_LEFT - 4, mid + half + 14, width_ms > 0 ? width_ms : 100);

	/* Bars. */
	for (i = 0; i < nb; i++) {
		double x = SVG_LEFT + (double)i * bw, w = bw > 1.5 ? bw - 0.5 : bw;
		long o = (long)json_integer_value(json_array_get(ok, i));
		long s = (long)json_integer_value(json_array_get(slow, i));
		long r = (long)json_integer_value(json_array_get(err, i));
		double ho = half * (double)o / (double)maxc, hs = half * (double)s / (double)maxc;
		double hr = half * (double)r / (double)maxc;
		if (o > 0)
			fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" class=\"ok\"/>\n", x,
				mid - ho, w, ho);
		if (s > 0)
			fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" class=\"slow\"/>\n", x,
				mid - ho - hs, w, hs);
		if (r > 0)
			fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" class=\"err\"/>\n", x,
				mid, w, hr < 4 ? 4 : hr);
	}

	/* Strips per client, then per shard (the drilled one marked). */
	json_array_foreach(per, i, e) {
		const json_t *pc = json_array_get(json_object_get(outage, "per_client"), i);
		char label[32];
		snprintf(label, sizeof(label), "c%zu %s", i,
			 strcmp(jstr(pc, "mode", "long"), "long") == 0 ? "long" : "per-req");
		svg_strip(out, strips + (int)i * SVG_ROW_H, label, e, bw);
	}
	json_array_foreach(per_shard, i, e) {
		const json_t *sh = json_array_get(json_object_get(run, "shards"), i);
		char label[32];
		snprintf(label, sizeof(label), "shard %zu%s", i, json_is_true(json_object_get(sh, "drilled")) ? " *" : "");
		svg_strip(out, strips + (int)(nclients + i) * SVG_ROW_H, label, e, bw);
	}

	/* Time axis. */
	step = tick_step((long)span);
	fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"frame\"/>\n", SVG_LEFT, axis, SVG_LEFT + SVG_PLOT_W,
		axis);
	for (long t = 0; t <= (long)span; t += step) {
		double x = xpos((double)t, span);
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"frame\"/>\n", x, axis, x, axis + 4);
		if (step % 1000 == 0)
			fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"axis\" text-anchor=\"middle\">%lds</text>\n", x,
				axis + 16, t / 1000);
		else
			fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"axis\" text-anchor=\"middle\">%.1fs</text>\n", x,
				axis + 16, (double)t / 1000.0);
	}
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"axis\" text-anchor=\"end\">time since the drill started</text>\n",
		SVG_LEFT + SVG_PLOT_W, axis + 30);

	/* Timeline events: a numbered line across chart and strips, and a legend row each. Close
	 * events would hide each other's numbers: each takes the first row (of six) where no number
	 * is near it yet. */
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"sub\">timeline</text>\n", SVG_LEFT, legend + 6);
	json_array_foreach(tl, i, e) {
		const char *name = jstr(e, "name", "?");
		double at = (double)json_integer_value(json_object_get(e, "at_ms"));
		double x = xpos(at, span);
		int ly = legend + 22 + (int)i * SVG_LEGEND_ROW;
		int row = 0, ny;
		const char *color = event_color(name);
		for (row = 0; row < SVG_NUM_ROWS - 1; row++) {
			bool clear = true;
			for (size_t k = 0; k < i && k < SVG_MAX_NUMS; k++)
				if (num_row[k] == row && num_x[k] > x - 15 && num_x[k] < x + 15)
					clear = false;
			if (clear)
				break;
		}
		if (i < SVG_MAX_NUMS) {
			num_x[i] = x;
			num_row[i] = row;
		}
		ny = y0 + 56 + 10 + row * 15;
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" class=\"ev\"/>\n", x,
			y0 + 56, x, axis, color);
		fprintf(out, "<circle cx=\"%.1f\" cy=\"%d\" r=\"6.5\" fill=\"%s\"/>", x, ny, color);
		fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"num\" text-anchor=\"middle\">%zu</text>\n", x, ny + 3,
			i + 1);
		fprintf(out, "<circle cx=\"%d\" cy=\"%d\" r=\"6.5\" fill=\"%s\"/>", SVG_LEFT + 6, ly - 4, color);
		fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"num\" text-anchor=\"middle\">%zu</text>", SVG_LEFT + 6,
			ly - 1, i + 1);
		fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"legend\">%6lld ms  <tspan font-weight=\"bold\">",
			SVG_LEFT + 20, ly, (long long)json_integer_value(json_object_get(e, "at_ms")));
		svg_text(out, drill_event_label(name));
		fprintf(out, "</tspan>  ");
		svg_text_cut(out, jstr(e, "detail", ""), 100 - strlen(drill_event_label(name)));
		fprintf(out, "</text>\n");
	}
}

void drill_svg_write(const json_t *result, FILE *out)
{
	const json_t *runs = json_object_get(result, "runs"), *run;
	size_t i, n = json_array_size(runs);
	int h = 0, y = 0;

	json_array_foreach(runs, i, run)
		h += panel_height(run);
	if (h == 0)
		h = 60;
	fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n",
		SVG_W, h, SVG_W, h);
	fputs("<title>repoint drill timeline</title>\n"
	      "<style>\n"
	      "text{font-family:'DejaVu Sans',Verdana,Arial,sans-serif;fill:#222}\n"
	      ".title{font-size:16px;font-weight:bold}.sub{font-size:12px;fill:#444}\n"
	      ".axis{font-size:10px;fill:#555}.legend{font-size:11px;font-family:'DejaVu Sans Mono',monospace}\n"
	      ".num{font-size:9px;fill:#fff;font-weight:bold}.outlabel{font-size:11px;fill:#b3261e;font-weight:bold}\n"
	      ".frame{fill:none;stroke:#999;stroke-width:1}.base{stroke:#666;stroke-width:1}\n"
	      ".strip{fill:#f3f3f3}.ok{fill:#2e9e4f}.slow{fill:#e8a317}.err{fill:#d93025}\n"
	      ".outage{fill:#d93025;fill-opacity:0.10}.ev{stroke-width:1.2;stroke-dasharray:4,3}\n"
	      "</style>\n"
	      "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
	      out);
	if (n == 0)
		fputs("<text x=\"20\" y=\"30\" class=\"title\">repoint drill: no run</text>\n", out);
	json_array_foreach(runs, i, run) {
		svg_panel(run, i, n, y, out);
		y += panel_height(run);
	}
	fputs("</svg>\n", out);
}
