//! Meta's vocabulary, as plain facts that need no client: the permissions a WhatsApp Cloud API
//! token needs, the Graph API versions with the dates Meta retires them ([`version`]), Graph's
//! errors sorted by what the caller does next ([`error`]), and what `debug_token` and the
//! phone-number read say ([`token`]), and the kinds of token with their hosts and words ([`kind`]).
//!
//! It sits at the bottom of the module graph so that `config`, the usability rule and the
//! rotation state machine can name these without importing [`crate::graph`], the client, which
//! is built from the config (the client re-exports all of it, so `graph::version`,
//! `graph::GraphError`, `graph::TokenInfo` and the rest keep working). Pure: no IO.

pub mod error;
pub mod kind;
pub mod token;
pub mod version;

/// The two permissions a WhatsApp Cloud API token needs (the runbook's "prefer system-user
/// tokens with whatsapp_business_messaging and whatsapp_business_management").
pub const WHATSAPP_SCOPES: [&str; 2] = [
    "whatsapp_business_management",
    "whatsapp_business_messaging",
];
