#!/usr/bin/env python3
"""Compares an Autobahn|Testsuite report with autobahn/expected-results.json.

    python3 autobahn/compare.py AGENT[=EXPECTED_AGENT] REPORT_DIR/index.json...

EXPECTED_AGENT (default: AGENT) names the expected results to hold AGENT to:
the wss run ("wshub-wss") must match plain "wshub" exactly. The reports of
several wstest processes (run.sh splits an agent's cases over several) are
judged as one: a case reported twice is a difference.

expected-results.json holds, per agent, each case's expected results.

Durations and the report's prose are ignored; each case's `behavior` and
`behaviorClose` must match the expected ones exactly, and no case may be
missing. With ONLY_CASES (comma-separated case patterns such as `12.1.*`,
as run.sh passes them for AUTOBAHN_CASES), only the cases they match are
expected, and with EXCLUDE_CASES (the same form) the cases those match are
not.
Exits 1 on any difference, listing them. With AUTOBAHN_UPDATE=1 in
the environment it rewrites AGENT's cases in expected-results.json from the
report instead, the ones ONLY_CASES and EXCLUDE_CASES leave out kept as they
are (an AGENT held to another's results is not written; review the diff
before committing it).
"""
import fnmatch, json, os, sys

if len(sys.argv) < 3:
    sys.exit(__doc__)
agent, _, expected_agent = sys.argv[1].partition("=")
expected_agent = expected_agent or agent
expected_path = os.path.join(os.path.dirname(__file__), "expected-results.json")
got, twice = {}, []
for report_path in sys.argv[2:]:
    for case, result in json.load(open(report_path)).get(agent, {}).items():
        if case in got:
            twice.append(case)
        got[case] = result
all_expected = json.load(open(expected_path))
only = [p for p in os.environ.get("ONLY_CASES", "").split(",") if p]
excluded = [p for p in os.environ.get("EXCLUDE_CASES", "").split(",") if p]
# Whether the run was asked for this case (ONLY_CASES, EXCLUDE_CASES).
in_scope = lambda c: (not only or any(fnmatch.fnmatchcase(c, p) for p in only)) \
    and not any(fnmatch.fnmatchcase(c, p) for p in excluded)
if os.environ.get("AUTOBAHN_UPDATE") == "1":
    if expected_agent != agent:
        print(f"autobahn {agent}: held to {expected_agent}'s results, not written")
        sys.exit(0)
    order = lambda case: [int(x) for x in case.split(".")]
    # The cases this run was not asked for keep their expected results: a
    # partial run (AUTOBAHN_CASES) updates its cases, it does not drop the rest.
    kept = {c: v for c, v in all_expected.get(agent, {}).items() if not in_scope(c)}
    kept.update({c: {"behavior": got[c]["behavior"], "behaviorClose": got[c]["behaviorClose"]} for c in got})
    all_expected[agent] = {c: kept[c] for c in sorted(kept, key=order)}
    with open(expected_path, "w") as f:
        json.dump(all_expected, f, indent=1)
        f.write("\n")
    print(f"autobahn {agent}: wrote {len(got)} cases to {expected_path}")
    sys.exit(0)
expected = {c: v for c, v in all_expected.get(expected_agent, {}).items() if in_scope(c)}
if not expected:
    print(f"autobahn {agent}: no expected results for this agent")
    sys.exit(1)
problems = [f"{case}: reported by two wstest runs" for case in twice]
for case, want in expected.items():
    have = got.get(case)
    if have is None:
        problems.append(f"{case}: missing from the report")
        continue
    for field in ("behavior", "behaviorClose"):
        if have[field] != want[field]:
            problems.append(f"{case}: {field} {have[field]}, expected {want[field]}")
for case in sorted(set(got) - set(expected)):
    problems.append(f"{case}: not in expected-results.json ({got[case]['behavior']})")
counts = {}
for v in got.values():
    counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
print(f"autobahn {agent}: {len(got)} cases {counts}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"autobahn {agent}: every case as expected")
