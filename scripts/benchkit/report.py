"""The results table (stdout) and its JSON twin."""

from .common import fmt_num

# repoint-mux, haproxy-splice, twemproxy: Redis; pgbouncer: Postgres; repoint-uring and the relay floors:
# the throughput rows
PATHS = ("direct", "haproxy", "haproxy-splice", "twemproxy", "pgbouncer", "repoint", "repoint-mux", "repoint-uring",
         "floor-epoll", "floor-uring")
PEERS = ("twemproxy", "pgbouncer")
PROXIES = ("repoint", "repoint-mux", "repoint-uring")     # the rows of the ratio table


def _cell(s, digits=None):
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt_num(s["median"], digits)
    return "%s [%s-%s]" % (fmt_num(s["median"], digits), fmt_num(s["min"], digits), fmt_num(s["max"], digits))


def _r(v):
    return "-" if v is None else "%.2f" % v


def throughput_table(workloads):
    lines = []
    hdr = "%-24s %-14s %-28s %-24s %-24s %s" % ("workload", "path", "throughput median [min-max]", "p50 ms",
                                             "p99 ms", "proxy CPU us/op")
    lines += [hdr, "-" * len(hdr)]
    for wid, w in workloads.items():
        for i, p in enumerate(PATHS):
            r = w["paths"].get(p)
            if r is None:
                continue
            name = wid if i == 0 else ""
            unit = (" " + w["unit"]) if i == 0 else ""
            lines.append("%-24s %-14s %-28s %-24s %-24s %s" % (
                name, p, _cell(r.get("throughput")) + unit, _cell(r.get("p50_ms"), 3), _cell(r.get("p99_ms"), 3),
                _cell(r.get("cpu_us_per_op"), 1) if p != "direct" else ""))
        if w.get("errors"):
            lines.append("%-24s   errors: %s" % ("", "; ".join(w["errors"])[:300]))
    lines.append("")
    fmt = "%-24s %-11s %11s %11s %12s %10s %10s %10s %10s %11s %13s %14s %12s %14s %13s %15s %15s %15s"
    hdr = fmt % ("ratios (of medians)", "X = proxy", "tput X/dir", "tput X/hap", "tput X/peer", "p50 X/dir",
                 "p50 X/hap", "p99 X/dir", "p99 X/hap", "p99 X/peer", "cpu/op X/hap", "cpu/op X/peer",
                 "tput X/rp", "cpu/op X/rp", "tput X/hsplc", "cpu/op X/hsplc", "cpu/op X/epoll",
                 "cpu/op X/uring")
    lines += [hdr, "-" * len(hdr)]
    for wid, w in workloads.items():
        r = w.get("ratios", {})
        first = True
        for x in PROXIES:
            d, h = r.get(x + "/direct"), r.get(x + "/haproxy")
            if x != "repoint" and d is None and h is None:
                continue          # repoint-mux: Redis rows only; repoint-uring: the throughput rows
            d, h, m = d or {}, h or {}, r.get(x + "/repoint") or {}
            pe = next((r[x + "/" + p] for p in PEERS if x + "/" + p in r), {})
            sp = r.get(x + "/haproxy-splice") or {}
            fe, fu = r.get(x + "/floor-epoll") or {}, r.get(x + "/floor-uring") or {}
            lines.append(fmt % (
                wid if first else "", x, _r(d.get("throughput")), _r(h.get("throughput")), _r(pe.get("throughput")),
                _r(d.get("p50_ms")), _r(h.get("p50_ms")), _r(d.get("p99_ms")), _r(h.get("p99_ms")),
                _r(pe.get("p99_ms")), _r(h.get("cpu_us_per_op")), _r(pe.get("cpu_us_per_op")),
                _r(m.get("throughput")) if m else "", _r(m.get("cpu_us_per_op")) if m else "",
                _r(sp.get("throughput")) if sp else "", _r(sp.get("cpu_us_per_op")) if sp else "",
                _r(fe.get("cpu_us_per_op")) if fe else "", _r(fu.get("cpu_us_per_op")) if fu else ""))
            first = False
    return "\n".join(lines)


def conns_table(c):
    lines = ["connection scale: %d idle client connections through each proxy (Redis behind; each one is also an "
             "upstream connection, except through repoint-mux)%s" % (c["connections"], c.get("note", "") and
                                                                     " - " + c["note"])]
    hdr = "%-11s %-26s %-16s %-16s %-14s %s" % ("proxy", "KB per client conn", "RSS before MB", "RSS after MB",
                                              "fds added", "upstream conns seen by redis")
    lines += [hdr, "-" * len(hdr)]
    for p in ("haproxy", "repoint", "repoint-mux"):
        r = c["proxies"].get(p)
        if not r:
            continue
        lines.append("%-11s %-26s %-16s %-16s %-14s %s" % (
            p, _cell(r["kb_per_conn"], 2), _cell(r["rss_before_mb"], 1), _cell(r["rss_after_mb"], 1),
            _cell(r["fds_added"], 0), _cell(r["upstream_conns_seen_by_redis"], 0)))
    if c.get("ratio_repoint_haproxy") is not None:
        lines.append("repoint/haproxy KB per connection: %.2f" % c["ratio_repoint_haproxy"])
    if c.get("ratio_repoint_mux_haproxy") is not None:
        lines.append("repoint-mux/haproxy KB per connection: %.2f" % c["ratio_repoint_mux_haproxy"])
    return "\n".join(lines)


def failover_table(f):
    lines = ["failover reaction: %d Redis switchover(s), %d clients per path writing every %d ms, check/probe "
             "interval %s, HAProxy timeout check %s" % (len(f["runs"]), f["clients"], f["interval_ms"],
                                                       f["check_interval"], f.get("haproxy_check_timeout"))]
    hdr = "%-11s %-30s %-22s %-22s %-14s %s" % ("path", "first write after promotion ms", "errors", "longest gap ms",
                                             "split writes", "error kinds")
    lines += [hdr, "-" * len(hdr)]
    for p, s in f["summary"].items():
        lines.append("%-11s %-30s %-22s %-22s %-14s %s" % (
            p, _cell(s["first_write_after_promotion_ms"], 0), _cell(s["errors"], 0), _cell(s["longest_gap_ms"], 0),
            "%d / %d" % (s["split_writes"], s["acked_missing"]), s["error_kinds"]))
    lines.append("(split writes = keys on the demoted node but not on the new primary / acknowledged writes missing "
                 "on the new primary, summed over switchovers)")
    return "\n".join(lines)
