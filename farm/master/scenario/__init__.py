"""The scenario player: a timeline of faults, writes, stops, starts and scales.

player (ScenarioPlayer: runs one scenario, reports its step), steps (what each step kind
does to the farm).
"""
