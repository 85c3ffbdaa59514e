-- wrk script: Plausible Events API requests as browsers send them, from
-- 50,000 visitors (random address and one of several user agents), over
-- 200 pages, one in ten a custom event with a property.
-- The path is given by the command line (POST /api/event or /v1/events/x).
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
}
local referrers = { "", "https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/x", "https://example.com/" }
math.randomseed(os.time())

-- Requests are built once, before the run, and sent in turn: building
-- each one in Lua costs the load generator as much CPU as the server's
-- raw ingest spends on it, on the same two cores.
local N = 20000
local requests = {}

local function build(path)
  local v = math.random(50000)
  local ip = string.format("10.%d.%d.%d", v % 250, math.floor(v / 250) % 250, v % 7)
  local page = math.random(200)
  local name = "pageview"
  local props = ""
  if math.random(10) == 1 then
    name = "Signup"
    props = ',"p":{"plan":"pro"}'
  end
  local body = string.format(
    '{"n":"%s","u":"https://example.com/page/%d?utm_source=s%d","d":"example.com","r":"%s","w":%d%s}',
    name, page, page % 5, referrers[math.random(#referrers)], 390 + (v % 3) * 700, props)
  local headers = {
    ["User-Agent"] = agents[v % #agents + 1],
    ["X-Forwarded-For"] = ip,
    -- Trackers send text/plain; the plain ingest endpoint wants JSON.
    ["Content-Type"] = path:find("/api/event", 1, true) and "text/plain" or "application/json",
  }
  return wrk.format("POST", path, headers, body)
end

local i = 0
request = function()
  if #requests == 0 then
    for k = 1, N do
      requests[k] = build(wrk.path)
    end
  end
  i = i % N + 1
  return requests[i]
end
