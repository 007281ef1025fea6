"""The master process: binds every port, supervises the workers, serves HTTP.

run (a farm from start to stop), listeners (binding), supervisor (spawn, watch, restart),
api (the control API), metrics (the Prometheus exposition). Only the master handles
signals. Imports farm.config and farm.ipc, never farm.worker (so never pymodbus).
"""
