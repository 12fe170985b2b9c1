//! Meta Graph API client (being written).
pub mod version;
