"""Benchmarks: asyncfetch against its peers, same machine, same nginx, same files.

Run ``bash benchmarks/setup.sh .venv && .venv/bin/python -m benchmarks`` (``make bench``);
``python -m benchmarks --help`` lists the options. Modules, in the order a run uses them:

- ``_scenarios``: the files, nginx servers and scenarios (add new ones here)
- ``_data``: generates random input files (and a torch checkpoint) once, with their SHA-256
- ``_nginx``: one nginx child process with a server block per scenario server
- ``_accesslog``: what each server sent during a run, from its access log
- ``_job``: a run's files (``Job``) and a tool's description and hooks (``Tool``)
- ``_tools``: the command line of each tool under test, and the registry of tools
- ``_resume``, ``_batchtools``, ``_cachehit``: argv builders and hooks of those scenarios
- ``_measure``: runs one child; wall time, CPU seconds, peak RSS via ``os.wait4``
- ``_runner``: runs each (scenario, tool) N times and checks every output
- ``_targets``: the targets asyncfetch is held to
- ``_report``: text tables, markdown and ``results.json``
- ``_cli``: the command line that ties them together

``demo.py`` (``make demo``) is separate: it serves a generated torch checkpoint on 127.0.0.1,
downloads it with ``asyncfetch.download`` and loads it.
"""
