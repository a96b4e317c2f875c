//! Message text → the short-message bodies to submit, per the vendor's messaging settings
//! (`defaultAlphabet`, `longMessages`). Pure: no network, no I/O.
//!
//! # Choosing the alphabet
//!
//! `defaultAlphabet` says what data_coding 0 means to the vendor, so it decides which 7/8-bit
//! alphabet can be used at all; anything that alphabet cannot carry goes as UCS-2.
//!
//! | vendor setting | text                                   | sent as                              | data_coding |
//! |----------------|----------------------------------------|--------------------------------------|-------------|
//! | `Gsm7`         | GSM 03.38 default alphabet + extension | GSM septets, unpacked, one per byte  | `0x00`      |
//! | `Latin1`       | fits ISO-8859-1                        | Latin-1 bytes                        | `0x03`      |
//! | `Ascii`        | pure ASCII                             | ASCII bytes (IA5)                    | `0x01`      |
//! | any            | anything else                          | UCS-2, as UTF-16BE (surrogate pairs) | `0x08`      |
//!
//! * **Latin-1 is sent with `0x03`, not `0`.** `0x03` is "Latin 1 (ISO-8859-1)" in SMPP 3.4 for
//!   every SMSC, so the bytes mean the same thing whatever the vendor's default is; `0` would
//!   only be right as long as the vendor's setting is. A `Latin1` vendor gets no GSM 7-bit: its
//!   data_coding 0 is not GSM, and there is no other data_coding for GSM text.
//! * **ASCII is sent with `0x01` (IA5)**, explicit for the same reason. IA5 is a 7-bit
//!   alphabet the SMSC turns into GSM septets for the air, so its limits are counted in GSM
//!   septets, like GSM: `^{}\[~]|` cost two (ESC + char), everything else one (the backtick, not
//!   in GSM, is substituted by the SMSC one for one). [`Encoded::units`] is that septet count.
//!
//! # Long messages
//!
//! A text that fits one message (160 septets GSM/IA5, 140 bytes Latin-1, 70 UTF-16 units UCS-2)
//! is always one plain part, whatever `longMessages` says: the setting is about long ones.
//! Longer texts:
//! * `Udh`: concatenation UDH `05 00 03 ref total seq` (8-bit reference = low byte of
//!   `reference`) at the start of each short_message, esm_class UDHI. 153 septets / 134 bytes /
//!   67 UTF-16 units per part (the 6-byte UDH takes 7 septets of the 160 on the air).
//! * `Sar`: the same per-part sizes (so an SMSC that turns SAR into a UDH has room for it), no
//!   UDH, `sar` = (full 16-bit `reference`, total, seq 1..=total).
//! * `Payload`: one part, empty short_message, the whole encoded text in message_payload
//!   (at most 65,535 bytes, the TLV's length field).
//!
//! Splitting never cuts a GSM escape sequence (ESC + char) nor a UTF-16 surrogate pair.
//!
//! # What rusmpp (`extra`, 0.4) does here, and what this module adds
//!
//! rusmpp's encoders choose and encode GSM 7-bit unpacked, Latin-1 and (BMP-only) UCS-2, and
//! its `Concatenator`s split them (the GSM one keeps ESC + char together). Its UDH types build
//! the header bytes. Not used: `SubmitSmMultipartBuilder`, which counts GSM in bytes against
//! one `max_short_message_size` with the UDH's 6 bytes, so it can only do 160/154 (one septet
//! too many per part on the air) or 140/134 (wasted room); we call the `Concatenator` with
//! 160 and 7 instead. Filled here, next to where rusmpp stops:
//! * UCS-2 outside the BMP (emoji): rusmpp's `Ucs2` rejects them (checked by a test);
//! * IA5/ASCII: rusmpp has no encoder;
//! * SAR and message_payload: rusmpp only builds UDH multiparts.

use rusmpp::extra::concatenation::{Concatenation, Concatenator, MAX_PARTS};
use rusmpp::extra::encoding::gsm7bit::{Gsm7BitConcatenateError, Gsm7BitUnpacked};
use rusmpp::extra::encoding::latin1::{Latin1, Latin1ConcatenateError};
use rusmpp::extra::encoding::ucs2::{Ucs2, Ucs2ConcatenateError, Ucs2EncodeError};
use rusmpp::udhs::concatenation::ConcatenatedShortMessageType;
use rusmpp::values::DataCoding;
use smpp_db::messaging::{DefaultAlphabet, LongMessages};

