"""The state file: every bank of the farm saved to a file and restored at the next start.

statefile (the file's format: reading, checking, writing it atomically), layout (where each
server's ranges lie for a save), saver (saves while the farm runs), marker
(the sidecar FILE.failed: when the last save failed), restore (a start from a
state file: the plan at its saved size, then the banks).
"""
