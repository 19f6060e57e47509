"""Slot -> run: every slot the scheduler fires ends as exactly one history row.

The scheduler fires a slot into the Runner; its policies (misfire grace,
overlap, claim, pools, concurrency) decide whether and when it runs; the run is
carried out on the loop, in a thread or in a worker process, with its timeout
and retries, and its edges are told as run events.

Imports only from: leaves, schedule, history, pipeline. This file stays a docstring:
importing the package costs nothing.

Modules:
    backfill.py        Backfill and rerun: slots of the past run (again), through the Runner.
    events.py          The runner's edges: what notifications, metrics and run logs hang off.
    execute.py         Carrying out one claimed run: the driver call (on the event loop, in the
                       bounded thread pool, or in a worker process), its timeout
    ledger.py          The runs going now: what `flowerd status` lists, what overlap and
                       deadlines ask, what the drain waits for.
    policies.py        A fired slot's policies, up to the moment its run is carried out
                       (daemon.runner.execute): calendar exclusions, the misfire grace, overlap
    pools.py           `pool = "warehouse"`: runs of every schedule in one pool share its limit.
    requested.py       Runs asked for rather than fired by the scheduler: `flowerd run`,
                       `flowerd trigger` and the recording Python API (trigger `manual`)
    runner.py          Slot -> run: ledger claim, misfire grace, overlap, concurrency, timeout,
                       retries.
    scheduler.py       Fires slots: the only module that drives APScheduler's AsyncIOScheduler.
    worker_process.py  What runs inside a worker process of `isolation = "process"`
                       (daemon.runner.workers runs the pool, in the daemon).
    workers.py         `isolation = "process"`: a run in a worker process that can be killed.
"""
