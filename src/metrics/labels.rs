//! The label values of the counter families, as enums: a counter array
//! indexed by variant needs no map on the packet path, and `ALL` lets the
//! exposition write every label value, zeros included.

use std::fmt;

/// Declares a label enum with its variants' label values, `ALL` and `COUNT`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every variant, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// How many variants there are.
            pub const COUNT: usize = $name::ALL.len();

            /// The label value written for this variant.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

label_enum! {
    /// The `qtype` label: the query types this server treats specially.
    QueryType {
        A => "A",
        Aaaa => "AAAA",
        Soa => "SOA",
        Ns => "NS",
        Any => "ANY",
        /// Any other type, and queries whose question could not be read.
        Other => "other",
    }
}

impl QueryType {
    /// The label for a QTYPE number from the question.
    #[inline]
    pub const fn from_code(qtype: u16) -> QueryType {
        match qtype {
            1 => QueryType::A,
            28 => QueryType::Aaaa,
            6 => QueryType::Soa,
            2 => QueryType::Ns,
            255 => QueryType::Any,
            _ => QueryType::Other,
        }
    }
}

label_enum! {
    /// The `rcode` label of a response.
    Rcode {
        NoError => "NOERROR",
        FormErr => "FORMERR",
        ServFail => "SERVFAIL",
        NxDomain => "NXDOMAIN",
        NotImp => "NOTIMP",
        Refused => "REFUSED",
        /// Extended RCODE 16, from an OPT record with a version other than 0.
        BadVers => "BADVERS",
        Other => "other",
    }
}

impl Rcode {
    /// The label for a (possibly extended, 12-bit) RCODE number.
    #[inline]
    pub const fn from_code(rcode: u16) -> Rcode {
        match rcode {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => Rcode::Other,
        }
    }
}

label_enum! {
    /// The `reason` label of a packet dropped without any response.
    DropReason {
        /// Shorter than a DNS header.
        TooShort => "too_short",
        /// The QR bit was set: a response, not a query.
        ResponseBit => "response_bit",
        /// From source port 0, which cannot be answered.
        SourcePortZero => "source_port_zero",
        /// The source is not in the allow list and the policy is to drop.
        AccessDenied => "access_denied",
        /// Over the response rate limit and not slipped.
        RateLimited => "rate_limited",
        /// The forwarder's queue was full.
        ForwardQueueFull => "forward_queue_full",
        /// The reply could not be sent.
        SendFailed => "send_failed",
    }
}

label_enum! {
    /// The `result` label of a refresh request or a health probe.
    Outcome {
        Ok => "ok",
        Error => "error",
    }
}

label_enum! {
    /// The `reason` label of a node taken out of the answers.
    RemovalReason {
        /// Its connection was refused: nothing listens on the port.
        Refused => "refused",
        /// It closed or reset the probe's connection before answering.
        Closed => "closed",
        /// Its probes timed out.
        Timeout => "timeout",
        /// Its probes got an error status.
        Status => "status",
        /// Its probes failed otherwise (unreachable, TLS, not HTTP).
        Error => "error",
        /// `/localnodes` no longer lists it.
        Unlisted => "unlisted",
    }
}
