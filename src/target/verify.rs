//! Placeholder: filled in by the verify work.
