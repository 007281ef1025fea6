"""How a faulted server answers in a worker.

book (FaultBook: every server's fault rules, and which ServerFaults each device holds),
hooks (ServerFaults: request faults, acting where the answer is built or in the
connection's outbox), values (value faults: reads that answer a faulted point's reading).
"""
