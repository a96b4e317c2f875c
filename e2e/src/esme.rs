//! A test ESME on the rusmpp codec: it sends exactly what a test says and hands back every PDU
//! as it arrives, so tests can assert order, absence and timing. Used against the SMSC
//! simulator (tests/smsc.rs) and against our own customer-facing SMPP server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smpp_e2e::esme::EsmeError> {
//! use smpp_e2e::esme::{BindType, Esme, Receipt, Submit};
//! let mut esme = Esme::plain(2775).await?;
//! esme.bind(BindType::Transceiver, "customer1", "secret").await?;
//! let id = esme.submit_ok(&Submit::text("hello").receipt(true)).await?;
//! let deliver = esme.expect("a receipt").await?;
//! let receipt = Receipt::from_command(&deliver)?;
//! esme.answer(&deliver).await?;
//! assert_eq!(receipt.receipted_id.as_deref(), Some(id.as_str()));
//! esme.unbind().await?;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm,
};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, MessagePayload, MessageState, RegisteredDelivery,
};
use rusmpp::{Command, CommandId, CommandStatus, Pdu, tokio_codec::CommandCodec};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// How long [`Esme::expect`] waits by default for a PDU that should come. Only bounds a hang.
pub const EXPECT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EsmeError {
    #[error("esme connect to {addr}: {source} (is the server listening there?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("esme TLS handshake with {server_name:?}: {source}")]
    Tls {
        server_name: String,
        source: std::io::Error,
    },
    #[error("esme: invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("esme send: {0} (the peer may have closed the session)")]
    Send(String),
    #[error("esme: expected {what}, got {got}")]
    Unexpected { what: String, got: String },
    #[error("esme: {what} refused with {status:?}")]
    Refused { what: String, status: CommandStatus },
    #[error("esme: field {field} does not fit the PDU: {reason}")]
    Field { field: &'static str, reason: String },
}

type Result<T = (), E = EsmeError> = std::result::Result<T, E>;

/// Bind types (defined with the simulator's config, which names them the same).
pub use crate::smsc::BindType;

/// What reading the connection produced.
#[derive(Debug)]
pub enum Read {
    Pdu(Box<Command>),
    /// The peer closed the connection (EOF, reset, TLS close, or bytes the codec cannot frame).
    Closed,
    /// Nothing arrived within the deadline.
    Silent,
}

/// A submit_sm as a test wants it; [`Submit::text`] fills in the usual addresses.
#[derive(Debug, Clone)]
pub struct Submit {
    pub source: String,
    pub destination: String,
    pub short_message: Vec<u8>,
    pub data_coding: u8,
    pub esm_class: u8,
    pub registered_delivery: bool,
    /// The whole message in the message_payload TLV (then `short_message` is usually empty).
    pub message_payload: Option<Vec<u8>>,
}

impl Submit {
    /// `text` as short_message (data_coding 0), from 12345 to 4915112345678, no receipt.
    pub fn text(text: &str) -> Self {
        Self {
            source: "12345".into(),
            destination: "4915112345678".into(),
            short_message: text.as_bytes().to_vec(),
            data_coding: 0,
            esm_class: 0,
            registered_delivery: false,
            message_payload: None,
        }
    }

    /// A long message: all of `bytes` in message_payload, an empty short_message.
    pub fn payload(bytes: &[u8]) -> Self {
        Self {
            short_message: Vec::new(),
            message_payload: Some(bytes.to_vec()),
            ..Self::text("")
        }
    }

    pub fn receipt(mut self, on: bool) -> Self {
        self.registered_delivery = on;
        self
    }

    pub fn from(mut self, source: &str) -> Self {
        self.source = source.into();
        self
    }

    pub fn to(mut self, destination: &str) -> Self {
        self.destination = destination.into();
        self
    }

    /// Raw data_coding and short_message bytes (e.g. UCS-2, or a UDH with esm_class 0x40).
    pub fn raw(mut self, data_coding: u8, short_message: &[u8]) -> Self {
        self.data_coding = data_coding;
        self.short_message = short_message.to_vec();
        self
    }

    pub fn esm_class(mut self, esm_class: u8) -> Self {
        self.esm_class = esm_class;
        self
    }

    /// The PDU; fails when a field exceeds its SMPP size (address > 20, short_message > 255).
    pub fn to_pdu(&self) -> Result<SubmitSm> {
        let mut sm = SubmitSm::builder()
            .source_addr(cstr("source_addr", &self.source)?)
            .destination_addr(cstr("destination_addr", &self.destination)?)
            .esm_class(EsmClass::from(self.esm_class))
            .registered_delivery(RegisteredDelivery::from(u8::from(self.registered_delivery)))
            .data_coding(DataCoding::from(self.data_coding))
            .short_message(OctetString::from_slice(&self.short_message).map_err(|e| {
                EsmeError::Field {
                    field: "short_message",
                    reason: e.to_string(),
                }
            })?)
            .build();
        if let Some(p) = &self.message_payload {
            sm.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(p)),
            ));
        }
        Ok(sm)
    }
}

