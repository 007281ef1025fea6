"""modbus-farm: a farm of simulated Modbus TCP devices.

Data flows config -> plan -> supervisor -> worker -> engine -> banks -> metrics -> api -> cli;
each module's docstring says where it sits in that flow.
"""

__version__ = "0.1.0"
