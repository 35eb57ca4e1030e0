-- wrk reporter for benches/run.sh: prints one machine-readable line after a run, so the script
-- never has to parse wrk's human output (whose units change between us, ms and s).
-- Requests/s, latency percentiles (microseconds), bytes per response and every error counter
-- (socket errors and HTTP status >= 400, which wrk counts in errors.status).
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRK rps=%.1f requests=%d bytes_per_req=%.0f p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests / seconds, summary.requests,
    summary.requests > 0 and summary.bytes / summary.requests or 0,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