fn cstr<const N: usize>(field: &'static str, s: &str) -> Result<COctetString<1, N>> {
    COctetString::from_str(s).map_err(|e| EsmeError::Field {
        field,
        reason: e.to_string(),
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One SMPP session from the client side.
pub struct Esme {
    framed: Framed<Box<dyn Io>, CommandCodec>,
    seq: u32,
    timeout: Duration,
    auto_answer: bool,
    /// deliver_sm that arrived while waiting for a response, with auto-answer off.
    held: std::collections::VecDeque<Command>,
}

impl std::fmt::Debug for Esme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Esme").field("seq", &self.seq).finish()
    }
}

impl Esme {
    /// Plain TCP to 127.0.0.1:`port`.
    pub async fn plain(port: u16) -> Result<Self> {
        Self::connect(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Plain TCP to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        Ok(Self::over(tcp(addr, None).await?))
    }

    /// Plain TCP to `addr` from source address `local` (e.g. 127.0.0.2, for source-IP checks).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> Result<Self> {
        Ok(Self::over(tcp(addr, Some(local)).await?))
    }

    /// TLS to 127.0.0.1:`port`, verified with `config` for `server_name`.
    pub async fn tls(
        port: u16,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self> {
        let tcp = tcp(SocketAddr::from(([127, 0, 0, 1], port)), None).await?;
        Self::tls_over(tcp, config, server_name).await
    }

    /// TLS over an already connected socket (e.g. one from a given source address).
    pub async fn tls_over(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self> {
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|_| EsmeError::ServerName(server_name.into()))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| EsmeError::Tls {
                server_name: server_name.into(),
                source,
            })?;
        Ok(Self::over(tls))
    }

    /// A session over any byte stream.
    pub fn over(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) -> Self {
        Self {
            framed: Framed::new(Box::new(io), CommandCodec::new()),
            seq: 0,
            timeout: EXPECT,
            auto_answer: true,
            held: Default::default(),
        }
    }

    /// How long [`Esme::expect`], [`Esme::response`] and the binds wait (default [`EXPECT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether [`Esme::response`] answers deliver_sm arriving in between with ESME_ROK (the
    /// default). Off, they stay unanswered and come from the next [`Esme::read`] in order.
    pub fn set_auto_answer(&mut self, on: bool) {
        self.auto_answer = on;
    }

    /// Sends `pdu` as a request with the next sequence number, and returns that number.
    pub async fn send(&mut self, pdu: impl Into<Pdu>) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.write(Command::new(CommandStatus::EsmeRok, seq, pdu))
            .await?;
        Ok(seq)
    }

    /// Answers request `to` with `status` and `pdu` (its sequence number).
    pub async fn respond(
        &mut self,
        to: &Command,
        status: CommandStatus,
        pdu: impl Into<Pdu>,
    ) -> Result {
        self.write(Command::new(status, to.sequence_number(), pdu))
            .await
    }

    /// Answers a deliver_sm with an ESME_ROK deliver_sm_resp.
    pub async fn answer(&mut self, deliver: &Command) -> Result {
        self.answer_with(deliver, CommandStatus::EsmeRok).await
    }

    /// Answers a deliver_sm with `status` (e.g. ESME_RX_T_APPN to have it sent again).
    pub async fn answer_with(&mut self, deliver: &Command, status: CommandStatus) -> Result {
        self.respond(deliver, status, DeliverSmResp::default())
            .await
    }

    /// Writes `bytes` as they are, for malformed-PDU tests.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result {
        let send = |e: std::io::Error| EsmeError::Send(e.to_string());
        // Anything the codec still buffers goes first, so the wire order is the call order.
        SinkExt::<&Command>::flush(&mut self.framed)
            .await
            .map_err(|e| EsmeError::Send(e.to_string()))?;
        let io = self.framed.get_mut();
        io.write_all(bytes).await.map_err(send)?;
        io.flush().await.map_err(send)
    }

    async fn write(&mut self, c: Command) -> Result {
        self.framed
            .send(c)
            .await
            .map_err(|e| EsmeError::Send(e.to_string()))
    }

    /// The next PDU within `within`, or what happened instead.
    pub async fn read(&mut self, within: Duration) -> Read {
        match self.held.pop_front() {
            Some(c) => Read::Pdu(Box::new(c)),
            None => self.read_wire(within).await,
        }
    }

    /// The next PDU off the wire, past held ones (a response is never among them).
    async fn read_wire(&mut self, within: Duration) -> Read {
        match tokio::time::timeout(within, self.framed.next()).await {
            Err(_) => Read::Silent,
            Ok(None) | Ok(Some(Err(_))) => Read::Closed,
            Ok(Some(Ok(c))) => Read::Pdu(Box::new(c)),
        }
    }

    /// The next PDU; an error on close or silence. `what` names it in that error.
    pub async fn expect(&mut self, what: &str) -> Result<Command> {
        match self.read(self.timeout).await {
            Read::Pdu(c) => Ok(*c),
            other => Err(unexpected(what, &other)),
        }
    }

    /// The response to request `seq`; deliver_sm in between are answered (see
    /// [`Esme::set_auto_answer`]), anything else is an error.
    pub async fn response(&mut self, seq: u32, what: &str) -> Result<Command> {
        let mut held = Vec::new();
        let got = loop {
            let c = match self.read_wire(self.timeout).await {
                Read::Pdu(c) => *c,
                other => break Err(unexpected(what, &other)),
            };
            if c.id() == CommandId::DeliverSm {
                if self.auto_answer {
                    self.answer(&c).await?;
                } else {
                    held.push(c);
                }
                continue;
            }
            if c.sequence_number() != seq {
                break Err(unexpected(what, &Read::Pdu(Box::new(c))));
            }
            break Ok(c);
        };
        self.held.extend(held);
        got
    }

    /// Sends a bind and returns what came back: its response (any status), `Closed` or `Silent`.
    pub async fn bind_raw(
        &mut self,
        kind: BindType,
        system_id: &str,
        password: &str,
        version: InterfaceVersion,
    ) -> Result<Read> {
        let (id, pw) = (cstr("system_id", system_id)?, cstr("password", password)?);
        let seq = match kind {
            BindType::Transmitter => {
                self.send(
                    BindTransmitter::builder()
                        .system_id(id)
                        .password(pw)
                        .interface_version(version)
                        .build(),
                )
                .await?
            }
            BindType::Receiver => {
                self.send(
                    BindReceiver::builder()
                        .system_id(id)
                        .password(pw)
                        .interface_version(version)
                        .build(),
                )
                .await?
            }
            BindType::Transceiver => {
                self.send(
                    BindTransceiver::builder()
                        .system_id(id)
                        .password(pw)
                        .interface_version(version)
                        .build(),
                )
                .await?
            }
        };
        let got = self.read_wire(self.timeout).await;
        if let Read::Pdu(c) = &got
            && c.sequence_number() != seq
        {
            return Err(unexpected("the bind response", &got));
        }
        Ok(got)
    }

    /// Binds and returns the bind response's status; an error when no bind response came.
    pub async fn bind_status(
        &mut self,
        kind: BindType,
        system_id: &str,
        password: &str,
        version: InterfaceVersion,
    ) -> Result<CommandStatus> {
        bind_status(self.bind_raw(kind, system_id, password, version).await?)
    }

    /// Binds as SMPP 3.4 and expects ESME_ROK.
    pub async fn bind(&mut self, kind: BindType, system_id: &str, password: &str) -> Result {
        let status = self
            .bind_status(kind, system_id, password, InterfaceVersion::Smpp3_4)
            .await?;
        if status != CommandStatus::EsmeRok {
            return Err(EsmeError::Refused {
                what: format!("bind {kind:?} as {system_id}"),
                status,
            });
        }
        Ok(())
    }

    /// Sends a text submit_sm (see [`Submit::text`]) and returns its sequence number.
    pub async fn submit(&mut self, text: &str, receipt: bool) -> Result<u32> {
        self.submit_sm(&Submit::text(text).receipt(receipt)).await
    }

    /// Sends `sm` and returns its sequence number.
    pub async fn submit_sm(&mut self, sm: &Submit) -> Result<u32> {
        let pdu = sm.to_pdu()?;
        self.send(pdu).await
    }

    /// Sends `sm`, waits for its submit_sm_resp and returns the message id (ESME_ROK only).
    pub async fn submit_ok(&mut self, sm: &Submit) -> Result<String> {
        let seq = self.submit_sm(sm).await?;
        message_id(&self.response(seq, "submit_sm_resp").await?)
    }

    /// enquire_link, expecting an ESME_ROK enquire_link_resp.
    pub async fn enquire_link(&mut self) -> Result {
        let seq = self.send(Pdu::EnquireLink).await?;
        let resp = self.response(seq, "enquire_link_resp").await?;
        expect_ok(&resp, CommandId::EnquireLinkResp, "enquire_link_resp")
    }

    /// unbind, expecting an ESME_ROK unbind_resp.
    pub async fn unbind(&mut self) -> Result {
        let seq = self.send(Pdu::Unbind).await?;
        let resp = self.response(seq, "unbind_resp").await?;
        expect_ok(&resp, CommandId::UnbindResp, "unbind_resp")
    }
}

