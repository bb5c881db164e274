"""The parts of scripts/bench-dnsperf, split by concern.

common   constants, output, child processes, /proc readers, DNS probes, the machine
servers  tools, building, the simulated cluster, the servers under test
runs     the loads (rates and max), dnsperf runs and their records
report   summary, contention, ratios, targets, the verdict
memory   the resident-set measurement (--memory)
"""
