"""What crosses the boundary between the master and its workers.

messages: the pipe's messages and their wire format (nothing else knows it);
channel: one end of the pipe on an event loop, read and written without blocking;
banks: the shared-memory layout of register banks; stats: of per-server counters;
diagnostics: of a server's diagnostics block (FC 08, 11, 12); journal: of every server's
write journal; polling: what a worker says of its servers' clients; tracing: what it traced;
spawn: how a worker is started and how it says it cannot boot. Imports only farm.config.
"""
