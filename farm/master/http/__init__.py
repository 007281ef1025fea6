"""The control API: aiohttp on the master, every route declared with its models.

app (builds the aiohttp application from the route tables), core (the routes served from
the first moment: status, ready, shutdown; the door to the rest, loaded later), routes (a
route and its pydantic models), openapi (the OpenAPI 3.1 document made from them), access
(who may change the farm: token, Origin, content type), probes (live and ready), servers
(the server list, one server, its counters; stop and start), values (registers and points,
read and written), targets (the device list a SCADA imports), faults (the fault routes),
fleets (scaling a fleet), scenario (the scenario routes).
    observe/   what the system under test did: journal (a server's write journal), clients
               (who polls, how often; the report), trace (a live trace of a server)
"""
