//! The EDNS Client Subnet option (RFC 7871): read from a query's OPT, and
//! written back into the reply's with the scope the answer depended on.
//!
//! Hand-written rather than `domain`'s `ClientSubnet`: that type masks
//! stray address bits and clamps prefix lengths silently, where RFC 7871
//! section 6 asks a server to answer FORMERR, and the fast path needs the
//! option from raw bytes without parsing the message.

/// The option code of ECS.
pub(crate) const CODE: u16 = 8;

/// Why an ECS option is refused with FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A query's client subnet: family, source prefix and address, as checked
/// by [`ClientSubnet::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientSubnet {
    v6: bool,
    source_prefix: u8,
    /// The address's first `source_prefix` bits, network order, zero
    /// beyond them.
    address: [u8; 16],
}

impl ClientSubnet {
    /// Reads the option's data (what follows its code and length). Refuses
    /// an unknown family, a source prefix longer than the family's
    /// addresses, address octets other than the prefix needs, bits set
    /// past the prefix, and a scope other than 0 (RFC 7871 section 6).
    pub(crate) fn parse(data: &[u8]) -> Result<ClientSubnet, Malformed> {
        let [f0, f1, source_prefix, scope, address @ ..] = data else {
            return Err(Malformed);
        };
        let v6 = match u16::from_be_bytes([*f0, *f1]) {
            1 => false,
            2 => true,
            _ => return Err(Malformed),
        };
        let width = if v6 { 128 } else { 32 };
        if *source_prefix > width || *scope != 0 {
            return Err(Malformed);
        }
        if address.len() != usize::from(source_prefix.div_ceil(8)) {
            return Err(Malformed);
        }
        let mut full = [0; 16];
        full[..address.len()].copy_from_slice(address);
        let subnet = ClientSubnet {
            v6,
            source_prefix: *source_prefix,
            address: full,
        };
        let stray = subnet.bits() & !mask(subnet.width(), *source_prefix);
        if stray != 0 {
            return Err(Malformed);
        }
        Ok(subnet)
    }

    /// Whether the family is IPv6.
    pub(crate) fn is_v6(&self) -> bool {
        self.v6
    }

    /// The source prefix length: 0 when the client opted out.
    pub(crate) fn source_prefix(&self) -> u8 {
        self.source_prefix
    }

