-- TechEmpower's pipelining profile for wrk: every write carries `depth`
-- requests (default 16), so a connection has that many in flight.
-- Usage: wrk -s bench/pipeline.lua URL -- 16
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
