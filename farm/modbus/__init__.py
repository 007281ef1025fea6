"""The Modbus wire format, shared by the worker, the load generator, benchmarks and tests.

rtu (CRC-16 and RTU frame lengths).
"""
