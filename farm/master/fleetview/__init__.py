"""The fleet view: the live page at / and the stream that keeps it current.

view (FleetView: the producer of every open page's events), layout (where each server
sits on the page), stream (one open page's queue of server-sent events), history (every
server's last five minutes, for the page's charts), pages (the page's routes; its files in
web/).
"""
