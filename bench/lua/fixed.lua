-- The same request every time: method, body and headers come from the environment.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
if auth then wrk.headers["Authorization"] = auth end
if wrk.body then wrk.headers["Content-Type"] = "application/x-www-form-urlencoded" end
