//! A vendor's messaging settings (`SmppVendor.spec.messaging`): one enum each, shared by the CR
//! types, the operator (which writes the column) and the gateway (which reads it). Columns
//! hold `as_str()`; `parse` accepts any case, so hand-written rows keep working.
//!
//! The CR types use these enums directly, so the variant list and its spelling exist once:
//! serde (always; this crate already depends on it) spells each variant as its `as_str()`
//! literal, and the `schema` feature adds `schemars::JsonSchema` for the CRD generator
//! (smpp-crds enables it; operator and gateway do not need schemars).

use std::fmt;

macro_rules! setting {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? } default $d:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The column value (and the CR's spelling).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
            /// Case-insensitive; `None` for anything else (the gateway reports the row).
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim();
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        const _: () = { let _ = $name::$d; };
    };
}

setting!(
    /// How a vendor writes message ids (in submit_sm_resp, or in receipts).
    IdFormat {
        /// Exact match first, then by numeric value under every plausible reading.
        #[default]
        Auto => "Auto",
        /// Compared exactly as written.
        AsIs => "AsIs",
        /// A decimal number (leading zeros carry no meaning).
        Decimal => "Decimal",
        /// A hexadecimal number, any letter case.
        Hex => "Hex",
    } default Auto
);

setting!(
    /// How a message longer than one short message is sent.
    LongMessages {
        /// Concatenation UDH in short_message (esm_class UDHI).
        #[default]
        Udh => "Udh",
        /// sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs.
        Sar => "Sar",
        /// The whole text in one submit_sm's message_payload TLV.
        Payload => "Payload",
    } default Udh
);

setting!(
    /// What data_coding 0 means to the vendor.
    DefaultAlphabet {
        /// GSM 03.38 default alphabet, one septet per byte (unpacked).
        #[default]
        Gsm7 => "Gsm7",
        /// ISO-8859-1.
        Latin1 => "Latin1",
        /// IA5 / ASCII.
        Ascii => "Ascii",
    } default Gsm7
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_ignores_case() {
        for v in IdFormat::ALL {
            assert_eq!(IdFormat::parse(v.as_str()), Some(*v));
        }
        assert_eq!(IdFormat::parse(" hex "), Some(IdFormat::Hex));
        assert_eq!(LongMessages::parse("SAR"), Some(LongMessages::Sar));
        assert_eq!(
            DefaultAlphabet::parse("latin1"),
            Some(DefaultAlphabet::Latin1)
        );
        assert_eq!(DefaultAlphabet::parse("utf8"), None);
        assert_eq!(IdFormat::default(), IdFormat::Auto);
        assert_eq!(LongMessages::default(), LongMessages::Udh);
        assert_eq!(DefaultAlphabet::default(), DefaultAlphabet::Gsm7);
    }

    #[test]
    fn serde_spells_variants_as_the_column_values() {
        for v in IdFormat::ALL {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<IdFormat>(&json).unwrap(), *v);
        }
        for v in LongMessages::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for v in DefaultAlphabet::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
