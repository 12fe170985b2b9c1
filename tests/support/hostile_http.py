"""A loopback HTTP server that answers every request with a 200 and a chunked body of SIZE
bytes (0: endless): `docs/reliability.md`'s body-size figures. Usage: hostile_http.py PORT SIZE"""
import socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(64)
block = b"{" + b" " * (65536 - 1)
def serve(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while size == 0 or sent < size:
            c.sendall(b"%x\r\n" % len(block) + block + b"\r\n"); sent += len(block)
        c.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
