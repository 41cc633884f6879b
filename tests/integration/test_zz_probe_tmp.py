import pytest
from test_execution import *  # noqa

@pytest.mark.parametrize("i", range(8))
async def test_probe(make_server, submit, http, i):
    server = await make_server(progress_rate=5)
    job = await submit(server, "chatty", {"events": 200, "pause": 0.005})
    read = await run_to_end(http, server, job["id"])
    times = [parse_time(d["at"]) for d in read.data() if d["event"] == "progress"]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    print(len(times), min(gaps[:-1]), gaps)
