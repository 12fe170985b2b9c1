//! A Graph API simulator (placeholder; being written).
