//! Placeholder: filled in by the exec work.
