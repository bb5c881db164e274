use std::net::SocketAddr;
use std::time::Duration;

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name};
use tokio::net::{TcpListener, UdpSocket};

use super::*;

/// How a fake upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// Answers with the question lowercased and one A record.
    Answers,
    /// First a datagram with another ID, then the right answer.
    WrongIdFirst,
    /// Answers a different question only.
    WrongQuestion,
    /// Answers from another socket (another source port).
    WrongSource,
    Silent,
    /// TC=1 over UDP; the full answer over TCP on the same port.
    Truncates,
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    q.push((
        Name::<Vec<u8>>::vec_from_str(name).unwrap(),
        Rtype::A,
        Class::IN,
    ))
    .unwrap();
    q.finish()
}

/// An answer to `q`: question lowercased, one A record 192.0.2.1.
fn answer_for(q: &[u8], tc: bool) -> Vec<u8> {
    let end = wire::question_end(q).unwrap();
    let mut a = q[..end].to_ascii_lowercase();
    a[..2].copy_from_slice(&q[..2]);
    a[2] = 0x80 | (q[2] & 0x01) | if tc { 0x02 } else { 0 };
    a[3] = 0x80;
    a[6..12].copy_from_slice(&[0, u8::from(!tc), 0, 0, 0, 0]);
    if !tc {
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    a
}

async fn start_upstream(behaviour: Upstream) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    if behaviour == Upstream::Truncates {
        let tcp = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let len = usize::from(stream.read_u16().await.unwrap());
                let mut q = vec![0; len];
                stream.read_exact(&mut q).await.unwrap();
                let a = answer_for(&q, false);
                let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&a);
                stream.write_all(&framed).await.unwrap();
            }
        });
    }
    tokio::spawn(async move {
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let q = buf[..len].to_vec();
            let send = |bytes: Vec<u8>| {
                let socket = &socket;
                async move { socket.send_to(&bytes, from).await.unwrap() }
            };
            match behaviour {
                Upstream::Answers => {
                    send(answer_for(&q, false)).await;
                }
                Upstream::WrongIdFirst => {
                    let mut wrong = answer_for(&q, false);
                    wrong[0] ^= 0xff;
                    send(wrong).await;
                    send(answer_for(&q, false)).await;
                }
                Upstream::WrongQuestion => {
                    let mut other_q = query(0, "other.example");
                    other_q[..2].copy_from_slice(&q[..2]);
                    send(answer_for(&other_q, false)).await;
                }
                Upstream::WrongSource => {
                    other.send_to(&answer_for(&q, false), from).await.unwrap();
                }
                Upstream::Silent => {}
                Upstream::Truncates => {
                    send(answer_for(&q, true)).await;
                }
            }
        }
    });
    addr
}

fn forwarder(upstreams: Vec<SocketAddr>, max_outstanding: usize) -> Forwarder {
    Forwarder::new(ForwardSettings {
        upstreams,
        timeout: Duration::from_millis(200),
        max_outstanding,
    })
}

fn rcode(reply: &[u8]) -> Rcode {
    Message::from_octets(reply).unwrap().header().rcode()
}

#[tokio::test]
async fn answers_come_back_with_the_clients_id_and_question_case() {
    let up = start_upstream(Upstream::Answers).await;
    let q = query(0x4242, "WwW.ExAmPlE.oRg");
    let reply = forwarder(vec![up], 8).resolve(&q).await;
    assert_eq!(&reply[..2], &[0x42, 0x42]);
    let end = wire::question_end(&q).unwrap();
    assert_eq!(&reply[12..end], &q[12..end], "question case restored");
    assert_eq!(rcode(&reply), Rcode::NOERROR);
    assert_eq!(
        Message::from_octets(&reply[..])
            .unwrap()
            .header_counts()
            .ancount(),
        1
    );
}

#[tokio::test]
async fn answers_with_the_wrong_id_are_skipped() {
    let up = start_upstream(Upstream::WrongIdFirst).await;
    let q = query(7, "a.example.org");
    let reply = forwarder(vec![up], 8).resolve(&q).await;
    assert_eq!(rcode(&reply), Rcode::NOERROR);
    assert_eq!(
        Message::from_octets(&reply[..])
            .unwrap()
            .header_counts()
            .ancount(),
        1
    );
}

#[tokio::test]
async fn wrong_questions_and_wrong_sources_are_dropped_and_the_next_upstream_used() {
    let wrong_question = start_upstream(Upstream::WrongQuestion).await;
    let wrong_source = start_upstream(Upstream::WrongSource).await;
    let good = start_upstream(Upstream::Answers).await;
    let f = forwarder(vec![wrong_question, wrong_source, good], 8);
    for id in 0..3 {
        let reply = f.resolve(&query(id, "b.example.org")).await;
        assert_eq!(rcode(&reply), Rcode::NOERROR, "attempt {id}");
        assert_eq!(&reply[..2], &id.to_be_bytes());
    }
    // Only bad upstreams: SERVFAIL, never their answers.
    let f = forwarder(vec![wrong_question, wrong_source], 8);
    let reply = f.resolve(&query(9, "b.example.org")).await;
    assert_eq!(rcode(&reply), Rcode::SERVFAIL);
    assert_eq!(
        Message::from_octets(&reply[..])
            .unwrap()
            .header_counts()
            .ancount(),
        0
    );
}

#[tokio::test]
async fn silent_upstreams_give_servfail_within_their_timeouts() {
    let a = start_upstream(Upstream::Silent).await;
    let b = start_upstream(Upstream::Silent).await;
    let f = forwarder(vec![a, b], 8);
    let started = std::time::Instant::now();
    let reply = f.resolve(&query(3, "c.example.org")).await;
    let took = started.elapsed();
    assert_eq!(rcode(&reply), Rcode::SERVFAIL);
    assert_eq!(&reply[..2], &[0, 3]);
    assert!(reply[2] & 0x80 != 0, "QR set");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn truncated_answers_are_retried_over_tcp() {
    let up = start_upstream(Upstream::Truncates).await;
    let reply = forwarder(vec![up], 8)
        .resolve(&query(5, "d.example.org"))
        .await;
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert!(!msg.header().tc());
    assert_eq!(msg.header_counts().ancount(), 1);
}

#[tokio::test]
async fn queries_beyond_the_cap_get_servfail_at_once() {
    let up = start_upstream(Upstream::Silent).await;
    let f = forwarder(vec![up], 1);
    let busy = tokio::spawn({
        let f = f.clone();
        async move { f.resolve(&query(1, "e.example.org")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let reply = f.resolve(&query(2, "e.example.org")).await;
    assert_eq!(rcode(&reply), Rcode::SERVFAIL);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(rcode(&busy.await.unwrap()), Rcode::SERVFAIL);
}

#[test]
fn servfail_keeps_id_opcode_rd_and_question() {
    let q = query(0xabcd, "f.example.org");
    let end = wire::question_end(&q).unwrap();
    let reply = servfail(&q);
    let msg = Message::from_octets(&reply[..]).unwrap();
    assert_eq!(msg.header().id(), 0xabcd);
    assert!(msg.header().qr() && msg.header().rd());
    assert_eq!(msg.header().rcode(), Rcode::SERVFAIL);
    assert_eq!(&reply[12..], &q[12..end]);
}
