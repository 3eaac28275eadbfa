"""benchkit: repoint's benchmark (scripts/bench).

Every workload runs in the same invocation against three paths to the same server: direct,
through HAProxy (TCP mode, a configuration equivalent to repoint's), and through repoint; the
Redis workloads (redis-benchmark, failover) also through repoint-mux, a second repoint process
whose redis service has `multiplex = on`.

    /usr/bin/python3 -m benchkit --repoint build/bench/proxy/repoint [--smoke] [--only redis,pg]
"""
