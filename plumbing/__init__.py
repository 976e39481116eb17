"""Plumbing the local tools, the benchmarks and the deployment share, each piece once.

- `process`: a child process in its own process group with a log: start, wait until ready, tail, stop the group.
- `polling`: `poll_until`, the one wait loop (deadline, interval, stall detection, progress reports).
- `ports`: loopback port checks (free, in use, accepting, and which process holds a taken one).
- `cli`: the front of every command: `--version`, unknown flags refused, one `error:` line instead of a traceback.
- `flink_rest`: the one client of Flink's REST API and the job states it reports.
"""
