"""modbus-farm: a farm of simulated Modbus TCP devices.

Four programs share this package; the folder tells which one runs a module:

    farm CLI (cli/)  ──HTTP──>  master (master/)  ──pipe + shared memory──>  workers (worker/)
    farm bench (bench/) ─Modbus TCP─> the workers' servers; HTTP (client/) to find them

    config/   what to serve: schema, templates, fleets, plan, codec, behaviours, faults.
              Pure data and arithmetic, no processes; every program reads it.
    ipc/      what crosses the master-worker boundary: the pipe's messages and wire
              format (messages), the shared-memory layouts of register banks (banks),
              counters (stats), diagnostics and the write journal, and how a worker is
              spawned (spawn).
    master/   the master process: run (start to stop), logs (the farm's one log), and a
              subpackage per concern: supervision/ (spawn, watch, restart workers; bind
              every port), http/ (the control API), faults/ (the fault table), fleet/
              (servers by name: stop, start, scale), scenario/, state/ (the state file),
              metrics/ (/metrics: the master's families in a prometheus_client registry,
              the per-server ones rendered by hand), fleetview/ (the live page at /, its
              files in web/).
    worker/   a worker process: process (its loop; with switch and membership, its
              servers), engine (a device's answers; the only module that imports
              pymodbus), fastpath, diagnostics, records, ticker, framing, outbox, events;
              transports/ (TCP, RTU over TCP, UDP, TLS), faults/ (how a faulted server
              answers), limits/ (connection limits and timeouts on a timer wheel),
              observe/ (who asks, what they wrote). It loads neither Rich, pydantic nor
              the CLI (tests/test_worker_imports.py).
    modbus/   the Modbus wire format for everyone: mbap (the TCP header), rtu (CRC-16,
              frame lengths), pdu (function and exception codes, requests, answers).
    bench/    the load generator, a program of its own.
    client/   the one client of the control API (the CLI, bench and users' own tests):
              api (FarmClient, the only HTTP to the API), answers (what calls return),
              options (the API's command-line options), defaults (the API's address
              unless told), selectors (which servers a fault is for: Fleet, Glob,
              Fraction, ...). Its names load their modules when first used.
    cli/      the `farm` command (its package imports no command until `main` runs: the
              console script is re-run in every worker multiprocess spawns).
    pytest_plugin.py  the `modbus_farm` fixture: farms for a test suite, through client/.
    errors.py the errors a user can meet, each one line (standard library only).
    files.py  how anything from outside is read: regular files only, bounded sizes and
              nesting, one-line errors (config files, CSVs, state files, certificates,
              API bodies).
    output.py how the CLI and bench print: user text literally, whole table rows in a
              pipe; exit_with, a FarmError as its one line.
    openfiles.py  the open-files limit, raised the same way by every program, and the
              descriptor table grown in one step (reserve_descriptors).
    collector.py  Python's garbage collector, off while `farm up` starts (master and
              warm workers), on again once each is ready.
    words.py  numbers in words: '1 server', '2 servers'.

Imports follow the arrows: config imports none of the others; ipc imports config;
master and worker import config and ipc, never each other; bench imports client and
config; modbus imports nothing of the farm; errors, files, openfiles, collector, output,
words and modbus are for everyone. Inside the master, supervision is at the bottom and http
at the top; only http, fleetview's pages and run speak HTTP (aiohttp). No import cycle at
run time, and no module touches another's private names (ruff's SLF001). The contracts are
in pyproject.toml; tests/test_layout.py keeps them.
"""

__version__ = "0.1.0"