/// esm_class bit telling the SMSC that short_message starts with a UDH.
pub const ESM_CLASS_UDHI: u8 = 0x40;
/// Most bytes a message_payload TLV can carry (its length is 16 bits).
pub const MAX_PAYLOAD_BYTES: usize = u16::MAX as usize;

/// Septets in one GSM/IA5 message, and in one part of a concatenated one.
const SEPTETS_SINGLE: usize = 160;
const SEPTETS_PART: usize = 153;
/// Octets in one 8-bit (or UCS-2) short_message.
const OCTETS_SINGLE: usize = 140;
/// The 8-bit-reference concatenation UDH: `05 00 03 ref total seq`.
const UDH_LEN: usize = 6;
/// The same UDH in septets (48 bits plus one fill bit).
const UDH_SEPTETS: usize = 7;

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 03.38 default alphabet, unpacked, data_coding 0 (vendor's `Gsm7`).
    Gsm7,
    /// ISO-8859-1, data_coding 0x03.
    Latin1,
    /// IA5 / ASCII, data_coding 0x01.
    Ascii,
    /// UTF-16BE (UCS-2 plus surrogate pairs), data_coding 0x08.
    Ucs2,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gsm7 => "gsm7",
            Coding::Latin1 => "latin1",
            Coding::Ascii => "ascii",
            Coding::Ucs2 => "ucs2",
        }
    }

    /// The data_coding byte to submit with.
    pub fn data_coding(self) -> u8 {
        u8::from(match self {
            Coding::Gsm7 => Gsm7BitUnpacked::new().data_coding(),
            Coding::Latin1 => Latin1::new().data_coding(),
            Coding::Ascii => DataCoding::Ia5,
            Coding::Ucs2 => Ucs2::new().data_coding(),
        })
    }

    /// Units (see [`Encoded::units`]) that fit one plain message.
    pub fn single_limit(self) -> usize {
        match self {
            Coding::Gsm7 | Coding::Ascii => SEPTETS_SINGLE,
            Coding::Latin1 => OCTETS_SINGLE,
            Coding::Ucs2 => OCTETS_SINGLE / 2,
        }
    }

    /// Units that fit one part of a long message (UDH or SAR).
    pub fn part_limit(self) -> usize {
        match self {
            Coding::Gsm7 | Coding::Ascii => SEPTETS_PART,
            Coding::Latin1 => OCTETS_SINGLE - UDH_LEN,
            Coding::Ucs2 => (OCTETS_SINGLE - UDH_LEN) / 2,
        }
    }
}

/// SAR TLVs of one part: sar_msg_ref_num, sar_total_segments, sar_segment_seqnum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sar {
    pub reference: u16,
    pub total: u8,
    /// 1..=total.
    pub seq: u8,
}

/// One submit_sm's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Includes the UDH in `Udh` mode; empty in `Payload` mode.
    pub short_message: Vec<u8>,
    /// Set esm_class UDHI ([`ESM_CLASS_UDHI`]).
    pub udhi: bool,
    /// `Sar` mode, multipart only.
    pub sar: Option<Sar>,
    /// `Payload` mode (long text only): the whole encoded text.
    pub message_payload: Option<Vec<u8>>,
}

impl Part {
    fn plain(short_message: Vec<u8>) -> Self {
        Part {
            short_message,
            udhi: false,
            sar: None,
            message_payload: None,
        }
    }
}

/// A text ready to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub coding: Coding,
    pub data_coding: u8,
    pub parts: Vec<Part>,
    /// What the limits are counted in: GSM septets for `Gsm7` and `Ascii` (extension characters
    /// count 2), bytes (= characters) for `Latin1`, UTF-16 units for `Ucs2` (an emoji counts 2).
    pub units: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("the message text is empty")]
    Empty,
    #[error(
        "the text needs {parts} parts but at most {max} are allowed; shorten the text \
         (or raise the part limit, if it is below 255)"
    )]
    TooManyParts { parts: usize, max: usize },
    #[error(
        "the encoded text is {bytes} bytes, more than the {max} a message_payload can carry; \
         shorten the text"
    )]
    PayloadTooLong { bytes: usize, max: usize },
    /// rusmpp refused a split this module set up to be valid: a gateway bug.
    #[error("could not split the text ({0}); this is a gateway bug, please report it")]
    Split(String),
}