    /// Bits in an address of the family: 32 or 128.
    pub(crate) fn width(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// The address as a number of [`ClientSubnet::width`] bits.
    pub(crate) fn bits(&self) -> u128 {
        if self.v6 {
            u128::from_be_bytes(self.address)
        } else {
            let [a, b, c, d, ..] = self.address;
            u128::from(u32::from_be_bytes([a, b, c, d]))
        }
    }

    /// Address octets on the wire.
    fn octets(&self) -> usize {
        usize::from(self.source_prefix.div_ceil(8))
    }

    /// Bytes of the whole option: code, length and data.
    pub(crate) fn wire_len(&self) -> usize {
        4 + self.data_len()
    }

    /// Bytes of the option's data.
    pub(crate) fn data_len(&self) -> usize {
        4 + self.octets()
    }

    /// The option's data as the reply carries it: family, source prefix
    /// and address as received, and `scope`. Returns the bytes written into
    /// `out`, which must hold [`ClientSubnet::data_len`].
    pub(crate) fn write_data(&self, scope: u8, out: &mut [u8]) -> usize {
        let family: u16 = if self.v6 { 2 } else { 1 };
        let [f0, f1] = family.to_be_bytes();
        out[..4].copy_from_slice(&[f0, f1, self.source_prefix, scope]);
        let octets = self.octets();
        out[4..4 + octets].copy_from_slice(&self.address[..octets]);
        4 + octets
    }

    /// Appends the whole option (code, length, data) to `reply`.
    pub(crate) fn append(&self, scope: u8, reply: &mut Vec<u8>) {
        let mut option = [0; 4 + 4 + 16];
        option[..2].copy_from_slice(&CODE.to_be_bytes());
        // At most 20, so the length fits in 16 bits.
        option[2..4].copy_from_slice(&(self.data_len() as u16).to_be_bytes());
        let written = self.write_data(scope, &mut option[4..]);
        reply.extend_from_slice(&option[..4 + written]);
    }
}

/// The mask of the first `len` bits of a `width`-bit address, as a number.
pub(crate) fn mask(width: u8, len: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match len {
        0 => 0,
        n if n >= width => all,
        n => all & !(all >> n),
    }
}

/// Reads an OPT record's options (its data): the ECS option if there is
/// one; `Err` when an option overruns the data, or when ECS is malformed
/// or given twice. `ecs` false: ECS is not looked at (`--client-subnet
/// false`), only the layout is checked.
pub(crate) fn find(mut options: &[u8], ecs: bool) -> Result<Option<ClientSubnet>, Malformed> {
    let mut found = None;
    while let [c0, c1, l0, l1, rest @ ..] = options {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let (data, next) = rest.split_at_checked(len).ok_or(Malformed)?;
        if ecs && u16::from_be_bytes([*c0, *c1]) == CODE {
            if found.is_some() {
                return Err(Malformed);
            }
            found = Some(ClientSubnet::parse(data)?);
        }
        options = next;
    }
    if options.is_empty() {
        Ok(found)
    } else {
        Err(Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
        let mut data = family.to_be_bytes().to_vec();
        data.extend([source, scope]);
        data.extend_from_slice(address);
        let mut option = CODE.to_be_bytes().to_vec();
        option.extend((data.len() as u16).to_be_bytes());
        option.extend(data);
        option
    }

    #[test]
    fn a_subnet_reads_and_writes_back_with_the_scope() {
        let bytes = option(1, 24, 0, &[10, 1, 2]);
        let subnet = find(&bytes, true).unwrap().unwrap();
        assert_eq!((subnet.source_prefix(), subnet.width()), (24, 32));
        assert_eq!(subnet.bits(), 0x0a01_0200);
        let mut reply = Vec::new();
        subnet.append(16, &mut reply);
        assert_eq!(reply, option(1, 24, 16, &[10, 1, 2]));
        assert_eq!(subnet.wire_len(), reply.len());

        let v6 = option(2, 56, 0, &[0xfd, 0, 0, 1, 0, 0, 0x10]);
        let subnet = find(&v6, true).unwrap().unwrap();
        assert!(subnet.is_v6());
        let want: std::net::Ipv6Addr = "fd00:1:0:1000::".parse().unwrap();
        assert_eq!(subnet.bits(), u128::from(want));
    }

    #[test]
    fn a_zero_prefix_has_no_address_octets() {
        let subnet = find(&option(1, 0, 0, &[]), true).unwrap().unwrap();
        assert_eq!((subnet.source_prefix(), subnet.bits()), (0, 0));
    }

    #[test]
    fn malformed_subnets_are_refused() {
        for bad in [
            option(3, 8, 0, &[10]),             // unknown family
            option(1, 33, 0, &[1, 2, 3, 4, 5]), // prefix too long
            option(2, 129, 0, &[0; 17]),        // prefix too long
            option(1, 24, 0, &[10, 1]),         // too few octets
            option(1, 16, 0, &[10, 1, 2]),      // too many octets
            option(1, 23, 0, &[10, 1, 3]),      // a bit past the prefix
            option(1, 24, 8, &[10, 1, 2]),      // scope set in a query
            option(1, 0, 0, &[])[..6].to_vec(), // shorter than its header
        ] {
            assert_eq!(find(&bad, true), Err(Malformed), "{bad:?}");
        }
        let twice = [option(1, 8, 0, &[10]), option(1, 8, 0, &[10])].concat();
        assert_eq!(find(&twice, true), Err(Malformed));
    }

    #[test]
    fn other_options_pass_and_ecs_is_ignored_when_off() {
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let ecs = option(1, 24, 0, &[10, 1, 2]);
        let both = [&cookie[..], &ecs].concat();
        assert!(find(&both, true).unwrap().is_some());
        assert_eq!(find(&both, false), Ok(None));
        assert_eq!(find(&cookie, true), Ok(None));
        // Malformed ECS is not looked at when off; a broken layout still is.
        assert_eq!(find(&option(9, 0, 0, &[]), false), Ok(None));
        assert_eq!(find(&cookie[..7], false), Err(Malformed));
    }

    #[test]
    fn masks_cover_the_first_bits() {
        assert_eq!(mask(32, 0), 0);
        assert_eq!(mask(32, 8), 0xff00_0000);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(128, 1), 1 << 127);
        assert_eq!(mask(128, 128), u128::MAX);
    }
}
