//! In-process tests of the control task's claims, over a pipe (the test plays the vendor):
//! an unanswered request expires after the response timeout and gives its window slot back,
//! a request we do not serve gets generic_nack, and a PDU that does not decode is answered,
//! all while the session goes on.

use super::*;
use crate::smpp::codec::Codec;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// Bounds a hang only; nothing here is a speed target.
const HANG: Duration = Duration::from_secs(30);

/// A session over an in-process pipe with `window` and `timeouts`; enquire_link an hour
/// apart, so its schedule cannot be what wakes the control task.
fn session(window: usize, timeouts: Timeouts) -> (SessionHandle, tokio::io::DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let conn = Framed::new(Box::new(ours) as Transport, Codec::new());
    let tunables = Tunables {
        window,
        tps: None,
        enquire_interval: Duration::from_secs(3600),
    };
    let (h, _join) = spawn(
        conn,
        tunables,
        timeouts,
        "v".into(),
        Arc::new(Tracer::default()),
        Arc::new(NoObserver),
    );
    (h, theirs)
}

async fn read_pdu(peer: &mut tokio::io::DuplexStream, buf: &mut BytesMut) -> Command {
    let mut codec = Codec::new();
    loop {
        if let Some(f) = codec.decode(buf).unwrap() {
            return f.unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(HANG, peer.read(&mut chunk))
            .await
            .expect("the session sent nothing")
            .unwrap();
        assert!(n > 0, "the session closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_pdu(peer: &mut tokio::io::DuplexStream, cmd: &Command) {
    let mut b = BytesMut::new();
    Codec::new().encode(cmd, &mut b).unwrap();
    peer.write_all(&b).await.unwrap();
}

fn msg(text: &str) -> Submit {
    Submit {
        source_addr: "1".into(),
        destination_addr: "2".into(),
        short_message: text.as_bytes().to_vec(),
        ..Submit::default()
    }
}

fn submit_sm_resp(seq: u32, id: &str) -> Command {
    Command::new(
        CommandStatus::EsmeRok,
        seq,
        rusmpp::pdus::SubmitSmResp::new(
            rusmpp::types::COctetString::from_string(id.into()).unwrap(),
            Vec::new(),
        ),
    )
}

#[tokio::test]
async fn an_unanswered_submit_expires_and_gives_its_window_slot_back() {
    let response = Duration::from_millis(300);
    let timeouts = Timeouts {
        response,
        ..Timeouts::default()
    };
    // A window of 1: the second submit can only go out once the first one's slot is back.
    let (h, mut peer) = session(1, timeouts);
    let mut buf = BytesMut::new();
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.submit(msg("never answered"), HANG).await }
    });
    let sm = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(sm.id(), CommandId::SubmitSm);
    // Not answered. The session, not the caller's much longer limit, ends the wait: the
    // error carries the response timeout.
    match first.await.unwrap() {
        Err(SubmitError::Timeout(d)) => assert_eq!(d, response, "expired by whom?"),
        other => panic!("want Timeout({response:?}), got {other:?}"),
    }
    let second = tokio::spawn({
        let h = h.clone();
        async move { h.submit(msg("answered"), HANG).await }
    });
    let sm2 = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(sm2.id(), CommandId::SubmitSm);
    assert_ne!(sm2.sequence_number(), sm.sequence_number());
    write_pdu(&mut peer, &submit_sm_resp(sm2.sequence_number(), "m2")).await;
    let got = second
        .await
        .unwrap()
        .expect("the second submit is answered");
    assert_eq!((got.status, got.message_id.as_str()), (0, "m2"));
    // A late answer to the expired one is ignored: the session goes on.
    write_pdu(&mut peer, &submit_sm_resp(sm.sequence_number(), "late")).await;
    write_pdu(&mut peer, &pdu::enquire_link(77)).await;
    let el = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(
        (el.id(), el.sequence_number()),
        (CommandId::EnquireLinkResp, 77)
    );
}

