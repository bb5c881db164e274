"""Zonemaster on the delegation of alternator.test to the two instances, from
the client namespace with the fake root as hints; each message classified as
concerning the server or caused by the test setting."""

import json
import subprocess
import time

from .util import log

ZONE = "alternator.test"

_SETTING = {
    # Address module: the lab's addresses.
    "NAMESERVER_IP_PRIVATE_NETWORK": "the lab uses 10.53.0.0/16 (RFC 1918); production "
                                     "name servers reachable from the Internet use public "
                                     "addresses",
    "NAMESERVER_IP_WITHOUT_REVERSE": "the fake root has no in-addr.arpa: no PTR can exist "
                                     "in the lab",
    "NAMESERVER_IP_PTR_MISMATCH": "PTR records are the address owner's, not served by "
                                  "alternator-dns; none exist in the lab",
    "NAMESERVER_IP_PTR_MISSING": "no in-addr.arpa in the lab",
    "NAMESERVER_IP_DOCUMENTATION": "lab addressing",
    "NAMESERVER_IP_LOOPBACK": "lab addressing",
    # Connectivity: one subnet, no routing registry in the lab.
    "IPV4_ONE_ASN": "all lab addresses are in one subnet, with no AS data",
    "IPV4_SAME_ASN": "all lab addresses are in one subnet, with no AS data",
    "IPV4_ONE_PREFIX": "the lab has one subnet",
    "CN04_IPV4_SAME_PREFIX": "the lab has one subnet",
    "CN04_IPV4_SINGLE_PREFIX": "the lab has one subnet",
    "CN04_EMPTY_PREFIX_SET": "no routing data (Cymru/RIPE) can be reached from the lab",
    "CN04_ERROR_PREFIX_DATABASE": "no routing data (Cymru/RIPE) can be reached from the lab",
    "ERROR_ASN_DATABASE": "no AS lookup service can be reached from the lab",
    "EMPTY_ASN_SET": "no AS lookup service can be reached from the lab",
    "ASN_INFOS_ANNOUNCE_IN": "no AS data in the lab",
    # IPv6: the lab is IPv4 only and Zonemaster runs with --no-ipv6.
    "NO_IPV6_NS_CHILD": "the lab is IPv4 only (--no-ipv6); alternator-dns serves AAAA "
                        "for in-zone NS names given IPv6 addresses",
    "NO_IPV6_NS_DEL": "the lab is IPv4 only (--no-ipv6)",
    "IPV6_DISABLED": "Zonemaster run with --no-ipv6: the lab has no IPv6",
    "NOT_ENOUGH_IPV6_NS_CHILD": "the lab is IPv4 only",
    "NOT_ENOUGH_IPV6_NS_DEL": "the lab is IPv4 only",
    # DNSSEC: the delegation is insecure on purpose (no DS in the parent).
    "NEITHER_DNSKEY_NOR_DS": "the zone is unsigned and the parent has no DS, by design: "
                             "answers are synthesised per query",
    "NOT_SIGNED": "unsigned by design (random answers per query; see the README)",
    "DS_BUT_NOT_DNSKEY": "lab parent",
}
_SERVER = {
    "NO_GLUE_PREVENTS_NAMESERVER_TESTS": "the NS names do not resolve at the zone's own "
                                         "servers (ns1.<domain> NXDOMAIN): alternator-dns "
                                         "must answer A for in-zone NS names (--ns NAME=ADDR)",
    "CANNOT_CONTINUE": "follows from the message before it",
    "IN_BAILIWICK_ADDR_MISMATCH": "the child's address for an in-zone NS name differs from "
                                  "the parent's glue",
    "CHILD_NS_FAILED": "a name server did not answer for the zone",
    "MULTIPLE_SOA_SERIALS": "the two instances give different SOA serials",
    "MULTIPLE_SOA_TIME_PARAMETER_SET": "the two instances give different SOA timers",
    "MULTIPLE_NS_SET": "the two instances publish different NS sets",
    "Z09_MISSING_MAIL_TARGET": "no MX at the apex (an API endpoint sends no mail; a null "
                               "MX, RFC 7505, would say so)",
}


def classify(tag):
    if tag in _SETTING:
        return "test setting", _SETTING[tag]
    if tag in _SERVER:
        return "server", _SERVER[tag]
    return "server", "not known to be caused by the lab: review"


def run(lab, parent, timeout, level="WARNING"):
    argv = ["zonemaster-cli", "--hints", parent.hints, "--no-ipv6", "--level", level,
            "--json", "--no-progress", "--raw", ZONE]
    log(f"Zonemaster on {ZONE} (bounded to {timeout}s)")
    t0 = time.monotonic()
    try:
        p = subprocess.run(lab.exec_argv(lab.client, argv), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s", "messages": []}
    elapsed = time.monotonic() - t0
    try:
        entries = json.loads(p.stdout)
    except ValueError:
        return {"error": f"exit {p.returncode}: {(p.stdout + p.stderr)[-1500:]}",
                "messages": []}
    msgs = []
    for e in entries:
        cls, why = classify(e.get("tag", ""))
        msgs.append({"level": e.get("level"), "module": e.get("module"),
                     "testcase": e.get("testcase"), "tag": e.get("tag"),
                     "args": e.get("args"), "class": cls, "why": why})
    return {"command": " ".join(argv), "seconds": round(elapsed, 1), "messages": msgs,
            "exit": p.returncode, "level": level}
