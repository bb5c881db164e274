"""A small DNS client: query building, reply parsing, UDP with TCP fallback."""

import hashlib
import random
import socket
import struct
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28,
         "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "OPT": 41, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED"}
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010


def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def build_query(name, qtype, qid=None, rd=True, edns=1232, do=False, ad=False):
    qid = random.getrandbits(16) if qid is None else qid
    flags = (RD if rd else 0) | (AD if ad else 0)
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    msg += encode_name(name) + struct.pack("!HH", TYPES[qtype], 1)
    if edns:
        msg += b"\0" + struct.pack("!HHIH", 41, edns, 0x8000 if do else 0, 0)
    return qid, msg


def _read_name(msg, off, depth=0):
    labels = []
    jumped = None
    while True:
        if off >= len(msg):
            raise ValueError("name past end")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if depth > 20:
                raise ValueError("compression loop")
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if jumped is None:
                jumped = off + 2
            off = ptr
            depth += 1
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    name = ".".join(labels) + "." if labels else "."
    return name, (jumped if jumped is not None else off)


class Reply:
    """A parsed reply: id, flags, rcode, and the records of each section."""

    def __init__(self, data):
        if len(data) < 12:
            raise ValueError("short reply")
        self.raw = data
        (self.id, self.flags, qd, an, ns, ar) = struct.unpack("!HHHHHH", data[:12])
        self.rcode = self.flags & 0xF
        off = 12
        self.question = None
        for _ in range(qd):
            name, off = _read_name(data, off)
            qt, qc = struct.unpack("!HH", data[off:off + 4])
            off += 4
            self.question = (name, qt)
        self.answer, off = self._rrs(data, off, an)
        self.authority, off = self._rrs(data, off, ns)
        self.additional, off = self._rrs(data, off, ar)
        for r in self.additional:
            if r[1] == 41:
                self.rcode |= (r[2] >> 24) << 4  # extended rcode from the OPT TTL

    @staticmethod
    def _rrs(data, off, count):
        out = []
        for _ in range(count):
            name, off = _read_name(data, off)
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
            off += 10
            rdata_off = off
            off += rdlen
            if off > len(data):
                raise ValueError("record past end")
            out.append((name, rtype, ttl, _rdata(data, rdata_off, rtype, rdlen)))
        return out, off

    def has(self, flag):
        return bool(self.flags & flag)

    @property
    def rcode_name(self):
        return RCODES.get(self.rcode, str(self.rcode))

    def addresses(self, rtype=1):
        return [r[3] for r in self.answer if r[1] == rtype]

    def rrs(self, rtype, section="answer"):
        return [r for r in getattr(self, section) if r[1] == rtype]


def _rdata(msg, off, rtype, rdlen):
    raw = msg[off:off + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    if rtype in (2, 5, 12):
        return _read_name(msg, off)[0]
    if rtype == 6:
        mname, o = _read_name(msg, off)
        rname, o = _read_name(msg, o)
        return (mname, rname) + struct.unpack("!IIIII", msg[o:o + 20])
    return raw


def first_address(data):
    """The first A record's address of a reply, without a full parse (fast path)."""
    return Reply(data).addresses()


def udp_query(server, name, qtype, timeout=2.0, rd=True, edns=1232, do=False, ad=False,
              sock_factory=None, tcp_factory=None, tcp_fallback=True, port=53):
    """One query; returns (Reply, transport) or raises socket.timeout/OSError."""
    qid, msg = build_query(name, qtype, rd=rd, edns=edns, do=do, ad=ad)
    s = sock_factory() if sock_factory else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((server, port))
        s.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = s.recv(65535)
            try:
                r = Reply(data)
            except ValueError:
                continue
            if r.id == qid and r.has(QR):
                break
    finally:
        s.close()
    if r.has(TC) and tcp_fallback:
        return tcp_query(server, name, qtype, timeout, rd, edns, do, ad, tcp_factory,
                         port), "tcp"
    return r, "udp"


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def tcp_query(server, name, qtype, timeout=3.0, rd=True, edns=1232, do=False, ad=False,
              sock_factory=None, port=53):
    qid, msg = build_query(name, qtype, rd=rd, edns=edns, do=do, ad=ad)
    s = sock_factory() if sock_factory else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((server, port))
        s.sendall(struct.pack("!H", len(msg)) + msg)
        (n,) = struct.unpack("!H", _recv_exact(s, 2))
        r = Reply(_recv_exact(s, n))
    finally:
        s.close()
    if r.id != qid:
        raise OSError("TCP reply with another ID")
    return r


def ds_from_dnskey(owner, rdata, digest_type=2):
    """(key tag, algorithm, digest type, hex digest) of a DNSKEY's DS (RFC 4034)."""
    acc = 0
    for i, b in enumerate(rdata):
        acc += b if i & 1 else b << 8
    acc += (acc >> 16) & 0xFFFF
    keytag = acc & 0xFFFF
    algorithm = rdata[3]
    digest = hashlib.sha256(encode_name(owner.lower()) + rdata).hexdigest().upper()
    return keytag, algorithm, digest_type, digest


def dnskey_text(rdata):
    import base64
    flags, proto, alg = struct.unpack("!HBB", rdata[:4])
    return f"{flags} {proto} {alg} {base64.b64encode(rdata[4:]).decode()}"