async fn tcp(addr: SocketAddr, local: Option<IpAddr>) -> Result<TcpStream> {
    let connect = async {
        let s = match local {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        s.set_nodelay(true)?;
        Ok(s)
    };
    connect
        .await
        .map_err(|source| EsmeError::Connect { addr, source })
}

fn unexpected(what: &str, got: &Read) -> EsmeError {
    EsmeError::Unexpected {
        what: what.into(),
        got: format!("{got:?}"),
    }
}

fn expect_ok(resp: &Command, id: CommandId, what: &str) -> Result {
    if resp.id() != id {
        return Err(unexpected(what, &Read::Pdu(Box::new(resp.clone()))));
    }
    if resp.status() != CommandStatus::EsmeRok {
        return Err(EsmeError::Refused {
            what: what.into(),
            status: resp.status(),
        });
    }
    Ok(())
}

/// Decodes one whole PDU (from its command_length on), e.g. out of a PDU trace; `None` when
/// the bytes are not exactly one PDU.
pub fn decode(bytes: &[u8]) -> Option<Command> {
    use tokio_util::codec::Decoder;
    let mut buf = tokio_util::bytes::BytesMut::from(bytes);
    let c = CommandCodec::new().decode(&mut buf).ok()??;
    buf.is_empty().then_some(c)
}

/// The status of a bind response; an error for anything else.
pub fn bind_status(read: Read) -> Result<CommandStatus> {
    match read {
        Read::Pdu(c)
            if matches!(
                c.id(),
                CommandId::BindTransmitterResp
                    | CommandId::BindReceiverResp
                    | CommandId::BindTransceiverResp
            ) =>
        {
            Ok(c.status())
        }
        other => Err(unexpected("a bind response", &other)),
    }
}

/// The message id of a successful submit_sm_resp; an error for anything else.
pub fn message_id(resp: &Command) -> Result<String> {
    match resp.pdu() {
        Some(Pdu::SubmitSmResp(r)) if resp.status() == CommandStatus::EsmeRok => {
            Ok(r.message_id().to_string())
        }
        _ => Err(unexpected(
            "a successful submit_sm_resp",
            &Read::Pdu(Box::new(resp.clone())),
        )),
    }
}

/// A decoded delivery receipt: the text fields and the TLVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// short_message as text (lossy UTF-8).
    pub text: String,
    pub esm_class: u8,
    /// The `id:` field of the text.
    pub id: Option<String>,
    /// The `stat:` field (DELIVRD, UNDELIV, ...).
    pub stat: Option<String>,
    /// The `err:` field.
    pub err: Option<String>,
    /// The receipted_message_id TLV.
    pub receipted_id: Option<String>,
    /// The message_state TLV.
    pub state: Option<MessageState>,
}

