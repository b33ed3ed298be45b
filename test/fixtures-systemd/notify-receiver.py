"""A fake systemd NOTIFY_SOCKET: an AF_UNIX datagram socket (which Node cannot open).

Usage: notify-receiver.py SOCKET_PATH
Prints {"ready": true} once bound, then one JSON line per datagram:
{"fields": {"KEY": "VALUE", ...}, "fds": N}. File descriptors passed along (the
BARRIER=1 fd of systemd-notify) are closed at once, which is what releases the
sender's barrier wait, as systemd does.
"""
import array
import json
import os
import socket
import sys

path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"ready": True}), flush=True)
while True:
    data, ancdata, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4) + socket.CMSG_SPACE(12))
    fds = 0
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - (len(payload) % arr.itemsize)])
            for fd in arr:
                os.close(fd)
                fds += 1
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[0:4], "little")
    fields = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if "=" in line:
            k, v = line.split("=", 1)
            fields[k] = v
    print(json.dumps({"fields": fields, "fds": fds, "senderPid": pid}), flush=True)
