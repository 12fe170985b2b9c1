"""Runs moto's AWS emulator on a free loopback port for tokenwarden's tests.

Prints "port N" once ready, then serves until standard input closes, so the server dies with
the test process that started it even when that process is killed.
"""
import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(f"port {server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
server.stop()
