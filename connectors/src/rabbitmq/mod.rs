//! RabbitMQ (AMQP 0-9-1, with lapin): a queue consumer source that acknowledges
//! only what is durable, and an exchange publisher target settled by publisher
//! confirms, both speaking the CloudEvents AMQP binding (written here, in
//! sluice's own code; see [`message`]).

pub mod config;
pub mod message;
mod sink;
mod source;
mod status;

pub use sink::RabbitmqSink;
pub use source::RabbitmqSource;
