"""The master process: binds every port, supervises the workers, serves HTTP.

run (a farm from start to stop), listeners (binding, the open-files budget), supervisor
(spawn, watch, restart; its parts: slot, processes, watchdog, workerpipe), switch (stop and
start single servers), inventory (every server by name, its banks and counters), api
(assembles the control API from route tables: routes, openapi, api_servers, api_values,
api_targets, probes; access says who may change the farm through it), metrics (the
Prometheus exposition; worker_metrics its per-worker series), fleetview, fleetlayout and
fleetstream (the fleet view's live stream) with pages (the page at / and its routes; its
files in web/), faults and value_faults (the fault table; fault_entry and fault_effects its
parts), scenario and scenario_steps (the scenario player; api_scenario its routes), logs
(the farm's one log: its own lines and the workers' events), state (the bank state file's
format), staterestore (a start from one: the plan at its saved size, then the banks),
statesaver and statelayout (saves while the farm runs). Only the master handles signals.
Imports farm.config and farm.ipc, never farm.worker (so never pymodbus).
"""
