"""`farm bench`: a Modbus TCP load generator, a program of its own.

command (the CLI command and its report), spec (options -> load shares), fan (shares over
processes), loadgen (the uvloop engine), connection (one MBAP connection, answers by
transaction id), transports (its kin for TLS, RTU over TCP and UDP), latency
(histograms). Finds a farm's servers through farm.client; imports nothing else of the farm
but config's plain types, errors, openfiles and modbus.
"""
