"""The fleet view: the live page at / and the stream that keeps it current.

view (FleetView: the producer of every open page's events), layout (where each server
sits on the page), stream (one open page's queue of server-sent events), pages (the page's
routes; its files in web/).
"""
