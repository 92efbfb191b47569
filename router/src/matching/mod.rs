//! Which rules an event matches: EventBridge-style patterns ([`pattern`]),
//! CloudEvents SQL ([`cesql`]), a rule's filter made of either ([`filter`]), and
//! the compiled matcher of each bus ([`rules`]).

pub mod cesql;
pub mod filter;
pub mod pattern;
pub mod rules;
