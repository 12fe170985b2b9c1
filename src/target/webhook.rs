//! Placeholder: filled in by the webhook work.
