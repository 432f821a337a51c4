"""The soak: streamcar under a nemesis for a long run, then every topic read back and held to docs/delivery.md.

    make soak                      # 600 s
    SOAK_S=1800 SOAK_SEED=42 make soak

A 3-node local cluster (replication 3, ``min.insync.replicas`` 2); a keyed input of 300 records a second; two
``streamcar run`` members (a third joins and leaves by turns), each running two pipelines on that input: one at
least once, one exactly once; a service that fails 3% of its calls with 503, always refuses a few records
(422) and has slow phases. Every 10-30 s the nemesis does one of: SIGKILL a member (it comes back), SIGSTOP a
member past its session timeout, SIGSTOP the service, SIGKILL the node leading an input partition (it comes
back), a member joining or leaving, the service slow for a while (soak.plan). Then it heals, stops the input,
waits until both groups have committed everything, and reads every topic back (soak.check).

Modules: plan (the fault schedule), nemesis (doing it), load (the input), service (the service), processes
(members and the service as processes), topics (the cluster's answers, the read back), check (the verdict),
run (one run, in order).
"""
