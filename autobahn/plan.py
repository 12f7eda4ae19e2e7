#!/usr/bin/env python3
"""Splits the Autobahn|Testsuite cases run.sh runs into wstest jobs.

    python3 autobahn/plan.py CASES DEFLATE_AGENTS SHARDS [SUITE_CASES]

CASES is the suite's JSON list of case patterns (AUTOBAHN_CASES, `["*"]` for
every case), DEFLATE_AGENTS the agents that run sections 12 and 13
(AUTOBAHN_DEFLATE_AGENTS), SHARDS how many wstest processes share one such
agent's sections 12 and 13. Prints one job a line: `NAME AGENT CASE_LIST`,
CASE_LIST the job's case ids as a JSON list without spaces.

The cases are the suite's own case ids (SUITE_CASES, a file holding them as
a JSON list; run.sh asks the installed suite), else the ids in
autobahn/expected-results.json (the wss agent takes the plain `wshub`
agent's), matched against the patterns as compare.py matches them. With
SUITE_CASES, a case the suite has and the expected results lack is run, and
compare.py reports it, as when wstest was given the patterns themselves;
without, such a case would silently never run; a job left with no case is not printed, since a wstest given
no case never exits. Sections 12 and 13 are twelve groups of 18 cases, the
Nth case of each group sending the same messages, and the groups' Nth cases
are dealt out in turn, so every shard gets about as many of each group and
of the large messages as the others.
"""
import fnmatch, json, os, sys

AGENTS = ("wshub", "c-echo", "wshub-wss")
EXPECTED_AS = {"wshub-wss": "wshub"}


def order(case):
    return [int(x) for x in case.split(".")]


def plan(patterns, deflate_agents, shards, suite=None):
    expected = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected-results.json")))
    jobs = []
    for agent in AGENTS:
        ids = suite if suite is not None else expected[EXPECTED_AS.get(agent, agent)]
        cases = [c for c in ids if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
        deflate = [c for c in cases if c.split(".")[0] in ("12", "13")]
        rest = sorted((c for c in cases if c not in deflate), key=order)
        if rest:
            jobs.append((agent, agent, rest))
        if agent not in deflate_agents or not deflate:
            continue
        # Case N of group G goes to shard (G + N) mod SHARDS: each shard gets
        # its share of every group and of every message size.
        groups = sorted({tuple(order(c)[:2]) for c in deflate})
        count = max(1, min(shards, len(deflate)))
        dealt = [[] for _ in range(count)]
        for c in deflate:
            dealt[(groups.index(tuple(order(c)[:2])) + order(c)[2]) % count].append(c)
        for i, part in enumerate(p for p in dealt if p):
            jobs.append((f"{agent}-deflate{i + 1}", agent, sorted(part, key=order)))
    return jobs


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    suite = json.load(open(sys.argv[4])) if len(sys.argv) == 5 else None
    for name, agent, cases in plan(json.loads(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3]), suite):
        print(name, agent, json.dumps(cases, separators=(",", ":")))
