-- SPDX-License-Identifier: Apache-2.0
-- wrk's script for examples/server/load.sh: every request POSTs the image VITMAE_LOAD_IMAGE to
-- VITMAE_LOAD_PATH. done() prints one line of figures for load.sh to read.
local f = assert(io.open(os.getenv("VITMAE_LOAD_IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.path = os.getenv("VITMAE_LOAD_PATH")
wrk.headers["Content-Type"] = "application/octet-stream"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("figures requests=%d socket_errors=%d non_2xx=%d per_second=%.2f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
