//! Small reads and writes of raw DNS messages, for the places that must not
//! pay for a full parse: finding a query's question, counting its type,
//! refusing a source, slipping a rate-limited answer, failing a forwarded
//! query.
//!
//! [`name_len`] is the one walk over a question name on the wire: the answer
//! path's fast and general paths, the zone's name comparison, the metrics'
//! type count and the forwarder all find the question through it, so they
//! agree on which names are readable.

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// Longest name on the wire, root label included (RFC 1035 section 3.1).
pub const MAX_NAME_LEN: usize = 255;

/// Length, root label included, of the name at the start of `wire` when it
/// is written out label by label; `None` for a compression pointer or a
/// reserved label type, a name cut short, or one longer than
/// [`MAX_NAME_LEN`].
///
/// A question's name is the first name of its message, so a pointer in it
/// could only point into the header, which holds no name, or loop (RFC 1035
/// section 4.1.4): every reader of a question refuses pointers alike.
pub fn name_len(wire: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match *wire.get(at)? {
            0 => return Some(at + 1),
            len @ 1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
        // The root label still follows: the name would be longer still.
        if at >= MAX_NAME_LEN {
            return None;
        }
    }
}

/// End offset of the first question of `msg` when its name is written out in
/// full (see [`name_len`]) and the question is complete.
pub fn question_end(msg: &[u8]) -> Option<usize> {
    if msg.len() < HEADER_LEN || msg[4..6] == [0, 0] {
        return None;
    }
    let end = HEADER_LEN + name_len(&msg[HEADER_LEN..])? + 4;
    (end <= msg.len()).then_some(end)
}

/// The QTYPE of the first question, if it can be read.
pub fn question_type(msg: &[u8]) -> Option<u16> {
    let end = question_end(msg)?;
    Some(u16::from_be_bytes([msg[end - 4], msg[end - 3]]))
}

/// Writes into `reply` a response to `query` with only its header and
/// question: ID, opcode and RD copied, QR set, `rcode`, TC as given, RA as
/// given. Returns false (and leaves `reply` empty) when the question cannot
/// be read.
pub fn short_reply(
    query: &[u8],
    rcode: u8,
    truncated: bool,
    recursion: bool,
    reply: &mut Vec<u8>,
) -> bool {
    reply.clear();
    let Some(end) = question_end(query) else {
        return false;
    };
    reply.extend_from_slice(&query[..end]);
    reply[2] = 0x80 | (query[2] & 0x79) | if truncated { 0x02 } else { 0 };
    reply[3] = (rcode & 0x0f) | if recursion { 0x80 } else { 0 };
    reply[4..HEADER_LEN].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    true
}

/// Cuts a response down to its header and question and sets TC, so that the
/// client asks again over TCP. False when the question cannot be read.
pub fn truncate_to_question(reply: &mut Vec<u8>) -> bool {
    let Some(end) = question_end(reply) else {
        return false;
    };
    reply.truncate(end);
    reply[2] |= 0x02;
    reply[6..HEADER_LEN].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.bc` type 1 class 1, with ID 0x1234 and RD.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn questions_are_found_and_bad_ones_rejected() {
        let q = query();
        assert_eq!(question_end(&q), Some(q.len()));
        assert_eq!(question_type(&q), Some(1));
        assert_eq!(question_end(&q[..q.len() - 1]), None, "class cut short");
        let mut pointer = q.clone();
        pointer[12] = 0xc0;
        assert_eq!(question_end(&pointer), None);
        let mut none = q.clone();
        none[5] = 0;
        assert_eq!(question_end(&none), None);
        assert_eq!(question_end(&q[..5]), None);
    }

    #[test]
    fn names_are_walked_to_their_root_label_and_no_further_than_255_bytes() {
        assert_eq!(name_len(&[0]), Some(1));
        assert_eq!(name_len(&[1, b'a', 0, 0xff]), Some(3));
        assert_eq!(name_len(&[1, b'a']), None, "cut short");
        for reserved in [0x40, 0x80, 0xc0] {
            assert_eq!(name_len(&[1, b'a', reserved, 12]), None, "{reserved:#x}");
        }
        // Three labels of 63 bytes and one of 61: 255 bytes with the root.
        let mut longest = Vec::new();
        for _ in 0..3 {
            longest.push(63);
            longest.extend_from_slice(&[b'x'; 63]);
        }
        longest.push(61);
        longest.extend_from_slice(&[b'y'; 61]);
        longest.push(0);
        assert_eq!(longest.len(), MAX_NAME_LEN);
        assert_eq!(name_len(&longest), Some(MAX_NAME_LEN));
        let mut longer = longest.clone();
        longer.splice(longer.len() - 1.., [1, b'z', 0]);
        assert_eq!(name_len(&longer), None, "257 bytes");
    }

    #[test]
    fn short_replies_keep_id_rd_and_question() {
        let q = query();
        let mut reply = Vec::new();
        assert!(short_reply(&q, 5, false, false, &mut reply));
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[2], 0x81, "QR and RD");
        assert_eq!(reply[3], 5, "REFUSED");
        assert_eq!(&reply[12..], &q[12..]);
        assert!(short_reply(&q, 2, false, true, &mut reply));
        assert_eq!(reply[3], 0x82, "RA and SERVFAIL");
        assert!(!short_reply(&q[..14], 5, false, false, &mut reply));
        assert!(reply.is_empty());
    }

    #[test]
    fn truncation_keeps_the_question_and_sets_tc() {
        let mut reply = query();
        reply[2] |= 0x80;
        reply[7] = 1; // pretend one answer follows
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 4, 0, 4, 10, 0, 0, 1]);
        assert!(truncate_to_question(&mut reply));
        assert_eq!(reply.len(), query().len());
        assert_eq!(reply[2] & 0x02, 0x02);
        assert_eq!(&reply[6..12], &[0; 6]);
    }
}
