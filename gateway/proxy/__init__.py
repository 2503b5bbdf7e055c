"""The hot path: route match -> authenticate -> resolve org -> enforce -> forward -> audit.

This package never imports `gateway.api` (a test asserts it).
"""
