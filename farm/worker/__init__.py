"""A worker process: one uvloop loop serving its shard of servers.

process (boot, pipe, heartbeats, stop), switch (servers stopped and started) and
membership (servers joining and leaving), engine (a device's answers; the only module that
imports pymodbus), fastpath (the hot function codes straight from the banks), diagnostics
(FC 08 and the device's counters), records (FC 20/21 file records and FC 24 FIFOs), framing
(MBAP and RTU answers, and garbled ones), outbox (answers that must wait, in order), events
(what the worker says, sent to the master's log), ticker (live values on schedule).
    transports/   how a server is served on its socket: connection (Modbus TCP), rtu_over_tcp,
                  udp, tls, serving (starting a server by its transport)
    faults/       how a faulted server answers: book (which server has which faults),
                  hooks (request faults), values (value faults)
    limits/       connection limits and timeouts: guard, on wheel (one timer wheel)
    observe/      what the system under test did: callers (who asks), writes (the journal)
Imports farm.config and farm.ipc, never farm.master.
"""
