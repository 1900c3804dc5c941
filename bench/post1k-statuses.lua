-- wrk script for bench/nodes.sh: bench/post1k.lua's POST, and a count of the answers by HTTP
-- status, printed at the end as one line per status: "STATUS <code> <count>". wrk itself
-- only counts the 4xx and 5xx answers, so a 202 (queued) would pass for a 200 (delivered).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post1k.lua")

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + n
        end
    end
    for status, n in pairs(total) do
        io.write(string.format("STATUS %d %d\n", status, n))
    end
end
