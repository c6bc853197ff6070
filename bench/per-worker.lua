-- Counts the requests each worker served, from the "pid N" in the example app's answers.
-- Every wrk thread has its own Lua state; done() gathers their tables.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local pid = body:match("pid (%d+)")
  if pid then
    counts[pid] = (counts[pid] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do
      total[pid] = (total[pid] or 0) + n
    end
  end
  local parts = {}
  for pid, n in pairs(total) do
    table.insert(parts, string.format('"%s": %d', pid, n))
  end
  print("{" .. table.concat(parts, ", ") .. "}")
end
