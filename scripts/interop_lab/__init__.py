"""Helpers of scripts/interop: a lab of network namespaces in which real
caching resolvers (Unbound, BIND, Knot Resolver, PowerDNS Recursor) iterate
from a DNSSEC-signed fake root to alternator-dns, and measurements of what
their clients get. Standard library only."""
