"""The commands that tell what the system under test did, clients of the control API.

writes (`farm writes`: a server's write journal), clients (`farm clients`: who polls, how
often), report (`farm report`: per client and fleet, and around faults), trace (`farm
trace`: every request and answer of a server), pcap (the capture `farm trace --pcap`
writes).
"""
