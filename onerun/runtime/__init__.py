"""What runs under supervisord, after ``onerun start`` has handed over.

onerun's start-time pipeline (``onerun/start.py``: observe, decide, plan, apply) ends by
exec'ing supervisord. This package is the other life of the program, the code that runs
for as long as the pod does:

- ``services``: the OpenNebula services supervisord runs, as programs, and which are
  critical; ``supervisor``: supervisord's rendered config and the exec into it;
- ``pid1``: onerun's hooks inside supervisord (output prefixing, exit 70 on a critical
  failure); ``critical``: which program failures end the container;
- ``poststart``: what runs once oned answers (auth healing, the start record);
- ``probe``: the Kubernetes probes, run every few seconds in every pod;
- ``logs``, ``logline``: OpenNebula's log files on stdout;
- ``oneapi``: a small XML-RPC client of oned.

This ``__init__`` imports nothing, and must stay so: ``onerun probe`` imports
``onerun.runtime.probe`` on every probe, and what an ``__init__`` imports is paid each time.
"""
