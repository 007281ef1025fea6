"""Scenarios as data: a timeline of faults, values, stops, starts and scaling.

model (the `scenario:` section's models, validated at the boundary), check (a scenario
checked against the farm it will act on: its fleets, servers, points and scale steps).
"""
