"""modbus-farm: a farm of simulated Modbus TCP devices.

Four programs share this package; the folder tells which one runs a module:

    farm CLI (cli/)  ──HTTP──>  master (master/)  ──pipe + shared memory──>  workers (worker/)
    farm bench (bench/) ─Modbus TCP─> the workers' servers; HTTP (client/) to find them

    config/   what to serve: schema, templates, fleets, plan, codec, behaviours, faults.
              Pure data and arithmetic, no processes; every program reads it.
    ipc/      what crosses the master-worker boundary: the pipe's messages and wire
              format (messages), the shared-memory layouts of register banks (banks) and
              counters (stats), and how a worker is spawned (spawn).
    master/   the master process: run (start to stop), listeners (binds every port),
              supervisor (spawns, watches, restarts workers; with slot, processes,
              watchdog, workerpipe), api and metrics (HTTP; worker_metrics),
              faults (the fault table: when each fault starts and ends, who applies it),
              with fault_entry and fault_effects (applying faults to workers),
              fleetview (with fleetlayout, fleetstream) and pages (the live page at /,
              its files in master/web/), logs
              (the farm's one log), state (banks saved to and restored from a file).
    worker/   a worker process: process (its loop; with switch and membership, its
              servers), connection (Modbus over TCP), engine (a device's answers; the only
              module that imports pymodbus), fastpath, ticker, faultbook and faults
              (how a faulted server answers) and outbox (answers that must wait), framing
              (MBAP and RTU answers), rtu_over_tcp, udp, tls (other transports), limits
              (connection limits and timeouts on a timer wheel), events (its log lines,
              sent to the master).
    bench/    the load generator, a program of its own.
    client/   the one client of the control API (the CLI, bench and users' own tests):
              api (FarmClient, the only HTTP to the API), answers (what calls return),
              options (the API's command-line options); fault_targets.py, its fault
              targets (Fleet, Glob, Fraction, ...).
    cli/      the `farm` command.
    pytest_plugin.py  the `modbus_farm` fixture: farms for a test suite, through client/.
    errors.py the errors a user can meet, each one line.
    output.py how the CLI and bench print: user text literally, whole table rows in a pipe.
    limits.py the open-files limit, raised the same way by every program.
    rtu.py    RTU framing arithmetic (CRC-16, frame lengths): the worker and bench speak it.

Imports follow the arrows: config imports none of the others; ipc imports config;
master and worker import config and ipc, never each other; bench imports client and
config; errors, limits, output and rtu are for everyone. tests/test_layout.py keeps these contracts.
"""

__version__ = "0.1.0"
