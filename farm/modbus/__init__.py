"""The Modbus wire format, shared by the worker, the load generator, benchmarks and tests:
pure bytes, no worker state, no banks; imports nothing else of the farm.

mbap (Modbus/TCP's 7-byte header: build, check, size a frame), rtu (RTU frames: CRC-16 and
how long a frame is), pdu (function and exception codes, request builders, answer parsers),
deviceid (Read Device Identification, FC 43/14: answers split to fit, conformity level).
"""
