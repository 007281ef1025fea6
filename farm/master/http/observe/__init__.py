"""The routes that tell what the system under test did (the data: farm.master.observe).

journal (GET /api/v1/servers/{name}/writes), clients (GET /api/v1/clients and
GET /api/v1/report), trace (GET /api/v1/servers/{name}/trace).
"""