impl Receipt {
    /// The receipt in a deliver_sm command; an error for any other PDU.
    pub fn from_command(c: &Command) -> Result<Self> {
        match c.pdu() {
            Some(Pdu::DeliverSm(d)) => Ok(Self::of(d)),
            _ => Err(unexpected("a deliver_sm", &Read::Pdu(Box::new(c.clone())))),
        }
    }

    pub fn of(d: &DeliverSm) -> Self {
        let text = String::from_utf8_lossy(d.short_message().as_ref()).into_owned();
        let field = |k| text_field(&text, k).map(String::from);
        let mut r = Receipt {
            id: field("id"),
            stat: field("stat"),
            err: field("err"),
            esm_class: u8::from(d.esm_class),
            receipted_id: None,
            state: None,
            text: text.clone(),
        };
        for tlv in d.tlvs() {
            match tlv.value() {
                Some(TlvValue::ReceiptedMessageId(id)) => r.receipted_id = Some(id.to_string()),
                Some(TlvValue::MessageState(s)) => r.state = Some(*s),
                _ => {}
            }
        }
        r
    }
}

/// Field `key` of a receipt text ("id:X sub:001 ... stat:DELIVRD err:000 text:..."): the
/// word after `key:`, or for `text` the rest of the line.
pub fn text_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let tag = format!("{key}:");
    let start = std::iter::once(0)
        .chain(text.match_indices(' ').map(|(i, _)| i + 1))
        .find(|&i| text[i..].starts_with(&tag))?
        + tag.len();
    let rest = &text[start..];
    if key == "text" {
        return Some(rest);
    }
    Some(rest.split(' ').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "id:42 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 \
                        stat:DELIVRD err:000 text:hi there id:9";

    #[test]
    fn receipt_text_fields() {
        assert_eq!(text_field(TEXT, "id"), Some("42"));
        assert_eq!(text_field(TEXT, "stat"), Some("DELIVRD"));
        assert_eq!(text_field(TEXT, "err"), Some("000"));
        assert_eq!(text_field(TEXT, "text"), Some("hi there id:9"));
        assert_eq!(text_field(TEXT, "missing"), None);
        assert_eq!(text_field("xid:1", "id"), None, "only at a word start");
    }

    /// The peer end of a pipe, speaking the same codec.
    fn pair() -> (Esme, Framed<tokio::io::DuplexStream, CommandCodec>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (Esme::over(a), Framed::new(b, CommandCodec::new()))
    }

    async fn receipt_then_resp(peer: &mut Framed<tokio::io::DuplexStream, CommandCodec>) {
        let submit = peer.next().await.unwrap().unwrap();
        let deliver = DeliverSm::builder()
            .short_message(OctetString::from_slice(b"id:7 stat:DELIVRD err:000").unwrap())
            .build();
        peer.send(Command::new(CommandStatus::EsmeRok, 90, deliver))
            .await
            .unwrap();
        let resp = rusmpp::pdus::SubmitSmResp::builder()
            .message_id(COctetString::from_str("7").unwrap())
            .build();
        peer.send(Command::new(
            CommandStatus::EsmeRok,
            submit.sequence_number(),
            resp,
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn response_answers_a_receipt_in_between_unless_told_not_to() {
        let (mut esme, mut peer) = pair();
        let (a, b) = (Submit::text("a"), Submit::text("b"));
        let (id, ()) = tokio::join!(esme.submit_ok(&a), receipt_then_resp(&mut peer));
        assert_eq!(id.unwrap(), "7");
        let answer = peer.next().await.unwrap().unwrap();
        assert_eq!(
            (answer.id(), answer.sequence_number()),
            (CommandId::DeliverSmResp, 90)
        );

        esme.set_auto_answer(false);
        let (id, ()) = tokio::join!(esme.submit_ok(&b), receipt_then_resp(&mut peer));
        assert_eq!(id.unwrap(), "7");
        let held = esme.expect("the held receipt").await.unwrap();
        let r = Receipt::from_command(&held).unwrap();
        assert_eq!(
            (r.id.as_deref(), r.stat.as_deref()),
            (Some("7"), Some("DELIVRD"))
        );
        assert!(matches!(
            esme.read(Duration::from_millis(50)).await,
            Read::Silent
        ));
        let unanswered = tokio::time::timeout(Duration::from_millis(50), peer.next()).await;
        assert!(unanswered.is_err(), "nothing was answered: {unanswered:?}");
    }

    #[tokio::test]
    async fn raw_bytes_follow_the_pdus_sent_before_them() {
        let (mut esme, mut peer) = pair();
        esme.send(Pdu::EnquireLink).await.unwrap();
        let enquire_link_99 = [0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 99];
        esme.send_raw(&enquire_link_99).await.unwrap();
        for seq in [1, 99] {
            let c = peer.next().await.unwrap().unwrap();
            assert_eq!((c.id(), c.sequence_number()), (CommandId::EnquireLink, seq));
        }
    }

    #[tokio::test]
    async fn connect_from_uses_the_given_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let local: IpAddr = [127, 0, 0, 2].into();
        let (esme, accepted) = tokio::join!(Esme::connect_from(local, addr), listener.accept());
        esme.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), local);
    }

    #[test]
    fn decode_takes_exactly_one_pdu() {
        use tokio_util::codec::Encoder;
        let c = Command::new(
            CommandStatus::EsmeRok,
            7,
            Submit::text("hi").to_pdu().unwrap(),
        );
        let mut buf = tokio_util::bytes::BytesMut::new();
        CommandCodec::new().encode(&c, &mut buf).unwrap();
        let back = decode(&buf).expect("one PDU");
        assert_eq!(
            (back.id(), back.sequence_number()),
            (CommandId::SubmitSm, 7)
        );
        assert!(decode(&buf[..buf.len() - 1]).is_none(), "truncated");
        let twice = [&buf[..], &buf[..]].concat();
        assert!(decode(&twice).is_none(), "two PDUs");
    }

    #[test]
    fn submit_builds_the_pdu_with_payload_and_raw_fields() {
        let sm = Submit::payload(&[b'x'; 400])
            .receipt(true)
            .raw(8, b"")
            .to_pdu()
            .unwrap();
        assert_eq!(sm.short_message().as_ref(), b"");
        assert_eq!(u8::from(sm.registered_delivery), 1);
        assert_eq!(u8::from(sm.data_coding), 8);
        assert!(matches!(
            sm.tlvs()[0].value(),
            Some(TlvValue::MessagePayload(p)) if p.value.as_ref().len() == 400
        ));
        assert!(Submit::text(&"y".repeat(256)).to_pdu().is_err());
        assert!(Submit::text("a").to(&"1".repeat(21)).to_pdu().is_err());
    }
}
