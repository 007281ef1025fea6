"""The master process: binds every port, supervises the workers, serves HTTP.

run (a farm from start to stop: bind, start the workers, then the rest), api (the control
API's first part, status and ready, listening while the workers boot), wiring (the rest:
the services and the API's other routes over the supervisor, loaded once the workers are up
or at the first request for them), options (how the master is run), logs (the farm's one
log: its own lines and the workers' events) and logwriter (the thread that writes them, so
a stalled reader never stalls the farm) sit here; the rest is one subpackage per concern:
    supervision/  spawn, watch, restart workers; the ports they serve (listeners)
    http/         the control API: the aiohttp app, its routes, OpenAPI, access checks
    faults/       the fault table and its effects on workers
    fleet/        the servers by name (inventory); stop/start (switch) and scale
    scenario/     the scenario player
    state/        the bank state file: its format, saves while running, restore at start
    metrics/      the Prometheus exposition
    fleetview/    the live page at / and its stream (its files in fleetview/web/)
    observe/      what the system under test did: its clients, their polling, the report
Only the master handles signals. Imports farm.config and farm.ipc, never farm.worker (so
never pymodbus).
"""
