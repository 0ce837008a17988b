#!/usr/bin/env bash
# Usage: benchmarks/pause_jobs.sh CMD...  -- SIGSTOPs every background lopt job (meta-train, eval, study,
# validate) for the duration of CMD, and always resumes them (SIGCONT), even on error or Ctrl-C.
pids=$(pgrep -f "lopt (meta-train|eval|study|validate)" || true)
resume() { [ -n "$pids" ] && kill -CONT $pids 2>/dev/null; }
trap resume EXIT INT TERM
[ -n "$pids" ] && kill -STOP $pids
sleep 5
uptime
"$@"
uptime
