-- POST /trigger from a new address every time: 11.0.0.0/8, block BLOCK (2^20 addresses
-- per block, half per thread) so every run of bench/run.py uses addresses never seen.
local block = tonumber(os.getenv("BLOCK") or "0")
local counter = 0
local next_i = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  next_i = block * 1048576 + ((id or 1) - 1) * 524288
end

function request()
  local i = next_i % 16777216
  next_i = next_i + 1
  local ip = string.format("11.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  return wrk.format("POST", "/trigger", { ["X-Forwarded-For"] = ip }, nil)
end
