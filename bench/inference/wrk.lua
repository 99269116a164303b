-- wrk script for bench/inference.sh: POSTs the JSON in $BODY_FILE (with $AUTH as the
-- Authorization header when set), and prints wrk-report.lua's RESULT line at the end.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "../wrk-report.lua")