/// Turns `text` into the parts to submit. `reference` identifies the long message (its low
/// byte in a UDH, all of it in SAR); `max_parts` is capped at 255.
pub fn encode(
    text: &str,
    alphabet: DefaultAlphabet,
    long: LongMessages,
    reference: u16,
    max_parts: usize,
) -> Result<Encoded, EncodeError> {
    if text.is_empty() {
        return Err(EncodeError::Empty);
    }
    let max = max_parts.min(MAX_PARTS);
    let (coding, whole) = pick(text, alphabet);
    let units = units(coding, &whole);
    let done = |parts: Vec<Part>| Encoded {
        coding,
        data_coding: coding.data_coding(),
        parts,
        units,
    };
    let check = |parts: usize| {
        if parts > max {
            Err(EncodeError::TooManyParts { parts, max })
        } else {
            Ok(())
        }
    };

    if units <= coding.single_limit() {
        check(1)?;
        return Ok(done(vec![Part::plain(whole)]));
    }
    if long == LongMessages::Payload {
        // rusmpp builds no message_payload submits; the TLV just carries the whole encoding.
        if whole.len() > MAX_PAYLOAD_BYTES {
            return Err(EncodeError::PayloadTooLong {
                bytes: whole.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        check(1)?;
        return Ok(done(vec![Part {
            short_message: Vec::new(),
            udhi: false,
            sar: None,
            message_payload: Some(whole),
        }]));
    }

    let chunks = split(coding, text, &whole, max)?;
    check(chunks.len())?;
    let total = chunks.len() as u8; // <= max <= 255
    let udh = ConcatenatedShortMessageType::u8(reference as u8);
    let parts = chunks
        .into_iter()
        .zip(1..=total)
        .map(|(chunk, seq)| match long {
            LongMessages::Sar => Part {
                sar: Some(Sar {
                    reference,
                    total,
                    seq,
                }),
                ..Part::plain(chunk)
            },
            _ => {
                let header = udh
                    .concatenated_short_message_unchecked(total, seq)
                    .udh_bytes();
                let mut short_message = Vec::with_capacity(UDH_LEN + chunk.len());
                short_message.extend_from_slice(header.as_bytes());
                short_message.extend_from_slice(&chunk);
                Part {
                    udhi: true,
                    ..Part::plain(short_message)
                }
            }
        })
        .collect();
    Ok(done(parts))
}

/// The coding for `text` under the vendor's default alphabet, and the whole text in it.
fn pick(text: &str, alphabet: DefaultAlphabet) -> (Coding, Vec<u8>) {
    let own = match alphabet {
        DefaultAlphabet::Gsm7 => Gsm7BitUnpacked::new()
            .encode_to_vec(text)
            .ok()
            .map(|b| (Coding::Gsm7, b)),
        DefaultAlphabet::Latin1 => Latin1::new()
            .encode_to_vec(text)
            .ok()
            .map(|b| (Coding::Latin1, b)),
        // rusmpp has no IA5 encoder; ASCII is its own bytes.
        DefaultAlphabet::Ascii => text
            .is_ascii()
            .then(|| (Coding::Ascii, text.as_bytes().to_vec())),
    };
    own.unwrap_or_else(|| (Coding::Ucs2, utf16be(text)))
}

/// The whole text as UTF-16BE: rusmpp's `Ucs2` for BMP text; it rejects anything beyond the
/// BMP (emoji), which becomes a surrogate pair here.
fn utf16be(text: &str) -> Vec<u8> {
    match Ucs2::new().encode_to_vec(text) {
        Ok(bytes) => bytes,
        Err(Ucs2EncodeError::UnencodableCharacter) => {
            text.encode_utf16().flat_map(u16::to_be_bytes).collect()
        }
    }
}

fn units(coding: Coding, whole: &[u8]) -> usize {
    match coding {
        Coding::Gsm7 | Coding::Latin1 => whole.len(),
        Coding::Ascii => whole.iter().map(|&b| ia5_septets(b)).sum(),
        Coding::Ucs2 => whole.len() / 2,
    }
}

/// GSM septets the SMSC will need for one ASCII byte, from rusmpp's GSM table: 2 for the
/// extension characters, 1 otherwise (characters GSM lacks are substituted one for one).
fn ia5_septets(b: u8) -> usize {
    let mut buf = [0u8; 4];
    Gsm7BitUnpacked::new()
        .encode_to_vec(char::from(b).encode_utf8(&mut buf))
        .map_or(1, |septets| septets.len())
}

/// Splits a text longer than one message into part payloads (no UDH), at most `max` of them
/// unless the error says how many it would take.
fn split(
    coding: Coding,
    text: &str,
    whole: &[u8],
    max: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let too_many = |parts: usize| EncodeError::TooManyParts { parts, max };
    let (concatenation, _) = match coding {
        // rusmpp counts in bytes: 160 unpacked septets single, 160 - 7 (the UDH in septets)
        // per part, and it moves an ESC that would end a part into the next one.
        Coding::Gsm7 => Gsm7BitUnpacked::new()
            .concatenate(text, SEPTETS_SINGLE, UDH_SEPTETS)
            .map_err(|e| match e {
                Gsm7BitConcatenateError::PartsCountExceeded { actual, .. } => too_many(actual),
                e => EncodeError::Split(e.to_string()),
            })?,
        Coding::Latin1 => Latin1::new()
            .concatenate(text, OCTETS_SINGLE, UDH_LEN)
            .map_err(|e| match e {
                Latin1ConcatenateError::PartsCountExceeded { actual, .. } => too_many(actual),
                e => EncodeError::Split(e.to_string()),
            })?,
        Coding::Ucs2 => match Ucs2::new().concatenate(text, OCTETS_SINGLE, UDH_LEN) {
            Ok(done) => done,
            // Beyond the BMP: rusmpp refuses, so split the UTF-16 here.
            Err(Ucs2ConcatenateError::Encode(_)) => (
                Concatenation::Concatenated(split_utf16(whole)),
                DataCoding::Ucs2,
            ),
            Err(Ucs2ConcatenateError::PartsCountExceeded { actual, .. }) => {
                return Err(too_many(actual));
            }
            Err(e) => return Err(EncodeError::Split(e.to_string())),
        },
        // No IA5 concatenator in rusmpp.
        Coding::Ascii => (
            Concatenation::Concatenated(split_ia5(whole)),
            DataCoding::Ia5,
        ),
    };
    Ok(match concatenation {
        Concatenation::Single(bytes) => vec![bytes],
        Concatenation::Concatenated(parts) => parts,
    })
}

/// UTF-16BE into parts of at most 67 units, never ending a part on a high surrogate.
fn split_utf16(whole: &[u8]) -> Vec<Vec<u8>> {
    let units: Vec<u16> = whole
        .chunks_exact(2)
        .map(|u| u16::from_be_bytes([u[0], u[1]]))
        .collect();
    let per_part = Coding::Ucs2.part_limit();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let mut end = (i + per_part).min(units.len());
        if end < units.len() && (0xD800..0xDC00).contains(&units[end - 1]) {
            end -= 1;
        }
        parts.push(whole[2 * i..2 * end].to_vec());
        i = end;
    }
    parts
}

/// ASCII bytes into parts of at most 153 septets as the SMSC will count them.
fn split_ia5(whole: &[u8]) -> Vec<Vec<u8>> {
    let per_part = Coding::Ascii.part_limit();
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut septets = 0;
    for &b in whole {
        let cost = ia5_septets(b);
        if septets + cost > per_part {
            parts.push(std::mem::take(&mut part));
            septets = 0;
        }
        part.push(b);
        septets += cost;
    }
    parts.push(part);
    parts
}

/// GSM 03.38 default alphabet, one char per septet value (0x1B, the escape, is a placeholder).
const GSM_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table: the septet after an escape, and its character.
const GSM_EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The text alphabet of a data_coding a customer submits in; None for the others (binary,
/// message classes, …), which are passed through as they came.
///
/// data_coding 0 is "the SMSC default alphabet": for our customers that is GSM 03.38,
/// unpacked (one septet per byte), the same as a `Gsm7` vendor's.
pub fn text_coding(data_coding: u8) -> Option<Coding> {
    match data_coding {
        0x00 => Some(Coding::Gsm7),
        0x01 => Some(Coding::Ascii),
        0x03 => Some(Coding::Latin1),
        0x08 => Some(Coding::Ucs2),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "byte {byte:#04x} at {at} is not a GSM 7-bit septet (data_coding 0 is GSM 03.38 unpacked: one septet per byte, below 0x80)"
    )]
    NotGsm { byte: u8, at: usize },
    #[error("the GSM text ends with an escape (0x1B) and no character after it")]
    TrailingEscape,
    #[error("byte {byte:#04x} at {at} is not ASCII (data_coding 1 is IA5)")]
    NotAscii { byte: u8, at: usize },
    #[error("UCS-2 text has an odd length ({0} bytes)")]
    OddUcs2(usize),
    #[error("UCS-2 text is not valid UTF-16 (an unpaired surrogate)")]
    BadUtf16,
}

/// Bytes in `coding` back to text: what a customer's short_message or message_payload says.
/// The inverse of this module's encoders. Pure.
pub fn decode(coding: Coding, bytes: &[u8]) -> Result<String, DecodeError> {
    match coding {
        Coding::Gsm7 => decode_gsm(bytes),
        Coding::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
            Some(at) => Err(DecodeError::NotAscii {
                byte: bytes[at],
                at,
            }),
            None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        },
        Coding::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Coding::Ucs2 => {
            if !bytes.len().is_multiple_of(2) {
                return Err(DecodeError::OddUcs2(bytes.len()));
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|u| u16::from_be_bytes([u[0], u[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| DecodeError::BadUtf16)
        }
    }
}

fn decode_gsm(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut out = String::with_capacity(bytes.len());
    let mut it = bytes.iter().copied().enumerate();
    while let Some((at, b)) = it.next() {
        if b >= 0x80 {
            return Err(DecodeError::NotGsm { byte: b, at });
        }
        if b != ESC_SEPTET {
            out.push(GSM_BASIC[b as usize]);
            continue;
        }
        let Some((at, next)) = it.next() else {
            return Err(DecodeError::TrailingEscape);
        };
        if next >= 0x80 {
            return Err(DecodeError::NotGsm { byte: next, at });
        }
        // 03.38: an escape before a septet the extension table lacks shows the basic one.
        let ext = GSM_EXTENSION.iter().find(|(s, _)| *s == next);
        out.push(ext.map_or(GSM_BASIC[next as usize], |(_, c)| *c));
    }
    Ok(out)
}

/// The GSM escape septet.
const ESC_SEPTET: u8 = 0x1B;

#[cfg(test)]
mod tests {
    use super::*;

    const ESC: u8 = 0x1B;

    fn udh(text: &str, alphabet: DefaultAlphabet) -> Encoded {
        encode(text, alphabet, LongMessages::Udh, 0x1234, 255).unwrap()
    }

    /// The payload of each UDH part, after checking the header.
    fn payloads(e: &Encoded, reference: u8) -> Vec<&[u8]> {
        let total = e.parts.len() as u8;
        e.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                assert!(p.udhi);
                assert_eq!(p.sar, None);
                assert_eq!(p.message_payload, None);
                assert_eq!(
                    &p.short_message[..6],
                    &[0x05, 0x00, 0x03, reference, total, i as u8 + 1]
                );
                &p.short_message[6..]
            })
            .collect()
    }

    #[test]
    fn gsm_decoding_is_the_inverse_of_rusmpps_encoder() {
        // Every character of both tables: encoded by rusmpp, decoded by us, the same text.
        let basic: String = GSM_BASIC.iter().filter(|c| **c != '\u{1B}').collect();
        // rusmpp has no form feed (ESC 0x0A): checked on its own below.
        let ext: String = GSM_EXTENSION
            .iter()
            .map(|(_, c)| *c)
            .filter(|c| *c != '\u{0C}')
            .collect();
        for text in [basic, ext, "Hello {world} 10€ @home".to_string()] {
            let bytes = Gsm7BitUnpacked::new().encode_to_vec(&text).unwrap();
            assert_eq!(decode(Coding::Gsm7, &bytes).unwrap(), text);
        }
        assert_eq!(decode(Coding::Gsm7, &[0x00, 0x02, 0x11]).unwrap(), "@$_");
        assert_eq!(decode(Coding::Gsm7, &[0x1B, 0x0A]).unwrap(), "\u{0C}");
        // An escape before a septet with no extension shows the basic character.
        assert_eq!(decode(Coding::Gsm7, &[0x1B, b'A']).unwrap(), "A");
        assert_eq!(
            decode(Coding::Gsm7, &[b'a', 0x1B]),
            Err(DecodeError::TrailingEscape)
        );
        assert_eq!(
            decode(Coding::Gsm7, &[b'a', 0xE9]),
            Err(DecodeError::NotGsm { byte: 0xE9, at: 1 })
        );
    }

    #[test]
    fn other_codings_decode_strictly() {
        assert_eq!(decode(Coding::Ascii, b"a$_").unwrap(), "a$_");
        assert_eq!(
            decode(Coding::Ascii, &[b'a', 0xE9]),
            Err(DecodeError::NotAscii { byte: 0xE9, at: 1 })
        );
        assert_eq!(decode(Coding::Latin1, &[b'a', 0xE9]).unwrap(), "aé");
        let emoji = "hé 😀";
        let utf16: Vec<u8> = emoji.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode(Coding::Ucs2, &utf16).unwrap(), emoji);
        assert_eq!(
            decode(Coding::Ucs2, &[0, 0x41, 0]),
            Err(DecodeError::OddUcs2(3))
        );
        assert_eq!(
            decode(Coding::Ucs2, &[0xD8, 0x3D]),
            Err(DecodeError::BadUtf16)
        );
        let dcs: Vec<_> = [0u8, 1, 2, 3, 4, 8, 0xF0]
            .iter()
            .map(|d| text_coding(*d))
            .collect();
        use Coding::*;
        assert_eq!(
            dcs,
            [
                Some(Gsm7),
                Some(Ascii),
                None,
                Some(Latin1),
                None,
                Some(Ucs2),
                None
            ]
        );
        // What a text coding decodes, the same coding encodes back (the customer's bytes).
        for c in [Gsm7, Ascii, Latin1, Ucs2] {
            assert_eq!(text_coding(c.data_coding()), Some(c));
        }
    }

    #[test]
    fn coding_names_and_data_codings() {
        let all = [Coding::Gsm7, Coding::Latin1, Coding::Ascii, Coding::Ucs2];
        let names: Vec<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["gsm7", "latin1", "ascii", "ucs2"]);
        let dcs: Vec<_> = all.iter().map(|c| c.data_coding()).collect();
        assert_eq!(dcs, [0x00, 0x03, 0x01, 0x08]);
    }

    #[test]
    fn short_gsm_text_is_one_plain_unpacked_part() {
        let e = udh("@£$ Hi", DefaultAlphabet::Gsm7);
        assert_eq!(e.coding, Coding::Gsm7);
        assert_eq!(e.data_coding, 0x00);
        assert_eq!(e.units, 6);
        assert_eq!(
            e.parts,
            vec![Part::plain(vec![0x00, 0x01, 0x02, 0x20, b'H', b'i'])]
        );
    }

    #[test]
    fn gsm_single_limit_is_160_septets() {
        let e = udh(&"a".repeat(160), DefaultAlphabet::Gsm7);
        assert_eq!(e.parts.len(), 1);
        assert!(!e.parts[0].udhi);
        let e = udh(&"a".repeat(161), DefaultAlphabet::Gsm7);
        assert_eq!(e.parts.len(), 2);
        // 159 + € = 161 septets: no longer fits.
        let e = udh(&format!("{}€", "a".repeat(159)), DefaultAlphabet::Gsm7);
        assert_eq!(e.units, 161);
        assert_eq!(e.parts.len(), 2);
    }

    #[test]
    fn thousand_gsm_chars_make_seven_udh_parts() {
        let text: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let e = udh(&text, DefaultAlphabet::Gsm7);
        assert_eq!(e.coding, Coding::Gsm7);
        assert_eq!(e.units, 1000);
        assert_eq!(e.parts.len(), 7);
        let bodies = payloads(&e, 0x34);
        let sizes: Vec<_> = bodies.iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [153, 153, 153, 153, 153, 153, 82]);
        assert_eq!(bodies.concat(), text.as_bytes());
    }

    #[test]
    fn extension_chars_count_double() {
        let e = udh("€[]{}", DefaultAlphabet::Gsm7);
        assert_eq!(e.coding, Coding::Gsm7);
        assert_eq!(e.units, 10);
        assert_eq!(
            e.parts[0].short_message,
            [ESC, 0x65, ESC, 0x3C, ESC, 0x3E, ESC, 0x28, ESC, 0x29]
        );
        assert_eq!(udh("^\\|~", DefaultAlphabet::Gsm7).units, 8);
    }

    #[test]
    fn escape_sequence_is_never_split() {
        // ESC of € would be septet 153, the last of part 1: it must move to part 2.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let e = udh(&text, DefaultAlphabet::Gsm7);
        assert_eq!(e.units, 164);
        let bodies = payloads(&e, 0x34);
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0].len(), 152);
        assert_ne!(bodies[0].last(), Some(&ESC));
        assert_eq!(&bodies[1][..2], &[ESC, 0x65]);
        // Every part boundary in a text full of extension chars.
        let e = udh(&"x[".repeat(300), DefaultAlphabet::Gsm7);
        for b in payloads(&e, 0x34) {
            assert!(b.len() <= 153);
            assert_ne!(b.last(), Some(&ESC));
        }
    }

    #[test]
    fn rusmpp_ucs2_rejects_emoji() {
        // Why this module encodes non-BMP text itself; if this starts failing, rusmpp's Ucs2 can
        // do it and the fallback in `utf16be`/`split` can go.
        assert!(Ucs2::new().encode_to_vec("hi 😀").is_err());
    }

    #[test]
    fn non_gsm_text_is_ucs2() {
        let e = udh("Привет", DefaultAlphabet::Gsm7);
        assert_eq!(e.coding, Coding::Ucs2);
        assert_eq!(e.data_coding, 0x08);
        assert_eq!(e.units, 6);
        assert_eq!(&e.parts[0].short_message[..4], &[0x04, 0x1F, 0x04, 0x40]);
        // 70 units single, 71 → 2 parts of ≤ 67.
        assert_eq!(udh(&"ж".repeat(70), DefaultAlphabet::Gsm7).parts.len(), 1);
        let e = udh(&"ж".repeat(140), DefaultAlphabet::Gsm7);
        let sizes: Vec<_> = payloads(&e, 0x34).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [134, 134, 12]);
    }

    #[test]
    fn emoji_become_surrogate_pairs_and_are_never_split() {
        let e = udh("😀", DefaultAlphabet::Gsm7);
        assert_eq!(e.coding, Coding::Ucs2);
        assert_eq!(e.units, 2);
        assert_eq!(e.parts[0].short_message, [0xD8, 0x3D, 0xDE, 0x00]);

        // 100 emoji = 200 units; a 67-unit cut would end on a high surrogate, so parts hold 66.
        let text = "😀".repeat(100);
        let e = udh(&text, DefaultAlphabet::Gsm7);
        assert_eq!(e.units, 200);
        assert_eq!(e.parts.len(), 4);
        let bodies = payloads(&e, 0x34);
        for b in &bodies {
            assert!(b.len() <= 134 && b.len() % 2 == 0);
            let last = u16::from_be_bytes([b[b.len() - 2], b[b.len() - 1]]);
            assert!(
                !(0xD800..0xDC00).contains(&last),
                "part ends in a high surrogate"
            );
        }
        let units: Vec<u16> = bodies
            .concat()
            .chunks(2)
            .map(|u| u16::from_be_bytes([u[0], u[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), text);

        // Mixed: one BMP char shifts the pairs so that 67 units end cleanly.
        let e = udh(&format!("a{}", "😀".repeat(50)), DefaultAlphabet::Gsm7);
        assert_eq!(e.units, 101);
        let sizes: Vec<_> = payloads(&e, 0x34).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [134, 68]);
    }

    #[test]
    fn sar_parts_carry_seq_and_total_and_no_udh() {
        let text = "s".repeat(1000);
        let e = encode(&text, DefaultAlphabet::Gsm7, LongMessages::Sar, 0xBEEF, 255).unwrap();
        assert_eq!(e.parts.len(), 7);
        for (i, p) in e.parts.iter().enumerate() {
            assert!(!p.udhi);
            assert_eq!(p.message_payload, None);
            assert_eq!(
                p.sar,
                Some(Sar {
                    reference: 0xBEEF,
                    total: 7,
                    seq: i as u8 + 1
                })
            );
            assert!(p.short_message.len() <= 153);
            assert!(p.short_message.iter().all(|&b| b == b's'));
        }
        // A short text is one plain part, no SAR.
        let e = encode("hi", DefaultAlphabet::Gsm7, LongMessages::Sar, 1, 255).unwrap();
        assert_eq!(e.parts, vec![Part::plain(b"hi".to_vec())]);
    }

    #[test]
    fn payload_gives_one_part() {
        let text = "p€".repeat(400);
        let e = encode(&text, DefaultAlphabet::Gsm7, LongMessages::Payload, 1, 1).unwrap();
        assert_eq!(e.units, 1200);
        assert_eq!(e.parts.len(), 1);
        let p = &e.parts[0];
        assert!(p.short_message.is_empty());
        assert!(!p.udhi);
        assert_eq!(p.sar, None);
        assert_eq!(p.message_payload.as_ref().map(Vec::len), Some(1200));
        assert_eq!(
            &p.message_payload.as_ref().unwrap()[..3],
            &[b'p', ESC, 0x65]
        );
        // Short text: plain short_message.
        let e = encode("hi", DefaultAlphabet::Gsm7, LongMessages::Payload, 1, 1).unwrap();
        assert_eq!(e.parts, vec![Part::plain(b"hi".to_vec())]);
        // Over 64K.
        let err = encode(
            &"a".repeat(70_000),
            DefaultAlphabet::Gsm7,
            LongMessages::Payload,
            1,
            1,
        );
        assert_eq!(
            err,
            Err(EncodeError::PayloadTooLong {
                bytes: 70_000,
                max: 65_535
            })
        );
    }

    #[test]
    fn empty_text_is_an_error() {
        for long in LongMessages::ALL {
            assert_eq!(
                encode("", DefaultAlphabet::Gsm7, *long, 1, 10),
                Err(EncodeError::Empty)
            );
        }
    }

    #[test]
    fn too_many_parts() {
        let text = "a".repeat(1000);
        assert_eq!(
            encode(&text, DefaultAlphabet::Gsm7, LongMessages::Udh, 1, 3),
            Err(EncodeError::TooManyParts { parts: 7, max: 3 })
        );
        assert!(encode(&text, DefaultAlphabet::Gsm7, LongMessages::Udh, 1, 7).is_ok());
        // Beyond what a UDH can number, whatever the caller allows.
        assert_eq!(
            encode(
                &"a".repeat(40_000),
                DefaultAlphabet::Gsm7,
                LongMessages::Sar,
                1,
                1000
            ),
            Err(EncodeError::TooManyParts {
                parts: 262,
                max: 255
            })
        );
        let emoji = "😀".repeat(3000);
        assert!(matches!(
            encode(&emoji, DefaultAlphabet::Gsm7, LongMessages::Udh, 1, 10),
            Err(EncodeError::TooManyParts { parts, max: 10 }) if parts > 10
        ));
        assert!(
            !EncodeError::TooManyParts { parts: 7, max: 3 }
                .to_string()
                .is_empty()
        );
    }

    #[test]
    fn latin1_vendor() {
        let e = udh("café", DefaultAlphabet::Latin1);
        assert_eq!(e.coding, Coding::Latin1);
        assert_eq!(e.data_coding, 0x03);
        assert_eq!(e.units, 4);
        assert_eq!(e.parts, vec![Part::plain(vec![b'c', b'a', b'f', 0xE9])]);
        // 140 bytes single, then 134 per part.
        assert_eq!(
            udh(&"é".repeat(140), DefaultAlphabet::Latin1).parts.len(),
            1
        );
        let e = udh(&"é".repeat(300), DefaultAlphabet::Latin1);
        let sizes: Vec<_> = payloads(&e, 0x34).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [134, 134, 32]);
        // € is GSM but not Latin-1, and a Latin1 vendor has no GSM: UCS-2.
        let e = udh("5 €", DefaultAlphabet::Latin1);
        assert_eq!(e.coding, Coding::Ucs2);
        assert_eq!(e.units, 3);
    }

    #[test]
    fn ascii_vendor() {
        let e = udh("Hello {you}", DefaultAlphabet::Ascii);
        assert_eq!(e.coding, Coding::Ascii);
        assert_eq!(e.data_coding, 0x01);
        assert_eq!(e.parts, vec![Part::plain(b"Hello {you}".to_vec())]);
        assert_eq!(e.units, 13); // { } count two septets on the air
        // Not ASCII: UCS-2, even though é is GSM.
        let e = udh("héllo", DefaultAlphabet::Ascii);
        assert_eq!(e.coding, Coding::Ucs2);
        // Septet budget: 80 '[' = 160 septets fit; 81 do not, and parts hold ≤ 153 septets.
        assert_eq!(udh(&"[".repeat(80), DefaultAlphabet::Ascii).parts.len(), 1);
        let e = udh(&"[".repeat(81), DefaultAlphabet::Ascii);
        let sizes: Vec<_> = payloads(&e, 0x34).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [76, 5]);
        let e = udh(&"a".repeat(1000), DefaultAlphabet::Ascii);
        assert_eq!(e.parts.len(), 7);
        assert_eq!(payloads(&e, 0x34).concat(), "a".repeat(1000).as_bytes());
    }
}
