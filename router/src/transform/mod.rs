//! Transforms applied before delivery.
