//! Placeholder: filled in by the dotenv work.
