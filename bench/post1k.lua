-- wrk script for bench/run.sh: every request is a POST with a 1,024-byte JSON body.
-- '{"pad":"' (8 bytes) + 1,014 x 'a' + '"}' (2 bytes) = 1,024 bytes.
wrk.method = "POST"
wrk.body = '{"pad":"' .. string.rep("a", 1014) .. '"}'
wrk.headers["Content-Type"] = "application/json"
assert(#wrk.body == 1024, "body must be 1024 bytes")
