"""Merge a run of `attnsim run` timed by `/usr/bin/time -v` into results.json (section "long").

    python benchmarks/merge_long.py LOGDIR

LOGDIR holds stdout, stderr (the /usr/bin/time -v report), start, end, load_start, load_end,
as written when the 10^8-step command was run by hand (see RESULTS.md for the command).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(logdir):
    read = lambda name: open(os.path.join(logdir, name)).read().strip()  # noqa: E731
    info = dict(command="/usr/bin/time -v .venv/bin/attnsim run --preset balanced --trainable p "
                        "--steps 100000000 --saves 500 --out p1e8.npz --no-progress",
                steps=10**8, stdout=read("stdout"), load_start=" ".join(read("load_start").split()[:3]),
                load_end=" ".join(read("load_end").split()[:3]), started=read("start"), ended=read("end"))
    for line in read("stderr").splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size"):
            info["peak_rss_mb"] = int(line.split()[-1]) / 1024
        elif line.startswith("User time"):
            info["user_s"] = float(line.split()[-1])
        elif line.startswith("Percent of CPU"):
            info["cpu_percent"] = line.split()[-1]
        elif line.startswith("Elapsed (wall clock)"):
            parts = [float(x) for x in line.split()[-1].split(":")]
            info["wall_s"] = sum(x * 60 ** k for k, x in enumerate(reversed(parts)))
    path = os.path.join(HERE, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    old = [r for r in results.get("long", {}).get("rows", []) if r.get("started") != info["started"]]
    results["long"] = {"rows": old + [info], "date": info["started"].replace("T", " ").replace("Z", " UTC"),
                       "started_load": info["load_start"], "seconds": info["wall_s"]}
    json.dump(results, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
