"""A worker process: one uvloop loop serving its shard of servers.

process (boot, pipe, heartbeats, stop), switch (servers stopped and started) and
membership (servers joining and leaving), connection (one Modbus TCP connection: MBAP, its
backpressure), engine (a device's answers; the only module that imports pymodbus), fastpath
(the hot function codes straight from the banks), limits (connection limits and timeouts) on
wheel (one timer wheel per worker), events (what the worker says, sent to the master's log),
ticker (live values on schedule), faultbook (which server has which faults), faults, outbox
and values (how a faulted server answers), framing (MBAP and RTU answers, and garbled ones),
rtu_over_tcp, udp and tls (the other transports).
Imports farm.config and farm.ipc, never farm.master.
"""
