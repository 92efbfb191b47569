//! From a subscription's queue to its target: the dispatcher and the retry policy.

pub(crate) mod breaker;
pub mod dispatch;
pub(crate) mod rate;
pub(crate) mod results;
pub mod retry;
