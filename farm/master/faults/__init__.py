"""The fault table: which faults are active on which servers, and their effects.

table (FaultTable: resolution, timers, state, queries), entry (a Fault and how it reads in
the API and the log), effects (sending each worker its faults and awaiting confirmation;
offline and reboot taking servers down and bringing them back), values (value faults as
the control API reads them).
"""