#[tokio::test]
async fn a_request_we_do_not_serve_gets_generic_nack_and_the_session_goes_on() {
    let (_h, mut peer) = session(10, Timeouts::default());
    let mut buf = BytesMut::new();
    // query_sm is an ESME→SMSC request: from the vendor it is nothing we serve.
    let query = Command::new(CommandStatus::EsmeRok, 41, rusmpp::pdus::QuerySm::default());
    write_pdu(&mut peer, &query).await;
    let nack = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(
        (nack.id(), nack.sequence_number(), nack.status()),
        (CommandId::GenericNack, 41, CommandStatus::EsmeRinvcmdid)
    );
    write_pdu(&mut peer, &pdu::enquire_link(42)).await;
    let el = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(
        (el.id(), el.sequence_number()),
        (CommandId::EnquireLinkResp, 42)
    );
}

#[tokio::test]
async fn a_malformed_deliver_sm_is_answered_and_the_session_goes_on() {
    let (h, mut peer) = session(10, Timeouts::default());
    // A deliver_sm (0x00000005, seq 7) whose body is cut short, then an enquire_link.
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0, 0, 0, 19, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, b'x', 0, 9]);
    Codec::new()
        .encode(&pdu::enquire_link(8), &mut out)
        .unwrap();
    peer.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let resp = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(resp.id(), CommandId::DeliverSmResp);
    assert_eq!(resp.sequence_number(), 7);
    assert_eq!(resp.status(), CommandStatus::EsmeRinvtlvstream);
    let el = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(
        (el.id(), el.sequence_number()),
        (CommandId::EnquireLinkResp, 8)
    );
    // And a submit still works on the same session.
    let submit = tokio::spawn({
        let h = h.clone();
        async move { h.submit(msg("x"), HANG).await }
    });
    let sm = read_pdu(&mut peer, &mut buf).await;
    assert_eq!(sm.id(), CommandId::SubmitSm);
    write_pdu(&mut peer, &submit_sm_resp(sm.sequence_number(), "abc")).await;
    let got = submit.await.unwrap().unwrap();
    assert_eq!((got.status, got.message_id.as_str()), (0, "abc"));
}

/// The two tasks of an idle session live as long as the bind: their futures stay small (the
/// graceful unbind, the largest step, is boxed). Limits are for the debug build, whose futures
/// are larger than release ones.
#[tokio::test]
async fn an_idle_sessions_tasks_stay_small() {
    let (ours, _theirs) = tokio::io::duplex(64);
    let (sink, stream) = Framed::new(Box::new(ours) as Transport, Codec::new()).split();
    let (out, out_rx) = mpsc::unbounded_channel();
    let (_requests, req_rx) = mpsc::channel(1);
    let (_tun, tun_rx) = watch::channel(Tunables {
        window: 1,
        tps: None,
        enquire_interval: Duration::from_secs(30),
    });
    let tracer = Arc::new(Tracer::default());
    let observer: Arc<dyn Observer> = Arc::new(NoObserver);
    let ctl = Control {
        out,
        inflight: HashMap::new(),
        order: Default::default(),
        seq: 1,
        vendor: "v".into(),
        tracer: tracer.clone(),
        observer: observer.clone(),
        timeouts: Timeouts::default(),
        enquire: None,
        last_enquire: Instant::now(),
    }
    .run(
        stream,
        req_rx,
        tun_rx,
        CancellationToken::new(),
        Arc::new(Window::new(1)),
    );
    let w = writer(sink, out_rx, "v".into(), tracer, observer);
    let (c, w) = (size_of_val(&ctl), size_of_val(&w));
    println!("control task future: {c} B, writer task future: {w} B");
    assert!(c <= 1536, "the control task's future is {c} B");
    assert!(w <= 1536, "the writer task's future is {w} B");
    // What the queues allocate up front: a block of 32 slots each.
    assert!(size_of::<Request>() <= 64 && size_of::<Box<Command>>() == 8);
}
