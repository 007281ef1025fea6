"""A worker process: one uvloop loop serving its shard of servers.

process (boot, servers, heartbeats, stop), engine (one Modbus TCP connection; the only
module that imports pymodbus), fastpath (the hot function codes straight from the banks),
ticker (live values on schedule), faults, outbox and values (how a faulted server answers).
Imports farm.config and farm.ipc, never farm.master.
"""
