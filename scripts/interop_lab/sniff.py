"""A packet capture of the DNS queries reaching alternator-dns inside the lab
namespace (AF_PACKET with a classic BPF filter, standard library only): which
resolver sent how many queries with RD=0 or RD=1, over UDP or TCP."""

import collections
import ctypes
import socket
import struct
import threading

from .netns import in_netns

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
# tcpdump -dd 'ip and (udp dst port 53 or tcp dst port 53)' (no fragments)
_BPF = [
    (0x28, 0, 0, 12), (0x15, 0, 9, 0x0800), (0x30, 0, 0, 23), (0x15, 1, 0, 17),
    (0x15, 0, 6, 6), (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 14),
    (0x48, 0, 0, 16), (0x15, 0, 1, 53), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0),
]


class Sniffer:
    def __init__(self, ns, servers):
        """servers: the destination addresses whose queries are counted."""
        self.servers = set(servers)
        self.counts = collections.Counter()  # (src, dst, transport, rd) -> queries
        self.tcp_connections = collections.Counter()  # (src, dst) -> SYNs
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.error = None
        self.sock = in_netns(ns, lambda: socket.socket(
            socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)))
        prog = b"".join(struct.pack("HBBI", *i) for i in _BPF)
        self._buf = ctypes.create_string_buffer(prog)
        fprog = struct.pack("@HP", len(_BPF), ctypes.addressof(self._buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._loop, name="sniffer", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            while not self.stop_flag.is_set():
                try:
                    frame, addr = self.sock.recvfrom(65535)
                except socket.timeout:
                    continue
                if addr[2] == PACKET_OUTGOING:  # loopback frames are seen twice
                    continue
                self._packet(frame)
        except Exception as e:  # reported, never fatal to the measurements
            self.error = repr(e)

    def _packet(self, f):
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            return
        ihl = (f[14] & 0xF) * 4
        proto = f[23]
        src = socket.inet_ntoa(f[26:30])
        dst = socket.inet_ntoa(f[30:34])
        if dst not in self.servers:
            return
        l4 = 14 + ihl
        if proto == 17:
            dns = f[l4 + 8:]
            transport = "udp"
        elif proto == 6:
            doff = (f[l4 + 12] >> 4) * 4
            flags = f[l4 + 13]
            if flags & 0x02 and not flags & 0x10:  # SYN
                with self.lock:
                    self.tcp_connections[(src, dst)] += 1
            seg = f[l4 + doff:]
            if len(seg) < 14:
                return
            dns = seg[2:]
            transport = "tcp"
        else:
            return
        if len(dns) < 12 or dns[2] & 0x80:  # not a query
            return
        rd = dns[2] & 0x01
        with self.lock:
            self.counts[(src, dst, transport, rd)] += 1

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.counts), collections.Counter(self.tcp_connections)

    def close(self):
        self.stop_flag.set()
        self.thread.join(timeout=2)
        self.sock.close()


def summarize(counts, sources, dsts):
    """{'rd0': n, 'rd1': n, 'udp': n, 'tcp': n} of queries from sources to dsts."""
    out = {"rd0": 0, "rd1": 0, "udp": 0, "tcp": 0}
    for (src, dst, transport, rd), n in counts.items():
        if src in sources and dst in dsts:
            out["rd1" if rd else "rd0"] += n
            out[transport] += n
    return out
