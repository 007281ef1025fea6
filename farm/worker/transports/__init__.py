"""How a worker serves a server on the socket the master bound, by transport.

connection (ModbusConnection: MBAP on a TCP stream, its backpressure and chunked reads),
rtu_over_tcp (RTU frames on a TCP stream), udp (one MBAP frame per datagram), tls (MBAP
inside TLS), serving (Transports: starts a server by its transport).
"""
