//! What Meta is, as plain facts that need no client: the permissions a WhatsApp Cloud API token
//! needs and the Graph API versions with the dates Meta retires them.
//!
//! It sits at the bottom of the module graph so that `config` can check a configured version
//! and scopes without importing [`crate::graph`], which is built from the config (the client
//! re-exports both, so `graph::version` and `graph::WHATSAPP_SCOPES` keep working). Pure: no IO.

pub mod version;

/// The two permissions a WhatsApp Cloud API token needs (the runbook's "prefer system-user
/// tokens with whatsapp_business_messaging and whatsapp_business_management").
pub const WHATSAPP_SCOPES: [&str; 2] = [
    "whatsapp_business_management",
    "whatsapp_business_messaging",
];
