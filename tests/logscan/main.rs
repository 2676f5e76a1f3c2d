//! Placeholder: tests being written.
