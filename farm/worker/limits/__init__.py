"""Connection limits and timeouts in a worker.

guard (ConnectionGuard: per-device and worker-wide caps, idle and frame timeouts), wheel
(one timer wheel per worker, not a timer per connection).
"""
