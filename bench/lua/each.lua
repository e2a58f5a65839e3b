-- A fresh credential per request: lines of BENCH_FILE are shared out between the threads,
-- each line used once, and put into BENCH_BODY where it says {}.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  lines = {}
  for line in io.lines(os.getenv("BENCH_FILE")) do table.insert(lines, line) end
  step = tonumber(os.getenv("BENCH_THREADS"))
  position = index + 1
  template = os.getenv("BENCH_BODY")
  auth = os.getenv("BENCH_AUTH")
end

function request()
  local value = lines[position] or "exhausted"
  position = position + step
  local headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = auth}
  return wrk.format("POST", nil, headers, (template:gsub("{}", value)))
end
