-- POST /trigger with X-Forwarded-For drawn at random from a pool of POOL addresses
-- (10.0.0.0 upward, the same numbering bench/run.py prefills as spent clients).
local pool = tonumber(os.getenv("POOL") or "1000")
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
  local i = math.random(0, pool - 1)
  local ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  return wrk.format("POST", "/trigger", { ["X-Forwarded-For"] = ip }, nil)
end
