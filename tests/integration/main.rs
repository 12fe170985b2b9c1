//! tokenwarden's integration tests: one binary, real components on loopback.
//!
//! Meta is the project's own Graph sandbox, AWS Secrets Manager is moto's server, and commands
//! run through the real `tokenwarden` binary where a user would run them.

mod util;

mod aws_store;
mod batch;
mod canary;
mod cli;
mod daemon;
mod delivery;
mod doctor;
mod faults;
mod files;
mod fuzz_corpus;
mod graph_client;
mod groups;
mod hostile;
mod meta_contract;
mod notify;
mod reload;
mod rotation;
mod sandbox;
mod service;
mod soak;
mod store_behaviour;
mod targets;
