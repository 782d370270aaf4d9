"""Member health for failover groups: signals in, usable members and an active choice out.

The failover pipeline (design.md) up to the actuator, as pure logic plus the probes::

    signals (link events, probe results)        signals.py
      -> per-target rise/fall, any/all/quorum    targets.py
      -> flap damping                            damping.py
      -> member standing, up/down delays         member.py
      -> group choice, preempt/sticky, manual    policy.py

Everything but ``probes`` is free of sockets and kernel access and takes time only as
explicit monotonic ``now``/``at`` values (``clock.py``), so the daemon arms one timer per
state machine at its ``next_deadline`` and the tests replay histories exactly.
"""
