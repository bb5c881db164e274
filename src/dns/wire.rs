//! Small reads and writes of raw DNS messages, for the places that must not
//! pay for a full parse: counting a query's type, refusing a source, slipping
//! a rate-limited answer, failing a forwarded query.

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// End offset of the first question of `msg` when its name is written out in
/// full (no compression pointer, which a first name cannot use anyway) and
/// the question is complete.
pub fn question_end(msg: &[u8]) -> Option<usize> {
    if msg.len() < HEADER_LEN || msg[4..6] == [0, 0] {
        return None;
    }
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 1 + 4;
    (end <= msg.len() && end - HEADER_LEN <= 255 + 4).then_some(end)
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
